// What an ML engineer feeds `embed`, `validate` and `attribute`, checked against the PyTorch /
// transformers reference of bert-tiny-a: how close the embeddings are, where sentence-transformers
// truncates, which module layouts are refused, what a broken profile says, and whether
// attribution finds a tensor whose scales were deliberately ruined.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { QuantizationCalibrator } from '../src/calibration/calibrator.js';
import { native } from '../src/native/index.js';
import { attributeDrift } from '../src/semantic/attribution.js';
import { embed } from '../src/semantic/embed.js';
import { readPooling } from '../src/semantic/pooling.js';
import { loadQueries } from '../src/semantic/queries.js';
import { EncoderSession } from '../src/semantic/session.js';
import { loadTokenizer } from '../src/semantic/tokenizer.js';
import { validateSemanticAlignment } from '../src/semantic/validate.js';
import { describeRun, runCli, scratchSpace } from './helpers/cli_runner.js';
import { TINY, TINY_MODEL as MODEL, TINY_ST as ST, loadBertReference } from './helpers/reference.js';

const REF = loadBertReference();
const QUERIES = REF.queries.map((q) => q.query);
const LONG = REF.queries.findIndex((q) => q.input_ids.length === 128);

const scratch = scratchSpace('calibscope-walkthrough-');

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** A copy of a reference folder with some JSON files replaced (an object value) or removed (null). */
function variant(from: string, label: string, files: Record<string, unknown> = {}): string {
  const dir = scratch.tmpDir(label);
  fs.cpSync(from, dir, { recursive: true });
  for (const [name, content] of Object.entries(files)) {
    const f = path.join(dir, name);
    if (content === null) fs.rmSync(f, { force: true });
    else fs.writeFileSync(f, JSON.stringify(content));
  }
  return dir;
}

const readJson = (f: string): any => JSON.parse(fs.readFileSync(f, 'utf8'));

describe('embeddings against the reference, at the precision they reach', () => {
  // The reference stores 7 decimals; both GEMM kernels land within 1.1e-7 of it. A tolerance of
  // 1e-4 would let a wrong LayerNorm eps or a float16 rounding step through, so hold 1e-6.
  test('every query from both folders, on the AVX2 and the portable kernels: within 1e-6, same ids', async (t) => {
    const Enc = native().Encoder;
    for (const dir of [MODEL, ST]) {
      const s = await EncoderSession.open(dir);
      try {
        const q = s.encode(QUERIES);
        q.inputIds.forEach((ids, i) => assert.deepEqual(ids, REF.queries[i].input_ids, `ids of query ${i}`));
        for (const simd of [true, false]) {
          Enc.allowSimd(simd);
          try {
            const { embeddings } = await s.forward(q);
            let worst = 0;
            embeddings.forEach((e, i) => (worst = Math.max(worst, maxAbsDiff(e, REF.queries[i].mean_pooled_normalized))));
            t.diagnostic(`${path.basename(dir)} ${Enc.isa()}: ${worst.toExponential(2)}`);
            assert.ok(worst < 1e-6, `${path.basename(dir)} ${Enc.isa()}: max |diff| ${worst}`);
          } finally {
            Enc.allowSimd(true);
          }
        }
      } finally {
        s.close();
      }
    }
  });
});

