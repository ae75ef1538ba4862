// Semantic alignment on the command line:
//   calibscope embed <model> [--queries FILE] --json
//   calibscope validate <model> (--profile DIR | --format F [--cache DIR]) [--queries FILE] [--threshold T]
//   calibscope attribute <model> (--format F [--cache DIR] | --profile DIR) [--queries FILE] [--threshold T]
// and the `--validate` step of `calibscope calibrate`.
import path from 'node:path';
import { QuantizationCalibrator } from '../../calibration/calibrator.js';
import { DEFAULT_CORRELATION_THRESHOLD } from '../../calibration/config.js';
import { calibrateCached, openCacheMode } from '../../profiles/cache.js';
import { defaultCacheDir } from '../../profiles/paths.js';
import { loadProfile } from '../../profiles/store.js';
import { attributeDrift, type AttributionResult } from '../../semantic/attribution.js';
import { calibrationQueriesHash } from '../../semantic/calibration_stats.js';
import { embedWithInfo } from '../../semantic/embed.js';
import { DEFAULT_QUERIES_FILE, loadQueries } from '../../semantic/queries.js';
import { driftError, validateSemanticAlignment, type ValidationResult } from '../../semantic/validate.js';
import { CalibscopeError } from '../../util/errors.js';
import { FORMAT_CHOICES, intOption, numberOption, parseArgs, positionalsText, type ParsedArgs } from '../args.js';
import { CONFIG_SPEC, MODEL_ID_HELP, configInput, modelIdOption } from '../config_options.js';
import type { CommandContext } from '../context.js';
import { eng, table } from '../format.js';
import { ProgressBar } from '../progress.js';

const QUERIES_LINE = `  --queries FILE          one query a line (default: the shipped set, assets/${path.basename(DEFAULT_QUERIES_FILE)})`;

export const EMBED_HELP = `calibscope embed <model> [--queries FILE] [--threads N] [--json]

  Embeds the queries with the model's own (FP16) weights, pooled as the model folder says.
${QUERIES_LINE}
  --json                  {"model_id", "max_length", "embeddings": [{"query", "input_ids", "embedding",
                          "truncated"}], "truncated": [indices of queries cut at max_length]}`;

export const VALIDATE_HELP = `calibscope validate <model> (--profile DIR | --format F [--cache DIR]) [options]

  Embeds the queries with FP16 weights and with the weights quantize-dequantized by the profile's
  scales; reports the Pearson correlation per query, its mean and min, the mean cosine and the
  top-10 retrieval agreement, and records them in the profile. Exits 1 with E_SEMANTIC_DRIFT when
  the mean correlation is below the threshold.
  --profile DIR           the profile folder to validate
  --format F              the cached profile for this format (and config options, as calibrate);
                          calibrated into the cache first when there is none
${MODEL_ID_HELP}
${QUERIES_LINE}
  --threshold T           least mean Pearson correlation (default ${DEFAULT_CORRELATION_THRESHOLD})
  --mode M                with --format: the profile of this calibration mode (docs/modes.md)
  --calibration-queries FILE
                          with --format and a weighted mode: the calibration query set the profile
                          was (or is) calibrated with (default: the shipped set; --queries is only
                          the validation set)
  --dynamic-activations   also quantize every Linear layer's input on the fly (per token, blocks
                          along the hidden dimension, the weight's scheme and block size, standard
                          absmax scales) and report that correlation beside the weight-only one,
                          with the range of activation scales seen (docs/modes.md)
  --json                  {"model_id", "format", "mean_correlation", "min_correlation", "per_query",
                          "retrieval_agreement", "threshold", "passed", "dynamic_activations"?, ...}`;

export const ATTRIBUTE_HELP = `calibscope attribute <model> (--format F [--cache DIR] | --profile DIR) [options]

  Drift attribution: the mean correlation with only one tensor quantized (the rest FP16), for each
  tensor, worst first; and the fewest tensors to keep at higher precision (FP8 E4M3 with its own
  calibration, else FP16) so that the model passes the threshold, with its bits per weight.
${QUERIES_LINE}
  --threshold T           (default ${DEFAULT_CORRELATION_THRESHOLD})
  --mode M, --calibration-queries FILE, --model-id ID
                          with --format: the calibration mode's profile, as for validate
  --json                  {"model_id", "format", "baseline", "ranking": [...], "suggestion": {...}}`;

