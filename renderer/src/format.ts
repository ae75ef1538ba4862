// Numbers as the workbench shows them: engineering notation (exponent a multiple of 3) with 4
// significant digits, e.g. 34.62e-6; the exact value goes into the element's title and data-value.

export function eng(x: number | null | undefined): string {
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
  const m = Number(mant.toPrecision(4)).toString();
  return e === 0 ? m : `${m}e${e}`;
}

/** The improvement ratio: null in a profile means the calibrated error is exactly 0. */
export function ratio(r: number | null): string {
  return r === null ? '∞' : `${eng(r)}×`;
}

export function exact(x: number | null | undefined): string {
  return x === null || x === undefined ? '' : String(x);
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
