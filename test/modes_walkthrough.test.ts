// Calibration modes as a user drives them (docs/modes.md): the CLI's weighted profiles checked
// against an independent recomputation from their stored scales and the statistics file on disk,
// the statistics cache's keys and its refusal of damaged files, calibration query sets, input
// columns without signal, dynamic activations, and the workbench's re-run against the CLI.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { QuantizationCalibrator } from '../src/calibration/calibrator.js';
import { makeConfig } from '../src/calibration/config.js';
import { headWeights } from '../src/calibration/modes.js';
import { calibrateTensorData } from '../src/calibration/tensor_calibration.js';
import type { ModelCalibrationProfile } from '../src/calibration/types.js';
import { openCheckpoint } from '../src/checkpoints/checkpoint.js';
import { SafetensorsFile } from '../src/checkpoints/safetensors.js';
import { readScales } from '../src/profiles/store.js';
import { fakeQuantize } from '../src/quantize/index.js';
import { calibrationStatsCached, loadStats, type CalibrationStats } from '../src/semantic/calibration_stats.js';
import { toFloat32 } from '../src/semantic/model.js';
import { loadQueries, queriesHash } from '../src/semantic/queries.js';
import { rerunTensor } from '../src/service/rerun.js';
import { describeRun, runCli, scratchSpace } from './helpers/cli_runner.js';
import { TINY, TINY_MODEL, TINY_ST } from './helpers/reference.js';

// Every cache and model copy lives in one scratch folder, removed at the end.
const { dir: scratch } = scratchSpace('calibscope-modes-walk-');
const QUERY_FILE = path.join(TINY, 'queries.txt');

function copyDir(src: string, label: string): string {
  const dst = path.join(scratch, label);
  fs.cpSync(src, dst, { recursive: true });
  return dst;
}

interface CliProfile {
  profile_path: string;
  cached?: boolean;
  profile: ModelCalibrationProfile;
}

function cliJson<T = CliProfile>(args: string[]): T {
  const r = runCli([...args, '--json'], { env: { XDG_CACHE_HOME: path.join(scratch, 'xdg') }, timeout: 60_000 });
  assert.equal(r.status, 0, describeRun(r));
  return JSON.parse(r.stdout) as T;
}

const MODEL = copyDir(TINY_MODEL, 'model');
const ST = copyDir(TINY_ST, 'sentence_transformer');

/** The statistics pair a profile names, read straight from <cache>/stats/ (not through the loader). */
async function statsFromDisk(cache: string, p: ModelCalibrationProfile) {
  const s = p.statistics!;
  const base = path.join(cache, 'stats', p.model_id, `${s.checkpoint_hash.slice(7, 23)}-${s.queries_hash.slice(7, 23)}`);
  const json = JSON.parse(fs.readFileSync(`${base}.json`, 'utf8')) as { heads: number; statistics_hash: string };
  const hash = `sha256:${crypto.createHash('sha256').update(fs.readFileSync(`${base}.safetensors`)).digest('hex')}`;
  const f = await SafetensorsFile.open(`${base}.safetensors`);
  const arrays = new Map<string, Float64Array>();
  try {
    for (const t of f.tensors) arrays.set(t.name, new Float64Array(new Uint8Array(await f.readTensor(t)).buffer));
  } finally {
    await f.close();
  }
  return { json, arrays, hash };
}

/**
 * The documented weighting of one tensor, from the raw statistics: c_j = Var[x_j] / m,
 * μ_j = E[x_j] / sqrt(m), m = mean_k E[x_k²]; entropy-aware scales the output projection's columns
 * by the head weights and weighs q/k/v rows by them. Null: plain squared error.
 */
function documentedWeights(
  mode: string,
  name: string,
  rows: number,
  cols: number,
  disk: { json: { heads: number }; arrays: Map<string, Float64Array> },
): { c: Float32Array; mu: Float32Array; r: Float64Array | null } | null {
  let msq = disk.arrays.get(name);
  let mean = disk.arrays.get(`__mean__.${name}`);
  if (!msq || !mean) return null;
  let r: Float64Array | null = null;
  const layer = /encoder\.layer\.(\d+)\./.exec(name);
  if (mode === 'entropy-aware' && layer) {
    const nh = disk.json.heads;
    const l = Number(layer[1]);
    const w = headWeights(disk.arrays.get('__attention_entropy__')!.subarray(l * nh, (l + 1) * nh));
    if (/attention\.output\.dense\.weight$/.test(name)) {
      const d = cols / nh;
      msq = msq.map((v, j) => v * w[Math.floor(j / d)]);
      mean = mean.map((v, j) => v * Math.sqrt(w[Math.floor(j / d)]));
    } else if (/attention\.self\.(query|key|value)\.weight$/.test(name)) {
      const d = rows / nh;
      r = Float64Array.from({ length: rows }, (_, i) => w[Math.floor(i / d)]);
    }
  }
  const m = msq.reduce((a, b) => a + b, 0) / cols;
  const mu = mean;
  return { c: Float32Array.from(msq, (v, j) => Math.max(0, v - mu[j] * mu[j]) / m), mu: Float32Array.from(mu, (v) => v / Math.sqrt(m)), r };
}

