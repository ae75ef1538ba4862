// Top bar: what is open, opening a model folder or pipeline by path (the Electron menu does the
// same with a file dialog), recent items, the theme switch and the connection state.
import { useState } from 'react';
import { useActions, useW } from '../context';
import type { ThemePref } from '../store';

const RECENT_KEY = 'calibscope.recent';

function recent(): string[] {
  try {
    const v = JSON.parse(localStorage.getItem(RECENT_KEY) ?? '[]');
    return Array.isArray(v) ? v.filter((x) => typeof x === 'string').slice(0, 10) : [];
  } catch {
    return [];
  }
}

function remember(p: string) {
  try {
    localStorage.setItem(RECENT_KEY, JSON.stringify([p, ...recent().filter((x) => x !== p)].slice(0, 10)));
  } catch {
    // no storage: no recent list
  }
}

const NEXT_THEME: Record<ThemePref, ThemePref> = { auto: 'dark', dark: 'light', light: 'auto' };

export function Header() {
  const info = useW((s) => s.info);
  const ws = useW((s) => s.workspace);
  const conn = useW((s) => s.connection);
  const theme = useW((s) => s.theme);
  const a = useActions();
  const [open, setOpen] = useState(false);
  const [path, setPath] = useState('');
  const [kind, setKind] = useState<'model' | 'pipeline'>('pipeline');
  const [format, setFormat] = useState('');
  const submit = async () => {
    const p = path.trim();
    if (!p) return;
    remember(p);
    const ok = kind === 'model' ? await a.openModel(p, format || undefined) : await a.openPipeline(p, format || undefined);
    // On failure the form stays open with the path, to correct it (the reason is a toast).
    if (ok) setOpen(false);
  };
  return (
    <header className="topbar">
      <span className="brand">calibscope</span>
      <span className="muted ws-name">{ws ? `${ws.isDemo ? 'demo · ' : ''}${ws.name}` : ''}</span>
      {ws && (
        <span className="ws-mode" data-testid="workspace-mode" data-mode={ws.calibrationMode} title="calibration mode of Calibrate for models that do not name one (calibscope serve --mode); each model's own mode is in the list">
          mode: {ws.calibrationMode}
        </span>
      )}
      <span className="grow" />
      {open ? (
        <form
          className="open-form"
          onSubmit={(e) => {
            e.preventDefault();
            void submit();
          }}
        >
          <select value={kind} onChange={(e) => setKind(e.target.value as 'model' | 'pipeline')} aria-label="what to open">
            <option value="pipeline">pipeline.json</option>
            <option value="model">model folder</option>
          </select>
          <input list="recent-paths" value={path} onChange={(e) => setPath(e.target.value)} placeholder="path on the machine running calibscope" aria-label="path" autoFocus />
          <datalist id="recent-paths">
            {recent().map((r) => (
              <option key={r} value={r} />
            ))}
          </datalist>
          <select value={format} onChange={(e) => setFormat(e.target.value)} aria-label="format" title="format for models that do not name one">
            <option value="">fp4 (default)</option>
            {info?.formats.filter((f) => f.name !== 'fp4').map((f) => (
              <option key={f.name} value={f.name}>{f.name}</option>
            ))}
          </select>
          <button className="primary" type="submit">Open</button>
          <button type="button" onClick={() => setOpen(false)}>Close</button>
        </form>
      ) : (
        <button onClick={() => setOpen(true)}>Open…</button>
      )}
      <button onClick={() => a.setTheme(NEXT_THEME[theme])} title="theme: follows the system unless set">
        theme: {theme}
      </button>
      <span className={`conn conn-${conn}`} title={info ? `calibscope ${info.version} · ${info.mode} · cache ${info.cacheDir}` : ''}>
        {conn === 'open' ? '●' : conn === 'connecting' ? '○' : '✕'} {conn}
      </span>
    </header>
  );
}
