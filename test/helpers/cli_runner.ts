// Test helpers for running the real `calibscope` CLI in a child process, with scratch folders
// that are removed after the test file.
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after } from 'node:test';

/** The repository root (tests run from dist/test). */
export const ROOT = path.resolve(__dirname, '..', '..', '..');

export interface Scratch {
  dir: string;
  /** A new, empty folder below the scratch space. */
  tmpDir(label: string): string;
}

export function scratchSpace(prefix: string): Scratch {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  let count = 0;
  return {
    dir,
    tmpDir(label: string): string {
      const d = path.join(dir, `${label}-${count++}`);
      fs.mkdirSync(d, { recursive: true });
      return d;
    },
  };
}

/** Runs `calibscope ARGS` from the repository root, stdin closed; `env` is added to the process's. */
export function runCli(args: string[], opts: { env?: Record<string, string>; timeout?: number } = {}): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, ['bin/calibscope.js', ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...opts.env },
    timeout: opts.timeout ?? 120_000,
    maxBuffer: 64 << 20,
  });
}

export function describeRun(r: SpawnSyncReturns<string>): string {
  return `status ${r.status} signal ${r.signal}\nstdout: ${r.stdout.slice(0, 2000)}\nstderr: ${r.stderr.slice(0, 2000)}`;
}
