// Semantic validation, drift attribution and their CLI on bert-tiny-a: FP16 vs quantized
// embeddings with real fp4 / nvfp4 profiles, the drift error, the mixed-precision suggestion, and
// bad input (unsupported architectures, broken folders, empty query files).
import assert from 'node:assert/strict';
import type { SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { QuantizationCalibrator } from '../src/calibration/calibrator.js';
import { SafetensorsFile } from '../src/checkpoints/safetensors.js';
import { writeSafetensors } from '../src/checkpoints/safetensors_writer.js';
import { readScales } from '../src/profiles/store.js';
import { fakeQuantize } from '../src/quantize/index.js';
import { attributeDrift } from '../src/semantic/attribution.js';
import { embed } from '../src/semantic/embed.js';
import { loadSemanticModel } from '../src/semantic/model.js';
import { loadQueries } from '../src/semantic/queries.js';
import { pearson } from '../src/semantic/stats.js';
import { validateSemanticAlignment } from '../src/semantic/validate.js';
import { FIXTURES } from './helpers/reference.js';
import { runCli } from './helpers/cli_runner.js';

const ROOT = path.resolve(__dirname, '..', '..');
const TINY = path.join(FIXTURES, 'bert-tiny-a');
const MODEL = path.join(TINY, 'model');
const QUERY_FILE = path.join(TINY, 'queries.txt');
const QUERIES = fs
  .readFileSync(QUERY_FILE, 'utf8')
  .split('\n')
  .filter((l) => l.trim() !== '');

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'calibscope-validation-'));
after(() => fs.rmSync(scratch, { recursive: true, force: true }));
let n = 0;
const tmp = (label: string) => path.join(scratch, `${label}-${n++}`);

async function calibrated(format: string, extra: Record<string, unknown> = {}): Promise<string> {
  const out = tmp(`profile-${format}`);
  await new QuantizationCalibrator({ format, ...extra }).calibrateModel(MODEL, { outDir: out, diagnostics: false });
  return out;
}

const cli = (args: string[]) => runCli(args, { env: { XDG_CACHE_HOME: path.join(scratch, 'cache'), CALIBSCOPE_CACHE: '' } });

function json(r: SpawnSyncReturns<string>): any {
  assert.match(r.stdout, /^[^\n]+\n$/, `one JSON line expected\nstatus ${r.status}\nstdout ${r.stdout.slice(0, 500)}\nstderr ${r.stderr.slice(0, 1000)}`);
  return JSON.parse(r.stdout);
}

function readProfileJson(dir: string): any {
  return JSON.parse(fs.readFileSync(path.join(dir, 'profile.json'), 'utf8'));
}

let fp4: string;
let nvfp4: string;
before(async () => {
  [fp4, nvfp4] = await Promise.all([calibrated('fp4'), calibrated('nvfp4')]);
});

