// The demo pipeline and its native weight generator: folders that the checkpoint reader, the
// tokenizer, the pipeline manifest and the calibrator accept; Hugging Face BertModel names and
// shapes (checked against the reference checkpoint); determinism; the generator's distribution
// (Student-t with 4 degrees of freedom, log-normal row scales, outlier columns) and its FP16
// rounding against src/util/trained_like.ts; embeddings that a plain float64 BERT forward pass
// (written here) finds non-degenerate; and the CLI.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { QuantizationCalibrator } from '../src/calibration/calibrator.js';
import { openCheckpoint } from '../src/checkpoints/checkpoint.js';
import { bertTensors, countParameters, DEMO_MARKER, demoModels, writeDemoPipeline, type DemoReport } from '../src/demo/index.js';
import { buildVocabulary } from '../src/demo/vocab.js';
import { native, type NativeTrainedLikeOptions } from '../src/native/index.js';
import { loadManifest } from '../src/pipeline/manifest.js';
import { loadTokenizer } from '../src/semantic/tokenizer.js';
import { CalibscopeError } from '../src/util/errors.js';
import { fromFloat16Bits, toFloat16Bits, trainedLike } from '../src/util/trained_like.js';

const ROOT = path.resolve(__dirname, '..', '..');
const REF_MODEL = path.join(ROOT, 'test', 'fixtures', 'reference', 'bert-tiny-a', 'model');
const QUERIES = fs.readFileSync(path.join(ROOT, 'assets', 'semantic-queries.txt'), 'utf8').split('\n').filter((l) => l.length > 0);

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'calibscope-demo-'));
after(() => fs.rmSync(scratch, { recursive: true, force: true }));
let dirCount = 0;
const freshDir = (label: string) => path.join(scratch, `${label}-${dirCount++}`);

const sha256 = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

async function gen(o: Partial<NativeTrainedLikeOptions> & { rows: number; cols: number }): Promise<Uint8Array> {
  return native().generateTrainedLike({ seed: 7, dtype: 'F32', ...o });
}
const f32 = (b: Uint8Array) => new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
const u16 = (b: Uint8Array) => new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2);

function median(xs: ArrayLike<number>): number {
  const s = Float64Array.from(xs).sort();
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
}

