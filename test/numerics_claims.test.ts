// docs/numerics.md, claim by claim, against computations written here: rounding on explicit grids
// (helpers/reference.ts), the block error with the documented 8-lane float64 sum, the tensor sum
// with the documented 1024-block chunks, brute force over every scale, and the CLI's files.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { makeConfig } from '../src/calibration/config.js';
import { SCHEMES, bitsPerWeight, improvementRatio } from '../src/calibration/schemes.js';
import { calibrateTensorData, type TensorData } from '../src/calibration/tensor_calibration.js';
import { encodeSafetensors } from '../src/checkpoints/safetensors_writer.js';
import { native, type NativeCalibrateResult, type SchemeName } from '../src/native/index.js';
import { describeRun, runCli, scratchSpace } from './helpers/cli_runner.js';
import { E2M1_GRID, ELEM_MAX, absmax, blocksOf, calibrateF32, loadGrids, roundToGrid, type Elem } from './helpers/reference.js';

const f32 = Math.fround;
const MAX = ELEM_MAX;
const ELEM_OF: Record<SchemeName, Elem> = { fp4: 'e2m1', fp8_e4m3: 'e4m3', fp8_e5m2: 'e5m2', nvfp4: 'e2m1', mxfp4: 'e2m1', mxfp8: 'e4m3' };

let GRIDS: Record<Elem, Float64Array>;
let E4M3_VALUES: Float64Array; // code c (0..126) → its value, from the reference table
before(async () => {
  GRIDS = await loadGrids();
  E4M3_VALUES = GRIDS.e4m3;
  assert.equal(E4M3_VALUES.length, 127);
  assert.equal(E4M3_VALUES[126], 448);
});

// ---------------------------------------------------------------------------------------------
// The documented error, written out: x̂ in float32, |x| − |x̂| in float64, lane i mod 8, lanes
// combined ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)).

interface Eval {
  err: number;
  outliers: number;
}

function evalBlock(x: Float32Array, scale: number, grid: Float64Array, decode: boolean): Eval {
  const max = grid[grid.length - 1];
  const lane = [0, 0, 0, 0, 0, 0, 0, 0];
  let outliers = 0;
  for (let i = 0; i < x.length; i++) {
    const a = Math.abs(x[i]);
    const y = decode ? f32(a / scale) : f32(a * scale);
    if (y > max) outliers++;
    const q = roundToGrid(y, grid);
    const xh = decode ? f32(q * scale) : f32(q / scale);
    const d = a - xh;
    lane[i & 7] += d * d;
  }
  return { err: lane[0] + lane[1] + (lane[2] + lane[3]) + (lane[4] + lane[5] + (lane[6] + lane[7])), outliers };
}

/** The same error in real arithmetic (float64, no float32 rounding of x·s or x̂), plainly summed. */
function realErr(x: Float32Array, s: number, grid: Float64Array): number {
  let e = 0;
  for (let i = 0; i < x.length; i++) {
    const a = Math.abs(x[i]);
    const d = a - roundToGrid(a * s, grid) / s;
    e += d * d;
  }
  return e;
}

/** Block errors summed in block order within chunks of 1024 blocks, chunk sums in chunk order. */
function chunkedSum(errs: readonly number[]): number {
  let total = 0;
  for (let c = 0; c < errs.length; c += 1024) {
    let chunk = 0;
    for (let b = c; b < Math.min(errs.length, c + 1024); b++) chunk += errs[b];
    total += chunk;
  }
  return total;
}

async function weights(rows: number, cols: number, seed: number, extra: { outlierFraction?: number; outlierGain?: number; rowSpread?: number } = {}): Promise<Float32Array> {
  const bytes = await native().generateTrainedLike({ rows, cols, seed, dtype: 'F32', ...extra });
  return new Float32Array(bytes.slice().buffer, 0, rows * cols);
}

const calibrate = calibrateF32;

/** Checks the engine's sums and outlier count against the evaluation here, bit for bit. */
function checkSums(r: NativeCalibrateResult, before: Eval[], after: Eval[], label: string): void {
  assert.equal(r.sumErrBefore, chunkedSum(before.map((e) => e.err)), `${label}: sumErrBefore`);
  assert.equal(r.sumErrAfter, chunkedSum(after.map((e) => e.err)), `${label}: sumErrAfter`);
  assert.equal(r.outliers, after.reduce((a, e) => a + e.outliers, 0), `${label}: outliers`);
}

// ---------------------------------------------------------------------------------------------

