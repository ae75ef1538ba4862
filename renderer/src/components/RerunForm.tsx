// Right column: re-run the selected tensor with other settings (a job), then compare before and
// after side by side and keep (the profile becomes a new draft) or discard. The mode defaults to
// the profile's; a weighted mode weights the search by the profile's calibration statistics. The
// choices live in the store, which resets them all when another tensor is selected.
import type { BlockPolicy, CalibrationMode, QuantFormat, RerunResult, SearchMode } from '../../../src/service/protocol';
import { useActions, useW } from '../context';
import { count, eng, exact, ratio } from '../format';
import { rerunSettings } from '../store';

function Compare({ r }: { r: RerunResult }) {
  const a = useActions();
  const obj = (x: RerunResult['before']) => (x.objective_after === undefined ? '—' : eng(x.objective_after));
  const rows: [string, string, string, string?, string?][] = [
    ['mode', r.beforeMode, r.mode],
    ['format', r.before.format, r.after.format],
    ['block size', String(r.before.block_size), String(r.after.block_size)],
    ['search', r.before.search, r.after.search],
    ['MSE before', eng(r.before.mse_before), eng(r.after.mse_before), exact(r.before.mse_before), exact(r.after.mse_before)],
    ['MSE after', eng(r.before.mse_after), eng(r.after.mse_after), exact(r.before.mse_after), exact(r.after.mse_after)],
    ['ratio', ratio(r.before.improvement_ratio), ratio(r.after.improvement_ratio)],
    ...(r.before.objective_after !== undefined || r.after.objective_after !== undefined
      ? ([
          ['objective after', obj(r.before), obj(r.after), exact(r.before.objective_after), exact(r.after.objective_after)],
          ['weighting', r.before.weighting ?? '—', r.after.weighting ?? '—'],
        ] as [string, string, string, string?, string?][])
      : []),
    ['outliers', count(r.before.outlier_count), count(r.after.outlier_count)],
    ['bits/w', r.before.bits_per_weight.toFixed(3), r.after.bits_per_weight.toFixed(3)],
  ];
  return (
    <div className="compare" data-testid="rerun-result">
      <table>
        <thead>
          <tr>
            <th />
            <th>now</th>
            <th>re-run</th>
          </tr>
        </thead>
        <tbody>
          {rows.map(([k, b, n, bt, nt]) => (
            <tr key={k} className={b !== n ? 'changed' : ''}>
              <th>{k}</th>
              <td title={bt}>{b}</td>
              <td title={nt}>{n}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <div className="buttons">
        <button className="primary" data-testid="rerun-keep" onClick={() => void a.keepRerun(r.rerunId)}>
          Keep
        </button>
        <button data-testid="rerun-discard" onClick={() => void a.discardRerun(r.rerunId)}>
          Discard
        </button>
      </div>
    </div>
  );
}

export function RerunForm() {
  const info = useW((s) => s.info);
  const profile = useW((s) => s.profile);
  const tensor = useW((s) => s.selectedTensor);
  const jobs = useW((s) => s.jobs);
  const reruns = useW((s) => s.reruns);
  const a = useActions();
  const t = profile?.tensors.find((x) => x.tensor_name === tensor);
  const form = useW((s) => s.rerunForm);
  const { format, blockSize: block, policy, search, mode } = form;
  if (!t || !profile || !info) return null;
  const fmt = (format || t.format) as QuantFormat;
  const sizes = info.formats.find((f) => f.name === fmt)?.blockSizes ?? [];
  const running = Object.values(jobs).find((j) => j.status === 'running' && j.kind === 'calibrate-tensor' && j.modelId === profile.modelId && j.tensor === t.tensor_name);
  const pending = Object.values(reruns).filter((r) => r.modelId === profile.modelId && r.tensor === t.tensor_name);
  const submit = () => void a.rerun(rerunSettings(form));
  return (
    <section className="panel rerun" aria-label="re-run tensor">
      <h3>Re-run this tensor</h3>
      <div className="form-grid">
        <label>
          format
          <select value={format} onChange={(e) => a.setRerunForm({ format: e.target.value as QuantFormat | '' })}>
            <option value="">{t.format} (as now)</option>
            {info.formats.filter((f) => f.name !== t.format).map((f) => (
              <option key={f.name} value={f.name}>{f.name}</option>
            ))}
          </select>
        </label>
        <label>
          block size
          <select data-testid="rerun-block-size" value={block} onChange={(e) => a.setRerunForm({ blockSize: e.target.value })}>
            <option value="">search {sizes.join(', ')}</option>
            {sizes.map((b) => (
              <option key={b} value={b}>{b}</option>
            ))}
          </select>
        </label>
        <label>
          policy
          <select value={policy} onChange={(e) => a.setRerunForm({ policy: e.target.value as BlockPolicy | '' })}>
            <option value="">as profile</option>
            <option value="min-mse">min-mse</option>
            <option value="bits">bits</option>
          </select>
        </label>
        <label>
          search
          <select value={search} onChange={(e) => a.setRerunForm({ search: e.target.value as SearchMode | '' })}>
            <option value="">{t.search} (as now)</option>
            <option value="exact">exact</option>
            <option value="ternary">ternary</option>
            <option value="naive">naive</option>
          </select>
        </label>
        <label title="what the search minimizes; the weighted modes use the profile's calibration statistics (collected on first use)">
          mode
          <select data-testid="rerun-mode" value={mode} onChange={(e) => a.setRerunForm({ mode: e.target.value as CalibrationMode | '' })}>
            <option value="">as profile ({profile.summary.mode})</option>
            {info.calibrationModes.map((m) => (
              <option key={m} value={m}>{m}</option>
            ))}
          </select>
        </label>
      </div>
      <button data-testid="rerun-button" className="primary" onClick={submit} disabled={Boolean(running)}>
        {running ? `Re-running… ${Math.round(running.progress * 100)}%` : 'Re-run'}
      </button>
      {pending.map((r) => (
        <Compare key={r.rerunId} r={r} />
      ))}
    </section>
  );
}
