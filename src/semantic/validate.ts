// Semantic validation: embed a query set with the checkpoint's FP16 weights and with the weights
// quantize-dequantized by a profile's scales, and compare (Pearson per query, cosine, retrieval
// agreement). The mean correlation must reach the threshold (default 0.99), else E_SEMANTIC_DRIFT.
// The result is recorded in the profile (semantic_correlation and a semantic_validation summary).
import path from 'node:path';
import { DEFAULT_CORRELATION_THRESHOLD } from '../calibration/config.js';
import type { ModelCalibrationProfile } from '../calibration/types.js';
import type { NativeActQuantStats, SchemeName } from '../native/index.js';
import { profileStatus, updateProfile } from '../profiles/store.js';
import { CalibscopeError, asCalibscopeError, readOnlyErrno } from '../util/errors.js';
import { openCheckpoint } from '../checkpoints/checkpoint.js';
import { CALIBSCOPE_VERSION } from '../version.js';
import { loadSemanticModel, type SemanticModel } from './model.js';
import { planQuantized, quantizedWeights, type QuantizedPlan, type ScalesSource } from './quantized.js';
import { checkQueries, queriesHash } from './queries.js';
import { EncoderSession, type EncodedQueries } from './session.js';
import { compareEmbeddings, cosine, retrievalAgreement } from './stats.js';

export const RETRIEVAL_K = 10;

export interface QueryResult {
  query: string;
  correlation: number;
  cosine: number;
  truncated: boolean;
}

/** What a validation recorded in profile.json. */
export interface SemanticValidationSummary {
  mean_correlation: number;
  min_correlation: number;
  mean_cosine: number;
  retrieval_agreement: number | null;
  retrieval_k: number;
  threshold: number;
  passed: boolean;
  query_count: number;
  queries_hash: string;
  timestamp: string;
  calibscope_version: string;
  /** With --dynamic-activations: weights and Linear inputs quantized. */
  dynamic_activations?: { mean_correlation: number; min_correlation: number };
}

/** One Linear's dynamically quantized input. */
export interface DynamicActivationLinear {
  /** The Linear's weight (checkpoint name). */
  tensor: string;
  block_size: number;
  /** Range of the block multipliers s (x̂ = Q(x·s)/s; s = 1/d for encoded scales) over blocks that are not all zero. */
  scale_min: number | null;
  scale_max: number | null;
  /** NVFP4: range of the per-sequence decode scales g. */
  global_scale_min: number | null;
  global_scale_max: number | null;
  clipped: number;
  elements: number;
}

/** `--dynamic-activations`: the profile's weights plus every Linear's input quantized on the fly. */
export interface DynamicActivationsResult {
  scheme: string;
  /** How the activation scales are set: the scheme's standard absmax rule, per block, at run time. */
  scale_rule: 'standard';
  /** Blocks run along the hidden dimension of each token, with the block size of the Linear's weight. */
  blocks: 'per token, along the input features, the weight tensor\'s block size';
  /** NVFP4's per-tensor decode scale g is taken per sequence (one query = one batch). */
  global_scale: 'per sequence' | null;
  mean_correlation: number;
  min_correlation: number;
  worst_query: string;
  mean_cosine: number;
  retrieval_agreement: number | null;
  /** The weight-only figure of the same run, for comparison. */
  weight_only_mean_correlation: number;
  /** Over every quantized Linear input and every sequence (batch). */
  scale_min: number | null;
  scale_max: number | null;
  global_scale_min: number | null;
  global_scale_max: number | null;
  /** Share of activation elements clipped at ±max by the standard scale. */
  clipped_fraction: number;
  linears_quantized: number;
  per_linear: DynamicActivationLinear[];
  per_query: { query: string; correlation: number }[];
}

export type ProfileWithValidation = ModelCalibrationProfile & { semantic_validation?: SemanticValidationSummary };

export interface ValidationResult {
  model_id: string;
  format: string;
  profile_path: string | null;
  mean_correlation: number;
  min_correlation: number;
  /** The query with the least correlation. */
  worst_query: string;
  mean_cosine: number;
  retrieval_agreement: number | null;
  retrieval_k: number;
  threshold: number;
  passed: boolean;
  per_query: QueryResult[];
  query_count: number;
  queries_hash: string;
  /** The queries longer than the model's limit, which were truncated to it. */
  truncated_queries: { index: number; query: string }[];
  max_length: number;
  /** Profile tensors applied to the encoder, and those it does not read (e.g. the pooler). */
  quantized_tensors: number;
  unused_tensors: string[];
  /** --dynamic-activations: the correlation with every Linear's input quantized too. */
  dynamic_activations?: DynamicActivationsResult;
  /** Whether the result was written to profile.json, and why not when it was not. */
  stored: boolean;
  store_note: string | null;
  seconds: number;
}