describe('validateSemanticAlignment on bert-tiny-a', () => {
  test('fp4 and nvfp4 profiles: correlations, retrieval, and the result recorded in the profile', async (t) => {
    for (const dir of [fp4, nvfp4]) {
      const r = await validateSemanticAlignment(MODEL, dir, QUERIES);
      t.diagnostic(
        `${r.format}: mean Pearson ${r.mean_correlation.toFixed(6)}, min ${r.min_correlation.toFixed(6)}, ` +
          `cosine ${r.mean_cosine.toFixed(6)}, top-10 retrieval agreement ${r.retrieval_agreement?.toFixed(4)}`,
      );
      assert.equal(r.model_id, 'model');
      assert.equal(r.per_query.length, 48);
      assert.equal(r.query_count, 48);
      assert.ok(r.passed);
      assert.ok(r.mean_correlation >= 0.99 && r.mean_correlation < 1);
      assert.ok(r.min_correlation <= r.mean_correlation);
      const mean = r.per_query.reduce((a, q) => a + q.correlation, 0) / 48;
      assert.ok(Math.abs(mean - r.mean_correlation) < 1e-12);
      assert.equal(Math.min(...r.per_query.map((q) => q.correlation)), r.min_correlation);
      assert.ok(r.retrieval_agreement !== null && r.retrieval_agreement > 0.5 && r.retrieval_agreement <= 1);
      // The query longer than the model's 128 tokens is reported.
      assert.deepEqual(r.truncated_queries.map((q) => q.index), [QUERIES.findIndex((q) => q.startsWith('A very long query'))]);
      assert.ok(r.per_query[r.truncated_queries[0].index].truncated);
      // 15 encoder weights quantized; the pooler is calibrated but not read by the embeddings.
      assert.equal(r.quantized_tensors, 15);
      assert.deepEqual(r.unused_tensors, ['pooler.dense.weight']);
      assert.ok(r.stored);
      const p = readProfileJson(dir);
      assert.equal(p.semantic_correlation, r.mean_correlation);
      assert.equal(p.semantic_validation.passed, true);
      assert.equal(p.semantic_validation.query_count, 48);
      assert.equal(p.semantic_validation.threshold, 0.99);
      assert.match(p.semantic_validation.queries_hash, /^sha256:[0-9a-f]{64}$/);
    }
  });

  test('the correlation is the one of FP16 vs fake-quantized embeddings, computed directly', async () => {
    const model = await loadSemanticModel(MODEL);
    const profile = readProfileJson(fp4);
    const weights = new Map<string, Float32Array>();
    for (const [name, result] of Object.entries<any>(profile.tensor_calibrations)) {
      if (!model.byCheckpointName.has(name)) continue;
      const w = model.weights.get(model.byCheckpointName.get(name)!)!;
      const data = new Uint8Array(w.data.buffer, w.data.byteOffset, w.data.byteLength);
      weights.set(name, await fakeQuantize({ name, dtype: 'F32', shape: w.shape, data }, result, await readScales(fp4, name)));
    }
    const [a, b] = await Promise.all([embed(MODEL, QUERIES), embed(MODEL, QUERIES, { weights })]);
    const mean = a.reduce((s, e, i) => s + pearson(e.embedding, b[i].embedding), 0) / a.length;
    const r = await validateSemanticAlignment(MODEL, fp4, QUERIES, { store: false });
    assert.ok(Math.abs(mean - r.mean_correlation) < 1e-12, `${mean} vs ${r.mean_correlation}`);
    assert.equal(r.stored, false);
  });

  test('agrees with an independent numpy forward pass: fp4 / block 64, calibrated vs naive scales', async (t) => {
    // The issue that asked for this measured 0.9907 (calibrated) and 0.9912 (naive) with numpy.
    const exact = await calibrated('fp4', { block_sizes: [64] });
    const naive = await calibrated('fp4', { block_sizes: [64], search: 'naive' });
    const re = await validateSemanticAlignment(MODEL, exact, QUERIES, { store: false });
    const rn = await validateSemanticAlignment(MODEL, naive, QUERIES, { store: false });
    t.diagnostic(`fp4/64 calibrated ${re.mean_correlation.toFixed(5)}, naive ${rn.mean_correlation.toFixed(5)}`);
    assert.ok(Math.abs(re.mean_correlation - 0.9907) < 1e-4);
    assert.ok(Math.abs(rn.mean_correlation - 0.9912) < 1e-4);
  });

  test('below the threshold: E_SEMANTIC_DRIFT with model id, correlation and threshold; the failure is recorded', async () => {
    const dir = await calibrated('nvfp4');
    await assert.rejects(validateSemanticAlignment(MODEL, dir, QUERIES, { threshold: 0.99999 }), (e: any) => {
      assert.equal(e.code, 'E_SEMANTIC_DRIFT');
      assert.equal(e.details.model_id, 'model');
      assert.equal(e.details.threshold, 0.99999);
      assert.ok(e.details.mean_correlation < 0.99999);
      assert.match(e.message, /below the threshold 0\.99999/);
      return true;
    });
    const p = readProfileJson(dir);
    assert.equal(p.semantic_validation.passed, false);
    assert.equal(p.semantic_validation.threshold, 0.99999);
    // Without throwing, the same numbers come back as a failed result.
    const r = await validateSemanticAlignment(MODEL, dir, QUERIES, { threshold: 0.99999, throwOnDrift: false });
    assert.equal(r.passed, false);
    assert.equal(p.semantic_correlation, r.mean_correlation);
  });

  test('a profile of another checkpoint is refused', async () => {
    const other = tmp('other-model');
    fs.cpSync(MODEL, other, { recursive: true });
    const f = await SafetensorsFile.open(path.join(other, 'model.safetensors'));
    const tensors = [];
    for (const ti of f.tensors) {
      const data = new Uint8Array(await f.readTensor(ti));
      if (ti.name === 'embeddings.LayerNorm.bias') data[0] ^= 1;
      tensors.push({ name: ti.name, dtype: ti.dtype, shape: ti.shape, data });
    }
    await f.close();
    await writeSafetensors(path.join(other, 'model.safetensors'), tensors);
    await assert.rejects(validateSemanticAlignment(other, fp4, QUERIES), (e: any) => e.code === 'E_BAD_PROFILE' && /recalibrate/.test(e.message));
  });
});

