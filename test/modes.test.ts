// Calibration modes (docs/modes.md): the encoder's calibration statistics against a slow float64
// reference, their cache, the activation-/entropy-aware weightings and what they change in the
// search and the profile, dynamic activation quantization, and bad input.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { QuantizationCalibrator } from '../src/calibration/calibrator.js';
import { configHash, makeConfig } from '../src/calibration/config.js';
import { ENTROPY_EPSILON, headWeights, tensorWeighting } from '../src/calibration/modes.js';
import type { ModelCalibrationProfile } from '../src/calibration/types.js';
import { openCheckpoint } from '../src/checkpoints/checkpoint.js';
import { writeSafetensors } from '../src/checkpoints/safetensors_writer.js';
import { native } from '../src/native/index.js';
import { calibrateCached } from '../src/profiles/cache.js';
import { readScales } from '../src/profiles/store.js';
import { fakeQuantize } from '../src/quantize/index.js';
import {
  calibrationStatsCached,
  collectCalibrationStats,
  encodeStats,
  statsBasePath,
  type CalibrationStats,
} from '../src/semantic/calibration_stats.js';
import { loadSemanticModel, toFloat32, type SemanticModel } from '../src/semantic/model.js';
import { loadQueries, queriesHash } from '../src/semantic/queries.js';
import { EncoderSession } from '../src/semantic/session.js';
import { columnSquares, referenceLayer } from './helpers/bert_reference.js';
import { FIXTURES } from './helpers/reference.js';
import { describeRun, runCli, scratchSpace } from './helpers/cli_runner.js';

const TINY = path.join(FIXTURES, 'bert-tiny-a');
const MODEL = path.join(TINY, 'model');
const QUERY_FILE = path.join(TINY, 'queries.txt');

const { dir: scratch, tmpDir } = scratchSpace('calibscope-modes-');

const cli = (args: string[]) =>
  runCli(args, { env: { XDG_CACHE_HOME: path.join(scratch, 'xdg'), CALIBSCOPE_CACHE: path.join(scratch, 'default-cache') }, timeout: 60_000 });


/** max |a − b| ≤ tol · max |b| (relative to the array's scale). */
/** Σ_t x[t][j] / count per column, in float64. */
function columnMeans(x: ArrayLike<number>, cols: number, count: number): Float64Array {
  const s = new Float64Array(cols);
  for (let i = 0; i < x.length; i++) s[i % cols] += x[i];
  return s.map((v) => v / count);
}

function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  let scale = 0;
  let worst = 0;
  for (let i = 0; i < b.length; i++) {
    scale = Math.max(scale, Math.abs(b[i]));
    worst = Math.max(worst, Math.abs(a[i] - b[i]));
  }
  assert.ok(worst <= tol * scale, `${what}: max difference ${worst} exceeds ${tol} × ${scale}`);
}

let model: SemanticModel;
let queries: string[];
let stats: CalibrationStats;

before(async () => {
  model = await loadSemanticModel(MODEL);
  queries = (await loadQueries(QUERY_FILE)).queries;
  stats = await collectCalibrationStats(MODEL, queries, { threads: 2 });
});

