// Quantized tensors: packing with calibrated scales, and the x̂ they decode to, against the
// calibration's own numbers and a float32 reference written here (explicit grids + Math.fround).
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { QuantizationCalibrator } from '../src/calibration/calibrator.js';
import type { TensorCalibration, TensorData } from '../src/calibration/tensor_calibration.js';
import type { CalibrationResult } from '../src/calibration/types.js';
import { native, type SchemeName } from '../src/native/index.js';
import {
  computeMse,
  dequantize,
  fakeQuantize,
  quantizeWithCalibration,
  type BlockScales,
  type QuantizedTensor,
} from '../src/quantize/index.js';
import { fromFloat16Bits, toFloat16Bits, trainedLike } from '../src/util/trained_like.js';
import { E2M1_GRID, loadTables, roundToGrid } from './helpers/reference.js';

const f32 = Math.fround;
const SCHEMES: SchemeName[] = ['fp4', 'fp8_e4m3', 'fp8_e5m2', 'nvfp4', 'mxfp4', 'mxfp8'];
const ELEM: Record<SchemeName, 'e2m1' | 'e4m3' | 'e5m2'> = {
  fp4: 'e2m1', fp8_e4m3: 'e4m3', fp8_e5m2: 'e5m2', nvfp4: 'e2m1', mxfp4: 'e2m1', mxfp8: 'e4m3',
};

let GRIDS: Record<string, Float64Array>;
before(async () => {
  const t = await loadTables('fp8_ref.safetensors');
  // Ascending non-negative values: a value's index is its magnitude code in these formats.
  GRIDS = { e2m1: E2M1_GRID, e4m3: Float64Array.from(t.grid_e4m3 as Float32Array), e5m2: Float64Array.from(t.grid_e5m2 as Float32Array) };
});

function bytesOf(a: Float32Array | Uint16Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function toBf16Bits(v: Float32Array): Uint16Array {
  const u = new Uint32Array(v.buffer, v.byteOffset, v.length);
  const out = new Uint16Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = ((u[i] + 0x7fff + ((u[i] >>> 16) & 1)) >>> 16) & 0xffff;
  return out;
}

function fromBf16Bits(b: Uint16Array): Float32Array {
  const u = new Uint32Array(b.length);
  for (let i = 0; i < b.length; i++) u[i] = b[i] << 16;
  return new Float32Array(u.buffer);
}

/** Trained-like weights with a zero row, a few signed zeros, as F32/F16/BF16 bytes plus the float32
 *  values the engine sees. */
function makeTensor(name: string, shape: number[], dtype: 'F32' | 'F16' | 'BF16', seed: number): { t: TensorData; x: Float32Array } {
  const cols = shape[shape.length - 1];
  const rows = shape.slice(0, -1).reduce((a, b) => a * b, 1);
  const w = trainedLike(rows, cols, { seed });
  w.fill(0, 5 * cols, 6 * cols); // an all-zero row: every block of it has s = 1 and zero error
  w[7] = -0;
  w[cols + 3] = 0;
  if (dtype === 'F32') return { t: { name, dtype, shape, data: bytesOf(w) }, x: w };
  if (dtype === 'F16') {
    const h = toFloat16Bits(w);
    return { t: { name, dtype, shape, data: bytesOf(h) }, x: fromFloat16Bits(h) };
  }
  const b = toBf16Bits(w);
  return { t: { name, dtype, shape, data: bytesOf(b) }, x: fromBf16Bits(b) };
}

function e4m3Value(code: number): number {
  const e = (code >> 3) & 0xf;
  const m = code & 7;
  return e === 0 ? m * 2 ** -9 : (1 + m / 8) * 2 ** (e - 7);
}

/** The element code stored for column c of row r. */
function codeAt(qt: QuantizedTensor, r: number, c: number): number {
  const base = r * qt.rowStride;
  if (qt.element === 'E2M1') return (qt.elements[base + (c >> 1)] >> ((c & 1) * 4)) & 0xf;
  return qt.elements[base + c];
}

/** Independent float32 reference of one element: its code and x̂. `p` is s (FP32) or d (encoded). */
function reference(x: number, p: number, encoded: boolean, grid: Float64Array, bits: number): { code: number; xhat: number } {
  const neg = x < 0 || Object.is(x, -0);
  const a = Math.abs(x);
  const y = encoded ? f32(a / p) : f32(a * p);
  const q = roundToGrid(y, grid);
  const idx = grid.indexOf(q);
  const mag = encoded ? f32(q * p) : f32(q / p);
  return { code: idx | (neg ? 1 << (bits - 1) : 0), xhat: neg ? -mag : mag };
}

function decodeScale(qt: QuantizedTensor, b: number): number {
  if (qt.scaleEncoding === 'fp32') return qt.scales[b];
  const c = qt.scales[b];
  return qt.scaleEncoding === 'e4m3_x_fp32' ? f32(e4m3Value(c) * qt.globalScale!) : 2 ** (c - 127);
}

/** Decodes an element code independently of the addon (bit fields, not tables). */
function decodeElement(code: number, elem: string): number {
  if (elem === 'e2m1') {
    const v = E2M1_GRID[code & 7];
    return code & 8 ? -v : v;
  }
  const [mb, bias] = elem === 'e4m3' ? [3, 7] : [2, 15];
  const e = (code >> mb) & (elem === 'e4m3' ? 0xf : 0x1f);
  const m = code & ((1 << mb) - 1);
  const v = e === 0 ? m * 2 ** (1 - bias - mb) : (1 + m / 2 ** mb) * 2 ** (e - bias);
  return code & 0x80 ? -v : v;
}

function sameBits(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) return i;
  return -1;
}

