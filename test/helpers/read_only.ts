// Running a Node child that cannot write into a folder, for the read-only cache tests. Root ignores
// permission bits, so as root the child runs as user nobody (setpriv) against root's 0755 folders —
// another user's files, as a CI job gets them; otherwise the folder's write bits are removed for
// the child's lifetime. `skip` says why neither works here.
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';

export interface ReadOnlyRunner {
  skip: string | false;
  /** Runs `node ...nodeArgs` unable to write into `folder`. */
  run(nodeArgs: string[], folder: string): SpawnSyncReturns<string>;
}

/** scratch: the private temporary folder holding the read-only folders (made readable to nobody). */
export function readOnlyRunner(opts: { cwd: string; scratch: string; env?: NodeJS.ProcessEnv; timeout?: number }): ReadOnlyRunner {
  const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const spawnOpts = {
    cwd: opts.cwd,
    encoding: 'utf8' as const,
    stdio: ['ignore', 'pipe', 'pipe'] as ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...opts.env },
    timeout: opts.timeout ?? 60_000,
  };
  if (!asRoot) {
    const setWritable = (folder: string, on: boolean) => {
      const walk = (d: string) => {
        const st = fs.statSync(d);
        if (st.isDirectory()) for (const n of fs.readdirSync(d)) walk(`${d}/${n}`);
        fs.chmodSync(d, on ? st.mode | 0o200 : st.mode & ~0o222);
      };
      walk(folder);
    };
    return {
      skip: process.platform === 'win32' ? 'Windows has no write bits to remove' : false,
      run(nodeArgs, folder) {
        setWritable(folder, false);
        try {
          return spawnSync(process.execPath, nodeArgs, spawnOpts);
        } finally {
          setWritable(folder, true);
        }
      },
    };
  }
  const nobody = ['--reuid=65534', '--regid=65534', '--clear-groups', '--'];
  const which = spawnSync('sh', ['-c', 'command -v setpriv'], { encoding: 'utf8' });
  if (which.status !== 0) return { skip: 'running as root and setpriv is not installed, so no user to run the child as cannot write', run: () => assert.fail() };
  // The scratch space is private to root (mkdtemp: 0700); nobody needs to read the folders in it.
  fs.chmodSync(opts.scratch, 0o755);
  const probe = spawnSync('setpriv', [...nobody, process.execPath, '-e', `require('fs').readdirSync(${JSON.stringify(opts.cwd)})`], { encoding: 'utf8' });
  if (probe.status !== 0) return { skip: `user nobody cannot run Node here: ${(probe.stderr || probe.error?.message || '').trim().slice(0, 200)}`, run: () => assert.fail() };
  return { skip: false, run: (nodeArgs) => spawnSync('setpriv', [...nobody, process.execPath, ...nodeArgs], spawnOpts) };
}
