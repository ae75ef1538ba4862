// Turns a GridView into a plotly heatmap trace: the metric's colour transform (log for scales and
// MSE, log2 around 1 for improvement, linear for outliers) and cell geometry in block/row units,
// where block b of row r is the unit square centred on (b, r). A cell's colour is the aggregate
// the service was asked for (max, extreme, mean, min of the blocks it covers).
import type { Data } from 'plotly.js';
import type { GridAggregate, GridMetric, GridView } from '../../../src/service/protocol';
import { eng } from '../format';

export const METRIC_LABELS: Record<GridMetric, string> = {
  scale: 'scale s',
  mse_before: 'MSE before',
  mse_after: 'MSE after',
  improvement: 'improvement',
  outliers: 'outliers',
};

/** The aggregates that make sense per metric, the one that shows outlier blocks first; labels
 *  for the toolbar's cell control and the hover. */
export const METRIC_AGGREGATES: Record<GridMetric, GridAggregate[]> = {
  scale: ['extreme', 'min', 'max', 'mean'],
  mse_before: ['max', 'mean', 'min'],
  mse_after: ['max', 'mean', 'min'],
  improvement: ['extreme', 'min', 'max', 'mean'],
  outliers: ['max', 'mean'],
};

/** What the aggregate shows, in words (the hover, the option's title). */
export function aggregateLabel(metric: GridMetric, a: GridAggregate, center?: number | null): string {
  if (a !== 'extreme') return a;
  if (metric === 'improvement') return 'furthest from 1×';
  if (metric === 'scale') return center ? `furthest from the median ${eng(center)}` : 'furthest from the median';
  return 'max';
}

function transform(metric: GridMetric): (v: number) => number | null {
  switch (metric) {
    case 'scale':
    case 'mse_before':
    case 'mse_after':
      return (v) => (v > 0 ? Math.log10(v) : null);
    case 'improvement':
      return (v) => (v > 0 ? Math.log2(v) : null);
    case 'outliers':
      return (v) => v;
  }
}

function colorscale(metric: GridMetric): [number, string][] | string {
  if (metric === 'improvement') return [[0, '#b2182b'], [0.5, '#f4f4f4'], [1, '#2166ac']];
  if (metric === 'outliers') return [[0, '#fff5eb'], [0.5, '#fd8d3c'], [1, '#7f2704']];
  return 'Viridis';
}