/** The options `calibrate --validate` adds. */
export const VALIDATE_SPEC = { validate: 'boolean', queries: 'string', threshold: 'string', 'dynamic-activations': 'boolean' } as const;

const COMMON = { queries: 'string', threads: 'string', json: 'boolean' } as const;

/** validate and attribute: a model with its profile, by --profile or by --format and the config. */
const PROFILE_COMMAND_SPEC = {
  ...COMMON,
  ...CONFIG_SPEC,
  profile: 'string',
  cache: 'string',
  threshold: 'string',
  'calibration-queries': 'string',
  'model-id': 'string',
} as const;

function oneModel(positionals: string[], cmd: string): string {
  if (positionals.length !== 1) throw new CalibscopeError('E_BAD_ARGUMENT', `${cmd} takes one model folder, got ${positionalsText(positionals)}`);
  return positionals[0];
}

/** --threshold, checked (calibrate calls it before calibrating, so that a bad value costs no run). */
export function thresholdOf(options: ParsedArgs['options']): number {
  const t = numberOption(options.threshold, 'threshold') ?? DEFAULT_CORRELATION_THRESHOLD;
  if (!(t >= -1 && t <= 1)) throw new CalibscopeError('E_BAD_ARGUMENT', `--threshold must be in [-1, 1], got ${t}`, { option: 'threshold', value: options.threshold });
  return t;
}

function fixed(x: number, d = 6): string {
  return Number.isFinite(x) ? x.toFixed(d) : String(x);
}

/** A single query has no neighbours, so its retrieval agreement is not measured (null). */
function agreement(x: number | null): string {
  return x === null ? 'n/a (needs 2 queries)' : fixed(x, 4);
}

function short(s: string, n = 60): string {
  const one = s.replace(/\s+/g, ' ');
  return one.length > n ? `${one.slice(0, n - 1)}…` : one;
}

/** The profile folder a command works on: --profile, or the cache's profile for --format (calibrated when missing). */
async function resolveProfile(
  model: string,
  options: ParsedArgs['options'],
  ctx: CommandContext,
): Promise<{ dir: string; cacheDir?: string; calibrated: boolean }> {
  if (typeof options.profile === 'string') {
    if (options.format !== undefined) throw new CalibscopeError('E_BAD_ARGUMENT', 'give --profile or --format, not both');
    if (options['model-id'] !== undefined) throw new CalibscopeError('E_BAD_ARGUMENT', '--model-id names a cached profile (with --format), not --profile');
    return { dir: path.resolve(options.profile), calibrated: false };
  }
  if (typeof options.format !== 'string') throw new CalibscopeError('E_BAD_FORMAT', `--profile DIR or --format F (${FORMAT_CHOICES}) is required`);
  // A weighted mode's calibration set: --calibration-queries, else the shipped set (never the
  // validation queries, which would then be calibrated on).
  const queries = typeof options['calibration-queries'] === 'string' ? (await loadQueries(options['calibration-queries'])).queries : undefined;
  const queriesHashValue = queries ? await calibrationQueriesHash(queries) : null;
  const calibrator = new QuantizationCalibrator({ ...configInput(options), format: options.format, calibration_queries_hash: queriesHashValue });
  const cacheDir = typeof options.cache === 'string' ? path.resolve(options.cache) : defaultCacheDir();
  // A read-only cache still serves its valid profiles.
  const { readOnly } = await openCacheMode(cacheDir);
  const bar = new ProgressBar(process.stderr, !ctx.json && Boolean(process.stderr.isTTY));
  try {
    const r = await calibrateCached({
      cacheDir,
      readOnly,
      model,
      modelId: modelIdOption(options),
      config: calibrator.config,
      threads: intOption(options.threads, 'threads', 1, 1024),
      queries: queriesHashValue === null ? undefined : queries,
      signal: ctx.signal,
      onProgress: (p) => bar.update(p.elementsTotal > 0 ? p.elementsDone / p.elementsTotal : 1, `calibrating ${p.tensor ?? ''}`),
    });
    return { dir: r.profilePath, cacheDir, calibrated: !r.cached };
  } finally {
    bar.done();
  }
}

