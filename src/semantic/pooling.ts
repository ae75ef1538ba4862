// Pooling as the model folder says: a sentence-transformers folder's modules.json with its Pooling
// module (1_Pooling/config.json, old `pooling_mode_*_tokens` keys or the newer `"pooling_mode"`)
// and Normalize module; a bare transformer folder gets mean pooling + L2 normalisation.
import fs from 'node:fs';
import path from 'node:path';
import { CalibscopeError } from '../util/errors.js';

export type PoolingMode = 'cls' | 'max' | 'mean' | 'mean_sqrt_len' | 'weightedmean' | 'lasttoken';

export interface PoolingSpec {
  /** Concatenated in this order (sentence-transformers' order: cls, max, mean, mean_sqrt_len, weightedmean, lasttoken). */
  modes: PoolingMode[];
  normalize: boolean;
  /** Where the settings came from, for reports. */
  source: string;
}

const MODE_ORDER: PoolingMode[] = ['cls', 'max', 'mean', 'mean_sqrt_len', 'weightedmean', 'lasttoken'];
const OLD_KEYS: Record<string, PoolingMode> = {
  pooling_mode_cls_token: 'cls',
  pooling_mode_max_tokens: 'max',
  pooling_mode_mean_tokens: 'mean',
  pooling_mode_mean_sqrt_len_tokens: 'mean_sqrt_len',
  pooling_mode_weightedmean_tokens: 'weightedmean',
  pooling_mode_lasttoken: 'lasttoken',
};
const NEW_NAMES: Record<string, PoolingMode> = {
  cls: 'cls',
  cls_token: 'cls',
  max: 'max',
  max_tokens: 'max',
  mean: 'mean',
  mean_tokens: 'mean',
  mean_sqrt_len_tokens: 'mean_sqrt_len',
  mean_sqrt_len: 'mean_sqrt_len',
  weightedmean: 'weightedmean',
  weightedmean_tokens: 'weightedmean',
  lasttoken: 'lasttoken',
};

export const DEFAULT_POOLING: PoolingSpec = { modes: ['mean'], normalize: true, source: 'default (no modules.json): mean + L2 normalisation' };

function bad(file: string, reason: string): CalibscopeError {
  return new CalibscopeError('E_BAD_CHECKPOINT', `${file}: ${reason}`, { file });
}

async function readJsonFile(file: string): Promise<unknown | undefined> {
  let text: string;
  try {
    text = await fs.promises.readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw new CalibscopeError('E_IO', `${file}: ${(err as Error).message}`, { file, errno: code });
  }
  try {
    return JSON.parse(text.replace(/^\ufeff/, ''));
  } catch (err) {
    throw bad(file, `not valid JSON (${(err as Error).message})`);
  }
}

/** The pooling modes a Pooling module's config.json asks for. */
export function parsePoolingConfig(json: unknown, file: string): PoolingMode[] {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw bad(file, 'is not a JSON object');
  const cfg = json as Record<string, unknown>;
  const modes = new Set<PoolingMode>();
  if (cfg.pooling_mode !== undefined && cfg.pooling_mode !== null) {
    const list = Array.isArray(cfg.pooling_mode) ? cfg.pooling_mode : [cfg.pooling_mode];
    for (const m of list) {
      const mode = typeof m === 'string' ? NEW_NAMES[m] : undefined;
      if (!mode) throw bad(file, `pooling_mode ${JSON.stringify(m)} is not supported (supported: ${Object.keys(NEW_NAMES).join(', ')})`);
      modes.add(mode);
    }
  }
  for (const [key, mode] of Object.entries(OLD_KEYS)) {
    const v = cfg[key];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'boolean') throw bad(file, `${key} must be true or false, got ${JSON.stringify(v)}`);
    if (v) modes.add(mode);
  }
  if (modes.size === 0) throw bad(file, 'selects no pooling mode (pooling_mode or a pooling_mode_*_tokens key set to true)');
  return MODE_ORDER.filter((m) => modes.has(m));
}