function quantile(sorted: Float64Array, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

function moments(xs: ArrayLike<number>): { mean: number; std: number; kurtosis: number } {
  let m = 0;
  for (let i = 0; i < xs.length; i++) m += xs[i]!;
  m /= xs.length;
  let m2 = 0;
  let m4 = 0;
  for (let i = 0; i < xs.length; i++) {
    const d = (xs[i]! - m) ** 2;
    m2 += d;
    m4 += d * d;
  }
  m2 /= xs.length;
  m4 /= xs.length;
  return { mean: m, std: Math.sqrt(m2), kurtosis: m4 / (m2 * m2) };
}

/** Median |x| of each column of a rows × cols matrix. */
function columnMedians(x: Float32Array, rows: number, cols: number): Float64Array {
  const out = new Float64Array(cols);
  const col = new Float64Array(rows);
  for (let c = 0; c < cols; c++) {
    for (let r = 0; r < rows; r++) col[r] = Math.abs(x[r * cols + c]!);
    out[c] = median(col);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The native generator

describe('generateTrainedLike', () => {
  test('is deterministic whatever the thread count, the kernel, or the row slicing', async () => {
    const base = { rows: 300, cols: 1000, seed: 123456789 };
    const a = await gen({ ...base, threads: 1 });
    const b = await gen({ ...base, threads: 2 });
    const c = await gen({ ...base, threads: 5, simd: false });
    assert.deepEqual(b, a);
    assert.deepEqual(c, a);
    const parts = [await gen({ ...base, rowStart: 0, rowCount: 77 }), await gen({ ...base, rowStart: 77, rowCount: 1 }), await gen({ ...base, rowStart: 78, rowCount: 222 })];
    assert.deepEqual(Buffer.concat(parts), Buffer.from(a));
    const other = await gen({ ...base, seed: 123456790 });
    assert.notDeepEqual(other, a);
  });

  test('draws Student-t values with 4 degrees of freedom (Kolmogorov–Smirnov against the exact CDF)', async () => {
    const x = Float64Array.from(f32(await gen({ rows: 400, cols: 500, std: 1, rowSpread: 0, outlierFraction: 0 }))).sort();
    // t₄'s CDF: ½ + ⅜·a·(1 − a²/12) with a = t / √(1 + t²/4).
    const cdf = (t: number) => {
      const a = t / Math.sqrt(1 + (t * t) / 4);
      return 0.5 + 0.375 * a * (1 - (a * a) / 12);
    };
    let d = 0;
    for (let i = 0; i < x.length; i++) {
      const f = cdf(x[i]!);
      d = Math.max(d, Math.abs(f - i / x.length), Math.abs(f - (i + 1) / x.length));
    }
    // 200,000 draws: the 0.1% critical value is 1.95/√n = 0.0044.
    assert.ok(d < 0.0044, `KS distance ${d}`);
    assert.ok(moments(x).kurtosis > 6, 'heavy tails');
  });

  test('gives each row a log-normal scale exp(0.3·N)·std', async () => {
    const rows = 512;
    const cols = 2048;
    const x = f32(await gen({ rows, cols, std: 0.5, outlierFraction: 0 }));
    const logScales = new Float64Array(rows);
    const row = new Float64Array(cols);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) row[c] = Math.abs(x[r * cols + c]!);
      logScales[r] = Math.log(median(row) / 0.7407 / 0.5); // 0.7407: the median of |t₄|
    }
    const m = moments(logScales);
    assert.ok(Math.abs(m.mean) < 0.04, `mean log scale ${m.mean}`);
    assert.ok(m.std > 0.27 && m.std < 0.33, `sd of log scale ${m.std}`);
  });

  test('matches src/util/trained_like.ts statistically: bulk, tails, row spread and 1 in 64 outlier columns', async () => {
    const rows = 1024;
    const cols = 512;
    const nat = f32(await gen({ rows, cols, seed: 99, std: 0.02 }));
    const js = trainedLike(rows, cols, { seed: 99, std: 0.02 });
    const summary = (x: Float32Array) => {
      const cm = columnMedians(x, rows, cols);
      const typical = median(cm);
      const outliers = [...cm.keys()].filter((c) => cm[c]! > 4 * typical);
      const bulk: number[] = [];
      const isOut = new Set(outliers);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) if (!isOut.has(c)) bulk.push(x[r * cols + c]!);
      const abs = Float64Array.from(bulk, Math.abs).sort();
      const outlierGain = median(outliers.map((c) => cm[c]!)) / typical;
      return { outliers: outliers.length, outlierGain, med: quantile(abs, 0.5), tail: quantile(abs, 0.999) / quantile(abs, 0.5), m: moments(bulk) };
    };
    const a = summary(nat);
    const b = summary(js);
    assert.equal(a.outliers, Math.floor(cols / 64), 'exactly floor(cols/64) distinct outlier columns');
    assert.ok(b.outliers >= 6 && b.outliers <= 8, `reference recipe: ${b.outliers} outlier columns`);
    assert.ok(Math.abs(a.outlierGain / 8 - 1) < 0.1, `outlier gain ${a.outlierGain}`);
    assert.ok(Math.abs(a.med / b.med - 1) < 0.05, `bulk median |x|: ${a.med} vs ${b.med}`);
    assert.ok(Math.abs(a.tail / b.tail - 1) < 0.15, `q99.9/q50 of |x|: ${a.tail} vs ${b.tail}`);
    assert.ok(a.m.kurtosis > 6 && b.m.kurtosis > 6, `kurtosis ${a.m.kurtosis} / ${b.m.kurtosis}`);
    assert.ok(Math.abs(a.m.mean) < 5e-4, `mean ${a.m.mean}`);
  });

  test('rounds to FP16 exactly as toFloat16Bits does (normal, subnormal and overflowing values)', async () => {
    for (const o of [
      { std: 0.02 },
      { std: 1e-6 }, // mostly FP16 subnormals
      { std: 3000 }, // the tails overflow to ±inf
      { std: 1e-3, offset: 1, outlierFraction: 0, rowSpread: 0 }, // LayerNorm-like values near 1
    ]) {
      const shape = { rows: 64, cols: 1000, seed: 5, ...o };
      const wide = f32(await gen({ ...shape, dtype: 'F32' }));
      const half = u16(await gen({ ...shape, dtype: 'F16' }));
      assert.deepEqual(half, toFloat16Bits(wide), JSON.stringify(o));
    }
    const huge = u16(await gen({ rows: 64, cols: 1000, seed: 5, std: 3000, dtype: 'F16' }));
    assert.ok(huge.some((h) => (h & 0x7fff) === 0x7c00), 'some values overflow to inf');
    const tiny = u16(await gen({ rows: 64, cols: 1000, seed: 5, std: 1e-6, dtype: 'F16' }));
    assert.ok(tiny.some((h) => (h & 0x7c00) === 0 && (h & 0x3ff) !== 0), 'some values are subnormal');
  });

  test('rejects bad options with coded errors', async () => {
    const bad = async (o: Record<string, unknown>, code: string) => {
      await assert.rejects(
        (async () => native().generateTrainedLike({ rows: 4, cols: 4, seed: 1, dtype: 'F16', ...o } as NativeTrainedLikeOptions))(),
        (e: { code?: string; message?: string }) => e.code === code && typeof e.message === 'string',
        JSON.stringify(o),
      );
    };
    await bad({ dtype: 'BF16' }, 'E_UNSUPPORTED_DTYPE');
    await bad({ rows: 0 }, 'E_BAD_ARGUMENT');
    await bad({ cols: -1 }, 'E_BAD_ARGUMENT');
    await bad({ seed: 1.5 }, 'E_BAD_ARGUMENT');
    await bad({ seed: 2 ** 53 }, 'E_BAD_ARGUMENT');
    await bad({ rowStart: 3, rowCount: 2 }, 'E_BAD_ARGUMENT');
    await bad({ std: Number.NaN }, 'E_BAD_ARGUMENT');
    await bad({ outlierFraction: 2 }, 'E_BAD_ARGUMENT');
    await bad({ rows: 2 ** 20, cols: 2 ** 11 }, 'E_BAD_ARGUMENT'); // 4 GiB in one call
  });
});

