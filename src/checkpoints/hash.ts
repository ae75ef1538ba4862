// The checkpoint hash that a calibration profile records (golden_checkpoint_hash): a profile is
// valid only while the checkpoint still hashes the same.
import { createHash, type Hash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { CalibscopeError, type ErrorCode } from '../util/errors.js';
import type { Checkpoint } from './checkpoint.js';

/**
 * `sha256:<64 hex digits>`, the SHA-256 of this byte stream, file after file:
 *
 *   for each file, in this order —
 *     1. config.json, if the checkpoint has one,
 *     2. the weight files, sorted by their path relative to the checkpoint folder,
 *     3. the sharded index file, if there is one —
 *   append: relative path (UTF-8, '/' as separator) · 0x00 · byte size in decimal ASCII · 0x00 ·
 *           the file's bytes.
 *
 * Contents are hashed, not timestamps, so touching a file changes nothing and editing one byte
 * changes the hash. To reproduce it in Python:
 *
 *   h = hashlib.sha256()
 *   for rel in files:
 *       data = open(os.path.join(root, rel), 'rb').read()
 *       h.update(rel.encode() + b'\0' + str(len(data)).encode() + b'\0' + data)
 *   'sha256:' + h.hexdigest()
 *
 * Files are streamed, so memory stays small whatever the checkpoint's size. The hashing runs on a
 * worker thread (hash_worker.ts): several models hash at once, and the main thread stays free for
 * the reads and writes of a calibration running meanwhile.
 */
export async function checkpointHash(ckpt: Checkpoint): Promise<string> {
  const files = hashOrder(ckpt);
  try {
    return await hashInWorker({ files });
  } catch (err) {
    // No worker here (a host that cannot start one): the same hash on this thread.
    if (err instanceof WorkerFailure) return hashFiles(files);
    throw err;
  }
}

export interface HashedFile {
  abs: string;
  rel: string;
}

/** The files in the hash's order, with their names in it. */
export function hashOrder(ckpt: Checkpoint): HashedFile[] {
  const rel = (abs: string) => path.relative(ckpt.root, abs).split(path.sep).join('/');
  const weights = ckpt.files.map((f) => ({ abs: f, rel: rel(f) })).sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
  return [
    ...(ckpt.configPath ? [{ abs: ckpt.configPath, rel: rel(ckpt.configPath) }] : []),
    ...weights,
    ...(ckpt.indexPath ? [{ abs: ckpt.indexPath, rel: rel(ckpt.indexPath) }] : []),
  ];
}

const CHUNK = 4 << 20;

/** Feeds the rest of an open file into `h` through `buf`; returns the number of bytes read. */
async function feed(h: Hash, handle: fs.promises.FileHandle, buf: Buffer): Promise<number> {
  let seen = 0;
  for (let n; (n = (await handle.read(buf, 0, buf.byteLength, null)).bytesRead) > 0; ) {
    seen += n;
    h.update(buf.subarray(0, n));
  }
  return seen;
}

/** The hash computed on this thread (the worker runs it; so does a host that cannot start one). */
export async function hashFiles(files: readonly HashedFile[]): Promise<string> {
  const h = createHash('sha256');
  const buf = Buffer.allocUnsafe(CHUNK);
  for (const f of files) {
    const cannot = (err: unknown) => new CalibscopeError('E_IO', `${f.abs}: cannot hash: ${(err as Error).message}`, { file: f.abs });
    let handle: fs.promises.FileHandle;
    try {
      handle = await fs.promises.open(f.abs, 'r');
    } catch (err) {
      throw cannot(err);
    }
    try {
      let size: number;
      let seen: number;
      try {
        size = (await handle.stat()).size;
        h.update(Buffer.from(`${f.rel}\0${size}\0`, 'utf8'));
        seen = await feed(h, handle, buf);
      } catch (err) {
        throw cannot(err);
      }
      // The size is framed before the bytes, so a file that changes while hashed would give a hash of nothing real.
      if (seen !== size) {
        throw new CalibscopeError('E_IO', `${f.abs}: changed while being hashed (${size} bytes before, ${seen} read)`, { file: f.abs });
      }
    } finally {
      await handle.close();
    }
  }
  return `sha256:${h.digest('hex')}`;
}

/** Below this size a file hashes on this thread: about as fast as starting a worker (~40 ms). */
const WORKER_MIN_BYTES = 64 << 20;

/** The SHA-256 (hex) of one file's bytes, computed on a worker thread like checkpointHash when the
 *  file is large (a profile's scales checksum: written and verified while other models
 *  calibrate). A failure keeps its errno `code` (ENOENT, EISDIR…). */
export async function sha256File(file: string): Promise<string> {
  if ((await fs.promises.stat(file)).size < WORKER_MIN_BYTES) return sha256FileHere(file);
  try {
    return await hashInWorker({ file });
  } catch (err) {
    if (err instanceof WorkerFailure) return sha256FileHere(file);
    throw err;
  }
}

/** sha256File on this thread. */
export async function sha256FileHere(file: string): Promise<string> {
  const h = createHash('sha256');
  const handle = await fs.promises.open(file, 'r');
  try {
    await feed(h, handle, Buffer.allocUnsafe(CHUNK));
  } finally {
    await handle.close();
  }
  return h.digest('hex');
}

/** What a hash worker is asked: a checkpoint's files (checkpointHash) or one file (sha256File). */
export type HashTask = { files: HashedFile[] } | { file: string };

export type HashReply =
  | { hash: string }
  | { error: { code: ErrorCode; message: string; details: Record<string, unknown> } }
  | { fsError: { code?: string; message: string } };

/** No worker could run: the caller hashes on its own thread instead. */
class WorkerFailure extends Error {}

/** Resolves with the hash, rejects with the error the worker met (a CalibscopeError, or an fs error
 *  with its errno code), or with a WorkerFailure when no worker could run. */
function hashInWorker(task: HashTask): Promise<string> {
  return new Promise((resolve, reject) => {
    let replied = false;
    let worker: Worker;
    try {
      worker = new Worker(path.join(__dirname, 'hash_worker.js'), { workerData: task });
    } catch (err) {
      reject(new WorkerFailure((err as Error).message));
      return;
    }
    worker.once('message', (m: HashReply) => {
      replied = true;
      if ('hash' in m) resolve(m.hash);
      else if ('error' in m) reject(new CalibscopeError(m.error.code, m.error.message, m.error.details));
      else reject(Object.assign(new Error(m.fsError.message), { code: m.fsError.code }));
    });
    worker.once('error', (err) => {
      if (!replied) reject(new WorkerFailure(err.message));
    });
    worker.once('exit', (code) => {
      if (!replied) reject(new WorkerFailure(`the hash worker exited with code ${code}`));
    });
  });
}