function scalesOf(tc: TensorCalibration): BlockScales {
  // The shape the profile store's readScales returns.
  return { scales: tc.scales, codes: tc.codes, global: tc.globalScale, rows: tc.rows, blocksPerRow: tc.blocksPerRow };
}

async function roundTrip(scheme: SchemeName, dtype: 'F32' | 'F16' | 'BF16', shape: number[], seed: number): Promise<void> {
  const { t, x } = makeTensor(`layer.${scheme}.weight`, shape, dtype, seed);
  const rows = shape.slice(0, -1).reduce((a, b) => a * b, 1);
  const cols = shape[shape.length - 1];
  const tc = await new QuantizationCalibrator({ format: scheme }).calibrateTensor(t, { threads: 2 });
  const res = tc.result;
  const bs = res.block_size;
  assert.ok(cols % bs !== 0, 'the last block of each row is partial');
  // The raw engine numbers for the chosen block size (deterministic: the same scales).
  const raw = await native().calibrate(t.data, { dtype, rows, cols, scheme, blockSize: bs, threads: 2, diagnostics: false });
  assert.deepEqual(raw.scales, tc.scales);

  const qt = await quantizeWithCalibration(t, res, scalesOf(tc), { threads: 2 });
  const xh = await dequantize(qt);

  // Σ (x − x̂)² here, in float64, equals the calibration's error sum.
  let sum = 0;
  for (let i = 0; i < x.length; i++) {
    const d = x[i] - xh[i];
    sum += d * d;
  }
  assert.ok(Math.abs(sum - raw.sumErrAfter) <= 1e-12 * raw.sumErrAfter, `Σ(x−x̂)² ${sum} vs calibration ${raw.sumErrAfter}`);
  // compute_mse sums in the calibration's order: the profile's mse_after exactly.
  assert.equal(await computeMse(t, qt), res.mse_after);
  assert.equal(qt.outlierCount, res.outlier_count);
  assert.equal(qt.outlierCount, raw.outliers);

  // Every element: the packed code and x̂ against the independent float32 reference.
  const elem = ELEM[scheme];
  const grid = GRIDS[elem];
  const bits = elem === 'e2m1' ? 4 : 8;
  const encoded = qt.scaleEncoding !== 'fp32';
  const bpr = Math.ceil(cols / bs);
  const ref = new Float32Array(x.length);
  let clipped = 0;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const p = decodeScale(qt, r * bpr + Math.floor(c / bs));
      const i = r * cols + c;
      const e = reference(x[i], p, encoded, grid, bits);
      ref[i] = e.xhat;
      const code = codeAt(qt, r, c);
      if (code !== e.code) assert.fail(`${scheme}/${dtype} [${r}, ${c}]: code ${code.toString(16)}, expected ${e.code.toString(16)} (x = ${x[i]})`);
      const dec = decodeElement(code, elem);
      const back = encoded ? f32(dec * p) : f32(dec / p);
      assert.ok(Object.is(back, xh[i]), `${scheme} [${r}, ${c}]: decoded code gives ${back}, dequantize ${xh[i]}`);
      if ((encoded ? f32(Math.abs(x[i]) / p) : f32(Math.abs(x[i]) * p)) > grid[grid.length - 1]) clipped++;
    }
  }
  assert.equal(sameBits(xh, ref), -1, `${scheme}/${dtype}: x̂ differs from the float32 reference`);
  assert.equal(clipped, res.outlier_count);

  // Layout: 64-byte row stride, rows × stride bytes, zero padding (and the E2M1 high nibble of an odd row).
  const rowBytes = bits === 4 ? Math.ceil(cols / 2) : cols;
  assert.equal(qt.rowStride % 64, 0);
  assert.ok(qt.rowStride >= rowBytes && qt.rowStride < rowBytes + 64);
  assert.equal(qt.elements.length, rows * qt.rowStride);
  for (let r = 0; r < rows; r++) {
    for (let k = rowBytes; k < qt.rowStride; k++) assert.equal(qt.elements[r * qt.rowStride + k], 0, `padding of row ${r}`);
    if (bits === 4 && cols % 2 === 1) assert.equal(qt.elements[r * qt.rowStride + rowBytes - 1] >> 4, 0);
  }
  assert.deepEqual(qt.shape, shape);
  assert.equal(qt.blockSize, bs);
  assert.equal(qt.scales.length, rows * bpr);
  if (encoded) assert.deepEqual(qt.scales, tc.codes);
  else assert.deepEqual(qt.scales, tc.scales);

  // The fused path gives the same bits.
  const fq = await fakeQuantize(t, res, scalesOf(tc), { threads: 1 });
  assert.equal(sameBits(fq, xh), -1, `${scheme}/${dtype}: fakeQuantize differs from dequantize(quantize)`);
}

