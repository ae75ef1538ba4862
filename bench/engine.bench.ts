// `npm run bench`: the calibration engine against its peers, one JSON line per measurement.
//
//  1. End to end through the CLI (`calibscope calibrate --format fp4 --block-sizes 64`) on a
//     trained-like FP16 checkpoint: weights/s and relative MSE.
//  2. The same search against a dense search of 2,600 multipliers on a sample (quality).
//  3. The numpy peer (../shared/bench/baseline_numpy.py) on a sample of the same weights, in this
//     same invocation: weights/s, relative MSE, and the speed ratio.
//  4. The reference model (test/fixtures/reference/bert-tiny-a).
//  5. Peak RSS of the CLI while calibrating a 1 GB FP16 checkpoint.
// Options: --quick (smaller sizes), --skip-rss, --peers DIR (where baseline_numpy.py lives).
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeSafetensors, SafetensorsStreamWriter } from '../src/checkpoints/safetensors_writer.js';
import { native } from '../src/native/index.js';
import { fromFloat16Bits, toFloat16Bits, trainedLike } from '../src/util/trained_like.js';

const ROOT = path.resolve(__dirname, '..', '..');
const CLI = path.join(ROOT, 'bin', 'calibscope.js');
const args = process.argv.slice(2);
const QUICK = args.includes('--quick');
const peersIdx = args.indexOf('--peers');
const PEERS = peersIdx >= 0 ? path.resolve(args[peersIdx + 1]) : path.resolve(ROOT, '..', 'shared', 'bench');

function emit(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ machine: machine(), ...obj })}\n`);
}

let machineCache: string | undefined;
function machine(): string {
  machineCache ??= `${os.cpus()[0]?.model.trim() ?? 'cpu'} × ${os.cpus().length}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, node ${process.versions.node}, simd ${native().info().simd}`;
  return machineCache;
}

/** Runs the CLI; returns wall seconds, its JSON and its peak RSS (VmHWM, polled from /proc). */
async function runCli(argv: string[]): Promise<{ seconds: number; json: any; peakRssMb: number | null }> {
  const t0 = process.hrtime.bigint();
  const child = spawn(process.execPath, [CLI, ...argv], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  let peakKb = 0;
  const poll = setInterval(() => {
    try {
      const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${child.pid}/status`, 'utf8'));
      if (m) peakKb = Math.max(peakKb, Number(m[1]));
    } catch {
      /* exited, or no /proc */
    }
  }, 20);
  const code: number = await new Promise((resolve) => child.on('close', (c) => resolve(c ?? 1)));
  clearInterval(poll);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (code !== 0) throw new Error(`calibscope ${argv.join(' ')} exited ${code}: ${out.slice(0, 500)}`);
  return { seconds, json: JSON.parse(out), peakRssMb: peakKb > 0 ? peakKb / 1024 : null };
}

function meanSquare(x: Float32Array): number {
  let s = 0;
  for (const v of x) s += v * v;
  return s / x.length;
}

/** Dense search of 2,600 multipliers p ∈ [0.3, 1.6] of the naive scale, E2M1, in float32 like the engine. */
function denseRelMse(w: Float32Array, bs: number): number {
  const grid = [0, 0.5, 1, 1.5, 2, 3, 4, 6];
  const f32 = Math.fround;
  const round = (a: number): number => {
    if (a >= 6) return 6;
    let best = 0;
    let bd = Infinity;
    for (let i = 0; i < grid.length; i++) {
      const d = Math.abs(a - grid[i]);
      if (d < bd || (d === bd && i % 2 === 0)) {
        bd = d;
        best = grid[i];
      }
    }
    return best;
  };
  let total = 0;
  let sq = 0;
  for (let b = 0; b < w.length; b += bs) {
    const x = w.subarray(b, b + bs);
    let amax = 0;
    for (const v of x) amax = Math.max(amax, Math.abs(v));
    for (const v of x) sq += v * v;
    if (amax === 0) continue;
    const s0 = f32(6 / amax);
    let best = Infinity;
    for (let i = 0; i < 2600; i++) {
      const s = f32(s0 / (0.3 + (1.3 * i) / 2599));
      let e = 0;
      for (const v of x) {
        const a = Math.abs(v);
        const d = a - f32(round(f32(a * s)) / s);
        e += d * d;
      }
      if (e < best) best = e;
    }
    total += best;
  }
  return total / sq;
}