describe('calibration statistics', () => {
  test('E[x²] of every Linear input and the attention entropy match a float64 reference built from captured states', async () => {
    const session = EncoderSession.fromModel(model);
    let r;
    let q;
    let hidden: Float32Array;
    try {
      q = session.encode(queries);
      r = await session.forward(q, { capture: true });
      hidden = await session.hiddenStates(q);
    } finally {
      session.close();
    }
    const H = model.config.hiddenSize;
    const offsets = [...q.offsets, q.tokens];
    assert.equal(stats.tokens, q.tokens);
    assert.equal(stats.sequences, queries.length);
    assert.equal(stats.queries_hash, queriesHash(queries));
    for (let l = 0; l < model.config.numLayers; l++) {
      const p = `encoder.layer.${l}.`;
      const input = r.layerInputs![l];
      // query/key/value read the captured layer input itself: the same float32 values, summed in float64.
      const inputSq = columnSquares(input, H).map((v) => v / q.tokens);
      for (const n of ['query', 'key', 'value']) {
        const s = stats.linears.get(`${p}attention.self.${n}.weight`)!;
        assert.equal(s.count, q.tokens);
        assert.equal(s.input, 'layer_input');
        assertClose(s.mean_sq, inputSq, 1e-12, `${p}${n}`);
        assertClose(s.mean, columnMeans(input, H, q.tokens), 1e-12, `${p}${n} mean`);
      }
      // The rest: recomputed from that input in float64 (the encoder runs float32).
      const ref = referenceLayer(model, l, input, offsets);
      const cases: [string, Float64Array, number][] = [
        ['attention.output.dense', ref.context, H],
        ['intermediate.dense', ref.attentionOutput, H],
        ['output.dense', ref.intermediate, model.config.intermediateSize],
      ];
      for (const [name, x, cols] of cases) {
        const s = stats.linears.get(`${p}${name}.weight`)!;
        assert.equal(s.in_features, cols);
        assertClose(s.mean_sq, columnSquares(x, cols).map((v) => v / q.tokens), 2e-4, `${p}${name}`);
        assertClose(s.mean, columnMeans(x, cols, q.tokens), 2e-4, `${p}${name} mean`);
      }
      const entropy = stats.attention_entropy.subarray(l * model.config.numHeads, (l + 1) * model.config.numHeads);
      assertClose(entropy, ref.entropy.map((v) => v / q.tokens), 1e-5, `layer ${l} entropy`);
      // The next layer's input, as a check on the reference itself.
      if (l + 1 < model.config.numLayers) assertClose(r.layerInputs![l + 1], ref.output, 1e-4, `layer ${l} output`);
    }
    // pooler.dense: the first token's last hidden state of each query.
    const pooler = stats.linears.get('pooler.dense.weight')!;
    assert.equal(pooler.count, queries.length);
    assert.equal(pooler.input, 'cls_hidden');
    const cls = new Float32Array(queries.length * H);
    q.offsets.forEach((o, i) => cls.set(hidden.subarray(o * H, (o + 1) * H), i * H));
    assertClose(pooler.mean_sq, columnSquares(cls, H).map((v) => v / queries.length), 1e-12, 'pooler');
    assertClose(pooler.mean, columnMeans(cls, H, queries.length), 1e-12, 'pooler mean');
    // The embeddings are not weighed: no statistics for them.
    assert.equal(stats.linears.has('embeddings.word_embeddings.weight'), false);
  });

  test('mean attention entropy lies in [0, log(longest sequence)], and the statistics do not depend on the thread count', async () => {
    const maxLen = Math.max(...queries.map((x) => model.tokenizer.encode(x).ids.length));
    for (const e of stats.attention_entropy) assert.ok(e >= 0 && e <= Math.log(maxLen), `entropy ${e} outside [0, log ${maxLen}]`);
    const one = await collectCalibrationStats(MODEL, queries, { threads: 1 });
    assert.equal(one.statistics_hash, stats.statistics_hash);
    assert.deepEqual(encodeStats(one), encodeStats(stats));
    // A single query: entropy of one-token attention rows is 0 for a one-token sequence.
    const short = await collectCalibrationStats(MODEL, ['a'], {});
    for (const e of short.attention_entropy) assert.ok(e >= 0 && e <= Math.log(3) + 1e-12);
  });

  test('the stats cache is keyed by checkpoint hash and query-set hash; damaged entries are collected again', async () => {
    const cache = tmpDir('stats-cache');
    const copy = path.join(tmpDir('model-copy'), 'tiny');
    fs.cpSync(MODEL, copy, { recursive: true });
    const first = await calibrationStatsCached(copy, queries, { cacheDir: cache });
    assert.equal(first.cached, false);
    assert.equal(first.path, statsBasePath(cache, 'tiny', first.stats.checkpoint_hash, queriesHash(queries)));
    assert.ok(first.path.startsWith(path.join(cache, 'stats', 'tiny') + path.sep));
    assert.ok(fs.existsSync(`${first.path}.json`) && fs.existsSync(`${first.path}.safetensors`));
    const json = JSON.parse(fs.readFileSync(`${first.path}.json`, 'utf8'));
    assert.equal(json.statistics_hash, first.stats.statistics_hash);
    assert.equal(json.linears.length, 13);
    // The same checkpoint content as MODEL: the same statistics.
    assert.equal(first.stats.statistics_hash, stats.statistics_hash);

    const hit = await calibrationStatsCached(copy, queries, { cacheDir: cache });
    assert.equal(hit.cached, true);
    assert.equal(hit.stats.statistics_hash, first.stats.statistics_hash);
    assert.deepEqual(encodeStats(hit.stats), encodeStats(first.stats));

    // Another query set: another entry.
    const other = await calibrationStatsCached(copy, queries.slice(0, 10), { cacheDir: cache });
    assert.equal(other.cached, false);
    assert.notEqual(other.path, first.path);

    // A changed checkpoint (config.json is hashed): another entry.
    const cfgPath = path.join(copy, 'config.json');
    fs.writeFileSync(cfgPath, fs.readFileSync(cfgPath, 'utf8').replace('"dtype"', '"_note": "edited",\n  "dtype"'));
    const changed = await calibrationStatsCached(copy, queries, { cacheDir: cache });
    assert.equal(changed.cached, false);
    assert.notEqual(changed.stats.checkpoint_hash, first.stats.checkpoint_hash);
    assert.notEqual(changed.path, first.path);

    // A damaged pair is not used.
    const img = fs.readFileSync(`${changed.path}.safetensors`);
    img[img.length - 1] ^= 0xff;
    fs.writeFileSync(`${changed.path}.safetensors`, img);
    const again = await calibrationStatsCached(copy, queries, { cacheDir: cache });
    assert.equal(again.cached, false);
    assert.equal(again.stats.statistics_hash, changed.stats.statistics_hash);
    const leftovers = fs.readdirSync(path.join(cache, 'stats', 'tiny')).filter((n) => n.startsWith('.'));
    assert.deepEqual(leftovers, []);
  });
});