describe('quantizeWithCalibration → dequantize gives the calibration\'s x̂', () => {
  for (const scheme of SCHEMES) {
    it(`${scheme}: F32 [37, 333] (odd rows, partial last block)`, async () => roundTrip(scheme, 'F32', [37, 333], 11));
  }
  for (const scheme of SCHEMES) {
    it(`${scheme}: F16 and BF16 inputs, 3-D shape [5, 7, 203]`, async () => {
      await roundTrip(scheme, 'F16', [5, 7, 203], 12);
      await roundTrip(scheme, 'BF16', [5, 7, 203], 13);
    });
  }

  it('accepts a TensorCalibration as the scales, and any thread count gives the same bytes', async () => {
    const { t } = makeTensor('w', [41, 517], 'F16', 3);
    const tc = await new QuantizationCalibrator({ format: 'nvfp4' }).calibrateTensor(t);
    const a = await quantizeWithCalibration(t, tc.result, tc, { threads: 1 });
    const b = await quantizeWithCalibration(t, tc.result, tc, { threads: 2 });
    assert.deepEqual(a.elements, b.elements);
    assert.equal(a.globalScale, tc.globalScale);
    assert.equal(a.outlierCount, tc.result.outlier_count);
  });

  it('long rows split across threads pack the same bytes (odd block size, E2M1 spans)', async () => {
    // 1 × 70001: longer than one span, so the row is cut into block-aligned, even-length pieces.
    const w = trainedLike(2, 70001, { seed: 9 });
    const t: TensorData = { name: 'long', dtype: 'F32', shape: [2, 70001], data: bytesOf(w) };
    const bs = 63;
    const c = await native().calibrate(t.data, { dtype: 'F32', rows: 2, cols: 70001, scheme: 'fp4', blockSize: bs, diagnostics: false });
    const spec = { format: 'fp4' as const, block_size: bs };
    const one = await quantizeWithCalibration(t, spec, { scales: c.scales }, { threads: 1 });
    const two = await quantizeWithCalibration(t, spec, { scales: c.scales }, { threads: 2 });
    assert.deepEqual(one.elements, two.elements);
    const xh = await dequantize(two);
    let sum = 0;
    for (let i = 0; i < w.length; i++) sum += (w[i] - xh[i]) ** 2;
    assert.ok(Math.abs(sum - c.sumErrAfter) <= 1e-12 * c.sumErrAfter);
    assert.equal(two.outlierCount, c.outliers);
  });
});

