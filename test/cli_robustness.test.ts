// The `calibscope` CLI on awkward input: signals during a calibration, empty and repeated option
// values, mismatched --profile/--format, a cache folder damaged in odd ways, tensor names that are
// JavaScript object members. Each test runs the real CLI in a child process.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { encodeSafetensors, type TensorToWrite } from '../src/checkpoints/safetensors_writer.js';
import { ROOT, describeRun, runCli, scratchSpace } from './helpers/cli_runner.js';

const MODEL = path.join(ROOT, 'test', 'fixtures', 'reference', 'bert-tiny-a', 'model');
const BIN = path.join(ROOT, 'bin', 'calibscope.js');

const { dir: scratch, tmpDir } = scratchSpace('calibscope-robust-');
const env = { XDG_CACHE_HOME: path.join(scratch, 'xdg-cache') };
const cli = (args: string[]) => runCli(args, { env, timeout: 60_000 });

/** Runs the CLI with `cwd` as its working folder. */
function cliIn(cwd: string, args: string[]): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [BIN, ...args], {
    cwd,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
    timeout: 60_000,
  });
}

function oneJsonLine(r: SpawnSyncReturns<string> | { stdout: string }): any {
  assert.match(r.stdout, /^[^\n]+\n$/, `expected exactly one JSON line on stdout, got: ${r.stdout.slice(0, 500)}`);
  return JSON.parse(r.stdout);
}

/** Checks the error contract: an exit (not a crash), the status, and one `{"error"}` line with the code. */
function expectError(r: SpawnSyncReturns<string>, code: string, exit: number, mentions: string[] = []): any {
  assert.equal(r.signal, null, `the process must exit, not die\n${describeRun(r)}`);
  assert.equal(r.status, exit, describeRun(r));
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  const e = oneJsonLine(r).error;
  assert.equal(e.code, code, e.message);
  for (const m of mentions) assert.ok(e.message.includes(m), `message should mention ${m}: ${e.message}`);
  return e;
}

/** Every file and folder below `dir`, relative, sorted. */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      out.push(path.relative(dir, p));
      if (e.isDirectory()) walk(p);
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return out.sort();
}

/** A model large enough that calibrating it on one thread takes a noticeable time. */
function writeLargeModel(dir: string): string {
  const tensors: TensorToWrite[] = [];
  let seed = 12345;
  for (let t = 0; t < 8; t++) {
    const a = new Float32Array(1024 * 1024);
    for (let i = 0; i < a.length; i++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      a[i] = ((seed >>> 8) / (1 << 24) - 0.5) * 0.1;
    }
    tensors.push({ name: `layer.${t}.weight`, dtype: 'F32', shape: [1024, 1024], data: new Uint8Array(a.buffer) });
  }
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'model.safetensors'), encodeSafetensors(tensors));
  return dir;
}

/**
 * Starts `calibscope ARGS`, sends `signal` as soon as `ready()` holds (polled), and collects the
 * result. Fails if the process ends before it could be signalled.
 */
async function signalDuring(args: string[], ready: () => boolean, signal: NodeJS.Signals): Promise<{ status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<{ status: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (status, sig) => resolve({ status, signal: sig })),
  );
  let ended = false;
  void exited.then(() => (ended = true));
  const deadline = Date.now() + 30_000;
  while (!ready()) {
    if (ended) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      break;
    }
    await new Promise((r) => setTimeout(r, 2));
  }
  assert.ok(!ended, `the calibration ended before it could be signalled: ${stdout.slice(0, 300)} ${stderr.slice(0, 300)}`);
  child.kill(signal);
  const res = await exited;
  await new Promise((r) => setImmediate(r));
  return { ...res, stdout, stderr };
}

// ---------------------------------------------------------------------------------------------

