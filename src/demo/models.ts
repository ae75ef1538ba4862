// The 12 models of the demo pipeline: the shapes of public BERT-family embedding models (from
// their published config.json files), and a tiny version of each with the same structure.
import { CalibscopeError } from '../util/errors.js';

export type DemoSize = 'tiny' | 'full';
export const DEMO_SIZES: readonly DemoSize[] = ['tiny', 'full'];

export interface BertShape {
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  intermediateSize: number;
  maxPositions: number;
  typeVocabSize: number;
}

export interface DemoModelSpec {
  /** The pipeline id and the folder name. */
  id: string;
  /** The public model whose shapes (full) or structure (tiny) this one has. */
  source: string;
  shape: BertShape;
  /** Hugging Face folder, or a sentence-transformers folder (modules.json, mean pooling, Normalize). */
  layout: 'hf' | 'sentence-transformers';
  /** sentence_bert_config.json's max_seq_length (sentence-transformers layout only). */
  maxSeqLength?: number;
}

interface Row {
  source: string;
  vocab: number;
  hidden: number;
  layers: number;
  heads: number;
  intermediate: number;
  layout: DemoModelSpec['layout'];
  maxSeqLength?: number;
}

// ../shared/reference/embedding-model-shapes.md, in that order. The sentence-transformers layout
// goes to the models that ship with mean pooling and a Normalize module.
const TABLE: readonly Row[] = [
  { source: 'sentence-transformers/all-MiniLM-L6-v2', vocab: 30522, hidden: 384, layers: 6, heads: 12, intermediate: 1536, layout: 'sentence-transformers', maxSeqLength: 256 },
  { source: 'sentence-transformers/all-MiniLM-L12-v2', vocab: 30522, hidden: 384, layers: 12, heads: 12, intermediate: 1536, layout: 'sentence-transformers', maxSeqLength: 256 },
  { source: 'BAAI/bge-small-en-v1.5', vocab: 30522, hidden: 384, layers: 12, heads: 12, intermediate: 1536, layout: 'hf' },
  { source: 'intfloat/e5-small-v2', vocab: 30522, hidden: 384, layers: 12, heads: 12, intermediate: 1536, layout: 'hf' },
  { source: 'thenlper/gte-small', vocab: 30522, hidden: 384, layers: 12, heads: 12, intermediate: 1536, layout: 'sentence-transformers', maxSeqLength: 512 },
  { source: 'intfloat/multilingual-e5-small', vocab: 250037, hidden: 384, layers: 12, heads: 12, intermediate: 1536, layout: 'hf' },
  { source: 'BAAI/bge-base-en-v1.5', vocab: 30522, hidden: 768, layers: 12, heads: 12, intermediate: 3072, layout: 'hf' },
  { source: 'intfloat/e5-base-v2', vocab: 30522, hidden: 768, layers: 12, heads: 12, intermediate: 3072, layout: 'hf' },
  { source: 'thenlper/gte-base', vocab: 30522, hidden: 768, layers: 12, heads: 12, intermediate: 3072, layout: 'sentence-transformers', maxSeqLength: 512 },
  { source: 'BAAI/bge-large-en-v1.5', vocab: 30522, hidden: 1024, layers: 24, heads: 16, intermediate: 4096, layout: 'hf' },
  { source: 'intfloat/e5-large-v2', vocab: 30522, hidden: 1024, layers: 24, heads: 16, intermediate: 4096, layout: 'hf' },
  { source: 'thenlper/gte-large', vocab: 30522, hidden: 1024, layers: 24, heads: 16, intermediate: 4096, layout: 'sentence-transformers', maxSeqLength: 512 },
];

/** Tiny vocabularies: room for the project's word pieces; the multilingual one stays the largest. */
export const TINY_VOCAB = 3072;
export const TINY_MULTILINGUAL_VOCAB = 8192;
const TINY_MAX_POSITIONS = 128;

function tinyShape(r: Row): BertShape {
  // A quarter of the width with the same heads (head size 8 or 16), a quarter of the depth
  // (at least 2 layers), and the intermediate/hidden ratio of 4 kept.
  const hidden = r.hidden / 4;
  return {
    vocabSize: r.vocab > 100_000 ? TINY_MULTILINGUAL_VOCAB : TINY_VOCAB,
    hiddenSize: hidden,
    numLayers: Math.max(2, Math.ceil(r.layers / 4)),
    numHeads: r.heads,
    intermediateSize: (r.intermediate / r.hidden) * hidden,
    maxPositions: TINY_MAX_POSITIONS,
    typeVocabSize: 2,
  };
}

