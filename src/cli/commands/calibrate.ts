// `calibscope calibrate <model> --format F ...`: calibrate one checkpoint into the cache (reusing a
// valid profile) or into --out; `calibscope calibrate --pipeline FILE`: every model of a manifest.
import path from 'node:path';
import { BACKEND_CHOICES, parseBackend, profileBackend, resolveBackend } from '../../calibration/backend.js';
import { QuantizationCalibrator } from '../../calibration/calibrator.js';
import type { ConfigInput } from '../../calibration/config.js';
import { CALIBRATION_MODES, modeNeedsStats, parseMode } from '../../calibration/modes.js';
import { improvementRatio } from '../../calibration/schemes.js';
import type { ModelCalibrationProfile } from '../../calibration/types.js';
import { openCheckpoint, shadowedIndex } from '../../checkpoints/checkpoint.js';
import { loadManifest, resolveModels } from '../../pipeline/manifest.js';
import { runPipeline, type PipelineProfile } from '../../pipeline/run.js';
import { calibrateCached, openCache, openCacheMode, withModelId } from '../../profiles/cache.js';
import { defaultCacheDir } from '../../profiles/paths.js';
import { calibrationStatsCached, resolveCalibrationQueries } from '../../semantic/calibration_stats.js';
import { CalibscopeError } from '../../util/errors.js';
import { FORMAT_CHOICES, intOption, parseArgs, positionalsText } from '../args.js';
import { CONFIG_SPEC, MODEL_ID_HELP, calibrationQueriesInput, configInput, modelIdOption } from '../config_options.js';
import { eng, table } from '../format.js';
import { PipelineProgress } from '../pipeline_progress.js';
import { ProgressBar } from '../progress.js';
import { VALIDATE_HELP_LINES, VALIDATE_SPEC, thresholdOf, validateAfterCalibrate } from './semantic.js';
import type { CommandContext } from '../context.js';

export const CALIBRATE_HELP = `calibscope calibrate <model> --format F [options]
calibscope calibrate --pipeline FILE [--format F] [options]

  <model>                 a .safetensors file, a Hugging Face / sentence-transformers folder,
                          or a sharded model.safetensors.index.json
  --format F              fp4 | fp8_e4m3 | fp8_e5m2 | nvfp4 | mxfp4 | mxfp8
  --block-sizes 64,128    block sizes to try (default: all the format allows)
  --block-policy P        min-mse (least MSE) | bits (largest block within --bits-tolerance of it)
  --bits-tolerance T      relative MSE tolerance of the bits policy (default 0.05)
  --search S              exact (default) | ternary (the original spec's search) | naive (absmax)
  --include GLOBS         comma-separated tensor name patterns to calibrate (\`*\` wildcard)
  --exclude GLOBS         comma-separated tensor name patterns to leave alone
  --allow-nonfinite       exclude NaN/Inf weights instead of failing
  --mode M                ${CALIBRATION_MODES.join(' | ')} (default static): what the search
                          minimizes — plain squared error, or weighted by the layer inputs' E[x²]
                          (and attention-entropy head weights); see docs/modes.md. The weighted
                          modes run the calibration queries (--calibration-queries or --queries
                          FILE, default the shipped set) through the model once; the statistics
                          are cached in <cache>/stats/
  --backend B             ${BACKEND_CHOICES.join(' | ')} (default auto: the GPU when one is usable, else
                          the CPU): where the search runs. Results are bit-identical, so the
                          backend does not change the profile folder; see docs/backends.md
  --threads N             worker threads per tensor on the CPU backend (default: all cores)
  --cache DIR             cache folder (default ${defaultCacheDir()}); the profile goes to
                          <cache>/calibration/<model-id>/<format>-<config-hash>/ and a valid one
                          there is reused instead of recalibrated
${MODEL_ID_HELP}
  --force                 recalibrate even when the cached profile is valid (or belongs to another
                          checkpoint with the same model id)
  --out DIR               write the profile to DIR instead, always recalibrating (no cache)
  --pipeline FILE         calibrate every model of a pipeline.json (see docs/pipeline.md);
                          a model's own "format" etc. override the options here
  --jobs N                pipeline: models calibrated at the same time (default: by cores)
  --no-diagnostics        skip diagnostics.safetensors
${VALIDATE_HELP_LINES}
  --json                  print one JSON object: {"cached", "profile_path", "backend", "profile"}
                          ({"profile_path", "backend", "profile"} with --out; {"profiles": [...]}
                          for a pipeline); "backend" is the one that calibrated the profile`;