describe('signals during a calibration', () => {
  const big = writeLargeModel(path.join(scratch, 'large-model'));
  const slow = ['--format', 'fp8_e4m3', '--threads', '1', '--backend', 'cpu', '--json'];

  for (const [sig, exit] of [
    ['SIGTERM', 143],
    ['SIGHUP', 129],
  ] as const) {
    test(`${sig} with --out: exit ${exit}, E_CANCELLED, no profile and no temporary folder left`, async () => {
      const parent = tmpDir('sig-out');
      const out = path.join(parent, 'profile');
      const r = await signalDuring(['calibrate', big, ...slow, '--out', out], () => fs.readdirSync(parent).some((n) => n.startsWith('.profile.tmp-')), sig);
      assert.equal(r.signal, null, `the process must exit cleanly, not be killed by ${sig}\n${r.stderr}`);
      assert.equal(r.status, exit, r.stderr);
      assert.equal(oneJsonLine(r).error.code, 'E_CANCELLED');
      assert.deepEqual(fs.readdirSync(parent), [], 'nothing left beside the output');
    });
  }

  test('SIGTERM in the cache: no profile, lock or temporary folder left, and the next run calibrates', async () => {
    const cache = tmpDir('sig-cache');
    const modelDir = path.join(cache, 'calibration', 'large-model');
    const r = await signalDuring(
      ['calibrate', big, ...slow, '--cache', cache],
      () => fs.existsSync(modelDir) && fs.readdirSync(modelDir).some((n) => /^\.fp8_e4m3-[0-9a-f]+\.tmp-/.test(n)),
      'SIGTERM',
    );
    assert.equal(r.signal, null, r.stderr);
    assert.equal(r.status, 143, r.stderr);
    assert.equal(oneJsonLine(r).error.code, 'E_CANCELLED');
    assert.deepEqual(tree(path.join(cache, 'calibration')), [], 'no model folder, lock or temporary folder');
    const st = oneJsonLine(cli(['status', big, '--format', 'fp8_e4m3', '--cache', cache, '--json']));
    assert.equal(st.state, 'missing');
  });
});

describe('option values', () => {
  test('an empty --cache is refused, and nothing is written into the working folder', () => {
    const cwd = tmpDir('empty-cache');
    const e = expectError(cliIn(cwd, ['calibrate', MODEL, '--format', 'fp4', '--cache', '', '--json']), 'E_BAD_ARGUMENT', 2, ['--cache']);
    assert.match(e.message, /empty/);
    assert.deepEqual(tree(cwd), []);
  });

  test('an empty --out, --pipeline or --block-sizes is refused', () => {
    const cwd = tmpDir('empty-out');
    expectError(cliIn(cwd, ['calibrate', MODEL, '--format', 'fp4', '--out=', '--json']), 'E_BAD_ARGUMENT', 2, ['--out']);
    expectError(cliIn(cwd, ['calibrate', '--pipeline', '', '--format', 'fp4', '--json']), 'E_BAD_ARGUMENT', 2, ['--pipeline']);
    expectError(cliIn(cwd, ['calibrate', MODEL, '--format', 'fp4', '--block-sizes', '', '--json']), 'E_BAD_ARGUMENT', 2, ['--block-sizes']);
    assert.deepEqual(tree(cwd), []);
  });

  test('an option given twice with different values is refused; the same value twice is fine', () => {
    const cache = tmpDir('twice');
    expectError(cli(['calibrate', MODEL, '--format', 'fp4', '--format', 'nvfp4', '--cache', cache, '--json']), 'E_BAD_ARGUMENT', 2, [
      '--format',
      'fp4',
      'nvfp4',
    ]);
    assert.deepEqual(tree(cache), [], 'nothing calibrated');
    const r = cli(['calibrate', MODEL, '--format', 'fp4', '--format=fp4', '--cache', cache, '--json']);
    assert.equal(r.status, 0, describeRun(r));
    assert.equal(oneJsonLine(r).profile.format, 'fp4');
  });

  test('info takes no arguments', () => {
    expectError(cli(['info', 'extra', '--json']), 'E_BAD_ARGUMENT', 2, ['extra']);
  });
});

