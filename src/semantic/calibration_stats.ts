// Calibration statistics for the activation-aware and entropy-aware modes (docs/modes.md): the
// calibration queries run once through the checkpoint's own (FP16) weights, keeping per Linear
// layer the second moment E[x_j²] of each input feature over the attended tokens, and per
// attention head its mean attention entropy. Cached beside the profiles:
//   <cache>/stats/<model-id>/<checkpoint-hash>-<query-set-hash>.safetensors  (F64 tensors)
//   <cache>/stats/<model-id>/<checkpoint-hash>-<query-set-hash>.json         (what they are)
// The JSON is written last and names the safetensors file's SHA-256 (the statistics' hash), so a
// half-written or altered pair is never used: it is collected again.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { openCheckpoint } from '../checkpoints/checkpoint.js';
import { SafetensorsFile } from '../checkpoints/safetensors.js';
import { encodeSafetensors } from '../checkpoints/safetensors_writer.js';
import { currentCheckpointHash } from '../profiles/hash_cache.js';
import { safeModelId } from '../profiles/paths.js';
import { writeFileAtomic } from '../util/atomic.js';
import { CalibscopeError, asCalibscopeError } from '../util/errors.js';
import { CALIBSCOPE_VERSION } from '../version.js';
import { loadSemanticModel, type SemanticModel } from './model.js';
import { checkQueries, loadQueries, queriesHash } from './queries.js';
import { EncoderSession } from './session.js';

export const STATS_DIR = 'stats';
const STATS_FORMAT_VERSION = 2;
const MAX_STATS_JSON = 64 << 20;

/** Which activation a Linear layer reads. */
export type LinearInput = 'layer_input' | 'attention_context' | 'attention_output' | 'intermediate_activation' | 'cls_hidden';

export interface LinearStats {
  /** The Linear's weight as the checkpoint names it (as in the profile). */
  tensor: string;
  /** Its name in the encoder (Hugging Face BertModel naming). */
  encoder_name: string;
  /** Encoder layer, or -1 for the pooler. */
  layer: number;
  input: LinearInput;
  in_features: number;
  /** Input rows summed: attended tokens (the pooler: sequences). */
  count: number;
  /** E[x_j²] over those rows, one per input feature. */
  mean_sq: Float64Array;
  /** E[x_j] over those rows, one per input feature. */
  mean: Float64Array;
}

export interface CalibrationStats {
  model_id: string;
  checkpoint_hash: string;
  queries_hash: string;
  query_count: number;
  tokens: number;
  sequences: number;
  layers: number;
  heads: number;
  /** Linear layers by checkpoint weight name. */
  linears: Map<string, LinearStats>;
  /** layers × heads: mean attention entropy (nats) over the attended query tokens. */
  attention_entropy: Float64Array;
  /** `sha256:` of the statistics' safetensors image: what a profile records. */
  statistics_hash: string;
  /** Seconds the collection took (load, forward pass, sums). */
  seconds: number;
}

export interface CollectOptions {
  threads?: number;
  signal?: AbortSignal;
  /** The checkpoint hash, when the caller has it (otherwise computed, through the stat cache of `cacheDir`). */
  checkpointHash?: string;
  cacheDir?: string | null;
  /** The id to record (default: the checkpoint's). */
  modelId?: string;
  onProgress?: (fraction: number, detail: string) => void;
}

const LINEARS: { name: string; input: LinearInput; key: 'input' | 'context' | 'attentionOutput' | 'intermediate' }[] = [
  { name: 'attention.self.query', input: 'layer_input', key: 'input' },
  { name: 'attention.self.key', input: 'layer_input', key: 'input' },
  { name: 'attention.self.value', input: 'layer_input', key: 'input' },
  { name: 'attention.output.dense', input: 'attention_context', key: 'context' },
  { name: 'intermediate.dense', input: 'attention_output', key: 'attentionOutput' },
  { name: 'output.dense', input: 'intermediate_activation', key: 'intermediate' },
];

