// A lock file per profile folder, so two calibscope processes working on the same profile take
// turns instead of calibrating twice and racing on the final rename. Node has no flock(), so the
// lock is a file created atomically with link() (it appears complete or not at all), holding the
// owner's pid and host. A lock whose owner died (killed, power loss) is broken by the next
// process: same host and a pid that no longer exists.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pidAlive, tempPathFor, unlinkQuiet } from '../util/atomic.js';
import { CalibscopeError } from '../util/errors.js';

export interface LockOwner {
  pid: number;
  host: string;
  time: string;
}

export interface AcquireOptions {
  signal?: AbortSignal;
  /** Called once when the lock is held by another live process and this one starts waiting. */
  onWait?: (owner: LockOwner) => void;
  /** Give up after this long (E_IO); default: wait as long as the owner lives. */
  timeoutMs?: number;
}

export type ReleaseLock = () => Promise<void>;

/** `<parent>/.<name>.lock` for the folder `<parent>/<name>`. */
export function lockPathFor(dir: string): string {
  const abs = path.resolve(dir);
  return path.join(path.dirname(abs), `.${path.basename(abs)}.lock`);
}


function parseOwner(text: string): LockOwner | null {
  try {
    const o = JSON.parse(text) as Partial<LockOwner>;
    if (typeof o.pid === 'number' && Number.isSafeInteger(o.pid) && typeof o.host === 'string') {
      return { pid: o.pid, host: o.host, time: String(o.time ?? '') };
    }
  } catch {
    // fall through: not a lock this code wrote
  }
  return null;
}

/** The content of every lock this process holds now (each names this process and a random nonce). */
const heldByUs = new Set<string>();
/** When this process started (ms since the epoch). */
const STARTED_MS = Date.now() - process.uptime() * 1000;

/** A lock whose owner is certainly gone. A lock from another host is never judged dead. */
function ownerDead(owner: LockOwner | null, text: string, mtimeMs: number): boolean {
  // link() makes a lock appear complete, so unreadable content is not a write in progress.
  if (!owner) return Date.now() - mtimeMs > 10_000;
  if (owner.host !== os.hostname()) return false;
  // Our own pid on a lock we do not hold, written before we started: a killed earlier process
  // whose pid we were given again (containers number their processes the same way on every run).
  // pidAlive would call it alive, and this process would wait for itself forever.
  if (owner.pid === process.pid) return !heldByUs.has(text) && mtimeMs < STARTED_MS;
  return !pidAlive(owner.pid);
}

/** A lock file's content and modification time; null when it cannot be read (gone). */
async function readLock(lockPath: string): Promise<{ text: string; mtimeMs: number } | null> {
  try {
    const text = await fs.promises.readFile(lockPath, 'utf8');
    return { text, mtimeMs: (await fs.promises.stat(lockPath)).mtimeMs };
  } catch {
    return null;
  }
}

