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

/** A lock whose owner is certainly gone. A lock from another host is never judged dead. */
function ownerDead(owner: LockOwner | null, mtimeMs: number): boolean {
  // link() makes a lock appear complete, so unreadable content is not a write in progress.
  if (!owner) return Date.now() - mtimeMs > 10_000;
  return owner.host === os.hostname() && !pidAlive(owner.pid);
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
  let text: string;
  let mtimeMs: number;
  try {
    text = await fs.promises.readFile(lockPath, 'utf8');
    mtimeMs = (await fs.promises.stat(lockPath)).mtimeMs;
  } catch {
    return false;
  }
  if (!ownerDead(parseOwner(text), mtimeMs)) return false;
  await breakStale(lockPath, text);
  return true;
}

/**
 * Takes the lock at `lockPath` (its folder must exist), waiting while a live process holds it.
 * Returns the function that releases it. Errors: E_CANCELLED when `signal` aborts the wait,
 * E_IO when the folder is not writable or the wait times out.
 */
export async function acquireLock(lockPath: string, opts: AcquireOptions = {}): Promise<ReleaseLock> {
  const mine = JSON.stringify({ pid: process.pid, host: os.hostname(), time: new Date().toISOString() } satisfies LockOwner);
  const started = Date.now();
  let waited = false;
  let delay = 20;
  for (;;) {
    if (opts.signal?.aborted) throw new CalibscopeError('E_CANCELLED', 'cancelled while waiting for a lock');
    let created: boolean;
    try {
      created = await tryCreate(lockPath, mine);
    } catch (err) {
      throw new CalibscopeError('E_IO', `cannot create the lock file ${lockPath}: ${(err as Error).message}`, {
        file: lockPath,
        errno: (err as NodeJS.ErrnoException).code,
      });
    }
    if (created) {
      let released = false;
      return async () => {
        if (released) return;
        released = true;
        // Remove only our own lock: if it was (wrongly) broken and re-taken, it is no longer ours.
        const now = await fs.promises.readFile(lockPath, 'utf8').catch(() => null);
        if (now === mine) await unlinkQuiet(lockPath).catch(() => undefined);
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
    if (ownerDead(owner, mtimeMs)) {
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
