// Atomic file replacement: readers of `path` see either the old file or the complete new one,
// never a half-written file, even when the process dies mid-write.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/** `.<base>.tmp-<pid>-<hex>`: the pid lets removeStaleTemps tell abandoned temps from live ones. */
const TEMP_RE = /^\.(.+)\.tmp-(\d+)-([0-9a-f]+)$/;

/** A fresh temporary path beside `target` (same folder, so the final rename stays on one filesystem). */
export function tempPathFor(target: string): string {
  const dir = path.dirname(target);
  const base = path.basename(target);
  return path.join(dir, `.${base}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
}

/**
 * Flushes a folder's entry table so a rename inside it survives a power loss. Some platforms
 * (Windows) cannot open or fsync a folder; there the rename is as durable as the OS makes it.
 */
export async function fsyncDir(dir: string): Promise<void> {
  let handle: fs.promises.FileHandle | undefined;
  try {
    handle = await fs.promises.open(dir, 'r');
    await handle.sync();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EISDIR' && code !== 'EPERM' && code !== 'EINVAL' && code !== 'EBADF' && code !== 'EACCES') throw err;
  } finally {
    await handle?.close().catch(() => undefined);
  }
}

/** Writes the whole of `data` at `position`, looping because a single write may be partial. */
export async function writeFully(handle: fs.promises.FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.byteLength) {
    const { bytesWritten } = await handle.write(data, done, data.byteLength - done, position + done);
    if (bytesWritten <= 0) throw new Error(`write made no progress at byte ${position + done}`);
    done += bytesWritten;
  }
}

/** Removes `file`, ignoring a file that is already gone. */
export async function unlinkQuiet(file: string): Promise<void> {
  try {
    await fs.promises.unlink(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/**
 * Replaces `target` atomically: temp file in the same folder, fsync, rename over the target,
 * fsync the folder. On any failure the temp file is removed and the error rethrown; the target
 * is then unchanged.
 */
export async function writeFileAtomic(target: string, data: Buffer | string): Promise<void> {
  const tmp = tempPathFor(target);
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  let handle: fs.promises.FileHandle | undefined;
  try {
    handle = await fs.promises.open(tmp, 'wx');
    await writeFully(handle, bytes, 0);
    await handle.sync();
    await handle.close();
    handle = undefined;
    await fs.promises.rename(tmp, target);
    await fsyncDir(path.dirname(target));
  } catch (err) {
    await handle?.close().catch(() => undefined);
    await unlinkQuiet(tmp).catch(() => undefined);
    throw err;
  }
}

/** Whether a process with this pid exists (EPERM: it does, but belongs to someone else). */
export function pidAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/**
 * Deletes temporary files left in `dir` by writers that died before renaming them (their pid is
 * no longer alive). Returns the removed paths. A missing folder has nothing to clean.
 */
export async function removeStaleTemps(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await fs.promises.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const removed: string[] = [];
  for (const name of names) {
    const m = TEMP_RE.exec(name);
    if (!m) continue;
    const pid = Number(m[2]);
    if (!Number.isSafeInteger(pid) || pid <= 0 || pidAlive(pid)) continue;
    const file = path.join(dir, name);
    const st = await fs.promises.lstat(file).catch(() => undefined);
    if (!st || !st.isFile()) continue;
    await unlinkQuiet(file);
    removed.push(file);
  }
  return removed;
}
