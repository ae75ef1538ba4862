// The one typed door to the native addon (build/Release/calibscope.node).
import path from 'node:path';

export type NativeDType = 'F32' | 'F16' | 'BF16';
export type SchemeName = 'fp4' | 'fp8_e4m3' | 'fp8_e5m2' | 'nvfp4' | 'mxfp4' | 'mxfp8';
export type SearchName = 'exact' | 'ternary' | 'naive';
export type ElemName = 'e2m1' | 'e4m3' | 'e5m2' | 'fp16';
/** Where calibrate runs the search; 'cuda-emulated' runs the GPU's per-block code on CPU threads (tests only). */
export type NativeBackend = 'cpu' | 'cuda' | 'cuda-emulated';

export interface NativeCalibrateOptions {
  dtype: NativeDType;
  rows: number;
  cols: number;
  scheme: SchemeName;
  blockSize: number;
  search?: SearchName;
  threads?: number;
  allowNonfinite?: boolean;
  diagnostics?: boolean;
  /** [0]: set non-zero to cancel; [1]: blocks done so far (written by the addon). */
  control?: Int32Array;
  /** Per-column weights w_j ≥ 0 (length cols): the search minimizes Σ w_j (x − x̂)² instead. */
  columnWeights?: Float32Array;
  /** Per-column input means μ_j (length cols; needs columnWeights): adds (Σ_j μ_j (x − x̂))² per block. */
  columnMeans?: Float32Array;
  /** Default 'cpu'. 'cuda' without a usable device, or a CUDA failure, rejects with code E_CUDA. */
  backend?: NativeBackend;
  /** Arrays of one element per block (rows × ceil(cols / blockSize)) to write the results into;
   *  the result then holds these same arrays. Each is optional (the addon allocates the others). */
  output?: NativeCalibrateOutput;
}

export interface NativeCalibrateOutput {
  scales?: Float32Array;
  codes?: Uint8Array;
  blockMseBefore?: Float32Array;
  blockMseAfter?: Float32Array;
  blockOutliers?: Uint16Array;
}

export interface NativeCalibrateResult {
  /** The backend that ran (absent from addons built before the CUDA backend: those are CPU only). */
  backend?: NativeBackend;
  rows: number;
  blocksPerRow: number;
  scales: Float32Array;
  codes?: Uint8Array;
  blockMseBefore?: Float32Array;
  blockMseAfter?: Float32Array;
  blockOutliers?: Uint16Array;
  sumErrBefore: number;
  sumErrAfter: number;
  /** The weighted objective, when columnWeights were given. */
  sumObjBefore?: number;
  sumObjAfter?: number;
  outliers: number;
  counted: number;
  nonfinite: number;
  firstNonfinite: number;
  absmax: number;
  globalDecode: number;
}

/** Quantized tensors (native/addon/quantize_binding.h): the block scales of a rows × cols tensor,
 *  rows × ceil(cols / blockSize) row-major: `scales` (multipliers s) for fp4/fp8_*, `codes` for
 *  nvfp4 (E4M3 bytes, with `globalScale`) and mxfp4/mxfp8 (UE8M0 biased exponents). */
export interface NativeQuantOptions {
  dtype: NativeDType;
  rows: number;
  cols: number;
  scheme: SchemeName;
  blockSize: number;
  scales?: Float32Array;
  codes?: Uint8Array;
  globalScale?: number;
  threads?: number;
  /** NaN/Inf become 0 (as the search excluded them) instead of failing with E_NONFINITE. */
  allowNonfinite?: boolean;
}

export interface NativeQuantizeResult {
  /** rows × rowStride bytes; the view starts at a 64-byte aligned address (byteOffset may be > 0). */
  elements: Uint8Array;
  rowStride: number;
  /** A 64-byte aligned copy of the scales: Float32Array (FP32 schemes) or Uint8Array codes. */
  scales: Float32Array | Uint8Array;
  globalScale?: number;
  outliers: number;
  nonfinite: number;
}