describe('drift attribution', () => {
  test('ranking: one entry per profile tensor, worst first, matching single-tensor forward passes', async () => {
    const r = await attributeDrift(MODEL, fp4, QUERIES, { threshold: 0.99 });
    assert.equal(r.ranking.length, 16);
    const used = r.ranking.filter((e) => e.used);
    assert.equal(used.length, 15);
    for (let i = 1; i < used.length; i++) assert.ok(used[i - 1].mean_correlation <= used[i].mean_correlation);
    const pooler = r.ranking.find((e) => e.tensor === 'pooler.dense.weight')!;
    assert.equal(pooler.used, false);
    // Each entry is FP16 everywhere but that tensor: check two of them with a plain full forward pass
    // (attribution starts later layers from cached FP16 states; the numbers must not change).
    const model = await loadSemanticModel(MODEL);
    const profile = readProfileJson(fp4);
    const base = await embed(MODEL, QUERIES);
    for (const e of [used[0], used.find((x) => x.layer === 1)!]) {
      const w = model.weights.get(model.byCheckpointName.get(e.tensor)!)!;
      const data = new Uint8Array(w.data.buffer, w.data.byteOffset, w.data.byteLength);
      const q = await fakeQuantize({ name: e.tensor, dtype: 'F32', shape: w.shape, data }, profile.tensor_calibrations[e.tensor], await readScales(fp4, e.tensor));
      const only = await embed(MODEL, QUERIES, { weights: { [e.tensor]: q } });
      const mean = base.reduce((s, x, i) => s + pearson(x.embedding, only[i].embedding), 0) / base.length;
      assert.ok(Math.abs(mean - e.mean_correlation) < 1e-12, `${e.tensor}: ${mean} vs ${e.mean_correlation}`);
    }
    // This profile passes 0.99 as it is: nothing to keep.
    assert.equal(r.baseline.passed, true);
    assert.equal(r.suggestion.already_passes, true);
    assert.deepEqual(r.suggestion.keep, []);
    assert.equal(r.suggestion.bits_per_weight, r.suggestion.baseline_bits_per_weight);
  });

  test('a suggestion that passes a stricter threshold, verified, with its bits per weight', async (t) => {
    const r = await attributeDrift(MODEL, fp4, QUERIES, { threshold: 0.995 });
    const s = r.suggestion;
    t.diagnostic(
      `baseline ${r.baseline.mean_correlation.toFixed(6)}; keep ${s.keep.map((k) => `${k.tensor} (${k.precision})`).join(', ')} → ` +
        `${s.mean_correlation.toFixed(6)} at ${s.bits_per_weight.toFixed(3)} bits/weight (${s.evaluations} evaluations)`,
    );
    assert.equal(r.baseline.passed, false);
    assert.equal(s.passes, true);
    assert.ok(s.mean_correlation >= 0.995);
    assert.ok(s.keep.length >= 1 && s.keep.length < 15);
    // Taken from the worst of the ranking, in its order.
    const order = r.ranking.map((e) => e.tensor);
    assert.deepEqual(s.keep.map((k) => k.tensor), order.slice(0, s.keep.length));
    for (const k of s.keep) {
      assert.equal(k.precision, 'fp8_e4m3');
      assert.ok(k.bits_per_weight > 8 && k.bits_per_weight <= 9);
    }
    assert.ok(s.bits_per_weight > s.baseline_bits_per_weight);
    assert.ok(s.bits_per_weight_quantized > 4.5 && s.bits_per_weight_quantized < 9);
  });

  test('FP16 is used when FP8 is no higher than the format, and when FP8 is not enough', async () => {
    const fp8 = await calibrated('fp8_e4m3');
    const r = await attributeDrift(MODEL, fp8, QUERIES, { threshold: 0.999999 });
    assert.equal(r.suggestion.passes, true);
    assert.ok(r.suggestion.keep.every((k) => k.precision === 'fp16' && k.bits_per_weight === 16));
  });
});

