// The profile store and the calibration cache: save/load round trips, every way a profile can be
// damaged, staleness that survives restored mtimes, sign-off, updates, the lock, and the CLI's
// `calibrate --cache` reuse and `status` command. Small models only: copies of bert-tiny-a.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { QuantizationCalibrator } from '../src/calibration/calibrator.js';
import { configHash, makeConfig } from '../src/calibration/config.js';
import { calibrateTensorData, type TensorCalibration } from '../src/calibration/tensor_calibration.js';
import { openCheckpoint } from '../src/checkpoints/checkpoint.js';
import { calibrateCached, cachedProfileDir, openCache } from '../src/profiles/cache.js';
import { currentCheckpointHash } from '../src/profiles/hash_cache.js';
import { acquireLock, lockPathFor } from '../src/profiles/lock.js';
import {
  clearSignOff,
  loadProfile,
  profileContentHash,
  profileStatus,
  readScales,
  saveProfile,
  signOff,
  updateProfile,
} from '../src/profiles/store.js';
import { CalibscopeError } from '../src/util/errors.js';
import { PROFILE_FORMAT_VERSION } from '../src/version.js';
import { ROOT, runCli, scratchSpace } from './helpers/cli_runner.js';

const FIXTURE = path.join(ROOT, 'test', 'fixtures', 'reference', 'bert-tiny-a', 'model');

const { dir: scratch, tmpDir } = scratchSpace('calibscope-profiles-');

/** A private copy of bert-tiny-a (config.json + model.safetensors) that a test may change. */
function modelCopy(label: string): string {
  const dir = path.join(tmpDir(label), 'bert-tiny');
  fs.mkdirSync(dir);
  for (const f of ['config.json', 'model.safetensors']) {
    fs.copyFileSync(path.join(FIXTURE, f), path.join(dir, f));
    // Whole seconds, so a test can put the mtime back exactly (utimes takes float seconds).
    fs.utimesSync(path.join(dir, f), 1_700_000_000, 1_700_000_000);
  }
  return dir;
}

const cli = (args: string[], env: Record<string, string> = {}) =>
  runCli(args, { env: { XDG_CACHE_HOME: path.join(scratch, 'xdg'), ...env }, timeout: 60_000 });

function show(r: SpawnSyncReturns<string>): string {
  return `status ${r.status} signal ${r.signal}\nstdout: ${r.stdout.slice(0, 1500)}\nstderr: ${r.stderr.slice(0, 1500)}`;
}

function json(r: SpawnSyncReturns<string>, exit = 0): any {
  assert.equal(r.status, exit, show(r));
  assert.match(r.stdout, /^[^\n]+\n$/, `one JSON line\n${show(r)}`);
  return JSON.parse(r.stdout);
}

function expectCliError(r: SpawnSyncReturns<string>, code: string, exit: number, mentions: string[] = []): any {
  const j = json(r, exit);
  assert.deepEqual(Object.keys(j), ['error']);
  assert.equal(j.error.code, code, j.error.message);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  for (const m of mentions) assert.ok(j.error.message.includes(m), `message mentions ${m}: ${j.error.message}`);
  return j.error;
}

/** Overwrites one byte of a file in place, then puts size and mtime (and atime) back. */
function flipByteKeepMtime(file: string, offset: number): void {
  const st = fs.statSync(file);
  const fd = fs.openSync(file, 'r+');
  const b = Buffer.alloc(1);
  fs.readSync(fd, b, 0, 1, offset);
  b[0] ^= 0x01;
  fs.writeSync(fd, b, 0, 1, offset);
  fs.closeSync(fd);
  fs.utimesSync(file, st.atime, st.mtime);
  const now = fs.statSync(file);
  assert.equal(now.size, st.size);
  // Exact for whole-second mtimes (the model copies); within a millisecond otherwise.
  if (Number.isInteger(st.mtimeMs / 1000)) assert.equal(now.mtimeMs, st.mtimeMs);
  else assert.ok(Math.abs(now.mtimeMs - st.mtimeMs) < 1);
}

