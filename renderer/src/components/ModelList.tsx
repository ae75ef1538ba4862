// Left column: the pipeline's models with profile state, overall MSE, mean correlation and a
// pass/fail mark against the thresholds.
import type { KeyboardEvent } from 'react';
import { useActions, useW } from '../context';
import { eng, exact, modeShort, passMark, stateBadge } from '../format';

export function ModelList() {
  const ws = useW((s) => s.workspace);
  const selected = useW((s) => s.selectedModel);
  const jobs = useW((s) => s.jobs);
  const a = useActions();
  if (!ws) return <section className="panel models"><p className="muted">connecting…</p></section>;
  const running = Object.values(jobs).some((j) => j.status === 'running' && j.kind === 'calibrate-pipeline');
  const hasSelected = ws.models.some((m) => m.id === selected);
  // Keyboard: Enter or Space selects the focused model, ↑/↓ select the previous / next one.
  const onKey = (e: KeyboardEvent<HTMLUListElement>) => {
    const li = (e.target as HTMLElement).closest<HTMLElement>('[data-testid=model-row]');
    if (!li) return;
    const i = ws.models.findIndex((m) => m.id === li.dataset.modelId);
    if (e.key === 'Enter' || e.key === ' ') {
      void a.selectModel(ws.models[i]!.id);
    } else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      const next = ws.models[Math.max(0, Math.min(ws.models.length - 1, i + (e.key === 'ArrowDown' ? 1 : -1)))]!;
      void a.selectModel(next.id);
      (li.parentElement?.querySelector(`[data-model-id="${CSS.escape(next.id)}"]`) as HTMLElement | null)?.focus();
    } else return;
    e.preventDefault();
    e.stopPropagation();
  };
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
      <ul className="model-list" role="listbox" aria-label="models" onKeyDown={onKey}>
        {ws.models.map((m, i) => {
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
              // One stop in the Tab order (the selected model); ↑/↓ move within the list.
              tabIndex={m.id === selected || (!hasSelected && i === 0) ? 0 : -1}
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