/** The checkpoint's pooler.dense weight, named as the checkpoint names it (same prefix as the embeddings), if any. */
function poolerTensor(model: SemanticModel): string | undefined {
  const word = model.weights.get('embeddings.word_embeddings.weight');
  if (!word) return undefined;
  const prefix = word.checkpointName.slice(0, word.checkpointName.length - 'embeddings.word_embeddings.weight'.length);
  const H = model.config.hiddenSize;
  const t = model.tensors.find((x) => x.name === `${prefix}pooler.dense.weight`);
  return t && t.shape.length === 2 && t.shape[0] === H && t.shape[1] === H ? t.name : undefined;
}

function needsBert(modelDir: string, err: unknown): CalibscopeError {
  const e = asCalibscopeError(err);
  if (e.code === 'E_CANCELLED' || e.code === 'E_OUT_OF_MEMORY') return e;
  return new CalibscopeError(
    e.code,
    `calibration statistics for ${modelDir} need calibscope's BERT encoder to run the model (the activation-aware and ` +
      `entropy-aware modes; --mode static needs none): ${e.message}`,
    { ...e.details, model: modelDir, reason: 'statistics_need_encoder' },
  );
}

/**
 * Runs the queries through the model's own weights once and returns the statistics. Bad input:
 * E_BAD_ARGUMENT (no queries), E_BAD_CHECKPOINT / E_NOT_FOUND (not a BERT-family folder the encoder
 * runs, with the reason).
 */
export async function collectCalibrationStats(modelDir: string, queries: readonly string[], opts: CollectOptions = {}): Promise<CalibrationStats> {
  const started = process.hrtime.bigint();
  checkQueries(queries);
  let model: SemanticModel;
  try {
    model = await loadSemanticModel(modelDir);
  } catch (err) {
    throw needsBert(modelDir, err);
  }
  opts.onProgress?.(0.2, 'statistics: model loaded');
  let ckptHash = opts.checkpointHash;
  if (!ckptHash) {
    const ckpt = await openCheckpoint(model.modelDir);
    try {
      ckptHash = (await currentCheckpointHash(ckpt, opts.cacheDir ?? null)).hash;
    } finally {
      await ckpt.close();
    }
  }
  const session = EncoderSession.fromModel(model);
  let out;
  try {
    const q = session.encode(queries);
    out = await session.forward(q, {
      stats: true,
      threads: opts.threads,
      signal: opts.signal,
      onProgress: (f) => opts.onProgress?.(0.2 + 0.8 * f, 'statistics: forward pass'),
    });
  } finally {
    session.close();
  }
  const st = out.stats!;
  const { numLayers: L, numHeads: nh } = model.config;
  const linears = new Map<string, LinearStats>();
  const mean = (sum: Float64Array, count: number) => sum.map((v) => (count > 0 ? v / count : 0));
  for (let l = 0; l < L; l++) {
    for (const lin of LINEARS) {
      const encoderName = `encoder.layer.${l}.${lin.name}.weight`;
      const tensor = model.weights.get(encoderName)!.checkpointName;
      const sum = st.layers[l][lin.key];
      const lsum = st.layers[l][`${lin.key}Sum`];
      linears.set(tensor, {
        tensor,
        encoder_name: encoderName,
        layer: l,
        input: lin.input,
        in_features: sum.length,
        count: out.tokens,
        mean_sq: mean(sum, out.tokens),
        mean: mean(lsum, out.tokens),
      });
    }
  }
  const pooler = poolerTensor(model);
  if (pooler) {
    linears.set(pooler, {
      tensor: pooler,
      encoder_name: 'pooler.dense.weight',
      layer: -1,
      input: 'cls_hidden',
      in_features: st.pooler.length,
      count: out.sequences,
      mean_sq: mean(st.pooler, out.sequences),
      mean: mean(st.poolerSum, out.sequences),
    });
  }
  const entropy = new Float64Array(L * nh);
  for (let l = 0; l < L; l++) for (let h = 0; h < nh; h++) entropy[l * nh + h] = out.tokens > 0 ? st.layers[l].entropy[h] / out.tokens : 0;
  const stats: CalibrationStats = {
    model_id: opts.modelId ?? model.modelId,
    checkpoint_hash: ckptHash,
    queries_hash: queriesHash(queries),
    query_count: queries.length,
    tokens: out.tokens,
    sequences: out.sequences,
    layers: L,
    heads: nh,
    linears,
    attention_entropy: entropy,
    statistics_hash: '',
    seconds: 0,
  };
  stats.statistics_hash = `sha256:${crypto.createHash('sha256').update(encodeStats(stats)).digest('hex')}`;
  stats.seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return stats;
}

