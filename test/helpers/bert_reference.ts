// A slow BERT layer in float64, written independently of the native encoder, for checking what the
// encoder reports about its own pass (calibration statistics): from the hidden state entering a
// layer it recomputes every Linear's input and the attention probabilities.
import type { SemanticModel } from '../../src/semantic/model.js';

/** erf: its Taylor series below |x| = 2 (~1e-14), Abramowitz & Stegun 7.1.26 above (< 1.5e-7). */
export function erf(x: number): number {
  const s = Math.sign(x);
  const a = Math.abs(x);
  if (a > 6) return s;
  const t = 1 / (1 + 0.3275911 * a);
  let y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-a * a);
  if (a < 2) {
    let sum = 0;
    let term = a;
    for (let n = 0; n < 80; n++) {
      sum += term / (2 * n + 1);
      term *= (-a * a) / (n + 1);
      if (Math.abs(term) < 1e-17) break;
    }
    y = (2 / Math.sqrt(Math.PI)) * sum;
  }
  return s * y;
}

export interface LayerTrace {
  /** tokens × hidden: attention context, heads concatenated (attention.output.dense's input). */
  context: Float64Array;
  /** tokens × hidden: after the attention block's LayerNorm (intermediate.dense's input). */
  attentionOutput: Float64Array;
  /** tokens × intermediate: the activation (output.dense's input). */
  intermediate: Float64Array;
  /** tokens × hidden: the layer's output. */
  output: Float64Array;
  /** Per head: Σ over query tokens of −Σ p log p. */
  entropy: Float64Array;
}

function w(model: SemanticModel, name: string): Float32Array {
  const t = model.weights.get(name);
  if (!t) throw new Error(`no weight ${name}`);
  return t.data;
}

/** y[t][o] = Σ_i x[t][i] W[o][i] + b[o], in float64. */
function linear(x: ArrayLike<number>, T: number, inF: number, W: Float32Array, b: Float32Array, outF: number): Float64Array {
  const y = new Float64Array(T * outF);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < outF; o++) {
      let s = b[o];
      const wo = o * inF;
      const xt = t * inF;
      for (let i = 0; i < inF; i++) s += x[xt + i] * W[wo + i];
      y[t * outF + o] = s;
    }
  }
  return y;
}

function layerNorm(x: Float64Array, T: number, H: number, g: Float32Array, b: Float32Array, eps: number): void {
  for (let t = 0; t < T; t++) {
    let mean = 0;
    for (let i = 0; i < H; i++) mean += x[t * H + i];
    mean /= H;
    let v = 0;
    for (let i = 0; i < H; i++) v += (x[t * H + i] - mean) ** 2;
    const r = 1 / Math.sqrt(v / H + eps);
    for (let i = 0; i < H; i++) x[t * H + i] = (x[t * H + i] - mean) * r * g[i] + b[i];
  }
}

/**
 * Layer `l` of the model on `input` (tokens × hidden, attended tokens in batch order), with
 * sequences starting at `offsets` (and `tokens` at the end). GELU (erf) only.
 */
export function referenceLayer(model: SemanticModel, l: number, input: Float32Array, offsets: number[]): LayerTrace {
  const { hiddenSize: H, intermediateSize: I, numHeads: nh, layerNormEps: eps } = model.config;
  if (model.config.activation !== 'gelu') throw new Error('the reference layer implements GELU (erf) only');
  const T = input.length / H;
  const p = `encoder.layer.${l}.`;
  const lin = (x: ArrayLike<number>, name: string, inF: number, outF: number) => linear(x, T, inF, w(model, `${p}${name}.weight`), w(model, `${p}${name}.bias`), outF);
  const q = lin(input, 'attention.self.query', H, H);
  const k = lin(input, 'attention.self.key', H, H);
  const v = lin(input, 'attention.self.value', H, H);
  const d = H / nh;
  const context = new Float64Array(T * H);
  const entropy = new Float64Array(nh);
  for (let s = 0; s + 1 < offsets.length; s++) {
    const o = offsets[s];
    const len = offsets[s + 1] - o;
    const sc = new Float64Array(len);
    for (let h = 0; h < nh; h++) {
      for (let i = 0; i < len; i++) {
        let mx = -Infinity;
        for (let j = 0; j < len; j++) {
          let dot = 0;
          for (let c = 0; c < d; c++) dot += q[(o + i) * H + h * d + c] * k[(o + j) * H + h * d + c];
          sc[j] = dot / Math.sqrt(d);
          mx = Math.max(mx, sc[j]);
        }
        let sum = 0;
        for (let j = 0; j < len; j++) {
          sc[j] = Math.exp(sc[j] - mx);
          sum += sc[j];
        }
        let ent = 0;
        for (let j = 0; j < len; j++) {
          const pj = sc[j] / sum;
          if (pj > 0) ent -= pj * Math.log(pj);
          for (let c = 0; c < d; c++) context[(o + i) * H + h * d + c] += pj * v[(o + j) * H + h * d + c];
        }
        entropy[h] += ent;
      }
    }
  }
  const attn = lin(context, 'attention.output.dense', H, H);
  for (let i = 0; i < T * H; i++) attn[i] += input[i];
  layerNorm(attn, T, H, w(model, `${p}attention.output.LayerNorm.weight`), w(model, `${p}attention.output.LayerNorm.bias`), eps);
  const inter = lin(attn, 'intermediate.dense', H, I);
  for (let i = 0; i < inter.length; i++) inter[i] = 0.5 * inter[i] * (1 + erf(inter[i] / Math.SQRT2));
  const output = lin(inter, 'output.dense', I, H);
  for (let i = 0; i < T * H; i++) output[i] += attn[i];
  layerNorm(output, T, H, w(model, `${p}output.LayerNorm.weight`), w(model, `${p}output.LayerNorm.bias`), eps);
  return { context, attentionOutput: attn, intermediate: inter, output, entropy };
}

/** Σ_t x[t][j]² per column j, in float64. */
export function columnSquares(x: ArrayLike<number>, cols: number): Float64Array {
  const out = new Float64Array(cols);
  const T = x.length / cols;
  for (let t = 0; t < T; t++) for (let j = 0; j < cols; j++) out[j] += x[t * cols + j] * x[t * cols + j];
  return out;
}
