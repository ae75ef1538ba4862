// Optimality of the block-scale search against brute force written here, with rounding that does
// not use the engine (helpers/reference.ts), on trained-like weights.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { native, type NativeCalibrateResult, type SchemeName } from '../src/native/index.js';
import { trainedLike } from '../src/util/trained_like.js';
import { ELEM_MAX, absmax, blockErrDecode, blockErrMultiplier, blocksOf, calibrateF32, loadGrids, roundToGrid } from './helpers/reference.js';

const f32 = Math.fround;
const MAX: Record<string, number> = ELEM_MAX;
const calibrate = calibrateF32;
const blocks = blocksOf;

let GRIDS: Record<string, Float64Array>;
before(async () => {
  GRIDS = await loadGrids();
});

describe('FP32 scales: exact search vs a dense search of 2,600 multipliers', () => {
  // Odd shapes on purpose: rows not a multiple of anything, a partial last block.
  const cases: [SchemeName, string, number, number, number][] = [
    ['fp4', 'e2m1', 64, 37, 200],
    ['fp4', 'e2m1', 128, 21, 300],
    ['fp8_e4m3', 'e4m3', 32, 13, 150],
    ['fp8_e4m3', 'e4m3', 128, 9, 256],
    ['fp8_e5m2', 'e5m2', 64, 11, 160],
  ];
  for (const [scheme, elem, bs, rows, cols] of cases) {
    it(`${scheme} / block ${bs}: never worse than dense or naive, per block`, async () => {
      const grid = GRIDS[elem];
      const max = MAX[elem];
      const w = trainedLike(rows, cols, { seed: bs + rows });
      const r = await calibrate(w, rows, cols, scheme, bs);
      const bl = blocks(w, rows, cols, bs);
      assert.equal(r.scales.length, bl.length);
      let sumExact = 0;
      let sumDense = 0;
      let sumNaive = 0;
      for (let b = 0; b < bl.length; b++) {
        const x = bl[b];
        const s0 = f32(max / absmax(x));
        const naive = blockErrMultiplier(x, s0, grid);
        let dense = naive;
        for (let i = 0; i < 2600; i++) {
          const p = 0.3 + (1.3 * i) / 2599;
          dense = Math.min(dense, blockErrMultiplier(x, f32(s0 / p), grid));
        }
        // The engine's stored scale, re-evaluated here independently.
        const exact = blockErrMultiplier(x, r.scales[b], grid);
        assert.ok(exact <= naive, `block ${b}: exact ${exact} > naive ${naive}`);
        // The search is exact in real arithmetic; float32 rounding of x̂ can move a block's error by a
        // few parts in 1e7, which a dense grid can stumble on. Beyond that, dense never wins.
        assert.ok(exact <= dense * (1 + 1e-5), `block ${b}: exact ${exact} > dense ${dense}`);
        sumExact += exact;
        sumDense += dense;
        sumNaive += naive;
      }
      assert.ok(sumExact <= sumDense * 1.001, `tensor: exact ${sumExact} vs dense ${sumDense}`);
      // The engine's own sums agree with the independent evaluation.
      assert.ok(Math.abs(r.sumErrAfter - sumExact) <= 1e-9 * sumExact, `${r.sumErrAfter} vs ${sumExact}`);
      assert.ok(Math.abs(r.sumErrBefore - sumNaive) <= 1e-9 * sumNaive, `${r.sumErrBefore} vs ${sumNaive}`);
    });
  }

  it('beats the specification\'s ternary search and the naive scale on a whole tensor', async () => {
    const w = trainedLike(64, 512, { seed: 7 });
    const exact = await calibrate(w, 64, 512, 'fp4', 64, 'exact');
    const ternary = await calibrate(w, 64, 512, 'fp4', 64, 'ternary');
    const naive = await calibrate(w, 64, 512, 'fp4', 64, 'naive');
    assert.ok(exact.sumErrAfter < ternary.sumErrAfter);
    assert.ok(ternary.sumErrAfter < naive.sumErrAfter);
    assert.equal(naive.sumErrAfter, naive.sumErrBefore);
  });
});