describe('FP32 scales: the exact search against a dense search of 3,000 float32 multipliers', () => {
  // Odd shapes: a partial last block in every row. Rows × blocks chosen so that the fp4/64 case
  // has more than 1024 blocks (two summation chunks).
  const cases: [SchemeName, number, number, number][] = [
    ['fp4', 64, 24, 2760],
    ['fp4', 128, 16, 300],
    ['fp4', 256, 8, 700],
    ['fp8_e4m3', 32, 16, 200],
    ['fp8_e4m3', 256, 6, 600],
    ['fp8_e5m2', 32, 16, 200],
    ['fp8_e5m2', 128, 8, 330],
  ];
  const DENSE = 3000;
  let worstExcess = 0; // max over blocks of (exact − dense) / dense where exact is above
  let worstRealExcess = 0; // the same in real arithmetic
  for (const [scheme, bs, rows, cols] of cases) {
    it(`${scheme} / block ${bs} (${rows} × ${cols}): never worse than naive, nor than dense beyond float32 rounding`, async () => {
      const elem = ELEM_OF[scheme];
      const grid = GRIDS[elem];
      const max = MAX[elem];
      const w = await weights(rows, cols, bs * 1000 + cols, { outlierFraction: 1 / 32 });
      const r = await calibrate(w, rows, cols, scheme, bs);
      const bl = blocksOf(w, rows, cols, bs);
      assert.equal(r.scales.length, bl.length);
      const evBefore: Eval[] = [];
      const evAfter: Eval[] = [];
      let sumExact = 0;
      let sumDense = 0;
      let improved = 0;
      // The dense search on every block of small cases, on a deterministic sample of large ones.
      const stride = Math.max(1, Math.floor(bl.length / 120));
      for (let b = 0; b < bl.length; b++) {
        const x = bl[b];
        const s0 = f32(max / absmax(x));
        const naive = evalBlock(x, s0, grid, false);
        const exact = evalBlock(x, r.scales[b], grid, false);
        evBefore.push(naive);
        evAfter.push(exact);
        // Never worse than naive, and the naive scale itself when not strictly better.
        assert.ok(exact.err <= naive.err, `block ${b}: exact ${exact.err} > naive ${naive.err}`);
        if (exact.err === naive.err) assert.equal(r.scales[b], s0, `block ${b}: a tie keeps the naive scale`);
        else improved++;
        if (b % stride !== 0) continue;
        // t/t₀ from 0.2 to 2.5, geometric: wider than the sweep's (t_lo, 2·t₀) on both sides.
        let dense = Infinity;
        let denseReal = Infinity;
        for (let i = 0; i < DENSE; i++) {
          const s = f32(s0 / (0.2 * Math.pow(12.5, i / (DENSE - 1))));
          dense = Math.min(dense, evalBlock(x, s, grid, false).err);
          denseReal = Math.min(denseReal, realErr(x, s, grid));
        }
        if (exact.err > dense) worstExcess = Math.max(worstExcess, (exact.err - dense) / dense);
        const real = realErr(x, r.scales[b], grid);
        if (real > denseReal) worstRealExcess = Math.max(worstRealExcess, (real - denseReal) / denseReal);
        // The minimum is exact in real arithmetic; float32 rounding of x̂ moves an error by parts
        // in 1e7 (about 2⁻²⁴ relative per element), which a dense grid can land on the good side of.
        assert.ok(exact.err <= dense * (1 + 2e-6), `block ${b}: exact ${exact.err} > dense ${dense}`);
        sumExact += exact.err;
        sumDense += dense;
      }
      assert.ok(sumExact <= sumDense * (1 + 1e-7), `sampled blocks: exact ${sumExact} vs dense ${sumDense}`);
      assert.ok(improved > bl.length / 4, `the search improves most blocks (${improved} of ${bl.length})`);
      checkSums(r, evBefore, evAfter, `${scheme}/${bs}`);
    });
  }
  it('reports the largest float32 excess of exact over dense', () => {
    // Recorded for the report: zero when dense never lands below the exact scale's float32 error.
    console.log(`# exact vs dense: largest relative excess ${worstExcess.toExponential(3)} (float32 x̂), ${worstRealExcess.toExponential(3)} (real arithmetic)`);
    assert.ok(worstExcess <= 2e-6);
    assert.ok(worstRealExcess <= 2e-6);
  });
});

// ---------------------------------------------------------------------------------------------