export function demoModels(size: DemoSize): DemoModelSpec[] {
  if (size !== 'tiny' && size !== 'full') {
    throw new CalibscopeError('E_BAD_ARGUMENT', `unknown demo size "${String(size)}": expected tiny or full`);
  }
  return TABLE.map((r) => {
    const name = r.source.split('/')[1]!;
    const shape: BertShape =
      size === 'full'
        ? { vocabSize: r.vocab, hiddenSize: r.hidden, numLayers: r.layers, numHeads: r.heads, intermediateSize: r.intermediate, maxPositions: 512, typeVocabSize: 2 }
        : tinyShape(r);
    const spec: DemoModelSpec = { id: size === 'full' ? name : `${name}-tiny`, source: r.source, shape, layout: r.layout };
    if (r.maxSeqLength !== undefined) spec.maxSeqLength = Math.min(r.maxSeqLength, shape.maxPositions);
    return spec;
  });
}

export interface TensorShape {
  name: string;
  shape: number[];
}

/** Every tensor of Hugging Face's BertModel (with pooler), sorted by name as save_pretrained writes them. */
export function bertTensors(s: BertShape): TensorShape[] {
  const H = s.hiddenSize;
  const I = s.intermediateSize;
  const out: TensorShape[] = [
    { name: 'embeddings.word_embeddings.weight', shape: [s.vocabSize, H] },
    { name: 'embeddings.position_embeddings.weight', shape: [s.maxPositions, H] },
    { name: 'embeddings.token_type_embeddings.weight', shape: [s.typeVocabSize, H] },
    { name: 'embeddings.LayerNorm.weight', shape: [H] },
    { name: 'embeddings.LayerNorm.bias', shape: [H] },
  ];
  for (let l = 0; l < s.numLayers; l++) {
    const p = `encoder.layer.${l}.`;
    for (const m of ['query', 'key', 'value']) {
      out.push({ name: `${p}attention.self.${m}.weight`, shape: [H, H] }, { name: `${p}attention.self.${m}.bias`, shape: [H] });
    }
    out.push(
      { name: `${p}attention.output.dense.weight`, shape: [H, H] },
      { name: `${p}attention.output.dense.bias`, shape: [H] },
      { name: `${p}attention.output.LayerNorm.weight`, shape: [H] },
      { name: `${p}attention.output.LayerNorm.bias`, shape: [H] },
      { name: `${p}intermediate.dense.weight`, shape: [I, H] },
      { name: `${p}intermediate.dense.bias`, shape: [I] },
      { name: `${p}output.dense.weight`, shape: [H, I] },
      { name: `${p}output.dense.bias`, shape: [H] },
      { name: `${p}output.LayerNorm.weight`, shape: [H] },
      { name: `${p}output.LayerNorm.bias`, shape: [H] },
    );
  }
  out.push({ name: 'pooler.dense.weight', shape: [H, H] }, { name: 'pooler.dense.bias', shape: [H] });
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export function countParameters(s: BertShape): number {
  return bertTensors(s).reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
}

/** config.json as transformers writes it for a BertModel in float16. */
export function bertConfigJson(s: BertShape): Record<string, unknown> {
  return {
    architectures: ['BertModel'],
    attention_probs_dropout_prob: 0.1,
    classifier_dropout: null,
    hidden_act: 'gelu',
    hidden_dropout_prob: 0.1,
    hidden_size: s.hiddenSize,
    initializer_range: 0.02,
    intermediate_size: s.intermediateSize,
    layer_norm_eps: 1e-12,
    max_position_embeddings: s.maxPositions,
    model_type: 'bert',
    num_attention_heads: s.numHeads,
    num_hidden_layers: s.numLayers,
    pad_token_id: 0,
    position_embedding_type: 'absolute',
    torch_dtype: 'float16',
    type_vocab_size: s.typeVocabSize,
    use_cache: true,
    vocab_size: s.vocabSize,
  };
}