export async function embedCommand(argv: string[], ctx: CommandContext): Promise<number> {
  const { positionals, options } = parseArgs(argv, COMMON);
  ctx.json = Boolean(options.json);
  const model = oneModel(positionals, 'embed');
  const { queries } = await loadQueries(options.queries as string | undefined);
  const r = await embedWithInfo(model, queries, { threads: intOption(options.threads, 'threads', 1, 1024), signal: ctx.signal });
  const truncated = r.embeddings.flatMap((e, i) => (e.truncated ? [i] : []));
  if (ctx.json) {
    ctx.out(
      JSON.stringify({
        model_id: r.modelId,
        max_length: r.maxLength,
        embeddings: r.embeddings.map((e) => ({ query: e.query, input_ids: e.input_ids, embedding: Array.from(e.embedding), truncated: e.truncated })),
        truncated,
      }),
    );
    return 0;
  }
  const dim = r.embeddings[0]?.embedding.length ?? 0;
  for (const e of r.embeddings) {
    const head = Array.from(e.embedding.subarray(0, 4), (v) => v.toFixed(4)).join(', ');
    ctx.out(`${short(e.query)}\t${e.input_ids.length} tokens${e.truncated ? ' (truncated)' : ''}\t[${head}, …]`);
  }
  ctx.out('');
  ctx.out(`${r.modelId}: ${r.embeddings.length} queries, ${dim} dimensions` + (truncated.length ? `, ${truncated.length} truncated at ${r.maxLength} tokens` : ''));
  return 0;
}