describe('NVFP4: global scale, standard code, every E4M3 code', () => {
  /** E4M3 round to nearest even of a positive value, as a code (0..126), on the reference grid. */
  function e4m3Code(v: number): number {
    const q = roundToGrid(v, E4M3_VALUES);
    return E4M3_VALUES.indexOf(q);
  }

  it('g = absmax/(6·448), the standard code, and the chosen code is the best of all 126 (ties: standard, then the smaller code)', async () => {
    const rows = 20;
    const cols = 200; // 13 blocks per row, the last one 8 wide
    const w = await weights(rows, cols, 31);
    // Rows far below the tensor's absmax: their standard codes are small or round to zero (→ 2⁻⁹).
    for (let c = 0; c < cols; c++) {
      w[3 * cols + c] *= 1e-4;
      w[4 * cols + c] *= 3e-7;
      w[5 * cols + c] = 0; // all-zero blocks
    }
    w[7 * cols + 5] = 40; // one large value sets g
    const r = await calibrate(w, rows, cols, 'nvfp4', 16);
    const naive = await calibrate(w, rows, cols, 'nvfp4', 16, 'naive');
    const g = f32(absmax(w) / (6 * 448));
    assert.equal(r.globalDecode, g);
    const bl = blocksOf(w, rows, cols, 16);
    const evBefore: Eval[] = [];
    const evAfter: Eval[] = [];
    let roundedToZero = 0;
    let improved = 0;
    for (let b = 0; b < bl.length; b++) {
      const x = bl[b];
      const am = absmax(x);
      const d = (c: number) => f32(E4M3_VALUES[c] * g);
      if (am === 0) {
        // An all-zero block: code 1 (2⁻⁹, the smallest positive E4M3 value), so s = 1/(2⁻⁹·g), not 1.
        assert.equal(r.codes![b], 1, `block ${b}: all zero`);
        assert.equal(r.scales[b], f32(1 / d(1)));
        assert.equal(r.blockMseAfter![b], 0);
        evBefore.push({ err: 0, outliers: 0 });
        evAfter.push({ err: 0, outliers: 0 });
        continue;
      }
      let std = e4m3Code(f32(am / f32(6 * g)));
      if (std === 0) {
        std = 1;
        roundedToZero++;
      }
      assert.equal(naive.codes![b], std, `block ${b}: standard code`);
      const errs = Array.from({ length: 127 }, (_, c) => (c === 0 ? Infinity : evalBlock(x, d(c), E2M1_GRID, true).err));
      const best = Math.min(...errs);
      const want = errs[std] <= best ? std : errs.indexOf(best);
      assert.equal(r.codes![b], want, `block ${b}: code ${r.codes![b]} (err ${errs[r.codes![b]]}), best ${want} (err ${best})`);
      assert.equal(r.scales[b], f32(1 / d(want)), `block ${b}: s = 1/d`);
      if (want !== std) improved++;
      evBefore.push(evalBlock(x, d(std), E2M1_GRID, true));
      evAfter.push(evalBlock(x, d(want), E2M1_GRID, true));
    }
    assert.ok(roundedToZero > 0, 'some standard codes round to zero');
    assert.ok(improved > 0);
    checkSums(r, evBefore, evAfter, 'nvfp4');
  });

  it('an all-zero tensor: g = 1 (absmax/(6·448) would be 0), code 1 in every block, zero error', async () => {
    const r = await calibrate(new Float32Array(3 * 40), 3, 40, 'nvfp4', 16);
    assert.equal(r.globalDecode, 1);
    assert.deepEqual(Array.from(r.codes!), new Array(9).fill(1));
    assert.deepEqual(Array.from(r.scales), new Array(9).fill(512));
    assert.equal(r.sumErrAfter, 0);
  });
});

