// The encoder and pooling against PyTorch/transformers' own numbers (reference.json of
// bert-tiny-a: mean-pooled + normalised embeddings, CLS states, and intermediate states of one
// query), the statistics on hand-made vectors, and determinism.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { native } from '../src/native/index.js';
import { embed } from '../src/semantic/embed.js';
import { parsePoolingConfig, readPooling } from '../src/semantic/pooling.js';
import { EncoderSession } from '../src/semantic/session.js';
import { compareEmbeddings, cosine, pearson, retrievalAgreement, topNeighbours } from '../src/semantic/stats.js';
import { TINY_MODEL as MODEL, TINY_ST as ST, loadBertReference } from './helpers/reference.js';

const REF = loadBertReference();
const QUERIES = REF.queries.map((q) => q.query);

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'calibscope-semantic-'));
after(() => fs.rmSync(scratch, { recursive: true, force: true }));

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function l2normalize(v: ArrayLike<number>): number[] {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i] * v[i];
  const n = Math.sqrt(s);
  return Array.from(v, (x) => x / n);
}

/** A copy of the sentence-transformers folder with its own pooling settings (and Normalize or not). */
function stVariant(label: string, pooling: Record<string, unknown>, normalize: boolean): string {
  const dir = path.join(scratch, label);
  fs.cpSync(ST, dir, { recursive: true });
  fs.writeFileSync(path.join(dir, '1_Pooling', 'config.json'), JSON.stringify(pooling));
  if (!normalize) {
    const modules = JSON.parse(fs.readFileSync(path.join(dir, 'modules.json'), 'utf8')) as { type: string }[];
    fs.writeFileSync(path.join(dir, 'modules.json'), JSON.stringify(modules.filter((m) => !m.type.endsWith('Normalize'))));
  }
  return dir;
}

