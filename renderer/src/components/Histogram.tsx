// Right column: histogram of |x·s| for the selected tensor against the format's maximum; what lies
// beyond the line is clipped.
import { useMemo } from 'react';
import { useW } from '../context';
import { count } from '../format';
import { Plot } from '../Plot';
import { plotColors, useResolvedTheme } from '../theme';

const HIST_CONFIG = { displayModeBar: false, showTips: false };

export function Histogram() {
  const h = useW((s) => s.histogram);
  const tensor = useW((s) => s.selectedTensor);
  const colors = plotColors(useResolvedTheme());
  const data = useMemo(() => {
    if (!h) return [];
    const x = h.counts.map((_, i) => (h.edges[i] + h.edges[i + 1]) / 2);
    return [{ type: 'bar' as const, x, y: h.counts, width: h.edges[1] - h.edges[0], marker: { color: colors.accent }, hovertemplate: '|x·s| ≈ %{x:.3g}: %{y} weights<extra></extra>' }];
  }, [h, colors.accent]);
  const layout = useMemo(
    () => ({
      height: 170,
      margin: { l: 44, r: 8, t: 6, b: 30 },
      paper_bgcolor: colors.bg,
      plot_bgcolor: colors.bg,
      font: { color: colors.fg, size: 10 },
      bargap: 0,
      xaxis: { title: { text: '|x·s|' }, gridcolor: colors.grid },
      yaxis: { type: 'log' as const, gridcolor: colors.grid, dtick: 1, exponentformat: 'power' as const },
      shapes: h ? [{ type: 'line' as const, x0: h.formatMax, x1: h.formatMax, yref: 'paper' as const, y0: 0, y1: 1, line: { color: colors.danger, dash: 'dash' as const, width: 1.5 } }] : [],
      annotations: h ? [{ x: h.formatMax, yref: 'paper' as const, y: 1, text: `max ${h.formatMax}`, showarrow: false, xanchor: 'right' as const, font: { color: colors.danger, size: 10 } }] : [],
    }),
    [h, colors],
  );
  if (!tensor) return null;
  return (
    <section className="panel histogram" aria-label="scaled value histogram">
      <h3>|x·s| against the format maximum</h3>
      {h ? (
        <>
          <Plot data={data} layout={layout} config={HIST_CONFIG} className="plot-small" testId="xs-histogram" />
          <p className="muted">
            {count(h.clipped)} of {count(h.total)} weights above {h.formatMax} (clipped)
          </p>
        </>
      ) : (
        <p className="muted">loading…</p>
      )}
    </section>
  );
}