describe('weighted calibration', () => {
  const cache = path.join(scratch, 'profile-cache');
  const profiles: Record<string, { profile: ModelCalibrationProfile; profilePath: string }> = {};
  before(async () => {
    for (const [format, mode] of [
      ['fp4', 'static'],
      ['fp4', 'activation-aware'],
      ['fp4', 'entropy-aware'],
      ['nvfp4', 'static'],
      ['nvfp4', 'entropy-aware'],
    ]) {
      const r = await calibrateCached({ cacheDir: cache, model: MODEL, config: { format, mode }, queries, statistics: stats, diagnostics: false });
      profiles[`${format}/${mode}`] = r;
    }
  });

  async function weightBytes(name: string): Promise<{ bytes: Uint8Array; dtype: string; shape: number[] }> {
    const ckpt = await openCheckpoint(MODEL);
    try {
      const t = ckpt.tensor(name)!;
      return { bytes: new Uint8Array(await ckpt.readTensor(t)), dtype: t.dtype, shape: t.shape };
    } finally {
      await ckpt.close();
    }
  }

  /** Σ_i r_i (Σ_j c_j (x − x̂)² + Σ_blocks (Σ_j μ_j (x − x̂))²) of a tensor under a profile's stored scales, in float64. */
  async function weightedError(
    dir: string,
    profile: ModelCalibrationProfile,
    name: string,
    cols: Float32Array,
    rows?: Float32Array,
    means?: Float32Array,
    blockSize?: number,
  ): Promise<number> {
    const w = await weightBytes(name);
    const res = profile.tensor_calibrations[name];
    const xhat = await fakeQuantize({ name, dtype: w.dtype, shape: w.shape, data: w.bytes }, res, await readScales(dir, name, profile));
    const x = toFloat32(w.bytes, w.dtype, res.numel);
    const n = cols.length;
    const bs = blockSize ?? n;
    let sum = 0;
    let bias = 0;
    for (let i = 0; i < x.length; i++) {
      const r = rows ? rows[Math.floor(i / n)] : 1;
      const d = x[i] - xhat[i];
      sum += r * cols[i % n] * d * d;
      if (means) {
        bias += means[i % n] * d;
        if ((i % n) % bs === bs - 1 || i % n === n - 1) {
          sum += r * bias * bias;
          bias = 0;
        }
      }
    }
    return sum;
  }

  test('activation-aware minimizes Σ Var[x_j]·(w − ŵ)² + the blocks\' bias (Σ E[x_j]·(w − ŵ))² as the search does; mse fields stay plain', async () => {
    const aa = profiles['fp4/activation-aware'];
    const st = profiles['fp4/static'];
    for (const name of ['encoder.layer.0.intermediate.dense.weight', 'encoder.layer.1.output.dense.weight', 'encoder.layer.0.attention.self.value.weight']) {
      const w = await weightBytes(name);
      const wt = tensorWeighting('activation-aware', name, w.shape, stats);
      assert.equal(wt.kind, 'activation');
      // c_j = Var[x_j] / mean_j E[x_j²], μ_j = E[x_j] / sqrt(mean_j E[x_j²])
      const m = stats.linears.get(name)!.mean_sq;
      const mu = stats.linears.get(name)!.mean;
      const mean = m.reduce((a, b) => a + b, 0) / m.length;
      assertClose(wt.columns!, Float32Array.from(m, (v, j) => Math.max(0, v - mu[j] * mu[j]) / mean), 0, `${name} weights`);
      assertClose(wt.means!, Float32Array.from(mu, (v) => v / Math.sqrt(mean)), 0, `${name} means`);
      const res = aa.profile.tensor_calibrations[name];
      assert.equal(res.weighting, 'activation');
      const direct = await native().calibrate(w.bytes, {
        dtype: w.dtype as 'F16',
        rows: w.shape[0],
        cols: w.shape[1],
        scheme: 'fp4',
        blockSize: res.block_size,
        columnWeights: wt.columns,
        columnMeans: wt.means,
      });
      assert.equal(res.objective_after, direct.sumObjAfter! / direct.counted);
      assert.equal(res.objective_before, direct.sumObjBefore! / direct.counted);
      assert.equal(res.mse_after, direct.sumErrAfter / direct.counted);
      assert.equal(res.mse_before, direct.sumErrBefore / direct.counted);
      assert.deepEqual((await readScales(aa.profilePath, name, aa.profile)).scales, direct.scales);
      // Plain MSE: the static profile (MSE-optimal) can only be better; the weighted objective: only worse.
      const sres = st.profile.tensor_calibrations[name];
      assert.equal(sres.block_size, res.block_size);
      assert.equal(sres.mse_before, res.mse_before);
      assert.ok(sres.mse_after <= res.mse_after);
      const staticObj = await weightedError(st.profilePath, st.profile, name, wt.columns!, undefined, wt.means, res.block_size);
      const own = await weightedError(aa.profilePath, aa.profile, name, wt.columns!, undefined, wt.means, res.block_size);
      assert.ok(Math.abs(own - direct.sumObjAfter!) <= 1e-9 * own, `${name}: objective ${direct.sumObjAfter} vs recomputed ${own}`);
      assert.ok(direct.sumObjAfter! <= staticObj * (1 + 1e-12), `${name}: ${direct.sumObjAfter} > static ${staticObj}`);
    }
    // Embeddings have no input statistics: plain squared error, objective = mse.
    const emb = aa.profile.tensor_calibrations['embeddings.word_embeddings.weight'];
    assert.equal(emb.weighting, 'none');
    assert.equal(emb.objective_after, emb.mse_after);
    const plain = st.profile.tensor_calibrations['embeddings.word_embeddings.weight'];
    assert.deepEqual([emb.mse_before, emb.mse_after, emb.block_size, emb.outlier_count], [plain.mse_before, plain.mse_after, plain.block_size, plain.outlier_count]);
    assert.ok(aa.profile.overall_objective! <= aa.profile.overall_objective_before!);
    assert.equal(st.profile.overall_objective, undefined);
  });

  test('entropy-aware: head weights on the output projection change the search; on q/k/v only the reported objective', async () => {
    const ea = profiles['fp4/entropy-aware'];
    const aa = profiles['fp4/activation-aware'];
    const nh = model.config.numHeads;
    const H = model.config.hiddenSize;
    const w1 = headWeights(stats.attention_entropy.subarray(nh, 2 * nh));
    const u = Array.from(stats.attention_entropy.subarray(nh, 2 * nh), (e) => 1 / (e + ENTROPY_EPSILON));
    const um = u.reduce((a, b) => a + b, 0) / nh;
    assertClose(w1, u.map((v) => v / um), 1e-15, 'head weights');
    assert.ok(Math.abs(w1.reduce((a, b) => a + b, 0) / nh - 1) < 1e-12);

    // Output projection: input column j scaled by sqrt(w_h(j)): c_j ∝ Var[x_j]·w_h(j), μ_j ∝ E[x_j]·sqrt(w_h(j)).
    const ao = 'encoder.layer.1.attention.output.dense.weight';
    const wt = tensorWeighting('entropy-aware', ao, [H, H], stats);
    assert.equal(wt.kind, 'activation+head_columns');
    const m = stats.linears.get(ao)!.mean_sq;
    const mu = stats.linears.get(ao)!.mean;
    const hw = (j: number) => w1[Math.floor(j / (H / nh))];
    const pm = Array.from(m, (v, j) => v * hw(j)).reduce((a, b) => a + b, 0) / H;
    assertClose(wt.columns!, Array.from(m, (v, j) => (v - mu[j] * mu[j]) * hw(j) / pm), 1e-6, 'output projection weights');
    assertClose(wt.means!, Array.from(mu, (v, j) => (v * Math.sqrt(hw(j))) / Math.sqrt(pm)), 1e-6, 'output projection means');
    assert.equal(ea.profile.tensor_calibrations[ao].weighting, 'activation+head_columns');
    const w = await weightBytes(ao);
    const direct = await native().calibrate(w.bytes, { dtype: 'F16', rows: H, cols: H, scheme: 'fp4', blockSize: 64, columnWeights: wt.columns, columnMeans: wt.means });
    assert.deepEqual((await readScales(ea.profilePath, ao, ea.profile)).scales, direct.scales);

    // Query: row weights are constant within a block: the same scales as activation-aware, a different objective.
    const qn = 'encoder.layer.1.attention.self.query.weight';
    const qw = tensorWeighting('entropy-aware', qn, [H, H], stats);
    assert.equal(qw.kind, 'activation+head_rows');
    assert.equal(qw.rows![0], Math.fround(w1[0]));
    assert.equal(qw.rows![H - 1], Math.fround(w1[nh - 1]));
    assert.deepEqual((await readScales(ea.profilePath, qn, ea.profile)).scales, (await readScales(aa.profilePath, qn, aa.profile)).scales);
    const r = ea.profile.tensor_calibrations[qn];
    assert.equal(r.mse_after, aa.profile.tensor_calibrations[qn].mse_after);
    const expected = await weightedError(ea.profilePath, ea.profile, qn, qw.columns!, qw.rows!, qw.means, r.block_size);
    assert.ok(Math.abs(r.objective_after! * r.numel - expected) <= 1e-9 * expected, `${r.objective_after! * r.numel} vs ${expected}`);

    // NVFP4 (exhaustive over E4M3 codes) under the same weighting.
    const nv = profiles['nvfp4/entropy-aware'];
    const dn = await native().calibrate(w.bytes, { dtype: 'F16', rows: H, cols: H, scheme: 'nvfp4', blockSize: 16, columnWeights: wt.columns, columnMeans: wt.means });
    assert.deepEqual((await readScales(nv.profilePath, ao, nv.profile)).codes, dn.codes);
    assert.equal(nv.profile.tensor_calibrations[ao].objective_after, dn.sumObjAfter! / dn.counted);

    const d = ea.profile.mode_details!;
    assert.equal(d.mode, 'entropy-aware');
    assert.equal(d.epsilon, ENTROPY_EPSILON);
    assert.match(d.head_weights!, /1 \/ \(H_h \+ ε\)/);
    assert.deepEqual(d.head_weights_by_layer![1], Array.from(w1));
    assert.equal(d.attention_entropy_by_layer!.length, model.config.numLayers);
  });

  test('the mode is part of the config hash (its own profile folder) and is recorded with the statistics', () => {
    const dirs = Object.values(profiles).map((p) => p.profilePath);
    assert.equal(new Set(dirs).size, dirs.length);
    // Static keeps the folder it had before modes existed.
    assert.equal(configHash(makeConfig({ format: 'fp4' })), configHash(makeConfig({ format: 'fp4', mode: 'static' })));
    assert.equal(path.basename(profiles['fp4/static'].profilePath), `fp4-${configHash(makeConfig({ format: 'fp4' }))}`);
    // Another calibration query set: another folder.
    const h = queriesHash(['another set']);
    assert.notEqual(configHash(makeConfig({ format: 'fp4', mode: 'activation-aware' })), configHash(makeConfig({ format: 'fp4', mode: 'activation-aware', calibration_queries_hash: h })));
    for (const [key, { profile, profilePath }] of Object.entries(profiles)) {
      const mode = key.split('/')[1];
      assert.equal(profile.mode, mode);
      assert.equal(profile.config.mode, mode);
      assert.equal(path.basename(profilePath), `${profile.format}-${configHash(profile.config)}`);
      const onDisk = JSON.parse(fs.readFileSync(path.join(profilePath, 'profile.json'), 'utf8')) as ModelCalibrationProfile;
      assert.equal(onDisk.mode, mode);
      if (mode === 'static') {
        assert.equal(onDisk.statistics, null);
      } else {
        assert.deepEqual(onDisk.statistics, {
          hash: stats.statistics_hash,
          queries_hash: queriesHash(queries),
          query_count: queries.length,
          tokens: stats.tokens,
          checkpoint_hash: profile.golden_checkpoint_hash,
        });
        assert.equal(typeof onDisk.mode_details!.column_weights, 'string');
      }
    }
  });

  test('block-size policy compares the weighted objective; the smallest-block shortcut only without the bias term', async () => {
    const bits = await calibrateCached({
      cacheDir: cache,
      model: MODEL,
      config: { format: 'fp4', mode: 'activation-aware', block_policy: 'bits', bits_tolerance: 0.05 },
      queries,
      statistics: stats,
      diagnostics: false,
    });
    const minmse = profiles['fp4/activation-aware'].profile;
    for (const [name, r] of Object.entries(bits.profile.tensor_calibrations)) {
      assert.equal(r.block_sizes_tried.length, 3, name);
      const objs = r.block_sizes_tried.map((t) => t.objective_after!);
      const best = Math.min(...objs);
      const ok = r.block_sizes_tried.filter((t) => t.objective_after! <= best * 1.05).map((t) => t.block_size);
      assert.equal(r.block_size, Math.max(...ok), name);
      const mm = minmse.tensor_calibrations[name];
      if (r.weighting === 'none') {
        // Without the bias term, splitting blocks never raises the least weighted objective: 64 ≤ 128 ≤ 256.
        assert.ok(objs[0] <= objs[1] * (1 + 1e-12) && objs[1] <= objs[2] * (1 + 1e-12), `${name}: ${objs}`);
        assert.equal(mm.block_size, 64);
        assert.deepEqual(mm.block_sizes_dominated, [128, 256]);
        assert.equal(mm.objective_after, r.block_sizes_tried[0].objective_after);
      } else {
        // The per-block bias term scores a split block differently: min-mse tries every size.
        assert.equal(mm.block_sizes_tried.length, 3, name);
        assert.equal(mm.objective_after, best, name);
        // Ties go to the larger block.
        assert.equal(mm.block_size, Math.max(...r.block_sizes_tried.filter((t) => t.objective_after === best).map((t) => t.block_size)), name);
      }
    }
  });
});