const SPEC = {
  ...CONFIG_SPEC,
  'model-id': 'string',
  threads: 'string',
  backend: 'string',
  force: 'boolean',
  pipeline: 'string',
  jobs: 'string',
  out: 'string',
  cache: 'string',
  json: 'boolean',
  'no-diagnostics': 'boolean',
  'calibration-queries': 'string',
  ...VALIDATE_SPEC,
} as const;

function ratioText(r: number | null): string {
  return r === null ? 'error removed entirely' : `${r.toFixed(3)}×`;
}

function printProfile(ctx: CommandContext, profile: ModelCalibrationProfile, tail: string): void {
  // Weighted modes add the objective the search minimized (mse stays plain, for comparison).
  const weighted = profile.overall_objective !== undefined;
  const rows = Object.values(profile.tensor_calibrations).map((r) => [
    r.tensor_name,
    `[${r.shape.join('×')}]`,
    String(r.block_size),
    `${eng(r.mse_before)} → ${eng(r.mse_after)}`,
    ...(weighted ? [r.objective_after === undefined ? '-' : `${eng(r.objective_before ?? 0)} → ${eng(r.objective_after)}`, r.weighting ?? 'none'] : []),
    r.improvement_ratio === null ? 'inf' : r.improvement_ratio.toFixed(3),
    String(r.outlier_count),
    r.bits_per_weight.toFixed(3),
  ]);
  const heads = ['tensor', 'shape', 'block', 'MSE before → after', ...(weighted ? ['objective before → after', 'weighting'] : []), 'ratio', 'outliers', 'bits/w'];
  const right = [false, false, true, false, ...(weighted ? [false, false] : []), true, true, true];
  ctx.out(table(heads, rows, right));
  const numel = Object.values(profile.tensor_calibrations).reduce((a, r) => a + r.numel, 0);
  ctx.out('');
  ctx.out(
    `${profile.model_id}: ${Object.keys(profile.tensor_calibrations).length} tensors, ${eng(numel)} weights, ` +
      `${profile.format}, overall MSE ${eng(profile.overall_mse_before)} → ${eng(profile.overall_mse)} ` +
      `(${ratioText(improvementRatio(profile.overall_mse_before, profile.overall_mse))})${modeText(profile)} ${tail}`,
  );
  if (profile.skipped_tensors.length > 0) {
    const reasons = [...new Set(profile.skipped_tensors.map((t) => t.reason))];
    const n = profile.skipped_tensors.length;
    ctx.out(`skipped ${n} tensor${n === 1 ? '' : 's'} (${reasons.slice(0, 3).join('; ')}${reasons.length > 3 ? '; …' : ''}; see profile.json)`);
  }
}

function cacheOption(options: Record<string, string | boolean | undefined>): string {
  return typeof options.cache === 'string' ? path.resolve(options.cache) : defaultCacheDir();
}

/** The config flags (with --backend) plus, with --queries, the calibration query set they name (weighted modes). */
async function configWithQueries(options: Record<string, string | boolean | undefined>): Promise<{ input: Partial<ConfigInput>; queries?: string[] }> {
  // --backend is checked here, so that a bad value is not reported as a pipeline manifest's error.
  const input = { ...configInput(options), backend: parseBackend(options.backend) };
  if (input.mode !== undefined) parseMode(input.mode);
  const { queries, calibration_queries_hash } = await calibrationQueriesInput(options);
  if (!queries) return { input };
  return { input: { ...input, calibration_queries_hash }, queries };
}

function modeText(profile: ModelCalibrationProfile): string {
  const mode = profile.mode ?? profile.config.mode ?? 'static';
  if (mode === 'static' || profile.overall_objective === undefined) return '';
  return (
    `; mode ${mode}: weighted objective ${eng(profile.overall_objective_before ?? 0)} → ${eng(profile.overall_objective)}` +
    (profile.statistics ? ` (statistics ${profile.statistics.hash.slice(7, 19)} from ${profile.statistics.query_count} queries, ${profile.statistics.tokens} tokens)` : '')
  );
}

