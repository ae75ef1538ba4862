// One tensor: run the native search for every candidate block size, then pick one by policy.
import { native, type NativeBackend, type NativeCalibrateOutput, type NativeCalibrateResult, type NativeDType } from '../native/index.js';
import { fakeQuantize } from '../quantize/index.js';
import { toFloat32 } from '../semantic/model.js';
import { CalibscopeError, asCalibscopeError } from '../util/errors.js';
import { resolveBackend, type BackendChoice } from './backend.js';
import type { TensorWeighting } from './modes.js';
import { bitsPerWeight, improvementRatio, schemeFor, type SchemeSpec } from './schemes.js';
import type { BlockPolicy, BlockSizeTrial, CalibrationConfig, CalibrationResult } from './types.js';

export interface TensorData {
  name: string;
  dtype: string;
  shape: number[];
  /** Raw little-endian element bytes (F32, F16 or BF16). */
  data: Uint8Array;
}

/** A calibration with its per-block arrays (rows × blocksPerRow, row-major). */
export interface TensorCalibration {
  result: CalibrationResult;
  rows: number;
  blocksPerRow: number;
  scales: Float32Array;
  codes?: Uint8Array;
  globalScale?: number;
  blockMseBefore?: Float32Array;
  blockMseAfter?: Float32Array;
  blockOutliers?: Uint16Array;
  /** The backend that ran the search (absent where the arrays were read back from a profile). */
  backend?: NativeBackend;
}

export interface RunOptions {
  /** CPU backend: worker threads (default: all cores); the CUDA backend does not use them. */
  threads?: number;
  /** Where the search runs: a resolved backend, or a choice resolved here (default: config.backend). */
  backend?: BackendChoice | NativeBackend;
  diagnostics?: boolean;
  signal?: AbortSignal;
  /** Called with the fraction of this tensor's work done (0..1), a few times a second. */
  onProgress?: (fraction: number) => void;
  /** Weighted modes (modes.ts): the search minimizes Σ r_i c_j (x − x̂)²; the result reports it as objective_*. */
  weighting?: TensorWeighting;
}

export function rowsCols(shape: readonly number[]): { rows: number; cols: number } {
  if (shape.length === 0) return { rows: 1, cols: 1 };
  const cols = shape[shape.length - 1];
  const rows = shape.slice(0, -1).reduce((a, b) => a * b, 1);
  return { rows, cols };
}

/** Chooses among block-size trials: `min-mse` takes the least MSE (ties: the larger block);
 *  `bits` takes the largest block whose MSE is within `tolerance` of the least. */
export function chooseBlockSize(trials: readonly BlockSizeTrial[], policy: BlockPolicy, tolerance: number): number {
  if (trials.length === 0) throw new CalibscopeError('E_INTERNAL', 'no block size was tried');
  // Weighted modes compare the weighted objective, the quantity their search minimized.
  const obj = (t: BlockSizeTrial) => t.objective_after ?? t.mse_after;
  const best = Math.min(...trials.map(obj));
  if (policy === 'min-mse') {
    return Math.max(...trials.filter((t) => obj(t) === best).map((t) => t.block_size));
  }
  const limit = best * (1 + tolerance);
  return Math.max(...trials.filter((t) => obj(t) <= limit).map((t) => t.block_size));
}

/** A typed array of its own, not zero-filled: the engine writes every element. */
function unfilled<T>(make: new (buffer: ArrayBuffer, byteOffset: number, length: number) => T, bytesPer: number, n: number): T {
  const b = Buffer.allocUnsafeSlow(n * bytesPer);
  return new make(b.buffer, b.byteOffset, n);
}

/** The per-block arrays the engine writes its results into (NativeCalibrateOptions.output): filled
 *  by the threads that compute them, instead of copied on this thread afterwards. */
function outputArrays(blocks: number, codes: boolean, diagnostics: boolean): NativeCalibrateOutput {
  return {
    scales: unfilled(Float32Array, 4, blocks),
    codes: codes ? unfilled(Uint8Array, 1, blocks) : undefined,
    blockMseBefore: diagnostics ? unfilled(Float32Array, 4, blocks) : undefined,
    blockMseAfter: diagnostics ? unfilled(Float32Array, 4, blocks) : undefined,
    blockOutliers: diagnostics ? unfilled(Uint16Array, 2, blocks) : undefined,
  };
}

async function runNative(
  t: TensorData,
  scheme: SchemeSpec,
  blockSize: number,
  config: CalibrationConfig,
  opts: RunOptions,
  progress: (done: number) => void,
  backend: NativeBackend,
  search = config.search,
): Promise<NativeCalibrateResult> {
  const { rows, cols } = rowsCols(t.shape);
  const control = new Int32Array(2);
  const onAbort = () => Atomics.store(control, 0, 1);
  opts.signal?.addEventListener('abort', onAbort);
  if (opts.signal?.aborted) onAbort();
  const timer = setInterval(() => progress(Atomics.load(control, 1)), 100);
  const diagnostics = search === config.search ? (opts.diagnostics ?? true) : false;
  try {
    return await native().calibrate(t.data, {
      dtype: t.dtype as NativeDType,
      rows,
      cols,
      scheme: scheme.name,
      blockSize,
      search,
      threads: opts.threads ?? 0,
      allowNonfinite: config.allow_nonfinite,
      diagnostics,
      control,
      output: outputArrays(rows * Math.ceil(cols / blockSize), scheme.scaleEncoding !== 'fp32', diagnostics),
      columnWeights: opts.weighting?.columns,
      columnMeans: opts.weighting?.columns ? opts.weighting?.means : undefined,
      backend,
    });
  } finally {
    clearInterval(timer);
    opts.signal?.removeEventListener('abort', onAbort);
  }
}

