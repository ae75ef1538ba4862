// The correlation tab: per-query Pearson correlation of FP16 vs quantized embeddings against the
// threshold line, retrieval agreement, and the drift attribution with the mixed-precision
// suggestion. Says plainly when validation is not available. Below: the correlation with dynamic
// activations when the validation has it, and the profile's calibration mode with its head
// weights per layer and the calibration statistics it used.
import { useMemo } from 'react';
import type { DynamicActivationsView, ProfileView } from '../../../src/service/protocol';
import { useActions, useW } from '../context';
import { eng, exact } from '../format';
import { Plot } from '../Plot';
import { plotColors, useResolvedTheme } from '../theme';

function DynamicActivations({ d }: { d: DynamicActivationsView }) {
  return (
    <div className="dyn" data-testid="dynamic-activations">
      <span>
        dynamic activations: mean{' '}
        <b data-testid="dynamic-mean" data-value={d.meanCorrelation} title={String(d.meanCorrelation)}>
          {d.meanCorrelation.toFixed(5)}
        </b>
      </span>
      <span title={String(d.minCorrelation)}>min {d.minCorrelation.toFixed(5)}</span>
      {d.weightOnlyMeanCorrelation !== null && <span className="muted">weights only {d.weightOnlyMeanCorrelation.toFixed(5)}</span>}
      {d.retrievalAgreement !== null && <span>retrieval agreement {(d.retrievalAgreement * 100).toFixed(1)}%</span>}
      {d.scaleMin !== null && d.scaleMax !== null && (
        <span title={`${exact(d.scaleMin)} … ${exact(d.scaleMax)}`}>
          activation scales {eng(d.scaleMin)} … {eng(d.scaleMax)}
        </span>
      )}
      {d.globalScaleMin !== null && d.globalScaleMax !== null && (
        <span title={`${exact(d.globalScaleMin)} … ${exact(d.globalScaleMax)}`}>
          global {eng(d.globalScaleMin)} … {eng(d.globalScaleMax)}
        </span>
      )}
      {d.clippedFraction !== null && <span>clipped {(d.clippedFraction * 100).toFixed(2)}%</span>}
    </div>
  );
}

/** The profile's mode in brief: the objective, the head weights per layer (entropy-aware), the statistics. */
function ModeInfo({ p }: { p: ProfileView }) {
  const d = p.modeDetails;
  const st = p.statistics;
  const mode = p.summary.mode;
  const weights = d?.head_weights_by_layer;
  const entropy = d?.attention_entropy_by_layer;
  return (
    <div className="mode-info" data-testid="mode-details" data-mode={mode}>
      <div>
        calibration mode <b>{mode}</b>
        {d ? <span className="formula"> · {d.objective}</span> : <span className="formula"> · plain squared error (profile from before modes)</span>}
        {d?.epsilon !== null && d?.epsilon !== undefined && <span className="formula"> · ε = {d.epsilon}</span>}
      </div>
      {st && (
        <div data-testid="mode-statistics">
          statistics: {st.query_count} queries, {st.tokens} tokens,{' '}
          <span className="hash" title={st.hash}>
            {st.hash.slice(0, 19)}…
          </span>
        </div>
      )}
      {weights && weights.length > 0 && (
        <table className="head-weights" data-testid="head-weights" title="head weights w_h per layer (sharper heads, lower attention entropy, weigh more); hover for the entropy">
          <thead>
            <tr>
              <th>layer</th>
              {weights[0].map((_, h) => (
                <th key={h}>h{h}</th>
              ))}
            </tr>
          </thead>
          <tbody>
            {weights.map((row, l) => (
              <tr key={l}>
                <th>{l}</th>
                {row.map((w, h) => (
                  <td key={h} className={w > 1 ? 'sharp' : ''} title={`w = ${w}, entropy ${entropy?.[l]?.[h]?.toFixed(4) ?? '?'} nats`}>
                    {w.toFixed(3)}
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

export function CorrelationPanel() {
  const profile = useW((s) => s.profile);
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
          <button data-testid="validate-dynamic" onClick={() => void a.runValidation(false, true)} title="validate again with every Linear layer's input also quantized per batch (standard scales computed on the fly)">
            Validate + dynamic activations
          </button>
        </div>
      )}
      {v.dynamicActivations && <DynamicActivations d={v.dynamicActivations} />}
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
      {profile && profile.modelId === v.modelId && profile.summary.state !== 'missing' && <ModeInfo p={profile} />}
    </div>
  );
}