export async function calibrateCommand(argv: string[], ctx: CommandContext): Promise<number> {
  const { positionals, options } = parseArgs(argv, SPEC);
  ctx.json = Boolean(options.json);
  // A bad --threshold is a usage error now, not after a whole calibration.
  if (options.validate) thresholdOf(options);
  const modelId = modelIdOption(options);
  if (typeof options.pipeline === 'string') {
    if (positionals.length > 0) throw new CalibscopeError('E_BAD_ARGUMENT', 'calibrate --pipeline takes no model path');
    if (typeof options.out === 'string') throw new CalibscopeError('E_BAD_ARGUMENT', '--out cannot be used with --pipeline: profiles go to the cache (--cache DIR)');
    return pipelineCommand(options.pipeline, options, ctx);
  }
  if (options.jobs !== undefined) throw new CalibscopeError('E_BAD_ARGUMENT', '--jobs is for --pipeline');
  if (positionals.length !== 1) throw new CalibscopeError('E_BAD_ARGUMENT', `calibrate takes one model path, got ${positionalsText(positionals)}`);
  if (typeof options.format !== 'string') throw new CalibscopeError('E_BAD_FORMAT', `--format is required (${FORMAT_CHOICES})`);
  const { input, queries } = await configWithQueries(options);
  const calibrator = new QuantizationCalibrator({ ...input, format: options.format });
  const threads = intOption(options.threads, 'threads', 1, 1024);
  const diagnostics = !options['no-diagnostics'];
  // --backend cuda without a usable GPU fails here, before the cache or --out is touched (E_CUDA).
  resolveBackend(calibrator.config.backend);

  const bar = new ProgressBar(process.stderr, !ctx.json && Boolean(process.stderr.isTTY));
  const onProgress = (p: { elementsDone: number; elementsTotal: number; tensorsDone: number; tensorsTotal: number; tensor: string | null }) =>
    bar.update(p.elementsTotal > 0 ? p.elementsDone / p.elementsTotal : 1, `${p.tensorsDone}/${p.tensorsTotal} ${p.tensor ?? ''}`);
  const started = process.hrtime.bigint();
  const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
  const shadowed = await shadowedIndex(positionals[0]);
  if (shadowed && !ctx.json) {
    ctx.err(
      `calibscope: note: ${path.dirname(shadowed)} holds both model.safetensors and ${path.basename(shadowed)}; ` +
        `model.safetensors is the model (as for transformers) and the shards are not read — pass ${shadowed} to calibrate the shards`,
    );
  }

  if (typeof options.out !== 'string') {
    // The cache: reuse a valid profile, calibrate a missing, stale or damaged one.
    const cache = cacheOption(options);
    // A read-only cache (a CI artifact) still serves its valid profiles.
    const { readOnly } = await openCacheMode(cache);
    let r;
    try {
      r = await calibrateCached({
        cacheDir: cache,
        readOnly,
        model: positionals[0],
        modelId,
        config: calibrator.config,
        force: Boolean(options.force),
        threads,
        diagnostics,
        queries,
        signal: ctx.signal,
        onProgress,
        onPhase: (phase, owner) => {
          if (phase === 'waiting' && !ctx.json) ctx.err(`calibscope: waiting for process ${owner?.pid} (${owner?.host}), which is calibrating the same profile`);
        },
      });
    } finally {
      bar.done();
    }
    if (readOnly && !ctx.json) ctx.err(`calibscope: the cache ${cache} is read-only (${readOnly.errno}); its ${r.before.state} profile is reused without writing to it`);
    if (r.droppedSignOff && !ctx.json) {
      ctx.err(`calibscope: note: the previous profile's sign-off (${r.droppedSignOff.decision} by ${r.droppedSignOff.reviewer}) does not carry over to the new one`);
    }
    // --validate: semantic validation (./semantic.ts), recorded in the profile.
    const checked = options.validate ? await validateAfterCalibrate([{ model_path: positionals[0], profile_path: r.profilePath }], options, ctx, cache) : null;
    if (ctx.json) {
      checked?.throwIfDrift();
      const profile = checked?.profiles.get(r.profilePath) ?? r.profile;
      ctx.out(
        JSON.stringify({ cached: r.cached, profile_path: r.profilePath, backend: profileBackend(profile), profile, ...(checked && { validation: checked.results[0] }) }),
      );
      return 0;
    }
    printProfile(
      ctx,
      r.profile,
      r.cached ? `— cached (${r.before.state}: ${r.before.reason})` : `in ${seconds().toFixed(2)} s on ${profileBackend(r.profile)} (was ${r.before.state})`,
    );
    ctx.out(`profile: ${r.profilePath}`);
    checked?.report();
    return 0;
  }

  // --out: an explicit destination, always recalibrated (the profile cache is not consulted; the
  // statistics of the weighted modes still live in the cache folder).
  let statistics = null;
  if (modeNeedsStats(calibrator.config.mode)) {
    const cache = cacheOption(options);
    await openCache(cache);
    statistics = (
      await calibrationStatsCached(positionals[0], await resolveCalibrationQueries(calibrator.config, queries), { cacheDir: cache, threads, signal: ctx.signal })
    ).stats;
  }
  const ckpt = await openCheckpoint(positionals[0]);
  let result;
  try {
    result = await calibrator.calibrateModel(withModelId(ckpt, modelId), { threads, outDir: path.resolve(options.out), signal: ctx.signal, diagnostics, onProgress, statistics });
  } finally {
    bar.done();
    await ckpt.close();
  }
  const { profile, profilePath } = result;
  // --validate: semantic validation (./semantic.ts), recorded in the profile.
  const checked = options.validate ? await validateAfterCalibrate([{ model_path: positionals[0], profile_path: profilePath! }], options, ctx) : null;
  if (ctx.json) {
    checked?.throwIfDrift();
    ctx.out(
      JSON.stringify({
        profile_path: profilePath,
        backend: profileBackend(profile),
        profile: checked?.profiles.get(profilePath!) ?? profile,
        ...(checked && { validation: checked.results[0] }),
      }),
    );
    return 0;
  }
  printProfile(ctx, profile, `in ${seconds().toFixed(2)} s on ${profileBackend(profile)}`);
  ctx.out(`profile: ${profilePath}`);
  checked?.report();
  return 0;
}