describe('MX: the OCP standard exponent and every UE8M0 power of two', () => {
  for (const [scheme, emax] of [['mxfp4', 2], ['mxfp8', 8]] as const) {
    it(`${scheme}: k = floor(log2 absmax) − ${emax}; the chosen k is the best of all 255 (ties: standard, then the smaller k)`, async () => {
      const rows = 24;
      const cols = 176; // 6 blocks per row, the last one 16 wide
      const w = await weights(rows, cols, 41);
      // Rows at extreme magnitudes, exact powers of two (floor(log2) at its edge) and zeros.
      for (let c = 0; c < cols; c++) {
        w[1 * cols + c] *= 2 ** 60;
        w[2 * cols + c] *= 2 ** -70;
        w[3 * cols + c] = c % 3 === 0 ? 2 ** ((c % 9) - 4) : w[3 * cols + c];
        w[4 * cols + c] = 0;
        w[5 * cols + c] *= 2 ** -125; // float32 subnormals: the standard k clamps at −127
        w[6 * cols + c] *= 2 ** 120;
      }
      const r = await calibrate(w, rows, cols, scheme, 32);
      const naive = await calibrate(w, rows, cols, scheme, 32, 'naive');
      const grid = GRIDS[ELEM_OF[scheme]];
      const bl = blocksOf(w, rows, cols, 32);
      const evBefore: Eval[] = [];
      const evAfter: Eval[] = [];
      let improved = 0;
      let clamped = 0;
      for (let b = 0; b < bl.length; b++) {
        const x = bl[b];
        const am = absmax(x);
        if (am === 0) {
          assert.equal(r.scales[b], 1);
          assert.equal(r.codes![b], 127);
          evBefore.push({ err: 0, outliers: 0 });
          evAfter.push({ err: 0, outliers: 0 });
          continue;
        }
        // UE8M0 has k ∈ [−127, 127] (code 255 is NaN): the rule's k is clamped to it.
        const kStd = Math.min(127, Math.max(-127, Math.floor(Math.log2(am)) - emax));
        if (kStd === -127) clamped++;
        assert.equal(naive.codes![b] - 127, kStd, `block ${b}: standard exponent`);
        const errs = new Map<number, number>();
        let best = Infinity;
        for (let k = -127; k <= 127; k++) {
          const e = evalBlock(x, 2 ** k, grid, true).err;
          errs.set(k, e);
          best = Math.min(best, e);
        }
        let want = kStd;
        if (errs.get(kStd)! > best) for (let k = -127; k <= 127 && want === kStd; k++) if (errs.get(k) === best) want = k;
        assert.equal(r.codes![b] - 127, want, `block ${b}: 2^${r.codes![b] - 127} (err ${errs.get(r.codes![b] - 127)}), best 2^${want} (err ${best})`);
        assert.equal(r.scales[b], 2 ** -want);
        if (want !== kStd) improved++;
        evBefore.push(evalBlock(x, 2 ** kStd, grid, true));
        evAfter.push(evalBlock(x, 2 ** want, grid, true));
      }
      assert.ok(improved > 0);
      assert.ok(clamped > 0, 'some blocks clamp at k = −127');
      checkSums(r, evBefore, evAfter, scheme);
    });
  }
});

// ---------------------------------------------------------------------------------------------

describe('--search ternary: the specification\'s 20 ternary rounds over [0.1·s₀, 2·s₀]', () => {
  /** The rounds in float32, keeping the best point seen (strictly better only); s₀ when none is. */
  function ternary(x: Float32Array, s0: number, e0: number, err: (s: number) => number): number {
    let lo = f32(s0 * f32(0.1));
    let hi = f32(s0 * 2);
    let best = s0;
    let bestE = e0;
    for (let r = 0; r < 20; r++) {
      const third = f32(f32(hi - lo) / 3);
      const m1 = f32(lo + third);
      const m2 = f32(hi - third);
      const e1 = err(m1);
      const e2 = err(m2);
      if (e1 < e2) {
        hi = m2;
        if (e1 < bestE) (bestE = e1), (best = m1);
      } else {
        lo = m1;
        if (e2 < bestE) (bestE = e2), (best = m2);
      }
    }
    return best;
  }

  for (const [scheme, bs] of [['fp4', 64], ['fp8_e5m2', 32], ['nvfp4', 16], ['mxfp4', 32]] as const) {
    it(`${scheme}: the same scales, bit for bit${scheme.startsWith('fp') ? '' : ', rounded to the encoding'}`, async () => {
      const rows = 10;
      const cols = 150;
      const w = await weights(rows, cols, 81);
      const r = await native().calibrate(new Uint8Array(w.buffer), { dtype: 'F32', rows, cols, scheme, blockSize: bs, search: 'ternary', threads: 2, backend: 'cpu' });
      const naive = await calibrate(w, rows, cols, scheme, bs, 'naive');
      const grid = GRIDS[ELEM_OF[scheme]];
      const max = MAX[ELEM_OF[scheme]];
      const bl = blocksOf(w, rows, cols, bs);
      const evAfter: Eval[] = [];
      let moved = 0;
      for (let b = 0; b < bl.length; b++) {
        const x = bl[b];
        if (scheme === 'fp4' || scheme === 'fp8_e5m2') {
          const s0 = f32(max / absmax(x));
          const e0 = evalBlock(x, s0, grid, false).err;
          const s = ternary(x, s0, e0, (m) => evalBlock(x, m, grid, false).err);
          const want = s !== s0 && evalBlock(x, s, grid, false).err < e0 ? s : s0;
          assert.equal(r.scales[b], want, `block ${b}`);
          if (want !== s0) moved++;
          evAfter.push(evalBlock(x, want, grid, false));
        } else {
          // The search runs on multipliers from the standard decode scale's; the result s becomes
          // a decode scale 1/s, rounded to the encoding, kept only when strictly better.
          const d0 = scheme === 'nvfp4' ? f32(E4M3_VALUES[naive.codes![b]] * r.globalDecode) : 2 ** (naive.codes![b] - 127);
          const e0 = evalBlock(x, d0, grid, true).err;
          const s = ternary(x, f32(1 / d0), e0, (m) => evalBlock(x, m, grid, false).err);
          let d: number;
          let code: number;
          if (scheme === 'nvfp4') {
            // E4M3 round to nearest even of (1/s)/g; zero becomes the smallest code.
            code = Math.max(1, E4M3_VALUES.indexOf(roundToGrid(f32(f32(1 / s) / r.globalDecode), E4M3_VALUES)));
            d = f32(E4M3_VALUES[code] * r.globalDecode);
          } else {
            // The nearest power of two in the log domain: k = round(−log2 s).
            const k = Math.min(127, Math.max(-127, Math.round(-Math.log2(s))));
            code = k + 127;
            d = 2 ** k;
          }
          const better = code !== naive.codes![b] && evalBlock(x, d, grid, true).err < e0;
          assert.equal(r.codes![b], better ? code : naive.codes![b], `block ${b}`);
          if (better) moved++;
          evAfter.push(evalBlock(x, better ? d : d0, grid, true));
        }
      }
      // (On these weights the rounded ternary result never beats the MX standard exponent.)
      if (scheme !== 'mxfp4') assert.ok(moved > 0);
      assert.equal(r.sumErrAfter, chunkedSum(evAfter.map((e) => e.err)));
    });
  }
});

