// Loads a BERT-family embedding model for the encoder: config.json (checked against what the native
// forward pass implements), the weights (every one the encoder reads, shape-checked against the
// config, converted to float32), the tokenizer and the pooling the folder asks for.
import fs from 'node:fs';
import path from 'node:path';
import { openCheckpoint, type Checkpoint, type TensorInfo } from '../checkpoints/checkpoint.js';
import { native, type NativeEncoderConfig } from '../native/index.js';
import { CalibscopeError } from '../util/errors.js';
import { halfTable } from '../util/f16.js';
import { readPooling, type PoolingSpec } from './pooling.js';
import { loadTokenizer, type BertTokenizer } from './tokenizer.js';

export interface BertModelConfig extends NativeEncoderConfig {
  modelType: string;
  architectures: string[];
  /** The config.json that was read. */
  file: string;
}

/** An encoder weight: its name in the encoder (Hugging Face BertModel naming), the checkpoint's name, shape and data. */
export interface EncoderWeight {
  name: string;
  checkpointName: string;
  dtype: string;
  shape: number[];
  /** The checkpoint's values as float32 (FP16 / BF16 values are exact in float32). */
  data: Float32Array;
}

export interface SemanticModel {
  modelDir: string;
  modelId: string;
  config: BertModelConfig;
  tokenizer: BertTokenizer;
  pooling: PoolingSpec;
  /** Encoder weights by encoder name, in the encoder's order. */
  weights: Map<string, EncoderWeight>;
  /** Checkpoint tensor name → encoder name, for every tensor the encoder reads. */
  byCheckpointName: Map<string, string>;
  /** Every tensor of the checkpoint (including those the encoder does not read, e.g. the pooler). */
  tensors: TensorInfo[];
}

/** What calibscope's encoder runs: BERT (absolute positions, post-LayerNorm, token type 0). */
export const SUPPORTED_MODEL_TYPES = ['bert'] as const;
const ACTIVATIONS: Record<string, NativeEncoderConfig['activation']> = {
  gelu: 'gelu',
  gelu_new: 'gelu_tanh',
  gelu_pytorch_tanh: 'gelu_tanh',
  gelu_fast: 'gelu_tanh',
  relu: 'relu',
};
const MAX_CONFIG_BYTES = 16 << 20;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function badConfig(file: string, reason: string, extra: Record<string, unknown> = {}): CalibscopeError {
  return new CalibscopeError('E_BAD_CHECKPOINT', `${file}: ${reason}`, { file, ...extra });
}

async function readConfigJson(file: string): Promise<Record<string, unknown>> {
  let buf: Buffer;
  try {
    const st = await fs.promises.stat(file);
    if (!st.isFile()) throw badConfig(file, 'is not a file');
    if (st.size > MAX_CONFIG_BYTES) throw badConfig(file, `${st.size} bytes is too large for a config.json`);
    buf = await fs.promises.readFile(file);
  } catch (err) {
    if (err instanceof CalibscopeError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new CalibscopeError('E_NOT_FOUND', `${file}: no config.json: the encoder needs the model's configuration`, { file });
    }
    throw new CalibscopeError('E_IO', `${file}: ${(err as Error).message}`, { file, errno: code });
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(buf).replace(/^\ufeff/, ''));
  } catch (err) {
    throw badConfig(file, `not valid JSON (${(err as Error).message})`);
  }
  if (!isObject(json)) throw badConfig(file, 'is not a JSON object');
  return json;
}

