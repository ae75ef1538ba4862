// A stat cache for checkpoint hashes, so that re-checking an unchanged pipeline does not re-read
// gigabytes of weights. An entry maps the exact stat of every file the hash covers — path, size,
// mtime, ctime, inode, device — to the hash. Tools can restore a file's size and mtime, but not its
// ctime, which the kernel sets on every write; a replaced file has a new inode. So any change to a
// hashed file misses the cache and is hashed again.
//
// One caveat is the one git calls "racy": a file written twice within one tick of the filesystem's
// clock keeps its ctime. Entries are therefore recorded only for files whose ctime and mtime are at
// least RACY_MARGIN_MS older than the moment they were stat'ed before hashing.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { checkpointHash } from '../checkpoints/hash.js';
import type { Checkpoint } from '../checkpoints/checkpoint.js';
import { writeFileAtomic } from '../util/atomic.js';

export const HASH_CACHE_DIR = 'hash-cache';
export const RACY_MARGIN_MS = 2000;

/** The files checkpointHash covers. */
export function hashedFiles(ckpt: Checkpoint): string[] {
  return [ckpt.configPath, ...ckpt.files, ckpt.indexPath].filter((f): f is string => f !== null);
}

export interface StatSnapshot {
  /** One comparable string for all files. */
  key: string;
  /** When the stats were taken (ms since the epoch). */
  takenMs: number;
  /** The newest mtime/ctime among the files (ms since the epoch). */
  newestChangeMs: number;
}

export async function snapshot(files: readonly string[]): Promise<StatSnapshot> {
  const takenMs = Date.now();
  let newest = 0;
  const parts = await Promise.all(
    files.map(async (f) => {
      const st = await fs.promises.stat(f, { bigint: true });
      newest = Math.max(newest, Number(st.mtimeNs / 1_000_000n), Number(st.ctimeNs / 1_000_000n));
      return `${f}\0${st.size}\0${st.mtimeNs}\0${st.ctimeNs}\0${st.ino}\0${st.dev}`;
    }),
  );
  return { key: parts.join('\n'), takenMs, newestChangeMs: newest };
}

function entryPath(cacheDir: string, ckpt: Checkpoint): string {
  const id = crypto.createHash('sha256').update(hashedFiles(ckpt).join('\0')).digest('hex').slice(0, 32);
  return path.join(cacheDir, HASH_CACHE_DIR, `${id}.json`);
}

interface Entry {
  version: 1;
  stats: string;
  hash: string;
}

async function lookup(cacheDir: string, ckpt: Checkpoint, snap: StatSnapshot): Promise<string | null> {
  try {
    const e = JSON.parse(await fs.promises.readFile(entryPath(cacheDir, ckpt), 'utf8')) as Partial<Entry>;
    if (e.version === 1 && e.stats === snap.key && typeof e.hash === 'string' && /^sha256:[0-9a-f]{64}$/.test(e.hash)) return e.hash;
  } catch {
    // missing or unreadable entry: hash the files
  }
  return null;
}

/**
 * Records `hash` for the files as they were in `before`, provided they still are (`after`) and
 * are old enough not to be racy. Best effort: a cache that cannot be written only costs a rehash.
 */
export async function rememberHash(
  cacheDir: string,
  ckpt: Checkpoint,
  hash: string,
  before: StatSnapshot,
  after: StatSnapshot,
  racyMarginMs = RACY_MARGIN_MS,
): Promise<boolean> {
  if (before.key !== after.key || before.takenMs - before.newestChangeMs < racyMarginMs) return false;
  const file = entryPath(cacheDir, ckpt);
  try {
    await fs.promises.mkdir(path.dirname(file), { recursive: true });
    await writeFileAtomic(file, JSON.stringify({ version: 1, stats: before.key, hash } satisfies Entry));
    return true;
  } catch {
    return false;
  }
}

export interface CurrentHash {
  hash: string;
  /** True when the stat cache answered without reading the weights. */
  fromCache: boolean;
}

/**
 * The checkpoint's current hash: from the stat cache in `cacheDir` when it still applies, else
 * computed and recorded when the cache can be written (a read-only cache is only read: a failed
 * write is ignored, as rememberHash ignores any).
 */
export async function currentCheckpointHash(ckpt: Checkpoint, cacheDir: string | null, racyMarginMs = RACY_MARGIN_MS): Promise<CurrentHash> {
  const files = hashedFiles(ckpt);
  const before = await snapshot(files);
  if (cacheDir) {
    const hit = await lookup(cacheDir, ckpt, before);
    if (hit) return { hash: hit, fromCache: true };
  }
  const hash = await checkpointHash(ckpt);
  if (cacheDir) await rememberHash(cacheDir, ckpt, hash, before, await snapshot(files), racyMarginMs);
  return { hash, fromCache: false };
}
