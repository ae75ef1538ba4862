// Right column, top: the selected tensor's numbers. The test ids hold the values as numbers
// (engineering notation, 4 significant digits); data-value and the title hold them exactly.
// A tensor calibrated in a weighted mode also shows the searched objective and its weighting.
import { useW } from '../context';
import type { WeightingKind } from '../../../src/service/protocol';
import { count, eng, exact, ratio, shape } from '../format';

const WEIGHTING: Record<WeightingKind, string> = {
  none: 'none: plain squared error (no input statistics)',
  activation: "activation: input features' E[x²]",
  'activation+head_columns': "activation × head weights of the input columns",
  'activation+head_rows': "activation, head weights of the output rows",
};

function Num({ id, value, text }: { id?: string; value: number | null; text?: string }) {
  return (
    <span className="num" data-testid={id} data-value={exact(value)} title={exact(value)}>
      {text ?? eng(value)}
    </span>
  );
}

/** A dotted tensor name that wraps after its dots rather than inside a word. */
function breakAtDots(name: string) {
  const parts = name.split('.');
  return parts.map((p, i) => (
    <span key={i}>
      {p}
      {i < parts.length - 1 && (
        <>
          .<wbr />
        </>
      )}
    </span>
  ));
}

export function TensorDetails() {
  const profile = useW((s) => s.profile);
  const name = useW((s) => s.selectedTensor);
  const t = profile?.tensors.find((x) => x.tensor_name === name);
  if (!t) return <section className="panel details"><p className="muted">No tensor selected (↑/↓ move, Enter opens, Esc closes).</p></section>;
  return (
    <section className="panel details" aria-label="tensor details">
      <h3 className="tensor-title" title={t.tensor_name}>{breakAtDots(t.tensor_name)}</h3>
      <dl className="facts">
        <dt>shape</dt>
        <dd>
          {shape(t.shape)} <span className="muted">({t.dtype}, {t.rows} × {t.blocks} blocks)</span>
        </dd>
        <dt>format</dt>
        <dd>
          {t.format} <span className="muted">({t.scale_encoding} scales, {t.search} search)</span>
        </dd>
        <dt>block size</dt>
        <dd>
          <Num id="block-size" value={t.block_size} text={String(t.block_size)} />
        </dd>
        <dt>MSE</dt>
        <dd>
          <Num id="mse-before" value={t.mse_before} /> → <Num id="mse-after" value={t.mse_after} />
        </dd>
        <dt>mode</dt>
        <dd data-testid="tensor-mode" data-mode={t.mode}>
          {t.mode}
          {t.mode !== profile!.summary.mode ? <span className="muted"> (re-run; profile {profile!.summary.mode})</span> : null}
        </dd>
        {t.objective_after !== undefined && (
          <>
            <dt title="the searched objective Σ r_i c_j (x − x̂)² per element, naive scales → calibrated">objective</dt>
            <dd>
              <Num id="objective-before" value={t.objective_before ?? null} /> → <Num id="objective-after" value={t.objective_after} />{' '}
              <span className="muted">({ratio(t.objective_after > 0 ? (t.objective_before ?? 0) / t.objective_after : null)})</span>
            </dd>
            <dt>weighting</dt>
            <dd data-testid="weighting" data-weighting={t.weighting ?? ''} title={t.weighting ? WEIGHTING[t.weighting] : ''}>
              {t.weighting ?? '—'}
            </dd>
          </>
        )}
        <dt>improvement</dt>
        <dd>
          <Num value={t.improvement_ratio} text={ratio(t.improvement_ratio)} />
        </dd>
        <dt>outliers</dt>
        <dd>
          <Num id="outlier-count" value={t.outlier_count} text={count(t.outlier_count)} /> <span className="muted">of {count(t.numel)} clipped</span>
        </dd>
        <dt>bits/weight</dt>
        <dd>
          <Num value={t.bits_per_weight} text={t.bits_per_weight.toFixed(3)} />
        </dd>
      </dl>
      {t.block_sizes_tried.length > 1 && (
        <table className="tried">
          <thead>
            <tr>
              <th>block</th>
              <th>MSE after</th>
              {t.objective_after !== undefined && <th>objective</th>}
              <th>bits/w</th>
            </tr>
          </thead>
          <tbody>
            {t.block_sizes_tried.map((b) => (
              <tr key={b.block_size} className={b.block_size === t.block_size ? 'chosen' : ''}>
                <td>{b.block_size}</td>
                <td title={exact(b.mse_after)}>{eng(b.mse_after)}</td>
                {t.objective_after !== undefined && <td title={exact(b.objective_after)}>{eng(b.objective_after)}</td>}
                <td>{b.bits_per_weight.toFixed(3)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {t.block_sizes_dominated?.length > 0 && (
        <p className="muted">
          Not evaluated: block {t.block_sizes_dominated.join(', ')} (with this search and FP32 scales a larger block cannot have less error).
        </p>
      )}
    </section>
  );
}
