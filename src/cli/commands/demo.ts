// `calibscope demo --size tiny|full --out DIR`: write the 12-model demo pipeline (trained-like
// FP16 BERT-family models with the project's tokenizer) and its pipeline.json.
import path from 'node:path';
import { DEFAULT_DEMO_SEED, demoWeightBytes, writeDemoPipeline, type DemoReport, type DemoSize } from '../../demo/index.js';
import { CalibscopeError } from '../../util/errors.js';
import { intOption, parseArgs } from '../args.js';
import { eng, table } from '../format.js';
import { ProgressBar } from '../progress.js';
import type { CommandContext } from '../context.js';

export const DEMO_HELP = `calibscope demo --size tiny|full --out DIR [--seed N] [--threads N] [--json]

  --size tiny|full        tiny: 12 small models (a few million parameters each, ~${Math.round(demoWeightBytes('tiny') / 1e6)} MB);
                          full: the real shapes of 12 public embedding models (1.6 B parameters,
                          ~${(demoWeightBytes('full') / 1e9).toFixed(1)} GB)
  --out DIR               output folder: new, empty, or one holding an earlier demo (its model
                          folders and pipeline.json are replaced; other files are left alone)
  --seed N                weights are byte-identical for the same seed (default ${DEFAULT_DEMO_SEED})
  --threads N             generator threads (default: all cores)
  --json                  print one JSON object: {"pipeline_path", "models": [...], ...}`;

const SPEC = { size: 'string', out: 'string', seed: 'string', threads: 'string', json: 'boolean' } as const;

function mb(bytes: number): string {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(1)} MB`;
}

export function demoReportJson(r: DemoReport): Record<string, unknown> {
  return {
    size: r.size,
    seed: r.seed,
    out_dir: r.outDir,
    pipeline_path: r.pipelinePath,
    models: r.models.map((m) => ({
      id: m.id,
      source: m.source,
      path: m.path,
      layout: m.layout,
      parameters: m.parameters,
      bytes: m.bytes,
      seconds: Number(m.seconds.toFixed(3)),
    })),
    parameters: r.parameters,
    bytes: r.bytes,
    seconds: Number(r.seconds.toFixed(3)),
  };
}

export async function demoCommand(argv: string[], ctx: CommandContext): Promise<number> {
  const { positionals, options } = parseArgs(argv, SPEC);
  ctx.json = Boolean(options.json);
  if (positionals.length > 0) throw new CalibscopeError('E_BAD_ARGUMENT', `calibscope demo takes no positional arguments (got "${positionals[0]}")`);
  const size = options.size;
  if (size !== 'tiny' && size !== 'full') {
    throw new CalibscopeError('E_BAD_ARGUMENT', size === undefined ? '--size tiny|full is required' : `--size must be tiny or full, got "${String(size)}"`);
  }
  if (typeof options.out !== 'string' || options.out === '') throw new CalibscopeError('E_BAD_ARGUMENT', '--out DIR is required');
  const seed = intOption(options.seed, 'seed', 0, 2 ** 32 - 1);
  const threads = intOption(options.threads, 'threads', 1, 1024);

  const bar = new ProgressBar();
  // Said once writing starts: a refused --out (a folder that is not an earlier demo) is not "being written".
  let announced = ctx.json;
  let report: DemoReport;
  try {
    report = await writeDemoPipeline({
      size: size as DemoSize,
      outDir: options.out,
      seed,
      threads,
      signal: ctx.signal,
      onProgress: (p) => {
        if (!announced) ctx.out(`calibscope demo: writing the ${size} demo pipeline (12 models) to ${path.resolve(options.out as string)}`);
        announced = true;
        bar.update(p.bytesTotal > 0 ? p.bytesDone / p.bytesTotal : 0, `${p.modelIndex + 1}/${p.models} ${p.model}  ${mb(p.bytesDone)} of ${mb(p.bytesTotal)}`);
      },
    });
  } finally {
    bar.done();
  }

  if (ctx.json) {
    ctx.out(JSON.stringify(demoReportJson(report)));
    return 0;
  }
  const rows = report.models.map((m) => [
    m.id,
    m.source,
    m.layout === 'hf' ? 'hf' : 'st',
    eng(m.parameters),
    mb(m.bytes),
    m.seconds.toFixed(2),
  ]);
  ctx.out(table(['model', 'shaped like', 'layout', 'parameters', 'size', 'seconds'], rows, [false, false, false, true, true, true]));
  ctx.out('');
  ctx.out(
    `${report.models.length} models, ${eng(report.parameters)} parameters, ${mb(report.bytes)} in ${report.seconds.toFixed(1)} s ` +
      `(seed ${report.seed}; layout st = sentence-transformers folder)`,
  );
  ctx.out(`pipeline: ${report.pipelinePath}`);
  ctx.out(`Next: calibscope calibrate --pipeline ${report.pipelinePath} --format nvfp4`);
  return 0;
}
