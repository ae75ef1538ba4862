// Numbers as the workbench shows them: engineering notation (exponent a multiple of 3) with 4
// significant digits, e.g. 34.62e-6 or 34.60e-6 (trailing zeros kept, so columns line up); the
// exact value goes into the element's title and data-value.

/** `compact` drops trailing zeros (axis ticks: 100, 1e3 rather than 100.0, 1.000e3). */
export function eng(x: number | null | undefined, compact = false): string {
  if (x === null || x === undefined) return '—';
  if (x === 0) return '0';
  if (!Number.isFinite(x)) return x > 0 ? '∞' : x < 0 ? '-∞' : 'NaN';
  let e = Math.floor(Math.log10(Math.abs(x)) / 3) * 3;
  let mant = x / 10 ** e;
  // Rounding to 4 significant digits can carry into the next power of 1000 (999.96 → 1000).
  if (Math.abs(Number(mant.toPrecision(4))) >= 1000) {
    mant /= 1000;
    e += 3;
  }
  const m = compact ? Number(mant.toPrecision(4)).toString() : mant.toPrecision(4);
  return e === 0 ? m : `${m}e${e}`;
}

/** An integer count in full, grouped by thousands (9,216; 11,722,368): counts are exact. */
export function count(n: number | null | undefined): string {
  return n === null || n === undefined ? '—' : n.toLocaleString('en-US');
}

/** The improvement ratio: null in a profile means the calibrated error is exactly 0. */
export function ratio(r: number | null): string {
  if (r === null) return '∞';
  // Plain decimals where ratios live (0.9747×, not 974.7e-3×), engineering notation beyond.
  const a = Math.abs(r);
  return a >= 1e-3 && a < 1e4 ? `${r.toPrecision(4)}×` : `${eng(r)}×`;
}

export function exact(x: number | null | undefined): string {
  return x === null || x === undefined ? '' : String(x);
}

/** Exact too (the shortest text that reads back as the same double), but in scientific notation
 *  for small and large magnitudes: 1.8125687347492203e-5 rather than 0.000018125687347492203. */
export function exactSci(x: number | null | undefined): string {
  if (x === null || x === undefined) return '';
  const a = Math.abs(x);
  return a !== 0 && Number.isFinite(x) && (a < 1e-3 || a >= 1e6) ? x.toExponential() : String(x);
}

/** A model's profile state as the list shows it: a signed-off profile says how it was reviewed
 *  (a rejected one must not look approved), a kept re-run shows as a draft. */
export function stateBadge(m: { state: string; draft: boolean; review: { decision: 'approved' | 'rejected' } | null }): { text: string; cls: string } {
  if (m.state === 'signed-off' && m.review?.decision === 'rejected') return { text: 'rejected', cls: 'state-rejected' };
  if (m.state === 'signed-off') return { text: 'signed-off', cls: 'state-signed-off' };
  if (m.state === 'valid' && m.draft) return { text: 'draft', cls: 'state-draft' };
  return { text: m.state, cls: `state-${m.state}` };
}

/** The list's pass/fail mark. A profile that no longer matches its checkpoint (stale) or cannot
 *  be read (corrupt) is not judged: its MSE and correlation describe weights that are gone. */
export function passMark(m: { state: string; passed: boolean | null }): { text: string; title: string; cls: string } {
  if (m.state === 'stale') return { text: '·', title: 'not judged: the checkpoint changed since calibration (recalibrate)', cls: 'pass-none' };
  if (m.state === 'corrupt') return { text: '·', title: 'not judged: the profile is damaged (recalibrate)', cls: 'pass-none' };
  if (m.passed === null) return { text: '·', title: 'not judged yet (no validation result and no MSE threshold)', cls: 'pass-none' };
  return m.passed ? { text: '✓', title: 'passes the thresholds', cls: 'pass-ok' } : { text: '✗', title: 'fails a threshold', cls: 'pass-fail' };
}

export function shape(s: readonly number[]): string {
  return s.join('×');
}

/** A calibration mode, short enough for the model list. */
export function modeShort(m: string): string {
  return m === 'activation-aware' ? 'act-aware' : m === 'entropy-aware' ? 'entropy' : m;
}

export function percent(f: number): string {
  return `${Math.round(f * 100)}%`;
}
