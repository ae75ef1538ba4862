// Pipelines and the profile cache as CI and a shared workstation use them: locks and leftovers of
// killed runs (a reused pid, a writer on another host or container, a run killed while another
// waited for it), and the order in which a pipeline reports its failed models.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { makeConfig } from '../src/calibration/config.js';
import { cachedProfileDir } from '../src/profiles/cache.js';
import { loadProfile } from '../src/profiles/store.js';
import { describeRun, ROOT, runCli, scratchSpace } from './helpers/cli_runner.js';

const FIXTURE = path.join(ROOT, 'test', 'fixtures', 'reference', 'bert-tiny-a', 'model');
const { tmpDir } = scratchSpace('calibscope-pipeline-walk-');

/** A copy of bert-tiny-a at `dir`; `variant` changes config.json's bytes, so the checkpoint hash differs. */
function model(dir: string, variant = ''): string {
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(path.join(FIXTURE, 'model.safetensors'), path.join(dir, 'model.safetensors'));
  fs.writeFileSync(path.join(dir, 'config.json'), fs.readFileSync(path.join(FIXTURE, 'config.json'), 'utf8') + variant);
  return dir;
}

function manifest(base: string, models: { id: string; path: string }[], name = 'pipeline.json'): string {
  const file = path.join(base, name);
  fs.writeFileSync(file, JSON.stringify({ models }));
  return file;
}

function json(r: SpawnSyncReturns<string> | { status: number | null; stdout: string; stderr: string }, exit = 0): any {
  assert.equal(r.status, exit, describeRun(r as SpawnSyncReturns<string>));
  return JSON.parse(r.stdout);
}

/** Temporary folders, set-aside folders and locks below `dir`. */
function leftovers(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[]).filter((p) => /(^|[\\/])\.[^\\/]*\.(tmp|old|lock)/.test(p));
}