/** Offset of the first byte of tensor data in a safetensors file. */
function dataStart(file: string): number {
  const b = fs.readFileSync(file);
  return 8 + Number(b.readBigUInt64LE(0));
}

function sha256(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** Pid of a process that has just exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

async function rejectsWith(p: Promise<unknown>, code: string, pattern?: RegExp): Promise<CalibscopeError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof CalibscopeError, `a CalibscopeError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (pattern) assert.match(err.message, pattern);
    return err;
  }
  assert.fail(`expected ${code}`);
}

/** Calibrates in-process, keeping every tensor's arrays. */
async function calibrateInMemory(model: string, format: string): Promise<{ profile: any; tcs: TensorCalibration[] }> {
  const tcs: TensorCalibration[] = [];
  const { profile } = await new QuantizationCalibrator({ format }).calibrateModel(model, { onTensor: (tc) => tcs.push(tc) });
  return { profile, tcs };
}

/** A profile in a fresh cache for a fresh model copy. */
async function cachedProfile(label: string, format = 'fp4'): Promise<{ model: string; cache: string; dir: string; profile: any }> {
  const model = modelCopy(label);
  const cache = path.join(tmpDir(`${label}-cache`), 'cache');
  const r = await calibrateCached({ cacheDir: cache, model, config: { format } });
  assert.equal(r.cached, false);
  return { model, cache, dir: r.profilePath, profile: r.profile };
}

describe('saveProfile / loadProfile / readScales', () => {
  for (const format of ['fp4', 'nvfp4', 'mxfp8']) {
    test(`${format}: round trip of profile.json and every tensor's scales`, async () => {
      const { profile, tcs } = await calibrateInMemory(FIXTURE, format);
      const dir = path.join(tmpDir(`rt-${format}`), 'profile');
      const saved = await saveProfile(dir, profile, tcs);
      assert.equal(saved.scales_sha256, sha256(path.join(dir, 'scales.safetensors')));
      const loaded = await loadProfile(dir);
      assert.deepEqual(loaded, saved);
      assert.deepEqual({ ...loaded, scales_sha256: null }, profile);
      for (const tc of tcs) {
        const s = await readScales(dir, tc.result.tensor_name, loaded);
        assert.equal(s.rows, tc.rows);
        assert.equal(s.blocksPerRow, tc.blocksPerRow);
        assert.deepEqual(s.scales, tc.scales, tc.result.tensor_name);
        assert.equal(s.scales.byteOffset % 4, 0);
        assert.deepEqual(s.codes, tc.codes);
        assert.equal(s.global, tc.globalScale);
      }
      // Without the profile given, readScales reads profile.json itself.
      const first = tcs[0];
      assert.deepEqual((await readScales(dir, first.result.tensor_name)).scales, first.scales);
      await rejectsWith(readScales(dir, 'no.such.weight'), 'E_NOT_FOUND', /no\.such\.weight/);
      assert.deepEqual(fs.readdirSync(path.dirname(dir)), ['profile'], 'no temporary folders left');
    });
  }

  test('every tensor of a model gets the result of calibrating it alone (the read buffers take turns)', async () => {
    const { tcs } = await calibrateInMemory(FIXTURE, 'nvfp4');
    const ckpt = await openCheckpoint(FIXTURE);
    try {
      const sizes = new Set(tcs.map((tc) => tc.rows * tc.blocksPerRow));
      assert.ok(tcs.length >= 10 && sizes.size >= 3, 'tensors of several sizes, so buffers are reused and outgrown');
      const config = makeConfig({ format: 'nvfp4' });
      for (const tc of tcs) {
        const info = ckpt.tensors.find((t) => t.name === tc.result.tensor_name)!;
        const alone = await calibrateTensorData({ name: info.name, dtype: info.dtype, shape: info.shape, data: await ckpt.readTensor(info) }, config);
        assert.deepEqual(tc.scales, alone.scales, info.name);
        assert.deepEqual(tc.blockMseAfter, alone.blockMseAfter, info.name);
        assert.deepEqual(tc.result, alone.result, info.name);
      }
    } finally {
      await ckpt.close();
    }
  });

  test('saveProfile refuses a tensor list that does not match the profile, leaving nothing', async () => {
    const { profile, tcs } = await calibrateInMemory(FIXTURE, 'fp4');
    const dir = path.join(tmpDir('mismatch'), 'profile');
    await rejectsWith(saveProfile(dir, profile, tcs.slice(1)), 'E_BAD_ARGUMENT', /no scales given/);
    await rejectsWith(saveProfile(dir, profile, [...tcs, tcs[0]]), 'E_BAD_ARGUMENT', /twice/);
    assert.ok(!fs.existsSync(path.dirname(dir)) || fs.readdirSync(path.dirname(dir)).length === 0);
  });

  test('two writers finishing the same profile folder at once both succeed and leave one valid profile', async () => {
    const { profile, tcs } = await calibrateInMemory(FIXTURE, 'fp8_e4m3');
    const dir = path.join(tmpDir('race'), 'profile');
    const results = await Promise.all([0, 1, 2, 3].map(() => saveProfile(dir, profile, tcs)));
    for (const r of results) assert.equal(r.scales_sha256, results[0].scales_sha256);
    assert.deepEqual(await loadProfile(dir), results[0]);
    assert.deepEqual(fs.readdirSync(path.dirname(dir)), ['profile']);
  });
});

