// Pipelines end to end through the CLI: `calibrate --pipeline` over copies of bert-tiny-a (and a few
// larger synthetic models for Ctrl-C), manifest errors, `status --pipeline`, concurrent processes,
// and the terminal progress display.
import assert from 'node:assert/strict';
import { spawn, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { encodeSafetensors } from '../src/checkpoints/safetensors_writer.js';
import { PipelineProgress } from '../src/cli/pipeline_progress.js';
import type { ModelCalibrationProfile } from '../src/calibration/types.js';
import { loadProfile } from '../src/profiles/store.js';
import { ROOT, runCli, scratchSpace } from './helpers/cli_runner.js';

const FIXTURE = path.join(ROOT, 'test', 'fixtures', 'reference', 'bert-tiny-a', 'model');

const { dir: scratch, tmpDir } = scratchSpace('calibscope-pipeline-');

const cli = (args: string[]) => runCli(args, { env: { XDG_CACHE_HOME: path.join(scratch, 'xdg') } });

function show(r: { status: number | null; stdout: string; stderr: string }): string {
  return `status ${r.status}\nstdout: ${r.stdout.slice(0, 2000)}\nstderr: ${r.stderr.slice(0, 2000)}`;
}

function json(r: SpawnSyncReturns<string>, exit = 0): any {
  assert.equal(r.status, exit, show(r));
  assert.match(r.stdout, /^[^\n]+\n$/, `one JSON line\n${show(r)}`);
  return JSON.parse(r.stdout);
}

function expectError(r: SpawnSyncReturns<string>, code: string, exit: number, mentions: string[]): any {
  const j = json(r, exit);
  assert.deepEqual(Object.keys(j), ['error']);
  assert.equal(j.error.code, code, j.error.message);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  for (const m of mentions) assert.ok(j.error.message.includes(m), `message mentions ${m}: ${j.error.message}`);
  return j.error;
}

/** `n` copies of bert-tiny-a under `base/models/m<i>` and a manifest listing them. */
function pipeline(label: string, n: number, extra: (i: number) => Record<string, unknown> = () => ({})): { base: string; manifest: string; cache: string; models: string[] } {
  const base = tmpDir(label);
  const models: string[] = [];
  for (let i = 0; i < n; i++) {
    const dir = path.join(base, 'models', `m${i}`);
    fs.mkdirSync(dir, { recursive: true });
    for (const f of ['config.json', 'model.safetensors']) fs.copyFileSync(path.join(FIXTURE, f), path.join(dir, f));
    models.push(dir);
  }
  const manifest = path.join(base, 'pipeline.json');
  fs.writeFileSync(manifest, JSON.stringify({ models: models.map((_, i) => ({ id: `model-${i}`, path: `models/m${i}`, ...extra(i) })) }, null, 2));
  return { base, manifest, cache: path.join(base, 'cache'), models };
}

/** Every folder and file under `dir` whose name marks it as temporary or a lock. */
function leftovers(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[]).filter((p) => /(^|[\\/])\.[^\\/]*\.(tmp|old|lock)/.test(p));
}

