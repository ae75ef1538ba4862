// Quantized tensors: the specification's quantize_with_calibration(tensor, result) → QuantizedTensor,
// its inverse, a fused fake-quantize for semantic validation, and compute_mse on a QuantizedTensor.
//
// x̂ is exactly the one the profile's metrics were computed from (docs/numerics.md, "Scales"):
// Q(x·s)/s for FP32 scales, Q(x/d)·d with d = E4M3(code)·g (NVFP4) or 2^(code−127) (MX).
//
// Layout of `elements`: row r (the tensor viewed as rows × cols) starts at byte r·rowStride;
// rowStride is the packed row rounded up to a multiple of 64 bytes, and padding bytes are zero.
// E2M1: two codes per byte, even column in the low nibble, sign in bit 3. E4M3/E5M2: one byte per
// element, the format's bit pattern. "64-byte aligned" means, for these JS arrays: every row starts
// at a multiple of 64 bytes from the first byte of the `elements` view, and the addon places that
// first byte at a 64-byte aligned address (its ArrayBuffer may be larger and `byteOffset` non-zero;
// always go through the view, or copy it to an aligned offset of a file, keeping rows aligned).
import type { TensorCalibration, TensorData } from '../calibration/tensor_calibration.js';
import { rowsCols } from '../calibration/tensor_calibration.js';
import { SCHEMES, type SchemeSpec } from '../calibration/schemes.js';
import type { CalibrationResult, QuantFormat, ScaleEncoding } from '../calibration/types.js';
import { native, type NativeDType, type NativeQuantOptions } from '../native/index.js';
import { CalibscopeError, asCalibscopeError } from '../util/errors.js';

export interface QuantizedTensor {
  name: string;
  format: QuantFormat;
  /** Element format of the codes. */
  element: 'E2M1' | 'E4M3' | 'E5M2';
  shape: number[];
  /** The tensor viewed as rows × cols (cols: the last dimension). */
  rows: number;
  cols: number;
  blockSize: number;
  /** ceil(cols / blockSize): scales are rows × blocksPerRow, row-major. */
  blocksPerRow: number;
  /** Bytes from one row's codes to the next: a multiple of 64. */
  rowStride: number;
  /** rows × rowStride bytes of packed element codes. */
  elements: Uint8Array;
  scaleEncoding: ScaleEncoding;
  /** fp32: the multipliers s (Float32Array); e4m3_x_fp32: E4M3 bytes; ue8m0: biased exponents. */
  scales: Float32Array | Uint8Array;
  /** NVFP4: the per-tensor FP32 decode scale g. */
  globalScale?: number;
  /** Elements clipped at ±max (|x·s| > max): equals the calibration's outlier_count. */
  outlierCount: number;
}

/** A tensor's block scales as the profile store returns them (readScales) or as a TensorCalibration
 *  holds them: `scales` are the multipliers s; encoded schemes also need `codes` (and NVFP4 `global`). */
export interface BlockScales {
  scales: Float32Array;
  codes?: Uint8Array;
  global?: number;
  /** TensorCalibration's name for `global`. */
  globalScale?: number;
  rows?: number;
  blocksPerRow?: number;
}

/** What quantizing needs from a CalibrationResult; a whole result fits. Given fields are checked
 *  against the tensor; `nonfinite_excluded` > 0 zeroes NaN/Inf as the search excluded them. */
export type QuantizeSpec = Pick<CalibrationResult, 'format' | 'block_size'> &
  Partial<Pick<CalibrationResult, 'tensor_name' | 'shape' | 'nonfinite_excluded' | 'global_scale'>>;

export interface QuantizeOptions {
  /** Worker threads (0 or absent: all hardware threads). */
  threads?: number;
  /** Names the file in error messages. */
  source?: string;
}

const DTYPES: readonly string[] = ['F32', 'F16', 'BF16'];

function fail(code: 'E_BAD_ARGUMENT' | 'E_BAD_PROFILE' | 'E_UNSUPPORTED_DTYPE' | 'E_EMPTY_TENSOR' | 'E_BAD_FORMAT',
  where: string, message: string, details: Record<string, unknown> = {}): never {
  throw new CalibscopeError(code, `${where}: ${message}`, details);
}

