// Centre bottom: the selected tensor's rows × blocks heatmap with the metric switch. The service
// downsamples to the plot's pixel size; zooming asks for the zoomed window again, so detail grows
// down to one cell per block, where values are exact. A cell covering many blocks is coloured by
// the aggregate picked in the toolbar (by default the one that shows a single bad block). Hover
// shows the cell, and for a single block every stored metric, exactly.
import type { PlotMouseEvent, PlotRelayoutEvent } from 'plotly.js';
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from 'react';
import type { GridMetric } from '../../../src/service/protocol';
import { useActions, useW } from '../context';
import { eng, exact, exactSci } from '../format';
import { Plot } from '../Plot';
import { plotColors, useResolvedTheme } from '../theme';
import { aggregateLabel, cellAt, heatmapTrace, METRIC_AGGREGATES, METRIC_LABELS, type CellInfo } from './heatmap_data';
import { recordTiming } from '../timings';

const PLOT_CONFIG = { showTips: false, displaylogo: false };
const METRICS: GridMetric[] = ['scale', 'mse_before', 'mse_after', 'improvement', 'outliers'];

function num(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : typeof v === 'string' && v !== '' && Number.isFinite(Number(v)) ? Number(v) : null;
}

export function Heatmap() {
  const grid = useW((s) => s.grid);
  const metric = useW((s) => s.metric);
  // The user's choice, else what the service used (its default), else that default's name here.
  const aggregate = useW((s) => s.aggregates[s.metric] ?? s.grid?.aggregate ?? METRIC_AGGREGATES[s.metric][0]);
  const model = useW((s) => s.selectedModel);
  const tensor = useW((s) => s.selectedTensor);
  const hover = useW((s) => s.hover);
  const viewRev = useW((s) => s.viewRev);
  const loading = useW((s) => s.gridLoading);
  const fetchMs = useW((s) => s.gridFetchMs);
  const diagnostics = useW((s) => s.profile?.hasDiagnostics ?? false);
  const a = useActions();
  const theme = useResolvedTheme();
  const colors = plotColors(theme);
  const box = useRef<HTMLDivElement>(null);
  const [cell, setCell] = useState<CellInfo | null>(null);
  const selectedAt = useRef<{ tensor: string | null; t: number; recorded: boolean }>({ tensor: null, t: 0, recorded: false });

  useEffect(() => {
    selectedAt.current = { tensor, t: performance.now(), recorded: false };
    setCell(null);
  }, [model, tensor]);

  // Hover latency: from the pointer move to the values on screen (logged by the e2e tests).
  const lastMove = useRef(0);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const on = () => (lastMove.current = performance.now());
    el.addEventListener('pointermove', on, { capture: true, passive: true });
    return () => el.removeEventListener('pointermove', on, { capture: true });
  }, []);
  useEffect(() => {
    const t = lastMove.current;
    if (!cell || !t) return;
    requestAnimationFrame(() => recordTiming('hover', { ms: performance.now() - t, exact: cell.exact }));
  }, [cell]);
  useEffect(() => {
    const t = lastMove.current;
    if (!hover || !t) return;
    requestAnimationFrame(() => recordTiming('hover-exact', { ms: performance.now() - t }));
  }, [hover]);

  useLayoutEffect(() => {
    const el = box.current;
    if (!el) return;
    const report = () => void a.setGridSize(Math.max(50, el.clientHeight - 60), Math.max(50, el.clientWidth - 120));
    const ro = new ResizeObserver(report);
    ro.observe(el);
    report();
    return () => ro.disconnect();
  }, [a]);

  const data = useMemo(() => (grid ? [heatmapTrace(grid)] : []), [grid]);
  const layout = useMemo(
    () => ({
      margin: { l: 60, r: 20, t: 10, b: 40 },
      paper_bgcolor: colors.bg,
      plot_bgcolor: colors.bg,
      font: { color: colors.fg, size: 11 },
      xaxis: { title: { text: 'block' }, gridcolor: colors.grid, zeroline: false, dtick: niceStep(grid ? grid.blockEnd - grid.blockStart : 8) },
      yaxis: { title: { text: 'row' }, autorange: 'reversed' as const, gridcolor: colors.grid, zeroline: false, dtick: niceStep(grid ? grid.rowEnd - grid.rowStart : 8) },
      // A new revision drops the user's zoomed axis ranges (Reset zoom, a new selection, a
      // rewritten profile), so the axes show the window the data now covers.
      uirevision: `${model}|${tensor}|${viewRev}`,
      dragmode: 'zoom' as const,
    }),
    [colors.bg, colors.fg, colors.grid, model, tensor, viewRev, grid?.blockStart, grid?.blockEnd, grid?.rowStart, grid?.rowEnd],
  );

  const onHover = (e: PlotMouseEvent) => {
    if (!grid) return;
    const pt = e.points[0] as unknown as { pointNumber: [number, number] | number };
    const pn = pt.pointNumber;
    if (!Array.isArray(pn)) return;
    const c = cellAt(grid, pn[0], pn[1]);
    setCell(c);
    if (c?.exact) void a.hoverBlock(c.rowStart, c.blockStart);
    else a.clearHover();
  };

  const onRelayout = (e: PlotRelayoutEvent) => {
    const r = e as Record<string, unknown>;
    if (r['xaxis.autorange'] || r['yaxis.autorange']) {
      void a.zoom({});
      return;
    }
    const x0 = num(r['xaxis.range[0]']);
    const x1 = num(r['xaxis.range[1]']);
    const y0 = num(r['yaxis.range[0]']);
    const y1 = num(r['yaxis.range[1]']);
    if (x0 === null && y0 === null) return;
    const w = { ...windowOf(grid) };
    if (x0 !== null && x1 !== null) {
      w.blockStart = Math.max(0, Math.floor(Math.min(x0, x1) + 0.5));
      w.blockEnd = Math.max(w.blockStart + 1, Math.ceil(Math.max(x0, x1) + 0.5));
    }
    if (y0 !== null && y1 !== null) {
      w.rowStart = Math.max(0, Math.floor(Math.min(y0, y1) + 0.5));
      w.rowEnd = Math.max(w.rowStart + 1, Math.ceil(Math.max(y0, y1) + 0.5));
    }
    void a.zoom(w);
  };

  const onDrawn = (drawMs: number) => {
    const s = selectedAt.current;
    if (!grid || s.recorded || grid.tensor !== s.tensor) return;
    s.recorded = true;
    recordTiming('heatmap', {
      tensor: grid.tensor,
      blocks: grid.totalRows * grid.totalBlocks,
      cellsShown: grid.nRows * grid.nCols,
      fetchMs: fetchMs ?? null,
      drawMs: Math.round(drawMs),
      totalMs: Math.round(performance.now() - s.t),
    });
  };

  const needsDiag = metric !== 'scale' && !diagnostics;
  return (
    <div className="heatmap-panel">
      <div className="toolbar">
        <span className="metric-switch" role="radiogroup" aria-label="heatmap metric">
          {METRICS.map((m) => (
            <button key={m} role="radio" aria-checked={metric === m} className={metric === m ? 'on' : ''} onClick={() => void a.setMetric(m)}>
              {METRIC_LABELS[m]}
            </button>
          ))}
        </span>
        {grid && !grid.exact && (
          <label title="what colours a cell that covers several blocks (exact cells show their block)">
            cell
            <select data-testid="heatmap-aggregate" aria-label="cell aggregate" value={aggregate} onChange={(e) => void a.setAggregate(e.target.value as typeof aggregate)}>
              {METRIC_AGGREGATES[metric].map((g) => (
                <option key={g} value={g} title={aggregateLabel(metric, g)}>
                  {g}
                </option>
              ))}
            </select>
          </label>
        )}
        <span
          className="muted grid-note"
          title={grid ? (grid.exact ? 'one cell per block: exact values' : `each cell covers ${grid.cellRows} rows × ${grid.cellBlocks} blocks; drag to zoom in for detail`) : undefined}
        >
          {grid ? `${grid.totalRows} × ${grid.totalBlocks} blocks · ${grid.exact ? 'exact, 1 cell per block' : `${grid.cellRows}×${grid.cellBlocks} per cell`}` : ''}
          {loading ? ' · loading…' : ''}
        </span>
        {grid && (grid.rowStart > 0 || grid.blockStart > 0 || grid.rowEnd < grid.totalRows || grid.blockEnd < grid.totalBlocks) && (
          <button className="small" onClick={() => void a.zoom({})}>
            Reset zoom
          </button>
        )}
      </div>
      {needsDiag && <p className="muted">This profile was written without per-block diagnostics: only scales are stored.</p>}
      <div className="heatmap-box" ref={box}>
        {tensor ? (
          <Plot data={data} layout={layout} config={PLOT_CONFIG} testId="scale-heatmap" className="plot" onHover={onHover} onUnhover={() => setCell(null)} onRelayout={onRelayout} onDrawn={onDrawn} />
        ) : (
          <p className="muted center">Select a tensor to see its per-block heatmap.</p>
        )}
      </div>
      <div className="hover-line">
        {cell && (
          <div className="hover-box" data-testid="heatmap-hover">
            <div>
              {cell.exact
                ? `row ${cell.rowStart}, block ${cell.blockStart}`
                : `${span('row', cell.rowStart, cell.rowEnd)}, ${span('block', cell.blockStart, cell.blockEnd)} · ${cell.blocks.toLocaleString('en-US')} blocks`}
            </div>
            {cell.exact ? (
              <div>
                {METRIC_LABELS[metric]} = <b>{exact(cell.mean)}</b>
              </div>
            ) : (
              <div data-testid="heatmap-hover-aggregate">
                {METRIC_LABELS[metric]}, {aggregateLabel(metric, grid?.aggregate ?? aggregate, grid?.center)}: <b>{eng(cell.value)}</b>
                {cell.valueRow !== null && ` at row ${cell.valueRow}, block ${cell.valueBlock}`} · mean {eng(cell.mean)} · min {eng(cell.min)} · max {eng(cell.max)}
              </div>
            )}
            {cell.exact && hover && hover.row === cell.rowStart && hover.block === cell.blockStart && (
              <div className="exact" data-testid="heatmap-hover-exact">
                cols {hover.colStart}–{hover.colEnd - 1} · s = {exact(hover.scale)} · MSE {exactSci(hover.mseBefore)} → {exactSci(hover.mseAfter)} · outliers {exact(hover.outliers)}
              </div>
            )}
          </div>
        )}
        {!cell && tensor && <div className="muted">Hover a cell for its values; drag to zoom in (down to exact blocks), double-click to zoom out.</div>}
      </div>
    </div>
  );
}

/** "rows 3–9" or "row 3" for the half-open range [a, b). */
function span(what: string, a: number, b: number): string {
  return b - a === 1 ? `${what} ${a}` : `${what}s ${a}–${b - 1}`;
}

/** An integer tick step (1, 2, 5 × 10^k) giving about 8 ticks over `span` blocks or rows. */
function niceStep(span: number): number {
  const raw = Math.max(1, span / 8);
  const p = 10 ** Math.floor(Math.log10(raw));
  const m = raw / p;
  return Math.max(1, (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p);
}

function windowOf(g: { rowStart: number; rowEnd: number; blockStart: number; blockEnd: number } | null) {
  return g ? { rowStart: g.rowStart, rowEnd: g.rowEnd, blockStart: g.blockStart, blockEnd: g.blockEnd } : {};
}
