// Test helpers: load the reference tables and a rounding written independently of the engine
// (nearest value of an explicit grid, ties to the even index = even mantissa).
import fs from 'node:fs';
import path from 'node:path';
import { SafetensorsFile } from '../../src/checkpoints/safetensors.js';

export const FIXTURES = path.resolve(__dirname, '..', '..', '..', 'test', 'fixtures', 'reference');

/** The reference BERT model (Hugging Face layout and sentence-transformers layout) and what
 *  PyTorch + transformers computed for its queries (reference.json). */
export const TINY = path.join(FIXTURES, 'bert-tiny-a');
export const TINY_MODEL = path.join(TINY, 'model');
export const TINY_ST = path.join(TINY, 'sentence_transformer');

export interface RefQuery {
  query: string;
  input_ids: number[];
  mean_pooled_normalized: number[];
  cls: number[];
}

export interface BertReference {
  queries: RefQuery[];
  debug: { query: string; embeddings_output_token0: number[]; layer0_output_token0: number[] };
}

export function loadBertReference(): BertReference {
  return JSON.parse(fs.readFileSync(path.join(TINY, 'reference.json'), 'utf8')) as BertReference;
}

export async function loadTables(file: string): Promise<Record<string, Float32Array | Int16Array>> {
  const f = await SafetensorsFile.open(path.join(FIXTURES, file));
  try {
    const out: Record<string, Float32Array | Int16Array> = {};
    for (const t of f.tensors) {
      const b = await f.readTensor(t);
      const copy = new Uint8Array(b).buffer;
      out[t.name] = t.dtype === 'I16' ? new Int16Array(copy) : new Float32Array(copy);
    }
    return out;
  } finally {
    await f.close();
  }
}

export const E2M1_GRID = Float64Array.from([0, 0.5, 1, 1.5, 2, 3, 4, 6]);

/** Rounds |v| to the grid: nearest, ties to the even index, saturating at the last value. */
export function roundToGrid(a: number, grid: Float64Array): number {
  const max = grid[grid.length - 1];
  if (a >= max) return max;
  let lo = 0;
  let hi = grid.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (grid[mid] <= a) lo = mid;
    else hi = mid;
  }
  const dlo = a - grid[lo];
  const dhi = grid[hi] - a;
  if (dlo < dhi) return grid[lo];
  if (dhi < dlo) return grid[hi];
  return lo % 2 === 0 ? grid[lo] : grid[hi];
}

const f32 = Math.fround;

/** Squared error of a block for multiplier s: x̂ = Q(x·s)/s in float32, summed in float64. */
export function blockErrMultiplier(x: Float32Array, s: number, grid: Float64Array): number {
  let e = 0;
  for (let i = 0; i < x.length; i++) {
    const a = Math.abs(x[i]);
    const q = roundToGrid(f32(a * s), grid);
    const d = a - f32(q / s);
    e += d * d;
  }
  return e;
}

/** Squared error of a block for decode scale d: x̂ = Q(x/d)·d in float32. */
export function blockErrDecode(x: Float32Array, d: number, grid: Float64Array): number {
  let e = 0;
  for (let i = 0; i < x.length; i++) {
    const a = Math.abs(x[i]);
    const q = roundToGrid(f32(a / d), grid);
    const r = a - f32(q * d);
    e += r * r;
  }
  return e;
}
