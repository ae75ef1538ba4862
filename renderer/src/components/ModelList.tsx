// Left column: the pipeline's models with profile state, overall MSE, mean correlation and a
// pass/fail mark against the thresholds.
import type { ModelSummary } from '../../../src/service/protocol';
import { useActions, useW } from '../context';
import { eng, exact, modeShort, stateBadge } from '../format';

function passMark(m: ModelSummary): { text: string; title: string; cls: string } {
  if (m.passed === null) return { text: '·', title: 'not judged yet (no validation result and no MSE threshold)', cls: 'pass-none' };
  return m.passed ? { text: '✓', title: 'passes the thresholds', cls: 'pass-ok' } : { text: '✗', title: 'fails a threshold', cls: 'pass-fail' };
}

export function ModelList() {
  const ws = useW((s) => s.workspace);
  const selected = useW((s) => s.selectedModel);
  const jobs = useW((s) => s.jobs);
  const a = useActions();
  if (!ws) return <section className="panel models"><p className="muted">connecting…</p></section>;
  const running = Object.values(jobs).some((j) => j.status === 'running' && j.kind === 'calibrate-pipeline');
  return (
    <section className="panel models" aria-label="models">
      <header className="panel-head">
        <h2 title={ws.source ?? ''}>{ws.name}</h2>
        {ws.models.length > 0 && (
          <button onClick={() => void a.calibratePipeline(false)} disabled={running} title="calibrate every model whose profile is missing, stale or damaged, then validate the ones without a correlation">
            Calibrate all
          </button>
        )}
      </header>
      {ws.models.length === 0 && <p className="muted">Nothing is open. Open a model folder or a pipeline.</p>}
      <div className="model-head" aria-hidden>
        <span>mode</span>
        <span>state</span>
        <span className="num">MSE</span>
        <span className="num">corr</span>
        <span />
      </div>
      <ul className="model-list" role="listbox" aria-label="models">
        {ws.models.map((m) => {
          const mark = passMark(m);
          const badge = stateBadge(m);
          return (
            <li
              key={m.id}
              data-testid="model-row"
              data-model-id={m.id}
              data-state={m.state}
              role="option"
              aria-selected={m.id === selected}
              className={m.id === selected ? 'selected' : ''}
              onClick={() => void a.selectModel(m.id)}
              title={`${m.path}\n${m.format} · ${m.mode} · ${m.reason ?? ''}`}
            >
              <span className="name">{m.id}</span>
              <span className={`mode mode-${m.mode}`} data-testid="model-mode" data-mode={m.mode} title={`calibration mode: ${m.mode}`}>
                {modeShort(m.mode)}
              </span>
              <span className={`state ${badge.cls}`} title={m.review ? `${m.review.decision} by ${m.review.reviewer}` : undefined}>{badge.text}</span>
              <span className="num mse" title={exact(m.overallMse)}>{eng(m.overallMse)}</span>
              <span className="num corr" title={exact(m.meanCorrelation)}>{m.meanCorrelation === null ? '—' : m.meanCorrelation.toFixed(4)}</span>
              <span className={`mark ${mark.cls}`} title={mark.title}>{mark.text}</span>
            </li>
          );
        })}
      </ul>
    </section>
  );
}
