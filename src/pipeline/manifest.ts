// pipeline.json: the models of an embedding pipeline, each with its own id and optional settings.
//   { "models": [ { "id", "path", "format"?, "include"?, "exclude"?, "block_sizes"?, "block_policy"?,
//                   "bits_tolerance"?, "search"?, "allow_nonfinite"?, "mode"? } ] }
// Paths are relative to the manifest's folder. Everything is checked before any work starts, so a
// bad manifest costs nothing and leaves nothing behind. See docs/pipeline.md.
import fs from 'node:fs';
import path from 'node:path';
import { makeConfig, type ConfigInput } from '../calibration/config.js';
import type { CalibrationConfig } from '../calibration/types.js';
import { safeModelId } from '../profiles/paths.js';
import { CalibscopeError, asCalibscopeError } from '../util/errors.js';

export interface PipelineEntry {
  id: string;
  /** Absolute path of the checkpoint. */
  path: string;
  format?: string;
  include?: string[];
  exclude?: string[];
  block_sizes?: number[];
  block_policy?: string;
  bits_tolerance?: number;
  search?: string;
  allow_nonfinite?: boolean;
  /** static | activation-aware | entropy-aware (docs/modes.md). */
  mode?: string;
}

export interface PipelineManifest {
  file: string;
  models: PipelineEntry[];
}

export interface ResolvedModel {
  entry: PipelineEntry;
  config: CalibrationConfig;
}

const MODEL_KEYS = ['id', 'path', 'format', 'include', 'exclude', 'block_sizes', 'block_policy', 'bits_tolerance', 'search', 'allow_nonfinite', 'mode'];

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return d[a.length][b.length];
}

/** The known key an unknown one is probably a typo of (other unknown keys are free-form notes). */
function typoOf(key: string): string | undefined {
  const k = key.toLowerCase().replace(/[-\s]/g, '_');
  return MODEL_KEYS.find((m) => m === k || editDistance(m, k) <= (m.length <= 4 ? 1 : 2) || m.replace(/_/g, '') === k.replace(/_/g, ''));
}
const MAX_MANIFEST_BYTES = 16 << 20;

/**
 * What a cache folder name is on the strictest file system a cache may live on or be copied to:
 * macOS and Windows compare names without case, and Windows drops trailing dots ("bge." is "bge").
 * safeModelId leaves only ASCII letters, digits, '.', '_' and '-', so no other folding applies.
 */
function folderKey(folder: string): string {
  return folder.toLowerCase().replace(/\.+$/, '');
}

function fail(file: string, message: string, extra: Record<string, unknown> = {}): CalibscopeError {
  return new CalibscopeError('E_BAD_ARGUMENT', `${file}: ${message}`, { file, ...extra });
}

function stringList(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((s) => typeof s === 'string');
}

/**
 * Reads and checks a manifest. Errors name the file and the model: E_NOT_FOUND for a missing
 * manifest or model path, E_BAD_ARGUMENT for bad JSON, a bad entry or a repeated id.
 */
