// Per-block arrays of a calibrated tensor (scales, MSE before/after, clipped outliers), read from
// a profile folder's scales.safetensors and diagnostics.safetensors, kept in a small cache, and
// downsampled to screen resolution for the heatmap: each cell of the view holds the min, max and
// mean of the blocks it covers and is coloured by one of them (or the most extreme block), so a
// single bad block stays visible when thousands share a cell; a view of one block per cell
// carries the exact values.
import path from 'node:path';
import type { ModelCalibrationProfile } from '../calibration/types.js';
import { SafetensorsFile } from '../checkpoints/safetensors.js';
import { DIAGNOSTICS_FILE } from '../profiles/profile_writer.js';
import { readScales } from '../profiles/store.js';
import { CalibscopeError } from '../util/errors.js';
import type { BlockDetail, GridAggregate, GridMetric, GridRequest, GridView } from './protocol.js';

export interface BlockArrays {
  rows: number;
  blocks: number;
  blockSize: number;
  cols: number;
  scale: Float32Array;
  mseBefore: Float32Array | null;
  mseAfter: Float32Array | null;
  outliers: Uint16Array | null;
  codes: Uint8Array | null;
  global: number | null;
}

function copyF32(b: Buffer): Float32Array {
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

function copyU16(b: Buffer): Uint16Array {
  return new Uint16Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

/** Reads one tensor's per-block arrays; the diagnostics are null when the profile has none. */
export async function readBlockArrays(dir: string, profile: ModelCalibrationProfile, tensor: string): Promise<BlockArrays> {
  const r = profile.tensor_calibrations[tensor];
  if (!r) throw new CalibscopeError('E_NOT_FOUND', `profile ${dir}: tensor '${tensor}' was not calibrated`, { path: dir, tensor });
  const sc = await readScales(dir, tensor, profile);
  const out: BlockArrays = {
    rows: sc.rows,
    blocks: sc.blocksPerRow,
    blockSize: r.block_size,
    cols: r.shape.length > 0 ? r.shape[r.shape.length - 1] : 1,
    scale: sc.scales,
    mseBefore: null,
    mseAfter: null,
    outliers: null,
    codes: sc.codes ?? null,
    global: sc.global ?? null,
  };
  let sf: SafetensorsFile;
  try {
    sf = await SafetensorsFile.open(path.join(dir, DIAGNOSTICS_FILE));
  } catch (err) {
    if ((err as { code?: string }).code === 'E_NOT_FOUND') return out; // written with --no-diagnostics
    throw err;
  }
  try {
    const n = sc.rows * sc.blocksPerRow;
    const get = async (suffix: string, dtype: string): Promise<Buffer | null> => {
      const t = sf.tensor(`${tensor}:${suffix}`);
      if (!t) return null;
      if (t.dtype !== dtype || t.numel !== n) {
        throw new CalibscopeError('E_BAD_PROFILE', `profile ${dir}: ${DIAGNOSTICS_FILE}: '${tensor}:${suffix}' is ${t.dtype} [${t.shape.join(', ')}], expected ${dtype} [${sc.rows}, ${sc.blocksPerRow}]`, {
          path: dir,
          tensor,
        });
      }
      return sf.readTensor(t);
    };
    const before = await get('mse_before', 'F32');
    const after = await get('mse_after', 'F32');
    const outl = await get('outliers', 'U16');
    out.mseBefore = before ? copyF32(before) : null;
    out.mseAfter = after ? copyF32(after) : null;
    out.outliers = outl ? copyU16(outl) : null;
  } finally {
    await sf.close();
  }
  return out;
}

/** Per-block improvement before/after: 1 when both are 0, Infinity when only the error after is 0. */
export function blockImprovement(before: number, after: number): number {
  if (after === 0) return before === 0 ? 1 : Infinity;
  return before / after;
}

/** The metric's value of block i (NaN where the metric is not stored). */
export function metricAccessor(a: BlockArrays, metric: GridMetric): (i: number) => number {
  switch (metric) {
    case 'scale':
      return (i) => a.scale[i];
    case 'mse_before':
      return a.mseBefore ? (i) => a.mseBefore![i] : () => NaN;
    case 'mse_after':
      return a.mseAfter ? (i) => a.mseAfter![i] : () => NaN;
    case 'outliers':
      return a.outliers ? (i) => a.outliers![i] : () => NaN;
    case 'improvement':
      return a.mseBefore && a.mseAfter ? (i) => blockImprovement(a.mseBefore![i], a.mseAfter![i]) : () => NaN;
  }
}

function clampRange(start: number | undefined, end: number | undefined, total: number): [number, number] {
  const s = Math.max(0, Math.min(total, start ?? 0));
  const e = Math.max(s, Math.min(total, end ?? total));
  return e > s ? [s, e] : [Math.min(s, Math.max(0, total - 1)), Math.min(total, Math.max(s, total - 1) + 1)];
}

/** Rounds for JSON: float32 values keep their float32 precision (9 significant digits). */
function num(x: number): number | null {
  if (!Number.isFinite(x)) return null;
  return Number(x.toPrecision(9));
}

const fullRangeCache = new WeakMap<BlockArrays, Map<GridMetric, [number | null, number | null]>>();

function fullRange(a: BlockArrays, metric: GridMetric): [number | null, number | null] {
  let m = fullRangeCache.get(a);
  if (!m) fullRangeCache.set(a, (m = new Map()));
  const hit = m.get(metric);
  if (hit) return hit;
  const get = metricAccessor(a, metric);
  let lo = Infinity;
  let hi = -Infinity;
  const n = a.rows * a.blocks;
  for (let i = 0; i < n; i++) {
    const v = get(i);
    if (!Number.isFinite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const r: [number | null, number | null] = [num(lo), num(hi)];
  m.set(metric, r);
  return r;
}

/** Per metric, the aggregate that shows a cell's worst block: the mean hides one bad block among
 *  the ~100 a cell of a large tensor covers. */
export const DEFAULT_AGGREGATE: Record<GridMetric, GridAggregate> = {
  scale: 'extreme',
  mse_before: 'max',
  mse_after: 'max',
  improvement: 'extreme',
  outliers: 'max',
};

const medianCache = new WeakMap<BlockArrays, number | null>();

/** The median of the positive scales: the typical scale a dead or saturated block stands out from.
 *  Positive float32 values order as their bit patterns, so two 16-bit histogram passes find it
 *  in O(n) (a sort of 732k scales took ~150 ms on first display). */
function medianScale(a: BlockArrays): number | null {
  if (medianCache.has(a)) return medianCache.get(a)!;
  const bits = new Uint32Array(a.scale.buffer, a.scale.byteOffset, a.scale.length);
  const positive = (u: number) => u > 0 && u < 0x7f800000;
  const hiCount = new Uint32Array(65536);
  let n = 0;
  for (let i = 0; i < bits.length; i++) {
    const u = bits[i];
    if (positive(u)) {
      hiCount[u >>> 16]++;
      n++;
    }
  }
  let m: number | null = null;
  if (n > 0) {
    let rank = n >> 1;
    let hi = 0;
    while (rank >= hiCount[hi]) rank -= hiCount[hi++];
    const loCount = new Uint32Array(65536);
    for (let i = 0; i < bits.length; i++) {
      const u = bits[i];
      if (positive(u) && u >>> 16 === hi) loCount[u & 0xffff]++;
    }
    let lo = 0;
    while (rank >= loCount[lo]) rank -= loCount[lo++];
    m = new Float32Array(new Uint32Array([((hi << 16) | lo) >>> 0]).buffer)[0];
  }
  medianCache.set(a, m);
  return m;
}

/** What `extreme` measures from (log scale); null where the largest value is the extreme one. */
function centerOf(a: BlockArrays, metric: GridMetric): number | null {
  if (metric === 'improvement') return 1;
  if (metric === 'scale') return medianScale(a);
  return null;
}

/** The requested window of the rows × blocks grid, at most maxRows × maxCols cells. */
export function downsampleGrid(a: BlockArrays, req: GridRequest): GridView {
  const [r0, r1] = clampRange(req.rowStart, req.rowEnd, a.rows);
  const [c0, c1] = clampRange(req.blockStart, req.blockEnd, a.blocks);
  const cellRows = Math.max(1, Math.ceil((r1 - r0) / req.maxRows));
  const cellBlocks = Math.max(1, Math.ceil((c1 - c0) / req.maxCols));
  const nRows = Math.ceil((r1 - r0) / cellRows);
  const nCols = Math.ceil((c1 - c0) / cellBlocks);
  const cells = nRows * nCols;
  const sum = new Float64Array(cells);
  const cnt = new Uint32Array(cells);
  const lo = new Float64Array(cells).fill(Infinity);
  const hi = new Float64Array(cells).fill(-Infinity);
  const loAt = new Int32Array(cells);
  const hiAt = new Int32Array(cells);
  const get = metricAccessor(a, req.metric);
  for (let r = r0; r < r1; r++) {
    const cellRow = Math.floor((r - r0) / cellRows) * nCols;
    const base = r * a.blocks;
    for (let c = c0; c < c1; c++) {
      const i = base + c;
      const v = get(i);
      if (!Number.isFinite(v)) continue;
      const k = cellRow + Math.floor((c - c0) / cellBlocks);
      sum[k] += v;
      cnt[k]++;
      if (v < lo[k]) {
        lo[k] = v;
        loAt[k] = i;
      }
      if (v > hi[k]) {
        hi[k] = v;
        hiAt[k] = i;
      }
    }
  }
  const aggregate = req.aggregate ?? DEFAULT_AGGREGATE[req.metric];
  const center = centerOf(a, req.metric);
  // Distance from the centre on a log scale: 0.5× and 2× are equally far from 1×; a zero is furthest.
  const far = (v: number) => (v > 0 ? Math.abs(Math.log(v / center!)) : Infinity);
  const mean: (number | null)[] = new Array(cells);
  const min: (number | null)[] = new Array(cells);
  const max: (number | null)[] = new Array(cells);
  const value: (number | null)[] = new Array(cells);
  const valueAt: (number | null)[] = new Array(cells);
  for (let k = 0; k < cells; k++) {
    if (cnt[k] === 0) {
      mean[k] = min[k] = max[k] = value[k] = valueAt[k] = null;
      continue;
    }
    mean[k] = num(sum[k] / cnt[k]);
    min[k] = num(lo[k]);
    max[k] = num(hi[k]);
    // The most extreme block of a cell is always its min or its max, whatever the centre.
    const useLo = aggregate === 'min' || (aggregate === 'extreme' && center !== null && far(lo[k]) > far(hi[k]));
    if (aggregate === 'mean') {
      value[k] = mean[k];
      valueAt[k] = null;
    } else {
      value[k] = useLo ? min[k] : max[k];
      valueAt[k] = useLo ? loAt[k] : hiAt[k];
    }
  }
  const [fullMin, fullMax] = fullRange(a, req.metric);
  return {
    modelId: req.modelId,
    tensor: req.tensor,
    metric: req.metric,
    totalRows: a.rows,
    totalBlocks: a.blocks,
    rowStart: r0,
    rowEnd: r1,
    blockStart: c0,
    blockEnd: c1,
    cellRows,
    cellBlocks,
    nRows,
    nCols,
    mean,
    min,
    max,
    aggregate,
    value,
    valueAt,
    center: center === null ? null : num(center),
    exact: cellRows === 1 && cellBlocks === 1,
    fullMin,
    fullMax,
  };
}

/** Every stored metric of one block. */
export function blockDetail(a: BlockArrays, modelId: string, tensor: string, row: number, block: number): BlockDetail {
  if (row >= a.rows || block >= a.blocks) {
    throw new CalibscopeError('E_BAD_ARGUMENT', `tensor '${tensor}': block (${row}, ${block}) is outside its ${a.rows} × ${a.blocks} blocks`, {
      tensor,
      row,
      block,
    });
  }
  const i = row * a.blocks + block;
  const before = a.mseBefore ? a.mseBefore[i] : null;
  const after = a.mseAfter ? a.mseAfter[i] : null;
  const imp = before !== null && after !== null ? blockImprovement(before, after) : null;
  return {
    modelId,
    tensor,
    row,
    block,
    colStart: block * a.blockSize,
    colEnd: Math.min(a.cols, (block + 1) * a.blockSize),
    scale: a.scale[i],
    mseBefore: before,
    mseAfter: after,
    improvement: imp === null || !Number.isFinite(imp) ? null : imp,
    outliers: a.outliers ? a.outliers[i] : null,
  };
}

/** A small LRU of per-block arrays, keyed by profile folder, profile content and tensor. */
export class BlockArrayCache {
  private readonly entries = new Map<string, Promise<BlockArrays>>();
  constructor(private readonly capacity = 12) {}

  get(dir: string, profile: ModelCalibrationProfile, tensor: string): Promise<BlockArrays> {
    const key = `${dir}\0${profile.timestamp}\0${profile.scales_sha256}\0${tensor}`;
    let p = this.entries.get(key);
    if (p) {
      this.entries.delete(key);
      this.entries.set(key, p);
      return p;
    }
    p = readBlockArrays(dir, profile, tensor);
    p.catch(() => this.entries.delete(key));
    this.entries.set(key, p);
    while (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value!);
    return p;
  }

  /** Forgets everything of one profile folder (after it was rewritten). */
  forget(dir: string): void {
    for (const k of [...this.entries.keys()]) if (k.startsWith(`${dir}\0`)) this.entries.delete(k);
  }
}
