// Number and table formatting for the terminal: engineering notation, 4 significant digits.

export function eng(x: number): string {
  if (x === 0) return '0';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : x < 0 ? '-inf' : 'nan';
  const exp = Math.floor(Math.log10(Math.abs(x)) / 3) * 3;
  let mant = x / 10 ** exp;
  let e = exp;
  // Rounding to 4 significant digits can carry into the next power of 1000 (999.96 → 1000).
  if (Math.abs(Number(mant.toPrecision(4))) >= 1000) {
    mant /= 1000;
    e += 3;
  }
  const m = Number(mant.toPrecision(4)).toString();
  return e === 0 ? m : `${m}e${e}`;
}

export function table(headers: string[], rows: string[][], rightAlign: boolean[] = []): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (rightAlign[i] ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}