export async function loadManifest(fileArg: string): Promise<PipelineManifest> {
  const file = path.resolve(fileArg);
  let text: string;
  try {
    const st = await fs.promises.stat(file);
    if (!st.isFile()) throw fail(file, 'is not a file');
    if (st.size > MAX_MANIFEST_BYTES) throw fail(file, `${st.size} bytes is too large for a pipeline manifest`);
    text = new TextDecoder('utf-8', { fatal: true }).decode(await fs.promises.readFile(file));
  } catch (err) {
    if (err instanceof CalibscopeError) throw err;
    if (err instanceof TypeError) throw fail(file, 'not valid UTF-8');
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new CalibscopeError('E_NOT_FOUND', `${file}: no such pipeline manifest`, { file });
    throw new CalibscopeError('E_IO', `${file}: ${(err as Error).message}`, { file, errno: code });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw fail(file, `not valid JSON (${(err as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw fail(file, 'must be a JSON object with a "models" array');
  const models = (json as Record<string, unknown>).models;
  if (!Array.isArray(models)) throw fail(file, 'must have a "models" array');
  if (models.length === 0) throw fail(file, '"models" is empty');

  const root = path.dirname(file);
  const out: PipelineEntry[] = [];
  const byId = new Map<string, number>();
  const byFolder = new Map<string, { id: string; folder: string }>();
  for (let i = 0; i < models.length; i++) {
    const m = models[i] as Record<string, unknown>;
    const where = `models[${i}]`;
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw fail(file, `${where} is not an object`);
    const id = m.id;
    if (typeof id !== 'string' || id.trim() === '' || id.length > 200) throw fail(file, `${where}: "id" must be a non-empty string of at most 200 characters`);
    const named = `${where} ('${id}')`;
    for (const k of Object.keys(m)) {
      const meant = MODEL_KEYS.includes(k) ? undefined : typoOf(k);
      // A misspelt setting must not silently fall back to the default; other keys are notes.
      if (meant !== undefined) throw fail(file, `${named}: unknown key "${k}" (did you mean "${meant}"?)`, { model: id });
    }
    // The backend belongs to the machine that runs the pipeline, not to a model: a manifest moves
    // between machines, and a "cuda" in it would fail on one without a GPU.
    if (m.backend !== undefined) throw fail(file, `${named}: "backend" is chosen per run (calibrate --backend), not per model`, { model: id });
    if (byId.has(id)) throw fail(file, `${named}: id '${id}' is repeated (first at models[${byId.get(id)}])`, { model: id });
    byId.set(id, i);
    const folder = safeModelId(id);
    const prior = byFolder.get(folderKey(folder));
    if (prior !== undefined) {
      const how =
        prior.folder === folder
          ? `would share the cache folder '${folder}'`
          : prior.folder.toLowerCase() === folder.toLowerCase()
            ? `name the cache folders '${prior.folder}' and '${folder}', which differ only in case: one folder on case-insensitive file systems (macOS, Windows)`
            : `name the cache folders '${prior.folder}' and '${folder}', which are one folder on Windows (it drops trailing dots` +
              (prior.folder.replace(/\.+$/, '') === folder.replace(/\.+$/, '') ? ')' : ', and compares names without case, as macOS does)');
      throw fail(file, `${named}: ids '${prior.id}' and '${id}' ${how}; give them distinct ids`, { model: id, ids: [prior.id, id] });
    }
    byFolder.set(folderKey(folder), { id, folder });
    if (typeof m.path !== 'string' || m.path === '') throw fail(file, `${named}: "path" must be a non-empty string`, { model: id });
    const abs = path.resolve(root, m.path);
    if (!fs.existsSync(abs)) {
      throw new CalibscopeError('E_NOT_FOUND', `${file}: ${named}: model path ${m.path} does not exist (${abs})`, { file, model: id, path: abs });
    }
    const entry: PipelineEntry = { id, path: abs };
    if (m.format !== undefined) {
      if (typeof m.format !== 'string') throw fail(file, `${named}: "format" must be a string`, { model: id });
      entry.format = m.format;
    }
    for (const k of ['include', 'exclude'] as const) {
      if (m[k] === undefined) continue;
      if (!stringList(m[k])) throw fail(file, `${named}: "${k}" must be an array of name patterns`, { model: id });
      entry[k] = m[k] as string[];
    }
    if (m.block_sizes !== undefined) {
      const b = m.block_sizes;
      if (!Array.isArray(b) || b.length === 0 || !b.every((x) => Number.isSafeInteger(x) && (x as number) > 0)) {
        throw new CalibscopeError('E_BAD_BLOCK_SIZE', `${file}: ${named}: "block_sizes" must be an array of positive integers`, { file, model: id });
      }
      entry.block_sizes = b as number[];
    }
    for (const k of ['block_policy', 'search', 'mode'] as const) {
      if (m[k] === undefined) continue;
      if (typeof m[k] !== 'string') throw fail(file, `${named}: "${k}" must be a string`, { model: id });
      entry[k] = m[k] as string;
    }
    if (m.bits_tolerance !== undefined) {
      if (typeof m.bits_tolerance !== 'number') throw fail(file, `${named}: "bits_tolerance" must be a number`, { model: id });
      entry.bits_tolerance = m.bits_tolerance;
    }
    if (m.allow_nonfinite !== undefined) {
      if (typeof m.allow_nonfinite !== 'boolean') throw fail(file, `${named}: "allow_nonfinite" must be true or false`, { model: id });
      entry.allow_nonfinite = m.allow_nonfinite;
    }
    out.push(entry);
  }
  return { file, models: out };
}

/**
 * Each model's complete config: its own settings over the command line's. A model without a
 * format takes `defaults.format`. Errors (an unknown format, a block size the format does not
 * allow) name the manifest and the model.
 */
export function resolveModels(manifest: PipelineManifest, defaults: Partial<ConfigInput>): ResolvedModel[] {
  return manifest.models.map((entry, i) => {
    const format = entry.format ?? defaults.format;
    if (format === undefined) {
      throw new CalibscopeError('E_BAD_FORMAT', `${manifest.file}: models[${i}] ('${entry.id}') has no "format" and no --format was given`, {
        file: manifest.file,
        model: entry.id,
      });
    }
    try {
      const config = makeConfig({
        ...defaults,
        format,
        include: entry.include ?? defaults.include,
        exclude: entry.exclude ?? defaults.exclude,
        block_sizes: entry.block_sizes ?? (entry.format === undefined ? defaults.block_sizes : undefined),
        block_policy: entry.block_policy ?? defaults.block_policy,
        bits_tolerance: entry.bits_tolerance ?? defaults.bits_tolerance,
        search: entry.search ?? defaults.search,
        allow_nonfinite: entry.allow_nonfinite ?? defaults.allow_nonfinite,
        mode: entry.mode ?? defaults.mode,
      });
      return { entry, config };
    } catch (err) {
      const e = asCalibscopeError(err);
      throw new CalibscopeError(e.code, `${manifest.file}: models[${i}] ('${entry.id}'): ${e.message}`, { ...e.details, file: manifest.file, model: entry.id });
    }
  });
}