describe('dynamic activations', () => {
  test('validate --dynamic-activations reports both correlations and the activation scale range', () => {
    const cache = tmpDir('dyn-cache');
    const r = cli(['validate', MODEL, '--format', 'nvfp4', '--cache', cache, '--queries', QUERY_FILE, '--threshold', '0.5', '--dynamic-activations', '--json']);
    assert.equal(r.status, 0, describeRun(r));
    const out = JSON.parse(r.stdout);
    const da = out.dynamic_activations;
    assert.equal(da.scheme, 'nvfp4');
    assert.equal(da.scale_rule, 'standard');
    assert.equal(da.global_scale, 'per sequence');
    assert.equal(da.weight_only_mean_correlation, out.mean_correlation);
    assert.ok(da.mean_correlation > 0.9 && da.mean_correlation <= 1);
    assert.ok(da.min_correlation <= da.mean_correlation);
    assert.ok(da.scale_min > 0 && da.scale_min <= da.scale_max);
    assert.ok(da.global_scale_min > 0 && da.global_scale_min <= da.global_scale_max);
    assert.ok(da.clipped_fraction >= 0 && da.clipped_fraction < 0.1);
    assert.equal(da.linears_quantized, 12);
    assert.equal(da.per_linear.length, 12);
    assert.equal(da.per_query.length, 48);
    for (const l of da.per_linear) assert.equal(l.block_size, 16);
    const profile = JSON.parse(fs.readFileSync(path.join(out.profile_path, 'profile.json'), 'utf8'));
    assert.equal(profile.semantic_validation.dynamic_activations.mean_correlation, da.mean_correlation);
    // Human output names it too.
    const h = cli(['validate', MODEL, '--format', 'nvfp4', '--cache', cache, '--queries', QUERY_FILE, '--threshold', '0.5', '--dynamic-activations']);
    assert.equal(h.status, 0, describeRun(h));
    assert.match(h.stdout, /dynamic activations \(nvfp4, standard scales per token block, 12 Linear inputs\): mean Pearson 0\.9\d+/);
  });

  test('activation scales follow the standard rule: NVFP4 g per sequence, FP32 s = 6 / absmax per token block', async () => {
    const session = EncoderSession.fromModel(model);
    try {
      const q = session.encode(queries);
      const plain = await session.forward(q, { capture: true });
      const H = model.config.hiddenSize;
      const input = plain.layerInputs![0];
      const offsets = [...q.offsets, q.tokens];
      // Only layer 0's query input quantized.
      const sizes = new Int32Array(model.config.numLayers * 6);
      sizes[0] = 16;
      const nv = await session.forward(q, { actQuant: { scheme: 'nvfp4', blockSizes: sizes } });
      let gmin = Infinity;
      let gmax = 0;
      for (let s = 0; s + 1 < offsets.length; s++) {
        let a = 0;
        for (let i = offsets[s] * H; i < offsets[s + 1] * H; i++) a = Math.max(a, Math.abs(input[i]));
        const g = Math.fround(Math.fround(a) / Math.fround(6 * 448));
        gmin = Math.min(gmin, g);
        gmax = Math.max(gmax, g);
      }
      const a0 = nv.actQuant![0];
      assert.equal(a0.globalMin, gmin);
      assert.equal(a0.globalMax, gmax);
      assert.equal(a0.elements, q.tokens * H);
      assert.equal(a0.blocks, q.tokens * (H / 16));
      for (const other of nv.actQuant!.slice(1)) assert.equal(other.blocks, 0);
      assert.ok(nv.embeddings.some((e, i) => e.some((v, j) => v !== plain.embeddings[i][j])));

      sizes[0] = 64;
      const fp = await session.forward(q, { actQuant: { scheme: 'fp4', blockSizes: sizes } });
      let smin = Infinity;
      let smax = 0;
      let clipped = 0;
      for (let t = 0; t < q.tokens; t++) {
        for (let b = 0; b < H; b += 64) {
          let a = 0;
          for (let j = b; j < b + 64; j++) a = Math.max(a, Math.abs(input[t * H + j]));
          const s = Math.fround(6 / a);
          smin = Math.min(smin, s);
          smax = Math.max(smax, s);
          // absmax·s can round a hair above 6 in float32: saturated, and counted as clipped.
          for (let j = b; j < b + 64; j++) clipped += Math.fround(Math.abs(input[t * H + j]) * s) > 6 ? 1 : 0;
        }
      }
      assert.equal(fp.actQuant![0].scaleMin, smin);
      assert.equal(fp.actQuant![0].scaleMax, smax);
      assert.equal(fp.actQuant![0].clipped, clipped);
      assert.ok(clipped <= q.tokens * 2);

      // No block sizes: nothing quantized, the plain pass.
      const none = await session.forward(q, { actQuant: { scheme: 'nvfp4', blockSizes: new Int32Array(model.config.numLayers * 6) } });
      assert.deepEqual(none.embeddings, plain.embeddings);
      await assert.rejects(session.forward(q, { actQuant: { scheme: 'nvfp4', blockSizes: new Int32Array(3) } }), /layers × 6/);
      await assert.rejects(session.forward(q, { actQuant: { scheme: 'int4' as 'nvfp4', blockSizes: sizes } }), /unknown scheme/);
      await assert.rejects(session.forward(q, { stats: true, startLayer: 1, hiddenIn: plain.layerInputs![1] }), /full pass/);
    } finally {
      session.close();
    }
  });
});

