// The |x·s| histogram of one calibrated tensor: every weight scaled by its block's scale, in the
// same float32 arithmetic the search used (a multiplier for FP32 scales, a division by the decoded
// scale for NVFP4 and MX; the addon's scaled_histogram), so the count above the format's maximum
// is the profile's outlier count.
import { schemeFor } from '../calibration/schemes.js';
import type { CalibrationResult } from '../calibration/types.js';
import { native, type NativeDType } from '../native/index.js';
import { CalibscopeError } from '../util/errors.js';
import type { BlockArrays } from './block_data.js';

export interface Histogram {
  edges: number[];
  counts: number[];
  formatMax: number;
  clipped: number;
  total: number;
}

/**
 * Histogram of |x·s| over `bins` linear bins from 0 to a little above max(format max, largest
 * value), from the tensor's raw bytes. The addon computes it on its threads (two passes over the
 * weights), so the JS thread stays free for the grid and hover requests meanwhile.
 */
export async function scaledHistogram(bytes: Uint8Array, dtype: string, blocks: BlockArrays, result: CalibrationResult, bins: number): Promise<Histogram> {
  const scheme = schemeFor(result.format);
  const { rows, blockSize, cols } = blocks;
  const width = dtype === 'F32' ? 4 : dtype === 'F16' || dtype === 'BF16' ? 2 : 0;
  if (!width) throw new CalibscopeError('E_UNSUPPORTED_DTYPE', `tensor '${result.tensor_name}': dtype ${dtype} is not F32, F16 or BF16`, { tensor: result.tensor_name, dtype });
  const n = Math.floor(bytes.byteLength / width);
  if (n !== rows * cols) {
    throw new CalibscopeError('E_BAD_PROFILE', `tensor '${result.tensor_name}': ${n} weights, but the profile's scales cover ${rows} × ${cols}`, {
      tensor: result.tensor_name,
    });
  }
  const encoded = scheme.scaleEncoding !== 'fp32';
  if (encoded && !blocks.codes) throw new CalibscopeError('E_BAD_PROFILE', `tensor '${result.tensor_name}': the profile has no scale codes`, { tensor: result.tensor_name });
  const h = await native().scaledHistogram(bytes, {
    dtype: dtype as NativeDType,
    rows,
    cols,
    scheme: scheme.name,
    blockSize,
    bins,
    ...(encoded ? { codes: blocks.codes!, globalScale: blocks.global ?? undefined } : { scales: blocks.scale }),
  });
  const binWidth = h.top / bins;
  const edges = Array.from({ length: bins + 1 }, (_, k) => k * binWidth);
  return { edges, counts: Array.from(h.counts), formatMax: scheme.elementMax, clipped: h.clipped, total: h.total };
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
