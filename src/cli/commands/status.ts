// `calibscope status <model> --format F`: the state of a model's cached profile — missing, valid,
// stale, corrupt or signed-off — with the reason. Exits 0 whenever the state could be determined.
import path from 'node:path';
import { configHash, makeConfig } from '../../calibration/config.js';
import type { CalibrationConfig } from '../../calibration/types.js';
import { openCheckpoint } from '../../checkpoints/checkpoint.js';
import { loadManifest, resolveModels } from '../../pipeline/manifest.js';
import { cachedProfileDir, checkNotAFile, withModelId } from '../../profiles/cache.js';
import { defaultCacheDir } from '../../profiles/paths.js';
import { profileStatus } from '../../profiles/store.js';
import { CalibscopeError, asCalibscopeError } from '../../util/errors.js';
import { FORMAT_CHOICES, parseArgs, positionalsText } from '../args.js';
import { CONFIG_SPEC, MODEL_ID_HELP, calibrationQueriesInput, configInput, modelIdOption } from '../config_options.js';
import type { CommandContext } from '../context.js';
import { table } from '../format.js';

export const STATUS_HELP = `calibscope status <model> --format F [--cache DIR | --profile DIR] [--json]
calibscope status --pipeline FILE [--format F] [--cache DIR] [--json]

  Prints the state of the model's profile: missing, valid, stale (the checkpoint changed),
  corrupt (a damaged profile.json or scales file) or signed-off, with the reason. Takes the same
  config options as calibrate (--block-sizes, --block-policy, --search, --include, ...), which
  name the profile folder <cache>/calibration/<model-id>/<format>-<config-hash>/.
  --profile DIR           check the profile folder DIR (for example one written with --out)
${MODEL_ID_HELP}
  --calibration-queries FILE, --queries FILE
                          a weighted --mode's calibration query set, as given to calibrate (it is
                          part of the profile folder's name; default the shipped set)
  --json                  {"model_id", "format", "state", "reason", "profile_path", "checkpoint_hash",
                          "golden_checkpoint_hash", "review"}; {"models": [...]} for a pipeline`;

const SPEC = {
  ...CONFIG_SPEC,
  cache: 'string',
  profile: 'string',
  pipeline: 'string',
  json: 'boolean',
  'model-id': 'string',
  'calibration-queries': 'string',
  queries: 'string',
} as const;

interface StatusLine {
  model_id: string;
  format: string;
  state: string;
  reason: string;
  profile_path: string;
  checkpoint_hash: string | null;
  golden_checkpoint_hash: string | null;
  review: unknown;
}

async function statusOf(
  modelPath: string,
  modelId: string | undefined,
  config: CalibrationConfig | null,
  dir: string | null,
  cacheDir: string | null,
): Promise<StatusLine> {
  const opened = await openCheckpoint(modelPath);
  try {
    const ckpt = withModelId(opened, modelId);
    const folder = dir ?? cachedProfileDir(cacheDir!, ckpt.modelId, config!);
    const st = await profileStatus(folder, ckpt, {
      cacheDir,
      expectConfigHash: dir || !config ? undefined : configHash(config),
      expectModelId: dir ? undefined : ckpt.modelId,
    });
    // --profile with config flags: the folder must hold a profile made with those settings.
    if (dir && config && st.profile) {
      const made = configHash(st.profile.config);
      if (made !== configHash(config)) {
        throw new CalibscopeError(
          'E_BAD_ARGUMENT',
          `profile ${dir} was calibrated as ${st.profile.format} (config ${made}), not with the given --format ${config.format} ` +
            `and options (config ${configHash(config)}); leave out --format and the config options to check the profile as it is`,
          { path: dir, profile_format: st.profile.format, profile_config_hash: made, config_hash: configHash(config) },
        );
      }
    }
    return {
      model_id: ckpt.modelId,
      format: config?.format ?? st.profile?.format ?? 'unknown',
      state: st.state,
      reason: st.reason,
      profile_path: st.profile_path,
      checkpoint_hash: st.checkpoint_hash,
      golden_checkpoint_hash: st.profile?.golden_checkpoint_hash ?? null,
      review: st.profile?.review ?? null,
    };
  } finally {
    await opened.close();
  }
}

export async function statusCommand(argv: string[], ctx: CommandContext): Promise<number> {
  const { positionals, options } = parseArgs(argv, SPEC);
  ctx.json = Boolean(options.json);
  const cacheDir = typeof options.cache === 'string' ? path.resolve(options.cache) : typeof options.profile === 'string' ? null : defaultCacheDir();
  // A file given as the cache is a mistake to name, not a cache where every profile is missing.
  if (cacheDir !== null) await checkNotAFile(cacheDir);

  if (typeof options.pipeline === 'string') {
    if (positionals.length > 0 || typeof options.profile === 'string') {
      throw new CalibscopeError('E_BAD_ARGUMENT', 'status --pipeline takes no model path and no --profile');
    }
    const manifest = await loadManifest(options.pipeline);
    const { calibration_queries_hash } = await calibrationQueriesInput(options);
    const models = resolveModels(manifest, { ...configInput(options), calibration_queries_hash });
    const lines: StatusLine[] = [];
    for (const m of models) {
      try {
        lines.push(await statusOf(m.entry.path, m.entry.id, m.config, null, cacheDir ?? defaultCacheDir()));
      } catch (err) {
        const e = asCalibscopeError(err);
        throw new CalibscopeError(e.code, `model '${m.entry.id}': ${e.message}`, { ...e.details, model: m.entry.id });
      }
    }
    if (ctx.json) {
      ctx.out(JSON.stringify({ models: lines }));
    } else {
      ctx.out(table(['model', 'format', 'state', 'reason'], lines.map((l) => [l.model_id, l.format, l.state, l.reason])));
    }
    return 0;
  }

  if (positionals.length !== 1) throw new CalibscopeError('E_BAD_ARGUMENT', `status takes one model path, got ${positionalsText(positionals)}`);
  const dir = typeof options.profile === 'string' ? path.resolve(options.profile) : null;
  if (typeof options.format !== 'string' && !dir) throw new CalibscopeError('E_BAD_FORMAT', `--format (${FORMAT_CHOICES}) or --profile DIR is required`);
  const { calibration_queries_hash } = await calibrationQueriesInput(options);
  const config = typeof options.format === 'string' ? makeConfig({ ...configInput(options), calibration_queries_hash, format: options.format }) : null;
  const line = await statusOf(positionals[0], modelIdOption(options), config, dir, cacheDir);
  if (ctx.json) {
    ctx.out(JSON.stringify(line));
  } else {
    ctx.out(`${line.model_id} (${line.format}): ${line.state} — ${line.reason}`);
    ctx.out(`profile: ${line.profile_path}`);
  }
  return 0;
}