export interface ValidateOptions {
  threshold?: number;
  threads?: number;
  /** Record the result in the profile (default true). */
  store?: boolean;
  /** Throw E_SEMANTIC_DRIFT below the threshold (default true); otherwise `passed` says it. */
  throwOnDrift?: boolean;
  /** The cache folder whose stat cache may answer for the checkpoint hash. */
  cacheDir?: string;
  /** Also embed with every Linear's input quantized per batch (dynamic activations). */
  dynamicActivations?: boolean;
  signal?: AbortSignal;
  onProgress?: (fraction: number, detail: string) => void;
}

export function checkThreshold(t: number): number {
  if (typeof t !== 'number' || !(t >= -1 && t <= 1)) {
    throw new CalibscopeError('E_BAD_ARGUMENT', `the correlation threshold must be a number in [-1, 1], got ${t}`);
  }
  return t;
}

/** The comparison of FP16 and quantized embeddings of one encoded query set. */
export function compareSets(
  q: EncodedQueries,
  reference: Float32Array[],
  candidate: Float32Array[],
): Pick<ValidationResult, 'mean_correlation' | 'min_correlation' | 'worst_query' | 'mean_cosine' | 'retrieval_agreement' | 'per_query'> {
  const s = compareEmbeddings(reference, candidate);
  const truncated = new Set(q.truncated);
  return {
    mean_correlation: s.mean,
    min_correlation: s.min,
    worst_query: q.queries[s.argmin],
    mean_cosine: s.meanCosine,
    retrieval_agreement: retrievalAgreement(reference, candidate, RETRIEVAL_K),
    per_query: q.queries.map((query, i) => ({
      query,
      correlation: s.perQuery[i],
      cosine: cosine(reference[i], candidate[i]),
      truncated: truncated.has(i),
    })),
  };
}

const LINEAR_NAMES = ['attention.self.query', 'attention.self.key', 'attention.self.value', 'attention.output.dense', 'intermediate.dense', 'output.dense'];

/** The encoder's activation block sizes (layers × 6): the block size of each Linear's calibrated weight, 0 where the profile has none. */
export function activationBlockSizes(model: SemanticModel, plan: QuantizedPlan): { blockSizes: Int32Array; tensors: (string | null)[] } {
  const byEncoder = new Map(plan.used.map((u) => [u.encoderName, u]));
  const L = model.config.numLayers;
  const blockSizes = new Int32Array(L * LINEAR_NAMES.length);
  const tensors: (string | null)[] = [];
  for (let l = 0; l < L; l++) {
    LINEAR_NAMES.forEach((n, k) => {
      const u = byEncoder.get(`encoder.layer.${l}.${n}.weight`);
      blockSizes[l * LINEAR_NAMES.length + k] = u ? u.result.block_size : 0;
      tensors.push(u ? u.tensor : null);
    });
  }
  return { blockSizes, tensors };
}

function summariseActivations(
  scheme: string,
  tensors: (string | null)[],
  blockSizes: Int32Array,
  act: NativeActQuantStats[],
): Pick<DynamicActivationsResult, 'scale_min' | 'scale_max' | 'global_scale_min' | 'global_scale_max' | 'clipped_fraction' | 'linears_quantized' | 'per_linear'> {
  const per: DynamicActivationLinear[] = [];
  let clipped = 0;
  let elements = 0;
  const lo = (a: number | null, b: number | null) => (a === null ? b : b === null ? a : Math.min(a, b));
  const hi = (a: number | null, b: number | null) => (a === null ? b : b === null ? a : Math.max(a, b));
  let smin: number | null = null;
  let smax: number | null = null;
  let gmin: number | null = null;
  let gmax: number | null = null;
  act.forEach((a, i) => {
    const tensor = tensors[i];
    if (tensor === null || blockSizes[i] === 0) return;
    per.push({
      tensor,
      block_size: blockSizes[i],
      scale_min: a.scaleMin,
      scale_max: a.scaleMax,
      global_scale_min: a.globalMin,
      global_scale_max: a.globalMax,
      clipped: a.clipped,
      elements: a.elements,
    });
    clipped += a.clipped;
    elements += a.elements;
    smin = lo(smin, a.scaleMin);
    smax = hi(smax, a.scaleMax);
    gmin = lo(gmin, a.globalMin);
    gmax = hi(gmax, a.globalMax);
  });
  return {
    scale_min: smin,
    scale_max: smax,
    global_scale_min: scheme === 'nvfp4' ? gmin : null,
    global_scale_max: scheme === 'nvfp4' ? gmax : null,
    clipped_fraction: elements > 0 ? clipped / elements : 0,
    linears_quantized: per.length,
    per_linear: per,
  };
}

