// Test helpers: load the reference tables and a rounding written independently of the engine
// (nearest value of an explicit grid, ties to the even index = even mantissa).
import fs from 'node:fs';
import path from 'node:path';
import { SafetensorsFile } from '../../src/checkpoints/safetensors.js';
import { native, type SchemeName, type SearchName } from '../../src/native/index.js';

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

export type Elem = 'e2m1' | 'e4m3' | 'e5m2';
export const ELEM_MAX: Record<Elem, number> = { e2m1: 6, e4m3: 448, e5m2: 57344 };

/** The three element grids (non-negative values): E2M1 written out, E4M3 and E5M2 from PyTorch's table. */
export async function loadGrids(): Promise<Record<Elem, Float64Array>> {
  const t = await loadTables('fp8_ref.safetensors');
  return { e2m1: E2M1_GRID, e4m3: Float64Array.from(t.grid_e4m3 as Float32Array), e5m2: Float64Array.from(t.grid_e5m2 as Float32Array) };
}

/** The blocks of a rows × cols tensor, row by row, the last of a row shorter when cols is not a multiple of bs. */
export function blocksOf(w: Float32Array, rows: number, cols: number, bs: number): Float32Array[] {
  const out: Float32Array[] = [];
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c += bs) out.push(w.subarray(r * cols + c, r * cols + Math.min(cols, c + bs)));
  }
  return out;
}

export function absmax(x: Float32Array): number {
  let m = 0;
  for (const v of x) m = Math.max(m, Math.abs(v));
  return m;
}

/** The engine's search on F32 weights, on the CPU. */
export function calibrateF32(w: Float32Array, rows: number, cols: number, scheme: SchemeName, blockSize: number, search: SearchName = 'exact', threads = 2) {
  return native().calibrate(new Uint8Array(w.buffer, w.byteOffset, w.byteLength), {
    dtype: 'F32', rows, cols, scheme, blockSize, search, threads, backend: 'cpu',
  });
}

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
