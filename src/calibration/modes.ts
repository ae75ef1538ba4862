// Calibration modes (docs/modes.md): what the block search minimizes for each tensor.
//   static            Σ (x − x̂)²                                (plain MSE, no statistics)
//   activation-aware  Σ_ij c_j (x_ij − x̂_ij)² + Σ_blocks (Σ_j μ_j (x_ij − x̂_ij))²,
//                     c_j = Var[x_j], μ_j = E[x_j] of the Linear's input, over mean_k E[x_k²]
//   entropy-aware     the same with row weights r_i and head-scaled columns from attention entropy
// Tensors without input statistics (the embeddings) fall back to plain squared error.
import type { CalibrationStats } from '../semantic/calibration_stats.js';
import { CalibscopeError } from '../util/errors.js';

export const CALIBRATION_MODES = ['static', 'activation-aware', 'entropy-aware'] as const;
export type CalibrationMode = (typeof CALIBRATION_MODES)[number];

/** ε of the head weighting, in nats: it keeps a head with near-zero entropy from taking all the weight. */
export const ENTROPY_EPSILON = 0.1;

export function parseMode(m: unknown): CalibrationMode {
  if (m === undefined || m === null) return 'static';
  if (typeof m === 'string' && (CALIBRATION_MODES as readonly string[]).includes(m)) return m as CalibrationMode;
  throw new CalibscopeError('E_BAD_ARGUMENT', `unknown calibration mode ${JSON.stringify(m)}: expected ${CALIBRATION_MODES.join(', ')}`, {
    mode: m,
    modes: [...CALIBRATION_MODES],
  });
}

export function modeNeedsStats(mode: CalibrationMode | undefined): boolean {
  return mode !== undefined && mode !== 'static';
}

/** How one tensor's error is weighted; `none` is plain squared error. */
export type WeightingKind = 'none' | 'activation' | 'activation+head_columns' | 'activation+head_rows';

export interface TensorWeighting {
  kind: WeightingKind;
  /** c_j, one per column (the Linear's input feature), mean 1. */
  columns?: Float32Array;
  /** r_i, one per row (output feature), mean 1: constant within every block. */
  rows?: Float32Array;
  /** μ_j / sqrt(mean_k E[x_k²]), one per column: the bias term (Σ_j μ_j Δ_j)² on the scale of c_j. */
  means?: Float32Array;
}

/** w_h = (1 / (H_h + ε)) / mean_h'(1 / (H_h' + ε)) for each head of one layer: mean 1, sharper heads weigh more. */
export function headWeights(entropy: ArrayLike<number>, epsilon = ENTROPY_EPSILON): Float64Array {
  const u = Float64Array.from(entropy, (e) => 1 / (Math.max(0, e) + epsilon));
  const mean = u.reduce((a, b) => a + b, 0) / (u.length || 1);
  return u.map((v) => v / mean);
}

const QKV_RE = /(^|\.)encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.weight$/;
const ATTN_OUT_RE = /(^|\.)encoder\.layer\.(\d+)\.attention\.output\.dense\.weight$/;

/**
 * The weighting of one tensor under a mode. `shape` is the tensor's; statistics that do not fit it
 * (another model's) are an error rather than silently ignored.
 */
export function tensorWeighting(mode: CalibrationMode, tensor: string, shape: readonly number[], stats: CalibrationStats | null): TensorWeighting {
  if (mode === 'static') return { kind: 'none' };
  if (!stats) throw new CalibscopeError('E_BAD_ARGUMENT', `--mode ${mode} needs calibration statistics`, { mode });
  const lin = stats.linears.get(tensor);
  if (!lin) return { kind: 'none' };
  const cols = shape[shape.length - 1];
  const rows = shape.slice(0, -1).reduce((a, b) => a * b, 1);
  if (shape.length !== 2 || cols !== lin.in_features) {
    throw new CalibscopeError(
      'E_BAD_ARGUMENT',
      `tensor ${tensor} has shape [${shape.join(', ')}], but its calibration statistics have ${lin.in_features} input features`,
      { tensor, shape, in_features: lin.in_features },
    );
  }
  const act = activationWeights(lin.mean_sq, lin.mean);
  if (!act) return { kind: 'none' };
  if (mode === 'activation-aware') return { kind: 'activation', ...act };
  const nh = stats.heads;
  const qkv = QKV_RE.exec(tensor);
  const ao = ATTN_OUT_RE.exec(tensor);
  const layer = qkv ? Number(qkv[2]) : ao ? Number(ao[2]) : -1;
  if (layer < 0 || layer >= stats.layers) return { kind: 'activation', ...act };
  const w = headWeights(stats.attention_entropy.subarray(layer * nh, (layer + 1) * nh));
  if (ao) {
    // Input column j is the context of head floor(j / d): scaling that input by sqrt(w_h) scales
    // its second moment and variance by w_h and its mean by sqrt(w_h).
    const d = cols / nh;
    const hw = (j: number) => w[Math.floor(j / d)];
    const c = activationWeights(
      Array.from(lin.mean_sq, (v, j) => v * hw(j)),
      Array.from(lin.mean, (v, j) => v * Math.sqrt(hw(j))),
    );
    return c ? { kind: 'activation+head_columns', ...c } : { kind: 'activation', ...act };
  }
  // Query/key/value output row i feeds head floor(i / d).
  const d = rows / nh;
  return { kind: 'activation+head_rows', ...act, rows: Float32Array.from({ length: rows }, (_, i) => w[Math.floor(i / d)]) };
}