async function pipelineCommand(file: string, options: Record<string, string | boolean | undefined>, ctx: CommandContext): Promise<number> {
  const manifest = await loadManifest(file);
  const { input, queries } = await configWithQueries(options);
  const models = resolveModels(manifest, input);
  const threads = intOption(options.threads, 'threads', 1, 1024);
  // Once for the run (every model has the command line's backend): E_CUDA before any model starts.
  resolveBackend(parseBackend(input.backend));
  const jobs = intOption(options.jobs, 'jobs', 1, 256);
  const cache = cacheOption(options);
  const { readOnly } = await openCacheMode(cache);
  const started = process.hrtime.bigint();
  const progress = new PipelineProgress(
    models.map((m) => ({ id: m.entry.id })),
    process.stderr,
    !ctx.json && Boolean(process.stderr.isTTY),
  );
  let run;
  try {
    run = await runPipeline(models, {
      cacheDir: cache,
      readOnly,
      force: Boolean(options.force),
      threads,
      concurrency: jobs,
      diagnostics: !options['no-diagnostics'],
      queries,
      signal: ctx.signal,
      onEvent: (e) => progress.update(e),
    });
  } finally {
    progress.done();
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (readOnly && !ctx.json) ctx.err(`calibscope: the cache ${cache} is read-only (${readOnly.errno}); valid profiles are reused without writing to it`);
  const done = run.profiles.filter((p): p is PipelineProfile => p !== null);
  if (run.failures.length > 0) {
    // The models that did calibrate are shown too, above the error naming the ones that failed.
    if (!ctx.json && done.length > 0) printPipeline(ctx, done, seconds);
    const first = run.failures[0].error;
    throw new CalibscopeError(
      first.code,
      `${run.failures.length} of ${models.length} models failed: ` + run.failures.map((f) => `${f.model_id}: ${f.error.message}`).join('; '),
      {
        failed: run.failures.map((f) => ({ model_id: f.model_id, ...f.error.toJSON() })),
        profiles: done,
      },
    );
  }
  // --validate: semantic validation of every model (./semantic.ts), recorded in each profile.
  const checked = options.validate ? await validateAfterCalibrate(done, options, ctx, cache) : null;
  if (ctx.json) {
    checked?.throwIfDrift();
    ctx.out(JSON.stringify({ profiles: done, ...(checked && { validations: checked.results }) }));
    return 0;
  }
  printPipeline(ctx, done, seconds);
  checked?.report();
  return 0;
}

/** The pipeline's table: one row per model that has a profile, and the count of calibrated and reused. */
function printPipeline(ctx: CommandContext, done: PipelineProfile[], seconds: number): void {
  const rows = done.map((p) => [
    p.model_id,
    p.format,
    p.cached ? `cached (${p.state_before})` : `calibrated (was ${p.state_before})`,
    p.mode,
    String(p.tensors),
    `${eng(p.overall_mse_before)} → ${eng(p.overall_mse)}`,
    p.backend,
    p.seconds.toFixed(2),
    p.profile_path,
  ]);
  ctx.out(
    table(['model', 'format', 'profile', 'mode', 'tensors', 'MSE before → after', 'backend', 's', 'path'], rows, [false, false, false, false, true, false, false, true, false]),
  );
  const fresh = done.filter((p) => !p.cached).length;
  ctx.out('');
  ctx.out(`${done.length} ${done.length === 1 ? 'model' : 'models'}: ${fresh} calibrated, ${done.length - fresh} reused, in ${seconds.toFixed(2)} s`);
}