/** A 1, 2, 5 × 10^k step giving about `n` ticks over `span`. */
function niceStep(span: number, n: number): number {
  const raw = span / n;
  const p = 10 ** Math.floor(Math.log10(raw));
  const m = raw / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

/**
 * Colour-bar ticks for a log colour scale over [lo, hi] (in log units of `base`), labelled with
 * the values themselves. Where two or more powers of the base fall inside, the ticks are powers;
 * otherwise they are evenly spaced values, so a narrow range still carries a few readable labels.
 */
export function logTicks(lo: number, hi: number, base: 10 | 2): { tickvals: number[]; ticktext: string[] } {
  const label = (v: number) => (base === 2 ? `${Number(v.toPrecision(3))}×` : eng(v, true));
  const log = (v: number) => (base === 2 ? Math.log2(v) : Math.log10(v));
  if (!(hi > lo)) return { tickvals: [lo], ticktext: [label(base ** lo)] };
  const a = Math.ceil(lo - 1e-9);
  const b = Math.floor(hi + 1e-9);
  if (b - a >= 1) {
    const step = Math.max(1, Math.ceil((b - a) / 6));
    const tickvals: number[] = [];
    for (let k = a; k <= b; k += step) tickvals.push(k);
    return { tickvals, ticktext: tickvals.map((k) => label(base ** k)) };
  }
  const v0 = base ** lo;
  const v1 = base ** hi;
  const step = niceStep(v1 - v0, 6);
  const tickvals: number[] = [];
  const ticktext: string[] = [];
  for (let i = Math.ceil(v0 / step - 1e-9); i * step <= v1 * (1 + 1e-12); i++) {
    const v = Number((i * step).toPrecision(12));
    if (v <= 0) continue;
    tickvals.push(log(v));
    ticktext.push(label(v));
  }
  return { tickvals, ticktext };
}

export interface LogAxis {
  /** The axis range in log10 units: from a labelled tick at or below the smallest value to one at
   *  or above the largest. */
  range: [number, number];
  tickvals: number[];
  ticktext: string[];
}

/**
 * A log axis over the positive values whose first and last ticks are labelled and enclose every
 * value (a value below the lowest label cannot be read off the axis). Narrow ranges (under 4×) get
 * linear 1-2-5 steps, ranges up to about 3 decades 1, 2, 5 × 10^k, wider ones powers of ten.
 */
export function logAxis(values: readonly number[]): LogAxis | null {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (!(v > 0) || !Number.isFinite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo === Infinity) return null;
  if (hi / lo < 1.001) {
    lo /= 1.1;
    hi *= 1.1;
  }
  const clean = (v: number) => Number(v.toPrecision(12));
  const done = (ticks: number[]): LogAxis => ({ range: [Math.log10(ticks[0]), Math.log10(ticks[ticks.length - 1])], tickvals: ticks, ticktext: ticks.map((v) => eng(v, true)) });
  if (hi / lo < 4) {
    const step = niceStep(hi - lo, 4);
    const first = Math.floor(lo / step + 1e-9);
    if (first > 0) {
      const ticks: number[] = [];
      for (let i = first; ; i++) {
        ticks.push(clean(i * step));
        if (i * step >= hi * (1 - 1e-12)) break;
      }
      return done(ticks);
    }
  }
  const e0 = Math.floor(Math.log10(lo) + 1e-9);
  const e1 = Math.ceil(Math.log10(hi) - 1e-9);
  if (e1 - e0 <= 3) {
    const seq: number[] = [];
    for (let e = e0; e <= e1; e++) for (const m of [1, 2, 5]) seq.push(clean(m * 10 ** e));
    let a = 0;
    while (a + 1 < seq.length && seq[a + 1] <= lo * (1 + 1e-12)) a++;
    const b = seq.findIndex((v) => v >= hi * (1 - 1e-12));
    return done(seq.slice(a, b + 1));
  }
  const step = Math.ceil((e1 - e0) / 7);
  const ticks: number[] = [];
  for (let e = e0; ; e += step) {
    ticks.push(clean(10 ** e));
    if (e >= e1) break;
  }
  return done(ticks);
}

/** The q-quantile of |v| over the non-null values. */
function quantileAbs(z: (number | null)[][], q: number): number {
  const v: number[] = [];
  for (const row of z) for (const x of row) if (x !== null) v.push(Math.abs(x));
  if (v.length === 0) return 0;
  v.sort((a, b) => a - b);
  return v[Math.min(v.length - 1, Math.floor(q * v.length))];
}

export function heatmapTrace(g: GridView): Data {
  const f = transform(g.metric);
  const z: (number | null)[][] = [];
  for (let i = 0; i < g.nRows; i++) {
    const row: (number | null)[] = new Array(g.nCols);
    for (let j = 0; j < g.nCols; j++) {
      const v = g.value[i * g.nCols + j];
      row[j] = v === null ? null : f(v);
    }
    z.push(row);
  }
  let zmin = g.fullMin === null ? undefined : (f(g.fullMin) ?? undefined);
  let zmax = g.fullMax === null ? undefined : (f(g.fullMax) ?? undefined);
  if (g.metric !== 'outliers' && g.metric !== 'improvement' && zmin === undefined && g.fullMax !== null) zmin = (zmax ?? 0) - 6;
  const colorbar: Record<string, unknown> = { thickness: 12, len: 0.9, title: { text: METRIC_LABELS[g.metric], side: 'right' } };
  let zmid: number | undefined;
  if (g.metric === 'improvement') {
    // Centred on 1× (no change); the extent follows the bulk of the shown cells, not a few extreme blocks.
    const m = Math.max(quantileAbs(z, 0.99), 0.05);
    zmin = -m;
    zmax = m;
    zmid = 0;
    Object.assign(colorbar, logTicks(-m, m, 2));
  } else if (g.metric !== 'outliers' && zmin !== undefined && zmax !== undefined) {
    Object.assign(colorbar, logTicks(zmin, zmax, 10));
  }
  return {
    type: 'heatmap',
    z,
    x0: g.blockStart + (g.cellBlocks - 1) / 2,
    dx: g.cellBlocks,
    y0: g.rowStart + (g.cellRows - 1) / 2,
    dy: g.cellRows,
    zmin,
    zmax,
    zmid,
    zauto: zmin === undefined,
    colorscale: colorscale(g.metric),
    colorbar,
    hoverinfo: 'none',
    // Exact cells get crisp edges; downsampled ones are smoothed by the browser anyway.
    zsmooth: false,
  } as Data;
}

export interface CellInfo {
  rowStart: number;
  rowEnd: number;
  blockStart: number;
  blockEnd: number;
  /** How many blocks the cell covers. */
  blocks: number;
  mean: number | null;
  min: number | null;
  max: number | null;
  /** The coloured value and the block it comes from (null for the mean). */
  value: number | null;
  valueRow: number | null;
  valueBlock: number | null;
  exact: boolean;
}

/** The tensor rows/blocks and values under the heatmap cell (i, j). */
export function cellAt(g: GridView, i: number, j: number): CellInfo | null {
  if (i < 0 || j < 0 || i >= g.nRows || j >= g.nCols) return null;
  const k = i * g.nCols + j;
  const rowStart = g.rowStart + i * g.cellRows;
  const blockStart = g.blockStart + j * g.cellBlocks;
  const rowEnd = Math.min(g.rowEnd, rowStart + g.cellRows);
  const blockEnd = Math.min(g.blockEnd, blockStart + g.cellBlocks);
  const at = g.valueAt[k];
  return {
    rowStart,
    rowEnd,
    blockStart,
    blockEnd,
    blocks: (rowEnd - rowStart) * (blockEnd - blockStart),
    mean: g.mean[k],
    min: g.min[k],
    max: g.max[k],
    value: g.value[k],
    valueRow: at === null ? null : Math.floor(at / g.totalBlocks),
    valueBlock: at === null ? null : at % g.totalBlocks,
    exact: g.cellRows === 1 && g.cellBlocks === 1,
  };
}
