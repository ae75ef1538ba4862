// The MSE tab: MSE before (grey) and after (blue) of every tensor of the model, in table order, as
// two dots joined by a line on a log axis. Dots rather than bars: a bar on a log axis starts at an
// arbitrary floor, so its length says nothing and a narrow range looks like large differences; the
// line's length is the improvement ratio. The axis's first and last labels enclose every value;
// an MSE of exactly 0 (below any log axis) is a down-pointing triangle on the axis's bottom edge.
// Clicking a tensor's column selects it.
import type { Data, PlotMouseEvent } from 'plotly.js';
import { useMemo } from 'react';
import { useActions, useW } from '../context';
import { eng } from '../format';
import { Plot } from '../Plot';
import { visibleTensors } from '../store';
import { plotColors, useResolvedTheme } from '../theme';
import { logAxis } from './heatmap_data';

export function MseChart() {
  const profile = useW((s) => s.profile);
  const filter = useW((s) => s.filter);
  const sort = useW((s) => s.sort);
  const selected = useW((s) => s.selectedTensor);
  const colors = plotColors(useResolvedTheme());
  const a = useActions();
  const rows = useMemo(() => (profile ? visibleTensors(profile.tensors, filter, sort) : []), [profile, filter, sort]);
  const axis = useMemo(() => logAxis(rows.flatMap((t) => [t.mse_before, t.mse_after])), [rows]);
  const data = useMemo((): Data[] => {
    const names = rows.map((t) => t.tensor_name);
    const bottom = axis ? 10 ** axis.range[0] : 1;
    const big = rows.length > 60 ? 6 : 8;
    const dots = (name: string, key: 'mse_before' | 'mse_after', color: string): Data => ({
      type: 'scatter',
      mode: 'markers',
      name,
      x: names,
      y: rows.map((t) => (t[key] > 0 ? t[key] : bottom)),
      customdata: rows.map((t) => eng(t[key])),
      hovertemplate: `${name} %{customdata}<extra></extra>`,
      cliponaxis: false,
      marker: {
        color,
        size: rows.map((t) => (t.tensor_name === selected ? big + 5 : big)),
        symbol: rows.map((t) => (t[key] > 0 ? 'circle' : 'triangle-down')),
        line: { width: rows.map((t) => (t.tensor_name === selected ? 2 : 0)), color: colors.fg },
      },
    });
    // One segment per tensor (null breaks the line between tensors).
    const lx: string[] = [];
    const ly: (number | null)[] = [];
    for (const t of rows) {
      lx.push(t.tensor_name, t.tensor_name, t.tensor_name);
      ly.push(t.mse_before > 0 ? t.mse_before : bottom, t.mse_after > 0 ? t.mse_after : bottom, null);
    }
    return [
      { type: 'scatter', mode: 'lines', x: lx, y: ly, line: { color: colors.before, width: 1.5 }, hoverinfo: 'skip', showlegend: false, cliponaxis: false },
      dots('MSE before', 'mse_before', colors.before),
      dots('MSE after', 'mse_after', colors.after),
    ] as Data[];
  }, [rows, selected, colors, axis]);
  const layout = useMemo(() => {
    // A little room beyond the end ticks, so dots on them are not cut in half.
    const pad = axis ? Math.max(0.02, 0.03 * (axis.range[1] - axis.range[0])) : 0;
    return {
      margin: { l: 60, r: 10, t: 10, b: 30 },
      paper_bgcolor: colors.bg,
      plot_bgcolor: colors.bg,
      font: { color: colors.fg, size: 11 },
      legend: { orientation: 'h' as const, y: 1.08 },
      hovermode: 'x' as const,
      xaxis: { showticklabels: false, showgrid: false, title: { text: `${rows.length} tensor${rows.length === 1 ? '' : 's'} (table order)` } },
      yaxis: {
        type: 'log' as const,
        title: { text: 'MSE (log)' },
        gridcolor: colors.grid,
        zeroline: false,
        ...(axis ? { tickmode: 'array' as const, tickvals: axis.tickvals, ticktext: axis.ticktext, range: [axis.range[0] - pad, axis.range[1] + pad], autorange: false } : {}),
      },
    };
  }, [colors, rows.length, axis]);
  if (!profile || rows.length === 0) return <p className="muted">No calibrated tensors.</p>;
  const onClick = (e: PlotMouseEvent) => {
    const name = e.points[0]?.x;
    if (typeof name === 'string') void a.selectTensor(name);
  };
  return <Plot data={data} layout={layout} className="plot" onClick={onClick} testId="mse-chart" />;
}
