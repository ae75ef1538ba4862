// Drift attribution: which quantized tensors move the embeddings. For each tensor of a profile the
// encoder reads, the mean correlation of FP16 vs a model where only that tensor is quantized (the
// rest FP16), ranked worst first; then a mixed-precision suggestion: the fewest tensors, taken from
// the worst, to keep at a higher precision (FP8 E4M3 with its own calibration, else FP16) so that
// the whole model passes the threshold — the final combination checked with a real forward pass.
import path from 'node:path';
import { QuantizationCalibrator } from '../calibration/calibrator.js';
import { DEFAULT_CORRELATION_THRESHOLD } from '../calibration/config.js';
import { schemeFor } from '../calibration/schemes.js';
import type { ModelCalibrationProfile } from '../calibration/types.js';
import { CalibscopeError } from '../util/errors.js';
import { layerOf } from './model.js';
import { float32Bytes, quantizeWeight, quantizedWeights, storedBits, type ScalesSource } from './quantized.js';
import { checkQueries, queriesHash } from './queries.js';
import type { EncodedQueries } from './session.js';
import { compareEmbeddings, retrievalAgreement } from './stats.js';
import { RETRIEVAL_K, checkThreshold, openProfileFor, prepareComparison } from './validate.js';

export type KeepPrecision = 'fp8_e4m3' | 'fp16';

export interface AttributionEntry {
  /** The checkpoint's tensor name (as in the profile). */
  tensor: string;
  /** Encoder layer, or null for the embeddings; null too for tensors the encoder does not read. */
  layer: number | null;
  numel: number;
  block_size: number;
  bits_per_weight: number;
  mse_after: number;
  /** Mean / min Pearson correlation over the queries with only this tensor quantized. */
  mean_correlation: number;
  min_correlation: number;
  /** False for profile tensors the encoder does not read (a pooler, a task head): they cannot drift. */
  used: boolean;
}

export interface KeptTensor {
  tensor: string;
  precision: KeepPrecision;
  /** FP8: the block size its own calibration chose. */
  block_size: number | null;
  bits_per_weight: number;
}

export interface MixedPrecisionSuggestion {
  threshold: number;
  /** The verified combination reaches the threshold. */
  passes: boolean;
  /** The model passes as calibrated: nothing needs to be kept at higher precision. */
  already_passes: boolean;
  keep: KeptTensor[];
  /** The combination's own forward pass. */
  mean_correlation: number;
  min_correlation: number;
  retrieval_agreement: number | null;
  /** Over every tensor of the checkpoint (tensors that are not quantized count at their stored width). */
  bits_per_weight: number;
  /** Over the profile's quantized tensors only. */
  bits_per_weight_quantized: number;
  /** The same two figures with every profile tensor at the profile's format. */
  baseline_bits_per_weight: number;
  baseline_bits_per_weight_quantized: number;
  /** Forward passes the search took. */
  evaluations: number;
}

export interface AttributionResult {
  model_id: string;
  format: string;
  profile_path: string | null;
  threshold: number;
  query_count: number;
  queries_hash: string;
  /** The whole model as calibrated. */
  baseline: { mean_correlation: number; min_correlation: number; retrieval_agreement: number | null; passed: boolean };
  /** Worst first. */
  ranking: AttributionEntry[];
  suggestion: MixedPrecisionSuggestion;
  forward_passes: number;
  seconds: number;
}

export interface AttributeOptions {
  threshold?: number;
  threads?: number;
  cacheDir?: string;
  signal?: AbortSignal;
  onProgress?: (fraction: number, detail: string) => void;
  /** Largest cache of per-layer FP16 hidden states, in bytes (default 1 GiB); beyond it every pass starts at the embeddings. */
  layerCacheBytes?: number;
}

/** Attribution for a profile folder. */
export async function attributeDrift(
  modelDir: string,
  profileDir: string,
  queries: readonly string[],
  opts: AttributeOptions = {},
): Promise<AttributionResult> {
  const dir = path.resolve(profileDir);
  const profile = await openProfileFor(modelDir, dir, opts.cacheDir);
  return attributeWithScales(modelDir, { kind: 'profile', dir, profile }, queries, opts);
}

type State = 'format' | 'fp16' | 'fp8';

