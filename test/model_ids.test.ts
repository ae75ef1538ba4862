// Model ids name cache folders, and folder names repeat: "model", "checkpoint-1000", a Hugging Face
// hub snapshot's commit hash. A second checkpoint with the same id must not silently replace the
// first one's profile (perhaps signed off); --model-id gives it its own folder, --force replaces.
import assert from 'node:assert/strict';
import type { SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { signOff } from '../src/profiles/store.js';
import { describeRun, runCli, scratchSpace } from './helpers/cli_runner.js';
import { FIXTURES } from './helpers/reference.js';

const { dir: scratch, tmpDir } = scratchSpace('calibscope-ids-');
const env = { XDG_CACHE_HOME: path.join(scratch, 'xdg-cache'), CALIBSCOPE_CACHE: path.join(scratch, 'env-cache') };
const cli = (args: string[]) => runCli(args, { env, timeout: 60_000 });

function json(r: SpawnSyncReturns<string>): any {
  assert.equal(r.status, 0, describeRun(r));
  return JSON.parse(r.stdout);
}

/** A copy of the reference model at `dst`; `flip` changes one weight byte (another checkpoint). */
function modelAt(dst: string, flip = false): string {
  fs.cpSync(path.join(FIXTURES, 'bert-tiny-a', 'model'), dst, { recursive: true });
  if (flip) {
    const file = path.join(dst, 'model.safetensors');
    const b = fs.readFileSync(file);
    const at = 8 + Number(b.readBigUInt64LE(0)) + 100;
    b[at] ^= 1;
    fs.writeFileSync(file, b);
  }
  return dst;
}

describe('two checkpoints whose folders share a name', () => {
  test("the second does not replace the first one's signed-off profile; --model-id gives it its own; --force replaces", async () => {
    const work = tmpDir('same-name');
    const a = modelAt(path.join(work, 'run-a', 'model'));
    const b = modelAt(path.join(work, 'run-b', 'model'), true);
    const cache = path.join(work, 'cache');
    const first = json(cli(['calibrate', a, '--format', 'nvfp4', '--cache', cache, '--json']));
    assert.equal(first.profile.model_id, 'model');
    assert.equal(first.profile.checkpoint_path, path.join(a, 'model.safetensors'));
    await signOff(first.profile_path, { reviewer: 'ada', decision: 'approved', note: '' }, { checkpoint: a, cacheDir: cache });
    const before = fs.readFileSync(path.join(first.profile_path, 'profile.json'), 'utf8');

    const st = json(cli(['status', b, '--format', 'nvfp4', '--cache', cache, '--json']));
    assert.equal(st.state, 'stale');
    assert.match(st.reason, /made from another checkpoint with the same model id 'model': .*run-a/);

    const refused = cli(['calibrate', b, '--format', 'nvfp4', '--cache', cache, '--json']);
    assert.equal(refused.status, 2, describeRun(refused));
    const e = JSON.parse(refused.stdout).error;
    assert.equal(e.code, 'E_BAD_ARGUMENT');
    assert.match(e.message, /belongs to another checkpoint, .*run-a.*model\.safetensors \(approved by ada\).*--model-id ID.*--force/);
    assert.equal(e.details.signed_off, true);
    assert.equal(fs.readFileSync(path.join(first.profile_path, 'profile.json'), 'utf8'), before, "the first model's profile is untouched");
    assert.equal(json(cli(['status', a, '--format', 'nvfp4', '--cache', cache, '--json'])).state, 'signed-off');

    const own = json(cli(['calibrate', b, '--format', 'nvfp4', '--cache', cache, '--model-id', 'run-b/model', '--json']));
    assert.equal(own.profile.model_id, 'run-b/model');
    assert.equal(path.basename(path.dirname(own.profile_path)), 'run-b_model');
    assert.equal(json(cli(['status', b, '--format', 'nvfp4', '--cache', cache, '--model-id', 'run-b/model', '--json'])).state, 'valid');
    assert.equal(json(cli(['status', a, '--format', 'nvfp4', '--cache', cache, '--json'])).state, 'signed-off');

    const forced = cli(['calibrate', b, '--format', 'nvfp4', '--cache', cache, '--force']);
    assert.equal(forced.status, 0, describeRun(forced));
    assert.match(forced.stderr, /sign-off \(approved by ada\) does not carry over/);
    assert.equal(json(cli(['status', a, '--format', 'nvfp4', '--cache', cache, '--json'])).state, 'stale');
  });

  test('a changed checkpoint at the same path is still recalibrated as before (not another model)', () => {
    const work = tmpDir('changed');
    const m = modelAt(path.join(work, 'model'));
    const cache = path.join(work, 'cache');
    json(cli(['calibrate', m, '--format', 'fp4', '--block-sizes', '64', '--cache', cache, '--json']));
    fs.rmSync(m, { recursive: true });
    modelAt(m, true);
    const again = json(cli(['calibrate', m, '--format', 'fp4', '--block-sizes', '64', '--cache', cache, '--json']));
    assert.equal(again.cached, false);
  });

  test('the folder and its sharded index beside model.safetensors are two checkpoints of one id: the second is refused', () => {
    const work = tmpDir('folder-vs-index');
    const m = modelAt(path.join(work, 'm'));
    // A one-shard index over a renamed copy of the weights, with a changed byte (other bytes).
    const shard = path.join(m, 'model-00001-of-00001.safetensors');
    modelAt(path.join(work, 'tmp'), true);
    fs.copyFileSync(path.join(work, 'tmp', 'model.safetensors'), shard);
    const names = Object.keys(JSON.parse(fs.readFileSync(shard).subarray(8, 8 + Number(fs.readFileSync(shard).readBigUInt64LE(0))).toString())).filter((k) => k !== '__metadata__');
    const index = path.join(m, 'model.safetensors.index.json');
    fs.writeFileSync(index, JSON.stringify({ metadata: {}, weight_map: Object.fromEntries(names.map((n) => [n, path.basename(shard)])) }));
    const cache = path.join(work, 'cache');
    json(cli(['calibrate', m, '--format', 'nvfp4', '--cache', cache, '--json']));
    const r = cli(['calibrate', index, '--format', 'nvfp4', '--cache', cache, '--json']);
    assert.equal(r.status, 2, describeRun(r));
    assert.match(JSON.parse(r.stdout).error.message, /belongs to another checkpoint, .*m\/model\.safetensors/);
  });
});

describe('a Hugging Face hub snapshot', () => {
  test('is named after its repository, and a new revision recalibrates the same profile folder', () => {
    const work = tmpDir('hub');
    const repo = path.join(work, 'hub', 'models--BAAI--bge-tiny-test');
    const rev1 = modelAt(path.join(repo, 'snapshots', '0123456789abcdef0123456789abcdef01234567'));
    const cache = path.join(work, 'cache');
    const one = json(cli(['calibrate', rev1, '--format', 'nvfp4', '--cache', cache, '--json']));
    assert.equal(one.profile.model_id, 'BAAI/bge-tiny-test');
    assert.equal(path.basename(path.dirname(one.profile_path)), 'BAAI_bge-tiny-test');
    // The next revision of the same repository is this model changed, not another model.
    const rev2 = modelAt(path.join(repo, 'snapshots', 'fedcba9876543210fedcba9876543210fedcba98'), true);
    const two = json(cli(['calibrate', rev2, '--format', 'nvfp4', '--cache', cache, '--json']));
    assert.equal(two.cached, false);
    assert.equal(two.profile_path, one.profile_path);
    assert.equal(two.profile.checkpoint_path, path.join(rev2, 'model.safetensors'));
  });
});

describe('--model-id', () => {
  test('is checked, and is for one model only', () => {
    const m = modelAt(path.join(tmpDir('bad-id'), 'model'));
    for (const [args, re] of [
      [['calibrate', m, '--format', 'fp4', '--model-id', 'x'.repeat(201)], /--model-id must be a non-empty name of at most 200 characters/],
      [['calibrate', '--pipeline', path.join(m, 'x.json'), '--model-id', 'x'], /--model-id is for one model/],
      [['validate', m, '--profile', m, '--model-id', 'x'], /--model-id names a cached profile/],
    ] as const) {
      const r = cli([...args, '--json']);
      assert.equal(r.status, 2, describeRun(r));
      assert.match(JSON.parse(r.stdout).error.message, re);
    }
  });
});
