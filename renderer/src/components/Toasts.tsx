// Errors from the protocol as readable messages: a stack of toasts, bottom right.
import { useActions, useW } from '../context';

export function Toasts() {
  const toasts = useW((s) => s.toasts);
  const a = useActions();
  return (
    <div className="toasts" aria-live="polite">
      {toasts.map((t) => (
        <div key={t.id} className={`toast toast-${t.kind}`} role={t.kind === 'error' ? 'alert' : 'status'} data-testid="toast">
          <div className="toast-text">
            {t.code && <b>{t.code}: </b>}
            {t.text}
          </div>
          <button className="small" aria-label="dismiss" onClick={() => a.dismissToast(t.id)}>
            ×
          </button>
        </div>
      ))}
    </div>
  );
}