describe('encoded scales: exhaustive over every representable scale', () => {
  it('NVFP4: the chosen E4M3 code is the best of all 126 codes, per block', async () => {
    const rows = 23;
    const cols = 200; // 13 blocks of 16 per row, the last one 8 wide
    const w = trainedLike(rows, cols, { seed: 3 });
    const r = await calibrate(w, rows, cols, 'nvfp4', 16);
    const g = f32(absmax(w) / f32(6 * 448));
    assert.equal(r.globalDecode, g);
    const e4m3 = native().e4m3Decode(Uint8Array.from({ length: 127 }, (_, i) => i));
    const bl = blocks(w, rows, cols, 16);
    let sumStd = 0;
    for (let b = 0; b < bl.length; b++) {
      const x = bl[b];
      let best = Infinity;
      for (let c = 1; c <= 126; c++) best = Math.min(best, blockErrDecode(x, f32(e4m3[c] * g), GRIDS.e2m1));
      const chosen = blockErrDecode(x, f32(e4m3[r.codes![b]] * g), GRIDS.e2m1);
      assert.ok(chosen <= best * (1 + 1e-12), `block ${b}: code ${r.codes![b]} gives ${chosen}, best ${best}`);
      assert.equal(r.scales[b], f32(1 / f32(e4m3[r.codes![b]] * g)));
      // The standard NVFP4 recipe gives mse_before.
      let stdCode = 0;
      const target = f32(absmax(x) / f32(6 * g));
      const rounded = native().roundElements(new Float32Array([target]), 'e4m3')[0];
      for (let c = 0; c <= 126; c++) if (e4m3[c] === rounded) stdCode = c;
      if (stdCode === 0) stdCode = 1;
      sumStd += blockErrDecode(x, f32(e4m3[stdCode] * g), GRIDS.e2m1);
    }
    assert.ok(Math.abs(r.sumErrBefore - sumStd) <= 1e-9 * sumStd);
    assert.ok(r.sumErrAfter < r.sumErrBefore);
  });

  for (const [scheme, elem, emax] of [['mxfp4', 'e2m1', 2], ['mxfp8', 'e4m3', 8]] as const) {
    it(`${scheme}: the chosen power of two is the best of all UE8M0 scales, per block`, async () => {
      const rows = 19;
      const cols = 176;
      const w = trainedLike(rows, cols, { seed: 11 });
      const r: NativeCalibrateResult = await calibrate(w, rows, cols, scheme, 32);
      const bl = blocks(w, rows, cols, 32);
      let sumStd = 0;
      for (let b = 0; b < bl.length; b++) {
        const x = bl[b];
        let best = Infinity;
        for (let k = -127; k <= 127; k++) best = Math.min(best, blockErrDecode(x, 2 ** k, GRIDS[elem]));
        const k = r.codes![b] - 127;
        assert.equal(r.scales[b], 2 ** -k);
        const chosen = blockErrDecode(x, 2 ** k, GRIDS[elem]);
        assert.ok(chosen <= best * (1 + 1e-12), `block ${b}: 2^${k} gives ${chosen}, best ${best}`);
        // OCP MX v1.0 standard scale: 2^(floor(log2 absmax) − emax_elem).
        sumStd += blockErrDecode(x, 2 ** (Math.floor(Math.log2(absmax(x))) - emax), GRIDS[elem]);
      }
      assert.ok(Math.abs(r.sumErrBefore - sumStd) <= 1e-9 * sumStd);
    });
  }
});