describe('embeddings against the PyTorch reference', () => {
  for (const [label, dir] of [
    ['Hugging Face folder (model/)', MODEL],
    ['sentence-transformers folder', ST],
  ] as const) {
    test(`${label}: all 48 queries within 1e-4 of mean_pooled_normalized, same token ids`, async (t) => {
      const out = await embed(dir, QUERIES);
      assert.equal(out.length, 48);
      let worst = 0;
      out.forEach((r, i) => {
        assert.equal(r.query, QUERIES[i]);
        assert.deepEqual(r.input_ids, REF.queries[i].input_ids, `token ids of query ${i}`);
        const d = maxAbsDiff(r.embedding, REF.queries[i].mean_pooled_normalized);
        assert.ok(d < 1e-4, `query ${i} (${QUERIES[i].slice(0, 40)}): max |diff| ${d}`);
        worst = Math.max(worst, d);
      });
      t.diagnostic(`largest difference from the reference: ${worst.toExponential(2)}`);
      // The one query longer than 128 tokens is cut there, and says so.
      const cut = out.filter((r) => r.truncated);
      assert.equal(cut.length, 1);
      assert.equal(cut[0].input_ids.length, 128);
      assert.ok(REF.queries.find((q) => q.query === cut[0].query)!.input_ids.length === 128);
    });
  }

  test('intermediate states of the debug query: embedding layer and layer 0, token 0', async () => {
    const s = await EncoderSession.open(MODEL);
    try {
      const q = s.encode([REF.debug.query]);
      const h = s.model.config.hiddenSize;
      const emb = await s.hiddenStates(q, 0);
      assert.ok(maxAbsDiff(emb.subarray(0, h), REF.debug.embeddings_output_token0) < 1e-4);
      const l0 = await s.hiddenStates(q, 1);
      assert.ok(maxAbsDiff(l0.subarray(0, h), REF.debug.layer0_output_token0) < 1e-4);
    } finally {
      s.close();
    }
  });

  test('cls pooling (old keys and "pooling_mode": "cls") matches the reference CLS states', async () => {
    const expected = REF.queries.map((q) => l2normalize(q.cls));
    for (const [label, cfg] of [
      ['cls-old', { word_embedding_dimension: 128, pooling_mode_cls_token: true, pooling_mode_mean_tokens: false, pooling_mode_max_tokens: false }],
      ['cls-new', { embedding_dimension: 128, pooling_mode: 'cls' }],
    ] as const) {
      const dir = stVariant(label, cfg, true);
      const out = await embed(dir, QUERIES);
      out.forEach((r, i) => assert.ok(maxAbsDiff(r.embedding, expected[i]) < 1e-4, `${label} query ${i}`));
    }
    // Without the Normalize module: the raw CLS state.
    const raw = await embed(stVariant('cls-raw', { pooling_mode: 'cls' }, false), QUERIES);
    raw.forEach((r, i) => assert.ok(maxAbsDiff(r.embedding, REF.queries[i].cls) < 1e-4, `raw cls query ${i}`));
  });

  test('max and mean pooling follow the token states; concatenated modes in sentence-transformers order', async () => {
    const s = await EncoderSession.open(MODEL);
    let hidden: Float32Array;
    let q;
    try {
      q = s.encode(QUERIES);
      hidden = await s.hiddenStates(q);
    } finally {
      s.close();
    }
    const H = 128;
    const maxOf = (i: number) => {
      const v = new Array<number>(H).fill(-Infinity);
      for (let t = 0; t < q.lengths[i]; t++) for (let j = 0; j < H; j++) v[j] = Math.max(v[j], hidden[(q.offsets[i] + t) * H + j]);
      return v;
    };
    const meanOf = (i: number) => {
      const v = new Array<number>(H).fill(0);
      for (let t = 0; t < q.lengths[i]; t++) for (let j = 0; j < H; j++) v[j] += hidden[(q.offsets[i] + t) * H + j] / q.lengths[i];
      return v;
    };
    const maxOut = await embed(stVariant('max', { pooling_mode_max_tokens: true, pooling_mode_mean_tokens: false }, false), QUERIES);
    maxOut.forEach((r, i) => assert.ok(maxAbsDiff(r.embedding, maxOf(i)) < 1e-6, `max query ${i}`));
    // Unnormalised mean, normalised afterwards, is the reference's normalised mean.
    const meanOut = await embed(stVariant('mean-raw', { pooling_mode: 'mean' }, false), QUERIES);
    meanOut.forEach((r, i) => {
      assert.ok(maxAbsDiff(r.embedding, meanOf(i)) < 1e-5, `mean query ${i}`);
      assert.ok(maxAbsDiff(l2normalize(r.embedding), REF.queries[i].mean_pooled_normalized) < 1e-4);
    });
    // cls + mean together: [cls, mean], each 128 wide.
    const both = await embed(stVariant('cls-mean', { pooling_mode_mean_tokens: true, pooling_mode_cls_token: true }, false), QUERIES.slice(0, 3));
    both.forEach((r, i) => {
      assert.equal(r.embedding.length, 256);
      assert.ok(maxAbsDiff(r.embedding.subarray(0, 128), REF.queries[i].cls) < 1e-4);
      assert.ok(maxAbsDiff(r.embedding.subarray(128), meanOf(i)) < 1e-5);
    });
  });

  test('pooling settings: a bare folder is mean + normalise; bad Pooling configs are refused', async () => {
    assert.deepEqual((await readPooling(MODEL)).modes, ['mean']);
    assert.equal((await readPooling(MODEL)).normalize, true);
    const st = await readPooling(ST);
    assert.deepEqual([st.modes, st.normalize], [['mean'], true]);
    assert.deepEqual(parsePoolingConfig({ pooling_mode_mean_tokens: true, pooling_mode_cls_token: false }, 'x'), ['mean']);
    assert.deepEqual(parsePoolingConfig({ pooling_mode: 'mean_sqrt_len_tokens' }, 'x'), ['mean_sqrt_len']);
    assert.throws(() => parsePoolingConfig({ pooling_mode: 'median' }, 'cfg.json'), (e: any) => e.code === 'E_BAD_CHECKPOINT' && /median/.test(e.message));
    assert.throws(() => parsePoolingConfig({ pooling_mode_mean_tokens: false }, 'cfg.json'), (e: any) => e.code === 'E_BAD_CHECKPOINT' && /no pooling mode/.test(e.message));
    assert.throws(() => parsePoolingConfig({ pooling_mode_mean_tokens: 'yes' }, 'cfg.json'), (e: any) => e.code === 'E_BAD_CHECKPOINT');
    // A module calibscope does not run (e.g. a Dense layer after pooling) is named, not ignored.
    const dense = stVariant('dense', { pooling_mode: 'mean' }, true);
    const modules = JSON.parse(fs.readFileSync(path.join(dense, 'modules.json'), 'utf8')) as unknown[];
    modules.push({ idx: 3, name: '3', path: '3_Dense', type: 'sentence_transformers.models.Dense' });
    fs.writeFileSync(path.join(dense, 'modules.json'), JSON.stringify(modules));
    await assert.rejects(readPooling(dense), (e: any) => e.code === 'E_BAD_CHECKPOINT' && /Dense/.test(e.message));
  });
});

