// An encoder session: a loaded model with its weights copied into the native encoder once, then
// many forward passes — FP16, quantized, or with single tensors swapped — over a tokenized query set.
import type { NativeActQuantStats, NativeEncoder, NativeForwardOptions, NativeForwardResult } from '../native/index.js';
import { CalibscopeError } from '../util/errors.js';
import { createEncoder, loadSemanticModel, type SemanticModel } from './model.js';
import { poolSequence } from './pooling.js';

export interface EncodedQueries {
  queries: string[];
  /** Token ids per query ([CLS] … [SEP], truncated at the model's limit). */
  inputIds: number[][];
  /** Indices of the queries that were longer than the model's limit and were truncated. */
  truncated: number[];
  /** The padded batch: queries × seqLen ids and attention mask. */
  ids: Int32Array;
  mask: Uint8Array;
  seqLen: number;
  /** First token of each query in the packed hidden states (attended tokens in query order). */
  offsets: number[];
  lengths: number[];
  tokens: number;
}

export function encodeQueries(model: SemanticModel, queries: readonly string[]): EncodedQueries {
  const inputIds: number[][] = [];
  const truncated: number[] = [];
  queries.forEach((q, i) => {
    const e = model.tokenizer.encode(q);
    inputIds.push(e.ids);
    if (e.truncated) truncated.push(i);
  });
  const seqLen = inputIds.reduce((m, x) => Math.max(m, x.length), 0);
  const ids = new Int32Array(queries.length * seqLen).fill(model.tokenizer.padId);
  const mask = new Uint8Array(queries.length * seqLen);
  const offsets: number[] = [];
  const lengths: number[] = [];
  let tokens = 0;
  inputIds.forEach((x, i) => {
    ids.set(x, i * seqLen);
    mask.fill(1, i * seqLen, i * seqLen + x.length);
    offsets.push(tokens);
    lengths.push(x.length);
    tokens += x.length;
  });
  return { queries: [...queries], inputIds, truncated, ids, mask, seqLen, offsets, lengths, tokens };
}

export interface ForwardOptions {
  threads?: number;
  signal?: AbortSignal;
  /** Called with the fraction of sequences done. */
  onProgress?: (fraction: number) => void;
  /** Start at this layer from `hiddenIn` (the state entering it, as captured by an earlier pass). */
  startLayer?: number;
  hiddenIn?: Float32Array;
  /** Also return the hidden state entering every layer. */
  capture?: boolean;
  /** Also return calibration statistics (Σ x_j² of every Linear's input, attention entropy); full passes only. */
  stats?: boolean;
  /** Quantize every Linear's input on the fly (see native/encoder/act_quant.h). */
  actQuant?: NativeForwardOptions['actQuant'];
}

export interface ForwardOutput {
  /** One pooled (and normalised, as the folder says) embedding per query. */
  embeddings: Float32Array[];
  layerInputs?: Float32Array[];
  tokens: number;
  sequences: number;
  stats?: NativeForwardResult['stats'];
  actQuant?: NativeActQuantStats[];
}

export class EncoderSession {
  private encoder: NativeEncoder | null;
  /** Encoder names whose weights currently differ from the checkpoint's. */
  private readonly replaced = new Set<string>();

  private constructor(readonly model: SemanticModel) {
    this.encoder = createEncoder(model);
  }

  static async open(modelDir: string): Promise<EncoderSession> {
    return new EncoderSession(await loadSemanticModel(modelDir));
  }

  static fromModel(model: SemanticModel): EncoderSession {
    return new EncoderSession(model);
  }

  private native(): NativeEncoder {
    if (!this.encoder) throw new CalibscopeError('E_BAD_ARGUMENT', 'the encoder session was closed');
    return this.encoder;
  }

  /** The encoder name for a checkpoint or encoder tensor name, or undefined when the encoder does not read it. */
  encoderName(name: string): string | undefined {
    if (this.model.weights.has(name)) return name;
    return this.model.byCheckpointName.get(name);
  }

  /** Replaces one weight (by checkpoint or encoder name) for the following passes. */
  setWeight(name: string, data: Float32Array): void {
    const n = this.encoderName(name);
    if (!n) throw new CalibscopeError('E_BAD_ARGUMENT', `the encoder does not read a tensor named '${name}'`, { tensor: name });
    const w = this.model.weights.get(n)!;
    if (data.length !== w.data.length) {
      throw new CalibscopeError('E_BAD_ARGUMENT', `replacement for '${name}' has ${data.length} values, expected ${w.data.length}`, { tensor: name });
    }
    this.native().setWeight(n, data);
    this.replaced.add(n);
  }

  /** Puts the checkpoint's own values back for one weight, or for every replaced weight. */
  restore(name?: string): void {
    const names = name === undefined ? [...this.replaced] : [this.encoderName(name) ?? name];
    for (const n of names) {
      if (!this.replaced.has(n)) continue;
      this.native().setWeight(n, this.model.weights.get(n)!.data);
      this.replaced.delete(n);
    }
  }

  encode(queries: readonly string[]): EncodedQueries {
    return encodeQueries(this.model, queries);
  }

  async forward(q: EncodedQueries, opts: ForwardOptions = {}): Promise<ForwardOutput> {
    const enc = this.native();
    const control = new Int32Array(2);
    const onAbort = () => Atomics.store(control, 0, 1);
    opts.signal?.addEventListener('abort', onAbort);
    if (opts.signal?.aborted) onAbort();
    const n = q.queries.length;
    const timer = opts.onProgress && n > 0 ? setInterval(() => opts.onProgress!(Atomics.load(control, 1) / n), 200) : null;
    try {
      const r = await enc.forward(q.ids, q.mask, {
        batch: n,
        seqLen: q.seqLen,
        threads: opts.threads ?? 0,
        startLayer: opts.startLayer ?? 0,
        hiddenIn: opts.hiddenIn,
        capture: opts.capture ?? false,
        stats: opts.stats ?? false,
        actQuant: opts.actQuant,
        control,
      });
      const H = this.model.config.hiddenSize;
      const embeddings = q.offsets.map((off, i) => poolSequence(r.hidden, off * H, q.lengths[i], H, this.model.pooling));
      opts.onProgress?.(1);
      return { embeddings, layerInputs: r.layerInputs, tokens: r.tokens, sequences: r.sequences, stats: r.stats, actQuant: r.actQuant };
    } finally {
      if (timer) clearInterval(timer);
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Last hidden states of the attended tokens (tokens × hidden), after `endLayer` layers (all by default). */
  async hiddenStates(q: EncodedQueries, endLayer?: number, threads = 0): Promise<Float32Array> {
    const r = await this.native().forward(q.ids, q.mask, { batch: q.queries.length, seqLen: q.seqLen, endLayer, threads });
    return r.hidden;
  }

  close(): void {
    this.encoder?.dispose();
    this.encoder = null;
  }
}
