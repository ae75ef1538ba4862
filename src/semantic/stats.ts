// The numbers semantic validation reports, all in float64: Pearson correlation and cosine
// similarity of two embedding vectors, and retrieval agreement between two embeddings of one query set.
import { CalibscopeError } from '../util/errors.js';

function checkPair(a: ArrayLike<number>, b: ArrayLike<number>): void {
  if (a.length !== b.length) throw new CalibscopeError('E_BAD_ARGUMENT', `vectors of different lengths: ${a.length} vs ${b.length}`);
  if (a.length === 0) throw new CalibscopeError('E_BAD_ARGUMENT', 'empty vectors have no correlation');
}

/**
 * Pearson correlation of two vectors (their elements as paired samples). A constant vector has no
 * defined correlation: two identical vectors give 1, otherwise 0 (no linear relation can be shown).
 */
export function pearson(a: ArrayLike<number>, b: ArrayLike<number>): number {
  checkPair(a, b);
  const n = a.length;
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < n; i++) {
    ma += a[i];
    mb += b[i];
  }
  ma /= n;
  mb /= n;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < n; i++) {
    const da = a[i] - ma;
    const db = b[i] - mb;
    sab += da * db;
    saa += da * da;
    sbb += db * db;
  }
  if (saa === 0 || sbb === 0) {
    for (let i = 0; i < n; i++) if (a[i] !== b[i]) return 0;
    return 1;
  }
  // Clamped: rounding can put |r| a hair above 1.
  return Math.max(-1, Math.min(1, sab / Math.sqrt(saa * sbb)));
}

/** Cosine similarity; 1 for two zero vectors, 0 when only one is zero. */
export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  checkPair(a, b);
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  if (aa === 0 || bb === 0) return aa === bb ? 1 : 0;
  return Math.max(-1, Math.min(1, ab / Math.sqrt(aa * bb)));
}

/**
 * The k nearest neighbours of every vector within the set, by cosine similarity, itself excluded;
 * ties go to the lower index, so the lists are deterministic.
 */
export function topNeighbours(vectors: readonly ArrayLike<number>[], k: number): number[][] {
  const n = vectors.length;
  const kk = Math.min(k, n - 1);
  const norms = vectors.map((v) => {
    let s = 0;
    for (let i = 0; i < v.length; i++) s += v[i] * v[i];
    return Math.sqrt(s);
  });
  const out: number[][] = [];
  const sims = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      if (j === i) continue;
      const a = vectors[i];
      const b = vectors[j];
      let d = 0;
      for (let t = 0; t < a.length; t++) d += a[t] * b[t];
      const den = norms[i] * norms[j];
      sims[j] = den > 0 ? d / den : 0;
    }
    const idx: number[] = [];
    for (let j = 0; j < n; j++) if (j !== i) idx.push(j);
    idx.sort((x, y) => sims[y] - sims[x] || x - y);
    out.push(idx.slice(0, kk));
  }
  return out;
}

/**
 * Retrieval agreement: for each query, the share of its top-k neighbours within the set (FP16
 * embeddings) that are also among its top-k with the quantized embeddings; averaged over the
 * queries. 1 means every query retrieves the same neighbours. k is capped at n − 1; with fewer
 * than two queries there are no neighbours to compare, and the agreement is null (not measured).
 */
export function retrievalAgreement(reference: readonly ArrayLike<number>[], candidate: readonly ArrayLike<number>[], k = 10): number | null {
  if (reference.length !== candidate.length) {
    throw new CalibscopeError('E_BAD_ARGUMENT', `embedding sets of different sizes: ${reference.length} vs ${candidate.length}`);
  }
  const n = reference.length;
  if (n < 2) return null;
  const a = topNeighbours(reference, k);
  const b = topNeighbours(candidate, k);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const set = new Set(a[i]);
    let hit = 0;
    for (const j of b[i]) if (set.has(j)) hit++;
    sum += a[i].length > 0 ? hit / a[i].length : 1;
  }
  return sum / n;
}

export interface PairStats {
  perQuery: number[];
  mean: number;
  min: number;
  /** Index of the query with the least correlation. */
  argmin: number;
  meanCosine: number;
}

/** Per-query Pearson correlation between two embedding sets, with mean, min and mean cosine. */
export function compareEmbeddings(reference: readonly ArrayLike<number>[], candidate: readonly ArrayLike<number>[]): PairStats {
  if (reference.length !== candidate.length || reference.length === 0) {
    throw new CalibscopeError('E_BAD_ARGUMENT', `need two equal, non-empty embedding sets (got ${reference.length} and ${candidate.length})`);
  }
  const perQuery = reference.map((r, i) => pearson(r, candidate[i]));
  let sum = 0;
  let min = Infinity;
  let argmin = 0;
  let cos = 0;
  perQuery.forEach((c, i) => {
    sum += c;
    if (c < min) {
      min = c;
      argmin = i;
    }
    cos += cosine(reference[i], candidate[i]);
  });
  return { perQuery, mean: sum / perQuery.length, min, argmin, meanCosine: cos / perQuery.length };
}