/** Attribution with scales from a profile folder or from calibrations held in memory. */
export async function attributeWithScales(
  modelDir: string,
  src: ScalesSource,
  queries: readonly string[],
  opts: AttributeOptions = {},
): Promise<AttributionResult> {
  const started = process.hrtime.bigint();
  checkQueries(queries);
  const threshold = checkThreshold(opts.threshold ?? DEFAULT_CORRELATION_THRESHOLD);
  const profile: ModelCalibrationProfile = src.profile;
  const progress = (f: number, d: string) => opts.onProgress?.(Math.min(1, f), d);
  const cancelled = () => {
    if (opts.signal?.aborted) throw new CalibscopeError('E_CANCELLED', 'drift attribution cancelled');
  };

  // Whether the per-layer FP16 states fit the cache budget decides if a pass may start mid-model.
  const prep0 = await prepareComparison(modelDir, src, queries, {
    threads: opts.threads,
    signal: opts.signal,
    capture: true,
    onProgress: (f, d) => progress(0.1 * f, d),
  });
  const { model, session, encoded, plan, fp16 } = prep0;
  let layerInputs = prep0.layerInputs;
  let quantized: Map<string, Float32Array>;
  try {
    // Kept for the whole run: every pass swaps some of them in.
    quantized = await quantizedWeights(model, src, plan, {
      threads: opts.threads,
      onTensor: (d, k) => progress(0.1 * (d / k), `quantizing weights ${d}/${k}`),
    });
  } catch (err) {
    session.close();
    throw err;
  }
  const cacheBytes = (layerInputs ?? []).reduce((a, x) => a + x.byteLength, 0);
  if (cacheBytes > (opts.layerCacheBytes ?? 1 << 30)) layerInputs = undefined;

  let passes = 1;
  try {
    const run = async (q: EncodedQueries, startLayer = 0) => {
      cancelled();
      passes++;
      const useCache = startLayer > 0 && layerInputs !== undefined;
      const r = await session.forward(q, {
        threads: opts.threads,
        signal: opts.signal,
        startLayer: useCache ? startLayer : 0,
        hiddenIn: useCache ? layerInputs![startLayer] : undefined,
      });
      return r.embeddings;
    };
    const stats = (emb: Float32Array[], withRetrieval: boolean) => {
      const s = compareEmbeddings(fp16, emb);
      return { mean: s.mean, min: s.min, retrieval: withRetrieval ? retrievalAgreement(fp16, emb, RETRIEVAL_K) : null };
    };

    // The model as calibrated.
    for (const [name, data] of quantized) session.setWeight(name, data);
    const base = stats(await run(encoded), true);
    session.restore();

    // One tensor at a time.
    const ranking: AttributionEntry[] = [];
    for (const [i, u] of plan.used.entries()) {
      progress(0.1 + 0.6 * (i / Math.max(1, plan.used.length)), `attribution ${i + 1}/${plan.used.length}: ${u.tensor}`);
      session.setWeight(u.encoderName, quantized.get(u.encoderName)!);
      const layer = layerOf(u.encoderName);
      const s = stats(await run(encoded, layer >= 0 ? layer : 0), false);
      session.restore(u.encoderName);
      ranking.push({
        tensor: u.tensor,
        layer: layer >= 0 ? layer : null,
        numel: u.result.numel,
        block_size: u.result.block_size,
        bits_per_weight: u.result.bits_per_weight,
        mse_after: u.result.mse_after,
        mean_correlation: s.mean,
        min_correlation: s.min,
        used: true,
      });
    }
    ranking.sort((a, b) => a.mean_correlation - b.mean_correlation || a.tensor.localeCompare(b.tensor));
    for (const name of plan.unused) {
      const r = profile.tensor_calibrations[name];
      ranking.push({
        tensor: name,
        layer: null,
        numel: r.numel,
        block_size: r.block_size,
        bits_per_weight: r.bits_per_weight,
        mse_after: r.mse_after,
        mean_correlation: 1,
        min_correlation: 1,
        used: false,
      });
    }

    // The suggestion: keep the worst tensors at a higher precision until the model passes.
    const order = ranking.filter((e) => e.used).map((e) => plan.used.find((u) => u.tensor === e.tensor)!);
    const fp8Available = schemeFor(profile.format).elementBits < 8;
    const fp8 = new Map<string, { xhat: Float32Array; blockSize: number; bits: number }>();
    const fp8Calibrator = new QuantizationCalibrator({ format: 'fp8_e4m3', block_policy: 'bits' });
    const fp8Of = async (encName: string) => {
      let e = fp8.get(encName);
      if (!e) {
        const w = model.weights.get(encName)!;
        const tc = await fp8Calibrator.calibrateTensor(
          { name: w.checkpointName, dtype: 'F32', shape: w.shape, data: float32Bytes(w.data) },
          { threads: opts.threads, diagnostics: false, signal: opts.signal },
        );
        e = { xhat: await quantizeWeight(model, encName, tc.result, tc, opts.threads), blockSize: tc.result.block_size, bits: tc.result.bits_per_weight };
        fp8.set(encName, e);
      }
      return e;
    };
    const current = new Map<string, State>(order.map((u) => [u.encoderName, 'fp16' as State]));
    const apply = async (states: State[]) => {
      for (const [i, u] of order.entries()) {
        const want = states[i];
        if (current.get(u.encoderName) === want) continue;
        if (want === 'format') session.setWeight(u.encoderName, quantized.get(u.encoderName)!);
        else if (want === 'fp8') session.setWeight(u.encoderName, (await fp8Of(u.encoderName)).xhat);
        else session.restore(u.encoderName);
        current.set(u.encoderName, want);
      }
    };
    const n = order.length;
    // Phase "fp8": the worst k at FP8, the rest at the format. Phase "fp16": the worst k at FP16,
    // the rest at FP8 (or at the format when FP8 is no higher than it).
    const statesFor = (phase: 'fp8' | 'fp16', k: number): State[] =>
      order.map((_, i) => (i < k ? phase : phase === 'fp16' && fp8Available ? 'fp8' : 'format'));
    const memo = new Map<string, { mean: number; min: number; retrieval: number | null }>();
    let evaluations = 0;
    const evaluate = async (phase: 'fp8' | 'fp16', k: number) => {
      const key = `${phase}:${k}`;
      let s = memo.get(key);
      if (!s) {
        progress(0.7 + 0.3 * Math.min(1, evaluations / (2 * Math.log2(n + 2) + 2)), `mixed precision: ${phase} for the worst ${k}`);
        await apply(statesFor(phase, k));
        s = stats(await run(encoded), true);
        evaluations++;
        memo.set(key, s);
      }
      return s;
    };
    /** The least k in 1..n that passes (exponential then binary search from the worst), or null. */
    const search = async (phase: 'fp8' | 'fp16'): Promise<number | null> => {
      let lo = 0;
      let hi = 0;
      for (let k = 1; ; k = Math.min(n, k * 2)) {
        if ((await evaluate(phase, k)).mean >= threshold) {
          hi = k;
          break;
        }
        lo = k;
        if (k === n) return null;
      }
      while (hi - lo > 1) {
        const mid = (lo + hi) >> 1;
        if ((await evaluate(phase, mid)).mean >= threshold) hi = mid;
        else lo = mid;
      }
      return hi;
    };

    let phase: 'fp8' | 'fp16' = fp8Available ? 'fp8' : 'fp16';
    let k = 0;
    let final = base;
    if (base.mean < threshold && n > 0) {
      let found = fp8Available ? await search('fp8') : null;
      if (found === null) {
        phase = 'fp16';
        found = await search('fp16');
      }
      k = found ?? n;
      final = await evaluate(phase, k);
    }
    const states = k === 0 ? order.map(() => 'format' as State) : statesFor(phase, k);

    // bits/weight of the suggested model and of the model as calibrated.
    const stateOf = new Map<string, State>(order.map((u, i) => [u.tensor, states[i]]));
    let bits = 0;
    let bitsBase = 0;
    let numel = 0;
    let qBits = 0;
    let qBitsBase = 0;
    let qNumel = 0;
    const keep: KeptTensor[] = [];
    for (const t of model.tensors) {
      const r = profile.tensor_calibrations[t.name];
      if (!r) {
        bits += storedBits(t.dtype) * t.numel;
        bitsBase += storedBits(t.dtype) * t.numel;
        numel += t.numel;
        continue;
      }
      const st = stateOf.get(t.name) ?? 'format';
      let b = r.bits_per_weight;
      if (st === 'fp8') {
        const e = await fp8Of(model.byCheckpointName.get(t.name)!);
        b = e.bits;
        keep.push({ tensor: t.name, precision: 'fp8_e4m3', block_size: e.blockSize, bits_per_weight: e.bits });
      } else if (st === 'fp16') {
        b = 16;
        keep.push({ tensor: t.name, precision: 'fp16', block_size: null, bits_per_weight: 16 });
      }
      bits += b * r.numel;
      bitsBase += r.bits_per_weight * r.numel;
      numel += r.numel;
      qBits += b * r.numel;
      qBitsBase += r.bits_per_weight * r.numel;
      qNumel += r.numel;
    }
    // In ranking order, worst first.
    const rank = new Map(ranking.map((e, i) => [e.tensor, i]));
    keep.sort((a, b) => rank.get(a.tensor)! - rank.get(b.tensor)!);

    const suggestion: MixedPrecisionSuggestion = {
      threshold,
      passes: final.mean >= threshold,
      already_passes: base.mean >= threshold,
      keep,
      mean_correlation: final.mean,
      min_correlation: final.min,
      retrieval_agreement: final.retrieval,
      bits_per_weight: numel > 0 ? bits / numel : 0,
      bits_per_weight_quantized: qNumel > 0 ? qBits / qNumel : 0,
      baseline_bits_per_weight: numel > 0 ? bitsBase / numel : 0,
      baseline_bits_per_weight_quantized: qNumel > 0 ? qBitsBase / qNumel : 0,
      evaluations,
    };
    progress(1, 'done');
    return {
      model_id: profile.model_id,
      format: profile.format,
      profile_path: src.kind === 'profile' ? src.dir : null,
      threshold,
      query_count: queries.length,
      queries_hash: queriesHash(queries),
      baseline: { mean_correlation: base.mean, min_correlation: base.min, retrieval_agreement: base.retrieval, passed: base.mean >= threshold },
      ranking,
      suggestion,
      forward_passes: passes,
      seconds: Number(process.hrtime.bigint() - started) / 1e9,
    };
  } finally {
    session.close();
  }
}