describe('calibrate --pipeline', () => {
  test('JSON output, reuse of valid profiles, and recalibration of exactly the changed model', () => {
    const p = pipeline('json', 3);
    const first = json(cli(['calibrate', '--pipeline', p.manifest, '--format', 'fp4', '--cache', p.cache, '--json']));
    assert.deepEqual(Object.keys(first), ['profiles']);
    assert.deepEqual(first.profiles.map((x: any) => x.model_id), ['model-0', 'model-1', 'model-2'], 'manifest order');
    for (const [i, x] of first.profiles.entries()) {
      for (const k of ['model_id', 'profile_path', 'cached', 'overall_mse', 'tensors', 'format', 'state_before']) assert.ok(k in x, k);
      assert.equal(x.cached, false);
      assert.equal(x.state_before, 'missing');
      assert.equal(x.format, 'fp4');
      assert.equal(x.tensors, 16);
      assert.equal(x.model_path, p.models[i]);
      assert.match(x.profile_path, new RegExp(`calibration[\\\\/]model-${i}[\\\\/]fp4-[0-9a-f]{12}$`));
    }
    // Each profile is complete, carries its pipeline id, and matches the single-model calibration.
    const single = json(cli(['calibrate', FIXTURE, '--format', 'fp4', '--out', path.join(p.base, 'single'), '--json']));
    for (const x of first.profiles) {
      const prof = fs.existsSync(x.profile_path) ? JSON.parse(fs.readFileSync(path.join(x.profile_path, 'profile.json'), 'utf8')) : null;
      assert.equal(prof.model_id, x.model_id);
      assert.equal(prof.overall_mse, x.overall_mse);
      assert.deepEqual(prof.tensor_calibrations, single.profile.tensor_calibrations);
    }
    assert.deepEqual(leftovers(p.cache), []);

    const second = json(cli(['calibrate', '--pipeline', p.manifest, '--format', 'fp4', '--cache', p.cache, '--json']));
    assert.deepEqual(second.profiles.map((x: any) => [x.cached, x.state_before]), [[true, 'valid'], [true, 'valid'], [true, 'valid']]);
    assert.deepEqual(second.profiles.map((x: any) => x.overall_mse), first.profiles.map((x: any) => x.overall_mse));

    fs.appendFileSync(path.join(p.models[1], 'config.json'), '\n');
    const third = json(cli(['calibrate', '--pipeline', p.manifest, '--format', 'fp4', '--cache', p.cache, '--json']));
    assert.deepEqual(third.profiles.map((x: any) => [x.cached, x.state_before]), [[true, 'valid'], [false, 'stale'], [true, 'valid']]);

    const forced = json(cli(['calibrate', '--pipeline', p.manifest, '--format', 'fp4', '--cache', p.cache, '--force', '--json']));
    assert.ok(forced.profiles.every((x: any) => x.cached === false));

    const st = json(cli(['status', '--pipeline', p.manifest, '--format', 'fp4', '--cache', p.cache, '--json']));
    assert.deepEqual(st.models.map((m: any) => [m.model_id, m.state]), [['model-0', 'valid'], ['model-1', 'valid'], ['model-2', 'valid']]);

    const human = cli(['calibrate', '--pipeline', p.manifest, '--format', 'fp4', '--cache', p.cache]);
    assert.equal(human.status, 0, show(human));
    assert.match(human.stdout, /^model\s+format\s+profile/m);
    assert.match(human.stdout, /3 models: 0 calibrated, 3 reused/);
  });

  test("a model's own format, include/exclude and block sizes override the command line's", async () => {
    const p = pipeline('override', 3, (i) =>
      i === 0
        ? { format: 'nvfp4', exclude: ['*attention*'], source: 'a note: keys that are no setting are left alone' }
        : i === 1
          ? { block_sizes: [128], block_policy: 'bits', search: 'ternary' }
          : {},
    );
    const out = json(cli(['calibrate', '--pipeline', p.manifest, '--format', 'fp8_e4m3', '--cache', p.cache, '--json']));
    assert.deepEqual(out.profiles.map((x: any) => x.format), ['nvfp4', 'fp8_e4m3', 'fp8_e4m3']);
    const [a, b, c]: ModelCalibrationProfile[] = await Promise.all(out.profiles.map((x: { profile_path: string }) => loadProfile(x.profile_path)));
    assert.ok(Object.keys(a.tensor_calibrations).every((n) => !n.includes('attention')));
    assert.ok(a.skipped_tensors.some((s) => s.name.includes('attention') && s.shape.length === 2));
    assert.deepEqual(b.config.block_sizes, [128]);
    assert.equal(b.config.block_policy, 'bits');
    assert.equal(b.config.search, 'ternary');
    assert.ok(Object.values(b.tensor_calibrations).every((r) => r.block_size === 128));
    assert.deepEqual(c.config.block_sizes, [32, 64, 128, 256]);
    // A manifest where every model names its format needs no --format.
    const all = pipeline('all-formats', 2, () => ({ format: 'mxfp4' }));
    assert.equal(json(cli(['calibrate', '--pipeline', all.manifest, '--cache', all.cache, '--json'])).profiles.length, 2);
  });

  describe('bad manifests: a clear message, non-zero exit, nothing written', () => {
    const cases: [string, (p: ReturnType<typeof pipeline>) => void, string, number, string[]][] = [
      ['not JSON', (p) => fs.writeFileSync(p.manifest, '{"models": [ {"id": "a", '), 'E_BAD_ARGUMENT', 2, ['pipeline.json', 'not valid JSON']],
      ['no models array', (p) => fs.writeFileSync(p.manifest, '{"model": []}'), 'E_BAD_ARGUMENT', 2, ['"models" array']],
      [
        'a missing model',
        (p) => fs.writeFileSync(p.manifest, JSON.stringify({ models: [{ id: 'a', path: 'models/m0' }, { id: 'ghost', path: 'models/nowhere' }] })),
        'E_NOT_FOUND',
        1,
        ["'ghost'", 'models/nowhere', 'does not exist'],
      ],
      [
        'a repeated id',
        (p) => fs.writeFileSync(p.manifest, JSON.stringify({ models: [{ id: 'a', path: 'models/m0' }, { id: 'a', path: 'models/m1' }] })),
        'E_BAD_ARGUMENT',
        2,
        ["id 'a' is repeated", 'models[1]'],
      ],
      [
        'ids that share a cache folder',
        (p) => fs.writeFileSync(p.manifest, JSON.stringify({ models: [{ id: 'org/a', path: 'models/m0' }, { id: 'org_a', path: 'models/m1' }] })),
        'E_BAD_ARGUMENT',
        2,
        ['share the cache folder'],
      ],
      [
        'an unknown format',
        (p) => fs.writeFileSync(p.manifest, JSON.stringify({ models: [{ id: 'a', path: 'models/m0' }, { id: 'b', path: 'models/m1', format: 'fp3' }] })),
        'E_BAD_FORMAT',
        2,
        ["('b')", 'fp3'],
      ],
      [
        'a block size the format does not allow',
        (p) => fs.writeFileSync(p.manifest, JSON.stringify({ models: [{ id: 'a', path: 'models/m0', block_sizes: [16] }] })),
        'E_BAD_BLOCK_SIZE',
        2,
        ["('a')", '16'],
      ],
      [
        'an unknown key',
        (p) => fs.writeFileSync(p.manifest, JSON.stringify({ models: [{ id: 'a', path: 'models/m0', fromat: 'fp4' }] })),
        'E_BAD_ARGUMENT',
        2,
        ['unknown key "fromat"', 'did you mean "format"'],
      ],
      [
        'a misspelt setting',
        (p) => fs.writeFileSync(p.manifest, JSON.stringify({ models: [{ id: 'a', path: 'models/m0', 'block-sizes': [64] }] })),
        'E_BAD_ARGUMENT',
        2,
        ['did you mean "block_sizes"'],
      ],
    ];
    for (const [what, write, code, exit, mentions] of cases) {
      test(what, () => {
        const p = pipeline('bad', 2);
        write(p);
        expectError(cli(['calibrate', '--pipeline', p.manifest, '--format', 'fp4', '--cache', p.cache, '--json']), code, exit, mentions);
        assert.ok(!fs.existsSync(path.join(p.cache, 'calibration')) || fs.readdirSync(path.join(p.cache, 'calibration')).length === 0, 'no profile written');
      });
    }

    test('a missing manifest, and --format missing for a model without one', () => {
      const p = pipeline('bad-misc', 1);
      expectError(cli(['calibrate', '--pipeline', path.join(p.base, 'nope.json'), '--format', 'fp4', '--cache', p.cache, '--json']), 'E_NOT_FOUND', 1, ['nope.json']);
      expectError(cli(['calibrate', '--pipeline', p.manifest, '--cache', p.cache, '--json']), 'E_BAD_FORMAT', 2, ["'model-0'", '--format']);
    });

    test('a broken checkpoint fails its model only; the others are calibrated, the exit is non-zero', () => {
      const p = pipeline('bad-ckpt', 3);
      fs.truncateSync(path.join(p.models[1], 'model.safetensors'), 5000);
      const e = expectError(cli(['calibrate', '--pipeline', p.manifest, '--format', 'fp4', '--cache', p.cache, '--json']), 'E_BAD_CHECKPOINT', 1, [
        '1 of 3 models failed',
        'model-1',
      ]);
      assert.deepEqual(e.details.failed.map((f: any) => f.model_id), ['model-1']);
      assert.deepEqual(e.details.profiles.map((x: any) => x.model_id).sort(), ['model-0', 'model-2']);
      assert.ok(!fs.existsSync(path.join(p.cache, 'calibration', 'model-1')), 'no profile for the broken model');
      assert.deepEqual(leftovers(p.cache), []);
    });
  });
});