describe('damaged profiles are corrupt, with the reason, never a crash', () => {
  const damages: [string, (dir: string) => void, RegExp][] = [
    ['one altered byte of scales.safetensors', (d) => flipByteKeepMtime(path.join(d, 'scales.safetensors'), dataStart(path.join(d, 'scales.safetensors')) + 5), /does not match its checksum/],
    ['a truncated scales.safetensors', (d) => fs.truncateSync(path.join(d, 'scales.safetensors'), 100), /100 bytes.*truncated or altered/],
    ['a missing scales.safetensors', (d) => fs.rmSync(path.join(d, 'scales.safetensors')), /scales\.safetensors is missing/],
    ['profile.json that is not JSON', (d) => fs.writeFileSync(path.join(d, 'profile.json'), '{"model_id": "x",'), /not valid JSON/],
    ['a missing profile.json', (d) => fs.rmSync(path.join(d, 'profile.json')), /profile\.json is missing/],
    [
      'profile.json without a checksum',
      (d) => {
        const p = JSON.parse(fs.readFileSync(path.join(d, 'profile.json'), 'utf8'));
        p.scales_sha256 = null;
        fs.writeFileSync(path.join(d, 'profile.json'), JSON.stringify(p));
      },
      /scales_sha256 must be 64 hex digits/,
    ],
    [
      'a checksum that matches a scales file of other shapes',
      (d) => {
        const p = JSON.parse(fs.readFileSync(path.join(d, 'profile.json'), 'utf8'));
        const name = Object.keys(p.tensor_calibrations)[0];
        p.tensor_calibrations[name].block_size = p.tensor_calibrations[name].block_size * 2;
        fs.writeFileSync(path.join(d, 'profile.json'), JSON.stringify(p));
      },
      /has no F32 \[.*\] scales for tensor/,
    ],
  ];
  for (const [what, damage, reason] of damages) {
    test(what, async () => {
      const { model, cache, dir } = await cachedProfile('dmg');
      damage(dir);
      await rejectsWith(loadProfile(dir), 'E_BAD_PROFILE', reason);
      const st = await profileStatus(dir, model, { cacheDir: cache });
      assert.equal(st.state, 'corrupt');
      assert.match(st.reason, reason);
      // The cache recalibrates it.
      const r = await calibrateCached({ cacheDir: cache, model, config: { format: 'fp4' } });
      assert.equal(r.cached, false);
      assert.equal(r.before.state, 'corrupt');
      assert.equal((await profileStatus(dir, model, { cacheDir: cache })).state, 'valid');
    });
  }

  test('a missing profile folder is missing; a profile for another config is corrupt', async () => {
    const { model, cache, dir } = await cachedProfile('other-config');
    assert.equal((await profileStatus(path.join(cache, 'nowhere'), model)).state, 'missing');
    const other = configHash(makeConfig({ format: 'fp4', block_sizes: [64] }));
    const st = await profileStatus(dir, model, { expectConfigHash: other });
    assert.equal(st.state, 'corrupt');
    assert.match(st.reason, /config/);
  });
});