// ---------------------------------------------------------------------------------------------

function tensorData(name: string, w: Float32Array, rows: number, cols: number): TensorData {
  return { name, dtype: 'F32', shape: [rows, cols], data: new Uint8Array(w.buffer, w.byteOffset, w.byteLength) };
}

describe('block sizes: with FP32 scales and the exact search the smallest size qualifies', () => {
  for (const scheme of ['fp4', 'fp8_e4m3', 'fp8_e5m2'] as const) {
    it(`${scheme}: no larger size has less mse_after, tensor by tensor and block by block`, async () => {
      const sizes = SCHEMES[scheme].blockSizes;
      const elem = ELEM_OF[scheme];
      let worstBlockExcess = 0;
      for (const [seed, rows, cols, extra] of [
        [51, 32, 512, {}],
        [52, 24, 700, { outlierFraction: 1 / 16, outlierGain: 30 }],
        [53, 40, 300, { rowSpread: 2 }],
        [54, 16, 1000, { outlierFraction: 0.2, outlierGain: 4 }],
      ] as const) {
        const w = await weights(rows, cols, seed, extra);
        const res = new Map<number, NativeCalibrateResult>();
        for (const bs of sizes) res.set(bs, await calibrate(w, rows, cols, scheme, bs));
        const small = res.get(sizes[0])!;
        for (const bs of sizes.slice(1)) {
          const big = res.get(bs)!;
          assert.ok(small.sumErrAfter <= big.sumErrAfter, `seed ${seed}: block ${sizes[0]} sum ${small.sumErrAfter} > block ${bs} sum ${big.sumErrAfter}`);
          // Block by block: the small blocks inside a large one, each with its own scale, against
          // the large one's error (evaluated here from both scale sets).
          const ratio = bs / sizes[0];
          const bigBlocks = blocksOf(w, rows, cols, bs);
          const perRowSmall = Math.ceil(cols / sizes[0]);
          const perRowBig = Math.ceil(cols / bs);
          for (let b = 0; b < bigBlocks.length; b++) {
            const row = Math.floor(b / perRowBig);
            const j0 = (b % perRowBig) * ratio;
            const eBig = evalBlock(bigBlocks[b], big.scales[b], GRIDS[elem], false).err;
            let eSmall = 0;
            for (let j = j0; j < Math.min(perRowSmall, j0 + ratio); j++) {
              const c0 = j * sizes[0];
              const x = w.subarray(row * cols + c0, row * cols + Math.min(cols, c0 + sizes[0]));
              eSmall += evalBlock(x, small.scales[row * perRowSmall + j], GRIDS[elem], false).err;
            }
            if (eSmall > eBig) worstBlockExcess = Math.max(worstBlockExcess, (eSmall - eBig) / eBig);
          }
        }
        // Through the calibrator: the larger sizes are listed as dominated, the smallest is chosen.
        const tc = await calibrateTensorData(tensorData('w', w, rows, cols), makeConfig({ format: scheme, backend: 'cpu' }), { threads: 2, diagnostics: false });
        assert.equal(tc.result.block_size, sizes[0]);
        assert.deepEqual(tc.result.block_sizes_dominated, sizes.slice(1));
        assert.deepEqual(tc.result.block_sizes_tried.map((t) => t.block_size), [sizes[0]]);
        assert.equal(tc.result.mse_after, small.sumErrAfter / (rows * cols));
      }
      console.log(`# ${scheme}: largest per-block excess of split blocks over the whole block ${worstBlockExcess.toExponential(3)}`);
      // Splitting never raises a block's error beyond float32 rounding of x̂.
      assert.ok(worstBlockExcess <= 2e-6, `${worstBlockExcess}`);
    });
  }

  it('the dominance holds up to float32 rounding of x̂: a found 1 × 128 tensor where 128 is lower by 3e-9', async () => {
    // Row 3603 of generateTrainedLike(seed 58, 4000 × 128): the two exact halves, evaluated in float32,
    // sum to a few parts in 1e9 more than the exact whole block. In real arithmetic the halves win.
    const bytes = await native().generateTrainedLike({ rows: 4000, cols: 128, seed: 58, dtype: 'F32', rowStart: 3603, rowCount: 1 });
    const w = new Float32Array(bytes.slice().buffer, 0, 128);
    const r64 = await calibrate(w, 1, 128, 'fp4', 64);
    const r128 = await calibrate(w, 1, 128, 'fp4', 128);
    const excess = (r64.sumErrAfter - r128.sumErrAfter) / r128.sumErrAfter;
    assert.ok(excess > 0 && excess < 1e-8, `${excess}`);
    const real64 = realErr(w.subarray(0, 64), r64.scales[0], E2M1_GRID) + realErr(w.subarray(64), r64.scales[1], E2M1_GRID);
    assert.ok(real64 <= realErr(w, r128.scales[0], E2M1_GRID), 'in real arithmetic the split is not worse');
    // min-mse keeps the smallest size without evaluating 128 (documented in numerics.md).
    const tc = await calibrateTensorData(tensorData('w', w, 1, 128), makeConfig({ format: 'fp4', backend: 'cpu' }), { threads: 1, diagnostics: false });
    assert.equal(tc.result.block_size, 64);
    assert.deepEqual(tc.result.block_sizes_dominated, [128, 256]);
  });

  it('a zero error at the smallest size: every size is evaluated, the largest is kept', async () => {
    // Grid values times one power of two: exactly representable at every block size.
    const rows = 4;
    const cols = 256;
    const w = Float32Array.from({ length: rows * cols }, (_, i) => E2M1_GRID[(i * 5) % 8] * (i % 2 ? -1 : 1) * 2 ** -6);
    const tc = await calibrateTensorData(tensorData('w', w, rows, cols), makeConfig({ format: 'fp4', backend: 'cpu' }), { threads: 2, diagnostics: false });
    assert.deepEqual(tc.result.block_sizes_dominated, []);
    assert.deepEqual(tc.result.block_sizes_tried.map((t) => [t.block_size, t.mse_after]), [[64, 0], [128, 0], [256, 0]]);
    assert.equal(tc.result.block_size, 256);
    assert.equal(tc.result.improvement_ratio, 1);
  });
});

