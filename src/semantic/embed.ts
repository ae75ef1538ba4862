// embed(): a model folder's embeddings of a list of queries, with the checkpoint's weights or with
// some of them replaced (e.g. by their quantize-dequantized values).
import { checkQueries } from './queries.js';
import { EncoderSession } from './session.js';

export interface EmbeddingRecord {
  query: string;
  input_ids: number[];
  embedding: Float32Array;
  /** The query had more word pieces than the model takes: it was cut at the model's limit. */
  truncated: boolean;
}

export interface EmbedOptions {
  /** Weights to use instead of the checkpoint's, by checkpoint (or encoder) tensor name. */
  weights?: ReadonlyMap<string, Float32Array> | Readonly<Record<string, Float32Array>>;
  threads?: number;
  signal?: AbortSignal;
  onProgress?: (fraction: number) => void;
}

export interface EmbedResult {
  modelId: string;
  /** The model's limit in tokens (special tokens included). */
  maxLength: number;
  embeddings: EmbeddingRecord[];
}

export async function embedWithInfo(modelDir: string, queries: readonly string[], opts: EmbedOptions = {}): Promise<EmbedResult> {
  checkQueries(queries);
  const session = await EncoderSession.open(modelDir);
  try {
    const entries = opts.weights instanceof Map ? [...opts.weights.entries()] : Object.entries(opts.weights ?? {});
    for (const [name, data] of entries) session.setWeight(name, data);
    const q = session.encode(queries);
    const { embeddings } = await session.forward(q, { threads: opts.threads, signal: opts.signal, onProgress: opts.onProgress });
    const truncated = new Set(q.truncated);
    return {
      modelId: session.model.modelId,
      maxLength: session.model.tokenizer.maxLength,
      embeddings: q.queries.map((query, i) => ({ query, input_ids: q.inputIds[i], embedding: embeddings[i], truncated: truncated.has(i) })),
    };
  } finally {
    session.close();
  }
}

/** Embeds the queries: one record per query, in order. */
export async function embed(modelDir: string, queries: readonly string[], opts: EmbedOptions = {}): Promise<EmbeddingRecord[]> {
  return (await embedWithInfo(modelDir, queries, opts)).embeddings;
}