// ---------------------------------------------------------------------------------------------
// The demo pipeline

describe('the tiny demo pipeline', () => {
  let outDir: string;
  let report: DemoReport;

  before(async () => {
    outDir = freshDir('tiny');
    report = await writeDemoPipeline({ size: 'tiny', outDir, seed: 11 });
  });

  test('writes 12 models and a pipeline.json that the manifest reader accepts', async () => {
    assert.equal(report.models.length, 12);
    assert.equal(report.pipelinePath, path.join(outDir, 'pipeline.json'));
    const manifest = await loadManifest(report.pipelinePath);
    assert.deepEqual(
      manifest.models.map((m) => m.id),
      report.models.map((m) => m.id),
    );
    for (const m of manifest.models) assert.equal(m.path, path.join(outDir, m.id));
    const raw = JSON.parse(fs.readFileSync(report.pipelinePath, 'utf8'));
    for (const m of raw.models) assert.ok(!path.isAbsolute(m.path), 'paths are relative to pipeline.json');
    // Nothing besides the 12 folders and the manifest: no temporary folders left behind.
    assert.deepEqual(fs.readdirSync(outDir).sort(), [...report.models.map((m) => m.id), 'pipeline.json'].sort());
    const ids = report.models.map((m) => m.id);
    assert.ok(ids.every((id) => id.endsWith('-tiny')));
    assert.ok(ids.includes('all-MiniLM-L6-v2-tiny') && ids.includes('multilingual-e5-small-tiny') && ids.includes('gte-large-tiny'));
    for (const m of report.models) {
      assert.ok(m.parameters > 400_000 && m.parameters < 8_000_000, `${m.id}: ${m.parameters} parameters`);
      assert.equal(m.parameters, countParameters(demoModels('tiny').find((s) => s.id === m.id)!.shape));
    }
  });

  test('uses exactly the tensor names of Hugging Face BertModel (as in the reference checkpoint)', async () => {
    const ref = await openCheckpoint(REF_MODEL);
    const cfg = JSON.parse(fs.readFileSync(path.join(REF_MODEL, 'config.json'), 'utf8'));
    const expected = bertTensors({
      vocabSize: cfg.vocab_size,
      hiddenSize: cfg.hidden_size,
      numLayers: cfg.num_hidden_layers,
      numHeads: cfg.num_attention_heads,
      intermediateSize: cfg.intermediate_size,
      maxPositions: cfg.max_position_embeddings,
      typeVocabSize: cfg.type_vocab_size,
    });
    assert.deepEqual(
      expected.map((t) => [t.name, t.shape]),
      ref.tensors.map((t) => [t.name, t.shape]),
    );
    await ref.close();
  });

  test('every model opens, in F16, with tensor shapes that match its config.json', async () => {
    for (const m of report.models) {
      const cfg = JSON.parse(fs.readFileSync(path.join(m.path, 'config.json'), 'utf8'));
      assert.deepEqual(cfg.architectures, ['BertModel']);
      assert.equal(cfg.model_type, 'bert');
      assert.equal(cfg.torch_dtype, 'float16');
      assert.equal(cfg.hidden_act, 'gelu');
      assert.equal(cfg.layer_norm_eps, 1e-12);
      assert.equal(cfg.type_vocab_size, 2);
      assert.equal(cfg.hidden_size % cfg.num_attention_heads, 0);
      const ckpt = await openCheckpoint(m.path);
      try {
        assert.equal(ckpt.modelId, m.id);
        const H = cfg.hidden_size;
        const I = cfg.intermediate_size;
        const shape = (n: string) => ckpt.tensor(n)?.shape;
        assert.deepEqual(shape('embeddings.word_embeddings.weight'), [cfg.vocab_size, H]);
        assert.deepEqual(shape('embeddings.position_embeddings.weight'), [cfg.max_position_embeddings, H]);
        assert.deepEqual(shape('embeddings.token_type_embeddings.weight'), [2, H]);
        assert.deepEqual(shape('pooler.dense.weight'), [H, H]);
        const layers = new Set(ckpt.tensors.map((t) => /^encoder\.layer\.(\d+)\./.exec(t.name)?.[1]).filter(Boolean));
        assert.equal(layers.size, cfg.num_hidden_layers);
        for (let l = 0; l < cfg.num_hidden_layers; l++) {
          assert.deepEqual(shape(`encoder.layer.${l}.attention.self.query.weight`), [H, H]);
          assert.deepEqual(shape(`encoder.layer.${l}.intermediate.dense.weight`), [I, H]);
          assert.deepEqual(shape(`encoder.layer.${l}.output.dense.weight`), [H, I]);
          assert.deepEqual(shape(`encoder.layer.${l}.output.LayerNorm.bias`), [H]);
        }
        assert.equal(ckpt.tensors.length, 5 + 16 * cfg.num_hidden_layers + 2);
        assert.ok(ckpt.tensors.every((t) => t.dtype === 'F16'));
        const names = ckpt.tensors.map((t) => t.name);
        assert.deepEqual(names, [...names].sort(), 'sorted by name, as save_pretrained writes them');
        const marker = JSON.parse(fs.readFileSync(path.join(m.path, DEMO_MARKER), 'utf8'));
        assert.equal(marker.generator, 'calibscope demo');
        assert.equal(marker.seed, 11);
      } finally {
        await ckpt.close();
      }
    }
  });

  test('keeps the structure of the full models: same heads, layer pattern and width ratios', () => {
    const full = demoModels('full');
    const tiny = demoModels('tiny');
    assert.equal(full.length, 12);
    assert.ok(full.reduce((a, s) => a + countParameters(s.shape), 0) > 1.5e9);
    assert.equal(full.find((s) => s.id === 'multilingual-e5-small')!.shape.vocabSize, 250037);
    assert.equal(countParameters(full.find((s) => s.id === 'all-MiniLM-L6-v2')!.shape), 22_713_216);
    for (let i = 0; i < 12; i++) {
      const f = full[i]!.shape;
      const t = tiny[i]!.shape;
      assert.equal(tiny[i]!.id, `${full[i]!.id}-tiny`);
      assert.equal(t.numHeads, f.numHeads);
      assert.equal(t.intermediateSize / t.hiddenSize, f.intermediateSize / f.hiddenSize);
      assert.equal(t.hiddenSize * 4, f.hiddenSize);
      assert.ok(t.numLayers >= 2 && t.numLayers <= f.numLayers);
      assert.equal(tiny[i]!.layout, full[i]!.layout);
    }
    // Deeper models stay deeper, and the multilingual model keeps the largest vocabulary.
    for (let i = 0; i < 12; i++) {
      for (let j = 0; j < 12; j++) {
        const f = Math.sign(full[i]!.shape.numLayers - full[j]!.shape.numLayers);
        assert.equal(Math.sign(tiny[i]!.shape.numLayers - tiny[j]!.shape.numLayers), f, `${tiny[i]!.id} vs ${tiny[j]!.id}`);
      }
    }
    const maxVocab = (xs: typeof full) => xs.reduce((a, s) => (s.shape.vocabSize > a.shape.vocabSize ? s : a)).source;
    assert.equal(maxVocab(tiny), maxVocab(full));
  });

  test('writes both layouts: Hugging Face folders and sentence-transformers folders with mean pooling', () => {
    const st = report.models.filter((m) => m.layout === 'sentence-transformers');
    const hf = report.models.filter((m) => m.layout === 'hf');
    assert.ok(st.length > 0 && hf.length > 0);
    for (const m of st) {
      const modules = JSON.parse(fs.readFileSync(path.join(m.path, 'modules.json'), 'utf8'));
      assert.deepEqual(
        modules.map((x: { path: string }) => x.path),
        ['', '1_Pooling', '2_Normalize'],
      );
      const pooling = JSON.parse(fs.readFileSync(path.join(m.path, '1_Pooling', 'config.json'), 'utf8'));
      assert.equal(pooling.pooling_mode_mean_tokens, true);
      assert.equal(pooling.pooling_mode_cls_token, false);
      assert.equal(pooling.word_embedding_dimension, JSON.parse(fs.readFileSync(path.join(m.path, 'config.json'), 'utf8')).hidden_size);
      assert.ok(fs.statSync(path.join(m.path, '2_Normalize')).isDirectory());
    }
    for (const m of hf) assert.ok(!fs.existsSync(path.join(m.path, 'modules.json')));
  });

  test('is deterministic: the same seed gives byte-identical weights, another seed different ones', async () => {
    const again = await writeDemoPipeline({ size: 'tiny', outDir: freshDir('again'), seed: 11, threads: 1 });
    const other = await writeDemoPipeline({ size: 'tiny', outDir: freshDir('other'), seed: 12 });
    for (let i = 0; i < 12; i++) {
      const a = sha256(path.join(report.models[i]!.path, 'model.safetensors'));
      assert.equal(sha256(path.join(again.models[i]!.path, 'model.safetensors')), a, report.models[i]!.id);
      assert.notEqual(sha256(path.join(other.models[i]!.path, 'model.safetensors')), a, report.models[i]!.id);
      for (const f of ['config.json', 'tokenizer.json', 'vocab.txt']) {
        assert.equal(sha256(path.join(other.models[i]!.path, f)), sha256(path.join(report.models[i]!.path, f)));
      }
    }
    // Different models of one pipeline get different weights.
    const w = report.models.map((m) => sha256(path.join(m.path, 'model.safetensors')));
    assert.equal(new Set(w).size, 12);
  });

  test('has trained-like weights: heavy-tailed Linear weights with outlier input channels, LayerNorm gains ≈ 1', async () => {
    const m = report.models.find((x) => x.id === 'bge-base-en-v1.5-tiny')!;
    const ckpt = await openCheckpoint(m.path);
    try {
      const read = async (name: string) => {
        const info = ckpt.tensor(name)!;
        const b = await ckpt.readTensor(info);
        return { info, x: fromFloat16Bits(new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2)) };
      };
      for (const name of ['encoder.layer.0.attention.self.query.weight', 'encoder.layer.1.intermediate.dense.weight', 'embeddings.word_embeddings.weight']) {
        const { info, x } = await read(name);
        const [rows, cols] = info.shape as [number, number];
        const mo = moments(x);
        assert.ok(mo.std > 0.02 && mo.std < 0.08, `${name}: std ${mo.std}`);
        assert.ok(mo.kurtosis > 10, `${name}: kurtosis ${mo.kurtosis}`);
        const cm = columnMedians(x, rows, cols);
        const typical = median(cm);
        assert.equal(cm.filter((v) => v > 4 * typical).length, Math.floor(cols / 64), `${name}: outlier input channels`);
      }
      const ln = (await read('encoder.layer.0.output.LayerNorm.weight')).x;
      const lm = moments(ln);
      assert.ok(Math.abs(lm.mean - 1) < 0.03 && lm.std > 0.01 && lm.std < 0.2, `LayerNorm gain ${lm.mean} ± ${lm.std}`);
      const bias = moments((await read('encoder.layer.0.attention.self.key.bias')).x);
      assert.ok(Math.abs(bias.mean) < 0.01 && bias.std > 0.002 && bias.std < 0.05, `bias ${bias.mean} ± ${bias.std}`);
    } finally {
      await ckpt.close();
    }
  });

  test('ships a tokenizer that loads and encodes the semantic query set without [UNK]', async () => {
    for (const m of report.models) {
      const cfg = JSON.parse(fs.readFileSync(path.join(m.path, 'config.json'), 'utf8'));
      const tok = await loadTokenizer(m.path);
      assert.equal(tok.vocabSize, cfg.vocab_size, m.id);
      const vocabLines = fs.readFileSync(path.join(m.path, 'vocab.txt'), 'utf8').split('\n');
      assert.equal(vocabLines.length - 1, cfg.vocab_size);
      assert.deepEqual(vocabLines.slice(0, 5), ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']);
    }
    const dir = report.models.find((m) => m.layout === 'hf')!.path;
    const tok = await loadTokenizer(dir);
    assert.equal(tok.maxLength, 128);
    let pieces = 0;
    let words = 0;
    let truncated = 0;
    for (const q of QUERIES) {
      const e = tok.encode(q);
      assert.equal(e.tokens[0], '[CLS]');
      assert.equal(e.tokens[e.tokens.length - 1], '[SEP]');
      assert.ok(!e.ids.includes(tok.unkId), `[UNK] in ${JSON.stringify(q)}: ${e.tokens.join(' ')}`);
      assert.ok(e.ids.every((id) => id >= 5 || id === 2 || id === 3));
      pieces += e.ids.length - 2;
      words += q.split(/\s+/).length;
      if (e.truncated) truncated++;
    }
    assert.ok(pieces < words * 2, `${pieces} pieces for ${words} words: words mostly map to whole tokens`);
    assert.equal(truncated, 3, 'the three long queries are truncated at 128 tokens');
    assert.deepEqual(tok.encode('Zürich, naïve café!').tokens, ['[CLS]', 'zurich', ',', 'naive', 'cafe', '!', '[SEP]']);
    // A word the vocabulary lacks splits into pieces rather than becoming [UNK].
    const odd = tok.encode('qxzvbrrq');
    assert.ok(!odd.ids.includes(tok.unkId) && odd.tokens.length > 3 && odd.tokens[2]!.startsWith('##'));
    // vocab.txt alone (without tokenizer.json) gives the same ids.
    const copy = freshDir('vocab-only');
    fs.mkdirSync(copy);
    for (const f of ['vocab.txt', 'tokenizer_config.json', 'config.json']) fs.copyFileSync(path.join(dir, f), path.join(copy, f));
    const fromTxt = await loadTokenizer(copy);
    for (const q of QUERIES) assert.deepEqual(fromTxt.encode(q).ids, tok.encode(q).ids, q);
    // The sentence-transformers folders take their limit from sentence_bert_config.json.
    const st = await loadTokenizer(report.models.find((m) => m.layout === 'sentence-transformers')!.path);
    assert.equal(st.maxLength, 128);
  });

  test('builds a vocabulary of exactly the requested size, real pieces first', () => {
    const v = buildVocabulary(3072);
    assert.equal(v.tokens.length, 3072);
    assert.equal(new Set(v.tokens).size, 3072);
    assert.ok(v.used > 1500 && v.used < 3072, `${v.used} real tokens`);
    assert.equal(v.tokens[v.used], '[unused0]');
    for (const t of ['the', 'quantization', 'embedding', '##ing', '##s', 'a', '##a', '!']) assert.ok(v.tokens.includes(t), t);
    const small = buildVocabulary(300);
    assert.equal(small.tokens.length, 300);
    assert.equal(small.used, 300);
    assert.throws(() => buildVocabulary(3), CalibscopeError);
  });

  test('gives non-degenerate embeddings (a float64 BERT forward pass written here)', async () => {
    const m = report.models.find((x) => x.id === 'all-MiniLM-L6-v2-tiny')!;
    const f = await forwardStats(m.path, QUERIES.slice(0, 12));
    for (const e of f.embeddings) assert.ok(e.every(Number.isFinite));
    const cos: number[] = [];
    for (let i = 0; i < f.embeddings.length; i++) {
      for (let j = i + 1; j < f.embeddings.length; j++) cos.push(f.embeddings[i]!.reduce((a, v, k) => a + v * f.embeddings[j]![k]!, 0));
    }
    // Different queries give clearly different embeddings, but not unrelated noise either.
    assert.ok(Math.max(...cos) < 0.99, `max cosine ${Math.max(...cos)}`);
    assert.ok(median(cos) < 0.97 && median(cos) > 0.2, `median cosine ${median(cos)}`);
    // Neither the softmax nor the GELU is saturated or dead.
    assert.ok(f.scoreStd > 0.02 && f.scoreStd < 3, `attention score sd ${f.scoreStd}`);
    assert.ok(f.geluInStd > 0.1 && f.geluInStd < 5, `GELU input sd ${f.geluInStd}`);
  });

  test('calibrates one tiny model with QuantizationCalibrator', async () => {
    const m = report.models.find((x) => x.id === 'gte-small-tiny')!;
    const cal = new QuantizationCalibrator({ format: 'nvfp4' });
    const { profile } = await cal.calibrateModel(m.path);
    const ckpt = await openCheckpoint(m.path);
    const twoD = ckpt.tensors.filter((t) => t.shape.length === 2).map((t) => t.name);
    await ckpt.close();
    assert.deepEqual(Object.keys(profile.tensor_calibrations).sort(), twoD.sort());
    for (const r of Object.values(profile.tensor_calibrations)) {
      assert.ok(Number.isFinite(r.mse_after) && r.mse_after > 0 && r.mse_after <= r.mse_before, r.tensor_name);
    }
    assert.ok(profile.overall_mse < profile.overall_mse_before, 'the search improves on the naive scales');
    assert.match(profile.golden_checkpoint_hash, /^sha256:[0-9a-f]{64}$/);
    assert.equal(profile.model_id, 'gte-small-tiny');
  });
});

