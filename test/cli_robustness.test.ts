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
import { readOnlyRunner as readOnlyNode } from './helpers/read_only.js';

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

// ---------------------------------------------------------------------------------------------

/** Every entry below `dir` (and `dir` itself) with its size and mtime: any write shows up (a folder's mtime changes when an entry is added or removed). */
function stamps(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    const st = fs.statSync(d, { bigint: true });
    out.push(`${path.relative(dir, d) || '.'} ${st.size} ${st.mtimeNs}`);
    if (st.isDirectory()) for (const name of fs.readdirSync(d).sort()) walk(path.join(d, name));
  };
  walk(dir);
  return out;
}

/** Copies the reference model to `dir`, so that a test may change its bytes. */
function copyModel(dir: string): string {
  fs.cpSync(MODEL, dir, { recursive: true });
  return dir;
}

/** The CLI run unable to write into a cache (test/helpers/read_only.ts says how). */
function readOnlyRunner(): { skip: string | false; run(args: string[], cache: string): SpawnSyncReturns<string> } {
  const ro = readOnlyNode({ cwd: ROOT, scratch, env });
  return { skip: ro.skip, run: (args, cache) => ro.run([BIN, ...args], cache) };
}

describe('a read-only cache', () => {
  const ro = readOnlyRunner();
  if (ro.skip) console.log(`# read-only cache tests skipped: ${ro.skip}`);

  /** A model calibrated into a fresh cache (writable), and a pipeline.json naming it by its folder name. */
  function calibratedCache(label: string): { cache: string; model: string; manifest: string } {
    const d = tmpDir(label);
    const model = copyModel(path.join(d, 'ro-model'));
    const manifest = path.join(d, 'pipeline.json');
    fs.writeFileSync(manifest, JSON.stringify({ models: [{ id: 'ro-model', path: 'ro-model' }] }));
    const cache = path.join(d, 'cache');
    const r = cli(['calibrate', model, '--format', 'fp4', '--cache', cache, '--json']);
    assert.equal(r.status, 0, describeRun(r));
    assert.equal(oneJsonLine(r).cached, false);
    return { cache, model, manifest };
  }

  test('a valid profile is reused by calibrate, calibrate --pipeline and validate, and nothing in the cache changes', { skip: ro.skip }, () => {
    const { cache, model, manifest } = calibratedCache('ro-valid');
    const before = stamps(cache);

    const one = ro.run(['calibrate', model, '--format', 'fp4', '--cache', cache, '--json'], cache);
    assert.equal(one.status, 0, describeRun(one));
    const j = oneJsonLine(one);
    assert.equal(j.cached, true);
    assert.equal(j.profile.format, 'fp4');

    const human = ro.run(['calibrate', model, '--format', 'fp4', '--cache', cache], cache);
    assert.equal(human.status, 0, describeRun(human));
    assert.match(human.stdout, /— cached \(valid: /);
    assert.match(human.stderr, /read-only/);

    const pipe = ro.run(['calibrate', '--pipeline', manifest, '--format', 'fp4', '--cache', cache, '--json'], cache);
    assert.equal(pipe.status, 0, describeRun(pipe));
    const p = oneJsonLine(pipe).profiles;
    assert.equal(p.length, 1);
    assert.equal(p[0].cached, true);
    assert.equal(p[0].profile_path, j.profile_path);

    const val = ro.run(['validate', model, '--format', 'fp4', '--cache', cache, '--json'], cache);
    assert.equal(val.status, 0, describeRun(val));
    const v = oneJsonLine(val);
    assert.equal(v.calibrated, false);
    assert.equal(v.stored, false);
    assert.match(v.store_note, /read-only/);

    assert.deepEqual(stamps(cache), before, 'no lock, probe, hash-cache entry or any other write');
    assert.equal(oneJsonLine(cli(['status', model, '--format', 'fp4', '--cache', cache, '--json'])).state, 'valid');
  });

  test('a profile that would have to be written (stale, missing, --force) is E_IO saying read-only, state and reason', { skip: ro.skip }, () => {
    const { cache, model, manifest } = calibratedCache('ro-stale');
    // Any changed byte of config.json makes the profile stale.
    fs.appendFileSync(path.join(model, 'config.json'), '\n');
    assert.equal(oneJsonLine(cli(['status', model, '--format', 'fp4', '--cache', cache, '--json'])).state, 'stale');
    const before = stamps(cache);

    let e = expectError(ro.run(['calibrate', model, '--format', 'fp4', '--cache', cache, '--json'], cache), 'E_IO', 1, ['read-only', 'recalibration', 'stale', 'checkpoint changed']);
    assert.equal(e.details.state, 'stale');
    e = expectError(ro.run(['calibrate', '--pipeline', manifest, '--format', 'fp4', '--cache', cache, '--json'], cache), 'E_IO', 1, ['ro-model', 'read-only', 'stale']);
    assert.equal(e.details.failed.length, 1);
    expectError(ro.run(['validate', model, '--format', 'fp4', '--cache', cache, '--json'], cache), 'E_IO', 1, ['read-only', 'stale']);
    e = expectError(ro.run(['calibrate', model, '--format', 'nvfp4', '--cache', cache, '--json'], cache), 'E_IO', 1, ['read-only', 'needs calibration', 'missing']);
    assert.equal(e.details.state, 'missing');

    assert.deepEqual(stamps(cache), before, 'nothing written');
  });

  test('--force on a read-only cache is E_IO even for a valid profile', { skip: ro.skip }, () => {
    const { cache, model } = calibratedCache('ro-force');
    const before = stamps(cache);
    const e = expectError(ro.run(['calibrate', model, '--format', 'fp4', '--force', '--cache', cache, '--json'], cache), 'E_IO', 1, ['read-only', '--force', 'valid']);
    assert.equal(e.details.force, true);
    assert.deepEqual(stamps(cache), before);
  });
});

describe('demo --out into an existing folder', () => {
  const demo = (out: string) => cli(['demo', '--size', 'tiny', '--out', out, '--json']);

  test('a folder with other content is refused and left as it was', () => {
    const d = tmpDir('demo-foreign');
    fs.writeFileSync(path.join(d, 'notes.txt'), 'mine');
    fs.mkdirSync(path.join(d, 'data'));
    const before = stamps(d);
    const e = expectError(demo(d), 'E_BAD_ARGUMENT', 2, [d, 'not empty', 'empty or new folder']);
    assert.match(e.message, /notes\.txt/);
    assert.deepEqual(stamps(d), before);
  });

  test("someone else's pipeline.json is never overwritten", () => {
    const d = tmpDir('demo-manifest');
    fs.writeFileSync(path.join(d, 'pipeline.json'), '{"models": []}');
    expectError(demo(d), 'E_BAD_ARGUMENT', 2, ['pipeline.json']);
    assert.deepEqual(fs.readdirSync(d), ['pipeline.json']);
    assert.equal(fs.readFileSync(path.join(d, 'pipeline.json'), 'utf8'), '{"models": []}');
  });

  test('a pipeline.json that appears while the demo is written is not overwritten either', async () => {
    const { writeDemoPipeline } = await import('../src/demo/index.js');
    const d = tmpDir('demo-race');
    const manifest = path.join(d, 'pipeline.json');
    await assert.rejects(
      writeDemoPipeline({
        size: 'tiny',
        outDir: d,
        onProgress: (p) => {
          if (p.modelIndex === p.models - 1 && !fs.existsSync(manifest)) fs.writeFileSync(manifest, '{"models": []}');
        },
      }),
      (e: { code?: string; message?: string }) => e.code === 'E_BAD_ARGUMENT' && Boolean(e.message?.includes('pipeline.json')),
    );
    assert.equal(fs.readFileSync(manifest, 'utf8'), '{"models": []}');
    assert.ok(fs.readdirSync(d).every((n) => !n.startsWith('.')), 'no temporary file left');
  });

  test('an empty folder, a new one, and an earlier demo (with a note beside it) are written', () => {
    const empty = tmpDir('demo-empty');
    const r = demo(empty);
    assert.equal(r.status, 0, describeRun(r));
    fs.writeFileSync(path.join(empty, 'notes.txt'), 'kept');
    const again = demo(empty);
    assert.equal(again.status, 0, describeRun(again));
    assert.equal(oneJsonLine(again).pipeline_path, path.join(empty, 'pipeline.json'));
    assert.equal(fs.readFileSync(path.join(empty, 'notes.txt'), 'utf8'), 'kept');
    const fresh = path.join(tmpDir('demo-new'), 'a', 'b');
    const n = demo(fresh);
    assert.equal(n.status, 0, describeRun(n));
  });
});

describe('--cache naming a file', () => {
  test('every command that opens the cache says the path is a file, and leaves it alone', () => {
    const d = tmpDir('cache-file');
    const file = path.join(d, 'cache');
    fs.writeFileSync(file, 'not a cache');
    const manifest = path.join(d, 'pipeline.json');
    fs.writeFileSync(manifest, JSON.stringify({ models: [{ id: 'm', path: MODEL }] }));
    for (const args of [
      ['calibrate', MODEL, '--format', 'fp4'],
      ['calibrate', '--pipeline', manifest, '--format', 'fp4'],
      ['validate', MODEL, '--format', 'fp4'],
      ['status', MODEL, '--format', 'fp4'],
    ]) {
      const e = expectError(cli([...args, '--cache', file, '--json']), 'E_IO', 1, [file, 'is a file, not a folder']);
      assert.doesNotMatch(e.message, /ENOTDIR/, args.join(' '));
    }
    expectError(cli(['calibrate', MODEL, '--format', 'fp4', '--cache', path.join(file, 'sub'), '--json']), 'E_IO', 1, [file, 'is a file, not a folder']);
    assert.equal(fs.readFileSync(file, 'utf8'), 'not a cache');
    assert.deepEqual(fs.readdirSync(d).sort(), ['cache', 'pipeline.json']);
  });
});

// ---------------------------------------------------------------------------------------------

describe('numeric option spellings', () => {
  test('the option parsers take plain decimal integers and decimals (with exponents), nothing else', async () => {
    const { intOption, numberOption } = await import('../src/cli/args.js');
    for (const [v, n] of [['4', 4], ['+4', 4], ['0', 0], ['-0', 0], ['064', 64], ['1024', 1024]] as const) {
      assert.ok(Object.is(intOption(v, 'threads', 0, 1024), n), `"${v}"`);
    }
    for (const v of ['0x10', '0X10', '0b1', '0o7', '1e1', '4.0', ' 4', '4 ', '1_0', '٤', 'Infinity', '-1', '1025', '99999999999999999999', '']) {
      assert.throws(() => intOption(v, 'threads', 0, 1024), (e: { code?: string; message?: string }) => e.code === 'E_BAD_ARGUMENT' && Boolean(e.message?.includes(`--threads`) && e.message.includes(`"${v}"`)), `"${v}"`);
    }
    for (const [v, n] of [['0.05', 0.05], ['5e-2', 0.05], ['5E-2', 0.05], ['.5', 0.5], ['5.', 5], ['+0.5', 0.5], ['-0.5', -0.5], ['1', 1], ['-0', 0], ['1e+0', 1]] as const) {
      assert.ok(Object.is(numberOption(v, 'bits-tolerance'), n), `"${v}"`);
    }
    for (const v of ['0x10', '0b1', '0o7', 'Infinity', '-Infinity', 'NaN', ' 0.5', '0.5 ', '1_0', '5%', '.', 'e3', '1e', '1e400', '0,5', '١']) {
      assert.throws(
        () => numberOption(v, 'bits-tolerance'),
        (e: { code?: string; message?: string }) => e.code === 'E_BAD_ARGUMENT' && Boolean(e.message?.includes('--bits-tolerance') && e.message.includes(`"${v}"`)),
        `"${v}"`,
      );
    }
  });

  test('every numeric option of every command refuses hexadecimal and other odd spellings with E_BAD_ARGUMENT naming option and value', () => {
    const d = tmpDir('odd-numbers');
    const manifest = path.join(d, 'pipeline.json');
    fs.writeFileSync(manifest, JSON.stringify({ models: [{ id: 'm', path: MODEL }] }));
    const cache = path.join(d, 'cache');
    const cases: [string[], string, string][] = [
      [['calibrate', MODEL, '--format', 'fp4', '--block-policy', 'bits', '--bits-tolerance', '0x10'], 'bits-tolerance', '0x10'],
      [['calibrate', MODEL, '--format', 'fp4', '--block-policy', 'bits', '--bits-tolerance', 'Infinity'], 'bits-tolerance', 'Infinity'],
      [['calibrate', MODEL, '--format', 'fp4', '--threads', '0x4'], 'threads', '0x4'],
      [['calibrate', MODEL, '--format', 'fp4', '--threads', '1e1'], 'threads', '1e1'],
      [['calibrate', MODEL, '--format', 'fp4', '--block-sizes', '64,0x80'], 'block-sizes', '0x80'],
      [['calibrate', MODEL, '--format', 'fp4', '--block-sizes', '6.4e1'], 'block-sizes', '6.4e1'],
      [['calibrate', '--pipeline', manifest, '--format', 'fp4', '--jobs', '0b10'], 'jobs', '0b10'],
      [['status', MODEL, '--format', 'fp4', '--bits-tolerance', '0o7', '--block-policy', 'bits'], 'bits-tolerance', '0o7'],
      [['validate', MODEL, '--format', 'fp4', '--threshold', '0x0'], 'threshold', '0x0'],
      [['attribute', MODEL, '--format', 'fp4', '--threshold', ' 0.9'], 'threshold', ' 0.9'],
      [['embed', MODEL, '--threads', '0x2'], 'threads', '0x2'],
      [['demo', '--size', 'tiny', '--out', path.join(d, 'demo'), '--seed', '0x10'], 'seed', '0x10'],
      [['serve', '--no-open', '--port', '0x50'], 'port', '0x50'],
    ];
    for (const [args, option, value] of cases) {
      const takesCache = args[0] !== 'demo' && args[0] !== 'embed';
      expectError(cli([...args, ...(takesCache ? ['--cache', cache] : []), '--json']), 'E_BAD_ARGUMENT', 2, [`--${option}`, `"${value}"`]);
    }
    assert.deepEqual(tree(d), ['pipeline.json'], 'nothing calibrated or written');
  });

  test('the documented spellings still work: 5e-2, 0.05, --block-sizes 64,128, --threads 1', () => {
    const cache = tmpDir('plain-numbers');
    const r = cli(['calibrate', MODEL, '--format', 'fp4', '--block-sizes', '64,128', '--block-policy', 'bits', '--bits-tolerance', '5e-2', '--threads', '1', '--cache', cache, '--json']);
    assert.equal(r.status, 0, describeRun(r));
    const j = oneJsonLine(r);
    assert.equal(j.profile.config.bits_tolerance, 0.05);
    assert.deepEqual(j.profile.config.block_sizes, [64, 128]);
    // The same config spelt as a plain decimal names the same profile.
    const again = oneJsonLine(cli(['calibrate', MODEL, '--format', 'fp4', '--block-sizes', '64,128', '--block-policy', 'bits', '--bits-tolerance', '0.05', '--cache', cache, '--json']));
    assert.equal(again.cached, true);
    assert.equal(again.profile_path, j.profile_path);
  });
});

describe('pipeline ids whose cache folders collide on other file systems', () => {
  function manifestWith(ids: string[]): { manifest: string; cache: string } {
    const d = tmpDir('case-ids');
    const manifest = path.join(d, 'pipeline.json');
    fs.writeFileSync(manifest, JSON.stringify({ models: ids.map((id) => ({ id, path: MODEL })) }));
    return { manifest, cache: path.join(d, 'cache') };
  }

  test('ids that differ only in case are refused before anything is written, naming both', () => {
    for (const [a, b] of [
      ['BGE', 'bge'],
      ['org/MiniLM', 'org_minilm'],
      ['bge.', 'bge'],
      ['Bge..', 'bge'],
    ]) {
      const { manifest, cache } = manifestWith(['other', a, b]);
      for (const cmd of ['calibrate', 'status']) {
        const e = expectError(cli([cmd, '--pipeline', manifest, '--format', 'fp4', '--cache', cache, '--json']), 'E_BAD_ARGUMENT', 2, [manifest, `'${a}'`, `'${b}'`]);
        assert.match(e.message, a.toLowerCase() === b.toLowerCase() || a.includes('/') ? /case-insensitive/ : /Windows/);
        assert.deepEqual(e.details.ids, [a, b]);
      }
      assert.equal(fs.existsSync(cache), false, 'nothing written');
    }
  });

  test('ids whose folders differ in more than case are fine', () => {
    const { manifest, cache } = manifestWith(['bge', 'bge-large', 'BGE.v2', 'bge_v3']);
    const r = cli(['status', '--pipeline', manifest, '--format', 'fp4', '--cache', cache, '--json']);
    assert.equal(r.status, 0, describeRun(r));
  });
});

describe('a sharded checkpoint with tensors its index does not list', () => {
  test('calibrate calibrates what the index lists; the profile names the tensors it skipped', () => {
    const d = tmpDir('unlisted');
    const weights = (seed: number) => new Uint8Array(new Float32Array(64 * 128).map((_, i) => Math.sin(i * 0.37 + seed) * 0.05).buffer);
    fs.writeFileSync(
      path.join(d, 'model-00001-of-00002.safetensors'),
      encodeSafetensors([
        { name: 'a.weight', dtype: 'F32', shape: [64, 128], data: weights(1) },
        { name: 'stray.weight', dtype: 'F32', shape: [64, 128], data: weights(2) },
      ]),
    );
    fs.writeFileSync(path.join(d, 'model-00002-of-00002.safetensors'), encodeSafetensors([{ name: 'b.weight', dtype: 'F32', shape: [64, 128], data: weights(3) }]));
    fs.writeFileSync(
      path.join(d, 'model.safetensors.index.json'),
      JSON.stringify({ weight_map: { 'a.weight': 'model-00001-of-00002.safetensors', 'b.weight': 'model-00002-of-00002.safetensors' } }),
    );
    const out = path.join(tmpDir('unlisted-out'), 'profile');
    const r = cli(['calibrate', d, '--format', 'fp4', '--out', out, '--json']);
    assert.equal(r.status, 0, describeRun(r));
    const j = oneJsonLine(r);
    assert.deepEqual(Object.keys(j.profile.tensor_calibrations).sort(), ['a.weight', 'b.weight']);
    const stray = j.profile.skipped_tensors.filter((t: { name: string }) => t.name === 'stray.weight');
    assert.equal(stray.length, 1, JSON.stringify(j.profile.skipped_tensors));
    assert.equal(stray[0].reason, "stored in model-00001-of-00002.safetensors but not listed in model.safetensors.index.json's weight_map");

    const cache = tmpDir('unlisted-cache');
    const human = cli(['calibrate', d, '--format', 'fp4', '--cache', cache]);
    assert.equal(human.status, 0, describeRun(human));
    assert.match(human.stdout, /skipped 1 tensor \(stored in model-00001-of-00002\.safetensors but not listed in model\.safetensors\.index\.json's weight_map; see profile\.json\)/);
  });
});

describe('validate --profile on a read-only profile folder', () => {
  const ro = readOnlyRunner();
  if (ro.skip) console.log(`# read-only profile tests skipped: ${ro.skip}`);
  const queries = path.join(ROOT, 'test', 'fixtures', 'reference', 'bert-tiny-a', 'queries.txt');

  /** A model and a profile exported with --out, in a fresh folder; `writableParent` lets anyone write beside the profile. */
  function exported(label: string, writableParent: boolean): { parent: string; model: string; out: string } {
    const parent = tmpDir(label);
    const model = copyModel(path.join(parent, 'model'));
    const out = path.join(parent, 'exports', 'profile');
    const r = cli(['calibrate', model, '--format', 'fp4', '--out', out, '--json']);
    assert.equal(r.status, 0, describeRun(r));
    fs.copyFileSync(queries, path.join(parent, 'queries.txt'));
    if (writableParent) fs.chmodSync(path.dirname(out), 0o777);
    return { parent, model, out };
  }

  test('the validation is reported, with a note that it was not recorded; nothing in the folder changes', { skip: ro.skip }, () => {
    // No one but the owner may write beside the profile (the lock cannot be taken), or only the
    // profile folder itself is closed (the lock is taken, profile.json cannot be replaced).
    for (const writableParent of [false, true]) {
      const { parent, model, out } = exported(`ro-profile-${writableParent}`, writableParent);
      const closed = writableParent ? out : path.dirname(out);
      const before = stamps(out);
      const q = path.join(parent, 'queries.txt');

      const r = ro.run(['validate', model, '--profile', out, '--queries', q, '--threshold', '0', '--json'], closed);
      assert.equal(r.status, 0, describeRun(r));
      const v = oneJsonLine(r);
      assert.equal(v.passed, true);
      assert.equal(v.stored, false);
      assert.match(v.store_note, /not recorded: the profile folder .* is read-only \(E(ACCES|PERM|ROFS)\)/);
      assert.ok(v.store_note.includes(out), v.store_note);

      const human = ro.run(['validate', model, '--profile', out, '--queries', q, '--threshold', '0'], closed);
      assert.equal(human.status, 0, describeRun(human));
      assert.match(human.stdout, /passed/);
      assert.match(human.stdout, /not recorded: the profile folder .* is read-only/);

      // A result below the threshold still exits 1, as it would with a writable profile.
      const drift = ro.run(['validate', model, '--profile', out, '--queries', q, '--threshold', '1', '--json'], closed);
      expectError(drift, 'E_SEMANTIC_DRIFT', 1);

      assert.deepEqual(stamps(out), before, 'the profile is unchanged');
      assert.deepEqual(fs.readdirSync(path.dirname(out)), ['profile'], 'no lock or temporary file left beside it');
      const onDisk = JSON.parse(fs.readFileSync(path.join(out, 'profile.json'), 'utf8'));
      assert.equal(onDisk.semantic_correlation, null);
    }
  });
});
