// The demo pipeline, calibscope's embedded default: 12 BERT-family embedding models in Hugging
// Face layout (some as sentence-transformers folders) with trained-like FP16 weights, the
// project's WordPiece tokenizer, and a pipeline.json listing them. `full` has the real shapes of
// 12 public models (1.6 B parameters); `tiny` keeps their structure at a few million parameters
// each. Everything is deterministic from the seed.
//
// Each model folder is written under a temporary name and renamed into place, so a reader sees
// the old folder or the complete new one; folders that calibscope did not write are never
// overwritten. Memory stays bounded by two chunks of one tensor.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { SafetensorsStreamWriter } from '../checkpoints/safetensors_writer.js';
import { native, type NativeTrainedLikeOptions } from '../native/index.js';
import { fsyncDir, pidAlive, writeFileAtomic } from '../util/atomic.js';
import { CalibscopeError } from '../util/errors.js';
import { CALIBSCOPE_VERSION } from '../version.js';
import { bertConfigJson, bertTensors, countParameters, demoModels, type DemoModelSpec, type DemoSize, type TensorShape } from './models.js';
import { buildVocabulary, SPECIAL_TOKENS_MAP, tokenizerConfigJson, tokenizerJson, vocabTxt } from './vocab.js';

export { bertTensors, countParameters, demoModels, DEMO_SIZES } from './models.js';
export type { BertShape, DemoModelSpec, DemoSize } from './models.js';

export const DEFAULT_DEMO_SEED = 0;
/** The file that marks a folder as written by `calibscope demo` (and so safe to replace). */
export const DEMO_MARKER = 'calibscope_demo.json';
export const DEMO_GENERATOR = 'calibscope demo';

export interface DemoOptions {
  size: DemoSize;
  outDir: string;
  /** An integer in [0, 2^53); the same seed gives byte-identical weights. Default 0. */
  seed?: number;
  /** Generator threads (default: all cores). The bytes do not depend on it. */
  threads?: number;
  signal?: AbortSignal;
  onProgress?: (p: DemoProgress) => void;
}

export interface DemoProgress {
  model: string;
  modelIndex: number;
  models: number;
  /** Weight bytes written so far / in all. */
  bytesDone: number;
  bytesTotal: number;
}

export interface DemoModelReport {
  id: string;
  source: string;
  /** Absolute model folder. */
  path: string;
  layout: DemoModelSpec['layout'];
  parameters: number;
  /** All files of the folder. */
  bytes: number;
  seconds: number;
}

export interface DemoReport {
  size: DemoSize;
  seed: number;
  outDir: string;
  pipelinePath: string;
  models: DemoModelReport[];
  parameters: number;
  bytes: number;
  seconds: number;
}

// ---------------------------------------------------------------------------------------------
// Weights

/** Values per native call: two chunks (F16) in flight are 16 MB. */
const CHUNK_VALUES = 4 << 20;

/** How each BertModel tensor is drawn: trained-like Linear weights and embeddings, LayerNorm gains ≈ 1, small biases. */
export function weightRecipe(name: string): Omit<NativeTrainedLikeOptions, 'rows' | 'cols' | 'seed' | 'dtype'> {
  if (name.endsWith('LayerNorm.weight')) return { std: 0.05, offset: 1, rowSpread: 0, outlierFraction: 0 };
  if (name.endsWith('.bias')) return { std: 0.01, rowSpread: 0, outlierFraction: 0 };
  if (name.includes('position_embeddings') || name.includes('token_type_embeddings')) return { std: 0.01 };
  return { std: 0.02 };
}

/** A tensor's generator seed: from the demo seed, the model id and the tensor name. */
export function tensorSeed(seed: number, modelId: string, tensor: string): number {
  const h = crypto.createHash('sha256').update(`calibscope-demo\0${seed}\0${modelId}\0${tensor}`).digest();
  return h.readUIntBE(0, 6);
}

function cancelled(): CalibscopeError {
  return new CalibscopeError('E_CANCELLED', 'demo generation cancelled');
}