describe('writing into an existing folder', () => {
  test('replaces an earlier demo, refuses to overwrite anything else, and cleans up after dead runs', async () => {
    const dir = freshDir('existing');
    await writeDemoPipeline({ size: 'tiny', outDir: dir, seed: 1 });
    const before = sha256(path.join(dir, 'gte-base-tiny', 'model.safetensors'));
    // A temporary folder left by a run that died (pid far above any live one) is removed.
    const stale = path.join(dir, '.gte-base-tiny.tmp-999999999-abcdef');
    fs.mkdirSync(stale);
    const second = await writeDemoPipeline({ size: 'tiny', outDir: dir, seed: 2 });
    assert.ok(!fs.existsSync(stale));
    assert.deepEqual(fs.readdirSync(dir).sort(), [...second.models.map((m) => m.id), 'pipeline.json'].sort());
    assert.notEqual(sha256(path.join(dir, 'gte-base-tiny', 'model.safetensors')), before);
    assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'gte-base-tiny', DEMO_MARKER), 'utf8')).seed, 2);

    // A folder with a model's name that the demo did not write is left alone, and nothing is written.
    const foreign = freshDir('foreign');
    fs.mkdirSync(path.join(foreign, 'e5-base-v2-tiny'), { recursive: true });
    fs.writeFileSync(path.join(foreign, 'e5-base-v2-tiny', 'model.safetensors'), 'mine');
    await assert.rejects(writeDemoPipeline({ size: 'tiny', outDir: foreign }), (e: CalibscopeError) => {
      assert.equal(e.code, 'E_BAD_ARGUMENT');
      assert.ok(e.message.includes(path.join(foreign, 'e5-base-v2-tiny')), e.message);
      return true;
    });
    assert.deepEqual(fs.readdirSync(foreign), ['e5-base-v2-tiny']);
    assert.equal(fs.readFileSync(path.join(foreign, 'e5-base-v2-tiny', 'model.safetensors'), 'utf8'), 'mine');

    // So is a pipeline.json of someone else's.
    const other = freshDir('other-manifest');
    fs.mkdirSync(other);
    fs.writeFileSync(path.join(other, 'pipeline.json'), '{"models": []}');
    await assert.rejects(writeDemoPipeline({ size: 'tiny', outDir: other }), (e: CalibscopeError) => e.code === 'E_BAD_ARGUMENT');
    assert.deepEqual(fs.readdirSync(other), ['pipeline.json']);

    // An output path that is a file.
    const file = path.join(scratch, 'a-file');
    fs.writeFileSync(file, 'x');
    await assert.rejects(writeDemoPipeline({ size: 'tiny', outDir: file }), (e: CalibscopeError) => e.code === 'E_BAD_ARGUMENT');
    await assert.rejects(writeDemoPipeline({ size: 'huge' as 'tiny', outDir: freshDir('bad') }), (e: CalibscopeError) => e.code === 'E_BAD_ARGUMENT');
    await assert.rejects(writeDemoPipeline({ size: 'tiny', outDir: freshDir('bad'), seed: -1 }), (e: CalibscopeError) => e.code === 'E_BAD_ARGUMENT');
  });

  test('stops cleanly when cancelled: complete folders or none, no temporary folders, no manifest', async () => {
    const dir = freshDir('cancel');
    const ac = new AbortController();
    await assert.rejects(
      writeDemoPipeline({
        size: 'tiny',
        outDir: dir,
        signal: ac.signal,
        onProgress: (p) => {
          if (p.modelIndex === 3 && p.bytesDone > 0) ac.abort();
        },
      }),
      (e: CalibscopeError) => e.code === 'E_CANCELLED',
    );
    const left = fs.readdirSync(dir).sort();
    assert.ok(!left.includes('pipeline.json'));
    assert.ok(left.every((n) => !n.startsWith('.')), `left: ${left.join(', ')}`);
    assert.deepEqual(left, demoModels('tiny').slice(0, 3).map((s) => s.id).sort());
    for (const n of left) assert.ok(fs.existsSync(path.join(dir, n, 'model.safetensors')));
  });
});