describe('weighted objective (per-column weights, the activation-aware modes)', () => {
  function weightedErr(x: Float32Array, w: Float32Array, s: number, grid: Float64Array, decode: boolean): number {
    let e = 0;
    for (let i = 0; i < x.length; i++) {
      const one = new Float32Array([x[i]]);
      const d = decode ? blockErrDecode(one, s, grid) : blockErrMultiplier(one, s, grid);
      e += w[i] * d;
    }
    return e;
  }
  function columnWeights(cols: number, seed: number): Float32Array {
    // Heavy-tailed E[x²]-like weights, a few columns far larger, some zero.
    const w = trainedLike(1, cols, { seed, std: 1 });
    return Float32Array.from(w, (v, j) => (j % 17 === 0 ? 0 : v * v * (j % 13 === 0 ? 50 : 1)));
  }

  it('all-ones weights give exactly the unweighted result', async () => {
    const w = trainedLike(20, 192, { seed: 21 });
    for (const [scheme, bs] of [['fp4', 64], ['fp8_e4m3', 32], ['nvfp4', 16], ['mxfp4', 32]] as const) {
      const plain = await calibrate(w, 20, 192, scheme, bs);
      const ones = await native().calibrate(new Uint8Array(w.buffer), {
        dtype: 'F32', rows: 20, cols: 192, scheme, blockSize: bs, columnWeights: new Float32Array(192).fill(1),
      });
      assert.deepEqual(ones.scales, plain.scales, scheme);
      assert.equal(ones.sumErrAfter, plain.sumErrAfter, scheme);
      assert.equal(ones.sumObjAfter, plain.sumErrAfter, scheme);
    }
  });

  it('fp4: exact weighted search vs a dense weighted search, per block', async () => {
    const rows = 12;
    const cols = 200;
    const x = trainedLike(rows, cols, { seed: 22 });
    const cw = columnWeights(cols, 23);
    const r = await native().calibrate(new Uint8Array(x.buffer), { dtype: 'F32', rows, cols, scheme: 'fp4', blockSize: 64, columnWeights: cw });
    let sumExact = 0;
    let sumDense = 0;
    let b = 0;
    for (let row = 0; row < rows; row++) {
      for (let c0 = 0; c0 < cols; c0 += 64, b++) {
        const xb = x.subarray(row * cols + c0, row * cols + Math.min(cols, c0 + 64));
        const wb = cw.subarray(c0, Math.min(cols, c0 + 64));
        const s0 = f32(6 / absmax(xb));
        const naive = weightedErr(xb, wb, s0, GRIDS.e2m1, false);
        let dense = naive;
        for (let i = 0; i < 2600; i++) dense = Math.min(dense, weightedErr(xb, wb, f32(s0 / (0.3 + (1.3 * i) / 2599)), GRIDS.e2m1, false));
        const exact = weightedErr(xb, wb, r.scales[b], GRIDS.e2m1, false);
        assert.ok(exact <= naive * (1 + 1e-12), `block ${b}: ${exact} > naive ${naive}`);
        assert.ok(exact <= dense * (1 + 1e-5), `block ${b}: exact ${exact} > dense ${dense}`);
        sumExact += exact;
        sumDense += dense;
      }
    }
    assert.ok(sumExact <= sumDense * 1.001);
    assert.ok(Math.abs(r.sumObjAfter! - sumExact) <= 1e-9 * sumExact);
  });

  it('nvfp4 and mxfp4: the chosen scale is the best for the weighted objective', async () => {
    const rows = 9;
    const cols = 96;
    const x = trainedLike(rows, cols, { seed: 24 });
    const cw = columnWeights(cols, 25);
    const e4m3 = native().e4m3Decode(Uint8Array.from({ length: 127 }, (_, i) => i));
    const nv = await native().calibrate(new Uint8Array(x.buffer), { dtype: 'F32', rows, cols, scheme: 'nvfp4', blockSize: 16, columnWeights: cw });
    const mx = await native().calibrate(new Uint8Array(x.buffer), { dtype: 'F32', rows, cols, scheme: 'mxfp4', blockSize: 32, columnWeights: cw });
    const g = nv.globalDecode;
    for (let b = 0; b < rows * (cols / 16); b++) {
      const row = Math.floor(b / (cols / 16));
      const c0 = (b % (cols / 16)) * 16;
      const xb = x.subarray(row * cols + c0, row * cols + c0 + 16);
      const wb = cw.subarray(c0, c0 + 16);
      let best = Infinity;
      for (let c = 1; c <= 126; c++) best = Math.min(best, weightedErr(xb, wb, f32(e4m3[c] * g), GRIDS.e2m1, true));
      const chosen = weightedErr(xb, wb, f32(e4m3[nv.codes![b]] * g), GRIDS.e2m1, true);
      assert.ok(chosen <= best * (1 + 1e-12), `nvfp4 block ${b}`);
    }
    for (let b = 0; b < rows * (cols / 32); b++) {
      const row = Math.floor(b / (cols / 32));
      const c0 = (b % (cols / 32)) * 32;
      const xb = x.subarray(row * cols + c0, row * cols + c0 + 32);
      const wb = cw.subarray(c0, c0 + 32);
      let best = Infinity;
      for (let k = -127; k <= 127; k++) best = Math.min(best, weightedErr(xb, wb, 2 ** k, GRIDS.e2m1, true));
      const chosen = weightedErr(xb, wb, 2 ** (mx.codes![b] - 127), GRIDS.e2m1, true);
      assert.ok(chosen <= best * (1 + 1e-12), `mxfp4 block ${b}`);
    }
  });

  it('rejects weights of the wrong length or with negative / non-finite values', () => {
    const x = new Float32Array(64);
    const base = { dtype: 'F32' as const, rows: 1, cols: 64, scheme: 'fp4' as const, blockSize: 64 };
    assert.throws(() => native().calibrate(new Uint8Array(x.buffer), { ...base, columnWeights: new Float32Array(63) }), { code: 'E_BAD_ARGUMENT' });
    const bad = new Float32Array(64);
    bad[3] = -1;
    assert.throws(() => native().calibrate(new Uint8Array(x.buffer), { ...base, columnWeights: bad }), { code: 'E_BAD_ARGUMENT' });
    bad[3] = NaN;
    assert.throws(() => native().calibrate(new Uint8Array(x.buffer), { ...base, columnWeights: bad }), { code: 'E_BAD_ARGUMENT' });
  });
});