describe('CLI', () => {
  test('embed --json', () => {
    const r = cli(['embed', MODEL, '--queries', QUERY_FILE, '--json']);
    assert.equal(r.status, 0, r.stderr);
    const out = json(r);
    assert.equal(out.embeddings.length, 48);
    assert.deepEqual(Object.keys(out.embeddings[0]).sort(), ['embedding', 'input_ids', 'query', 'truncated']);
    assert.equal(out.embeddings[0].embedding.length, 128);
    assert.equal(out.truncated.length, 1);
    assert.equal(out.embeddings[out.truncated[0]].truncated, true);
  });

  test('validate --profile --json, and the drift error with a non-zero exit', () => {
    const ok = cli(['validate', MODEL, '--profile', nvfp4, '--queries', QUERY_FILE, '--json']);
    assert.equal(ok.status, 0, ok.stderr);
    const v = json(ok);
    for (const k of ['model_id', 'format', 'mean_correlation', 'min_correlation', 'per_query', 'retrieval_agreement', 'threshold', 'passed']) {
      assert.ok(k in v, k);
    }
    assert.equal(v.format, 'nvfp4');
    assert.equal(v.passed, true);
    assert.equal(v.per_query.length, 48);

    const bad = cli(['validate', MODEL, '--profile', nvfp4, '--queries', QUERY_FILE, '--threshold', '0.99999', '--json']);
    assert.equal(bad.status, 1);
    const e = json(bad);
    assert.equal(e.error.code, 'E_SEMANTIC_DRIFT');
    assert.equal(e.error.details.threshold, 0.99999);
    assert.equal(e.error.details.model_id, 'model');
  });

  test('validate with one query: retrieval agreement is not measured (null), not a perfect 1', () => {
    const profile = tmp('one-query-profile');
    fs.cpSync(nvfp4, profile, { recursive: true });
    const one = tmp('one-query.txt');
    fs.writeFileSync(one, 'a single query about quantization\n');
    const j = cli(['validate', MODEL, '--profile', profile, '--queries', one, '--json']);
    assert.equal(j.status, 0, j.stderr);
    const v = json(j);
    assert.equal(v.query_count, 1);
    assert.equal(v.retrieval_agreement, null);
    const h = cli(['validate', MODEL, '--profile', profile, '--queries', one]);
    assert.equal(h.status, 0, h.stderr);
    assert.match(h.stdout, /retrieval agreement n\/a \(needs 2 queries\) over 1 query /);
  });

  test('validate --format uses (or makes) the cached profile; attribute --format --json', () => {
    const cache = tmp('cache');
    const v = cli(['validate', MODEL, '--format', 'fp4', '--cache', cache, '--queries', QUERY_FILE, '--json']);
    assert.equal(v.status, 0, v.stderr);
    const out = json(v);
    assert.equal(out.calibrated, true);
    assert.ok(out.profile_path.startsWith(cache));
    assert.equal(readProfileJson(out.profile_path).semantic_correlation, out.mean_correlation);

    const a = cli(['attribute', MODEL, '--format', 'fp4', '--cache', cache, '--queries', QUERY_FILE, '--threshold', '0.995', '--json']);
    assert.equal(a.status, 0, a.stderr);
    const at = json(a);
    assert.equal(at.calibrated, false);
    assert.equal(at.ranking.length, 16);
    assert.equal(at.suggestion.passes, true);
    assert.ok(at.suggestion.keep.length > 0);
  });

  test('calibrate --validate: one model (--out and the cache) and a pipeline', () => {
    const out = tmp('calibrate-validate');
    const r = cli(['calibrate', MODEL, '--format', 'nvfp4', '--out', out, '--validate', '--queries', QUERY_FILE, '--json']);
    assert.equal(r.status, 0, r.stderr);
    const j = json(r);
    assert.equal(j.validation.passed, true);
    assert.equal(j.validation.query_count, 48);
    assert.equal(j.profile.semantic_correlation, j.validation.mean_correlation);
    assert.equal(readProfileJson(out).semantic_correlation, j.validation.mean_correlation);

    const drift = cli(['calibrate', MODEL, '--format', 'nvfp4', '--cache', tmp('cache'), '--validate', '--threshold', '0.99999', '--queries', QUERY_FILE, '--json']);
    assert.equal(drift.status, 1);
    const e = json(drift).error;
    assert.equal(e.code, 'E_SEMANTIC_DRIFT');
    // The profile itself was written and carries the failed result.
    assert.equal(readProfileJson(e.details.profile_path).semantic_validation.passed, false);

    const base = tmp('pipeline');
    fs.mkdirSync(base);
    fs.writeFileSync(
      path.join(base, 'pipeline.json'),
      JSON.stringify({ models: [{ id: 'tiny-hf', path: MODEL }, { id: 'tiny-st', path: path.join(TINY, 'sentence_transformer'), format: 'fp4' }] }),
    );
    const p = cli(['calibrate', '--pipeline', path.join(base, 'pipeline.json'), '--format', 'nvfp4', '--cache', tmp('cache'), '--validate', '--queries', QUERY_FILE, '--json']);
    assert.equal(p.status, 0, p.stderr);
    const pj = json(p);
    assert.deepEqual(pj.validations.map((v: any) => [v.model_id, v.format, v.passed]), [
      ['tiny-hf', 'nvfp4', true],
      ['tiny-st', 'fp4', true],
    ]);
    for (const [i, prof] of pj.profiles.entries()) assert.equal(readProfileJson(prof.profile_path).semantic_correlation, pj.validations[i].mean_correlation);
  });

  test('bad usage and bad input: clear errors, non-zero exits', () => {
    const empty = tmp('empty.txt');
    fs.writeFileSync(empty, '\n\n  \n');
    const e1 = cli(['embed', MODEL, '--queries', empty, '--json']);
    assert.equal(e1.status, 2);
    assert.match(json(e1).error.message, /no queries/);
    const e2 = cli(['validate', MODEL, '--queries', QUERY_FILE, '--json']);
    assert.notEqual(e2.status, 0);
    assert.match(json(e2).error.message, /--profile DIR or --format F/);
    const e3 = cli(['validate', MODEL, '--profile', fp4, '--threshold', '2', '--json']);
    assert.equal(e3.status, 2);
    const e4 = cli(['embed', path.join(scratch, 'no-such-model'), '--json']);
    assert.equal(e4.status, 1);
    assert.equal(json(e4).error.code, 'E_NOT_FOUND');
  });
});

