// Opens a model checkpoint in any of the layouts users hand calibscope: one .safetensors file,
// a Hugging Face model folder (model.safetensors or a sharded model.safetensors.index.json),
// the index file itself, or a sentence-transformers folder (weights at the top, or in the
// Transformer module's subfolder named by modules.json).
import fs from 'node:fs';
import path from 'node:path';
import { CalibscopeError } from '../util/errors.js';
import { MAX_HEADER_BYTES, SafetensorsFile, type TensorInfo } from './safetensors.js';

export type { TensorInfo } from './safetensors.js';

export interface Checkpoint {
  /** The model folder's name, or a lone weight file's name without its extension. */
  modelId: string;
  /** Absolute folder holding the weight files. */
  root: string;
  /** Absolute weight file paths, sorted. */
  files: string[];
  /** config.json beside the weights, when there is one. */
  configPath: string | null;
  /** The sharded index file, when the checkpoint is sharded. */
  indexPath: string | null;
  /**
   * Every tensor of the model: files in `files` order, header order within a file. For a sharded
   * checkpoint, only the tensors its index's weight_map lists (what transformers loads).
   */
  tensors: TensorInfo[];
  /**
   * Sharded checkpoints: tensors stored in a shard that the index does not list, ignored (not
   * calibrated, not in `tensor()`). Their bytes still count in the checkpoint hash, which covers
   * whole files. Empty for a single file.
   */
  unlisted: TensorInfo[];
  tensor(name: string): TensorInfo | undefined;
  /** The tensor's bytes; into `into` when it is large enough (SafetensorsFile.readTensor). */
  readTensor(info: TensorInfo, into?: Buffer): Promise<Buffer>;
  close(): Promise<void>;
}

const SINGLE = 'model.safetensors';
const PYTORCH_WEIGHTS = /\.(bin|pt|pth)$/;
const CONVERT_HINT = 'calibscope reads safetensors, so convert them first, e.g. with save_pretrained(dir, safe_serialization=True)';
const INDEX = 'model.safetensors.index.json';

interface Layout {
  modelId: string;
  root: string;
  single: string | null;
  index: string | null;
}

async function statOrNull(p: string): Promise<fs.Stats | null> {
  try {
    return await fs.promises.stat(p);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw new CalibscopeError('E_IO', `${p}: ${(err as Error).message}`, { file: p, errno: code });
  }
}

async function isFile(p: string): Promise<boolean> {
  return (await statOrNull(p))?.isFile() ?? false;
}

/** The Hugging Face hub cache's layout: <cache>/models--<org>--<name>/snapshots/<revision>/. */
const HUB_REPO = /^models--(.+)$/;

/**
 * A model folder's id: its name, or for a Hugging Face hub snapshot (whose folder is named by a
 * commit hash) the repository's, "org/name".
 */
function folderId(dir: string): string {
  const parts = dir.split(path.sep);
  const n = parts.length;
  const repo = n >= 3 && parts[n - 2] === 'snapshots' ? HUB_REPO.exec(parts[n - 3]) : null;
  if (repo) {
    const at = repo[1].indexOf('--');
    return at > 0 ? `${repo[1].slice(0, at)}/${repo[1].slice(at + 2)}` : repo[1];
  }
  return path.basename(dir) || 'model';
}

/** What a profile records as the checkpoint it was made from: the sharded index, or the weight file. */
export function checkpointLocation(ckpt: Pick<Checkpoint, 'indexPath' | 'files'>): string {
  return ckpt.indexPath ?? ckpt.files[0];
}

/**
 * Whether two checkpoint locations are the same model (not necessarily the same bytes): the same
 * path, where revisions of one Hugging Face hub repository (…/models--org--name/snapshots/<rev>/…)
 * count as one.
 */
export function sameCheckpointSource(a: string, b: string): boolean {
  const source = (p: string) => {
    const parts = path.resolve(p).split(path.sep);
    const i = parts.lastIndexOf('snapshots');
    if (i > 0 && i + 1 < parts.length && HUB_REPO.test(parts[i - 1])) parts[i + 1] = '*';
    return parts.join(path.sep);
  };
  return source(a) === source(b);
}

/** Reads a small JSON file (index, modules.json) with a size cap, as E_BAD_CHECKPOINT on any defect. */
async function readJson(file: string): Promise<unknown> {
  const st = await statOrNull(file);
  if (!st) throw new CalibscopeError('E_NOT_FOUND', `${file}: no such file`, { file });
  if (st.size > MAX_HEADER_BYTES) throw new CalibscopeError('E_BAD_CHECKPOINT', `${file}: ${st.size} bytes is too large for a JSON index`, { file });
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(await fs.promises.readFile(file));
  } catch (err) {
    if (err instanceof TypeError) throw new CalibscopeError('E_BAD_CHECKPOINT', `${file}: not valid UTF-8`, { file });
    throw new CalibscopeError('E_IO', `${file}: ${(err as Error).message}`, { file, errno: (err as NodeJS.ErrnoException).code });
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new CalibscopeError('E_BAD_CHECKPOINT', `${file}: not valid JSON (${(err as Error).message})`, { file });
  }
}