describe('determinism', () => {
  test('the same embeddings bit for bit for 1 and 2 threads, alone or in a batch', async () => {
    const s = await EncoderSession.open(MODEL);
    try {
      const q = s.encode(QUERIES);
      const one = await s.forward(q, { threads: 1 });
      const two = await s.forward(q, { threads: 2 });
      one.embeddings.forEach((e, i) => assert.deepEqual(e, two.embeddings[i], `query ${i}`));
      for (const i of [0, 17, 35]) {
        const alone = await s.forward(s.encode([QUERIES[i]]), { threads: 2 });
        assert.deepEqual(alone.embeddings[0], one.embeddings[i], `query ${i} alone`);
      }
    } finally {
      s.close();
    }
  });

  test('the portable kernels agree with the AVX2 ones to float32 rounding', async (t) => {
    const Enc = native().Encoder;
    const isa = Enc.isa();
    t.diagnostic(`GEMM kernels on this CPU: ${isa}`);
    const s = await EncoderSession.open(MODEL);
    try {
      const q = s.encode(QUERIES);
      const a = await s.forward(q);
      Enc.allowSimd(false);
      let b;
      try {
        assert.equal(Enc.isa(), 'baseline');
        b = await s.forward(q);
      } finally {
        Enc.allowSimd(true);
      }
      assert.equal(Enc.isa(), isa);
      let d = 0;
      a.embeddings.forEach((e, i) => (d = Math.max(d, maxAbsDiff(e, b.embeddings[i]))));
      assert.ok(d < 1e-5, `max |avx2 − baseline| ${d}`);
    } finally {
      s.close();
    }
  });

  test('a pass started mid-model from captured states equals the full pass', async () => {
    const s = await EncoderSession.open(MODEL);
    try {
      const q = s.encode(QUERIES.slice(0, 10));
      const full = await s.forward(q, { capture: true });
      assert.equal(full.layerInputs!.length, 2);
      const fromOne = await s.forward(q, { startLayer: 1, hiddenIn: full.layerInputs![1] });
      full.embeddings.forEach((e, i) => assert.deepEqual(fromOne.embeddings[i], e));
    } finally {
      s.close();
    }
  });
});

describe('native encoder checks its inputs', () => {
  test('bad ids, masks, weights and states are refused with a code, not a crash', async () => {
    const enc = new (native().Encoder)({
      vocabSize: 10,
      hiddenSize: 8,
      numLayers: 1,
      numHeads: 2,
      intermediateSize: 16,
      maxPositions: 4,
      typeVocabSize: 2,
      layerNormEps: 1e-12,
      activation: 'gelu',
    });
    try {
      const ids = new Int32Array([1, 2, 3, 0]);
      const mask = new Uint8Array([1, 1, 1, 0]);
      await assert.rejects(enc.forward(ids, mask, { batch: 1, seqLen: 4 }), (e: any) => e.code === 'E_BAD_CHECKPOINT' && /not loaded/.test(e.message));
      for (const w of enc.weights()) enc.setWeight(w.name, new Float32Array(w.shape.reduce((a, b) => a * b, 1)).fill(0.01));
      assert.deepEqual(enc.missing(), []);
      assert.throws(() => enc.setWeight('embeddings.word_embeddings.weight', new Float32Array(3)), (e: any) => e.code === 'E_BAD_CHECKPOINT');
      assert.throws(() => enc.setWeight('nope', new Float32Array(3)), (e: any) => e.code === 'E_BAD_ARGUMENT');
      assert.throws(() => enc.setWeight('embeddings.LayerNorm.bias', new Float32Array(8).fill(NaN)), (e: any) => e.code === 'E_NONFINITE');
      const r = await enc.forward(ids, mask, { batch: 1, seqLen: 4 });
      assert.equal(r.tokens, 3);
      assert.equal(r.hidden.length, 24);
      await assert.rejects(enc.forward(new Int32Array([1, 99, 3, 0]), mask, { batch: 1, seqLen: 4 }), (e: any) => e.code === 'E_BAD_ARGUMENT' && /vocabulary/.test(e.message));
      await assert.rejects(enc.forward(new Int32Array(5), new Uint8Array(5).fill(1), { batch: 1, seqLen: 5 }), (e: any) => e.code === 'E_BAD_ARGUMENT' && /positions/.test(e.message));
      await assert.rejects(enc.forward(ids, new Uint8Array([1, 2, 0, 0]), { batch: 1, seqLen: 4 }), (e: any) => e.code === 'E_BAD_ARGUMENT');
      await assert.rejects(enc.forward(ids, mask, { batch: 2, seqLen: 4 }), (e: any) => e.code === 'E_BAD_ARGUMENT');
      await assert.rejects(enc.forward(ids, mask, { batch: 1, seqLen: 4, startLayer: 1 }), (e: any) => e.code === 'E_BAD_ARGUMENT');
      await assert.rejects(enc.forward(ids, mask, { batch: 1, seqLen: 4, startLayer: 1, hiddenIn: new Float32Array(5) }), (e: any) => e.code === 'E_BAD_ARGUMENT');
      // Weights cannot change under a running pass.
      const running = enc.forward(ids, mask, { batch: 1, seqLen: 4 });
      assert.throws(() => enc.setWeight('embeddings.LayerNorm.bias', new Float32Array(8)), (e: any) => /still running/.test(e.message));
      await running;
    } finally {
      enc.dispose();
    }
    assert.throws(() => enc.missing(), (e: any) => /disposed/.test(e.message));
    assert.throws(
      () => new (native().Encoder)({ vocabSize: 10, hiddenSize: 9, numLayers: 1, numHeads: 2, intermediateSize: 4, maxPositions: 4, typeVocabSize: 1, layerNormEps: 1e-12, activation: 'gelu' }),
      (e: any) => e.code === 'E_BAD_CHECKPOINT' && /multiple/.test(e.message),
    );
  });
});