/** Reads and checks config.json: a BERT-family model with the settings the encoder implements. */
export function parseBertConfig(json: Record<string, unknown>, file: string): BertModelConfig {
  const architectures = Array.isArray(json.architectures) ? json.architectures.filter((a): a is string => typeof a === 'string') : [];
  const modelType = typeof json.model_type === 'string' ? json.model_type : '';
  const isBertArch = architectures.length > 0 && architectures.every((a) => /^Bert[A-Z]|^Bert$/.test(a));
  const supported = (SUPPORTED_MODEL_TYPES as readonly string[]).includes(modelType) || (modelType === '' && isBertArch);
  if (!supported) {
    const what = [modelType ? `model_type "${modelType}"` : 'no model_type', architectures.length ? `architectures ${architectures.join(', ')}` : '']
      .filter(Boolean)
      .join(', ');
    throw badConfig(
      file,
      `${what} is not supported: calibscope's encoder runs BERT-family checkpoints (model_type "bert", e.g. BertModel as used by ` +
        'all-MiniLM, bge, e5 and gte) with absolute positions',
      { reason: 'unsupported_architecture', model_type: modelType || null, architectures, supported: [...SUPPORTED_MODEL_TYPES] },
    );
  }
  const int = (key: string, def?: number): number => {
    const v = json[key] ?? def;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) {
      throw badConfig(file, `${key} must be a positive integer, got ${JSON.stringify(json[key])}`, { field: key });
    }
    return v;
  };
  const hidden = int('hidden_size');
  const heads = int('num_attention_heads');
  if (hidden % heads !== 0) {
    throw badConfig(file, `hidden_size ${hidden} is not a multiple of num_attention_heads ${heads}`, { field: 'num_attention_heads' });
  }
  const eps = json.layer_norm_eps ?? 1e-12;
  if (typeof eps !== 'number' || !(eps > 0) || !Number.isFinite(eps)) {
    throw badConfig(file, `layer_norm_eps must be a positive number, got ${JSON.stringify(json.layer_norm_eps)}`, { field: 'layer_norm_eps' });
  }
  const actName = json.hidden_act ?? 'gelu';
  const activation = typeof actName === 'string' ? ACTIVATIONS[actName] : undefined;
  if (!activation) {
    throw badConfig(file, `hidden_act ${JSON.stringify(actName)} is not supported (supported: ${Object.keys(ACTIVATIONS).join(', ')})`, {
      field: 'hidden_act',
    });
  }
  const posType = json.position_embedding_type ?? 'absolute';
  if (posType !== 'absolute') {
    throw badConfig(file, `position_embedding_type ${JSON.stringify(posType)} is not supported: only absolute positions`, {
      field: 'position_embedding_type',
    });
  }
  if (json.is_decoder === true) throw badConfig(file, 'is_decoder is true: only encoders are supported', { field: 'is_decoder' });
  return {
    modelType: modelType || 'bert',
    architectures,
    file,
    vocabSize: int('vocab_size'),
    hiddenSize: hidden,
    numLayers: int('num_hidden_layers'),
    numHeads: heads,
    intermediateSize: int('intermediate_size'),
    maxPositions: int('max_position_embeddings'),
    typeVocabSize: int('type_vocab_size', 2),
    layerNormEps: eps,
    activation,
  };
}

/** Every weight the encoder reads, with its shape, in a fixed order. */
export function encoderWeightShapes(c: NativeEncoderConfig): { name: string; shape: number[] }[] {
  const H = c.hiddenSize;
  const I = c.intermediateSize;
  const out: { name: string; shape: number[] }[] = [
    { name: 'embeddings.word_embeddings.weight', shape: [c.vocabSize, H] },
    { name: 'embeddings.position_embeddings.weight', shape: [c.maxPositions, H] },
    { name: 'embeddings.token_type_embeddings.weight', shape: [c.typeVocabSize, H] },
    { name: 'embeddings.LayerNorm.weight', shape: [H] },
    { name: 'embeddings.LayerNorm.bias', shape: [H] },
  ];
  for (let l = 0; l < c.numLayers; l++) {
    const p = `encoder.layer.${l}.`;
    const lin = (n: string, o: number, i: number) => out.push({ name: `${p}${n}.weight`, shape: [o, i] }, { name: `${p}${n}.bias`, shape: [o] });
    lin('attention.self.query', H, H);
    lin('attention.self.key', H, H);
    lin('attention.self.value', H, H);
    lin('attention.output.dense', H, H);
    out.push({ name: `${p}attention.output.LayerNorm.weight`, shape: [H] }, { name: `${p}attention.output.LayerNorm.bias`, shape: [H] });
    lin('intermediate.dense', I, H);
    lin('output.dense', H, I);
    out.push({ name: `${p}output.LayerNorm.weight`, shape: [H] }, { name: `${p}output.LayerNorm.bias`, shape: [H] });
  }
  return out;
}