export function driftError(r: ValidationResult): CalibscopeError {
  const worst = [...r.per_query].sort((a, b) => a.correlation - b.correlation).slice(0, 5);
  return new CalibscopeError(
    'E_SEMANTIC_DRIFT',
    `${r.model_id} (${r.format}): mean Pearson correlation ${r.mean_correlation.toFixed(6)} of FP16 vs quantized embeddings ` +
      `is below the threshold ${r.threshold} (min ${r.min_correlation.toFixed(6)} over ${r.query_count} ${r.query_count === 1 ? 'query' : 'queries'})`,
    {
      model_id: r.model_id,
      format: r.format,
      mean_correlation: r.mean_correlation,
      min_correlation: r.min_correlation,
      threshold: r.threshold,
      retrieval_agreement: r.retrieval_agreement,
      profile_path: r.profile_path,
      worst_queries: worst.map((w) => ({ query: w.query, correlation: w.correlation })),
    },
  );
}

/** Opens a profile for validation: it must be valid (or signed off) for this checkpoint. */
export async function openProfileFor(modelDir: string, profileDir: string, cacheDir?: string): Promise<ModelCalibrationProfile> {
  const st = await profileStatus(profileDir, modelDir, { cacheDir: cacheDir ?? null });
  if (st.state === 'missing') throw new CalibscopeError('E_NOT_FOUND', `no profile at ${st.profile_path}`, { path: st.profile_path });
  if (st.state === 'corrupt') throw new CalibscopeError('E_BAD_PROFILE', `profile ${st.profile_path}: ${st.reason}`, { path: st.profile_path, reason: st.reason });
  if (st.state === 'stale') {
    // Another model's profile is not "a changed checkpoint": say whose it is.
    const ckpt = await openCheckpoint(modelDir);
    const modelId = ckpt.modelId;
    await ckpt.close();
    const other = st.other_checkpoint !== undefined || (st.profile !== null && st.profile.model_id !== modelId);
    if (other) {
      const made = st.other_checkpoint ?? `checkpoint ${st.profile!.golden_checkpoint_hash.slice(0, 19)}…`;
      throw new CalibscopeError(
        'E_BAD_PROFILE',
        `profile ${st.profile_path} is for model '${st.profile!.model_id}' (${made}), ` +
          `not for ${modelDir} ('${modelId}', ${String(st.checkpoint_hash).slice(0, 19)}…); give this model's profile, or recalibrate (--format uses or makes one)`,
        { path: st.profile_path, reason: st.reason, stale: true, profile_model_id: st.profile!.model_id, model_id: modelId },
      );
    }
    throw new CalibscopeError('E_BAD_PROFILE', `profile ${st.profile_path} does not belong to ${modelDir}: ${st.reason}; recalibrate`, {
      path: st.profile_path,
      reason: st.reason,
      stale: true,
    });
  }
  return st.profile!;
}

export interface PreparedValidation {
  model: SemanticModel;
  session: EncoderSession;
  encoded: EncodedQueries;
  plan: QuantizedPlan;
  fp16: Float32Array[];
}

/** Loads the model and embeds the queries with its FP16 weights (the caller closes the session). */
export async function prepareComparison(
  modelDir: string,
  src: ScalesSource,
  queries: readonly string[],
  opts: { threads?: number; signal?: AbortSignal; onProgress?: (fraction: number, detail: string) => void; capture?: boolean } = {},
): Promise<PreparedValidation & { layerInputs?: Float32Array[] }> {
  const model = await loadSemanticModel(modelDir);
  const session = EncoderSession.fromModel(model);
  try {
    const encoded = session.encode(queries);
    const plan = planQuantized(model, src.profile);
    const fp = await session.forward(encoded, {
      threads: opts.threads,
      signal: opts.signal,
      capture: opts.capture,
      onProgress: (f) => opts.onProgress?.(0.4 * f, 'embedding with FP16 weights'),
    });
    return { model, session, encoded, plan, fp16: fp.embeddings, layerInputs: fp.layerInputs };
  } catch (err) {
    session.close();
    throw err;
  }
}

/**
 * Validates a profile against its model: FP16 vs quantize-dequantized embeddings of `queries`.
 * Throws E_SEMANTIC_DRIFT (after recording the result) when the mean Pearson correlation is below
 * the threshold, unless `throwOnDrift` is false.
 */
