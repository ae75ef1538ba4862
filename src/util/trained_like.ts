// Deterministic "trained-like" weights for tests, benchmarks and demo models: Student-t tails
// (4 degrees of freedom), a log-normal scale per row, and 1 in 64 input channels 8× larger: the
// outliers that make FP4 calibration matter. The same recipe as the numpy peer baseline.

/** xoshiro128** seeded by splitmix32: fast, good enough for weights, identical on every platform. */
export class Rng {
  private s = new Uint32Array(4);
  private spare: number | null = null;
  constructor(seed: number) {
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }
  nextU32(): number {
    const s = this.s;
    const result = Math.imul(((Math.imul(s[1], 5) << 7) | (Math.imul(s[1], 5) >>> 25)) >>> 0, 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = ((s[3] << 11) | (s[3] >>> 21)) >>> 0;
    return result;
  }
  /** Uniform in (0, 1). */
  uniform(): number {
    return (this.nextU32() + 0.5) / 4294967296;
  }
  gaussian(): number {
    if (this.spare !== null) {
      const v = this.spare;
      this.spare = null;
      return v;
    }
    const r = Math.sqrt(-2 * Math.log(this.uniform()));
    const th = 2 * Math.PI * this.uniform();
    this.spare = r * Math.sin(th);
    return r * Math.cos(th);
  }
}

export interface TrainedLikeOptions {
  seed: number;
  /** Standard deviation of the bulk before the per-row spread. */
  std?: number;
  /** Fraction of input channels (columns) scaled by `outlierGain`. */
  outlierFraction?: number;
  outlierGain?: number;
}

/** rows × cols float32 weights, row-major. */
export function trainedLike(rows: number, cols: number, opts: TrainedLikeOptions): Float32Array {
  const rng = new Rng(opts.seed);
  const std = opts.std ?? 0.02;
  const out = new Float32Array(rows * cols);
  const nOut = Math.floor(cols * (opts.outlierFraction ?? 1 / 64));
  const gain = new Float32Array(cols).fill(1);
  for (let i = 0; i < nOut; i++) gain[Math.floor(rng.uniform() * cols)] = opts.outlierGain ?? 8;
  for (let r = 0; r < rows; r++) {
    const rowScale = Math.exp(0.3 * rng.gaussian()) * std;
    for (let c = 0; c < cols; c++) {
      const z = rng.gaussian();
      let chi = 0;
      for (let k = 0; k < 4; k++) {
        const g = rng.gaussian();
        chi += g * g;
      }
      out[r * cols + c] = (z / Math.sqrt(chi / 4)) * rowScale * gain[c];
    }
  }
  return out;
}

/** float32 → IEEE half bits, round to nearest even (what checkpoints store). */
export function toFloat16Bits(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < values.length; i++) {
    f[0] = values[i];
    const x = u[0];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    let e = exp - 127 + 15;
    if (e >= 0x1f) {
      out[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      mant |= 0x800000;
      const shift = 14 - e;
      let h = mant >>> shift;
      const rem = mant & ((1 << shift) - 1);
      const half = 1 << (shift - 1);
      if (rem > half || (rem === half && (h & 1))) h++;
      out[i] = sign | h;
      continue;
    }
    let h = (e << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
    out[i] = sign | h;
  }
  return out;
}

export function fromFloat16Bits(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i];
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    out[i] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return out;
}