/** The layer an encoder weight belongs to (-1 for the embeddings). */
export function layerOf(encoderName: string): number {
  const m = /^encoder\.layer\.(\d+)\./.exec(encoderName);
  return m ? Number(m[1]) : -1;
}

/** Raw little-endian F32 / F16 / BF16 bytes as float32 values. */
export function toFloat32(bytes: Uint8Array, dtype: string, numel: number): Float32Array {
  const width = dtype === 'F32' ? 4 : dtype === 'F16' || dtype === 'BF16' ? 2 : 0;
  if (width === 0) throw new CalibscopeError('E_UNSUPPORTED_DTYPE', `dtype ${dtype} cannot be read as float`, { dtype });
  if (bytes.byteLength < numel * width) {
    throw new CalibscopeError('E_BAD_CHECKPOINT', `${numel} ${dtype} values need ${numel * width} bytes, got ${bytes.byteLength}`);
  }
  // Typed views need aligned offsets (and little-endian hosts, which every supported platform is).
  const aligned = bytes.byteOffset % width === 0 ? bytes : bytes.slice(0, numel * width);
  if (dtype === 'F32') return new Float32Array(aligned.buffer.slice(aligned.byteOffset, aligned.byteOffset + numel * 4));
  const src = new Uint16Array(aligned.buffer, aligned.byteOffset, numel);
  const out = new Float32Array(numel);
  if (dtype === 'F16') {
    const t = halfTable();
    for (let i = 0; i < numel; i++) out[i] = t[src[i]];
  } else {
    const u = new Uint32Array(out.buffer);
    for (let i = 0; i < numel; i++) u[i] = src[i] << 16;
  }
  return out;
}

/**
 * Finds the checkpoint tensor for an encoder weight: the name itself, or with the prefix a task
 * head adds ("bert." in BertForMaskedLM), or the old TF names (LayerNorm gamma / beta).
 */
function resolveNames(ckpt: Checkpoint): (name: string) => TensorInfo | undefined {
  const prefixes = [''];
  for (const t of ckpt.tensors) {
    const suffix = 'embeddings.word_embeddings.weight';
    if (t.name.endsWith(`.${suffix}`)) prefixes.push(t.name.slice(0, -suffix.length));
  }
  return (name) => {
    const alts = [name];
    if (name.endsWith('LayerNorm.weight')) alts.push(name.replace(/weight$/, 'gamma'));
    if (name.endsWith('LayerNorm.bias')) alts.push(name.replace(/bias$/, 'beta'));
    for (const p of prefixes) for (const a of alts) {
      const t = ckpt.tensor(p + a);
      if (t) return t;
    }
    return undefined;
  };
}

export interface LoadModelOptions {
  /** Skip reading the weight data (config, tokenizer, pooling and shape checks only). */
  metadataOnly?: boolean;
}

/**
 * Loads a Hugging Face or sentence-transformers model folder for the encoder. Errors name the
 * file and the reason: E_NOT_FOUND (no folder, config.json or tokenizer), E_BAD_CHECKPOINT
 * (malformed or unsupported config, a weight missing or of the wrong shape, a tokenizer whose ids
 * do not fit the embedding table), E_UNSUPPORTED_DTYPE.
 */