// ---------------------------------------------------------------------------------------------

describe('bits_per_weight, improvement_ratio, outlier_count, mse', () => {
  it('bits_per_weight = element bits + (rows·ceil(n/bs)·scale bits + global bits)/numel', () => {
    const bpw = (s: SchemeName, bs: number, rows: number, cols: number) => bitsPerWeight(SCHEMES[s], bs, rows, cols);
    assert.equal(bpw('fp4', 64, 8, 256), 4.5);
    assert.equal(bpw('fp4', 128, 8, 256), 4.25);
    assert.equal(bpw('fp4', 256, 8, 256), 4.125);
    assert.equal(bpw('fp8_e4m3', 32, 8, 256), 9);
    assert.equal(bpw('fp8_e5m2', 256, 8, 256), 8.125);
    assert.equal(bpw('mxfp4', 32, 8, 256), 4.25);
    assert.equal(bpw('mxfp8', 32, 8, 256), 8.25);
    assert.equal(bpw('nvfp4', 16, 8, 256), 4.5 + 32 / 2048);
    // A partial last block stores a scale too: 3 scales per row of 130.
    assert.equal(bpw('fp4', 64, 2, 130), 4 + (2 * 3 * 32) / 260);
    assert.equal(bpw('nvfp4', 16, 3, 20), 4 + (3 * 2 * 8 + 32) / 60);
  });

  it('improvement_ratio: before/after; 1 when both are 0; null when only mse_after is 0', async () => {
    assert.equal(improvementRatio(0, 0), 1);
    assert.equal(improvementRatio(2, 0), null);
    assert.equal(improvementRatio(3, 1.5), 2);
    // Through the calibrator. All zero: both errors are 0.
    const zeros = new Float32Array(2 * 64);
    const z = await calibrateTensorData(tensorData('z', zeros, 2, 64), makeConfig({ format: 'fp4', block_sizes: [64], backend: 'cpu' }), { threads: 1 });
    assert.equal(z.result.mse_before, 0);
    assert.equal(z.result.mse_after, 0);
    assert.equal(z.result.improvement_ratio, 1);
    assert.deepEqual(Array.from(z.scales), [1, 1]);
    // {4, 0.5}: the naive multiplier 6/4 rounds 0.5·1.5 = 0.75 (a tie) to 1, an error; s = 1 is exact.
    const w = new Float32Array(64);
    w[0] = 4;
    w[1] = -0.5;
    const one = await calibrateTensorData(tensorData('w', w, 1, 64), makeConfig({ format: 'fp4', block_sizes: [64], backend: 'cpu' }), { threads: 1 });
    assert.ok(one.result.mse_before > 0);
    assert.equal(one.result.mse_after, 0);
    assert.equal(one.result.improvement_ratio, null);
    const json = JSON.parse(JSON.stringify(one.result));
    assert.equal(json.improvement_ratio, null);
  });

  it('outlier_count = elements with |x·s| > max (|x/d| for encoded scales); mse = sum / numel', async () => {
    const rows = 12;
    const cols = 250;
    const w = await weights(rows, cols, 61, { outlierFraction: 1 / 16, outlierGain: 20 });
    for (const scheme of ['fp4', 'fp8_e4m3', 'fp8_e5m2', 'nvfp4', 'mxfp4', 'mxfp8'] as const) {
      const tc = await calibrateTensorData(tensorData('w', w, rows, cols), makeConfig({ format: scheme, backend: 'cpu' }), { threads: 2 });
      const bs = tc.result.block_size;
      const max = MAX[ELEM_OF[scheme]];
      const bl = blocksOf(w, rows, cols, bs);
      let fromMultiplier = 0;
      let fromDecode = 0;
      for (let b = 0; b < bl.length; b++) {
        const s = tc.scales[b];
        const d = scheme === 'nvfp4' ? f32(E4M3_VALUES[tc.codes![b]] * tc.globalScale!) : scheme.startsWith('mx') ? 2 ** (tc.codes![b] - 127) : NaN;
        for (const v of bl[b]) {
          if (f32(Math.abs(v) * s) > max) fromMultiplier++;
          if (Number.isFinite(d) && f32(Math.abs(v) / d) > max) fromDecode++;
        }
      }
      const want = SCHEMES[scheme].scaleEncoding === 'fp32' ? fromMultiplier : fromDecode;
      assert.equal(tc.result.outlier_count, want, scheme);
      if (scheme === 'fp4') assert.ok(want > 0, 'the exact search clips some outliers');
      assert.equal(tc.result.numel, rows * cols);
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('the CLI: byte-identical results for any --threads', () => {
  const { tmpDir } = scratchSpace('calibscope-numerics-');
  let model = '';
  before(async () => {
    const dir = path.join(tmpDir('model'), 'm');
    fs.mkdirSync(dir);
    // 2,880 blocks of 64 in the first tensor (three summation chunks), partial blocks in the others.
    const a = await native().generateTrainedLike({ rows: 180, cols: 1024, seed: 71, dtype: 'F32' });
    const b = await native().generateTrainedLike({ rows: 97, cols: 333, seed: 72, dtype: 'F16' });
    const c = await native().generateTrainedLike({ rows: 3, cols: 5, seed: 73, dtype: 'F32' });
    const bias = await native().generateTrainedLike({ rows: 1, cols: 64, seed: 74, dtype: 'F32' });
    fs.writeFileSync(
      path.join(dir, 'model.safetensors'),
      encodeSafetensors([
        { name: 'a.weight', dtype: 'F32', shape: [180, 1024], data: a },
        { name: 'b.weight', dtype: 'F16', shape: [97, 333], data: b },
        { name: 'c.weight', dtype: 'F32', shape: [3, 5], data: c },
        { name: 'a.bias', dtype: 'F32', shape: [64], data: bias },
      ]),
    );
    model = dir;
  });

  for (const format of ['fp4', 'nvfp4', 'fp8_e4m3']) {
    it(`${format}: --threads 1, 2 and 3 write the same scales, diagnostics and numbers`, () => {
      const outs: string[] = [];
      for (const threads of [1, 2, 3]) {
        const out = path.join(tmpDir(`${format}-t${threads}`), 'profile');
        const cache = path.join(path.dirname(out), 'cache');
        const r = runCli(['calibrate', model, '--format', format, '--threads', String(threads), '--backend', 'cpu', '--cache', cache, '--out', out, '--json']);
        assert.equal(r.status, 0, describeRun(r));
        outs.push(out);
      }
      const file = (o: string, f: string) => fs.readFileSync(path.join(o, f));
      const numbers = (o: string) => {
        const p = JSON.parse(file(o, 'profile.json').toString('utf8'));
        return { t: p.tensor_calibrations, overall: [p.overall_mse, p.overall_mse_before], sha: p.scales_sha256, skipped: p.skipped_tensors, hash: p.golden_checkpoint_hash };
      };
      for (const o of outs.slice(1)) {
        assert.ok(file(o, 'scales.safetensors').equals(file(outs[0], 'scales.safetensors')), `${o}: scales.safetensors`);
        assert.ok(file(o, 'diagnostics.safetensors').equals(file(outs[0], 'diagnostics.safetensors')), `${o}: diagnostics.safetensors`);
        assert.deepEqual(numbers(o), numbers(outs[0]));
      }
      // scales.safetensors: F32 multipliers [rows, ceil(n / block_size)] per weight; for NVFP4 also
      // <name>:codes (U8, same shape) and <name>:global (g). Read here from the raw header.
      const raw = file(outs[0], 'scales.safetensors');
      const header = JSON.parse(raw.subarray(8, 8 + Number(raw.readBigUInt64LE(0))).toString('utf8'));
      const shapes = Object.fromEntries(Object.entries(header).filter(([k]) => k !== '__metadata__').map(([k, v]) => [k, [(v as { dtype: string }).dtype, (v as { shape: number[] }).shape]]));
      const bs = format === 'nvfp4' ? 16 : format === 'fp4' ? 64 : 32;
      const want: Record<string, unknown> = {};
      for (const [name, rows, cols] of [['a.weight', 180, 1024], ['b.weight', 97, 333], ['c.weight', 3, 5]] as const) {
        want[name] = ['F32', [rows, Math.ceil(cols / bs)]];
        if (format === 'nvfp4') {
          want[`${name}:codes`] = ['U8', [rows, Math.ceil(cols / bs)]];
          want[`${name}:global`] = ['F32', (shapes[`${name}:global`] as [string, number[]] | undefined)?.[1] ?? 'missing'];
        }
      }
      assert.deepEqual(shapes, want);
      // The checkpoint hash: path, NUL, decimal size, NUL, bytes (no config.json, one weight file).
      const weightsFile = fs.readFileSync(path.join(model, 'model.safetensors'));
      const h = createHash('sha256').update(`model.safetensors\0${weightsFile.length}\0`).update(weightsFile).digest('hex');
      assert.equal(numbers(outs[0]).hash, `sha256:${h}`);
      // overall_mse: the element-weighted mean of mse_after (overall_mse_before likewise).
      const p = numbers(outs[0]);
      const ts = Object.values(p.t) as { numel: number; mse_after: number; mse_before: number; bits_per_weight: number; shape: number[]; block_size: number }[];
      assert.deepEqual(Object.keys(p.t).sort(), ['a.weight', 'b.weight', 'c.weight']);
      assert.deepEqual(p.skipped.map((s: { name?: string; tensor?: string }) => s.name ?? s.tensor), ['a.bias']);
      const numel = ts.reduce((a, t) => a + t.numel, 0);
      const mean = (k: 'mse_after' | 'mse_before') => ts.reduce((a, t) => a + t[k] * t.numel, 0) / numel;
      assert.ok(Math.abs(p.overall[0] - mean('mse_after')) <= 1e-12 * p.overall[0], `overall_mse ${p.overall[0]} vs ${mean('mse_after')}`);
      assert.ok(Math.abs(p.overall[1] - mean('mse_before')) <= 1e-12 * p.overall[1]);
      for (const t of ts) {
        const spec = SCHEMES[format as SchemeName];
        const stored = t.shape[0] * Math.ceil(t.shape[1] / t.block_size);
        assert.equal(t.bits_per_weight, spec.elementBits + (stored * spec.scaleBits + spec.globalScaleBits) / t.numel);
      }
    });
  }
});
