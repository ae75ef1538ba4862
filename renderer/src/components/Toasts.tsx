// Errors from the protocol as readable messages: a stack of toasts at the bottom centre, over the
// plots' lower edge rather than the right column's controls (sign-off) or the jobs' Cancel. They
// expire (errors later than info) but not while the pointer is on them.
import { useActions, useW } from '../context';

export function Toasts() {
  const toasts = useW((s) => s.toasts);
  const a = useActions();
  return (
    <div className="toasts" aria-live="polite" onPointerEnter={() => a.holdToasts(true)} onPointerLeave={() => a.holdToasts(false)}>
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