describe('weighted objective with input means (the block bias term)', () => {
  // Σ w_i Δ_i² + (Σ mu_i Δ_i)², Δ_i = x_i − x̂_i signed; decode: x̂ = Q(|x|/d)·d, else Q(|x|·s)/s.
  function meanObj(x: Float32Array, w: Float32Array, mu: Float32Array, s: number, decode: boolean): number {
    let e = 0;
    let b = 0;
    for (let i = 0; i < x.length; i++) {
      const a = Math.abs(x[i]);
      const xh = decode ? f32(roundToGrid(f32(a / s), GRIDS.e2m1) * s) : f32(roundToGrid(f32(a * s), GRIDS.e2m1) / s);
      const d = (a - xh) * (x[i] < 0 ? -1 : 1);
      e += w[i] * d * d;
      b += mu[i] * d;
    }
    return e + b * b;
  }
  const cols = 96;
  const cw = Float32Array.from(trainedLike(1, cols, { seed: 31, std: 1 }), (v) => v * v);
  // Means of either sign, some as large as the root of the weights (LayerNorm / GELU outputs).
  const mu = Float32Array.from(trainedLike(1, cols, { seed: 32, std: 1 }), (v, j) => (j % 3 === 0 ? Math.abs(v) : 0.3 * v));

  it('zero means give exactly the result without means', async () => {
    const x = trainedLike(10, cols, { seed: 33 });
    for (const [scheme, bs] of [['fp4', 32], ['nvfp4', 16], ['mxfp4', 32]] as const) {
      const opts = { dtype: 'F32' as const, rows: 10, cols, scheme, blockSize: bs, columnWeights: cw };
      const without = await native().calibrate(new Uint8Array(x.buffer), opts);
      const zero = await native().calibrate(new Uint8Array(x.buffer), { ...opts, columnMeans: new Float32Array(cols) });
      assert.deepEqual(zero.scales, without.scales, scheme);
      assert.equal(zero.sumObjAfter, without.sumObjAfter, scheme);
    }
  });

  it('fp4: the exact sweep vs a dense search over (0.3, 6)·absmax/6, per block', async () => {
    const rows = 16;
    const bs = 32;
    const x = trainedLike(rows, cols, { seed: 34 });
    const r = await native().calibrate(new Uint8Array(x.buffer), { dtype: 'F32', rows, cols, scheme: 'fp4', blockSize: bs, columnWeights: cw, columnMeans: mu });
    let sumExact = 0;
    let sumDense = 0;
    for (let b = 0; b < rows * (cols / bs); b++) {
      const c0 = (b % (cols / bs)) * bs;
      const xb = x.subarray(b * bs, (b + 1) * bs);
      const wb = cw.subarray(c0, c0 + bs);
      const mb = mu.subarray(c0, c0 + bs);
      const s0 = f32(6 / absmax(xb));
      const naive = meanObj(xb, wb, mb, s0, false);
      let dense = naive;
      for (let i = 0; i < 4000; i++) dense = Math.min(dense, meanObj(xb, wb, mb, f32(s0 / (0.3 + (5.7 * i) / 3999)), false));
      const exact = meanObj(xb, wb, mb, r.scales[b], false);
      assert.ok(exact <= naive * (1 + 1e-12), `block ${b}: ${exact} > naive ${naive}`);
      // Candidates stay 8 float ulps inside each interval (the bias term jumps at breakpoints).
      assert.ok(exact <= dense * (1 + 1e-5), `block ${b}: exact ${exact} > dense ${dense}`);
      sumExact += exact;
      sumDense += dense;
    }
    assert.ok(sumExact <= sumDense * (1 + 1e-6));
    assert.ok(Math.abs(r.sumObjAfter! - sumExact) <= 1e-9 * sumExact);
  });

  it('nvfp4 and mxfp4: the chosen scale is the best over every code (larger than absmax/(max/2) included)', async () => {
    const rows = 8;
    const x = trainedLike(rows, cols, { seed: 35 });
    const e4m3 = native().e4m3Decode(Uint8Array.from({ length: 127 }, (_, i) => i));
    const nv = await native().calibrate(new Uint8Array(x.buffer), { dtype: 'F32', rows, cols, scheme: 'nvfp4', blockSize: 16, columnWeights: cw, columnMeans: mu });
    const mx = await native().calibrate(new Uint8Array(x.buffer), { dtype: 'F32', rows, cols, scheme: 'mxfp4', blockSize: 32, columnWeights: cw, columnMeans: mu });
    for (const [r, bs] of [[nv, 16], [mx, 32]] as const) {
      for (let b = 0; b < rows * (cols / bs); b++) {
        const c0 = (b % (cols / bs)) * bs;
        const xb = x.subarray(b * bs, (b + 1) * bs);
        const args = [cw.subarray(c0, c0 + bs), mu.subarray(c0, c0 + bs)] as const;
        let best = Infinity;
        if (bs === 16) for (let c = 1; c <= 126; c++) best = Math.min(best, meanObj(xb, ...args, f32(e4m3[c] * nv.globalDecode), true));
        else for (let k = -127; k <= 127; k++) best = Math.min(best, meanObj(xb, ...args, 2 ** k, true));
        const d = bs === 16 ? f32(e4m3[r.codes![b]] * nv.globalDecode) : 2 ** (r.codes![b] - 127);
        assert.ok(meanObj(xb, ...args, d, true) <= best * (1 + 1e-12), `block size ${bs}, block ${b}`);
      }
    }
  });

  it('rejects means without weights, of the wrong length or non-finite', () => {
    const x = new Float32Array(64);
    const base = { dtype: 'F32' as const, rows: 1, cols: 64, scheme: 'fp4' as const, blockSize: 64 };
    const w = new Float32Array(64).fill(1);
    assert.throws(() => native().calibrate(new Uint8Array(x.buffer), { ...base, columnMeans: new Float32Array(64) }), { code: 'E_BAD_ARGUMENT' });
    assert.throws(() => native().calibrate(new Uint8Array(x.buffer), { ...base, columnWeights: w, columnMeans: new Float32Array(63) }), { code: 'E_BAD_ARGUMENT' });
    const bad = new Float32Array(64);
    bad[5] = Infinity;
    assert.throws(() => native().calibrate(new Uint8Array(x.buffer), { ...base, columnWeights: w, columnMeans: bad }), { code: 'E_BAD_ARGUMENT' });
  });
});