/** Reads the folder's pooling settings (mean + normalise when it has no modules.json). */
export async function readPooling(modelDir: string): Promise<PoolingSpec> {
  const modulesFile = path.join(modelDir, 'modules.json');
  const modules = await readJsonFile(modulesFile);
  if (modules === undefined) return { ...DEFAULT_POOLING };
  if (!Array.isArray(modules)) throw bad(modulesFile, 'is not a JSON list of modules');
  let modes: PoolingMode[] | null = null;
  let normalize = false;
  let normalizeBeforePooling: number | undefined;
  let source = modulesFile;
  for (const [i, m] of modules.entries()) {
    if (typeof m !== 'object' || m === null) throw bad(modulesFile, `entry ${i} is not an object`);
    const { type, path: sub } = m as { type?: unknown; path?: unknown };
    if (typeof type !== 'string') throw bad(modulesFile, `entry ${i} has no type`);
    const kind = type.split('.').pop()!;
    if (kind === 'Transformer') continue;
    if (kind === 'Normalize') {
      // Normalize works on the pooled sentence embedding: before Pooling there is none.
      if (modes === null) normalizeBeforePooling ??= i;
      normalize = true;
      continue;
    }
    if (kind === 'Pooling') {
      if (typeof sub !== 'string') throw bad(modulesFile, `the Pooling module (entry ${i}) has no path`);
      const dir = path.resolve(modelDir, sub);
      const rel = path.relative(modelDir, dir);
      if (rel.startsWith('..') || path.isAbsolute(rel)) throw bad(modulesFile, `the Pooling module's path '${sub}' leaves the model folder`);
      const cfgFile = path.join(dir, 'config.json');
      const json = await readJsonFile(cfgFile);
      if (json === undefined) throw new CalibscopeError('E_NOT_FOUND', `${cfgFile}: the Pooling module's config.json is missing`, { file: cfgFile });
      modes = parsePoolingConfig(json, cfgFile);
      source = cfgFile;
      continue;
    }
    throw bad(
      modulesFile,
      `module ${i} (${type}) is not supported: calibscope's embeddings run Transformer → Pooling → Normalize only`,
    );
  }
  // Without a Pooling module sentence-transformers gives token embeddings, not one embedding per
  // text: mean pooling here would be an embedding the model never produces.
  if (modes === null) {
    throw bad(modulesFile, 'lists no Pooling module: calibscope needs Transformer → Pooling (→ Normalize) to make one embedding per query');
  }
  if (normalizeBeforePooling !== undefined) {
    throw bad(modulesFile, `the Normalize module (entry ${normalizeBeforePooling}) comes before the Pooling module`);
  }
  return { modes, normalize, source };
}

/**
 * Pools one sequence's last hidden states (`len` attended tokens × `hidden`, positions 0..len-1)
 * into its embedding, as sentence-transformers does (then L2-normalised when asked).
 */
export function poolSequence(h: Float32Array, offset: number, len: number, hidden: number, spec: PoolingSpec): Float32Array {
  const out = new Float32Array(hidden * spec.modes.length);
  let at = 0;
  const row = (t: number) => offset + t * hidden;
  for (const mode of spec.modes) {
    if (len === 0) {
      at += hidden;
      continue;
    }
    switch (mode) {
      case 'cls':
        out.set(h.subarray(row(0), row(0) + hidden), at);
        break;
      case 'lasttoken':
        out.set(h.subarray(row(len - 1), row(len - 1) + hidden), at);
        break;
      case 'max':
        for (let j = 0; j < hidden; j++) {
          let m = -Infinity;
          for (let t = 0; t < len; t++) m = Math.max(m, h[row(t) + j]);
          out[at + j] = m;
        }
        break;
      case 'mean':
      case 'mean_sqrt_len':
      case 'weightedmean': {
        // Summed in float64: the order of a float32 sum would otherwise show up at 1e-7.
        const acc = new Float64Array(hidden);
        let wsum = 0;
        for (let t = 0; t < len; t++) {
          const w = mode === 'weightedmean' ? t + 1 : 1;
          wsum += w;
          const r = row(t);
          for (let j = 0; j < hidden; j++) acc[j] += w * h[r + j];
        }
        const div = mode === 'mean_sqrt_len' ? Math.sqrt(len) : wsum;
        for (let j = 0; j < hidden; j++) out[at + j] = acc[j] / div;
        break;
      }
    }
    at += hidden;
  }
  if (spec.normalize) {
    let ss = 0;
    for (let j = 0; j < out.length; j++) ss += out[j] * out[j];
    const norm = Math.max(Math.sqrt(ss), 1e-12);
    for (let j = 0; j < out.length; j++) out[j] /= norm;
  }
  return out;
}