function runNumpy(file: string, block: number): Record<string, unknown> | { skipped: string } {
  const script = path.join(PEERS, 'baseline_numpy.py');
  if (!fs.existsSync(script)) return { skipped: `${script} not found (pass --peers DIR)` };
  const r = spawnSync('python3', [script, '--safetensors', file, '--block', String(block)], { encoding: 'utf8' });
  if (r.status !== 0) return { skipped: `numpy baseline failed: ${(r.stderr || '').slice(-300)}` };
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

async function main(): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'calibscope-bench-'));
  try {
    // 1. End to end on a trained-like FP16 checkpoint.
    const rows = QUICK ? 1024 : 4096;
    const cols = 4096;
    const w = fromFloat16Bits(toFloat16Bits(trainedLike(rows, cols, { seed: 0 })));
    const h = toFloat16Bits(w);
    const ckpt = path.join(tmp, 'trained_like.safetensors');
    await writeSafetensors(ckpt, [{ name: 'layer.weight', dtype: 'F16', shape: [rows, cols], data: new Uint8Array(h.buffer) }]);
    const ms = meanSquare(w);
    for (const search of ['exact', 'ternary'] as const) {
      // Warm the page cache and the process once, then measure.
      await runCli(['calibrate', ckpt, '--format', 'fp4', '--block-sizes', '64', '--search', search, '--json', '--out', path.join(tmp, 'p')]);
      const r = await runCli(['calibrate', ckpt, '--format', 'fp4', '--block-sizes', '64', '--search', search, '--json', '--out', path.join(tmp, 'p')]);
      emit({
        bench: 'cli end to end', search, format: 'fp4', block: 64, weights: w.length, seconds: r.seconds,
        weights_per_s: Math.round(w.length / r.seconds),
        rel_mse_naive: r.json.profile.overall_mse_before / ms, rel_mse: r.json.profile.overall_mse / ms,
      });
    }

    // 2. + 3. Quality against the dense optimum, and the numpy peer, on a sample of the same weights.
    const sampleRows = QUICK ? 64 : 256;
    const sample = w.subarray(0, sampleRows * cols);
    const sampleFile = path.join(tmp, 'sample.safetensors');
    await writeSafetensors(sampleFile, [{ name: 'sample', dtype: 'F16', shape: [sampleRows, cols], data: new Uint8Array(h.buffer, 0, sampleRows * cols * 2) }]);
    const t0 = process.hrtime.bigint();
    const mine = await native().calibrate(new Uint8Array(sample.buffer, sample.byteOffset, sample.byteLength), {
      dtype: 'F32', rows: sampleRows, cols, scheme: 'fp4', blockSize: 64,
    });
    const engineSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const denseRows = QUICK ? 8 : 32;
    const dense = denseRelMse(w.subarray(0, denseRows * cols), 64);
    const mineDense = await native().calibrate(new Uint8Array(w.buffer, 0, denseRows * cols * 4), {
      dtype: 'F32', rows: denseRows, cols, scheme: 'fp4', blockSize: 64,
    });
    const denseMs = meanSquare(w.subarray(0, denseRows * cols));
    emit({
      bench: 'exact vs dense 2600', format: 'fp4', block: 64, weights: denseRows * cols,
      rel_mse_exact: mineDense.sumErrAfter / mineDense.counted / denseMs, rel_mse_dense: dense,
      exact_over_dense: mineDense.sumErrAfter / mineDense.counted / denseMs / dense,
    });
    const numpy = runNumpy(sampleFile, 64);
    const engineWps = sample.length / engineSeconds;
    emit({
      bench: 'numpy peer (same weights, sample)', weights: sample.length,
      engine_weights_per_s: Math.round(engineWps),
      engine_rel_mse: mine.sumErrAfter / mine.counted / meanSquare(sample),
      numpy,
    });

    // 4. The reference model.
    const ref = path.join(ROOT, 'test', 'fixtures', 'reference', 'bert-tiny-a', 'model');
    for (const format of ['fp4', 'nvfp4', 'fp8_e4m3'] as const) {
      const r = await runCli(['calibrate', ref, '--format', format, '--json', '--out', path.join(tmp, `ref-${format}`)]);
      const numel = Object.values<any>(r.json.profile.tensor_calibrations).reduce((a, t) => a + t.numel, 0);
      emit({
        bench: 'reference model bert-tiny-a', format, weights: numel, seconds: r.seconds,
        overall_mse_before: r.json.profile.overall_mse_before, overall_mse: r.json.profile.overall_mse,
        improvement: r.json.profile.overall_mse_before / r.json.profile.overall_mse,
      });
    }
    const refNumpy = runNumpy(path.join(ref, 'model.safetensors'), 64);
    emit({ bench: 'numpy peer on bert-tiny-a', numpy: refNumpy });

    // 5. Peak RSS on a 1 GB checkpoint: 32 tensors of 4096 × 4096 FP16 (the trained-like tensor
    //    repeated), streamed to disk.
    if (!args.includes('--skip-rss') && !QUICK) {
      const big = path.join(tmp, 'one_gb.safetensors');
      const n = 32;
      const specs = Array.from({ length: n }, (_, i) => ({ name: `layer.${i}.weight`, dtype: 'F16', shape: [rows, cols] }));
      const writer = await SafetensorsStreamWriter.create(big, specs);
      for (const s of specs) await writer.write(s.name, new Uint8Array(h.buffer));
      await writer.close();
      const bytes = fs.statSync(big).size;
      await runCli(['calibrate', big, '--format', 'fp4', '--block-sizes', '64', '--json', '--out', path.join(tmp, 'big'), '--no-diagnostics']);
      const r = await runCli(['calibrate', big, '--format', 'fp4', '--block-sizes', '64', '--json', '--out', path.join(tmp, 'big')]);
      emit({
        bench: '1 GB checkpoint', format: 'fp4', block: 64, bytes, weights: n * rows * cols, seconds: r.seconds,
        weights_per_s: Math.round((n * rows * cols) / r.seconds), peak_rss_mb: r.peakRssMb,
      });
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
