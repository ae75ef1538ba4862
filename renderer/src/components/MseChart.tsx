// The MSE tab: MSE before and after for every tensor of the model (log scale), in table order;
// clicking a bar selects the tensor.
import type { PlotMouseEvent } from 'plotly.js';
import { useMemo } from 'react';
import { useActions, useW } from '../context';
import { Plot } from '../Plot';
import { visibleTensors } from '../store';
import { plotColors, useResolvedTheme } from '../theme';
import { mseAxisTicks } from './heatmap_data';

export function MseChart() {
  const profile = useW((s) => s.profile);
  const filter = useW((s) => s.filter);
  const sort = useW((s) => s.sort);
  const selected = useW((s) => s.selectedTensor);
  const colors = plotColors(useResolvedTheme());
  const a = useActions();
  const rows = useMemo(() => (profile ? visibleTensors(profile.tensors, filter, sort) : []), [profile, filter, sort]);
  const data = useMemo(() => {
    const names = rows.map((t) => t.tensor_name);
    const line = rows.map((t) => (t.tensor_name === selected ? 2 : 0));
    return [
      { type: 'bar' as const, name: 'MSE before', x: names, y: rows.map((t) => t.mse_before), marker: { color: colors.before, line: { width: line, color: colors.fg } } },
      { type: 'bar' as const, name: 'MSE after', x: names, y: rows.map((t) => t.mse_after), marker: { color: colors.after, line: { width: line, color: colors.fg } } },
    ];
  }, [rows, selected, colors]);
  const ticks = useMemo(() => mseAxisTicks(rows.flatMap((t) => [t.mse_before, t.mse_after])), [rows]);
  const layout = useMemo(
    () => ({
      barmode: 'group' as const,
      margin: { l: 60, r: 10, t: 10, b: 30 },
      paper_bgcolor: colors.bg,
      plot_bgcolor: colors.bg,
      font: { color: colors.fg, size: 11 },
      legend: { orientation: 'h' as const, y: 1.08 },
      xaxis: { showticklabels: false, title: { text: `${rows.length} tensor${rows.length === 1 ? "" : "s"} (table order)` } },
      yaxis: { type: 'log' as const, title: { text: 'MSE' }, gridcolor: colors.grid, exponentformat: 'e' as const, ...(ticks ? { tickmode: 'array' as const, ...ticks } : {}) },
    }),
    [colors, rows.length, ticks],
  );
  if (!profile || rows.length === 0) return <p className="muted">No calibrated tensors.</p>;
  const onClick = (e: PlotMouseEvent) => {
    const name = e.points[0]?.x;
    if (typeof name === 'string') void a.selectTensor(name);
  };
  return <Plot data={data} layout={layout} className="plot" onClick={onClick} testId="mse-chart" />;
}