async function writeWeights(
  file: string,
  spec: DemoModelSpec,
  seed: number,
  opts: DemoOptions,
  onBytes: (n: number) => void,
): Promise<void> {
  const tensors = bertTensors(spec.shape);
  const writer = await SafetensorsStreamWriter.create(
    file,
    tensors.map((t) => ({ name: t.name, dtype: 'F16', shape: t.shape })),
    { format: 'pt' },
  );
  // Row slices of every tensor, in file order; slice i+1 is generated while slice i is written.
  const slices: { t: TensorShape; rowStart: number; rowCount: number; cols: number; rows: number }[] = [];
  for (const t of tensors) {
    const cols = t.shape[t.shape.length - 1]!;
    const rows = t.shape.length === 1 ? 1 : t.shape[0]!;
    const step = Math.max(1, Math.floor(CHUNK_VALUES / cols));
    for (let r = 0; r < rows; r += step) slices.push({ t, rowStart: r, rowCount: Math.min(step, rows - r), cols, rows });
  }
  const addon = native();
  const generate = (i: number): Promise<Uint8Array> => {
    const s = slices[i]!;
    return addon.generateTrainedLike({
      ...weightRecipe(s.t.name),
      rows: s.rows,
      cols: s.cols,
      rowStart: s.rowStart,
      rowCount: s.rowCount,
      seed: tensorSeed(seed, spec.id, s.t.name),
      dtype: 'F16',
      threads: opts.threads,
    });
  };
  let next: Promise<Uint8Array> | null = null;
  try {
    next = slices.length > 0 ? generate(0) : null;
    for (let i = 0; i < slices.length; i++) {
      const data = await next!;
      next = null;
      if (opts.signal?.aborted) throw cancelled();
      next = i + 1 < slices.length ? generate(i + 1) : null;
      await writer.write(slices[i]!.t.name, data);
      onBytes(data.byteLength);
    }
    await writer.close();
  } catch (err) {
    next?.catch(() => undefined);
    await writer.abort();
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Folders

/** Writes a small file and flushes it (its folder is renamed into place afterwards). */
async function writeSynced(file: string, text: string): Promise<void> {
  const h = await fs.promises.open(file, 'wx');
  try {
    await h.writeFile(text, 'utf8');
    await h.sync();
  } finally {
    await h.close();
  }
}

const json = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;

interface TokenizerFiles {
  json: string;
  txt: string;
}

async function writeModelFiles(dir: string, spec: DemoModelSpec, size: DemoSize, seed: number, tok: TokenizerFiles): Promise<void> {
  await writeSynced(path.join(dir, 'config.json'), json(bertConfigJson(spec.shape)));
  await writeSynced(path.join(dir, 'tokenizer.json'), tok.json);
  await writeSynced(path.join(dir, 'vocab.txt'), tok.txt);
  await writeSynced(path.join(dir, 'tokenizer_config.json'), json(tokenizerConfigJson(spec.maxSeqLength ?? spec.shape.maxPositions)));
  await writeSynced(path.join(dir, 'special_tokens_map.json'), json(SPECIAL_TOKENS_MAP));
  if (spec.layout === 'sentence-transformers') {
    const H = spec.shape.hiddenSize;
    await writeSynced(
      path.join(dir, 'modules.json'),
      json([
        { idx: 0, name: '0', path: '', type: 'sentence_transformers.models.Transformer' },
        { idx: 1, name: '1', path: '1_Pooling', type: 'sentence_transformers.models.Pooling' },
        { idx: 2, name: '2', path: '2_Normalize', type: 'sentence_transformers.models.Normalize' },
      ]),
    );
    await writeSynced(path.join(dir, 'sentence_bert_config.json'), json({ max_seq_length: spec.maxSeqLength ?? spec.shape.maxPositions, do_lower_case: false }));
    await writeSynced(
      path.join(dir, 'config_sentence_transformers.json'),
      json({ __version__: { sentence_transformers: '2.2.2' }, prompts: {}, default_prompt_name: null, similarity_fn_name: 'cosine' }),
    );
    await fs.promises.mkdir(path.join(dir, '1_Pooling'));
    await writeSynced(
      path.join(dir, '1_Pooling', 'config.json'),
      json({
        word_embedding_dimension: H,
        pooling_mode_cls_token: false,
        pooling_mode_mean_tokens: true,
        pooling_mode_max_tokens: false,
        pooling_mode_mean_sqrt_len_tokens: false,
      }),
    );
    await fs.promises.mkdir(path.join(dir, '2_Normalize'));
  }
  await writeSynced(
    path.join(dir, DEMO_MARKER),
    json({
      generator: DEMO_GENERATOR,
      calibscope_version: CALIBSCOPE_VERSION,
      size,
      seed,
      id: spec.id,
      source: spec.source,
      layout: spec.layout,
      parameters: countParameters(spec.shape),
      note: 'Random weights shaped like trained ones (Student-t tails, per-row scale spread, outlier input channels); not the real model.',
    }),
  );
}

async function folderBytes(dir: string): Promise<number> {
  let n = 0;
  for (const e of await fs.promises.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    n += e.isDirectory() ? await folderBytes(p) : (await fs.promises.stat(p)).size;
  }
  return n;
}

/** True when `dir` holds the marker of a folder `calibscope demo` wrote. */
export async function isDemoFolder(dir: string): Promise<boolean> {
  try {
    const m = JSON.parse(await fs.promises.readFile(path.join(dir, DEMO_MARKER), 'utf8')) as { generator?: unknown };
    return m.generator === DEMO_GENERATOR;
  } catch {
    return false;
  }
}

const SIDE_RE = /^\.(.+)\.(tmp|old)-(\d+)-([0-9a-f]+)$/;

function sideName(id: string, kind: 'tmp' | 'old'): string {
  return `.${id}.${kind}-${process.pid}-${crypto.randomBytes(6).toString('hex')}`;
}


/** Removes model folders half-written (or set aside) by demo runs that died. */
async function removeStaleSideFolders(outDir: string): Promise<void> {
  for (const e of await fs.promises.readdir(outDir, { withFileTypes: true })) {
    const m = SIDE_RE.exec(e.name);
    if (!m || !e.isDirectory() || pidAlive(Number(m[3]))) continue;
    await fs.promises.rm(path.join(outDir, e.name), { recursive: true, force: true });
  }
}

/** Moves the finished temporary folder to `target`, replacing an earlier demo folder there. */
async function moveIntoPlace(tmp: string, target: string, id: string): Promise<void> {
  try {
    await fs.promises.rename(tmp, target);
    return;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'EISDIR' && code !== 'EPERM') throw err;
  }
  if (!(await isDemoFolder(target))) {
    throw new CalibscopeError('E_BAD_ARGUMENT', `${target}: appeared while the demo was written and was not written by calibscope demo; left alone`, {
      path: target,
    });
  }
  const old = path.join(path.dirname(target), sideName(id, 'old'));
  await fs.promises.rename(target, old);
  try {
    await fs.promises.rename(tmp, target);
  } catch (err) {
    await fs.promises.rename(old, target).catch(() => undefined);
    throw err;
  }
  await fs.promises.rm(old, { recursive: true, force: true });
}

async function checkTargets(outDir: string, specs: DemoModelSpec[], pipelinePath: string): Promise<void> {
  for (const s of specs) {
    const target = path.join(outDir, s.id);
    const st = await fs.promises.lstat(target).catch(() => null);
    if (st && !(st.isDirectory() && (await isDemoFolder(target)))) {
      throw new CalibscopeError(
        'E_BAD_ARGUMENT',
        `${target}: already exists and was not written by calibscope demo (no ${DEMO_MARKER}); refusing to overwrite it — choose another output folder`,
        { path: target },
      );
    }
  }
  await checkManifestIsOurs(pipelinePath);
}

/** True when `file` is a pipeline.json that `calibscope demo` wrote. */
async function isDemoManifest(file: string): Promise<boolean> {
  try {
    if (!(await fs.promises.lstat(file)).isFile()) return false;
    return (JSON.parse(await fs.promises.readFile(file, 'utf8')) as { generator?: unknown }).generator === DEMO_GENERATOR;
  } catch {
    return false;
  }
}

/** A pipeline.json that calibscope demo did not write is never replaced. */
async function checkManifestIsOurs(pipelinePath: string): Promise<void> {
  const exists = await fs.promises.lstat(pipelinePath).then(() => true, () => false);
  if (!exists || (await isDemoManifest(pipelinePath))) return;
  throw new CalibscopeError(
    'E_BAD_ARGUMENT',
    `${pipelinePath}: already exists and was not written by calibscope demo; refusing to overwrite it — choose another output folder`,
    { path: pipelinePath },
  );
}

/**
 * Refuses a folder that is not empty and holds no earlier demo: its contents are someone's, and a
 * demo mixed into them would be hard to tell apart or remove. An earlier demo is recognised by
 * its pipeline.json or a model folder with the marker (a cancelled run writes no pipeline.json);
 * temporary folders of demo runs that died do not count as content.
 */
async function checkOutDirIsOurs(outDir: string, pipelinePath: string): Promise<void> {
  const ids = new Set([...demoModels('tiny'), ...demoModels('full')].map((s) => s.id));
  const entries = await fs.promises.readdir(outDir, { withFileTypes: true });
  const others = entries.filter((e) => {
    const m = SIDE_RE.exec(e.name);
    return !(m && e.isDirectory() && ids.has(m[1]!));
  });
  if (others.length === 0) return;
  if (await isDemoManifest(pipelinePath)) return;
  for (const e of others) if (e.isDirectory() && ids.has(e.name) && (await isDemoFolder(path.join(outDir, e.name)))) return;
  const names = others.map((e) => e.name).sort();
  throw new CalibscopeError(
    'E_BAD_ARGUMENT',
    `${outDir}: the output folder is not empty (${names.slice(0, 3).join(', ')}${names.length > 3 ? `, … ${names.length} entries` : ''}) ` +
      'and holds no demo written by calibscope demo; refusing to write into it — choose an empty or new folder',
    { path: outDir, entries: names.slice(0, 20) },
  );
}

async function prepareOutDir(outDir: string): Promise<void> {
  try {
    await fs.promises.mkdir(outDir, { recursive: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ENOTDIR') throw new CalibscopeError('E_BAD_ARGUMENT', `${outDir}: not a folder`, { path: outDir });
    throw new CalibscopeError('E_IO', `${outDir}: cannot create the output folder: ${(err as Error).message}`, { path: outDir, errno: code });
  }
  const st = await fs.promises.stat(outDir);
  if (!st.isDirectory()) throw new CalibscopeError('E_BAD_ARGUMENT', `${outDir}: not a folder`, { path: outDir });
  try {
    await fs.promises.access(outDir, fs.constants.W_OK);
  } catch {
    throw new CalibscopeError('E_IO', `${outDir}: the output folder is not writable`, { path: outDir });
  }
}

async function checkFreeSpace(outDir: string, needed: number): Promise<void> {
  let free: number;
  try {
    const s = await fs.promises.statfs(outDir);
    free = Number(s.bavail) * Number(s.bsize);
  } catch {
    return; // the platform cannot say: the writes will report a full disk themselves
  }
  // The old folder stays until the new one is complete, so replacing needs the space twice.
  if (free < needed * 1.02 + (64 << 20)) {
    throw new CalibscopeError(
      'E_IO',
      `${outDir}: ${(free / 1e9).toFixed(2)} GB free, but the demo needs about ${(needed / 1e9).toFixed(2)} GB; nothing was written`,
      { path: outDir, free_bytes: free, needed_bytes: needed },
    );
  }
}

// ---------------------------------------------------------------------------------------------

/** Writes the demo pipeline into `outDir` (created if needed) and returns what was written. */
export async function writeDemoPipeline(opts: DemoOptions): Promise<DemoReport> {
  const t0 = performance.now();
  const size = opts.size;
  const specs = demoModels(size);
  const seed = opts.seed ?? DEFAULT_DEMO_SEED;
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new CalibscopeError('E_BAD_ARGUMENT', `demo seed must be an integer in [0, 2^53), got ${String(opts.seed)}`);
  }
  if (typeof opts.outDir !== 'string' || opts.outDir === '') throw new CalibscopeError('E_BAD_ARGUMENT', 'the demo needs an output folder');
  const outDir = path.resolve(opts.outDir);
  const pipelinePath = path.join(outDir, 'pipeline.json');

  await prepareOutDir(outDir);
  await checkTargets(outDir, specs, pipelinePath);
  await checkOutDirIsOurs(outDir, pipelinePath);
  await removeStaleSideFolders(outDir);
  const weightBytes = specs.map((s) => countParameters(s.shape) * 2);
  const bytesTotal = weightBytes.reduce((a, b) => a + b, 0);
  await checkFreeSpace(outDir, bytesTotal);

  const tokenizers = new Map<number, TokenizerFiles>();
  const tokenizerFor = (vocabSize: number): TokenizerFiles => {
    let t = tokenizers.get(vocabSize);
    if (!t) {
      const v = buildVocabulary(vocabSize);
      t = { json: tokenizerJson(v), txt: vocabTxt(v) };
      tokenizers.set(vocabSize, t);
    }
    return t;
  };

  const reports: DemoModelReport[] = [];
  let bytesDone = 0;
  for (let i = 0; i < specs.length; i++) {
    if (opts.signal?.aborted) throw cancelled();
    const spec = specs[i]!;
    const m0 = performance.now();
    const target = path.join(outDir, spec.id);
    const tmp = path.join(outDir, sideName(spec.id, 'tmp'));
    const progress = () => opts.onProgress?.({ model: spec.id, modelIndex: i, models: specs.length, bytesDone, bytesTotal });
    progress();
    await fs.promises.mkdir(tmp);
    try {
      await writeModelFiles(tmp, spec, size, seed, tokenizerFor(spec.shape.vocabSize));
      await writeWeights(path.join(tmp, 'model.safetensors'), spec, seed, opts, (n) => {
        bytesDone += n;
        progress();
      });
      await fsyncDir(tmp);
      if (opts.signal?.aborted) throw cancelled();
      await moveIntoPlace(tmp, target, spec.id);
    } catch (err) {
      await fs.promises.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
      if (err instanceof CalibscopeError) throw err;
      const e = err as NodeJS.ErrnoException;
      if (typeof e?.code === 'string' && e.code.startsWith('E_')) throw err; // the addon's coded errors
      throw new CalibscopeError('E_IO', `${target}: writing the demo model failed: ${e?.message ?? String(err)}`, { path: target, errno: e?.code });
    }
    reports.push({
      id: spec.id,
      source: spec.source,
      path: target,
      layout: spec.layout,
      parameters: countParameters(spec.shape),
      bytes: await folderBytes(target),
      seconds: (performance.now() - m0) / 1000,
    });
  }
  await fsyncDir(outDir);

  const manifest = {
    generator: DEMO_GENERATOR,
    models: specs.map((s) => ({
      id: s.id,
      path: s.id,
      description: `${size} demo shaped like ${s.source} (random trained-like weights, seed ${seed})`,
    })),
  };
  // Checked again: one that appeared while the models were generated is kept too.
  await checkManifestIsOurs(pipelinePath);
  await writeFileAtomic(pipelinePath, json(manifest));

  return {
    size,
    seed,
    outDir,
    pipelinePath,
    models: reports,
    parameters: reports.reduce((a, r) => a + r.parameters, 0),
    bytes: reports.reduce((a, r) => a + r.bytes, 0),
    seconds: (performance.now() - t0) / 1000,
  };
}

/** The demo's total size on disk before writing it (weights only; tokenizers add a few MB). */
export function demoWeightBytes(size: DemoSize): number {
  return demoModels(size).reduce((a, s) => a + countParameters(s.shape) * 2, 0);
}

