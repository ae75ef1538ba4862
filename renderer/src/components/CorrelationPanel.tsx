// The correlation tab: per-query Pearson correlation of FP16 vs quantized embeddings against the
// threshold line, retrieval agreement, and the drift attribution with the mixed-precision
// suggestion. Says plainly when validation is not available.
import { useMemo } from 'react';
import { useActions, useW } from '../context';
import { Plot } from '../Plot';
import { plotColors, useResolvedTheme } from '../theme';

export function CorrelationPanel() {
  const v = useW((s) => s.validation);
  const colors = plotColors(useResolvedTheme());
  const a = useActions();
  const data = useMemo(
    () => (v && v.perQuery.length > 0 ? [{ type: 'bar' as const, x: v.perQuery.map((_, i) => i), y: v.perQuery.map((q) => q.correlation), text: v.perQuery.map((q) => q.query), hovertemplate: '%{text}<br>r = %{y:.5f}<extra></extra>', marker: { color: colors.accent } }] : []),
    [v, colors.accent],
  );
  const layout = useMemo(
    () => ({
      margin: { l: 50, r: 10, t: 10, b: 30 },
      paper_bgcolor: colors.bg,
      plot_bgcolor: colors.bg,
      font: { color: colors.fg, size: 11 },
      xaxis: { title: { text: 'query' }, gridcolor: colors.grid },
      // Zoomed to where the values and the threshold are: the differences that matter are in the third decimal.
      yaxis: { title: { text: 'Pearson r' }, gridcolor: colors.grid, range: v ? [Math.min(v.minCorrelation ?? v.threshold, v.threshold) - 0.005, 1.0005] : undefined },
      shapes: v ? [{ type: 'line' as const, xref: 'paper' as const, x0: 0, x1: 1, y0: v.threshold, y1: v.threshold, line: { color: colors.danger, dash: 'dash' as const } }] : [],
    }),
    [v, colors],
  );
  if (!v) return <p className="muted">Select a model.</p>;
  const mean = v.meanCorrelation;
  return (
    <div className="correlation">
      <div className="corr-head">
        <span>
          mean correlation{' '}
          <b data-testid="correlation-mean" data-value={mean ?? ''} title={mean === null ? '' : String(mean)}>
            {mean === null ? 'not validated' : mean.toFixed(5)}
          </b>{' '}
          (threshold {v.threshold})
        </span>
        {v.minCorrelation !== null && <span>min {v.minCorrelation.toFixed(5)}</span>}
        {v.retrievalAgreement !== null && <span>retrieval agreement {(v.retrievalAgreement * 100).toFixed(1)}%</span>}
        {v.passed !== null && <span className={v.passed ? 'pass-ok' : 'pass-fail'}>{v.passed ? '✓ passes' : '✗ drifts'}</span>}
      </div>
      {!v.available && <p className="notice" data-testid="validation-unavailable">Validation is not available: {v.reason}.</p>}
      {v.available && (
        <div className="buttons">
          <button onClick={() => void a.runValidation(false)}>Validate</button>
          <button onClick={() => void a.runValidation(true)}>Attribute drift</button>
        </div>
      )}
      {data.length > 0 && <Plot data={data} layout={layout} className="plot" />}
      {v.attribution && (
        <table className="attribution">
          <thead>
            <tr>
              <th>tensor quantized alone</th>
              <th>correlation</th>
            </tr>
          </thead>
          <tbody>
            {v.attribution.slice(0, 30).map((e) => (
              <tr key={e.tensor}>
                <td>{e.tensor}</td>
                <td>{e.correlation.toFixed(5)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {v.suggestion && (
        <p>
          Mixed precision: keep {v.suggestion.keepHigher.map((k) => `${k.tensor} (${k.format})`).join(', ') || 'nothing'} at higher precision
          {v.suggestion.bitsPerWeight !== null ? ` → ${v.suggestion.bitsPerWeight.toFixed(3)} bits/weight` : ''}
          {v.suggestion.passes === false ? ' (still below the threshold)' : ''}.
        </p>
      )}
    </div>
  );
}