export async function loadSemanticModel(modelDirArg: string, opts: LoadModelOptions = {}): Promise<SemanticModel> {
  if (typeof modelDirArg !== 'string' || modelDirArg === '') throw new CalibscopeError('E_BAD_ARGUMENT', 'a model folder is needed');
  const modelDir = path.resolve(modelDirArg);
  const st = await fs.promises.stat(modelDir).catch(() => null);
  if (!st) throw new CalibscopeError('E_NOT_FOUND', `${modelDir}: no such model folder`, { path: modelDir });
  if (!st.isDirectory()) {
    throw new CalibscopeError('E_BAD_ARGUMENT', `${modelDir}: semantic validation needs a model folder (config.json, weights, tokenizer), not a file`, {
      path: modelDir,
    });
  }
  const ckpt = await openCheckpoint(modelDir);
  try {
    const configFile = ckpt.configPath ?? path.join(ckpt.root, 'config.json');
    const config = parseBertConfig(await readConfigJson(configFile), configFile);
    const tokenizer = await loadTokenizer(modelDir);
    const pooling = await readPooling(modelDir);

    const find = resolveNames(ckpt);
    const weights = new Map<string, EncoderWeight>();
    const byCheckpointName = new Map<string, string>();
    const where = ckpt.files.length === 1 ? ckpt.files[0] : ckpt.root;
    for (const { name, shape } of encoderWeightShapes(config)) {
      const t = find(name);
      if (!t) {
        throw new CalibscopeError('E_BAD_CHECKPOINT', `${where}: the encoder weight '${name}' is missing from the checkpoint`, {
          file: where,
          tensor: name,
        });
      }
      const same = t.shape.length === shape.length && t.shape.every((d, i) => d === shape[i]);
      if (!same) {
        throw new CalibscopeError(
          'E_BAD_CHECKPOINT',
          `${t.file}: tensor '${t.name}' has shape [${t.shape.join(', ')}], but ${path.basename(configFile)} ` +
            `(hidden_size ${config.hiddenSize}, intermediate_size ${config.intermediateSize}, vocab_size ${config.vocabSize}, ` +
            `max_position_embeddings ${config.maxPositions}, type_vocab_size ${config.typeVocabSize}) needs [${shape.join(', ')}]`,
          { file: t.file, tensor: t.name, shape: t.shape, expected: shape },
        );
      }
      if (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16') {
        throw new CalibscopeError('E_UNSUPPORTED_DTYPE', `${t.file}: tensor '${t.name}' is ${t.dtype}; the encoder reads F32, F16 or BF16`, {
          file: t.file,
          tensor: t.name,
          dtype: t.dtype,
        });
      }
      const data = opts.metadataOnly ? new Float32Array(0) : toFloat32(await ckpt.readTensor(t), t.dtype, t.numel);
      weights.set(name, { name, checkpointName: t.name, dtype: t.dtype, shape, data });
      byCheckpointName.set(t.name, name);
    }
    if (tokenizer.vocabSize > config.vocabSize) {
      throw new CalibscopeError(
        'E_BAD_CHECKPOINT',
        `${tokenizer.source}: the tokenizer has ids up to ${tokenizer.vocabSize - 1}, but the word embeddings have ${config.vocabSize} rows`,
        { file: tokenizer.source, tokenizer_vocab: tokenizer.vocabSize, vocab_size: config.vocabSize },
      );
    }
    return { modelDir, modelId: ckpt.modelId, config, tokenizer, pooling, weights, byCheckpointName, tensors: ckpt.tensors };
  } finally {
    await ckpt.close();
  }
}

/** A native encoder holding the model's weights (the caller disposes it). */
export function createEncoder(model: SemanticModel) {
  const { file: _file, modelType: _t, architectures: _a, ...cfg } = model.config;
  const enc = new (native().Encoder)(cfg);
  try {
    for (const w of model.weights.values()) enc.setWeight(w.name, w.data);
    return enc;
  } catch (err) {
    enc.dispose();
    throw err;
  }
}