/** Whether the lock at `lockPath` is held by a live process (this one included), or one on another host. */
export async function lockHeld(lockPath: string): Promise<boolean> {
  const lock = await readLock(lockPath);
  return lock !== null && !ownerDead(parseOwner(lock.text), lock.text, lock.mtimeMs);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new CalibscopeError('E_CANCELLED', 'cancelled while waiting for a lock'));
      return;
    }
    const done = () => {
      clearTimeout(t);
      signal?.removeEventListener('abort', onAbort);
    };
    const onAbort = () => {
      done();
      reject(new CalibscopeError('E_CANCELLED', 'cancelled while waiting for a lock'));
    };
    const t = setTimeout(() => {
      done();
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Creates the lock file with our content in one step, or returns false when it exists. */
async function tryCreate(lockPath: string, content: string): Promise<boolean> {
  const tmp = tempPathFor(lockPath);
  try {
    await fs.promises.writeFile(tmp, content, { flag: 'wx' });
  } catch (err) {
    // The folder can vanish between a caller's mkdir and here (a failed run removes its empty
    // model folder): create it again once.
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    await fs.promises.mkdir(path.dirname(lockPath), { recursive: true });
    await fs.promises.writeFile(tmp, content, { flag: 'wx' });
  }
  try {
    await fs.promises.link(tmp, lockPath);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    await unlinkQuiet(tmp).catch(() => undefined);
  }
}

/**
 * Removes a dead owner's lock. The lock is first renamed to a private name, so of several
 * processes breaking it at once exactly one wins; if what it moved turns out not to be the dead
 * lock it inspected (a live process re-took the lock in between), it is linked back.
 */
async function breakStale(lockPath: string, seen: string): Promise<void> {
  const moved = `${lockPath}.stale-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  try {
    await fs.promises.rename(lockPath, moved);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  const got = await fs.promises.readFile(moved, 'utf8').catch(() => null);
  if (got !== null && got !== seen) await fs.promises.link(moved, lockPath).catch(() => undefined);
  await unlinkQuiet(moved).catch(() => undefined);
}

/** Removes the lock at `lockPath` if its owner is certainly dead; returns whether it did. */
export async function removeDeadLock(lockPath: string): Promise<boolean> {
  const lock = await readLock(lockPath);
  if (lock === null || !ownerDead(parseOwner(lock.text), lock.text, lock.mtimeMs)) return false;
  await breakStale(lockPath, lock.text);
  return true;
}

/**
 * Takes the lock at `lockPath` (its folder must exist), waiting while a live process holds it.
 * Returns the function that releases it. Errors: E_CANCELLED when `signal` aborts the wait,
 * E_IO when the folder is not writable or the wait times out.
 */
export async function acquireLock(lockPath: string, opts: AcquireOptions = {}): Promise<ReleaseLock> {
  // The nonce tells this lock from any other this process takes (heldByUs).
  const mine = JSON.stringify({ pid: process.pid, host: os.hostname(), time: new Date().toISOString(), nonce: crypto.randomBytes(8).toString('hex') });
  const started = Date.now();
  let waited = false;
  let delay = 20;
  for (;;) {
    if (opts.signal?.aborted) throw new CalibscopeError('E_CANCELLED', 'cancelled while waiting for a lock');
    let created: boolean;
    // Counted as ours before the lock file appears, so that another task of this process never
    // sees it, with our pid, as a dead process's lock.
    heldByUs.add(mine);
    try {
      created = await tryCreate(lockPath, mine);
    } catch (err) {
      heldByUs.delete(mine);
      throw new CalibscopeError('E_IO', `cannot create the lock file ${lockPath}: ${(err as Error).message}`, {
        file: lockPath,
        errno: (err as NodeJS.ErrnoException).code,
      });
    }
    if (!created) heldByUs.delete(mine);
    if (created) {
      let released = false;
      return async () => {
        if (released) return;
        released = true;
        // Remove only our own lock: if it was (wrongly) broken and re-taken, it is no longer ours.
        const now = await fs.promises.readFile(lockPath, 'utf8').catch(() => null);
        if (now === mine) await unlinkQuiet(lockPath).catch(() => undefined);
        heldByUs.delete(mine);
      };
    }
    let text: string | null = null;
    let mtimeMs = Date.now();
    try {
      text = await fs.promises.readFile(lockPath, 'utf8');
      mtimeMs = (await fs.promises.stat(lockPath)).mtimeMs;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // released meanwhile
      throw new CalibscopeError('E_IO', `cannot read the lock file ${lockPath}: ${(err as Error).message}`, { file: lockPath });
    }
    const owner = parseOwner(text);
    if (ownerDead(owner, text, mtimeMs)) {
      await breakStale(lockPath, text);
      continue;
    }
    if (!waited) {
      waited = true;
      if (owner) opts.onWait?.(owner);
    }
    if (opts.timeoutMs !== undefined && Date.now() - started > opts.timeoutMs) {
      throw new CalibscopeError('E_IO', `${lockPath} is held by process ${owner?.pid ?? '?'} on ${owner?.host ?? '?'}; gave up waiting`, {
        file: lockPath,
      });
    }
    await sleep(delay, opts.signal);
    delay = Math.min(250, delay * 2);
  }
}
