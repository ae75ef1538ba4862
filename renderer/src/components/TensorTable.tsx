// Centre top: the selected model's tensors, worst first, sortable and filterable. Only the rows in
// view are rendered (plus a few either side), so thousands of tensors scroll smoothly.
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from 'react';
import { useActions, useW } from '../context';
import { count, eng, exact, ratio, shape } from '../format';
import { visibleTensors, type SortKey } from '../store';
import type { ModelSummary } from '../../../src/service/protocol';

const ROW_H = 26;
const OVERSCAN = 8;

const COLUMNS: { key: SortKey; label: string; title: string }[] = [
  { key: 'tensor_name', label: 'tensor', title: 'tensor name' },
  { key: 'numel', label: 'shape', title: 'shape (sorts by element count)' },
  { key: 'block_size', label: 'block', title: 'block size' },
  { key: 'mse_before', label: 'MSE before', title: 'MSE with naive (absmax) scales' },
  { key: 'mse_after', label: 'MSE after', title: 'MSE with the calibrated scales' },
  { key: 'improvement_ratio', label: 'ratio', title: 'MSE before / after' },
  { key: 'outlier_count', label: 'outliers', title: 'elements with |x·s| above the format maximum (clipped)' },
  { key: 'bits_per_weight', label: 'bits/w', title: 'storage per weight, scales included' },
];

function CalibrateButton({ modelId, state }: { modelId: string; state: string }) {
  const a = useActions();
  const running = useW((s) => Object.values(s.jobs).some((j) => j.status === 'running' && (j.kind === 'calibrate-pipeline' || (j.kind === 'calibrate-model' && j.modelId === modelId))));
  const fresh = state === 'missing' || state === 'stale' || state === 'corrupt';
  return (
    <button
      data-testid="calibrate-model"
      className={fresh ? 'primary' : ''}
      disabled={running}
      onClick={() => void a.calibrateModel(modelId, !fresh)}
      title={fresh ? 'calibrate this model' : 'calibrate again from scratch (drops a draft and a sign-off)'}
    >
      {fresh ? 'Calibrate' : 'Recalibrate'}
    </button>
  );
}

/** The model's overall numbers: MSE, and the weighted objective beside it for weighted profiles. */
function ModelSummaryLine({ s }: { s: ModelSummary }) {
  return (
    <span className="model-summary" data-testid="model-summary">
      <span className="mode-tag" title="calibration mode of this profile">{s.mode}</span> · MSE{' '}
      <span className="num" data-testid="overall-mse" data-value={exact(s.overallMse)} title={exact(s.overallMse)}>{eng(s.overallMse)}</span>
      {s.overallObjective !== null && (
        <>
          {' '}· objective{' '}
          <span className="num" title={`${exact(s.overallObjectiveBefore)} with naive scales`}>{eng(s.overallObjectiveBefore)}</span> →{' '}
          <span className="num" data-testid="overall-objective" data-value={exact(s.overallObjective)} title={exact(s.overallObjective)}>{eng(s.overallObjective)}</span>
        </>
      )}
    </span>
  );
}

export function TensorTable() {
  const profile = useW((s) => s.profile);
  const filter = useW((s) => s.filter);
  const sort = useW((s) => s.sort);
  const cursor = useW((s) => s.cursor);
  const selected = useW((s) => s.selectedTensor);
  const a = useActions();
  const rows = useMemo(() => (profile ? visibleTensors(profile.tensors, filter, sort) : []), [profile, filter, sort]);
  const scroller = useRef<HTMLDivElement>(null);
  const [scrollTop, setScrollTop] = useState(0);
  const [height, setHeight] = useState(300);

  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const ro = new ResizeObserver(() => setHeight(el.clientHeight));
    ro.observe(el);
    setHeight(el.clientHeight);
    return () => ro.disconnect();
  }, []);

  // Keep the keyboard cursor in view.
  useEffect(() => {
    const el = scroller.current;
    const i = rows.findIndex((t) => t.tensor_name === cursor);
    if (!el || i < 0) return;
    if (i * ROW_H < el.scrollTop) el.scrollTop = i * ROW_H;
    else if ((i + 1) * ROW_H > el.scrollTop + el.clientHeight) el.scrollTop = (i + 1) * ROW_H - el.clientHeight;
  }, [cursor, rows]);

  const first = Math.max(0, Math.floor(scrollTop / ROW_H) - OVERSCAN);
  const last = Math.min(rows.length, Math.ceil((scrollTop + height) / ROW_H) + OVERSCAN);
  const slice = rows.slice(first, last);

  return (
    <section className="panel tensors" aria-label="tensors">
      <header className="panel-head">
        <input
          type="search"
          className="filter"
          placeholder="filter tensors by name…"
          value={filter}
          onChange={(e) => a.setFilter(e.target.value)}
          aria-label="filter tensors"
        />
        <span className="muted grow">
          {profile ? `${rows.length} of ${profile.tensors.length} tensors` : ''}
          {profile?.summary.state === 'missing' ? ' · no profile yet' : ''}
          {profile?.summary.state === 'stale' ? ' · stale: the checkpoint changed since calibration' : ''}
          {profile?.summary.state === 'corrupt' ? ` · damaged profile: ${profile.summary.reason ?? ''}` : ''}
        </span>
        {profile && profile.summary.overallMse !== null && <ModelSummaryLine s={profile.summary} />}
        {profile && <CalibrateButton modelId={profile.modelId} state={profile.summary.state} />}
      </header>
      <div className="tgrid">
        <div className="trow thead" role="row">
          {COLUMNS.map((c) => (
            <button key={c.key} className={`th th-${c.key}`} title={c.title} onClick={() => a.setSort(c.key)} role="columnheader" aria-sort={sort.key === c.key ? (sort.dir === 'asc' ? 'ascending' : 'descending') : 'none'}>
              {c.label}
              {sort.key === c.key ? (sort.dir === 'asc' ? ' ▲' : ' ▼') : ''}
            </button>
          ))}
        </div>
        <div className="tbody" ref={scroller} onScroll={(e) => setScrollTop(e.currentTarget.scrollTop)} role="grid" aria-rowcount={rows.length}>
          <div style={{ height: rows.length * ROW_H, position: 'relative' }}>
            {slice.map((t, k) => {
              const i = first + k;
              const cls = `trow${t.tensor_name === selected ? ' selected' : ''}${t.tensor_name === cursor ? ' cursor' : ''}`;
              return (
                <div
                  key={t.tensor_name}
                  className={cls}
                  style={{ top: i * ROW_H, height: ROW_H }}
                  data-testid="tensor-row"
                  data-tensor={t.tensor_name}
                  role="row"
                  aria-selected={t.tensor_name === selected}
                  onClick={() => void a.selectTensor(t.tensor_name)}
                >
                  <span className="td td-tensor_name" title={t.tensor_name}>{t.tensor_name}</span>
                  <span className="td td-numel">{shape(t.shape)}</span>
                  <span className="td num">{t.block_size}</span>
                  <span className="td num" title={exact(t.mse_before)}>{eng(t.mse_before)}</span>
                  <span className="td num" title={exact(t.mse_after)}>{eng(t.mse_after)}</span>
                  <span className="td num" title={exact(t.improvement_ratio)}>{ratio(t.improvement_ratio)}</span>
                  <span className="td num">{count(t.outlier_count)}</span>
                  <span className="td num" title={exact(t.bits_per_weight)}>{t.bits_per_weight.toFixed(3)}</span>
                </div>
              );
            })}
          </div>
        </div>
      </div>
    </section>
  );
}
