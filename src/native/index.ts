// The one typed door to the native addon (build/Release/calibscope.node).
import path from 'node:path';

export type NativeDType = 'F32' | 'F16' | 'BF16';
export type SchemeName = 'fp4' | 'fp8_e4m3' | 'fp8_e5m2' | 'nvfp4' | 'mxfp4' | 'mxfp8';
export type SearchName = 'exact' | 'ternary' | 'naive';
export type ElemName = 'e2m1' | 'e4m3' | 'e5m2' | 'fp16';

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
}

export interface NativeCalibrateResult {
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

export interface NativeInfo {
  version: string;
  simd: string;
  hardwareThreads: number;
  cuda: { compiled: boolean; available: boolean; reason: string; devices: unknown[] };
}

export interface NativeAddon {
  info(): NativeInfo;
  calibrate(weights: Uint8Array, options: NativeCalibrateOptions): Promise<NativeCalibrateResult>;
  roundElements(values: Float32Array, elem: ElemName): Float32Array;
  e8m0Cast(values: Float32Array): Float32Array;
  e4m3Decode(codes: Uint8Array): Float32Array;
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