/** Σ_i r_i (Σ_j c_j (x − x̂)² + Σ_blocks (Σ_j μ_j (x − x̂))²) / numel and the plain MSE, in float64. */
function weightedError(x: Float32Array, xhat: Float32Array, rows: number, cols: number, bs: number, w: ReturnType<typeof documentedWeights>) {
  let obj = 0;
  let mse = 0;
  for (let i = 0; i < rows; i++) {
    const ri = w?.r ? w.r[i] : 1;
    let bias = 0;
    for (let j = 0; j < cols; j++) {
      const d = x[i * cols + j] - xhat[i * cols + j];
      mse += d * d;
      obj += ri * (w ? w.c[j] : 1) * d * d;
      if (w) {
        bias += w.mu[j] * d;
        if ((j + 1) % bs === 0 || j === cols - 1) {
          obj += ri * bias * bias;
          bias = 0;
        }
      }
    }
  }
  return { obj: obj / (rows * cols), mse: mse / (rows * cols) };
}

const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-30);

describe('weighted profiles from the CLI against a recomputation from their scales and the statistics file', () => {
  for (const [label, dir] of [
    ['model folder', MODEL],
    ['sentence-transformers folder', ST],
  ] as const) {
    test(`${label}: activation-aware and entropy-aware, nvfp4`, async () => {
      const cache = path.join(scratch, `cache-objective-${label.split(' ')[0]}`);
      // The naive (absmax) scales: what objective_before and mse_before are measured with.
      const naive = cliJson(['calibrate', dir, '--format', 'nvfp4', '--search', 'naive', '--cache', cache]);
      const ckpt = await openCheckpoint(dir);
      try {
        for (const mode of ['activation-aware', 'entropy-aware']) {
          const run = cliJson(['calibrate', dir, '--format', 'nvfp4', '--mode', mode, '--cache', cache]);
          const p = run.profile;
          const disk = await statsFromDisk(cache, p);
          assert.equal(disk.hash, p.statistics!.hash);
          let sum = 0;
          let sumBefore = 0;
          let n = 0;
          for (const [name, res] of Object.entries(p.tensor_calibrations)) {
            const info = ckpt.tensor(name)!;
            const bytes = new Uint8Array(await ckpt.readTensor(info));
            const cols = info.shape[info.shape.length - 1];
            const rows = res.numel / cols;
            const x = toFloat32(bytes, info.dtype, res.numel);
            const td = { name, dtype: info.dtype, shape: info.shape, data: bytes };
            const xhat = await fakeQuantize(td, res, await readScales(run.profile_path, name, p));
            const nres = naive.profile.tensor_calibrations[name];
            assert.equal(nres.block_size, res.block_size);
            const xnaive = await fakeQuantize(td, nres, await readScales(naive.profile_path, name, naive.profile));
            const w = documentedWeights(mode, name, rows, cols, disk);
            assert.equal(res.weighting === 'none', w === null, `${name}: weighting ${res.weighting}`);
            const a = weightedError(x, xhat, rows, cols, res.block_size, w);
            const b = weightedError(x, xnaive, rows, cols, res.block_size, w);
            const what = `${label} ${mode} ${name}`;
            assert.ok(rel(a.obj, res.objective_after!) < 1e-6, `${what}: objective_after ${res.objective_after} vs recomputed ${a.obj}`);
            assert.ok(rel(b.obj, res.objective_before!) < 1e-6, `${what}: objective_before ${res.objective_before} vs recomputed ${b.obj}`);
            // mse_before / mse_after stay the plain MSE.
            assert.ok(rel(a.mse, res.mse_after) < 1e-9, `${what}: mse_after ${res.mse_after} vs ${a.mse}`);
            assert.ok(rel(b.mse, res.mse_before) < 1e-9, `${what}: mse_before ${res.mse_before} vs ${b.mse}`);
            // The search never does worse than the naive scales on its own objective.
            assert.ok(a.obj <= b.obj * (1 + 1e-9), `${what}: weighted objective ${a.obj} worse than naive ${b.obj}`);
            sum += a.obj * res.numel;
            sumBefore += b.obj * res.numel;
            n += res.numel;
          }
          assert.ok(rel(sum / n, p.overall_objective!) < 1e-6, `${mode}: overall_objective ${p.overall_objective} vs ${sum / n}`);
          assert.ok(rel(sumBefore / n, p.overall_objective_before!) < 1e-6, `${mode}: overall_objective_before`);
        }
      } finally {
        await ckpt.close();
      }
    });
  }
});