describe('the truncation length, as sentence-transformers and transformers use it', () => {
  const config = readJson(path.join(ST, 'config.json'));
  const tokenizerJson = readJson(path.join(ST, 'tokenizer.json'));
  const tokenizerConfig = readJson(path.join(ST, 'tokenizer_config.json'));
  // tokenizer.json saved with truncation on, as all-MiniLM-L6-v2's is (128 there, 256 used).
  const truncating = { ...tokenizerJson, truncation: { direction: 'Right', max_length: 16, strategy: 'LongestFirst', stride: 0 } };

  test("max_seq_length wins over tokenizer.json's truncation and model_max_length (the all-MiniLM-L6-v2 layout)", async () => {
    const dir = variant(ST, 'minilm-layout', {
      'tokenizer.json': truncating,
      'tokenizer_config.json': { ...tokenizerConfig, model_max_length: 512 },
      'sentence_bert_config.json': { max_seq_length: 64, do_lower_case: false },
    });
    const [r] = await embed(dir, [QUERIES[LONG]]);
    assert.equal(r.truncated, true);
    assert.equal(r.input_ids.length, 64);
    assert.deepEqual(r.input_ids, [...REF.queries[LONG].input_ids.slice(0, 63), REF.queries[LONG].input_ids.at(-1)]);
    // A query of 17..64 tokens is not cut at tokenizer.json's 16.
    const mid = REF.queries.findIndex((q) => q.input_ids.length > 16 && q.input_ids.length <= 64);
    const [m] = await embed(dir, [QUERIES[mid]]);
    assert.equal(m.truncated, false);
    assert.deepEqual(m.input_ids, REF.queries[mid].input_ids);
    assert.ok(maxAbsDiff(m.embedding, REF.queries[mid].mean_pooled_normalized) < 1e-6);
  });

  test('max_seq_length above model_max_length is still used; both are capped at max_position_embeddings', async () => {
    const above = variant(ST, 'seq-above-tokenizer', {
      'tokenizer_config.json': { ...tokenizerConfig, model_max_length: 32 },
      'sentence_bert_config.json': { max_seq_length: 100 },
    });
    assert.equal((await loadTokenizer(above)).maxLength, 100);
    const beyond = variant(ST, 'seq-beyond-positions', {
      'config.json': { ...config, max_position_embeddings: 128 },
      'sentence_bert_config.json': { max_seq_length: 512 },
    });
    assert.equal((await loadTokenizer(beyond)).maxLength, 128);
    // Without max_seq_length: model_max_length, capped at the positions.
    const own = variant(MODEL, 'model-max-length', { 'tokenizer_config.json': { ...readJson(path.join(MODEL, 'tokenizer_config.json')), model_max_length: 40 } });
    assert.equal((await loadTokenizer(own)).maxLength, 40);
  });

  test("a bare transformers folder ignores tokenizer.json's saved truncation length", async () => {
    // model/ has no model_max_length (transformers' "unset" value): the positions are the limit.
    const dir = variant(MODEL, 'bare-truncating', { 'tokenizer.json': truncating });
    const out = await embed(dir, QUERIES);
    out.forEach((r, i) => assert.deepEqual(r.input_ids, REF.queries[i].input_ids, `ids of query ${i}`));
    assert.deepEqual(out.flatMap((r, i) => (r.truncated ? [i] : [])), [LONG]);
  });

  test('embed --json reports the length it used and the queries it cut', () => {
    const dir = variant(ST, 'cli-minilm', {
      'tokenizer.json': truncating,
      'sentence_bert_config.json': { max_seq_length: 64 },
    });
    const r = runCli(['embed', dir, '--queries', path.join(TINY, 'queries.txt'), '--json']);
    assert.equal(r.status, 0, describeRun(r));
    const j = JSON.parse(r.stdout);
    assert.equal(j.max_length, 64);
    assert.deepEqual(j.truncated, [LONG]);
  });
});

describe('sentence-transformers module layouts', () => {
  const modules = readJson(path.join(ST, 'modules.json')) as { type: string }[];
  const kind = (m: { type: string }) => m.type.split('.').pop();

  test('modules.json without a Pooling module is refused, naming the file (not mean-pooled silently)', async () => {
    const dir = variant(ST, 'no-pooling', { 'modules.json': modules.filter((m) => kind(m) !== 'Pooling') });
    await assert.rejects(embed(dir, ['x']), (e: any) => e.code === 'E_BAD_CHECKPOINT' && e.message.includes(path.join(dir, 'modules.json')) && /no Pooling module/.test(e.message));
    const only = variant(ST, 'transformer-only', { 'modules.json': modules.filter((m) => kind(m) === 'Transformer') });
    await assert.rejects(readPooling(only), (e: any) => e.code === 'E_BAD_CHECKPOINT' && /no Pooling module/.test(e.message));
  });

  test('Normalize listed before Pooling is refused', async () => {
    const reordered = [modules.find((m) => kind(m) === 'Transformer'), modules.find((m) => kind(m) === 'Normalize'), modules.find((m) => kind(m) === 'Pooling')];
    const dir = variant(ST, 'normalize-first', { 'modules.json': reordered });
    await assert.rejects(readPooling(dir), (e: any) => e.code === 'E_BAD_CHECKPOINT' && /Normalize module \(entry 1\) comes before the Pooling module/.test(e.message));
  });

  test('mean_sqrt_len_tokens without Normalize is the mean times sqrt(length)', async () => {
    const noNorm = modules.filter((m) => kind(m) !== 'Normalize');
    const mean = variant(ST, 'mean-raw', { 'modules.json': noNorm });
    const sqrt = variant(ST, 'sqrt-raw', { 'modules.json': noNorm, '1_Pooling/config.json': { pooling_mode: 'mean_sqrt_len_tokens' } });
    const [a, b] = await Promise.all([embed(mean, QUERIES.slice(0, 4)), embed(sqrt, QUERIES.slice(0, 4))]);
    a.forEach((r, i) => {
      const n = Math.sqrt(r.input_ids.length);
      assert.ok(maxAbsDiff(Array.from(r.embedding, (v) => v * n), b[i].embedding) < 1e-5, `query ${i}`);
    });
  });
});