describe('statistics on hand-made vectors', () => {
  test('Pearson correlation', () => {
    assert.equal(pearson([1, 2, 3], [2, 4, 6]), 1);
    assert.equal(pearson([1, 2, 3], [3, 2, 1]), -1);
    // x = 1..4, y = 1,3,2,4: cov 3.0/4·..., r = 0.8 exactly.
    assert.ok(Math.abs(pearson([1, 2, 3, 4], [1, 3, 2, 4]) - 0.8) < 1e-15);
    // Invariant to shift and positive scale, unlike cosine.
    assert.ok(Math.abs(pearson([1, 2, 3, 4], [101, 103, 102, 104]) - 0.8) < 1e-12);
    assert.ok(Math.abs(pearson([0.5, -1, 2], [10, -20, 40]) - 1) < 1e-15);
    assert.equal(pearson([2, 2, 2], [2, 2, 2]), 1);
    assert.equal(pearson([2, 2, 2], [1, 2, 3]), 0);
    assert.throws(() => pearson([1, 2], [1, 2, 3]), (e: any) => e.code === 'E_BAD_ARGUMENT');
  });

  test('cosine similarity', () => {
    assert.equal(cosine([1, 0], [0, 1]), 0);
    assert.ok(Math.abs(cosine([1, 1], [1, 0]) - Math.SQRT1_2) < 1e-15);
    assert.equal(cosine([3, 4], [-6, -8]), -1);
    assert.ok(Math.abs(cosine([1, 2, 3, 4], [101, 103, 102, 104]) - 0.8) > 0.1);
  });

  test('nearest neighbours and retrieval agreement', () => {
    // Points on a circle at angles 0, 10, 25, 90, 100 degrees (no ties among the neighbours).
    const at = (deg: number) => [Math.cos((deg * Math.PI) / 180), Math.sin((deg * Math.PI) / 180)];
    const ref = [0, 10, 25, 90, 100].map(at);
    assert.deepEqual(topNeighbours(ref, 2), [
      [1, 2],
      [0, 2],
      [1, 0],
      [4, 2],
      [3, 2],
    ]);
    assert.equal(retrievalAgreement(ref, ref, 2), 1);
    // Move point 2 to 95 degrees: neighbours of 0: {1,2}→{1,3}; 1: {0,2}→{0,3}; 2: {1,0}→{3,4};
    // 3: {4,2}→{2,4}; 4: {3,2}→{2,3}. Overlaps 1/2, 1/2, 0, 1, 1 → mean 0.6.
    const moved = [0, 10, 95, 90, 100].map(at);
    assert.ok(Math.abs(retrievalAgreement(ref, moved, 2)! - 0.6) < 1e-12);
    // k is capped at n − 1.
    assert.equal(retrievalAgreement(ref, moved, 10), 1);
    // One query has no neighbours: nothing is measured, which is not agreement.
    assert.equal(retrievalAgreement(ref.slice(0, 1), moved.slice(0, 1), 10), null);
  });

  test('per-query summary', () => {
    const s = compareEmbeddings(
      [
        [1, 2, 3],
        [1, 2, 3],
      ],
      [
        [2, 4, 6],
        [3, 2, 1],
      ],
    );
    assert.deepEqual(s.perQuery, [1, -1]);
    assert.equal(s.mean, 0);
    assert.equal(s.min, -1);
    assert.equal(s.argmin, 1);
  });
});

describe('cancellation', () => {
  test('an aborted signal stops a forward pass with E_CANCELLED', async () => {
    const s = await EncoderSession.open(MODEL);
    try {
      const ac = new AbortController();
      ac.abort();
      await assert.rejects(s.forward(s.encode(QUERIES), { signal: ac.signal }), (e: any) => e.code === 'E_CANCELLED');
      // The session is still usable afterwards.
      assert.equal((await s.forward(s.encode(QUERIES.slice(0, 2)))).embeddings.length, 2);
    } finally {
      s.close();
    }
  });
});
