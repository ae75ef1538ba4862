// The |x·s| histogram of one calibrated tensor: every weight scaled by its block's scale, in the
// same float32 arithmetic the search used (a multiplier for FP32 scales, a division by the decoded
// scale for NVFP4 and MX), so the count above the format's maximum is the profile's outlier count.
import { schemeFor } from '../calibration/schemes.js';
import type { CalibrationResult } from '../calibration/types.js';
import { native } from '../native/index.js';
import { CalibscopeError } from '../util/errors.js';
import type { BlockArrays } from './block_data.js';

let f16Table: Float32Array | null = null;

function halfTable(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    t[h] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return (f16Table = t);
}

/** Raw little-endian F32 / F16 / BF16 bytes as float32 values. */
export function decodeWeights(bytes: Uint8Array, dtype: string, tensor: string): Float32Array {
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : new Uint8Array(bytes);
  if (dtype === 'F32') return new Float32Array(aligned.buffer.slice(aligned.byteOffset, aligned.byteOffset + aligned.byteLength));
  const bits = new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength >>> 1);
  const out = new Float32Array(bits.length);
  if (dtype === 'F16') {
    const t = halfTable();
    for (let i = 0; i < bits.length; i++) out[i] = t[bits[i]];
    return out;
  }
  if (dtype === 'BF16') {
    const u = new Uint32Array(out.buffer);
    for (let i = 0; i < bits.length; i++) u[i] = bits[i] << 16;
    return out;
  }
  throw new CalibscopeError('E_UNSUPPORTED_DTYPE', `tensor '${tensor}': dtype ${dtype} is not F32, F16 or BF16`, { tensor, dtype });
}

export interface Histogram {
  edges: number[];
  counts: number[];
  formatMax: number;
  clipped: number;
  total: number;
}

/** Histogram of |x·s| over `bins` linear bins from 0 to a little above max(format max, largest value). */
export function scaledHistogram(weights: Float32Array, blocks: BlockArrays, result: CalibrationResult, bins: number): Histogram {
  const scheme = schemeFor(result.format);
  const { rows, blocks: perRow, blockSize, cols } = blocks;
  if (weights.length !== rows * cols) {
    throw new CalibscopeError('E_BAD_PROFILE', `tensor '${result.tensor_name}': ${weights.length} weights, but the profile's scales cover ${rows} × ${cols}`, {
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
  const y = new Float32Array(weights.length);
  let hi = 0;
  let total = 0;
  let clipped = 0;
  const max = scheme.elementMax;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      const b = r * perRow + Math.floor(c / blockSize);
      const ax = Math.abs(weights[i]);
      const v = decode ? Math.fround(ax / decode[b]) : Math.fround(ax * blocks.scale[b]);
      y[i] = v;
      if (!Number.isFinite(v)) continue;
      total++;
      if (v > max) clipped++;
      if (v > hi) hi = v;
    }
  }
  const top = Math.max(hi, max) * 1.05;
  const width = top / bins;
  const counts = new Array<number>(bins).fill(0);
  for (let i = 0; i < y.length; i++) {
    const v = y[i];
    if (!Number.isFinite(v)) continue;
    counts[Math.min(bins - 1, Math.floor(v / width))]++;
  }
  const edges = Array.from({ length: bins + 1 }, (_, k) => k * width);
  return { edges, counts, formatMax: max, clipped, total };
}