function printValidation(ctx: CommandContext, r: ValidationResult): void {
  const worst = [...r.per_query].sort((a, b) => a.correlation - b.correlation).slice(0, 5);
  ctx.out(table(['worst queries', 'Pearson', 'cosine'], worst.map((q) => [short(q.query), fixed(q.correlation), fixed(q.cosine)]), [false, true, true]));
  ctx.out('');
  ctx.out(
    `${r.model_id} (${r.format}): mean Pearson ${fixed(r.mean_correlation)} (min ${fixed(r.min_correlation)}), mean cosine ` +
      `${fixed(r.mean_cosine)}, top-${r.retrieval_k} retrieval agreement ${agreement(r.retrieval_agreement)} over ${r.query_count} ${r.query_count === 1 ? 'query' : 'queries'} ` +
      `in ${r.seconds.toFixed(2)} s — ${r.passed ? 'passed' : 'FAILED'} (threshold ${r.threshold})`,
  );
  if (r.truncated_queries.length > 0) {
    const n = r.truncated_queries.length;
    ctx.out(`${n} ${n === 1 ? 'query' : 'queries'} truncated at ${r.max_length} tokens: ${r.truncated_queries.map((t) => `#${t.index}`).join(', ')}`);
  }
  const da = r.dynamic_activations;
  if (da) {
    const range = (a: number | null, b: number | null) => (a === null || b === null ? 'none' : `${eng(a)} … ${eng(b)}`);
    ctx.out(
      `dynamic activations (${da.scheme}, standard scales per token block, ${da.linears_quantized} Linear inputs): mean Pearson ` +
        `${fixed(da.mean_correlation)} (min ${fixed(da.min_correlation)}) vs weight-only ${fixed(da.weight_only_mean_correlation)}; ` +
        `activation scales s ${range(da.scale_min, da.scale_max)}` +
        (da.global_scale_min !== null ? `, per-sequence g ${range(da.global_scale_min, da.global_scale_max)}` : '') +
        `, ${(100 * da.clipped_fraction).toFixed(3)}% of elements clipped`,
    );
  }
  ctx.out(r.stored ? `recorded in ${path.join(r.profile_path ?? '', 'profile.json')}` : (r.store_note ?? 'not recorded'));
}

/** Validation JSON: the issue's fields first, then the rest. */
function validationJson(r: ValidationResult): Record<string, unknown> {
  const { model_id, format, mean_correlation, min_correlation, per_query, retrieval_agreement, threshold, passed, ...rest } = r;
  return { model_id, format, mean_correlation, min_correlation, per_query, retrieval_agreement, threshold, passed, ...rest };
}

export async function validateCommand(argv: string[], ctx: CommandContext): Promise<number> {
  const { positionals, options } = parseArgs(argv, { ...PROFILE_COMMAND_SPEC, 'dynamic-activations': 'boolean' });
  ctx.json = Boolean(options.json);
  const model = oneModel(positionals, 'validate');
  const threshold = thresholdOf(options);
  const { queries } = await loadQueries(options.queries as string | undefined);
  const profile = await resolveProfile(model, options, ctx);
  const r = await runValidation(model, profile.dir, queries, threshold, options, ctx, profile.cacheDir);
  if (ctx.json) ctx.out(JSON.stringify({ ...validationJson(r), calibrated: profile.calibrated }));
  else printValidation(ctx, r);
  return 0;
}

async function runValidation(
  model: string,
  profileDir: string,
  queries: string[],
  threshold: number,
  options: ParsedArgs['options'],
  ctx: CommandContext,
  cacheDir?: string,
): Promise<ValidationResult> {
  const bar = new ProgressBar(process.stderr, !ctx.json && Boolean(process.stderr.isTTY));
  let r: ValidationResult;
  try {
    r = await validateSemanticAlignment(model, profileDir, queries, {
      threshold,
      threads: intOption(options.threads, 'threads', 1, 1024),
      throwOnDrift: false,
      cacheDir,
      dynamicActivations: Boolean(options['dynamic-activations']),
      signal: ctx.signal,
      onProgress: (f, d) => bar.update(f, d),
    });
  } finally {
    bar.done();
  }
  if (!r.passed) {
    // The report first (for a person), then the error and the non-zero exit.
    if (!ctx.json) printValidation(ctx, r);
    throw driftError(r);
  }
  return r;
}

export async function attributeCommand(argv: string[], ctx: CommandContext): Promise<number> {
  const { positionals, options } = parseArgs(argv, PROFILE_COMMAND_SPEC);
  ctx.json = Boolean(options.json);
  const model = oneModel(positionals, 'attribute');
  const threshold = thresholdOf(options);
  const { queries } = await loadQueries(options.queries as string | undefined);
  const profile = await resolveProfile(model, options, ctx);
  const bar = new ProgressBar(process.stderr, !ctx.json && Boolean(process.stderr.isTTY));
  let r: AttributionResult;
  try {
    r = await attributeDrift(model, profile.dir, queries, {
      threshold,
      threads: intOption(options.threads, 'threads', 1, 1024),
      cacheDir: profile.cacheDir,
      signal: ctx.signal,
      onProgress: (f, d) => bar.update(f, d),
    });
  } finally {
    bar.done();
  }
  if (ctx.json) {
    ctx.out(JSON.stringify({ ...r, calibrated: profile.calibrated }));
    return 0;
  }
  ctx.out(
    table(
      ['tensor (only it quantized)', 'layer', 'mean Pearson', 'min Pearson', 'block', 'bits/w'],
      r.ranking.map((e) => [
        e.tensor,
        e.layer === null ? (e.used ? 'emb' : '-') : String(e.layer),
        e.used ? fixed(e.mean_correlation) : 'not read',
        e.used ? fixed(e.min_correlation) : '',
        String(e.block_size),
        e.bits_per_weight.toFixed(3),
      ]),
      [false, true, true, true, true, true],
    ),
  );
  const s = r.suggestion;
  ctx.out('');
  ctx.out(
    `${r.model_id} (${r.format}) as calibrated: mean Pearson ${fixed(r.baseline.mean_correlation)}, ` +
      `${r.baseline.passed ? 'passes' : 'fails'} the threshold ${r.threshold}; ${s.baseline_bits_per_weight.toFixed(3)} bits/weight overall`,
  );
  if (s.already_passes) {
    ctx.out('suggestion: nothing to keep at higher precision');
  } else {
    ctx.out(`suggestion: keep ${s.keep.length} tensor${s.keep.length === 1 ? '' : 's'} at higher precision:`);
    for (const k of s.keep) ctx.out(`  ${k.tensor}: ${k.precision}${k.block_size ? ` (block ${k.block_size})` : ''}, ${k.bits_per_weight.toFixed(3)} bits/weight`);
    ctx.out(
      `  → mean Pearson ${fixed(s.mean_correlation)} (verified with a forward pass: ${s.passes ? 'passes' : 'still below'}), ` +
        `${s.bits_per_weight.toFixed(3)} bits/weight overall (${s.bits_per_weight_quantized.toFixed(3)} over the quantized tensors)`,
    );
  }
  ctx.out(`${r.forward_passes} forward passes over ${r.query_count} queries in ${r.seconds.toFixed(2)} s`);
  return 0;
}

/** The options `calibrate --validate` adds, for its help text. */
export const VALIDATE_HELP_LINES = `  --validate              then validate the profile semantically (FP16 vs quantized embeddings, see
                          \`calibscope validate\`); records the result in it, exits 1 with
                          E_SEMANTIC_DRIFT below the threshold
  --queries FILE          --validate: the query set, and the weighted modes' calibration set
                          (default: assets/${path.basename(DEFAULT_QUERIES_FILE)})
  --calibration-queries FILE
                          the weighted modes' calibration set when it differs from --queries
  --threshold T           --validate: least mean Pearson correlation (default ${DEFAULT_CORRELATION_THRESHOLD})
  --dynamic-activations   --validate: also with every Linear's input quantized (see validate)`;

/** The outcome of `calibrate --validate`, for calibrate to print or put in its JSON. */
export interface CalibrateValidation {
  /** Profiles as recorded after validation (with semantic_correlation), by profile folder. */
  profiles: Map<string, unknown>;
  /** Each model's validation JSON (as `calibscope validate --json` prints it), in order. */
  results: Record<string, unknown>[];
  /** Prints the reports (human output). */
  report(): void;
  /** Throws E_SEMANTIC_DRIFT when a model is below the threshold. */
  throwIfDrift(): void;
}

/**
 * `calibrate --validate`: validates the profiles just calibrated (one model, or each model of a
 * pipeline, in order), recording each result in its profile.
 */
export async function validateAfterCalibrate(
  models: { model_path: string; profile_path: string }[],
  options: ParsedArgs['options'],
  ctx: CommandContext,
  cacheDir?: string,
): Promise<CalibrateValidation> {
  const threshold = thresholdOf(options);
  const { queries } = await loadQueries(options.queries as string | undefined);
  const results: ValidationResult[] = [];
  const bar = new ProgressBar(process.stderr, !ctx.json && Boolean(process.stderr.isTTY));
  try {
    for (const [i, m] of models.entries()) {
      results.push(
        await validateSemanticAlignment(m.model_path, m.profile_path, queries, {
          threshold,
          threads: intOption(options.threads, 'threads', 1, 1024),
          throwOnDrift: false,
          cacheDir,
              dynamicActivations: Boolean(options['dynamic-activations']),
          signal: ctx.signal,
          onProgress: (f, d) => bar.update((i + f) / models.length, `validating ${i + 1}/${models.length}: ${d}`),
        }),
      );
    }
  } finally {
    bar.done();
  }
  const profiles = new Map<string, unknown>();
  for (const m of models) profiles.set(m.profile_path, await loadProfile(m.profile_path, { verifyScales: false }));
  const failed = results.filter((r) => !r.passed);
  const throwIfDrift = () => {
    if (failed.length === 0) return;
    if (results.length === 1) throw driftError(failed[0]);
    const first = driftError(failed[0]);
    throw new CalibscopeError(
      'E_SEMANTIC_DRIFT',
      `${failed.length} of ${results.length} models drift below the threshold ${threshold}: ` +
        failed.map((r) => `${r.model_id} (${r.format}) ${fixed(r.mean_correlation)}`).join(', '),
      { ...first.details, failed: failed.map((r) => driftError(r).details) },
    );
  };
  return {
    profiles,
    results: results.map(validationJson),
    report: () => {
      for (const r of results) {
        ctx.out('');
        printValidation(ctx, r);
      }
      throwIfDrift();
    },
    throwIfDrift,
  };
}