describe('calibscope demo (CLI)', () => {
  const cli = (args: string[]) =>
    spawnSync(process.execPath, ['bin/calibscope.js', 'demo', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });

  test('--json prints one object with the models, parameters, bytes, seconds and the pipeline path', () => {
    const dir = freshDir('cli');
    const r = cli(['--size', 'tiny', '--out', dir, '--seed', '3', '--json']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^[^\n]+\n$/);
    const j = JSON.parse(r.stdout);
    assert.equal(j.pipeline_path, path.join(dir, 'pipeline.json'));
    assert.equal(j.size, 'tiny');
    assert.equal(j.seed, 3);
    assert.equal(j.models.length, 12);
    assert.equal(j.parameters, j.models.reduce((a: number, m: { parameters: number }) => a + m.parameters, 0));
    assert.ok(j.bytes > j.parameters * 2 && typeof j.seconds === 'number');
    for (const m of j.models) assert.deepEqual(Object.keys(m).sort(), ['bytes', 'id', 'layout', 'parameters', 'path', 'seconds', 'source']);
    assert.ok(fs.existsSync(j.pipeline_path));
  });

  test('prints a table and the pipeline path; bad arguments exit 2 with a clear error', () => {
    const dir = freshDir('cli-text');
    const r = cli(['--size', 'tiny', '--out', dir]);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.stdout.includes('all-MiniLM-L6-v2-tiny') && r.stdout.includes(`pipeline: ${path.join(dir, 'pipeline.json')}`), r.stdout);
    for (const args of [['--size', 'huge', '--out', dir], ['--size', 'tiny'], ['--out', dir], ['--size', 'tiny', '--out', dir, '--seed', 'x']]) {
      const bad = cli([...args, '--json']);
      assert.equal(bad.status, 2, `${args.join(' ')}: ${bad.stdout}${bad.stderr}`);
      assert.equal(JSON.parse(bad.stdout).error.code, 'E_BAD_ARGUMENT');
    }
  });
});