describe('concurrency and cancellation', () => {
  function spawnCli(args: string[]) {
    const child = spawn(process.execPath, ['bin/calibscope.js', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const done = new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) =>
      child.on('close', (status) => resolve({ status, stdout, stderr })),
    );
    return { child, done };
  }

  test('two pipeline processes on the same cache both succeed; each model has one valid profile', async () => {
    const p = pipeline('two-procs', 4);
    const args = ['calibrate', '--pipeline', p.manifest, '--format', 'nvfp4', '--cache', p.cache, '--json'];
    const rs = await Promise.all([spawnCli(args).done, spawnCli(args).done]);
    for (const r of rs) assert.equal(r.status, 0, show(r));
    const [a, b] = rs.map((r) => JSON.parse(r.stdout).profiles);
    for (let i = 0; i < 4; i++) {
      assert.equal(a[i].profile_path, b[i].profile_path);
      assert.equal([a[i].cached, b[i].cached].filter((c) => !c).length, 1, `model-${i}: calibrated once, reused once`);
      const prof = await loadProfile(a[i].profile_path);
      assert.equal(prof.model_id, `model-${i}`);
    }
    assert.deepEqual(leftovers(p.cache), []);
  });

  test('two --out processes writing the same folder both succeed (the final rename is race-safe)', async () => {
    const out = path.join(tmpDir('two-out'), 'profile');
    const args = ['calibrate', FIXTURE, '--format', 'fp8_e5m2', '--out', out, '--json'];
    const rs = await Promise.all([spawnCli(args).done, spawnCli(args).done, spawnCli(args).done]);
    for (const r of rs) assert.equal(r.status, 0, show(r));
    const onDisk = await loadProfile(out);
    assert.ok(rs.some((r) => JSON.stringify(JSON.parse(r.stdout).profile) === JSON.stringify(onDisk)));
    assert.deepEqual(fs.readdirSync(path.dirname(out)), ['profile']);
  });

  test('Ctrl-C (SIGINT) stops a pipeline cleanly: exit 130, no half-written profile, no temporaries', async () => {
    // Three larger synthetic models, one at a time, so the interrupt lands mid-calibration.
    const base = tmpDir('sigint');
    const ids: string[] = [];
    for (let m = 0; m < 3; m++) {
      const dir = path.join(base, `big${m}`);
      fs.mkdirSync(dir);
      const tensors = [];
      let x = 977 + m;
      for (let t = 0; t < 10; t++) {
        const data = Buffer.alloc(1024 * 1024 * 2);
        for (let i = 0; i < data.length; i += 2) {
          x = (Math.imul(x, 1103515245) + 12345) >>> 0;
          data.writeUInt16LE(((x >>> 31) << 15) | ((7 + ((x >>> 16) % 10)) << 10) | (x & 0x3ff), i);
        }
        tensors.push({ name: `layer.${t}.weight`, dtype: 'F16', shape: [1024, 1024], data });
      }
      fs.writeFileSync(path.join(dir, 'model.safetensors'), encodeSafetensors(tensors));
      ids.push(`big-${m}`);
    }
    const manifest = path.join(base, 'pipeline.json');
    fs.writeFileSync(manifest, JSON.stringify({ models: ids.map((id, m) => ({ id, path: `big${m}` })) }));
    const cache = path.join(base, 'cache');
    const { child, done } = spawnCli(['calibrate', '--pipeline', manifest, '--format', 'fp4', '--cache', cache, '--jobs', '1', '--json']);

    // Interrupt once a profile is being written (its temporary folder exists).
    const t0 = Date.now();
    const writing = () => {
      try {
        return leftovers(cache).some((p) => /\.tmp-/.test(p));
      } catch {
        return false; // a folder vanished while it was listed: the writer is busy, look again
      }
    };
    let started = false;
    try {
      while (!(started = writing()) && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 20));
    } finally {
      // Also when the wait fails: never leave the child running.
      child.kill('SIGINT');
    }
    assert.ok(started, 'calibration started');
    const r = await done;
    assert.equal(r.status, 130, show(r));
    assert.equal(JSON.parse(r.stdout).error.code, 'E_CANCELLED');
    assert.deepEqual(leftovers(cache), [], 'no temporary folders or locks left');
    // Whatever profile folders exist are complete and valid.
    const calib = path.join(cache, 'calibration');
    let complete = 0;
    for (const id of fs.readdirSync(calib)) {
      for (const prof of fs.readdirSync(path.join(calib, id))) {
        await loadProfile(path.join(calib, id, prof));
        complete++;
      }
    }
    assert.ok(complete < 3, 'the run was interrupted before it finished');
  });
});

