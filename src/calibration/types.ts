// The specification's data types, as they appear in JSON (snake_case): CalibrationResult,
// ModelCalibrationProfile and CalibrationConfig, plus the fields DESIGN.md adds.
import type { NativeBackend, SchemeName, SearchName } from '../native/index.js';
import type { BackendChoice } from './backend.js';
import type { CalibrationMode, ModeDetails, WeightingKind } from './modes.js';

export type { CalibrationMode, ModeDetails, WeightingKind } from './modes.js';

export type QuantFormat = SchemeName;
export type ScaleEncoding = 'fp32' | 'e4m3_x_fp32' | 'ue8m0';
export type BlockPolicy = 'min-mse' | 'bits';

export interface BlockSizeTrial {
  block_size: number;
  mse_after: number;
  bits_per_weight: number;
  /** Weighted modes: the weighted objective the block-size policy compares. */
  objective_after?: number;
}

export interface CalibrationResult {
  tensor_name: string;
  format: QuantFormat;
  block_size: number;
  mse_before: number;
  mse_after: number;
  /** mse_before / mse_after; 1 when both are 0; null when only mse_after is 0 (infinite). */
  improvement_ratio: number | null;
  outlier_count: number;
  shape: number[];
  numel: number;
  scale_encoding: ScaleEncoding;
  bits_per_weight: number;
  dtype: string;
  search: SearchName;
  /** Every block size that was tried, for the block-size policy's audit trail. */
  block_sizes_tried: BlockSizeTrial[];
  /** Larger block sizes not evaluated because they cannot have less error (exact search, FP32
   *  scales, min-mse policy: a block's best scale is available to each of its halves; in real
   *  arithmetic, so a larger size may differ by float32 rounding of x̂ alone). */
  block_sizes_dominated: number[];
  /** Non-finite elements excluded under --allow-nonfinite (0 otherwise). */
  nonfinite_excluded: number;
  /** NVFP4: the per-tensor decode scale g. */
  global_scale?: number;
  /** activation-aware / entropy-aware modes: the searched objective Σ r_i c_j (x − x̂)² / numel
   *  (weights of mean 1, docs/modes.md) with the naive and the chosen scales; mse_* stay plain. */
  objective_before?: number;
  objective_after?: number;
  /** How this tensor's error was weighted in those modes ('none': plain squared error). */
  weighting?: WeightingKind;
}

export interface CalibrationConfig {
  format: QuantFormat;
  block_sizes: number[];
  num_calibration_samples: number;
  semantic_test_queries: string[];
  mse_threshold: number | null;
  correlation_threshold: number;
  block_policy: BlockPolicy;
  /** `bits` policy: a block size qualifies when its MSE is within this relative tolerance of the best. */
  bits_tolerance: number;
  search: SearchName;
  include: string[];
  exclude: string[];
  allow_nonfinite: boolean;
  /** What the search minimizes (docs/modes.md); absent in profiles written before modes existed: static. */
  mode?: CalibrationMode;
  /** Non-static modes: the hash of the calibration query set behind the statistics; null = the shipped default set. */
  calibration_queries_hash?: string | null;
  /** The backend asked for (docs/backends.md); absent in profiles written before backends existed. */
  backend?: BackendChoice;
}

/** The calibration statistics a weighted profile was calibrated with. */
export interface StatisticsRef {
  /** `sha256:` of the statistics' safetensors image. */
  hash: string;
  queries_hash: string;
  query_count: number;
  tokens: number;
  checkpoint_hash: string;
}

export interface SkippedTensor {
  name: string;
  dtype: string;
  shape: number[];
  reason: string;
}

export interface SignOff {
  reviewer: string;
  decision: 'approved' | 'rejected';
  note: string;
  time: string;
  content_hash: string;
}

export interface ModelCalibrationProfile {
  model_id: string;
  format: QuantFormat;
  timestamp: string;
  tensor_calibrations: Record<string, CalibrationResult>;
  overall_mse: number;
  overall_mse_before: number;
  semantic_correlation: number | null;
  golden_checkpoint_hash: string;
  /** The checkpoint it was made from (its sharded index, or its weight file), absolute: another
   *  checkpoint with the same model id is told apart by it. Absent in profiles written before it was. */
  checkpoint_path?: string;
  config: CalibrationConfig;
  calibscope_version: string;
  profile_format_version: number;
  skipped_tensors: SkippedTensor[];
  scales_sha256: string | null;
  review: SignOff | null;
  /** The calibration mode (as config.mode; 'static' when absent) and its exact weighting. */
  mode?: CalibrationMode;
  mode_details?: ModeDetails;
  /** Weighted modes: the statistics used. */
  statistics?: StatisticsRef | null;
  /** Weighted modes: the element-weighted mean of objective_after (and objective_before) over the tensors. */
  overall_objective?: number;
  overall_objective_before?: number;
  /** The backend that ran the search (config.backend is the one asked for); absent in profiles
   *  written before backends existed, which all ran on the CPU (profileBackend). */
  backend?: NativeBackend;
}
