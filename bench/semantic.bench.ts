// Semantic validation and drift attribution on an all-MiniLM-L6-v2-sized model (hidden 384, 6
// layers, 12 heads, intermediate 1536, vocabulary 30522) with trained-like FP16 weights, the demo's
// recipe and tokenizer, and the default query set. One JSON line per measurement.
//   node dist/bench/semantic.bench.js [--keep DIR] [--threads N] [--format F] [--skip-attribution]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { QuantizationCalibrator } from '../src/calibration/calibrator.js';
import { SafetensorsStreamWriter } from '../src/checkpoints/safetensors_writer.js';
import { tensorSeed, weightRecipe } from '../src/demo/index.js';
import { bertConfigJson, bertTensors, demoModels } from '../src/demo/models.js';
import { buildVocabulary, tokenizerConfigJson, tokenizerJson, vocabTxt } from '../src/demo/vocab.js';
import { native } from '../src/native/index.js';
import { attributeDrift } from '../src/semantic/attribution.js';
import { loadQueries } from '../src/semantic/queries.js';
import { EncoderSession } from '../src/semantic/session.js';
import { validateSemanticAlignment } from '../src/semantic/validate.js';

const args = process.argv.slice(2);
const opt = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const THREADS = Number(opt('--threads') ?? 0);
const FORMAT = opt('--format') ?? 'nvfp4';

function emit(obj: Record<string, unknown>): void {
  const cpu = `${os.cpus()[0]?.model.trim() ?? 'cpu'} × ${os.cpus().length}`;
  process.stdout.write(`${JSON.stringify({ machine: cpu, gemm: native().Encoder.isa(), ...obj })}\n`);
}

const seconds = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;

async function writeMiniLm(dir: string): Promise<void> {
  const spec = demoModels('full').find((m) => m.source === 'sentence-transformers/all-MiniLM-L6-v2')!;
  await fs.promises.mkdir(dir, { recursive: true });
  const vocab = buildVocabulary(spec.shape.vocabSize);
  await fs.promises.writeFile(path.join(dir, 'config.json'), JSON.stringify(bertConfigJson(spec.shape), null, 2));
  await fs.promises.writeFile(path.join(dir, 'tokenizer.json'), tokenizerJson(vocab));
  await fs.promises.writeFile(path.join(dir, 'vocab.txt'), vocabTxt(vocab));
  await fs.promises.writeFile(path.join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfigJson(spec.maxSeqLength ?? 512)));
  const tensors = bertTensors(spec.shape);
  const writer = await SafetensorsStreamWriter.create(
    path.join(dir, 'model.safetensors'),
    tensors.map((t) => ({ name: t.name, dtype: 'F16', shape: t.shape })),
  );
  for (const t of tensors) {
    const cols = t.shape[t.shape.length - 1]!;
    const rows = t.shape.length === 1 ? 1 : t.shape[0]!;
    const data = await native().generateTrainedLike({ ...weightRecipe(t.name), rows, cols, seed: tensorSeed(0, spec.id, t.name), dtype: 'F16' });
    await writer.write(t.name, data);
  }
  await writer.close();
}

async function main(): Promise<void> {
  const keep = opt('--keep');
  const root = keep ? path.resolve(keep) : fs.mkdtempSync(path.join(os.tmpdir(), 'calibscope-semantic-bench-'));
  const modelDir = path.join(root, 'all-MiniLM-L6-v2');
  try {
    if (!fs.existsSync(path.join(modelDir, 'model.safetensors'))) await writeMiniLm(modelDir);
    const { queries } = await loadQueries();

    // Forward passes alone.
    const session = await EncoderSession.open(modelDir);
    const q = session.encode(queries);
    for (const threads of [1, THREADS]) {
      const t0 = process.hrtime.bigint();
      await session.forward(q, { threads });
      const s = seconds(t0);
      const c = session.model.config;
      const flops = 2 * q.tokens * c.numLayers * (4 * c.hiddenSize * c.hiddenSize + 2 * c.hiddenSize * c.intermediateSize);
      emit({ bench: 'forward', threads: threads || os.cpus().length, queries: queries.length, tokens: q.tokens, seconds: s, dense_gflops: flops / s / 1e9 });
    }
    session.close();

    const profileDir = path.join(root, `profile-${FORMAT}`);
    if (!fs.existsSync(path.join(profileDir, 'profile.json'))) {
      const t0 = process.hrtime.bigint();
      await new QuantizationCalibrator({ format: FORMAT }).calibrateModel(modelDir, { outDir: profileDir, diagnostics: false });
      emit({ bench: 'calibrate', format: FORMAT, seconds: seconds(t0) });
    }

    let t0 = process.hrtime.bigint();
    const v = await validateSemanticAlignment(modelDir, profileDir, queries, { threads: THREADS, throwOnDrift: false });
    emit({
      bench: 'validate',
      format: FORMAT,
      queries: queries.length,
      seconds: seconds(t0),
      target_seconds: 10,
      mean_correlation: v.mean_correlation,
      min_correlation: v.min_correlation,
      retrieval_agreement: v.retrieval_agreement,
    });

    if (!args.includes('--skip-attribution')) {
      t0 = process.hrtime.bigint();
      const a = await attributeDrift(modelDir, profileDir, queries, { threads: THREADS, threshold: Number(opt('--threshold') ?? 0.99) });
      emit({
        bench: 'attribute',
        format: FORMAT,
        seconds: seconds(t0),
        target_seconds: 120,
        forward_passes: a.forward_passes,
        worst: a.ranking.slice(0, 3).map((e) => [e.tensor, e.mean_correlation]),
        suggestion: { keep: a.suggestion.keep.length, passes: a.suggestion.passes, bits_per_weight: a.suggestion.bits_per_weight },
      });
    }
  } finally {
    if (!keep) fs.rmSync(root, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