function describeNativeError(err: unknown, t: TensorData, source: string, backend: NativeBackend): CalibscopeError {
  const e = asCalibscopeError(err);
  const details: Record<string, unknown> = { ...e.details, tensor: t.name, file: source };
  if (e.code === 'E_CUDA') {
    // The addon knows what failed (out of memory, a launch); only this level knows the tensor.
    details.backend = backend;
    return new CalibscopeError('E_CUDA', `${source}: tensor ${t.name} [${t.shape.join(', ')}] on the ${backend} backend: ${e.message}`, details);
  }
  let message = e.message;
  if (e.code === 'E_NONFINITE') {
    const m = /(\d+) non-finite.*flat index (\d+)/.exec(e.message);
    if (m) {
      const { cols } = rowsCols(t.shape);
      const flat = Number(m[2]);
      details.count = Number(m[1]);
      details.first_index = flat;
      details.first_position = [Math.floor(flat / cols), flat % cols];
      message = `${source}: tensor ${t.name} has ${m[1]} non-finite value(s) (NaN/Inf), first at [${Math.floor(flat / cols)}, ${flat % cols}]; use --allow-nonfinite to exclude them`;
    }
  } else if (e.code !== 'E_CANCELLED') {
    message = `${source}: tensor ${t.name}: ${e.message}`;
  }
  return new CalibscopeError(e.code, message, details);
}

/**
 * Σ_i r_i (Σ_j c_j (x_ij − x̂_ij)² + Σ_blocks (Σ_j μ_j (x_ij − x̂_ij))²) with the naive and with the calibrated scales, for weightings with
 * row weights (entropy-aware query/key/value). A row weight is constant within every block, so the
 * search's scales are already optimal for it; only the reported sum needs it. Summed in float64,
 * row by row.
 */
async function rowWeightedObjective(
  t: TensorData,
  scheme: SchemeSpec,
  blockSize: number,
  r: NativeCalibrateResult,
  config: CalibrationConfig,
  opts: RunOptions,
  backend: NativeBackend,
): Promise<{ before: number; after: number }> {
  const w = opts.weighting!;
  const { rows, cols } = rowsCols(t.shape);
  const naive = await runNative(t, scheme, blockSize, config, opts, () => undefined, backend, 'naive');
  const spec = { format: scheme.name, block_size: blockSize, nonfinite_excluded: r.nonfinite };
  const scalesOf = (x: NativeCalibrateResult) => ({ scales: x.scales, codes: x.codes, global: x.globalDecode });
  const x = toFloat32(t.data, t.dtype, rows * cols);
  const sum = (xhat: Float32Array) => {
    let total = 0;
    for (let i = 0; i < rows; i++) {
      let row = 0;
      let bias = 0;
      for (let j = 0; j < cols; j++) {
        const v = x[i * cols + j];
        if (Number.isFinite(v)) {
          const d = v - xhat[i * cols + j];
          row += (w.columns ? w.columns[j] : 1) * d * d;
          if (w.means) bias += w.means[j] * d;
        }
        // The bias term (Σ_j μ_j Δ_j)² is per block.
        if (w.means && ((j + 1) % blockSize === 0 || j === cols - 1)) {
          row += bias * bias;
          bias = 0;
        }
      }
      total += (w.rows ? w.rows[i] : 1) * row;
    }
    return total;
  };
  const q = { threads: opts.threads };
  return {
    before: sum(await fakeQuantize(t, spec, scalesOf(naive), q)),
    after: sum(await fakeQuantize(t, spec, scalesOf(r), q)),
  };
}

/** With the exact search and FP32 scales, splitting a block never raises its least error: each half
 *  can still use the whole block's best scale. (In real arithmetic: evaluated in float32, a larger
 *  size can come out lower by float32 rounding of x̂, parts in 1e9; the smallest is still kept, as
 *  docs/numerics.md says.) So under `min-mse` the smallest block size wins and
 *  larger ones need no evaluation, except to break an exact tie (a zero error), where the policy
 *  prefers the larger block. (Encoded scales are left to the grid: NVFP4's global scale and the
 *  scale grids make no such guarantee worth relying on, and they search one size anyway.) */
function smallestBlockWins(config: CalibrationConfig, scheme: SchemeSpec, weighting?: TensorWeighting): boolean {
  // Not with input means: the bias term (Σ_j∈block μ_j Δ_j)² is per block, so a split block is
  // scored by another objective (S1² + S2² instead of (S1 + S2)²), which can be higher.
  if (weighting?.means) return false;
  return config.search === 'exact' && config.block_policy === 'min-mse' && scheme.scaleEncoding === 'fp32';
}

