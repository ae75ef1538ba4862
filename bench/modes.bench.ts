// Calibration modes on real model folders: for each model, format and mode, `calibscope calibrate
// --mode M` (calibration statistics from the default 230 queries) then `calibscope validate
// --dynamic-activations` on a held-out query set and on the calibration set itself; and the time to
// collect the statistics (cold cache: checkpoint hash, model load, one forward pass). JSON lines.
//   node dist/bench/modes.bench.js --model DIR [--model DIR ...] [--heldout FILE] [--formats fp4,nvfp4]
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { native } from '../src/native/index.js';
import { calibrationStatsCached } from '../src/semantic/calibration_stats.js';
import { loadQueries } from '../src/semantic/queries.js';

const ROOT = path.resolve(__dirname, '..', '..');
const args = process.argv.slice(2);
const all = (name: string): string[] => args.flatMap((a, i) => (a === name && args[i + 1] ? [args[i + 1]] : []));
const one = (name: string): string | undefined => all(name)[0];
const MODELS = all('--model');
const HELDOUT = one('--heldout') ?? path.join(ROOT, 'test', 'fixtures', 'reference', 'bert-tiny-a', 'queries.txt');
const FORMATS = (one('--formats') ?? 'fp4,nvfp4').split(',');
const MODES = ['static', 'activation-aware', 'entropy-aware'];

function emit(obj: Record<string, unknown>): void {
  const cpu = `${os.cpus()[0]?.model.trim() ?? 'cpu'} × ${os.cpus().length}`;
  process.stdout.write(`${JSON.stringify({ machine: cpu, gemm: native().Encoder.isa(), ...obj })}\n`);
}

function cli(argv: string[]): { json: Record<string, unknown>; seconds: number } {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'calibscope.js'), ...argv, '--json'], { encoding: 'utf8', maxBuffer: 256 << 20 });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`calibscope ${argv.join(' ')} failed (${r.status}): ${r.stdout.slice(0, 500)} ${r.stderr.slice(0, 500)}`);
  return { json: JSON.parse(r.stdout) as Record<string, unknown>, seconds };
}

async function main(): Promise<void> {
  if (MODELS.length === 0) throw new Error('give --model DIR (one or more)');
  const calibration = await loadQueries();
  for (const model of MODELS) {
    const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'calibscope-modes-bench-'));
    try {
      // Statistics, cold: nothing cached (the checkpoint is hashed too).
      const t0 = process.hrtime.bigint();
      const st = await calibrationStatsCached(model, calibration.queries, { cacheDir: cache });
      emit({
        bench: 'statistics',
        model: path.basename(model),
        queries: calibration.queries.length,
        tokens: st.stats.tokens,
        seconds_total: Number(process.hrtime.bigint() - t0) / 1e9,
        seconds_collect: st.stats.seconds,
      });
      for (const format of FORMATS) {
        for (const mode of MODES) {
          const cal = cli(['calibrate', model, '--format', format, '--mode', mode, '--cache', cache, '--no-diagnostics']);
          const profile = cal.json.profile as Record<string, number>;
          const out: Record<string, unknown> = {
            bench: 'mode',
            model: path.basename(model),
            format,
            mode,
            calibrate_seconds: cal.seconds,
            overall_mse: profile.overall_mse,
            overall_objective: profile.overall_objective ?? null,
          };
          for (const [label, file] of [['heldout', HELDOUT], ['in_sample', calibration.file]]) {
            const v = cli(['validate', model, '--format', format, '--mode', mode, '--cache', cache, '--queries', file, '--threshold', '0', '--dynamic-activations']).json;
            const da = v.dynamic_activations as Record<string, number>;
            out[`${label}_queries`] = v.query_count;
            out[`${label}_mean_correlation`] = v.mean_correlation;
            out[`${label}_min_correlation`] = v.min_correlation;
            out[`${label}_dynamic_mean_correlation`] = da.mean_correlation;
            if (label === 'heldout') {
              out.dynamic_scale_range = [da.scale_min, da.scale_max];
              out.dynamic_global_range = [da.global_scale_min, da.global_scale_max];
              out.dynamic_clipped_fraction = da.clipped_fraction;
            }
          }
          emit(out);
        }
      }
    } finally {
      fs.rmSync(cache, { recursive: true, force: true });
    }
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
