// `calibscope quickstart`: calibrate the bundled example model, a small BERT encoder in Hugging
// Face layout, to NVFP4 and FP4 and show the results.
import path from 'node:path';
import { calibrateCommand } from './calibrate.js';
import type { CommandContext } from '../context.js';

export const EXAMPLE_MODEL = path.resolve(__dirname, '..', '..', '..', '..', 'test', 'fixtures', 'reference', 'bert-tiny-a', 'model');

export const QUICKSTART_HELP = `calibscope quickstart [calibrate options]

  Calibrates the bundled example model (test/fixtures/reference/bert-tiny-a/model) to nvfp4 and
  fp4 and prints both tables. Other options (--cache DIR, --threads N, ...) are passed to
  calibrate; see calibscope calibrate --help.
  --json                  {"model_path", "results": [{"format", ...calibrate's --json}, ...]}`;

const FORMATS = ['nvfp4', 'fp4'];

export async function quickstartCommand(argv: string[], ctx: CommandContext): Promise<number> {
  if (argv.includes('--json')) return quickstartJson(argv, ctx);
  ctx.out(`calibscope quickstart: calibrating the example model ${path.relative(process.cwd(), EXAMPLE_MODEL) || EXAMPLE_MODEL}\n`);
  for (const format of FORMATS) {
    ctx.out(`== ${format} ==`);
    const code = await calibrateCommand([EXAMPLE_MODEL, '--format', format, ...argv], ctx);
    if (code !== 0) return code;
    ctx.out('');
  }
  ctx.out('Next: calibscope calibrate <your model folder> --format nvfp4   (calibscope --help for all options)');
  return 0;
}

/** --json: one object for both formats, {"model_path", "results": [{"format", ...calibrate's --json}]}. */
async function quickstartJson(argv: string[], ctx: CommandContext): Promise<number> {
  const results: unknown[] = [];
  for (const format of FORMATS) {
    const lines: string[] = [];
    const code = await calibrateCommand([EXAMPLE_MODEL, '--format', format, ...argv], { ...ctx, out: (line) => lines.push(line) });
    if (code !== 0) {
      for (const line of lines) ctx.out(line);
      return code;
    }
    results.push({ format, ...JSON.parse(lines.join('\n')) });
  }
  ctx.out(JSON.stringify({ model_path: EXAMPLE_MODEL, results }));
  return 0;
}