describe('terminal progress', () => {
  test('live lines per model and an overall line; a permanent line per finished model', () => {
    let text = '';
    const sink = new Writable({
      write(chunk, _enc, cb) {
        text += String(chunk);
        cb();
      },
    }) as unknown as NodeJS.WriteStream;
    (sink as { columns?: number }).columns = 120;
    const prog = new PipelineProgress([{ id: 'alpha' }, { id: 'beta' }], sink, true);
    prog.update({ type: 'queued', index: 0, bytes: 300 });
    prog.update({ type: 'queued', index: 1, bytes: 100 });
    prog.update({ type: 'phase', index: 0, phase: 'calibrating' });
    prog.update({ type: 'done', index: 1, profile: { model_id: 'beta', cached: true, state_before: 'valid' } as any });
    prog.update({ type: 'progress', index: 0, progress: { tensorsDone: 1, tensorsTotal: 2, elementsDone: 50, elementsTotal: 100, tensor: 'w1' } });
    prog.done();
    assert.match(text, /ok\s+beta\s+valid, reused/);
    assert.match(text, /alpha\s+\[[#.]+\]\s+\d+%\s+calibrating/);
    // beta's weight is done (100 of 400): 25% overall before alpha moves.
    assert.match(text, /overall\s+\[#+\.*\]\s+25%\s+1\/2 models/);
    assert.match(text, /\x1b\[\d+A/, 'redrawn in place');
    // Disabled (not a TTY): silent.
    let quiet = '';
    const q = new Writable({ write: (c, _e, cb) => ((quiet += String(c)), cb()) }) as unknown as NodeJS.WriteStream;
    const off = new PipelineProgress([{ id: 'x' }], q, false);
    off.update({ type: 'phase', index: 0, phase: 'calibrating' });
    off.done();
    assert.equal(quiet, '');
  });
});