describe('profiles in odd places', () => {
  test('status --profile with another --format or config is refused, not reported as valid for it', () => {
    const out = path.join(tmpDir('mismatch'), 'profile');
    const r = cli(['calibrate', MODEL, '--format', 'fp4', '--out', out, '--json']);
    assert.equal(r.status, 0, describeRun(r));
    expectError(cli(['status', MODEL, '--profile', out, '--format', 'nvfp4', '--json']), 'E_BAD_ARGUMENT', 2, ['fp4', 'nvfp4']);
    expectError(cli(['status', MODEL, '--profile', out, '--format', 'fp4', '--block-sizes', '64', '--json']), 'E_BAD_ARGUMENT', 2);
    const ok = oneJsonLine(cli(['status', MODEL, '--profile', out, '--format', 'fp4', '--json']));
    assert.equal(ok.state, 'valid');
    assert.equal(oneJsonLine(cli(['status', MODEL, '--profile', out, '--json'])).format, 'fp4');
  });

  test('--out below a file names the problem and leaves the file alone', () => {
    const d = tmpDir('below-file');
    const file = path.join(d, 'notes.txt');
    fs.writeFileSync(file, 'keep me');
    const e = expectError(cli(['calibrate', MODEL, '--format', 'fp4', '--out', path.join(file, 'profile'), '--json']), 'E_BAD_ARGUMENT', 2);
    assert.match(e.message, /above it is a file/);
    assert.equal(fs.readFileSync(file, 'utf8'), 'keep me');
    assert.deepEqual(fs.readdirSync(d), ['notes.txt']);
  });

  test('a file where the cached profile folder belongs: status says corrupt, calibrate replaces it', () => {
    const cache = tmpDir('file-profile');
    const first = oneJsonLine(cli(['calibrate', MODEL, '--format', 'fp4', '--cache', cache, '--json']));
    fs.rmSync(first.profile_path, { recursive: true });
    fs.writeFileSync(first.profile_path, 'not a profile');
    const st = oneJsonLine(cli(['status', MODEL, '--format', 'fp4', '--cache', cache, '--json']));
    assert.equal(st.state, 'corrupt');
    assert.match(st.reason, /file/);
    const again = cli(['calibrate', MODEL, '--format', 'fp4', '--cache', cache, '--json']);
    assert.equal(again.status, 0, describeRun(again));
    const j = oneJsonLine(again);
    assert.equal(j.cached, false);
    assert.ok(fs.statSync(first.profile_path).isDirectory());
    assert.equal(oneJsonLine(cli(['status', MODEL, '--format', 'fp4', '--cache', cache, '--json'])).state, 'valid');
  });

  test('a tensor named __proto__ is kept in profile.json like any other', () => {
    const d = tmpDir('proto');
    const a = new Float32Array(64 * 128).map((_, i) => Math.sin(i * 0.37) * 0.05);
    fs.writeFileSync(
      path.join(d, 'model.safetensors'),
      encodeSafetensors([
        { name: '__proto__', dtype: 'F32', shape: [64, 128], data: new Uint8Array(a.buffer) },
        { name: 'constructor', dtype: 'F32', shape: [64, 128], data: new Uint8Array(a.buffer.slice(0)) },
      ]),
    );
    const out = path.join(tmpDir('proto-out'), 'profile');
    const r = cli(['calibrate', d, '--format', 'fp4', '--out', out, '--json']);
    assert.equal(r.status, 0, describeRun(r));
    const onDisk = JSON.parse(fs.readFileSync(path.join(out, 'profile.json'), 'utf8'));
    assert.deepEqual(Object.keys(onDisk.tensor_calibrations).sort(), ['__proto__', 'constructor']);
    assert.equal(onDisk.tensor_calibrations.__proto__.tensor_name, '__proto__');
    assert.equal(oneJsonLine(cli(['status', d, '--profile', out, '--json'])).state, 'valid');
  });
});