describe('bad model folders', () => {
  function variant(label: string, edit: (dir: string) => void): string {
    const dir = tmp(label);
    fs.cpSync(MODEL, dir, { recursive: true });
    edit(dir);
    return dir;
  }
  const editConfig = (dir: string, f: (c: any) => void) => {
    const c = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    f(c);
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(c));
  };
  async function rewriteWeights(dir: string, f: (t: { name: string; dtype: string; shape: number[]; data: Uint8Array }[]) => typeof t) {
    const sf = await SafetensorsFile.open(path.join(dir, 'model.safetensors'));
    const t = [];
    for (const ti of sf.tensors) t.push({ name: ti.name, dtype: ti.dtype, shape: ti.shape, data: new Uint8Array(await sf.readTensor(ti)) });
    await sf.close();
    await writeSafetensors(path.join(dir, 'model.safetensors'), f(t));
  }

  test('an architecture that is not BERT-family names what is supported', async () => {
    const dir = variant('roberta', (d) =>
      editConfig(d, (c) => {
        c.model_type = 'roberta';
        c.architectures = ['RobertaModel'];
      }),
    );
    await assert.rejects(embed(dir, ['hello']), (e: any) => {
      assert.equal(e.code, 'E_BAD_CHECKPOINT');
      assert.match(e.message, /model_type "roberta".*RobertaModel.*not supported/);
      assert.match(e.message, /BERT-family.*"bert"/);
      assert.match(e.message, /config\.json/);
      return true;
    });
    const r = cli(['embed', dir, '--json']);
    assert.equal(r.status, 1);
    assert.equal(json(r).error.code, 'E_BAD_CHECKPOINT');
    const rel = variant('relative', (d) => editConfig(d, (c) => (c.position_embedding_type = 'relative_key')));
    await assert.rejects(embed(rel, ['x']), (e: any) => e.code === 'E_BAD_CHECKPOINT' && /absolute/.test(e.message));
    const act = variant('silu', (d) => editConfig(d, (c) => (c.hidden_act = 'silu')));
    await assert.rejects(embed(act, ['x']), (e: any) => e.code === 'E_BAD_CHECKPOINT' && /hidden_act "silu"/.test(e.message));
  });

  test('missing or malformed config.json and tokenizer files', async () => {
    const noConfig = variant('no-config', (d) => fs.rmSync(path.join(d, 'config.json')));
    await assert.rejects(embed(noConfig, ['x']), (e: any) => e.code === 'E_NOT_FOUND' && /config\.json/.test(e.message));
    const badConfig = variant('bad-config', (d) => fs.writeFileSync(path.join(d, 'config.json'), '{"hidden_size": 128,'));
    await assert.rejects(embed(badConfig, ['x']), (e: any) => e.code === 'E_BAD_CHECKPOINT' && /config\.json: not valid JSON/.test(e.message));
    const noHidden = variant('no-hidden', (d) => editConfig(d, (c) => delete c.hidden_size));
    await assert.rejects(embed(noHidden, ['x']), (e: any) => e.code === 'E_BAD_CHECKPOINT' && /hidden_size must be a positive integer/.test(e.message));
    const badTok = variant('bad-tokenizer', (d) => fs.writeFileSync(path.join(d, 'tokenizer.json'), '{"model": '));
    await assert.rejects(embed(badTok, ['x']), (e: any) => typeof e.code === 'string' && e.code.startsWith('E_') && /tokenizer\.json/.test(e.message));
    const noTok = variant('no-tokenizer', (d) => {
      fs.rmSync(path.join(d, 'tokenizer.json'));
      fs.rmSync(path.join(d, 'vocab.txt'));
    });
    await assert.rejects(embed(noTok, ['x']), (e: any) => e.code === 'E_NOT_FOUND' && /tokenizer\.json or vocab\.txt/.test(e.message));
    const r = cli(['embed', noTok, '--json']);
    assert.equal(r.status, 1);
    assert.equal(json(r).error.code, 'E_NOT_FOUND');
  });

  test('a weight missing from the checkpoint, and shapes that do not fit the config', async () => {
    const missing = variant('missing-weight', () => undefined);
    await rewriteWeights(missing, (t) => t.filter((x) => x.name !== 'encoder.layer.1.output.dense.weight'));
    await assert.rejects(embed(missing, ['x']), (e: any) => {
      assert.equal(e.code, 'E_BAD_CHECKPOINT');
      assert.match(e.message, /'encoder\.layer\.1\.output\.dense\.weight' is missing from the checkpoint/);
      assert.equal(e.details.tensor, 'encoder.layer.1.output.dense.weight');
      return true;
    });
    const wide = variant('wide-config', (d) => editConfig(d, (c) => (c.intermediate_size = 256)));
    await assert.rejects(embed(wide, ['x']), (e: any) => {
      assert.equal(e.code, 'E_BAD_CHECKPOINT');
      assert.match(e.message, /'encoder\.layer\.0\.intermediate\.dense\.weight' has shape \[512, 128\].*needs \[256, 128\]/);
      return true;
    });
    const fewer = variant('fewer-layers', (d) => editConfig(d, (c) => (c.num_hidden_layers = 3)));
    await assert.rejects(embed(fewer, ['x']), (e: any) => e.code === 'E_BAD_CHECKPOINT' && /encoder\.layer\.2\./.test(e.message));
    const r = cli(['validate', missing, '--profile', fp4, '--queries', QUERY_FILE, '--json']);
    assert.equal(r.status, 1);
    assert.ok(['E_BAD_CHECKPOINT', 'E_BAD_PROFILE'].includes(json(r).error.code));
  });

  test('the query set: the default file, and an empty one', async () => {
    const d = await loadQueries();
    assert.ok(d.queries.length >= 200);
    const empty = tmp('empty-queries.txt');
    fs.writeFileSync(empty, '');
    await assert.rejects(loadQueries(empty), (e: any) => e.code === 'E_BAD_ARGUMENT' && /no queries/.test(e.message));
    await assert.rejects(embed(MODEL, []), (e: any) => e.code === 'E_BAD_ARGUMENT');
  });
});