export async function validateSemanticAlignment(
  modelDir: string,
  profileDir: string,
  queries: readonly string[],
  opts: ValidateOptions = {},
): Promise<ValidationResult> {
  const started = process.hrtime.bigint();
  checkQueries(queries);
  const threshold = checkThreshold(opts.threshold ?? DEFAULT_CORRELATION_THRESHOLD);
  const dir = path.resolve(profileDir);
  const profile = await openProfileFor(modelDir, dir, opts.cacheDir);
  const prep = await prepareComparison(modelDir, { kind: 'profile', dir, profile }, queries, opts);
  let result: ValidationResult;
  try {
    // One tensor at a time: quantize-dequantize, hand to the encoder, let go.
    await quantizedWeights(prep.model, { kind: 'profile', dir, profile }, prep.plan, {
      threads: opts.threads,
      onWeight: (name, data) => prep.session.setWeight(name, data),
      onTensor: (d, n) => opts.onProgress?.(0.4 + 0.2 * (d / n), `quantizing weights ${d}/${n}`),
    });
    if (opts.signal?.aborted) throw new CalibscopeError('E_CANCELLED', 'semantic validation cancelled');
    const qz = await prep.session.forward(prep.encoded, {
      threads: opts.threads,
      signal: opts.signal,
      onProgress: (f) => opts.onProgress?.(0.6 + 0.4 * f, 'embedding with quantized weights'),
    });
    result = {
      model_id: profile.model_id,
      format: profile.format,
      profile_path: dir,
      ...compareSets(prep.encoded, prep.fp16, qz.embeddings),
      retrieval_k: RETRIEVAL_K,
      threshold,
      passed: false,
      query_count: queries.length,
      queries_hash: queriesHash(queries),
      truncated_queries: prep.encoded.truncated.map((i) => ({ index: i, query: queries[i] })),
      max_length: prep.model.tokenizer.maxLength,
      quantized_tensors: prep.plan.used.length,
      unused_tensors: prep.plan.unused,
      stored: false,
      store_note: null,
      seconds: 0,
    };
    result.passed = result.mean_correlation >= threshold;
    if (opts.dynamicActivations) {
      if (opts.signal?.aborted) throw new CalibscopeError('E_CANCELLED', 'semantic validation cancelled');
      const { blockSizes, tensors } = activationBlockSizes(prep.model, prep.plan);
      const dyn = await prep.session.forward(prep.encoded, {
        threads: opts.threads,
        signal: opts.signal,
        actQuant: { scheme: profile.format as SchemeName, blockSizes },
      });
      const c = compareSets(prep.encoded, prep.fp16, dyn.embeddings);
      result.dynamic_activations = {
        scheme: profile.format,
        scale_rule: 'standard',
        blocks: "per token, along the input features, the weight tensor's block size",
        global_scale: profile.format === 'nvfp4' ? 'per sequence' : null,
        mean_correlation: c.mean_correlation,
        min_correlation: c.min_correlation,
        worst_query: c.worst_query,
        mean_cosine: c.mean_cosine,
        retrieval_agreement: c.retrieval_agreement,
        weight_only_mean_correlation: result.mean_correlation,
        ...summariseActivations(profile.format, tensors, blockSizes, dyn.actQuant ?? []),
        per_query: c.per_query.map((q) => ({ query: q.query, correlation: q.correlation })),
      };
    }
  } finally {
    prep.session.close();
  }

  if (opts.store !== false) {
    if (profile.review !== null) {
      result.store_note = `not recorded: the profile is signed off by ${profile.review.reviewer} (clear the sign-off to record a new result)`;
    } else {
      const summary: SemanticValidationSummary = {
        mean_correlation: result.mean_correlation,
        min_correlation: result.min_correlation,
        mean_cosine: result.mean_cosine,
        retrieval_agreement: result.retrieval_agreement,
        retrieval_k: RETRIEVAL_K,
        threshold,
        passed: result.passed,
        query_count: result.query_count,
        queries_hash: result.queries_hash,
        timestamp: new Date().toISOString(),
        calibscope_version: CALIBSCOPE_VERSION,
      };
      if (result.dynamic_activations) {
        summary.dynamic_activations = {
          mean_correlation: result.dynamic_activations.mean_correlation,
          min_correlation: result.dynamic_activations.min_correlation,
        };
      }
      try {
        await updateProfile(dir, (p) => {
          const next = p as ProfileWithValidation;
          next.semantic_correlation = result.mean_correlation;
          next.semantic_validation = summary;
        });
        result.stored = true;
      } catch (err) {
        const e = asCalibscopeError(err);
        const errno = readOnlyErrno(err);
        if (e.details.signedOff) result.store_note = `not recorded: ${e.message}`;
        // A profile handed over read-only (another user's, a read-only mount) is still worth
        // validating: the result is reported, only not kept.
        else if (errno) result.store_note = `not recorded: the profile folder ${dir} is read-only (${errno})`;
        else throw e;
      }
    }
  } else {
    result.store_note = 'not recorded (store: false)';
  }
  result.seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (!result.passed && opts.throwOnDrift !== false) throw driftError(result);
  return result;
}