describe('the statistics cache', () => {
  const cache = path.join(scratch, 'cache-stats');
  let queries: string[];

  async function fresh(): Promise<{ stats: CalibrationStats; base: string }> {
    queries ??= (await loadQueries(QUERY_FILE)).queries;
    const r = await calibrationStatsCached(MODEL, queries, { cacheDir: cache, threads: 2, force: true });
    assert.equal(r.cached, false);
    return { stats: r.stats, base: r.path };
  }

  test('keyed by checkpoint and query-set hash; a changed query set or checkpoint is collected anew', async () => {
    const { stats, base } = await fresh();
    assert.equal(path.basename(base), `${stats.checkpoint_hash.slice(7, 23)}-${queriesHash(queries).slice(7, 23)}`);
    assert.equal((await calibrationStatsCached(MODEL, queries, { cacheDir: cache })).cached, true);
    const other = await calibrationStatsCached(MODEL, queries.slice(1), { cacheDir: cache });
    assert.equal(other.cached, false);
    assert.notEqual(other.path, base);
    // One changed weight: another checkpoint hash, another file.
    const changed = copyDir(TINY_MODEL, 'model-changed');
    const file = path.join(changed, 'model.safetensors');
    const b = fs.readFileSync(file);
    b[b.length - 3] ^= 1;
    fs.writeFileSync(file, b);
    const c = await calibrationStatsCached(changed, queries, { cacheDir: cache, modelId: stats.model_id });
    assert.equal(c.cached, false);
    assert.notEqual(c.stats.checkpoint_hash, stats.checkpoint_hash);
    assert.notEqual(c.path, base);
  });

  test('a damaged safetensors file is detected and collected again', async () => {
    const { stats, base } = await fresh();
    const good = fs.readFileSync(`${base}.safetensors`);
    const bad = Buffer.from(good);
    bad[bad.length - 5] ^= 0xff;
    fs.writeFileSync(`${base}.safetensors`, bad);
    const r = await calibrationStatsCached(MODEL, queries, { cacheDir: cache });
    assert.equal(r.cached, false);
    assert.equal(r.stats.statistics_hash, stats.statistics_hash);
    assert.deepEqual(fs.readFileSync(`${base}.safetensors`), good);
  });

  test('a JSON that no longer describes its safetensors file (a Linear dropped, layers × heads swapped) is not trusted', async () => {
    const { stats, base } = await fresh();
    const pooler = [...stats.linears.keys()].find((t) => t.startsWith('pooler'))!;
    const original = fs.readFileSync(`${base}.json`, 'utf8');
    const edits: [string, (j: { linears: { tensor: string }[]; layers: number; heads: number }) => void][] = [
      ['pooler dropped from linears', (j) => (j.linears = j.linears.filter((x) => x.tensor !== pooler))],
      ['layers and heads swapped', (j) => ([j.layers, j.heads] = [j.heads, j.layers])],
    ];
    for (const [what, edit] of edits) {
      const j = JSON.parse(original);
      edit(j);
      fs.writeFileSync(`${base}.json`, JSON.stringify(j));
      // The statistics hash still matches the untouched safetensors file.
      assert.equal(await loadStats(base, { checkpointHash: stats.checkpoint_hash, queriesHash: stats.queries_hash }), null, what);
      const r = await calibrationStatsCached(MODEL, queries, { cacheDir: cache });
      assert.equal(r.cached, false, what);
      assert.ok(r.stats.linears.has(pooler), what);
      assert.equal(r.stats.layers, stats.layers, what);
      assert.equal(r.stats.heads, stats.heads, what);
    }
    // Through the CLI: the pooler keeps its activation weighting.
    const j = JSON.parse(original);
    j.linears = j.linears.filter((x: { tensor: string }) => x.tensor !== pooler);
    fs.writeFileSync(`${base}.json`, JSON.stringify(j));
    const run = cliJson(['calibrate', MODEL, '--format', 'nvfp4', '--mode', 'activation-aware', '--queries', QUERY_FILE, '--cache', cache]);
    assert.equal(run.profile.tensor_calibrations[pooler].weighting, 'activation');
  });
});