describe('packed codes, checked by hand', () => {
  const one = (values: number[]): TensorData => {
    const w = Float32Array.from(values);
    return { name: 'h', dtype: 'F32', shape: [1, values.length], data: bytesOf(w) };
  };

  it('fp4 (s = 1): nibbles low first, sign in bit 3, ties to even, saturation', async () => {
    // 0.5→1, −1→0xA, 6→7, 7→7 (clipped), −0.25→0x8 (tie to 0, keeps its sign), 2.5→4 (tie to 2),
    // 0.75→2 (tie to 1), −5→0xE (tie to 4), 3→5 (odd count: high nibble of the last byte is 0)
    const t = one([0.5, -1, 6, 7, -0.25, 2.5, 0.75, -5, 3]);
    const qt = await quantizeWithCalibration(t, { format: 'fp4', block_size: 64 }, { scales: Float32Array.of(1) });
    assert.deepEqual([...qt.elements.subarray(0, 6)], [0xa1, 0x77, 0x48, 0xe2, 0x05, 0]);
    assert.equal(qt.rowStride, 64);
    assert.equal(qt.outlierCount, 1);
    const xh = await dequantize(qt);
    assert.deepEqual([...xh], [0.5, -1, 6, 6, -0, 2, 1, -4, 3]);
    assert.ok(Object.is(xh[4], -0));
  });

  it('fp8_e4m3 and fp8_e5m2 (s = 1): one byte per element, the format\'s bit pattern', async () => {
    const e4 = await quantizeWithCalibration(one([448, -1, 2 ** -9, 500, -(2 ** -10), 0, 1.0625]), { format: 'fp8_e4m3', block_size: 32 }, { scales: Float32Array.of(1) });
    assert.deepEqual([...e4.elements.subarray(0, 7)], [0x7e, 0xb8, 0x01, 0x7e, 0x80, 0x00, 0x38]);
    assert.equal(e4.outlierCount, 1);
    const e5 = await quantizeWithCalibration(one([1, 57344, -(2 ** -16), 1.25, -3]), { format: 'fp8_e5m2', block_size: 32 }, { scales: Float32Array.of(1) });
    assert.deepEqual([...e5.elements.subarray(0, 5)], [0x3c, 0x7b, 0x81, 0x3d, 0xc2]);
    assert.deepEqual([...(await dequantize(e5))], [1, 57344, -(2 ** -16), 1.25, -3]);
  });

  it('fp4 with s = 2: x̂ = Q(x·s)/s', async () => {
    const qt = await quantizeWithCalibration(one([0.75, -1.4]), { format: 'fp4', block_size: 64 }, { scales: Float32Array.of(2) });
    // 1.5 → code 3; −2.8 → 3 (code 5) with the sign: 0xD
    assert.equal(qt.elements[0], 0xd3);
    assert.deepEqual([...(await dequantize(qt))], [0.75, -1.5]);
  });

  it('nvfp4 and MX: scale codes, decode scale d, x̂ = Q(x/d)·d', async () => {
    // NVFP4: code 0x38 = 1.0, g = 0.5 → d = 0.5; the stored multiplier is 1/d = 2.
    const nv = await quantizeWithCalibration(one([1.5, -0.25]), { format: 'nvfp4', block_size: 16 },
      { scales: Float32Array.of(2), codes: Uint8Array.of(0x38), global: 0.5 });
    assert.equal(nv.elements[0], 0x95); // 1.5/0.5 = 3 → code 5; −0.25/0.5 = −0.5 → 0x9
    assert.deepEqual([...(await dequantize(nv))], [1.5, -0.25]);
    assert.equal(nv.scaleEncoding, 'e4m3_x_fp32');
    assert.equal(nv.globalScale, 0.5);
    // MXFP4: code 128 → d = 2: 6 → 3 (code 5), −13 → −6.5 clipped to −6 (0xF).
    const mx = await quantizeWithCalibration(one([6, -13]), { format: 'mxfp4', block_size: 32 },
      { scales: Float32Array.of(0.5), codes: Uint8Array.of(128) });
    assert.equal(mx.elements[0], 0xf5);
    assert.equal(mx.outlierCount, 1);
    assert.deepEqual([...(await dequantize(mx))], [6, -12]);
    // MXFP8: code 127 → d = 1: −448 → 0xFE.
    const m8 = await quantizeWithCalibration(one([-448]), { format: 'mxfp8', block_size: 32 },
      { scales: Float32Array.of(1), codes: Uint8Array.of(127) });
    assert.equal(m8.elements[0], 0xfe);
    assert.deepEqual([...m8.scales], [127]);
  });
});

