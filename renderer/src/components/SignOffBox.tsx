// Right column, bottom: sign the selected model's profile off (reviewer, approve or reject, note).
// The record lands in profile.json with the time and the hash of the profile's content; after
// that the profile is read-only here (a kept re-run starts a new draft).
import { useEffect, useState } from 'react';
import { useActions, useW } from '../context';

export function SignOffBox() {
  const profile = useW((s) => s.profile);
  const a = useActions();
  const [reviewer, setReviewer] = useState('');
  const [decision, setDecision] = useState<'approved' | 'rejected'>('approved');
  const [note, setNote] = useState('');
  const [busy, setBusy] = useState(false);
  // The decision and the note are about one model: another model starts from approve and an empty
  // note, so what was typed for one is never signed onto the next. The reviewer's name stays.
  const modelId = profile?.modelId ?? null;
  useEffect(() => {
    setDecision('approved');
    setNote('');
  }, [modelId]);
  if (!profile) return null;
  const s = profile.summary;
  const review = s.review;
  if (review) {
    return (
      <section className="panel signoff" aria-label="sign-off">
        <h3>Sign-off</h3>
        <p data-testid="signoff-status" data-decision={review.decision} className={`signoff-status ${review.decision}`}>
          {review.decision === 'approved' ? '✓ approved' : '✗ rejected'} by {review.reviewer} at <time dateTime={review.time} title={review.time}>{review.time.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}</time>
        </p>
        {review.note && <blockquote>{review.note}</blockquote>}
        <p className="muted hash" title={review.content_hash}>content {review.content_hash.slice(0, 23)}…</p>
        <p className="muted">Read-only. A kept re-run starts a new draft.</p>
      </section>
    );
  }
  const canSign = s.state === 'valid';
  const submit = async () => {
    setBusy(true);
    const ok = await a.signOff({ reviewer, decision, note });
    setBusy(false);
    if (ok) setNote('');
  };
  return (
    <section className="panel signoff" aria-label="sign-off">
      <h3>Sign-off</h3>
      <p data-testid="signoff-status" data-decision="" className="signoff-status muted">
        {canSign ? `not signed off${s.draft ? ' (draft)' : ''}` : `cannot sign off: profile is ${s.state}`}
      </p>
      <div className="form-grid">
        <label>
          reviewer
          <input data-testid="signoff-reviewer" value={reviewer} onChange={(e) => setReviewer(e.target.value)} placeholder="your name" disabled={!canSign} />
        </label>
        <label>
          decision
          <select data-testid="signoff-decision" value={decision} onChange={(e) => setDecision(e.target.value as 'approved' | 'rejected')} disabled={!canSign}>
            <option value="approved">approve</option>
            <option value="rejected">reject</option>
          </select>
        </label>
      </div>
      <label className="block">
        note
        <textarea data-testid="signoff-note" value={note} onChange={(e) => setNote(e.target.value)} rows={2} disabled={!canSign} />
      </label>
      <button data-testid="signoff-button" className="primary" onClick={() => void submit()} disabled={!canSign || busy || reviewer.trim() === ''}>
        Sign off
      </button>
    </section>
  );
}