describe('calibration query sets', () => {
  test('--calibration-queries names the statistics, --queries the validation; one query and over-long queries work', async () => {
    const cache = path.join(scratch, 'cache-queries');
    const one = path.join(scratch, 'one.txt');
    fs.writeFileSync(one, 'the cat sat on the mat\n');
    const long = path.join(scratch, 'long.txt');
    fs.writeFileSync(long, `${Array(200).fill('lorem ipsum dolor sit amet').join(' ')}\nshort query here\n`);
    const r = cliJson([
      'calibrate', MODEL, '--format', 'nvfp4', '--mode', 'activation-aware', '--calibration-queries', one,
      '--queries', QUERY_FILE, '--validate', '--threshold', '0.5', '--cache', cache,
    ]);
    const oneHash = queriesHash(['the cat sat on the mat']);
    assert.equal(r.profile.config.calibration_queries_hash, oneHash);
    assert.equal(r.profile.statistics!.query_count, 1);
    assert.equal(r.profile.statistics!.queries_hash, oneHash);
    const qs = (await loadQueries(QUERY_FILE)).queries;
    assert.equal((r.profile as unknown as { semantic_validation: { query_count: number } }).semantic_validation.query_count, qs.length);
    for (const t of Object.values(r.profile.tensor_calibrations)) {
      assert.ok(Number.isFinite(t.objective_after) && Number.isFinite(t.mse_after), t.tensor_name);
    }
    // Over-long calibration queries are truncated to the model's limit (128 positions here).
    const l = cliJson(['calibrate', MODEL, '--format', 'nvfp4', '--mode', 'activation-aware', '--calibration-queries', long, '--cache', cache]);
    assert.equal(l.profile.statistics!.query_count, 2);
    assert.ok(l.profile.statistics!.tokens <= 128 + 8, `${l.profile.statistics!.tokens} tokens`);
  });
});

describe('input columns without signal', () => {
  test('all-zero input moments fall back to plain squared error; zero-weight blocks keep finite, naive scales', async () => {
    const queries = (await loadQueries(QUERY_FILE)).queries.slice(0, 16);
    const cache = path.join(scratch, 'cache-zero');
    const { stats } = await calibrationStatsCached(MODEL, queries, { cacheDir: cache, threads: 2 });
    const dead = 'encoder.layer.1.output.dense.weight';
    const half = 'encoder.layer.0.output.dense.weight';
    const lin = stats.linears.get(dead)!;
    const lin2 = stats.linears.get(half)!;
    const zeroed: CalibrationStats = {
      ...stats,
      linears: new Map(stats.linears),
    };
    zeroed.linears.set(dead, { ...lin, mean_sq: new Float64Array(lin.in_features), mean: new Float64Array(lin.in_features) });
    // The first 32 input features never active.
    const msq = Float64Array.from(lin2.mean_sq, (v, j) => (j < 32 ? 0 : v));
    const mu = Float64Array.from(lin2.mean, (v, j) => (j < 32 ? 0 : v));
    zeroed.linears.set(half, { ...lin2, mean_sq: msq, mean: mu });
    const out = path.join(scratch, 'zero-profile');
    const { profile: p } = await new QuantizationCalibrator({ format: 'nvfp4', mode: 'activation-aware', include: [dead, half] }).calibrateModel(MODEL, {
      statistics: zeroed,
      outDir: out,
    });
    const d = p.tensor_calibrations[dead];
    assert.equal(d.weighting, 'none');
    assert.equal(d.objective_after, d.mse_after);
    const h = p.tensor_calibrations[half];
    assert.equal(h.weighting, 'activation');
    const { profile: naive } = await new QuantizationCalibrator({ format: 'nvfp4', search: 'naive', include: [half] }).calibrateModel(MODEL, {
      outDir: path.join(scratch, 'zero-naive'),
    });
    const s = await readScales(out, half, p);
    const ns = await readScales(path.join(scratch, 'zero-naive'), half, naive);
    for (const v of s.scales) assert.ok(Number.isFinite(v) && v > 0, `scale ${v}`);
    assert.ok(Number.isFinite(h.objective_after!) && Number.isFinite(h.objective_before!));
    assert.ok(h.objective_after! <= h.objective_before!);
    // Blocks 0 and 1 of every row (features 0..31) have no weight: every scale ties, the standard one stays.
    assert.equal(s.blocksPerRow, lin2.in_features / 16);
    for (let i = 0; i < s.rows; i++) {
      for (const b of [0, 1]) assert.equal(s.codes![i * s.blocksPerRow + b], ns.codes![i * s.blocksPerRow + b], `row ${i} block ${b}`);
    }
  });
});

