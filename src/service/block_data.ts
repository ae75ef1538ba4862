// Per-block arrays of a calibrated tensor (scales, MSE before/after, clipped outliers), read from
// a profile folder's scales.safetensors and diagnostics.safetensors, kept in a small cache, and
// downsampled to screen resolution for the heatmap: each cell of the view holds the min, max and
// mean of the blocks it covers, and a view of one block per cell carries the exact values.
import path from 'node:path';
import type { ModelCalibrationProfile } from '../calibration/types.js';
import { SafetensorsFile } from '../checkpoints/safetensors.js';
import { DIAGNOSTICS_FILE } from '../profiles/profile_writer.js';
import { readScales } from '../profiles/store.js';
import { CalibscopeError } from '../util/errors.js';
import type { BlockDetail, GridMetric, GridRequest, GridView } from './protocol.js';

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
  const get = metricAccessor(a, req.metric);
  for (let r = r0; r < r1; r++) {
    const cellRow = Math.floor((r - r0) / cellRows) * nCols;
    const base = r * a.blocks;
    for (let c = c0; c < c1; c++) {
      const v = get(base + c);
      if (!Number.isFinite(v)) continue;
      const k = cellRow + Math.floor((c - c0) / cellBlocks);
      sum[k] += v;
      cnt[k]++;
      if (v < lo[k]) lo[k] = v;
      if (v > hi[k]) hi[k] = v;
    }
  }
  const mean: (number | null)[] = new Array(cells);
  const min: (number | null)[] = new Array(cells);
  const max: (number | null)[] = new Array(cells);
  for (let k = 0; k < cells; k++) {
    mean[k] = cnt[k] > 0 ? num(sum[k] / cnt[k]) : null;
    min[k] = cnt[k] > 0 ? num(lo[k]) : null;
    max[k] = cnt[k] > 0 ? num(hi[k]) : null;
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