describe('bad input', () => {
  let t: TensorData;
  let tc: TensorCalibration;
  let nv: TensorCalibration;
  before(async () => {
    t = makeTensor('enc.weight', [9, 100], 'F32', 21).t;
    tc = await new QuantizationCalibrator({ format: 'fp4', block_sizes: [64] }).calibrateTensor(t);
    nv = await new QuantizationCalibrator({ format: 'nvfp4' }).calibrateTensor(t);
  });
  const code = (c: string, re?: RegExp) => (err: unknown) => {
    const e = err as { code?: string; message?: string };
    assert.equal(e.code, c, e.message);
    if (re) assert.match(e.message ?? '', re);
    return true;
  };

  it('scales whose shape does not match [rows, ceil(cols / block_size)]: E_BAD_PROFILE', async () => {
    await assert.rejects(quantizeWithCalibration(t, tc.result, { scales: tc.scales.subarray(1) }), code('E_BAD_PROFILE', /enc\.weight.*\[9, 2\]/));
    await assert.rejects(quantizeWithCalibration(t, tc.result, { ...scalesOf(tc), rows: 3, blocksPerRow: 6 }), code('E_BAD_PROFILE', /shape \[3, 6\]/));
    await assert.rejects(quantizeWithCalibration(t, { ...tc.result, block_size: 32 }, scalesOf(tc)), code('E_BAD_PROFILE'));
    await assert.rejects(quantizeWithCalibration(t, { ...tc.result, block_size: 0 }, scalesOf(tc)), code('E_BAD_PROFILE'));
  });

  it('a tensor that does not match its calibration result: E_BAD_ARGUMENT', async () => {
    const t2 = { ...t, shape: [10, 90] };
    await assert.rejects(quantizeWithCalibration(t2, tc.result, scalesOf(tc)), code('E_BAD_ARGUMENT', /\[10, 90\].*\[9, 100\]/));
    await assert.rejects(quantizeWithCalibration({ ...t, name: 'other' }, tc.result, scalesOf(tc)), code('E_BAD_ARGUMENT', /enc\.weight/));
    await assert.rejects(quantizeWithCalibration({ ...t, data: t.data.subarray(4) }, tc.result, scalesOf(tc)), code('E_BAD_ARGUMENT', /bytes/));
    await assert.rejects(quantizeWithCalibration({ ...t, dtype: 'I8' }, tc.result, scalesOf(tc)), code('E_UNSUPPORTED_DTYPE'));
    await assert.rejects(quantizeWithCalibration(t, { ...tc.result, format: 'int4' } as unknown as CalibrationResult, scalesOf(tc)), code('E_BAD_FORMAT'));
    const empty = { name: 'e', dtype: 'F32', shape: [0, 64], data: new Uint8Array(0) };
    await assert.rejects(quantizeWithCalibration(empty, { format: 'fp4', block_size: 64 }, { scales: new Float32Array(0) }), code('E_EMPTY_TENSOR'));
  });

  it('invalid scales and codes: E_BAD_PROFILE naming the block', async () => {
    for (const bad of [NaN, 0, -1, Infinity]) {
      const s = tc.scales.slice();
      s[3] = bad;
      await assert.rejects(quantizeWithCalibration(t, tc.result, { scales: s }), code('E_BAD_PROFILE', /block \[1, 1\]/));
    }
    await assert.rejects(quantizeWithCalibration(t, nv.result, { scales: nv.scales, global: nv.globalScale }), code('E_BAD_PROFILE', /codes/));
    await assert.rejects(quantizeWithCalibration(t, { ...nv.result, global_scale: undefined }, { scales: nv.scales, codes: nv.codes }), code('E_BAD_PROFILE', /global/));
    await assert.rejects(quantizeWithCalibration(t, nv.result, { ...scalesOf(nv), global: 0.25 }), code('E_BAD_PROFILE', /global/));
    const zero = nv.codes!.slice();
    zero[2] = 0;
    await assert.rejects(quantizeWithCalibration(t, nv.result, { ...scalesOf(nv), codes: zero }), code('E_BAD_PROFILE', /code 0 at block \[0, 2\]/));
    const changed = nv.codes!.slice();
    changed[5] ^= 1;
    await assert.rejects(quantizeWithCalibration(t, nv.result, { ...scalesOf(nv), codes: changed }), code('E_BAD_PROFILE', /disagree at block \[0, 5\]/));
    const mx = await new QuantizationCalibrator({ format: 'mxfp4' }).calibrateTensor(t);
    const nan = mx.codes!.slice();
    nan[4] = 255;
    await assert.rejects(quantizeWithCalibration(t, mx.result, { scales: mx.scales, codes: nan }), code('E_BAD_PROFILE', /255/));
  });

  it('non-finite weights: E_NONFINITE, unless the calibration excluded them (then x̂ = 0)', async () => {
    const w = new Float32Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength));
    w[250] = NaN;
    const tn = { ...t, data: bytesOf(w) };
    await assert.rejects(quantizeWithCalibration(tn, tc.result, scalesOf(tc)), code('E_NONFINITE', /flat index 250/));
    const tcn = await new QuantizationCalibrator({ format: 'fp4', block_sizes: [64], allow_nonfinite: true }).calibrateTensor(tn);
    assert.equal(tcn.result.nonfinite_excluded, 1);
    const qt = await quantizeWithCalibration(tn, tcn.result, scalesOf(tcn));
    const xh = await dequantize(qt);
    assert.equal(xh[250], 0);
    assert.equal(await computeMse(tn, qt), tcn.result.mse_after);
  });

  it('a damaged QuantizedTensor: E_BAD_ARGUMENT, never a crash', async () => {
    const qt = await quantizeWithCalibration(t, tc.result, scalesOf(tc));
    await assert.rejects(dequantize({ ...qt, elements: qt.elements.subarray(0, qt.elements.length - 1) }), code('E_BAD_ARGUMENT', /elements hold/));
    await assert.rejects(dequantize({ ...qt, rowStride: 32, elements: new Uint8Array(9 * 32) }), code('E_BAD_ARGUMENT', /rowStride 32/));
    await assert.rejects(dequantize({ ...qt, scales: new Uint8Array(18) }), code('E_BAD_ARGUMENT', /Float32Array/));
    await assert.rejects(dequantize({ ...qt, shape: [9, 101] }), code('E_BAD_ARGUMENT'));
    await assert.rejects(computeMse({ ...t, shape: [900] }, qt), code('E_BAD_ARGUMENT'));
  });

  it('the addon checks what it is given', async () => {
    const o = { dtype: 'F32' as const, rows: 4, cols: 64, scheme: 'fp4' as const, blockSize: 64, scales: new Float32Array(4).fill(1) };
    await assert.rejects(async () => native().quantize(new Uint8Array(100), o), code('E_BAD_ARGUMENT'));
    await assert.rejects(async () => native().quantize(new Uint8Array(1024), { ...o, blockSize: 5000 }), code('E_BAD_BLOCK_SIZE'));
    await assert.rejects(async () => native().quantize(new Uint8Array(1024), { ...o, scales: undefined }), code('E_BAD_PROFILE'));
    await assert.rejects(async () => native().fakeQuantize(new Uint8Array(1024), { ...o, scales: new Float32Array(3).fill(1) }), code('E_BAD_PROFILE'));
    await assert.rejects(async () => native().dequantize(new Uint8Array(100), { ...o, rowStride: 64 }), code('E_BAD_ARGUMENT'));
    await assert.rejects(async () => native().quantizedError(new Uint8Array(1024), new Uint8Array(256), { ...o, rowStride: 2 ** 60 }), code('E_BAD_ARGUMENT'));
  });
});
