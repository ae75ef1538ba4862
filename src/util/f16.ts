// IEEE half-precision bits → float32 values, through a 64 Ki-entry table built on first use: the
// JS side's conversion for weights it reads itself (the native addon has its own).
let table: Float32Array | undefined;

export function halfTable(): Float32Array {
  if (table) return table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const man = h & 0x3ff;
    if (exp === 0) t[h] = sign * man * 2 ** -24;
    else if (exp === 31) t[h] = man === 0 ? sign * Infinity : NaN;
    else t[h] = sign * (1 + man / 1024) * 2 ** (exp - 15);
  }
  return (table = t);
}