export interface NativeQuantizedErrorResult {
  sumSquaredError: number;
  counted: number;
  nonfinite: number;
}

/** The |x·s| histogram: `counts` over linear bins from 0 to `top`; `clipped` counts values above the format's max. */
export interface NativeScaledHistogram {
  counts: Float64Array;
  top: number;
  total: number;
  clipped: number;
}

export interface NativeCudaDevice {
  index: number;
  name: string;
  /** Bytes. */
  totalMemory: number;
  /** e.g. "9.0". */
  computeCapability: string;
  multiprocessors: number;
}

export interface NativeCudaInfo {
  /** Whether this build has CUDA kernels. */
  compiled: boolean;
  /** Whether calibrate can run with backend 'cuda' here. */
  available: boolean;
  /** Why not available; '' when available. */
  reason: string;
  devices: NativeCudaDevice[];
}

export interface NativeInfo {
  version: string;
  simd: string;
  hardwareThreads: number;
  cuda: NativeCudaInfo;
}

export interface NativeEncoderConfig {
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  intermediateSize: number;
  maxPositions: number;
  typeVocabSize: number;
  layerNormEps: number;
  activation: 'gelu' | 'gelu_tanh' | 'relu';
}

export interface NativeForwardOptions {
  /** ids and mask are batch × seqLen, row-major; a token at column p has position p. */
  batch: number;
  seqLen: number;
  threads?: number;
  /** Run layers [startLayer, endLayer); a start after 0 needs hiddenIn, the state entering it. */
  startLayer?: number;
  endLayer?: number;
  /** attended tokens × hidden, in batch order. */
  hiddenIn?: Float32Array;
  /** Also return the hidden state entering every layer that runs. */
  capture?: boolean;
  /** Calibration statistics (full passes only): Σ x_j² of every Linear's input, attention entropy per head. */
  stats?: boolean;
  /** Dynamic activation quantization of every Linear's input (standard block scales, computed per token block). */
  actQuant?: {
    scheme: SchemeName;
    /** layers × 6 (query, key, value, attention output, intermediate, output); 0 leaves that input FP32. */
    blockSizes: Int32Array;
  };
  /** [0]: set non-zero to cancel; [1]: sequences done (written by the addon). */
  control?: Int32Array;
}

/** Sums over the attended tokens of one layer (Σ x_j² per input feature; Σ entropy per head over query tokens). */
export interface NativeLayerStats {
  /** The layer input: what query, key and value read. */
  input: Float64Array;
  /** The attention context, heads concatenated: attention.output.dense's input. */
  context: Float64Array;
  /** The attention block's output after its LayerNorm: intermediate.dense's input. */
  attentionOutput: Float64Array;
  /** The activation of the intermediate layer: output.dense's input. */
  intermediate: Float64Array;
  /** Σ over query tokens of −Σ_k p log p (nats), one per head. */
  entropy: Float64Array;
  /** Σ x_j of the same inputs (not squared). */
  inputSum: Float64Array;
  contextSum: Float64Array;
  attentionOutputSum: Float64Array;
  intermediateSum: Float64Array;
}

/** What dynamic activation quantization saw at one Linear's input (multipliers s = 1/d). */
export interface NativeActQuantStats {
  scaleMin: number | null;
  scaleMax: number | null;
  /** NVFP4: the per-sequence decode scales g. */
  globalMin: number | null;
  globalMax: number | null;
  blocks: number;
  zeroBlocks: number;
  clipped: number;
  elements: number;
}

export interface NativeForwardResult {
  /** Attended tokens (mask 1) in batch order. */
  tokens: number;
  /** tokens × hidden: the last hidden state of every attended token. */
  hidden: Float32Array;
  /** Sequences with at least one attended token. */
  sequences: number;
  layerInputs?: Float32Array[];
  stats?: { layers: NativeLayerStats[]; /** Σ x_j² of each sequence's first token after the last layer (pooler.dense's input). */ pooler: Float64Array; poolerSum: Float64Array };
  /** layers × 6, in actQuant.blockSizes' order. */
  actQuant?: NativeActQuantStats[];
}