describe('edge cases', () => {
  it('an all-zero block has scale 1 and zero error; zero rows are fine', async () => {
    const w = new Float32Array(4 * 64);
    w.fill(0.5, 128, 192);
    const r = await calibrate(w, 4, 64, 'fp4', 64);
    assert.deepEqual(Array.from(r.scales), [1, 1, r.scales[2], 1]);
    assert.equal(r.sumErrAfter, 0); // a constant block is represented exactly
  });
  it('a block of one repeated value is exact under every scheme', async () => {
    const w = new Float32Array(64).fill(-0.0371);
    for (const scheme of ['fp4', 'fp8_e4m3', 'fp8_e5m2'] as const) {
      const r = await calibrate(w, 1, 64, scheme, 64);
      assert.equal(r.sumErrAfter, 0, scheme);
    }
  });
  it('F16 and BF16 inputs give the same result as their float32 values', async () => {
    const { toFloat16Bits, fromFloat16Bits } = await import('../src/util/trained_like.js');
    const w32 = trainedLike(8, 96, { seed: 5 });
    const h = toFloat16Bits(w32);
    const asF32 = fromFloat16Bits(h);
    const opts = { rows: 8, cols: 96, scheme: 'nvfp4' as const, blockSize: 16 };
    const a = await native().calibrate(new Uint8Array(h.buffer), { ...opts, dtype: 'F16' });
    const b = await native().calibrate(new Uint8Array(asF32.buffer), { ...opts, dtype: 'F32' });
    assert.deepEqual(a.scales, b.scales);
    assert.equal(a.sumErrAfter, b.sumErrAfter);
    const bf = new Uint16Array(asF32.length);
    const u = new Uint32Array(asF32.buffer);
    // BF16 made by truncating the float32 bits; the addon must decode it to exactly those values.
    for (let i = 0; i < u.length; i++) bf[i] = u[i] >>> 16;
    const bfAsF32 = new Float32Array(Uint32Array.from(bf, (v) => v << 16).buffer);
    const c = await native().calibrate(new Uint8Array(bf.buffer), { ...opts, dtype: 'BF16' });
    const d = await native().calibrate(new Uint8Array(bfAsF32.buffer), { ...opts, dtype: 'F32' });
    assert.deepEqual(c.scales, d.scales);
  });
  it('every F16 bit pattern reads as its value (the vectorized conversion and scan agree with the portable code)', async () => {
    const h = new Uint16Array(65536).map((_, i) => i);
    const opts = { dtype: 'F16' as const, rows: 64, cols: 1024, allowNonfinite: true };
    for (const [scheme, blockSize] of [['nvfp4', 16], ['fp4', 16]] as const) {
      const cpu = await native().calibrate(new Uint8Array(h.buffer), { ...opts, scheme, blockSize, backend: 'cpu' });
      const emu = await native().calibrate(new Uint8Array(h.buffer), { ...opts, scheme, blockSize, backend: 'cuda-emulated' });
      assert.equal(cpu.absmax, 65504);
      assert.equal(cpu.nonfinite, 2048); // exponent all ones: ±Inf and the NaNs
      assert.equal(cpu.firstNonfinite, 0x7c00);
      assert.equal(cpu.counted, 65536 - 2048);
      for (const key of ['scales', 'codes', 'blockMseBefore', 'blockMseAfter', 'blockOutliers', 'sumErrBefore', 'sumErrAfter', 'absmax', 'nonfinite', 'firstNonfinite'] as const) {
        assert.deepEqual(cpu[key], emu[key], `${scheme} ${key}`);
      }
    }
  });
  it('results do not depend on the thread count', async () => {
    const w = trainedLike(300, 384, { seed: 9 });
    const buf = new Uint8Array(w.buffer);
    const base = { dtype: 'F32' as const, rows: 300, cols: 384, scheme: 'fp4' as const, blockSize: 64 };
    const one = await native().calibrate(buf, { ...base, threads: 1 });
    const two = await native().calibrate(buf, { ...base, threads: 2 });
    const many = await native().calibrate(buf, { ...base, threads: 7 });
    assert.deepEqual(one.scales, two.scales);
    assert.deepEqual(one.scales, many.scales);
    assert.equal(one.sumErrAfter, many.sumErrAfter);
    assert.deepEqual(one.blockMseAfter, many.blockMseAfter);
  });
  it('results written into lent arrays: the same values, in the very arrays lent, on every backend', async () => {
    const rows = 37;
    const cols = 203; // a partial last block
    const w = trainedLike(rows, cols, { seed: 12 });
    const buf = new Uint8Array(w.buffer);
    for (const backend of ['cpu', 'cuda-emulated'] as const) {
      for (const [scheme, bs] of [['nvfp4', 16], ['fp4', 64]] as const) {
        const opts = { dtype: 'F32' as const, rows, cols, scheme, blockSize: bs, backend };
        const own = await native().calibrate(buf, opts);
        const blocks = rows * Math.ceil(cols / bs);
        const output = {
          scales: new Float32Array(blocks).fill(NaN),
          codes: scheme === 'nvfp4' ? new Uint8Array(blocks).fill(0xff) : undefined,
          blockMseBefore: new Float32Array(blocks).fill(NaN),
          blockMseAfter: new Float32Array(blocks).fill(NaN),
          blockOutliers: new Uint16Array(blocks).fill(0xffff),
        };
        const lent = await native().calibrate(buf, { ...opts, output });
        for (const key of ['scales', 'codes', 'blockMseBefore', 'blockMseAfter', 'blockOutliers'] as const) {
          assert.strictEqual(lent[key], output[key], `${backend} ${scheme} ${key}: the lent array itself`);
          assert.deepEqual(lent[key], own[key], `${backend} ${scheme} ${key}`);
        }
        assert.equal(lent.sumErrAfter, own.sumErrAfter);
        // Only some arrays lent: the addon allocates the others.
        const part = await native().calibrate(buf, { ...opts, output: { scales: new Float32Array(blocks) } });
        assert.deepEqual(part.blockMseAfter, own.blockMseAfter);
        assert.deepEqual(part.scales, own.scales);
      }
    }
    const base = { dtype: 'F32' as const, rows, cols, scheme: 'fp4' as const, blockSize: 64 };
    const blocks = rows * 4;
    await assert.rejects(native().calibrate(buf, { ...base, output: { scales: new Float32Array(blocks - 1) } }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'E_BAD_ARGUMENT');
      assert.match(err.message, /hold 147 blocks; the tensor has 148/);
      return true;
    });
    const mixed = { scales: new Float32Array(blocks), blockMseAfter: new Float32Array(blocks + 1) };
    assert.throws(() => native().calibrate(buf, { ...base, output: mixed }), { code: 'E_BAD_ARGUMENT' });
    assert.throws(() => native().calibrate(buf, { ...base, output: { scales: new Float64Array(blocks) as never } }), { code: 'E_BAD_ARGUMENT' });
    assert.throws(() => native().calibrate(buf, { ...base, output: 7 as never }), { code: 'E_BAD_ARGUMENT' });
  });
  it('the native side validates what it is given', async () => {
    const w = new Float32Array(64);
    const buf = new Uint8Array(w.buffer);
    await assert.rejects(native().calibrate(buf, { dtype: 'F32', rows: 2, cols: 64, scheme: 'fp4', blockSize: 64 }), /bytes/);
    assert.throws(() => native().calibrate(buf, { dtype: 'F64' as never, rows: 1, cols: 64, scheme: 'fp4', blockSize: 64 }), { code: 'E_UNSUPPORTED_DTYPE' });
    assert.throws(() => native().calibrate(buf, { dtype: 'F32', rows: 1, cols: 64, scheme: 'int4' as never, blockSize: 64 }), { code: 'E_BAD_FORMAT' });
    assert.throws(() => native().calibrate(buf, { dtype: 'F32', rows: -1, cols: 64, scheme: 'fp4', blockSize: 64 }), { code: 'E_BAD_ARGUMENT' });
    w[5] = NaN;
    await assert.rejects(native().calibrate(buf, { dtype: 'F32', rows: 1, cols: 64, scheme: 'fp4', blockSize: 64 }), { code: 'E_NONFINITE' });
    const ok = await native().calibrate(buf, { dtype: 'F32', rows: 1, cols: 64, scheme: 'fp4', blockSize: 64, allowNonfinite: true });
    assert.equal(ok.nonfinite, 1);
    assert.equal(ok.counted, 63);
  });
  it('cancellation through the control words', async () => {
    const w = trainedLike(2000, 1024, { seed: 1 });
    const control = new Int32Array(2);
    control[0] = 1;
    await assert.rejects(
      native().calibrate(new Uint8Array(w.buffer), { dtype: 'F32', rows: 2000, cols: 1024, scheme: 'fp4', blockSize: 64, control }),
      { code: 'E_CANCELLED' },
    );
  });
});