function shapeText(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

function schemeOf(format: string, where: string): SchemeSpec {
  const s = (SCHEMES as Record<string, SchemeSpec | undefined>)[format];
  if (!s) fail('E_BAD_FORMAT', where, `unknown format "${format}": expected one of ${Object.keys(SCHEMES).join(', ')}`, { format });
  return s;
}

function checkShape(shape: unknown, where: string): { rows: number; cols: number } {
  if (!Array.isArray(shape) || shape.length === 0 || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    fail('E_BAD_ARGUMENT', where, `shape must be a list of non-negative integers with at least one dimension, got ${JSON.stringify(shape)}`);
  }
  const rc = rowsCols(shape);
  if (rc.rows * rc.cols === 0) fail('E_EMPTY_TENSOR', where, `the tensor is empty (shape ${shapeText(shape)})`);
  return rc;
}

/** The E4M3 value of a scale code (codes 1..126 are the positive finite values). */
function e4m3Value(code: number): number {
  const e = (code >> 3) & 0xf;
  const m = code & 7;
  return e === 0 ? m * 2 ** -9 : (1 + m / 8) * 2 ** (e - 7);
}

interface Prepared {
  scheme: SchemeSpec;
  rows: number;
  cols: number;
  blocksPerRow: number;
  options: NativeQuantOptions;
  where: string;
}

function prepare(tensor: TensorData, result: QuantizeSpec, scales: BlockScales | TensorCalibration, opts: QuantizeOptions): Prepared {
  const name = tensor?.name ?? '<unnamed>';
  const where = `${opts.source ?? '<memory>'}: tensor ${name}`;
  if (!result || typeof result !== 'object') fail('E_BAD_ARGUMENT', where, 'no calibration result given');
  const scheme = schemeOf(String(result.format), where);
  if (!DTYPES.includes(tensor.dtype)) {
    fail('E_UNSUPPORTED_DTYPE', where, `dtype ${tensor.dtype} cannot be quantized (F32, F16 or BF16)`, { dtype: tensor.dtype });
  }
  const { rows, cols } = checkShape(tensor.shape, where);
  const elemBytes = tensor.dtype === 'F32' ? 4 : 2;
  if (!(tensor.data instanceof Uint8Array) || tensor.data.byteLength !== rows * cols * elemBytes) {
    fail('E_BAD_ARGUMENT', where, `data holds ${tensor.data?.byteLength ?? 0} bytes, shape ${shapeText(tensor.shape)} × ${tensor.dtype} needs ${rows * cols * elemBytes}`);
  }
  if (result.tensor_name !== undefined && result.tensor_name !== tensor.name) {
    fail('E_BAD_ARGUMENT', where, `the calibration result is for tensor ${result.tensor_name}`, { result_tensor: result.tensor_name });
  }
  if (result.shape !== undefined && !sameShape(result.shape, tensor.shape)) {
    fail('E_BAD_ARGUMENT', where, `shape ${shapeText(tensor.shape)} does not match the calibration result's ${shapeText(result.shape)}`, {
      shape: tensor.shape,
      result_shape: result.shape,
    });
  }
  const bs = result.block_size;
  if (!Number.isInteger(bs) || bs < 1 || bs > 4096) fail('E_BAD_PROFILE', where, `block size ${bs} is not an integer in 1..4096`);
  const blocksPerRow = Math.ceil(cols / bs);
  const blocks = rows * blocksPerRow;
  const need = `[${rows}, ${blocksPerRow}] (block size ${bs})`;
  if (!scales || !(scales.scales instanceof Float32Array)) fail('E_BAD_PROFILE', where, 'no per-block scales (a Float32Array) given');
  if ((scales.rows !== undefined && scales.rows !== rows) || (scales.blocksPerRow !== undefined && scales.blocksPerRow !== blocksPerRow)) {
    fail('E_BAD_PROFILE', where, `scales have shape [${scales.rows ?? '?'}, ${scales.blocksPerRow ?? '?'}], the tensor needs ${need}`);
  }
  if (scales.scales.length !== blocks) {
    fail('E_BAD_PROFILE', where, `scales hold ${scales.scales.length} values, the tensor needs ${need} = ${blocks}`);
  }
  const options: NativeQuantOptions = {
    dtype: tensor.dtype as NativeDType,
    rows,
    cols,
    scheme: scheme.name,
    blockSize: bs,
    threads: opts.threads ?? 0,
    allowNonfinite: (result.nonfinite_excluded ?? 0) > 0,
  };
  if (scheme.scaleEncoding === 'fp32') {
    options.scales = scales.scales;
  } else {
    const codes = scales.codes;
    if (!(codes instanceof Uint8Array)) fail('E_BAD_PROFILE', where, `${scheme.name} needs per-block scale codes (<name>:codes), none given`);
    if (codes.length !== blocks) fail('E_BAD_PROFILE', where, `scale codes hold ${codes.length} values, the tensor needs ${need} = ${blocks}`);
    let g = 1;
    if (scheme.scaleEncoding === 'e4m3_x_fp32') {
      const given = 'global' in scales && scales.global !== undefined ? scales.global : scales.globalScale;
      g = given ?? result.global_scale ?? NaN;
      if (!(g > 0) || !Number.isFinite(g) || Math.fround(g) !== g) {
        fail('E_BAD_PROFILE', where, `nvfp4 needs a positive finite FP32 global scale (<name>:global), got ${given ?? 'none'}`);
      }
      if (result.global_scale !== undefined && result.global_scale !== g) {
        fail('E_BAD_PROFILE', where, `global scale ${g} disagrees with the calibration result's ${result.global_scale}`);
      }
      options.globalScale = g;
    }
    // The stored multipliers are 1/d in float32: a disagreement means a damaged or mixed-up profile.
    for (let b = 0; b < blocks; b++) {
      const c = codes[b];
      if (scheme.scaleEncoding === 'e4m3_x_fp32' ? c === 0 || c > 126 : c === 255) continue; // the addon names the bad code
      const d = scheme.scaleEncoding === 'e4m3_x_fp32' ? Math.fround(e4m3Value(c) * g) : 2 ** (c - 127);
      if (Math.fround(1 / d) !== scales.scales[b]) {
        fail('E_BAD_PROFILE', where, `scale ${scales.scales[b]} and code ${c} disagree at block [${Math.floor(b / blocksPerRow)}, ${b % blocksPerRow}] (1/d = ${Math.fround(1 / d)})`);
      }
    }
    options.codes = codes;
  }
  return { scheme, rows, cols, blocksPerRow, options, where };
}

function nativeFailure(err: unknown, where: string): CalibscopeError {
  const e = asCalibscopeError(err);
  let message = `${where}: ${e.message}`;
  if (e.code === 'E_NONFINITE') message += ' (the calibration did not exclude non-finite values)';
  return new CalibscopeError(e.code, message, { ...e.details });
}

/** Packs a tensor with its calibrated block scales: the specification's quantize_with_calibration. */
export async function quantizeWithCalibration(
  tensor: TensorData,
  result: QuantizeSpec,
  scales: BlockScales | TensorCalibration,
  opts: QuantizeOptions = {},
): Promise<QuantizedTensor> {
  const p = prepare(tensor, result, scales, opts);
  let r;
  try {
    r = await native().quantize(tensor.data, p.options);
  } catch (err) {
    throw nativeFailure(err, p.where);
  }
  const qt: QuantizedTensor = {
    name: tensor.name,
    format: p.scheme.name,
    element: p.scheme.element,
    shape: [...tensor.shape],
    rows: p.rows,
    cols: p.cols,
    blockSize: p.options.blockSize,
    blocksPerRow: p.blocksPerRow,
    rowStride: r.rowStride,
    elements: r.elements,
    scaleEncoding: p.scheme.scaleEncoding,
    scales: r.scales,
    outlierCount: r.outliers,
  };
  if (r.globalScale !== undefined) qt.globalScale = r.globalScale;
  return qt;
}

/** x̂ of a tensor under its calibrated scales, without packing (for semantic validation):
 *  bit-identical to dequantize(await quantizeWithCalibration(...)). */
export async function fakeQuantize(
  tensor: TensorData,
  result: QuantizeSpec,
  scales: BlockScales | TensorCalibration,
  opts: QuantizeOptions = {},
): Promise<Float32Array> {
  const p = prepare(tensor, result, scales, opts);
  try {
    return await native().fakeQuantize(tensor.data, p.options);
  } catch (err) {
    throw nativeFailure(err, p.where);
  }
}

function quantizedOptions(qt: QuantizedTensor, where: string): Omit<NativeQuantOptions, 'dtype'> & { rowStride: number } {
  const scheme = schemeOf(String(qt?.format), where);
  const { rows, cols } = checkShape(qt.shape, where);
  if (qt.rows !== undefined && (qt.rows !== rows || qt.cols !== cols)) {
    fail('E_BAD_ARGUMENT', where, `rows × cols ${qt.rows} × ${qt.cols} do not match shape ${shapeText(qt.shape)}`);
  }
  if (qt.scaleEncoding !== undefined && qt.scaleEncoding !== scheme.scaleEncoding) {
    fail('E_BAD_ARGUMENT', where, `scale encoding ${qt.scaleEncoding} does not belong to ${scheme.name} (${scheme.scaleEncoding})`);
  }
  const o: Omit<NativeQuantOptions, 'dtype'> & { rowStride: number } = {
    rows,
    cols,
    scheme: scheme.name,
    blockSize: qt.blockSize,
    rowStride: qt.rowStride,
  };
  if (scheme.scaleEncoding === 'fp32') {
    if (!(qt.scales instanceof Float32Array)) fail('E_BAD_ARGUMENT', where, `${scheme.name} scales must be a Float32Array`);
    o.scales = qt.scales;
  } else {
    if (!(qt.scales instanceof Uint8Array)) fail('E_BAD_ARGUMENT', where, `${scheme.name} scale codes must be a Uint8Array`);
    o.codes = qt.scales;
    if (scheme.scaleEncoding === 'e4m3_x_fp32') o.globalScale = qt.globalScale;
  }
  return o;
}

/** Decodes a QuantizedTensor to float32 (rows·cols values, row-major): exactly the x̂ the
 *  calibration scored. */
export async function dequantize(qt: QuantizedTensor, opts: QuantizeOptions = {}): Promise<Float32Array> {
  const where = `${opts.source ?? '<memory>'}: quantized tensor ${qt?.name ?? '<unnamed>'}`;
  const o = quantizedOptions(qt, where);
  try {
    return await native().dequantize(qt.elements, { ...o, threads: opts.threads ?? 0 });
  } catch (err) {
    throw nativeFailure(err, where);
  }
}

export interface QuantizationError {
  /** Σ (x − x̂)² in float64, summed in the calibration's order (equal to its sum bit for bit). */
  sumSquaredError: number;
  /** Elements in the sum: non-finite originals are left out, as the calibration leaves them out. */
  counted: number;
  nonfinite: number;
  /** sumSquaredError / counted (0 when nothing is counted). */
  mse: number;
}

/** Squared error between the original tensor and a QuantizedTensor of it. */
export async function quantizationError(original: TensorData, qt: QuantizedTensor, opts: QuantizeOptions = {}): Promise<QuantizationError> {
  const where = `${opts.source ?? '<memory>'}: tensor ${original?.name ?? '<unnamed>'}`;
  const o = quantizedOptions(qt, where);
  if (!DTYPES.includes(original.dtype)) {
    fail('E_UNSUPPORTED_DTYPE', where, `dtype ${original.dtype} is not F32, F16 or BF16`, { dtype: original.dtype });
  }
  if (!sameShape(original.shape, qt.shape)) {
    fail('E_BAD_ARGUMENT', where, `shape ${shapeText(original.shape)} does not match the quantized tensor's ${shapeText(qt.shape)}`);
  }
  try {
    const r = await native().quantizedError(original.data, qt.elements, {
      ...o,
      dtype: original.dtype as NativeDType,
      threads: opts.threads ?? 0,
    });
    return { ...r, mse: r.counted > 0 ? r.sumSquaredError / r.counted : 0 };
  } catch (err) {
    throw nativeFailure(err, where);
  }
}

/** The specification's compute_mse(original, quantized): mean of (x − x̂)² over the original's
 *  finite elements. With the calibration's own scales it equals the result's mse_after exactly. */
export async function computeMse(original: TensorData, qt: QuantizedTensor, opts: QuantizeOptions = {}): Promise<number> {
  return (await quantizationError(original, qt, opts)).mse;
}