describe('stale: the checkpoint changed', () => {
  test('one weight byte changed with size and mtime restored is caught, also through the stat cache', async () => {
    const { model, cache, dir, profile } = await cachedProfile('stale');
    const ckpt = await openCheckpoint(model);
    try {
      // Prime the stat cache (margin 0: the copy is younger than the usual racy margin).
      const first = await currentCheckpointHash(ckpt, cache, 0);
      assert.equal(first.hash, profile.golden_checkpoint_hash);
      const again = await currentCheckpointHash(ckpt, cache, 0);
      assert.equal(again.fromCache, true, 'an unchanged checkpoint is answered from the stat cache');
      assert.equal(again.hash, first.hash);

      const file = path.join(model, 'model.safetensors');
      flipByteKeepMtime(file, dataStart(file) + 1000);
      const now = await currentCheckpointHash(ckpt, cache, 0);
      assert.equal(now.fromCache, false, 'the changed ctime misses the stat cache');
      assert.notEqual(now.hash, profile.golden_checkpoint_hash);
    } finally {
      await ckpt.close();
    }
    const st = await profileStatus(dir, model, { cacheDir: cache });
    assert.equal(st.state, 'stale');
    assert.match(st.reason, /checkpoint changed/);
    assert.notEqual(st.checkpoint_hash, profile.golden_checkpoint_hash);
    const r = await calibrateCached({ cacheDir: cache, model, config: { format: 'fp4' } });
    assert.equal(r.cached, false);
    assert.equal(r.before.state, 'stale');
    assert.equal(r.profile.golden_checkpoint_hash, st.checkpoint_hash);
    assert.equal((await profileStatus(dir, model, { cacheDir: cache })).state, 'valid');
  });

  test('recalibrating an unchanged checkpoint takes its hash from the stat cache; a changed one is hashed again', async () => {
    const { model, cache } = await cachedProfile('rehash');
    const ckpt = await openCheckpoint(model);
    try {
      await currentCheckpointHash(ckpt, cache, 0); // margin 0: the copy is younger than the racy margin
    } finally {
      await ckpt.close();
    }
    // A planted hash in the entry shows where the recalibration's hash came from.
    const entries = fs.readdirSync(path.join(cache, 'hash-cache'));
    assert.equal(entries.length, 1);
    const entryFile = path.join(cache, 'hash-cache', entries[0]!);
    const entry = JSON.parse(fs.readFileSync(entryFile, 'utf8'));
    const real = entry.hash;
    const planted = `sha256:${'ab'.repeat(32)}`;
    fs.writeFileSync(entryFile, JSON.stringify({ ...entry, hash: planted }));
    const again = await calibrateCached({ cacheDir: cache, model, config: { format: 'fp4' }, force: true });
    assert.equal(again.cached, false);
    assert.equal(again.profile.golden_checkpoint_hash, planted, 'the weights were not read again for the hash');

    // Any write (here only the times) changes the ctime: the entry no longer applies.
    const file = path.join(model, 'model.safetensors');
    fs.utimesSync(file, 1_700_000_000, 1_700_000_000);
    const after = await calibrateCached({ cacheDir: cache, model, config: { format: 'fp4' }, force: true });
    assert.equal(after.profile.golden_checkpoint_hash, real);
  });

  test('a changed config.json makes the profile stale too', async () => {
    const { model, cache, dir } = await cachedProfile('stale-config');
    fs.appendFileSync(path.join(model, 'config.json'), ' ');
    assert.equal((await profileStatus(dir, model, { cacheDir: cache })).state, 'stale');
  });

  test('a checkpoint that changes during calibration gets no profile', async () => {
    const model = modelCopy('changing');
    const cache = path.join(tmpDir('changing-cache'), 'cache');
    const file = path.join(model, 'model.safetensors');
    let changed = false;
    await rejectsWith(
      calibrateCached({
        cacheDir: cache,
        model,
        config: { format: 'fp4' },
        onTensor: () => {
          if (changed) return;
          changed = true;
          flipByteKeepMtime(file, dataStart(file) + 64);
        },
      }),
      'E_BAD_CHECKPOINT',
      /changed during calibration/,
    );
    const dir = cachedProfileDir(cache, 'bert-tiny', makeConfig({ format: 'fp4' }));
    assert.equal((await profileStatus(dir, model)).state, 'missing');
    const left = fs.existsSync(path.join(cache, 'calibration')) ? fs.readdirSync(path.join(cache, 'calibration'), { recursive: true }) : [];
    assert.deepEqual(left, [], 'nothing left in the cache');
  });
});

