// The |x·s| histogram of one calibrated tensor: every weight scaled by its block's scale, in the
// same float32 arithmetic the search used (a multiplier for FP32 scales, a division by the decoded
// scale for NVFP4 and MX), so the count above the format's maximum is the profile's outlier count.
import { schemeFor } from '../calibration/schemes.js';
import type { CalibrationResult } from '../calibration/types.js';
import { native } from '../native/index.js';
import { CalibscopeError } from '../util/errors.js';
import { halfTable } from '../util/f16.js';
import type { BlockArrays } from './block_data.js';

export interface Histogram {
  edges: number[];
  counts: number[];
  formatMax: number;
  clipped: number;
  total: number;
}

/** Elements per slice of histogram work between yields to the event loop: ~10 ms on a 2-core VM,
 *  so a grid or hover request that arrives meanwhile waits one slice, not the whole tensor. */
export const HISTOGRAM_SLICE = 1 << 19;

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Decodes elements [i0, i1) of raw little-endian F32 / F16 / BF16 bytes into out[0 .. i1 - i0). */
function decodeRange(words: Float32Array | Uint16Array, dtype: string, i0: number, i1: number, out: Float32Array): void {
  if (dtype === 'F32') {
    out.set((words as Float32Array).subarray(i0, i1));
  } else if (dtype === 'F16') {
    const t = halfTable();
    for (let i = i0; i < i1; i++) out[i - i0] = t[words[i]];
  } else {
    const u = new Uint32Array(out.buffer, out.byteOffset, out.length);
    for (let i = i0; i < i1; i++) u[i - i0] = words[i] << 16;
  }
}

/**
 * Histogram of |x·s| over `bins` linear bins from 0 to a little above max(format max, largest
 * value), from the tensor's raw bytes. The work runs in slices of about HISTOGRAM_SLICE elements
 * with a yield to the event loop between them (`yieldEvery: 0` runs it in one go).
 */
export async function scaledHistogram(
  bytes: Uint8Array,
  dtype: string,
  blocks: BlockArrays,
  result: CalibrationResult,
  bins: number,
  opts: { yieldEvery?: number } = {},
): Promise<Histogram> {
  const scheme = schemeFor(result.format);
  const { rows, blocks: perRow, blockSize, cols } = blocks;
  const width = dtype === 'F32' ? 4 : dtype === 'F16' || dtype === 'BF16' ? 2 : 0;
  if (!width) throw new CalibscopeError('E_UNSUPPORTED_DTYPE', `tensor '${result.tensor_name}': dtype ${dtype} is not F32, F16 or BF16`, { tensor: result.tensor_name, dtype });
  const n = Math.floor(bytes.byteLength / width);
  if (n !== rows * cols) {
    throw new CalibscopeError('E_BAD_PROFILE', `tensor '${result.tensor_name}': ${n} weights, but the profile's scales cover ${rows} × ${cols}`, {
      tensor: result.tensor_name,
    });
  }
  // The search divides by the decoded scale for NVFP4 and MX, and multiplies by s for FP32 scales.
  let decode: Float32Array | null = null;
  if (scheme.scaleEncoding !== 'fp32') {
    if (!blocks.codes) throw new CalibscopeError('E_BAD_PROFILE', `tensor '${result.tensor_name}': the profile has no scale codes`, { tensor: result.tensor_name });
    decode = new Float32Array(blocks.codes.length);
    if (scheme.scaleEncoding === 'e4m3_x_fp32') {
      const g = Math.fround(blocks.global ?? NaN);
      const v = native().e4m3Decode(blocks.codes);
      for (let i = 0; i < v.length; i++) decode[i] = Math.fround(v[i] * g);
    } else {
      for (let i = 0; i < blocks.codes.length; i++) decode[i] = 2 ** (blocks.codes[i] - 127);
    }
  }
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : new Uint8Array(bytes);
  const words = width === 4 ? new Float32Array(aligned.buffer, aligned.byteOffset, n) : new Uint16Array(aligned.buffer, aligned.byteOffset, n);
  const slice = opts.yieldEvery ?? HISTOGRAM_SLICE;
  const rowsPerSlice = slice > 0 ? Math.max(1, Math.floor(slice / Math.max(1, cols))) : rows;
  const x = new Float32Array(Math.min(rows, rowsPerSlice) * cols);
  const y = new Float32Array(n);
  let hi = 0;
  let total = 0;
  let clipped = 0;
  const max = scheme.elementMax;
  for (let r0 = 0; r0 < rows; r0 += rowsPerSlice) {
    if (r0 > 0) await nextTurn();
    const r1 = Math.min(rows, r0 + rowsPerSlice);
    decodeRange(words, dtype, r0 * cols, r1 * cols, x);
    for (let r = r0; r < r1; r++) {
      const base = r * cols;
      const local = (r - r0) * cols;
      for (let b = 0; b < perRow; b++) {
        const k = r * perRow + b;
        const c1 = Math.min(cols, (b + 1) * blockSize);
        for (let c = b * blockSize; c < c1; c++) {
          const ax = Math.abs(x[local + c]);
          const v = decode ? Math.fround(ax / decode[k]) : Math.fround(ax * blocks.scale[k]);
          y[base + c] = v;
          if (!Number.isFinite(v)) continue;
          total++;
          if (v > max) clipped++;
          if (v > hi) hi = v;
        }
      }
    }
  }
  const top = Math.max(hi, max) * 1.05;
  const binWidth = top / bins;
  const counts = new Array<number>(bins).fill(0);
  const step = slice > 0 ? slice : n;
  for (let i0 = 0; i0 < n; i0 += step) {
    await nextTurn();
    const i1 = Math.min(n, i0 + step);
    for (let i = i0; i < i1; i++) {
      const v = y[i];
      if (!Number.isFinite(v)) continue;
      counts[Math.min(bins - 1, Math.floor(v / binWidth))]++;
    }
  }
  const edges = Array.from({ length: bins + 1 }, (_, k) => k * binWidth);
  return { edges, counts, formatMax: max, clipped, total };
}

/**
 * A small LRU of histograms (and of those being computed, so a quick re-selection shares the
 * work). The caller's key must name everything the histogram depends on — profile folder and
 * content, scales file, checkpoint file, tensor, bins — so a rewritten profile or checkpoint
 * misses instead of being served stale.
 */
export class HistogramCache {
  private readonly entries = new Map<string, Promise<Histogram>>();
  constructor(private readonly capacity = 6) {}

  get(dir: string, key: string, compute: () => Promise<Histogram>): Promise<Histogram> {
    const full = `${dir}\0${key}`;
    let p = this.entries.get(full);
    if (p) {
      this.entries.delete(full);
      this.entries.set(full, p);
      return p;
    }
    p = compute();
    p.catch(() => {
      if (this.entries.get(full) === p) this.entries.delete(full);
    });
    this.entries.set(full, p);
    while (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value!);
    return p;
  }

  /** Forgets one profile folder's histograms (it was rewritten: they could only miss now). */
  forget(dir: string): void {
    for (const k of [...this.entries.keys()]) if (k.startsWith(`${dir}\0`)) this.entries.delete(k);
  }

  get size(): number {
    return this.entries.size;
  }
}