describe('bad input', () => {
  test('an unknown mode is refused with the modes listed (CLI, config, manifest)', () => {
    assert.throws(() => makeConfig({ format: 'fp4', mode: 'bogus' }), { code: 'E_BAD_ARGUMENT', message: /unknown calibration mode "bogus".*static, activation-aware, entropy-aware/ });
    const r = cli(['calibrate', MODEL, '--format', 'fp4', '--mode', 'bogus', '--cache', tmpDir('bad-mode'), '--json']);
    assert.equal(r.status, 2, describeRun(r));
    assert.equal(JSON.parse(r.stdout).error.code, 'E_BAD_ARGUMENT');

    const dir = tmpDir('bad-manifest');
    fs.writeFileSync(path.join(dir, 'pipeline.json'), JSON.stringify({ models: [{ id: 'tiny', path: MODEL, format: 'fp4', mode: 'activation_aware' }] }));
    const m = cli(['calibrate', '--pipeline', path.join(dir, 'pipeline.json'), '--cache', path.join(dir, 'cache'), '--json']);
    assert.equal(m.status, 2, describeRun(m));
    assert.match(JSON.parse(m.stdout).error.message, /models\[0\] \('tiny'\).*unknown calibration mode "activation_aware"/);
    assert.equal(fs.existsSync(path.join(dir, 'cache', 'calibration', 'tiny')), false);
  });

  test('statistics for a checkpoint the encoder cannot run: a clear error, no profile; static still works', async () => {
    const dir = tmpDir('not-bert');
    const w = new Float32Array(64 * 64).map((_, i) => Math.sin(i));
    await writeSafetensors(path.join(dir, 'model.safetensors'), [{ name: 'layers.0.mlp.weight', dtype: 'F32', shape: [64, 64], data: new Uint8Array(w.buffer) }]);
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'llama', architectures: ['LlamaModel'] }));
    await assert.rejects(collectCalibrationStats(dir, queries), (e: Error & { code: string }) => {
      assert.equal(e.code, 'E_BAD_CHECKPOINT');
      assert.match(e.message, /calibration statistics .* need calibscope's BERT encoder.*model_type "llama".*not supported/);
      return true;
    });
    const cache = path.join(dir, 'cache');
    const r = cli(['calibrate', dir, '--format', 'fp4', '--mode', 'activation-aware', '--cache', cache, '--json']);
    assert.equal(r.status, 1, describeRun(r));
    const err = JSON.parse(r.stdout).error;
    assert.equal(err.code, 'E_BAD_CHECKPOINT');
    assert.match(err.message, /need calibscope's BERT encoder/);
    assert.equal(fs.existsSync(path.join(cache, 'calibration', path.basename(dir))), false);
    const s = cli(['calibrate', dir, '--format', 'fp4', '--mode', 'static', '--cache', cache, '--json']);
    assert.equal(s.status, 0, describeRun(s));
    assert.equal(JSON.parse(s.stdout).profile.mode, 'static');
  });

  test('a weighted mode without statistics, or with another checkpoint\'s, is refused', async () => {
    const cal = new QuantizationCalibrator({ format: 'fp4', mode: 'activation-aware' });
    await assert.rejects(cal.calibrateModel(MODEL), { code: 'E_BAD_ARGUMENT', message: /needs calibration statistics/ });
    const foreign = { ...stats, checkpoint_hash: `sha256:${'0'.repeat(64)}` };
    const out = path.join(tmpDir('foreign'), 'p');
    await assert.rejects(cal.calibrateModel(MODEL, { statistics: foreign, outDir: out }), { code: 'E_BAD_ARGUMENT', message: /another checkpoint/ });
    assert.equal(fs.existsSync(out), false);
    await assert.rejects(calibrateCached({ cacheDir: tmpDir('qmismatch'), model: MODEL, config: { format: 'fp4', mode: 'activation-aware', calibration_queries_hash: queriesHash(['x']) }, queries }), {
      code: 'E_BAD_ARGUMENT',
      message: /hash to .* but the config names/,
    });
  });
});