/** The Transformer module's subfolder of an older sentence-transformers folder, if modules.json names one. */
async function sentenceTransformerSubfolder(dir: string): Promise<string | null> {
  const modulesPath = path.join(dir, 'modules.json');
  if (!(await isFile(modulesPath))) return null;
  let modules: unknown;
  try {
    modules = await readJson(modulesPath);
  } catch {
    return null; // a broken modules.json only costs the fallback; the E_NOT_FOUND below says what was looked for
  }
  if (!Array.isArray(modules)) return null;
  for (const m of modules) {
    if (typeof m !== 'object' || m === null) continue;
    const { type, path: sub } = m as { type?: unknown; path?: unknown };
    if (typeof type !== 'string' || !/(^|\.)Transformer$/.test(type) || typeof sub !== 'string' || sub === '') continue;
    const abs = path.resolve(dir, sub);
    const rel = path.relative(dir, abs);
    if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) continue;
    return abs;
  }
  return null;
}

async function layoutOfFolder(dir: string, modelId: string, allowSubfolder: boolean): Promise<Layout> {
  // Same preference as transformers: the single file first, then the sharded index.
  if (await isFile(path.join(dir, SINGLE))) return { modelId, root: dir, single: path.join(dir, SINGLE), index: null };
  if (await isFile(path.join(dir, INDEX))) return { modelId, root: dir, single: null, index: path.join(dir, INDEX) };

  let names: string[] = [];
  try {
    names = (await fs.promises.readdir(dir)).sort();
  } catch (err) {
    throw new CalibscopeError('E_IO', `${dir}: cannot list folder: ${(err as Error).message}`, { file: dir });
  }
  const indexes: string[] = [];
  const weights: string[] = [];
  for (const name of names) {
    if (name.startsWith('.')) continue;
    if (name.endsWith('.safetensors.index.json') && (await isFile(path.join(dir, name)))) indexes.push(name);
    else if (name.endsWith('.safetensors') && (await isFile(path.join(dir, name)))) weights.push(name);
  }
  if (indexes.length === 1) return { modelId, root: dir, single: null, index: path.join(dir, indexes[0]) };
  if (indexes.length === 0 && weights.length === 1) return { modelId, root: dir, single: path.join(dir, weights[0]), index: null };

  if (allowSubfolder && indexes.length === 0 && weights.length === 0) {
    const sub = await sentenceTransformerSubfolder(dir);
    if (sub && (await statOrNull(sub))?.isDirectory()) return layoutOfFolder(sub, modelId, false);
  }

  let message = `${dir}: no ${SINGLE} or ${INDEX} found`;
  if (indexes.length + weights.length > 1) {
    message += ` (found ${[...indexes, ...weights].join(', ')}: pass the one to use)`;
  } else if (names.some((n) => PYTORCH_WEIGHTS.test(n))) {
    message += `; only PyTorch .bin/.pt weights are here: ${CONVERT_HINT}`;
  }
  throw new CalibscopeError('E_NOT_FOUND', message, { file: dir, lookedFor: [SINGLE, INDEX, '*.safetensors'] });
}

/**
 * A folder holding both model.safetensors and model.safetensors.index.json is read as the single
 * file (as transformers does), so its shards are neither calibrated nor hashed: returns the index
 * that is passed over, so that the CLI can say so; null otherwise.
 */
export async function shadowedIndex(pathArg: string): Promise<string | null> {
  const abs = path.resolve(pathArg);
  if (!(await statOrNull(abs))?.isDirectory()) return null;
  // The folder openCheckpoint reads (a sentence-transformers subfolder included); its errors are openCheckpoint's to report.
  const layout = await resolveLayout(abs).catch(() => null);
  if (!layout || layout.single !== path.join(layout.root, SINGLE)) return null;
  const index = path.join(layout.root, INDEX);
  return (await isFile(index)) ? index : null;
}

async function resolveLayout(abs: string): Promise<Layout> {
  const st = await statOrNull(abs);
  if (!st) throw new CalibscopeError('E_NOT_FOUND', `${abs}: no such file or folder`, { file: abs });
  if (st.isDirectory()) return layoutOfFolder(abs, folderId(abs), true);
  const dir = path.dirname(abs);
  const base = path.basename(abs);
  // PyTorch pickles (pytorch_model.bin, its sharded .bin.index.json) are not read: say so, rather
  // than failing later on a shard that is not safetensors.
  if (PYTORCH_WEIGHTS.test(base) || /\.(bin|pt|pth)\.index\.json$/.test(base)) {
    throw new CalibscopeError('E_BAD_CHECKPOINT', `${abs}: PyTorch weights, not safetensors: ${CONVERT_HINT}`, { file: abs });
  }
  if (base.endsWith('.index.json')) return { modelId: folderId(dir), root: dir, single: null, index: abs };
  if (base.endsWith('.safetensors')) {
    // "model" would name every Hugging Face model alike: use the folder for the conventional name.
    const modelId = base === SINGLE ? folderId(dir) : base.slice(0, -'.safetensors'.length) || folderId(dir);
    return { modelId, root: dir, single: abs, index: null };
  }
  throw new CalibscopeError(
    'E_BAD_CHECKPOINT',
    `${abs}: not a checkpoint: expected a .safetensors file, a .safetensors.index.json or a model folder`,
    { file: abs },
  );
}