// ---------------------------------------------------------------------------------------------
// A plain float64 BERT forward pass (post-LayerNorm, exact GELU, mean pooling), independent of the
// project's encoder: enough to see whether the generated weights give usable embeddings.

function erf(x: number): number {
  // Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).
  const s = Math.sign(x);
  const a = Math.abs(x);
  const t = 1 / (1 + 0.3275911 * a);
  const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-a * a);
  return s * y;
}

async function forwardStats(dir: string, queries: string[]): Promise<{ embeddings: Float64Array[]; scoreStd: number; geluInStd: number }> {
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  const ckpt = await openCheckpoint(dir);
  const W: Record<string, Float32Array> = {};
  for (const t of ckpt.tensors) {
    const b = await ckpt.readTensor(t);
    W[t.name] = fromFloat16Bits(new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2));
  }
  await ckpt.close();
  const tok = await loadTokenizer(dir);
  const H: number = cfg.hidden_size;
  const I: number = cfg.intermediate_size;
  const nh: number = cfg.num_attention_heads;
  const dh = H / nh;
  const layerNorm = (x: Float64Array, g: Float32Array, b: Float32Array) => {
    const m = x.reduce((a, v) => a + v, 0) / x.length;
    const v = x.reduce((a, u) => a + (u - m) ** 2, 0) / x.length;
    const r = 1 / Math.sqrt(v + cfg.layer_norm_eps);
    return x.map((u, i) => (u - m) * r * g[i]! + b[i]!);
  };
  const linear = (x: Float64Array, w: Float32Array, b: Float32Array, out: number) => {
    const y = new Float64Array(out);
    for (let o = 0; o < out; o++) {
      let s = b[o]!;
      for (let k = 0; k < x.length; k++) s += w[o * x.length + k]! * x[k]!;
      y[o] = s;
    }
    return y;
  };
  const scores: number[] = [];
  const geluIn: number[] = [];
  const embeddings: Float64Array[] = [];
  for (const q of queries) {
    const ids = tok.encode(q).ids;
    let X = ids.map((id, p) => {
      const x = new Float64Array(H);
      for (let h = 0; h < H; h++) {
        x[h] = W['embeddings.word_embeddings.weight']![id * H + h]! + W['embeddings.position_embeddings.weight']![p * H + h]! + W['embeddings.token_type_embeddings.weight']![h]!;
      }
      return layerNorm(x, W['embeddings.LayerNorm.weight']!, W['embeddings.LayerNorm.bias']!);
    });
    for (let l = 0; l < cfg.num_hidden_layers; l++) {
      const w = (n: string) => W[`encoder.layer.${l}.${n}`]!;
      const Q = X.map((x) => linear(x, w('attention.self.query.weight'), w('attention.self.query.bias'), H));
      const K = X.map((x) => linear(x, w('attention.self.key.weight'), w('attention.self.key.bias'), H));
      const V = X.map((x) => linear(x, w('attention.self.value.weight'), w('attention.self.value.bias'), H));
      const ctx = X.map(() => new Float64Array(H));
      for (let h = 0; h < nh; h++) {
        for (let i = 0; i < X.length; i++) {
          const s = K.map((k) => {
            let d = 0;
            for (let e = 0; e < dh; e++) d += Q[i]![h * dh + e]! * k[h * dh + e]!;
            return d / Math.sqrt(dh);
          });
          scores.push(...s);
          const mx = Math.max(...s);
          const p = s.map((v) => Math.exp(v - mx));
          const z = p.reduce((a, v) => a + v, 0);
          for (let j = 0; j < X.length; j++) for (let e = 0; e < dh; e++) ctx[i]![h * dh + e]! += (p[j]! / z) * V[j]![h * dh + e]!;
        }
      }
      X = X.map((x, i) => {
        const a = linear(ctx[i]!, w('attention.output.dense.weight'), w('attention.output.dense.bias'), H);
        return layerNorm(x.map((v, k) => v + a[k]!), w('attention.output.LayerNorm.weight'), w('attention.output.LayerNorm.bias'));
      });
      X = X.map((x) => {
        const pre = linear(x, w('intermediate.dense.weight'), w('intermediate.dense.bias'), I);
        geluIn.push(...pre);
        const act = pre.map((v) => 0.5 * v * (1 + erf(v / Math.SQRT2)));
        const o = linear(act, w('output.dense.weight'), w('output.dense.bias'), H);
        return layerNorm(x.map((v, k) => v + o[k]!), w('output.LayerNorm.weight'), w('output.LayerNorm.bias'));
      });
    }
    const e = new Float64Array(H);
    for (const x of X) for (let h = 0; h < H; h++) e[h]! += x[h]! / X.length;
    const n = Math.hypot(...e);
    embeddings.push(e.map((v) => v / n));
  }
  return { embeddings, scoreStd: moments(scores).std, geluInStd: moments(geluIn).std };
}