/** Calibrates one tensor over the config's block sizes. `source` names the file in messages. */
export async function calibrateTensorData(
  t: TensorData,
  config: CalibrationConfig,
  opts: RunOptions = {},
  source = '<memory>',
): Promise<TensorCalibration> {
  const scheme = schemeFor(config.format);
  const { rows, cols } = rowsCols(t.shape);
  const numel = rows * cols;
  if (numel === 0) {
    throw new CalibscopeError('E_EMPTY_TENSOR', `${source}: tensor ${t.name} is empty (shape [${t.shape.join(', ')}])`, {
      tensor: t.name,
      file: source,
    });
  }
  const backend = resolveBackend(opts.backend ?? config.backend);
  const sizes = config.block_sizes;
  // Progress in blocks over all block sizes of this tensor.
  const expected = smallestBlockWins(config, scheme, opts.weighting) ? sizes.slice(0, 1) : sizes;
  const totalBlocks = expected.reduce((acc, b) => acc + rows * Math.ceil(cols / b), 0);
  let doneBefore = 0;
  const trials: { size: number; r: NativeCalibrateResult; objBefore: number; objAfter: number }[] = [];
  const dominated: number[] = [];
  const weighted = opts.weighting !== undefined && opts.weighting.kind !== 'none';
  for (const size of sizes) {
    const first = trials[0];
    // The dominance holds for any non-negative weights (each half can still use the whole block's
    // scale); an exact tie is then a zero weighted objective.
    if (first && smallestBlockWins(config, scheme, opts.weighting) && (weighted ? first.objAfter : first.r.sumErrAfter) > 0) {
      dominated.push(size);
      continue;
    }
    let r: NativeCalibrateResult;
    try {
      r = await runNative(t, scheme, size, config, opts, (d) => opts.onProgress?.(Math.min(1, (doneBefore + d) / totalBlocks)), backend);
    } catch (err) {
      throw describeNativeError(err, t, source, backend);
    }
    let objBefore = r.sumErrBefore;
    let objAfter = r.sumErrAfter;
    if (weighted && opts.weighting!.rows) {
      try {
        ({ before: objBefore, after: objAfter } = await rowWeightedObjective(t, scheme, size, r, config, opts, backend));
      } catch (err) {
        throw describeNativeError(err, t, source, backend);
      }
    } else if (weighted) {
      objBefore = r.sumObjBefore ?? r.sumErrBefore;
      objAfter = r.sumObjAfter ?? r.sumErrAfter;
    }
    doneBefore += rows * Math.ceil(cols / size);
    opts.onProgress?.(Math.min(1, doneBefore / totalBlocks));
    trials.push({ size, r, objBefore, objAfter });
  }
  const mse = (r: NativeCalibrateResult) => (r.counted > 0 ? r.sumErrAfter / r.counted : 0);
  const perElement = (sum: number, r: NativeCalibrateResult) => (r.counted > 0 ? sum / r.counted : 0);
  const tried: BlockSizeTrial[] = trials.map(({ size, r, objAfter }) => ({
    block_size: size,
    mse_after: mse(r),
    bits_per_weight: bitsPerWeight(scheme, size, rows, cols),
    ...(opts.weighting && { objective_after: perElement(objAfter, r) }),
  }));
  const chosen = chooseBlockSize(tried, config.block_policy, config.bits_tolerance);
  const { r, objBefore, objAfter } = trials.find((x) => x.size === chosen)!;
  const mseBefore = r.counted > 0 ? r.sumErrBefore / r.counted : 0;
  const mseAfter = mse(r);
  const result: CalibrationResult = {
    tensor_name: t.name,
    format: scheme.name,
    block_size: chosen,
    mse_before: mseBefore,
    mse_after: mseAfter,
    improvement_ratio: improvementRatio(mseBefore, mseAfter),
    outlier_count: r.outliers,
    shape: [...t.shape],
    numel,
    scale_encoding: scheme.scaleEncoding,
    bits_per_weight: bitsPerWeight(scheme, chosen, rows, cols),
    dtype: t.dtype,
    search: config.search,
    block_sizes_tried: tried,
    block_sizes_dominated: dominated,
    nonfinite_excluded: r.nonfinite,
  };
  if (scheme.scaleEncoding === 'e4m3_x_fp32') result.global_scale = r.globalDecode;
  if (opts.weighting) {
    result.objective_before = perElement(objBefore, r);
    result.objective_after = perElement(objAfter, r);
    result.weighting = opts.weighting.kind;
  }
  return {
    result,
    rows: r.rows,
    blocksPerRow: r.blocksPerRow,
    scales: r.scales,
    codes: r.codes,
    globalScale: scheme.scaleEncoding === 'e4m3_x_fp32' ? r.globalDecode : undefined,
    blockMseBefore: r.blockMseBefore,
    blockMseAfter: r.blockMseAfter,
    blockOutliers: r.blockOutliers,
    // An addon without the CUDA backend reports none: it ran on the CPU.
    backend: r.backend ?? 'cpu',
  };
}