/**
 * E[x xᵀ] ≈ diag(Var[x]) + μμᵀ: column weights c_j = Var[x_j] and the block bias term's means μ_j,
 * divided by m = mean_k E[x_k²] (μ_j by sqrt(m)) so the objective stays on the plain MSE's scale.
 * Null when m is not positive (no signal to weight by).
 */
function activationWeights(meanSq: ArrayLike<number>, mean: ArrayLike<number>): { columns: Float32Array; means: Float32Array } | null {
  let sum = 0;
  for (let j = 0; j < meanSq.length; j++) sum += meanSq[j];
  const m = sum / (meanSq.length || 1);
  if (!(m > 0) || !Number.isFinite(m)) return null;
  const rs = 1 / Math.sqrt(m);
  return {
    columns: Float32Array.from(meanSq, (v, j) => Math.max(0, v - mean[j] * mean[j]) / m),
    means: Float32Array.from(mean, (v) => v * rs),
  };
}

export interface ModeDetails {
  mode: CalibrationMode;
  objective: string;
  column_weights: string | null;
  head_weights: string | null;
  attention_output: string | null;
  query_key_value: string | null;
  fallback: string | null;
  epsilon: number | null;
  /** entropy-aware: the head weights w_h, one array per layer. */
  head_weights_by_layer?: number[][];
  /** entropy-aware: the mean attention entropy (nats) behind them. */
  attention_entropy_by_layer?: number[][];
}

/** The profile's `mode_details`: the exact weighting, in words, and for entropy-aware the numbers. */
export function modeDetails(mode: CalibrationMode, stats: CalibrationStats | null): ModeDetails {
  if (mode === 'static') {
    return {
      mode,
      objective: 'Σ (x − x̂)² per block (plain squared error)',
      column_weights: null,
      head_weights: null,
      attention_output: null,
      query_key_value: null,
      fallback: null,
      epsilon: null,
    };
  }
  const stat = '(over the attended tokens of the calibration queries, FP16 model)';
  const col =
    `c_j = Var[x_j] and μ_j = E[x_j] of the Linear layer's input feature j ${stat}; c_j divided by m = mean_k E[x_k²], ` +
    'μ_j by sqrt(m)';
  const bias = 'Σ_blocks (Σ_j∈block μ_j (x_ij − x̂_ij))²';
  const d: ModeDetails = {
    mode,
    objective:
      mode === 'activation-aware'
        ? `Σ_ij c_j (x_ij − x̂_ij)² + ${bias}: the expected squared output error of the layer ` +
          'with E[x xᵀ] ≈ diag(Var[x]) + μμᵀ, cross-block terms of the bias ignored'
        : `Σ_i r_i (Σ_j c_j (x_ij − x̂_ij)² + ${bias})`,
    column_weights: col,
    head_weights: null,
    attention_output: null,
    query_key_value: null,
    fallback: 'tensors without input statistics (the embeddings) use plain squared error',
    epsilon: null,
  };
  if (mode === 'entropy-aware') {
    d.head_weights =
      `w_h = (1 / (H_h + ε)) / mean_h'(1 / (H_h' + ε)) within each layer, H_h the head's mean attention entropy ` +
      `−Σ_k p_k log p_k (nats, over attended keys, averaged over attended query tokens), ε = ${ENTROPY_EPSILON}: sharper heads weigh more`;
    d.attention_output =
      'attention.output.dense: input column j scaled by sqrt(w_h) of the head whose context it is: Var[x_j] and E[x_j²] ' +
      'multiplied by w_h, μ_j by sqrt(w_h), before the normalisation (this changes the search)';
    d.query_key_value =
      'query/key/value: r_i = w_h of the head output row i feeds; r_i is constant within every block, so it changes no block\'s ' +
      'scale, only the reported objective and the block-size comparison';
    d.fallback = 'other Linear layers use c_j alone; tensors without input statistics (the embeddings) use plain squared error';
    d.epsilon = ENTROPY_EPSILON;
    if (stats) {
      const nh = stats.heads;
      d.head_weights_by_layer = [];
      d.attention_entropy_by_layer = [];
      for (let l = 0; l < stats.layers; l++) {
        const e = stats.attention_entropy.subarray(l * nh, (l + 1) * nh);
        d.attention_entropy_by_layer.push(Array.from(e));
        d.head_weights_by_layer.push(Array.from(headWeights(e)));
      }
    }
  }
  return d;
}