function f64Bytes(a: Float64Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** The statistics as a safetensors image: deterministic bytes (no times, tensors in a fixed order). */
export function encodeStats(s: CalibrationStats): Buffer {
  const tensors = [...s.linears.values()]
    .sort((a, b) => (a.tensor < b.tensor ? -1 : a.tensor > b.tensor ? 1 : 0))
    .flatMap((x) => [
      { name: x.tensor, dtype: 'F64', shape: [x.in_features], data: f64Bytes(x.mean_sq) },
      { name: `__mean__.${x.tensor}`, dtype: 'F64', shape: [x.in_features], data: f64Bytes(x.mean) },
    ]);
  tensors.push({ name: '__attention_entropy__', dtype: 'F64', shape: [s.layers, s.heads], data: f64Bytes(s.attention_entropy) });
  return encodeSafetensors(tensors, {
    format: 'calibscope-calibration-statistics',
    format_version: String(STATS_FORMAT_VERSION),
    checkpoint_hash: s.checkpoint_hash,
    queries_hash: s.queries_hash,
    tokens: String(s.tokens),
    sequences: String(s.sequences),
  });
}

function hex16(hash: string): string {
  return hash.replace(/^sha256:/, '').slice(0, 16);
}

/** The statistics' files for a checkpoint and query set in `cacheDir` (without extension). */
export function statsBasePath(cacheDir: string, modelId: string, checkpointHash: string, queriesHashValue: string): string {
  return path.join(path.resolve(cacheDir), STATS_DIR, safeModelId(modelId), `${hex16(checkpointHash)}-${hex16(queriesHashValue)}`);
}

interface StatsJson {
  format_version: number;
  model_id: string;
  checkpoint_hash: string;
  queries_hash: string;
  query_count: number;
  tokens: number;
  sequences: number;
  layers: number;
  heads: number;
  statistics_hash: string;
  linears: Omit<LinearStats, 'mean_sq' | 'mean'>[];
  attention_entropy: number[][];
  seconds: number;
  timestamp: string;
  calibscope_version: string;
}

function toJson(s: CalibrationStats): StatsJson {
  const entropy: number[][] = [];
  for (let l = 0; l < s.layers; l++) entropy.push(Array.from(s.attention_entropy.subarray(l * s.heads, (l + 1) * s.heads)));
  return {
    format_version: STATS_FORMAT_VERSION,
    model_id: s.model_id,
    checkpoint_hash: s.checkpoint_hash,
    queries_hash: s.queries_hash,
    query_count: s.query_count,
    tokens: s.tokens,
    sequences: s.sequences,
    layers: s.layers,
    heads: s.heads,
    statistics_hash: s.statistics_hash,
    linears: [...s.linears.values()].map(({ mean_sq: _m, mean: _u, ...rest }) => rest),
    attention_entropy: entropy,
    seconds: s.seconds,
    timestamp: new Date().toISOString(),
    calibscope_version: CALIBSCOPE_VERSION,
  };
}

/** Writes the pair atomically: the safetensors image first, then the JSON that vouches for it. */
export async function saveStats(base: string, s: CalibrationStats): Promise<void> {
  const image = encodeStats(s);
  const hash = `sha256:${crypto.createHash('sha256').update(image).digest('hex')}`;
  if (hash !== s.statistics_hash) throw new CalibscopeError('E_INTERNAL', `statistics hash mismatch for ${base}`);
  try {
    await fs.promises.mkdir(path.dirname(base), { recursive: true });
    await writeFileAtomic(`${base}.safetensors`, image);
    await writeFileAtomic(`${base}.json`, `${JSON.stringify(toJson(s), null, 2)}\n`);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new CalibscopeError('E_IO', `cannot write calibration statistics ${base}.json: ${e.message}`, { path: `${base}.json`, errno: e.code });
  }
}

/** Reads a cached pair; null when it is missing, damaged, or not for this checkpoint and query set. */
export async function loadStats(base: string, expect: { checkpointHash: string; queriesHash: string }): Promise<CalibrationStats | null> {
  let json: StatsJson;
  let image: Buffer;
  try {
    const st = await fs.promises.stat(`${base}.json`);
    if (!st.isFile() || st.size > MAX_STATS_JSON) return null;
    json = JSON.parse(await fs.promises.readFile(`${base}.json`, 'utf8')) as StatsJson;
    image = await fs.promises.readFile(`${base}.safetensors`);
  } catch {
    return null;
  }
  if (typeof json !== 'object' || json === null || json.format_version !== STATS_FORMAT_VERSION) return null;
  if (json.checkpoint_hash !== expect.checkpointHash || json.queries_hash !== expect.queriesHash) return null;
  const hash = `sha256:${crypto.createHash('sha256').update(image).digest('hex')}`;
  if (hash !== json.statistics_hash || !Array.isArray(json.linears)) return null;
  let f: SafetensorsFile | null = null;
  try {
    f = await SafetensorsFile.open(`${base}.safetensors`);
    // The hash vouches for the safetensors image only; the JSON's description of it (which Linear
    // layers it covers, for which checkpoint and queries) must agree with the image. Otherwise a
    // damaged JSON that still names the right hash (a Linear dropped from `linears`, say) would
    // silently give those tensors plain squared error instead of their statistics.
    const md = f.metadata;
    if (
      md.format !== 'calibscope-calibration-statistics' ||
      md.checkpoint_hash !== json.checkpoint_hash ||
      md.queries_hash !== json.queries_hash ||
      md.tokens !== String(json.tokens) ||
      md.sequences !== String(json.sequences)
    ) {
      return null;
    }
    const listed = new Set(json.linears.map((x) => (x && typeof x === 'object' ? x.tensor : undefined)));
    const stored = f.tensors.map((t) => t.name).filter((n) => n !== '__attention_entropy__' && !n.startsWith('__mean__.'));
    if (listed.size !== json.linears.length || stored.length !== listed.size || !stored.every((n) => listed.has(n))) return null;
    const read = async (name: string, n: number): Promise<Float64Array | null> => {
      const t = f!.tensor(name);
      if (!t || t.dtype !== 'F64' || t.numel !== n) return null;
      const b = await f!.readTensor(t);
      return new Float64Array(new Uint8Array(b).buffer);
    };
    const linears = new Map<string, LinearStats>();
    for (const x of json.linears) {
      const mean_sq = await read(x.tensor, x.in_features);
      const mean = await read(`__mean__.${x.tensor}`, x.in_features);
      if (!mean_sq || !mean) return null;
      linears.set(x.tensor, { ...x, mean_sq, mean });
    }
    // layers × heads as the JSON says (swapped, the head weights would go to the wrong heads).
    const et = f.tensor('__attention_entropy__');
    if (!et || et.shape.length !== 2 || et.shape[0] !== json.layers || et.shape[1] !== json.heads) return null;
    const entropy = await read('__attention_entropy__', json.layers * json.heads);
    if (!entropy) return null;
    // The file read must be the one hashed above (not replaced in between).
    const again = `sha256:${crypto.createHash('sha256').update(await fs.promises.readFile(`${base}.safetensors`)).digest('hex')}`;
    if (again !== hash) return null;
    return {
      model_id: json.model_id,
      checkpoint_hash: json.checkpoint_hash,
      queries_hash: json.queries_hash,
      query_count: json.query_count,
      tokens: json.tokens,
      sequences: json.sequences,
      layers: json.layers,
      heads: json.heads,
      linears,
      attention_entropy: entropy,
      statistics_hash: json.statistics_hash,
      seconds: json.seconds,
    };
  } catch {
    return null;
  } finally {
    await f?.close().catch(() => undefined);
  }
}

export interface CachedStatsOptions extends Omit<CollectOptions, 'cacheDir'> {
  cacheDir: string;
  /** Collect again even when a valid cached pair exists. */
  force?: boolean;
}

export interface CachedStats {
  stats: CalibrationStats;
  /** True when the cache answered. */
  cached: boolean;
  /** The files' path without extension. */
  path: string;
}

/**
 * The statistics of a checkpoint for a query set: from the cache when a valid pair is there,
 * otherwise collected and cached. Keyed by the checkpoint's content hash and the query set's hash.
 */
export async function calibrationStatsCached(modelDir: string, queries: readonly string[], opts: CachedStatsOptions): Promise<CachedStats> {
  checkQueries(queries);
  const cacheDir = path.resolve(opts.cacheDir);
  let ckptHash = opts.checkpointHash;
  let modelId = opts.modelId;
  if (!ckptHash || !modelId) {
    let ckpt;
    try {
      ckpt = await openCheckpoint(modelDir);
    } catch (err) {
      throw needsBert(modelDir, err);
    }
    try {
      modelId ??= ckpt.modelId;
      ckptHash ??= (await currentCheckpointHash(ckpt, cacheDir)).hash;
    } finally {
      await ckpt.close();
    }
  }
  const qh = queriesHash(queries);
  const base = statsBasePath(cacheDir, modelId, ckptHash, qh);
  if (!opts.force) {
    const hit = await loadStats(base, { checkpointHash: ckptHash, queriesHash: qh });
    if (hit) return { stats: hit, cached: true, path: base };
  }
  const stats = await collectCalibrationStats(modelDir, queries, { ...opts, cacheDir, checkpointHash: ckptHash, modelId });
  await saveStats(base, stats);
  return { stats, cached: false, path: base };
}

/** `queriesHash` of the shipped default query set (assets/), read once. */
let defaultHash: Promise<{ hash: string; queries: string[] }> | undefined;
export function defaultQuerySet(): Promise<{ hash: string; queries: string[] }> {
  defaultHash ??= loadQueries().then(({ queries }) => ({ hash: queriesHash(queries), queries }));
  defaultHash.catch(() => {
    defaultHash = undefined;
  });
  return defaultHash;
}

/** The config's calibration_queries_hash for a query set: null for the shipped default set. */
export async function calibrationQueriesHash(queries: readonly string[]): Promise<string | null> {
  const h = queriesHash(queries);
  return h === (await defaultQuerySet()).hash ? null : h;
}

/**
 * The calibration queries a weighted config names: the shipped set when its
 * calibration_queries_hash is null, otherwise `queries`, which must hash to it.
 */
export async function resolveCalibrationQueries(
  config: { mode?: string; calibration_queries_hash?: string | null },
  queries?: readonly string[],
): Promise<string[]> {
  const want = config.calibration_queries_hash ?? null;
  if (want === null) {
    const d = await defaultQuerySet();
    if (queries && queriesHash(queries) !== d.hash) {
      throw new CalibscopeError('E_BAD_ARGUMENT', `the config names the default calibration query set, but other queries were given (${queriesHash(queries)})`, {
        queries_hash: queriesHash(queries),
        expected: d.hash,
      });
    }
    return d.queries;
  }
  if (!queries) {
    throw new CalibscopeError('E_BAD_ARGUMENT', `--mode ${config.mode}: the config names the calibration query set ${want}; give those queries (--queries FILE)`, {
      calibration_queries_hash: want,
    });
  }
  if (queriesHash(queries) !== want) {
    throw new CalibscopeError('E_BAD_ARGUMENT', `the calibration queries hash to ${queriesHash(queries)}, but the config names ${want}`, {
      queries_hash: queriesHash(queries),
      calibration_queries_hash: want,
    });
  }
  return [...queries];
}