describe('profiles from a newer calibscope', () => {
  async function newer(label: string) {
    const p = await cachedProfile(label);
    const file = path.join(p.dir, 'profile.json');
    const j = JSON.parse(fs.readFileSync(file, 'utf8'));
    j.profile_format_version = PROFILE_FORMAT_VERSION + 1;
    j.calibscope_version = '9.9.9';
    j.some_future_field = { x: 1 };
    fs.writeFileSync(file, JSON.stringify(j));
    return p;
  }

  test('are refused by loadProfile and profileStatus, naming the version', async () => {
    const { model, dir } = await newer('newer');
    const e = await rejectsWith(loadProfile(dir), 'E_BAD_PROFILE', /written by calibscope 9\.9\.9 \(profile format \d+\)/);
    assert.equal(e.details.newer, true);
    await rejectsWith(profileStatus(dir, model), 'E_BAD_PROFILE', /newer|9\.9\.9/);
  });

  test('the CLI refuses it (exit 1, profile untouched); --force replaces it', async () => {
    const { model, cache, dir } = await newer('newer-cli');
    const before = fs.readFileSync(path.join(dir, 'profile.json'), 'utf8');
    expectCliError(cli(['status', model, '--format', 'fp4', '--cache', cache, '--json']), 'E_BAD_PROFILE', 1, ['9.9.9']);
    expectCliError(cli(['calibrate', model, '--format', 'fp4', '--cache', cache, '--json']), 'E_BAD_PROFILE', 1, ['9.9.9', '--force']);
    assert.equal(fs.readFileSync(path.join(dir, 'profile.json'), 'utf8'), before);
    const j = json(cli(['calibrate', model, '--format', 'fp4', '--cache', cache, '--force', '--json']));
    assert.equal(j.cached, false);
    assert.equal(j.profile.profile_format_version, PROFILE_FORMAT_VERSION);
    assert.deepEqual(await loadProfile(dir), j.profile);
  });
});