describe('audit: another model\'s profile and --threshold before calibrating', () => {
  test('validate --profile with a profile made for another checkpoint is E_BAD_PROFILE naming both models', () => {
    const other = tmp('other-model');
    fs.cpSync(MODEL, other, { recursive: true });
    // One byte of the weights' data changed: another checkpoint with the same architecture.
    const f = path.join(other, 'model.safetensors');
    const buf = fs.readFileSync(f);
    const header = Number(buf.readBigUInt64LE(0));
    buf[8 + header + 100] ^= 0x40;
    fs.writeFileSync(f, buf);
    for (const cmd of ['validate', 'attribute']) {
      const r = cli([cmd, other, '--profile', fp4, '--queries', QUERY_FILE, '--json']);
      assert.equal(r.status, 1);
      const e = json(r).error;
      assert.equal(e.code, 'E_BAD_PROFILE');
      // The profile records the checkpoint it was made from, and the message names it.
      assert.match(e.message, new RegExp(`is for model '.+' \\(${path.join(path.dirname(MODEL), '.*model\\.safetensors')}\\), not for .*other-model`));
      assert.equal(e.details.model_id, path.basename(other));
    }
  });

  test('calibrate --validate with --threshold out of range is refused before anything is calibrated', () => {
    const cache = tmp('threshold-cache');
    const r = cli(['calibrate', MODEL, '--format', 'fp8_e4m3', '--cache', cache, '--validate', '--threshold', '1.5', '--json']);
    assert.equal(r.status, 2);
    const e = json(r).error;
    assert.equal(e.code, 'E_BAD_ARGUMENT');
    assert.equal(e.details.option, 'threshold');
    assert.equal(fs.existsSync(path.join(cache, 'calibration')), false);
  });
});