/** Parses and checks a sharded index: returns shard (absolute path) → tensor names mapped to it. */
async function readIndex(indexPath: string, root: string): Promise<Map<string, string[]>> {
  const fail = (message: string, extra: Record<string, unknown> = {}) =>
    new CalibscopeError('E_BAD_CHECKPOINT', `${indexPath}: ${message}`, { file: indexPath, ...extra });
  const json = await readJson(indexPath);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw fail('index is not a JSON object');
  const weightMap = (json as Record<string, unknown>).weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) throw fail('index has no weight_map object');
  const shards = new Map<string, string[]>();
  for (const [tensor, shard] of Object.entries(weightMap as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard === '') throw fail(`weight_map entry for '${tensor}' is not a file name`, { tensor });
    const abs = path.resolve(root, shard);
    const rel = path.relative(root, abs);
    // Shards must live in the checkpoint folder: an index must not steer reads elsewhere.
    if (path.isAbsolute(shard) || rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) {
      throw fail(`weight_map entry for '${tensor}' points outside the checkpoint folder: '${shard}'`, { tensor });
    }
    const list = shards.get(abs);
    if (list) list.push(tensor);
    else shards.set(abs, [tensor]);
  }
  if (shards.size === 0) throw fail('weight_map is empty');
  for (const [abs, tensors] of shards) {
    if (!(await isFile(abs))) {
      throw fail(`shard ${path.relative(root, abs)} (holding '${tensors[0]}' and ${tensors.length - 1} more) does not exist at ${abs}`, {
        shard: abs,
        tensor: tensors[0],
      });
    }
  }
  return shards;
}

/**
 * Opens a checkpoint. Errors: E_NOT_FOUND for a missing path or a folder without safetensors
 * weights; E_BAD_CHECKPOINT for a malformed file or index, a missing shard, a tensor missing from
 * its shard, or a tensor name present in two shards. Tensors in a shard that the index does not
 * list are left out of `tensors` (see `unlisted`).
 */
export async function openCheckpoint(pathArg: string): Promise<Checkpoint> {
  const layout = await resolveLayout(path.resolve(pathArg));
  const shardTensors = layout.index ? await readIndex(layout.index, layout.root) : null;
  const files = layout.index ? [...shardTensors!.keys()].sort() : [layout.single!];

  const opened: SafetensorsFile[] = [];
  try {
    for (const f of files) opened.push(await SafetensorsFile.open(f));

    const byName = new Map<string, TensorInfo>();
    const tensors: TensorInfo[] = [];
    const unlisted: TensorInfo[] = [];
    const listed = shardTensors ? new Set([...shardTensors].flatMap(([file, names]) => names.map((n) => `${file}\0${n}`))) : null;
    for (const sf of opened) {
      for (const t of sf.tensors) {
        const prior = byName.get(t.name);
        // Two tensors of one name stay an error even when the index picks one: which is meant is unclear.
        if (prior) {
          throw new CalibscopeError(
            'E_BAD_CHECKPOINT',
            `tensor '${t.name}' appears in both ${prior.file} and ${t.file}`,
            { file: t.file, tensor: t.name, otherFile: prior.file },
          );
        }
        byName.set(t.name, t);
        if (listed && !listed.has(`${t.file}\0${t.name}`)) unlisted.push(t);
        else tensors.push(t);
      }
    }
    for (const t of unlisted) byName.delete(t.name);
    if (shardTensors) {
      for (const [file, names] of shardTensors) {
        for (const name of names) {
          if (byName.get(name)?.file !== file) {
            throw new CalibscopeError(
              'E_BAD_CHECKPOINT',
              `${layout.index}: maps tensor '${name}' to ${path.relative(layout.root, file)}, which does not contain it`,
              { file, tensor: name, index: layout.index },
            );
          }
        }
      }
    }

    const configCandidate = path.join(layout.root, 'config.json');
    const configPath = (await isFile(configCandidate)) ? configCandidate : null;
    const byFile = new Map(opened.map((sf) => [sf.path, sf]));

    return {
      modelId: layout.modelId,
      root: layout.root,
      files,
      configPath,
      indexPath: layout.index,
      tensors,
      unlisted,
      tensor: (name) => byName.get(name),
      readTensor: async (info, into) => {
        const sf = byFile.get(info.file);
        if (!sf) {
          throw new CalibscopeError('E_BAD_ARGUMENT', `tensor '${info.name}' is from ${info.file}, which is not part of this checkpoint`, {
            file: info.file,
            tensor: info.name,
          });
        }
        return sf.readTensor(info, into);
      },
      close: async () => {
        await Promise.all(opened.map((sf) => sf.close()));
      },
    };
  } catch (err) {
    await Promise.all(opened.map((sf) => sf.close().catch(() => undefined)));
    throw err;
  }
}