describe('dynamic activations', () => {
  test('validate --dynamic-activations: plausible scale ranges, deterministic', () => {
    const cache = path.join(scratch, 'cache-dynamic');
    const args = ['validate', MODEL, '--format', 'nvfp4', '--mode', 'activation-aware', '--dynamic-activations', '--queries', QUERY_FILE, '--cache', cache];
    type Dyn = {
      mean_correlation: number;
      min_correlation: number;
      weight_only_mean_correlation: number;
      scale_min: number;
      scale_max: number;
      global_scale_min: number;
      global_scale_max: number;
      clipped_fraction: number;
      per_linear: { block_size: number; scale_min: number; scale_max: number; global_scale_min: number; global_scale_max: number; clipped: number; elements: number }[];
    };
    const a = cliJson<{ dynamic_activations: Dyn; mean_correlation: number }>(args);
    const b = cliJson<{ dynamic_activations: Dyn; mean_correlation: number }>(args);
    assert.deepEqual(a.dynamic_activations, b.dynamic_activations);
    const d = a.dynamic_activations;
    assert.equal(d.weight_only_mean_correlation, a.mean_correlation);
    assert.ok(d.mean_correlation > 0.98 && d.mean_correlation <= 1, `${d.mean_correlation}`);
    assert.ok(d.min_correlation <= d.mean_correlation);
    assert.ok(d.clipped_fraction > 0 && d.clipped_fraction < 0.1, `${d.clipped_fraction}`);
    for (const l of d.per_linear) {
      assert.equal(l.block_size, 16);
      assert.ok(0 < l.scale_min && l.scale_min <= l.scale_max && Number.isFinite(l.scale_max));
      assert.ok(0 < l.global_scale_min && l.global_scale_min <= l.global_scale_max);
      // A block multiplier is at least 6 / (the sequence's absmax) = 1 / (448 g), the block holding it.
      assert.ok(l.scale_min >= 1 / (448 * l.global_scale_max) * (1 - 1e-6), `${l.scale_min} vs g ${l.global_scale_max}`);
      assert.ok(l.clipped < l.elements);
    }
    assert.equal(d.scale_min, Math.min(...d.per_linear.map((l) => l.scale_min)));
    assert.equal(d.scale_max, Math.max(...d.per_linear.map((l) => l.scale_max)));
    assert.equal(d.global_scale_max, Math.max(...d.per_linear.map((l) => l.global_scale_max)));
    const clipped = d.per_linear.reduce((s, l) => s + l.clipped, 0) / d.per_linear.reduce((s, l) => s + l.elements, 0);
    assert.ok(rel(clipped, d.clipped_fraction) < 1e-12);
  });
});

describe('the workbench re-run', () => {
  test('re-running a tensor of a static profile in a weighted mode gives the CLI\'s scales for that mode', async () => {
    const cache = path.join(scratch, 'cache-rerun');
    const st = cliJson(['calibrate', MODEL, '--format', 'fp4', '--cache', cache]);
    for (const mode of ['activation-aware', 'entropy-aware'] as const) {
      const w = cliJson(['calibrate', MODEL, '--format', 'fp4', '--mode', mode, '--cache', cache]);
      for (const tensor of ['encoder.layer.0.attention.output.dense.weight', 'encoder.layer.1.attention.self.query.weight', 'pooler.dense.weight']) {
        const m = { id: st.profile.model_id, path: MODEL, config: makeConfig({ format: 'fp4' }), profileDir: st.profile_path };
        const out = await rerunTensor(m, { modelId: m.id, tensor, mode }, cache, new AbortController().signal, () => undefined);
        const ref = w.profile.tensor_calibrations[tensor];
        assert.equal(out.statisticsHash, w.profile.statistics!.hash);
        assert.equal(out.tc.result.block_size, ref.block_size, `${mode} ${tensor}`);
        assert.equal(out.tc.result.weighting, ref.weighting);
        assert.equal(out.tc.result.objective_after, ref.objective_after);
        assert.deepEqual(out.tc.scales, (await readScales(w.profile_path, tensor, w.profile)).scales, `${mode} ${tensor}`);
      }
    }
  });
});