describe('command line', () => {
  test('calibrate --mode (single model and a pipeline with per-model modes) reuses cached statistics', async () => {
    const cache = tmpDir('cli-modes');
    const r = cli(['calibrate', MODEL, '--format', 'nvfp4', '--mode', 'entropy-aware', '--queries', QUERY_FILE, '--cache', cache, '--json']);
    assert.equal(r.status, 0, describeRun(r));
    const out = JSON.parse(r.stdout);
    assert.equal(out.profile.mode, 'entropy-aware');
    assert.equal(out.profile.config.calibration_queries_hash, queriesHash(queries));
    assert.equal(out.profile.statistics.hash, stats.statistics_hash);
    const statsFiles = fs.readdirSync(path.join(cache, 'stats', 'model'));
    assert.equal(statsFiles.length, 2);

    const h = cli(['calibrate', MODEL, '--format', 'nvfp4', '--mode', 'entropy-aware', '--queries', QUERY_FILE, '--cache', cache]);
    assert.equal(h.status, 0, describeRun(h));
    assert.match(h.stdout, /objective before → after/);
    assert.match(h.stdout, /mode entropy-aware: weighted objective .* → .*\(statistics [0-9a-f]{12} from 48 queries/);

    // validate --format --mode: --queries is only the validation set; the calibration set stays the
    // shipped one unless --calibration-queries names another (here: the profile calibrated above).
    const v = cli(['validate', MODEL, '--format', 'nvfp4', '--mode', 'entropy-aware', '--calibration-queries', QUERY_FILE, '--queries', QUERY_FILE, '--cache', cache, '--threshold', '0', '--json']);
    assert.equal(v.status, 0, describeRun(v));
    assert.equal(JSON.parse(v.stdout).profile_path, out.profile_path);
    assert.equal(JSON.parse(v.stdout).calibrated, false);
    const d = cli(['validate', MODEL, '--format', 'nvfp4', '--mode', 'entropy-aware', '--queries', QUERY_FILE, '--cache', cache, '--threshold', '0', '--json']);
    assert.equal(d.status, 0, describeRun(d));
    const dp = JSON.parse(fs.readFileSync(path.join(JSON.parse(d.stdout).profile_path, 'profile.json'), 'utf8'));
    assert.notEqual(JSON.parse(d.stdout).profile_path, out.profile_path);
    assert.equal(dp.config.calibration_queries_hash, null);
    assert.equal(dp.statistics.query_count, (await loadQueries()).queries.length);

    const dir = tmpDir('pipeline');
    fs.writeFileSync(
      path.join(dir, 'pipeline.json'),
      JSON.stringify({ models: [{ id: 'plain', path: MODEL, mode: 'static' }, { id: 'aware', path: MODEL, mode: 'activation-aware' }] }),
    );
    const p = cli(['calibrate', '--pipeline', path.join(dir, 'pipeline.json'), '--format', 'fp4', '--queries', QUERY_FILE, '--cache', cache, '--json']);
    assert.equal(p.status, 0, describeRun(p));
    const ps = JSON.parse(p.stdout).profiles;
    assert.deepEqual(ps.map((x: { mode: string }) => x.mode), ['static', 'activation-aware']);
    assert.notEqual(path.basename(ps[0].profile_path), path.basename(ps[1].profile_path));
    const aware = JSON.parse(fs.readFileSync(path.join(ps[1].profile_path, 'profile.json'), 'utf8'));
    assert.equal(aware.statistics.hash, stats.statistics_hash);
    // The pipeline's own id names its statistics folder.
    assert.ok(fs.existsSync(path.join(cache, 'stats', 'aware')));
    assert.equal(fs.existsSync(path.join(cache, 'stats', 'plain')), false);
  });
});
