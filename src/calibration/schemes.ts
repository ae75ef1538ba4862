// The quantization schemes a user can pick (DESIGN.md's table): element format, scale encoding,
// the block sizes searched, and the storage cost that the `bits` block policy weighs.
import type { SchemeName } from '../native/index.js';
import { CalibscopeError } from '../util/errors.js';
import type { ScaleEncoding } from './types.js';

export interface SchemeSpec {
  name: SchemeName;
  element: 'E2M1' | 'E4M3' | 'E5M2';
  elementBits: number;
  /** Largest finite element value. */
  elementMax: number;
  scaleEncoding: ScaleEncoding;
  scaleBits: number;
  /** Block sizes the scheme allows; all of them are searched unless the user narrows the list. */
  blockSizes: number[];
  /** NVFP4 stores one FP32 global scale per tensor. */
  globalScaleBits: number;
}

export const SCHEMES: Record<SchemeName, SchemeSpec> = {
  fp4: { name: 'fp4', element: 'E2M1', elementBits: 4, elementMax: 6, scaleEncoding: 'fp32', scaleBits: 32, blockSizes: [64, 128, 256], globalScaleBits: 0 },
  fp8_e4m3: { name: 'fp8_e4m3', element: 'E4M3', elementBits: 8, elementMax: 448, scaleEncoding: 'fp32', scaleBits: 32, blockSizes: [32, 64, 128, 256], globalScaleBits: 0 },
  fp8_e5m2: { name: 'fp8_e5m2', element: 'E5M2', elementBits: 8, elementMax: 57344, scaleEncoding: 'fp32', scaleBits: 32, blockSizes: [32, 64, 128, 256], globalScaleBits: 0 },
  nvfp4: { name: 'nvfp4', element: 'E2M1', elementBits: 4, elementMax: 6, scaleEncoding: 'e4m3_x_fp32', scaleBits: 8, blockSizes: [16], globalScaleBits: 32 },
  mxfp4: { name: 'mxfp4', element: 'E2M1', elementBits: 4, elementMax: 6, scaleEncoding: 'ue8m0', scaleBits: 8, blockSizes: [32], globalScaleBits: 0 },
  mxfp8: { name: 'mxfp8', element: 'E4M3', elementBits: 8, elementMax: 448, scaleEncoding: 'ue8m0', scaleBits: 8, blockSizes: [32], globalScaleBits: 0 },
};

export const FORMAT_NAMES = Object.keys(SCHEMES) as SchemeName[];

export function schemeFor(format: string): SchemeSpec {
  const s = (SCHEMES as Record<string, SchemeSpec | undefined>)[format];
  if (!s) {
    throw new CalibscopeError('E_BAD_FORMAT', `unknown format "${format}": expected one of ${FORMAT_NAMES.join(', ')}`, { format });
  }
  return s;
}

/** The block sizes to search: the scheme's, narrowed to the user's list; each must be allowed. */
export function resolveBlockSizes(scheme: SchemeSpec, requested?: readonly number[]): number[] {
  if (!requested || requested.length === 0) return [...scheme.blockSizes];
  for (const b of requested) {
    if (!scheme.blockSizes.includes(b)) {
      const why = scheme.name === 'fp4' && b < 64 ? ' (FP4 with FP32 scales needs blocks of at least 64)' : '';
      throw new CalibscopeError(
        'E_BAD_BLOCK_SIZE',
        `block size ${b} is not allowed for ${scheme.name}${why}: allowed ${scheme.blockSizes.join(', ')}`,
        { format: scheme.name, block_size: b, allowed: scheme.blockSizes },
      );
    }
  }
  return [...new Set(requested)].sort((a, b) => a - b);
}

/** Storage per weight of a rows × cols tensor: element bits plus the scales actually stored (one per
 *  block, ceil(cols / blockSize) per row: a short last block still needs one), plus NVFP4's global scale. */
export function bitsPerWeight(scheme: SchemeSpec, blockSize: number, rows: number, cols: number): number {
  const numel = rows * cols;
  if (numel === 0) return scheme.elementBits;
  const scales = rows * Math.ceil(cols / blockSize);
  return scheme.elementBits + (scales * scheme.scaleBits + scheme.globalScaleBits) / numel;
}

/** mse_before / mse_after; 1 when both are 0, null when only the calibrated error is 0 (an
 *  infinite ratio, which JSON cannot hold). */
export function improvementRatio(before: number, after: number): number | null {
  if (after === 0) return before === 0 ? 1 : null;
  return before / after;
}
