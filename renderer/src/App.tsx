// The workbench window: model list and jobs (left), tensor table over heatmap / correlation / MSE
// tabs (centre), the tensor's numbers, histogram, re-run and sign-off (right), toasts on top.
import { Component, useEffect, type ReactNode } from 'react';
import { CorrelationPanel } from './components/CorrelationPanel';
import { Header } from './components/Header';
import { Heatmap } from './components/Heatmap';
import { Histogram } from './components/Histogram';
import { JobsPanel } from './components/JobsPanel';
import { ModelList } from './components/ModelList';
import { MseChart } from './components/MseChart';
import { RerunForm } from './components/RerunForm';
import { SignOffBox } from './components/SignOffBox';
import { TensorDetails } from './components/TensorDetails';
import { TensorTable } from './components/TensorTable';
import { Toasts } from './components/Toasts';
import { useActions, useW } from './context';
import type { Tab } from './store';
import { useResolvedTheme } from './theme';

const TABS: { id: Tab; label: string }[] = [
  { id: 'heatmap', label: 'Heatmap' },
  { id: 'correlation', label: 'Correlation' },
  { id: 'mse', label: 'MSE by tensor' },
];

function useKeyboard() {
  const a = useActions();
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const t = e.target as HTMLElement | null;
      if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.isContentEditable)) {
        if (e.key === 'Escape') t.blur();
        return;
      }
      // Enter on a button or a model row is that control's own; it does not also open a tensor.
      if (t && (t.tagName === 'BUTTON' || t.closest('[role=listbox]')) && e.key !== 'Escape') return;
      if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
        a.moveCursor(e.key === 'ArrowDown' ? 1 : -1);
        e.preventDefault();
      } else if (e.key === 'Enter') {
        void a.openCursor();
      } else if (e.key === 'Escape') {
        void a.selectTensor(null);
      }
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [a]);
}

/** The selected model's mean correlation, always in view beside the tabs. */
function CorrelationBadge() {
  const mean = useW((s) => s.validation?.meanCorrelation ?? s.profile?.summary.meanCorrelation ?? null);
  const threshold = useW((s) => s.validation?.threshold ?? s.workspace?.thresholds.correlation ?? null);
  // A stale profile's correlation is of weights that changed since: shown, but not as a pass or fail.
  const stale = useW((s) => s.profile?.summary.state === 'stale');
  const ok = mean !== null && threshold !== null && !stale ? mean >= threshold : null;
  return (
    <span
      className={`corr-badge ${ok === null ? 'muted' : ok ? 'pass-ok' : 'pass-fail'}`}
      title={mean === null ? 'not validated' : `mean Pearson correlation ${mean} (threshold ${threshold})${stale ? ' of the weights before the checkpoint changed' : ''}`}
    >
      mean r{' '}
      <b data-testid="correlation-value" data-value={mean ?? ''}>
        {mean === null ? 'not validated' : mean.toFixed(5)}
      </b>
    </span>
  );
}

function CentreTabs() {
  const tab = useW((s) => s.tab);
  const a = useActions();
  return (
    <section className="panel bottom">
      <div className="tabs" role="tablist">
        {TABS.map((t) => (
          <button key={t.id} role="tab" aria-selected={tab === t.id} className={tab === t.id ? 'on' : ''} onClick={() => a.setTab(t.id)}>
            {t.label}
          </button>
        ))}
        <span className="grow" />
        <CorrelationBadge />
      </div>
      <div className="tab-body">
        {tab === 'heatmap' && <Heatmap />}
        {tab === 'correlation' && <CorrelationPanel />}
        {tab === 'mse' && <MseChart />}
      </div>
    </section>
  );
}

/** Says plainly, over everything, that the service is gone: the views are as they were last
 *  loaded, and what is clicked meanwhile fails until the connection comes back. */
function ConnectionLost() {
  const conn = useW((s) => s.connection);
  const electron = useW((s) => s.info?.mode === 'electron');
  if (conn !== 'closed') return null;
  return (
    <div className="conn-lost" role="alert" data-testid="connection-lost">
      <b>Lost the connection to {electron ? 'the calibscope service' : 'calibscope serve'}; reconnecting…</b>{' '}
      {electron ? null : 'What is shown is as last loaded. If the server was restarted, open the URL it printed (each start has a new token).'}
    </div>
  );
}

export function App() {
  const theme = useResolvedTheme();
  useKeyboard();
  useEffect(() => {
    document.documentElement.dataset.theme = theme;
  }, [theme]);
  return (
    <div className="app">
      <Header />
      <aside className="left">
        <ModelList />
        <JobsPanel />
      </aside>
      <main className="centre">
        <TensorTable />
        <CentreTabs />
      </main>
      <aside className="right">
        <TensorDetails />
        <Histogram />
        <RerunForm />
        <SignOffBox />
      </aside>
      <Toasts />
      <ConnectionLost />
    </div>
  );
}

/** A render error shows its message and a way back, never a blank window. */
export class ErrorBoundary extends Component<{ children: ReactNode }, { error: Error | null }> {
  override state = { error: null as Error | null };
  static getDerivedStateFromError(error: Error) {
    return { error };
  }
  override render() {
    if (!this.state.error) return this.props.children;
    return (
      <div className="crash" role="alert">
        <h1>Something went wrong in the workbench</h1>
        <pre>{this.state.error.message}</pre>
        <button onClick={() => this.setState({ error: null })}>Try again</button> <button onClick={() => location.reload()}>Reload</button>
      </div>
    );
  }
}