describe('sign-off and updates', () => {
  test('updateProfile writes semantic_correlation atomically and refuses fixed fields', async () => {
    const { model, dir, profile } = await cachedProfile('update');
    assert.equal(profile.semantic_correlation, null);
    const next = await updateProfile(dir, (p) => {
      p.semantic_correlation = 0.9975;
    });
    assert.equal(next.semantic_correlation, 0.9975);
    assert.deepEqual(await loadProfile(dir), next);
    assert.equal((await profileStatus(dir, model)).state, 'valid');
    for (const [field, value] of [['golden_checkpoint_hash', `sha256:${'0'.repeat(64)}`], ['overall_mse', 0], ['scales_sha256', '1'.repeat(64)]] as const) {
      await rejectsWith(updateProfile(dir, (p) => ({ ...p, [field]: value })), 'E_BAD_ARGUMENT', new RegExp(field));
    }
    await rejectsWith(updateProfile(dir, (p) => ({ ...p, semantic_correlation: 'high' as unknown as number })), 'E_BAD_PROFILE', /semantic_correlation/);
    assert.deepEqual(await loadProfile(dir), next, 'refused updates change nothing');
    assert.deepEqual(fs.readdirSync(dir).filter((n) => n.startsWith('.')), [], 'no temporary files');
  });

  test('signOff records reviewer, decision, note, time and the content hash; the state is signed-off', async () => {
    const { model, cache, dir } = await cachedProfile('signoff');
    const time = new Date('2026-01-02T03:04:05.000Z');
    const signed = await signOff(dir, { reviewer: 'ada', decision: 'approved', note: 'ships', time }, { checkpoint: model });
    assert.deepEqual(signed.review, { reviewer: 'ada', decision: 'approved', note: 'ships', time: time.toISOString(), content_hash: profileContentHash(signed) });
    assert.match(signed.review!.content_hash, /^sha256:[0-9a-f]{64}$/);
    const st = await profileStatus(dir, model, { cacheDir: cache });
    assert.equal(st.state, 'signed-off');
    assert.match(st.reason, /approved by ada.*ships/);

    await rejectsWith(updateProfile(dir, (p) => void (p.semantic_correlation = 0.5)), 'E_BAD_PROFILE', /signed off by ada/);
    await rejectsWith(signOff(dir, { reviewer: 'bob', decision: 'rejected' }), 'E_BAD_PROFILE', /already signed off/);

    // A signed-off profile is reused by the cache.
    const again = await calibrateCached({ cacheDir: cache, model, config: { format: 'fp4' } });
    assert.equal(again.cached, true);
    assert.equal(again.before.state, 'signed-off');

    // Content edited behind the sign-off's back: corrupt.
    const file = path.join(dir, 'profile.json');
    const j = JSON.parse(fs.readFileSync(file, 'utf8'));
    j.semantic_correlation = 0.1;
    fs.writeFileSync(file, JSON.stringify(j));
    const tampered = await profileStatus(dir, model);
    assert.equal(tampered.state, 'corrupt');
    assert.match(tampered.reason, /changed after ada's sign-off/);

    // Clearing the sign-off returns it to valid (the content is the checksum-verified one).
    await clearSignOff(dir);
    assert.equal((await profileStatus(dir, model)).state, 'valid');
  });

  test('signing off a stale profile is refused when the checkpoint is given', async () => {
    const { model, dir } = await cachedProfile('signoff-stale');
    fs.appendFileSync(path.join(model, 'config.json'), '\n');
    await rejectsWith(signOff(dir, { reviewer: 'ada', decision: 'approved' }, { checkpoint: model }), 'E_BAD_PROFILE', /stale/);
  });
});

describe('cache housekeeping and locks', () => {
  test('openCache removes temporary folders and files of dead processes, keeps live ones', async () => {
    const { cache, dir } = await cachedProfile('sweep');
    const modelDir = path.dirname(dir);
    const dead = deadPid();
    const deadTmp = path.join(modelDir, `.fp4-abc.tmp-${dead}-0badc0de`);
    const deadOld = path.join(modelDir, `.fp4-abc.old-${dead}-0badc0de`);
    const liveTmp = path.join(modelDir, `.fp4-abc.tmp-${process.pid}-0badc0de`);
    for (const d of [deadTmp, deadOld, liveTmp]) {
      fs.mkdirSync(d);
      fs.writeFileSync(path.join(d, 'scales.safetensors'), 'x');
    }
    const deadJsonTmp = path.join(dir, `.profile.json.tmp-${dead}-0123456789ab`);
    fs.writeFileSync(deadJsonTmp, '{');
    const deadLock = path.join(modelDir, '.fp4-abc.lock');
    fs.writeFileSync(deadLock, JSON.stringify({ pid: dead, host: os.hostname(), time: '' }));
    const liveLock = path.join(modelDir, '.fp4-def.lock');
    fs.writeFileSync(liveLock, JSON.stringify({ pid: process.pid, host: os.hostname(), time: '' }));
    const removed = await openCache(cache);
    assert.deepEqual(removed.sort(), [deadJsonTmp, deadLock, deadOld, deadTmp].sort());
    assert.ok(fs.existsSync(liveTmp));
    assert.ok(fs.existsSync(liveLock));
    fs.rmSync(liveLock);
    assert.deepEqual(fs.readdirSync(modelDir).filter((n) => n.includes('stale')), []);
    fs.rmSync(liveTmp, { recursive: true });
  });

  test('a cache folder that cannot be written: a clear E_IO, exit 1, nothing calibrated', () => {
    const base = tmpDir('unwritable');
    const file = path.join(base, 'a-file');
    fs.writeFileSync(file, 'not a folder');
    expectCliError(cli(['calibrate', FIXTURE, '--format', 'fp4', '--cache', file, '--json']), 'E_IO', 1, ['cache folder', 'not writable']);
    expectCliError(cli(['calibrate', FIXTURE, '--format', 'fp4', '--cache', path.join(file, 'sub'), '--json']), 'E_IO', 1, ['not writable']);
    if (process.getuid?.() !== 0) {
      // (root writes through permission bits, so this case only runs as a normal user)
      const ro = path.join(base, 'read-only');
      fs.mkdirSync(ro, { mode: 0o555 });
      expectCliError(cli(['calibrate', FIXTURE, '--format', 'fp4', '--cache', ro, '--json']), 'E_IO', 1, ['not writable']);
    }
  });

  test('the lock: a second holder waits for the first; a dead owner’s lock is broken', async () => {
    const dir = path.join(tmpDir('lock'), 'fp4-x');
    const lock = lockPathFor(dir);
    const release = await acquireLock(lock);
    let second = false;
    let waitedFor: number | undefined;
    const p = acquireLock(lock, { onWait: (o) => (waitedFor = o.pid) }).then((rel) => {
      second = true;
      return rel;
    });
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(second, false, 'the second waits while the first holds the lock');
    assert.equal(waitedFor, process.pid);
    await release();
    const release2 = await p;
    assert.equal(second, true);
    await release2();
    assert.ok(!fs.existsSync(lock));

    // A lock left by a killed process.
    fs.writeFileSync(lock, JSON.stringify({ pid: deadPid(), host: os.hostname(), time: '' }));
    const release3 = await acquireLock(lock, { timeoutMs: 5000 });
    assert.equal(JSON.parse(fs.readFileSync(lock, 'utf8')).pid, process.pid);
    await release3();
    assert.deepEqual(fs.readdirSync(path.dirname(lock)), []);

    // Cancelling a wait.
    const held = await acquireLock(lock);
    const ac = new AbortController();
    const waiting = acquireLock(lock, { signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    await rejectsWith(waiting, 'E_CANCELLED');
    await held();
  });
});

describe('CLI: calibrate --cache and status', () => {
  test('cached false, then true, --force false; status reports each state with the reason', () => {
    const model = modelCopy('cli');
    const cache = path.join(tmpDir('cli-cache'), 'cache');
    const st = (extra: string[] = []) => json(cli(['status', model, '--format', 'fp4', '--cache', cache, '--json', ...extra]));

    const missing = st();
    assert.equal(missing.state, 'missing');
    assert.equal(missing.model_id, 'bert-tiny');
    assert.match(missing.profile_path, /calibration[\\/]bert-tiny[\\/]fp4-[0-9a-f]{12}$/);

    const first = json(cli(['calibrate', model, '--format', 'fp4', '--cache', cache, '--json']));
    assert.deepEqual(Object.keys(first).sort(), ['backend', 'cached', 'profile', 'profile_path']);
    assert.equal(first.cached, false);
    assert.equal(first.profile_path, missing.profile_path);
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(first.profile_path, 'profile.json'), 'utf8')), first.profile);

    const second = json(cli(['calibrate', model, '--format', 'fp4', '--cache', cache, '--json']));
    assert.equal(second.cached, true);
    assert.deepEqual(second.profile, first.profile, 'the same profile, not a new one');

    const forced = json(cli(['calibrate', model, '--format', 'fp4', '--cache', cache, '--force', '--json']));
    assert.equal(forced.cached, false);
    assert.notEqual(forced.profile.timestamp, first.profile.timestamp);
    assert.deepEqual(forced.profile.tensor_calibrations, first.profile.tensor_calibrations, 'deterministic');

    // Another config is another profile folder.
    const other = json(cli(['calibrate', model, '--format', 'fp4', '--block-sizes', '64', '--cache', cache, '--json']));
    assert.equal(other.cached, false);
    assert.notEqual(other.profile_path, first.profile_path);
    assert.equal(st(['--block-sizes', '64']).state, 'valid');

    const valid = st();
    assert.equal(valid.state, 'valid');
    assert.equal(valid.checkpoint_hash, forced.profile.golden_checkpoint_hash);
    assert.equal(valid.golden_checkpoint_hash, forced.profile.golden_checkpoint_hash);

    const human = cli(['status', model, '--format', 'fp4', '--cache', cache]);
    assert.equal(human.status, 0, show(human));
    assert.match(human.stdout, /^bert-tiny \(fp4\): valid — checkpoint hash matches/);

    // --profile checks any folder, e.g. one written with --out.
    assert.equal(json(cli(['status', model, '--profile', first.profile_path, '--json'])).state, 'valid');

    const file = path.join(model, 'model.safetensors');
    flipByteKeepMtime(file, dataStart(file) + 7);
    const stale = st();
    assert.equal(stale.state, 'stale');
    assert.match(stale.reason, /checkpoint changed/);
    const recal = json(cli(['calibrate', model, '--format', 'fp4', '--cache', cache, '--json']));
    assert.equal(recal.cached, false);
    assert.equal(recal.profile.golden_checkpoint_hash, stale.checkpoint_hash);

    fs.truncateSync(path.join(recal.profile_path, 'scales.safetensors'), 64);
    const corrupt = st();
    assert.equal(corrupt.state, 'corrupt');
    assert.match(corrupt.reason, /truncated or altered/);
    assert.equal(json(cli(['calibrate', model, '--format', 'fp4', '--cache', cache, '--json'])).cached, false);
    assert.equal(st().state, 'valid');
  });

  test('status of a signed-off profile, and --force drops the sign-off with a note', async () => {
    const { model, cache, dir } = await cachedProfile('cli-signed');
    await signOff(dir, { reviewer: 'grace', decision: 'rejected', note: 'too lossy' });
    const s = json(cli(['status', model, '--format', 'fp4', '--cache', cache, '--json']));
    assert.equal(s.state, 'signed-off');
    assert.match(s.reason, /rejected by grace/);
    assert.equal(s.review.reviewer, 'grace');
    const r = cli(['calibrate', model, '--format', 'fp4', '--cache', cache, '--force']);
    assert.equal(r.status, 0, show(r));
    assert.match(r.stderr, /sign-off \(rejected by grace\) does not carry over/);
    assert.equal((await loadProfile(dir)).review, null);
  });

  test('two processes calibrating the same model into the same cache both succeed, one profile', async () => {
    const model = modelCopy('two');
    const cache = path.join(tmpDir('two-cache'), 'cache');
    const run = (extra: string[]) =>
      new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
        const c = spawn(process.execPath, ['bin/calibscope.js', 'calibrate', model, '--format', 'nvfp4', '--cache', cache, '--json', ...extra], {
          cwd: ROOT,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        let err = '';
        c.stdout.on('data', (d) => (out += d));
        c.stderr.on('data', (d) => (err += d));
        c.on('close', (code) => resolve({ code, out, err }));
      });
    for (const extra of [[], ['--force']]) {
      const rs = await Promise.all([run(extra), run(extra)]);
      for (const r of rs) assert.equal(r.code, 0, `${r.out}\n${r.err}`);
      const js = rs.map((r) => JSON.parse(r.out));
      assert.equal(js[0].profile_path, js[1].profile_path);
      const fresh = js.filter((j) => !j.cached).length;
      if (extra.length === 0) assert.equal(fresh, 1, 'one calibrates, the other waits and reuses it');
      else assert.equal(fresh, 2, '--force: both calibrate, one after the other');
      const onDisk = await loadProfile(js[0].profile_path);
      assert.ok(js.some((j) => JSON.stringify(j.profile) === JSON.stringify(onDisk)), 'the profile on disk is one of the two');
      assert.deepEqual(fs.readdirSync(path.dirname(js[0].profile_path)), [path.basename(js[0].profile_path)], 'no temp folders or lock left');
    }
  });
});