/** A BERT-family encoder held by the addon: weights are copied in once and replaced at will. */
export interface NativeEncoder {
  setWeight(name: string, data: Float32Array): void;
  weights(): { name: string; shape: number[] }[];
  missing(): string[];
  forward(ids: Int32Array, mask: Uint8Array, options: NativeForwardOptions): Promise<NativeForwardResult>;
  dispose(): void;
}

export interface NativeEncoderClass {
  new (config: NativeEncoderConfig): NativeEncoder;
  /** The GEMM's instruction set on this CPU: "avx2" or "baseline". */
  isa(): string;
  /** Test hook: false forces the portable kernels; returns the ISA now in use. */
  allowSimd(allow: boolean): string;
}

/** Trained-like weights (src/util/trained_like.ts's recipe), generated natively on CPU threads. */
export interface NativeTrainedLikeOptions {
  /** The whole tensor's shape (rows × cols); each row's values depend only on (seed, row). */
  rows: number;
  cols: number;
  /** An integer below 2^53. */
  seed: number;
  dtype: 'F16' | 'F32';
  /** The slice of rows to generate (default: all). */
  rowStart?: number;
  rowCount?: number;
  /** Bulk standard deviation before the per-row spread (default 0.02). */
  std?: number;
  /** Sigma of the log-normal per-row scale (default 0.3). */
  rowSpread?: number;
  /** Added to every value (default 0). */
  offset?: number;
  /** floor(cols · outlierFraction) distinct columns are multiplied by outlierGain (defaults 1/64, 8). */
  outlierFraction?: number;
  outlierGain?: number;
  threads?: number;
  /** false: the baseline kernel even on AVX2 CPUs (both give the same bytes). */
  simd?: boolean;
}

export interface NativeAddon {
  Encoder: NativeEncoderClass;
  info(): NativeInfo;
  calibrate(weights: Uint8Array, options: NativeCalibrateOptions): Promise<NativeCalibrateResult>;
  roundElements(values: Float32Array, elem: ElemName): Float32Array;
  e8m0Cast(values: Float32Array): Float32Array;
  e4m3Decode(codes: Uint8Array): Float32Array;
  /** Row-major values: F16 bits (round to nearest even) or F32, little-endian; at most 2 GiB per call. */
  generateTrainedLike(options: NativeTrainedLikeOptions): Promise<Uint8Array>;
  quantize(weights: Uint8Array, options: NativeQuantOptions): Promise<NativeQuantizeResult>;
  fakeQuantize(weights: Uint8Array, options: NativeQuantOptions): Promise<Float32Array>;
  dequantize(elements: Uint8Array, options: Omit<NativeQuantOptions, 'dtype'> & { rowStride: number }): Promise<Float32Array>;
  quantizedError(weights: Uint8Array, elements: Uint8Array, options: NativeQuantOptions & { rowStride: number }): Promise<NativeQuantizedErrorResult>;
  scaledHistogram(weights: Uint8Array, options: NativeQuantOptions & { bins: number }): Promise<NativeScaledHistogram>;
}

let cached: NativeAddon | undefined;

/** Loads the addon once; says how to build it when it is missing or cannot load. */
export function native(): NativeAddon {
  if (cached) return cached;
  const root = path.resolve(__dirname, '..', '..', '..');
  const candidates = [path.join(root, 'build', 'Release', 'calibscope.node'), path.join(root, 'build', 'Debug', 'calibscope.node')];
  const errors: string[] = [];
  for (const file of candidates) {
    try {
      cached = require(file) as NativeAddon;
      return cached;
    } catch (err) {
      errors.push(`${path.relative(root, file)}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  const e = new Error(
    'The calibscope native addon could not be loaded. Build it with `npm install` (or `npx node-gyp rebuild`) ' +
      'in the calibscope folder; it needs a C++17 compiler, make and python3.\n  ' + errors.join('\n  '),
  ) as Error & { code: string };
  e.code = 'E_NATIVE_MISSING';
  throw e;
}
