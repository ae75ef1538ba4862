// `calibscope calibrate <model> --format F ...`: calibrate one checkpoint and write its profile.
import path from 'node:path';
import { QuantizationCalibrator } from '../../calibration/calibrator.js';
import { configHash } from '../../calibration/config.js';
import { improvementRatio } from '../../calibration/schemes.js';
import { openCheckpoint } from '../../checkpoints/checkpoint.js';
import { defaultCacheDir, profileDir } from '../../profiles/paths.js';
import { CalibscopeError } from '../../util/errors.js';
import { blockSizesOption, intOption, listOption, numberOption, parseArgs } from '../args.js';
import { eng, table } from '../format.js';
import { ProgressBar } from '../progress.js';
import type { CommandContext } from '../context.js';

export const CALIBRATE_HELP = `calibscope calibrate <model> --format F [options]

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
  --threads N             worker threads (default: all cores)
  --out DIR               the profile folder to write
                          (default <cache>/calibration/<model-id>/<format>-<config-hash>)
  --cache DIR             cache folder (default ${defaultCacheDir()})
  --json                  print one JSON object: {"profile_path", "profile"}`;

const SPEC = {
  format: 'string',
  'block-sizes': 'string',
  'block-policy': 'string',
  'bits-tolerance': 'string',
  search: 'string',
  include: 'string',
  exclude: 'string',
  'allow-nonfinite': 'boolean',
  threads: 'string',
  out: 'string',
  cache: 'string',
  json: 'boolean',
  'no-diagnostics': 'boolean',
} as const;

function ratioText(r: number | null): string {
  return r === null ? 'error removed entirely' : `${r.toFixed(3)}×`;
}

export async function calibrateCommand(argv: string[], ctx: CommandContext): Promise<number> {
  const { positionals, options } = parseArgs(argv, SPEC);
  ctx.json = Boolean(options.json);
  if (positionals.length !== 1) throw new CalibscopeError('E_BAD_ARGUMENT', `calibrate takes one model path\n\n${CALIBRATE_HELP}`);
  if (typeof options.format !== 'string') throw new CalibscopeError('E_BAD_FORMAT', `--format is required\n\n${CALIBRATE_HELP}`);
  const calibrator = new QuantizationCalibrator({
    format: options.format,
    block_sizes: blockSizesOption(options['block-sizes']),
    block_policy: options['block-policy'] as string | undefined,
    bits_tolerance: numberOption(options['bits-tolerance'], 'bits-tolerance'),
    search: options.search as string | undefined,
    include: listOption(options.include, 'include'),
    exclude: listOption(options.exclude, 'exclude'),
    allow_nonfinite: Boolean(options['allow-nonfinite']),
  });
  const threads = intOption(options.threads, 'threads', 1, 1024);
  const ckpt = await openCheckpoint(positionals[0]);
  const cache = typeof options.cache === 'string' ? path.resolve(options.cache) : defaultCacheDir();
  const outDir =
    typeof options.out === 'string'
      ? path.resolve(options.out)
      : profileDir(cache, ckpt.modelId, calibrator.config.format, configHash(calibrator.config));

  const bar = new ProgressBar(process.stderr, !ctx.json && Boolean(process.stderr.isTTY));
  const started = process.hrtime.bigint();
  let result;
  try {
    result = await calibrator.calibrateModel(ckpt, {
      threads,
      outDir,
      signal: ctx.signal,
      diagnostics: !options['no-diagnostics'],
      onProgress: (p) =>
        bar.update(p.elementsTotal > 0 ? p.elementsDone / p.elementsTotal : 1, `${p.tensorsDone}/${p.tensorsTotal} ${p.tensor ?? ''}`),
    });
  } finally {
    bar.done();
    await ckpt.close();
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const { profile, profilePath } = result;

  if (ctx.json) {
    ctx.out(JSON.stringify({ profile_path: profilePath, profile }));
    return 0;
  }
  const rows = Object.values(profile.tensor_calibrations).map((r) => [
    r.tensor_name,
    `[${r.shape.join('×')}]`,
    String(r.block_size),
    `${eng(r.mse_before)} → ${eng(r.mse_after)}`,
    r.improvement_ratio === null ? 'inf' : r.improvement_ratio.toFixed(3),
    String(r.outlier_count),
    r.bits_per_weight.toFixed(3),
  ]);
  ctx.out(table(['tensor', 'shape', 'block', 'MSE before → after', 'ratio', 'outliers', 'bits/w'], rows, [false, false, true, false, true, true, true]));
  const numel = Object.values(profile.tensor_calibrations).reduce((a, r) => a + r.numel, 0);
  ctx.out('');
  ctx.out(
    `${profile.model_id}: ${Object.keys(profile.tensor_calibrations).length} tensors, ${eng(numel)} weights, ` +
      `${profile.format}, overall MSE ${eng(profile.overall_mse_before)} → ${eng(profile.overall_mse)} ` +
      `(${ratioText(improvementRatio(profile.overall_mse_before, profile.overall_mse))}) in ${seconds.toFixed(2)} s`,
  );
  if (profile.skipped_tensors.length > 0) ctx.out(`skipped ${profile.skipped_tensors.length} tensors (1-D or unsupported; see profile.json)`);
  ctx.out(`profile: ${profilePath}`);
  return 0;
}