/** A pid that no process has now: a child that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '0']);
  return r.pid;
}

const FP4_DIR = (cache: string, id: string) => cachedProfileDir(cache, id, makeConfig({ format: 'fp4' }));

describe('locks and leftovers of killed runs', () => {
  test('a dead lock naming our own pid (a killed run whose pid came round again) does not make the pipeline wait for itself', () => {
    const base = tmpDir('own-pid');
    model(path.join(base, 'models', 'a'));
    const file = manifest(base, [{ id: 'a', path: 'models/a' }]);
    const cache = path.join(base, 'cache');
    const dir = FP4_DIR(cache, 'a');
    fs.mkdirSync(path.dirname(dir), { recursive: true });
    const lock = path.join(path.dirname(dir), `.${path.basename(dir)}.lock`);
    const tmp = path.join(path.dirname(dir), `.${path.basename(dir)}.tmp-@PID@-0badc0de`);
    // `exec` keeps the shell's pid, so the lock and the half-written folder carry calibscope's own
    // pid, as they would after a container restart that numbered its processes the same way.
    const script =
      `printf '{"pid":%d,"host":"%s","time":"2020-01-01T00:00:00.000Z"}' $$ "$2" > "$3"; ` +
      `mkdir -p "$(echo "$4" | sed "s/@PID@/$$/")" && : > "$(echo "$4" | sed "s/@PID@/$$/")/scales.safetensors"; ` +
      `exec "$1" bin/calibscope.js calibrate --pipeline "$5" --format fp4 --cache "$6" --json`;
    const r = spawnSync('sh', ['-c', script, 'sh', process.execPath, os.hostname(), lock, tmp, file, cache], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 20_000,
    });
    assert.equal(r.signal, null, `timed out waiting for its own pid's lock\n${describeRun(r)}`);
    const out = json(r);
    assert.equal(out.profiles[0].cached, false);
    assert.deepEqual(leftovers(cache), []);
  });

  test('the cache sweep leaves the temporary folder of a writer whose lock is live on another host', () => {
    const base = tmpDir('other-host');
    model(path.join(base, 'models', 'a'));
    model(path.join(base, 'models', 'b'));
    const cache = path.join(base, 'cache');
    // Host "build-2" (or another container: its own pid numbers) is writing model a's profile.
    const dir = FP4_DIR(cache, 'a');
    fs.mkdirSync(path.dirname(dir), { recursive: true });
    const pid = deadPid();
    const lock = path.join(path.dirname(dir), `.${path.basename(dir)}.lock`);
    fs.writeFileSync(lock, JSON.stringify({ pid, host: `${os.hostname()}-build-2`, time: new Date().toISOString() }));
    const tmp = path.join(path.dirname(dir), `.${path.basename(dir)}.tmp-${pid}-0123abcd`);
    fs.mkdirSync(tmp);
    fs.writeFileSync(path.join(tmp, 'scales.safetensors'), 'being written');
    // This machine calibrates model b in the same cache.
    const out = json(runCli(['calibrate', '--pipeline', manifest(base, [{ id: 'b', path: 'models/b' }]), '--format', 'fp4', '--cache', cache, '--json']));
    assert.equal(out.profiles[0].model_id, 'b');
    assert.ok(fs.existsSync(path.join(tmp, 'scales.safetensors')), 'the other host\'s profile in progress is left alone');
    assert.ok(fs.existsSync(lock));
  });

  test('a run killed while another waited for its lock leaves nothing once the waiting run has calibrated', async () => {
    const base = tmpDir('killed-owner');
    const modelDir = model(path.join(base, 'models', 'a'));
    const cache = path.join(base, 'cache');
    const dir = FP4_DIR(cache, 'a');
    fs.mkdirSync(path.dirname(dir), { recursive: true });
    // A live process holds the lock and has a half-written profile when the second run starts.
    const owner = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    try {
      const lock = path.join(path.dirname(dir), `.${path.basename(dir)}.lock`);
      fs.writeFileSync(lock, JSON.stringify({ pid: owner.pid, host: os.hostname(), time: new Date().toISOString() }));
      const tmp = path.join(path.dirname(dir), `.${path.basename(dir)}.tmp-${owner.pid}-0123abcd`);
      fs.mkdirSync(tmp);
      fs.writeFileSync(path.join(tmp, 'scales.safetensors'), 'half');
      const child = spawn(process.execPath, ['bin/calibscope.js', 'calibrate', modelDir, '--model-id', 'a', '--format', 'fp4', '--cache', cache], {
        cwd: ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      const waiting = new Promise<void>((resolve) =>
        child.stderr.on('data', (d) => {
          stderr += d;
          if (/waiting for process/.test(stderr)) resolve();
        }),
      );
      const done = new Promise<number | null>((resolve) => child.on('close', resolve));
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await Promise.race([waiting, done]);
      // The owner is killed (kill -9) while the second run waits for it.
      owner.kill('SIGKILL');
      const status = await done;
      clearTimeout(timer);
      assert.equal(status, 0, `stdout: ${stdout}\nstderr: ${stderr}`);
      assert.match(stderr, /waiting for process/);
      await loadProfile(dir);
      assert.deepEqual(leftovers(cache), [], 'the dead writer\'s temporary folder and lock are gone');
    } finally {
      owner.kill('SIGKILL');
    }
  });
});

describe('failures', () => {
  test('failed models are reported in manifest order, and the first of them gives the error code', () => {
    const base = tmpDir('order');
    const cache = path.join(base, 'cache');
    model(path.join(base, 'one', 'enc'));
    // The first pipeline calibrates its encoder under the id "enc".
    json(runCli(['calibrate', '--pipeline', manifest(base, [{ id: 'enc', path: 'one/enc' }], 'one.json'), '--format', 'fp4', '--cache', cache, '--json']));
    // The second lists another checkpoint under the same id (refused), then a broken checkpoint
    // (which fails first, when it is opened), then a good model.
    model(path.join(base, 'two', 'enc'), '\n');
    model(path.join(base, 'two', 'broken'));
    fs.truncateSync(path.join(base, 'two', 'broken', 'model.safetensors'), 1000);
    model(path.join(base, 'two', 'ok'), '\n\n');
    const file = manifest(
      base,
      [
        { id: 'enc', path: 'two/enc' },
        { id: 'broken', path: 'two/broken' },
        { id: 'ok', path: 'two/ok' },
      ],
      'two.json',
    );
    const r = runCli(['calibrate', '--pipeline', file, '--format', 'fp4', '--cache', cache, '--json']);
    const e = json(r, 2).error;
    assert.deepEqual(e.details.failed.map((f: any) => f.model_id), ['enc', 'broken']);
    assert.deepEqual(e.details.failed.map((f: any) => f.code), ['E_BAD_ARGUMENT', 'E_BAD_CHECKPOINT']);
    assert.equal(e.code, 'E_BAD_ARGUMENT');
    assert.match(e.message, /^2 of 3 models failed: enc: .*; broken: /);
    assert.deepEqual(e.details.profiles.map((p: any) => [p.model_id, p.cached]), [['ok', false]]);
    assert.deepEqual(leftovers(cache), []);

    // Without --json the models that did calibrate are still shown, above the error.
    const human = runCli(['calibrate', '--pipeline', file, '--format', 'fp4', '--cache', cache]);
    assert.equal(human.status, 2, describeRun(human));
    assert.match(human.stdout, /^ok\s+fp4\s+cached \(valid\)/m);
    assert.match(human.stdout, /1 model: 0 calibrated, 1 reused/);
    assert.match(human.stderr, /2 of 3 models failed: enc: /);
  });
});