describe('query files', () => {
  test('a BOM, CRLF and blank lines change nothing; duplicates and a single query are kept; Latin-1 is refused', async () => {
    const dir = scratch.tmpDir('queries');
    const f = (name: string, bytes: Buffer | string) => {
      fs.writeFileSync(path.join(dir, name), bytes);
      return path.join(dir, name);
    };
    const crlf = await loadQueries(f('crlf.txt', `\ufeff${QUERIES[0]}\r\n\r\n  \r\n${QUERIES[1]}\r\n${QUERIES[1]}\r\n`));
    assert.deepEqual(crlf.queries, [QUERIES[0], QUERIES[1], QUERIES[1]]);
    const out = await embed(MODEL, crlf.queries);
    assert.deepEqual(out[0].input_ids, REF.queries[0].input_ids);
    assert.deepEqual(Array.from(out[1].embedding), Array.from(out[2].embedding));
    assert.deepEqual((await loadQueries(f('one.txt', 'only one query'))).queries, ['only one query']);
    await assert.rejects(loadQueries(f('latin1.txt', Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x0a]))), (e: any) => e.code === 'E_BAD_ARGUMENT' && /not valid UTF-8/.test(e.message));
  });
});

// A copy of a profile with one tensor's scales multiplied by `factor`, its checksum updated.
function ruinScales(profileDir: string, label: string, tensor: string, factor: number): string {
  const dir = scratch.tmpDir(label);
  fs.cpSync(profileDir, dir, { recursive: true });
  const file = path.join(dir, 'scales.safetensors');
  const b = fs.readFileSync(file);
  const n = Number(b.readBigUInt64LE(0));
  const header = JSON.parse(b.subarray(8, 8 + n).toString('utf8'));
  const [from, to] = header[tensor].data_offsets as [number, number];
  for (let o = 8 + n + from; o < 8 + n + to; o += 4) b.writeFloatLE(b.readFloatLE(o) * factor, o);
  fs.writeFileSync(file, b);
  const profile = readJson(path.join(dir, 'profile.json'));
  profile.scales_sha256 = crypto.createHash('sha256').update(b).digest('hex');
  fs.writeFileSync(path.join(dir, 'profile.json'), JSON.stringify(profile));
  return dir;
}

describe('a profile with one tensor deliberately ruined', () => {
  const RUINED = 'encoder.layer.0.intermediate.dense.weight';
  let profile: string;
  const calibrated = async () => {
    profile ??= scratch.tmpDir('fp4');
    if (!fs.existsSync(path.join(profile, 'profile.json'))) {
      await new QuantizationCalibrator({ format: 'fp4' }).calibrateModel(MODEL, { outDir: profile, diagnostics: false });
    }
    return profile;
  };

  test('coarse scales on one tensor: validation fails and attribution ranks that tensor first', async () => {
    const ruined = ruinScales(await calibrated(), 'ruined', RUINED, 0.08);
    const v = await validateSemanticAlignment(MODEL, ruined, QUERIES, { throwOnDrift: false });
    assert.equal(v.passed, false);
    const a = await attributeDrift(MODEL, ruined, QUERIES, { cacheDir: scratch.tmpDir('attr-cache') });
    assert.equal(a.ranking[0].tensor, RUINED);
    assert.ok(a.ranking[0].mean_correlation < a.ranking[1].mean_correlation - 0.005);
    assert.deepEqual(a.suggestion.keep.map((k) => k.tensor).slice(0, 1), [RUINED]);
    assert.equal(a.suggestion.passes, true);
  });

  test('a zero or negative scale is E_BAD_PROFILE naming the profile file that holds it', async () => {
    for (const [label, factor] of [['zero', 0], ['negative', -1]] as const) {
      const bad = ruinScales(await calibrated(), label, RUINED, factor);
      const r = runCli(['validate', MODEL, '--profile', bad, '--queries', path.join(TINY, 'queries.txt'), '--json']);
      assert.equal(r.status, 1, describeRun(r));
      const err = JSON.parse(r.stdout).error;
      assert.equal(err.code, 'E_BAD_PROFILE');
      assert.ok(err.message.startsWith(`${path.join(bad, 'scales.safetensors')}: tensor ${RUINED}:`), err.message);
      assert.match(err.message, /positive and finite/);
    }
  });
});
