// The backend choice (auto | cpu | cuda): validation, that it stays out of the config hash, that the
// CPU results do not change with it, E_CUDA where there is no GPU (and for a CUDA failure mid-run,
// with a stand-in addon), `info`, and block-by-block parity of the CUDA backends with the CPU where
// the addon has them (skipped, with the reason, where it does not).
import assert from 'node:assert/strict';
import type { SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { parseBackend, profileBackend, resolveBackend } from '../src/calibration/backend.js';
import { QuantizationCalibrator } from '../src/calibration/calibrator.js';
import { configHash, makeConfig } from '../src/calibration/config.js';
import { calibrateTensorData, type TensorCalibration, type TensorData } from '../src/calibration/tensor_calibration.js';
import { native, type NativeAddon, type NativeBackend } from '../src/native/index.js';
import { calibrateCached } from '../src/profiles/cache.js';
import { loadProfile } from '../src/profiles/store.js';
import { WorkbenchService } from '../src/service/service.js';
import { CalibscopeError } from '../src/util/errors.js';
import { toFloat16Bits, trainedLike } from '../src/util/trained_like.js';
import { ROOT, describeRun, runCli, scratchSpace } from './helpers/cli_runner.js';

const MODEL = path.join(ROOT, 'test', 'fixtures', 'reference', 'bert-tiny-a', 'model');
const { dir: scratch, tmpDir } = scratchSpace('calibscope-backend-');
const cli = (args: string[]) => runCli(args, { env: { XDG_CACHE_HOME: path.join(scratch, 'xdg') }, timeout: 60_000 });

const CUDA = native().info().cuda;
const NO_GPU_REASON = CUDA.reason;

function oneJson(r: SpawnSyncReturns<string>, exit = 0): any {
  assert.equal(r.status, exit, describeRun(r));
  assert.match(r.stdout, /^[^\n]+\n$/, `one JSON line\n${describeRun(r)}`);
  return JSON.parse(r.stdout);
}

function expectError(r: SpawnSyncReturns<string>, code: string, exit: number, mentions: string[] = []): any {
  assert.equal(r.signal, null, describeRun(r));
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  const j = oneJson(r, exit);
  assert.deepEqual(Object.keys(j), ['error']);
  assert.equal(j.error.code, code, j.error.message);
  for (const m of mentions) assert.ok(j.error.message.includes(m), `message mentions ${m}: ${j.error.message}`);
  return j.error;
}

/** Nothing at `dir`, and no temporary or lock siblings beside it. */
function assertNothingAt(dir: string): void {
  assert.ok(!fs.existsSync(dir), `${dir} must not exist`);
  if (fs.existsSync(path.dirname(dir))) {
    const left = fs.readdirSync(path.dirname(dir)).filter((n) => n.startsWith(`.${path.basename(dir)}.`));
    assert.deepEqual(left, [], 'no temporary folders beside it');
  }
}

function manifest(label: string, extra: Record<string, unknown> = {}): string {
  const file = path.join(tmpDir(label), 'pipeline.json');
  fs.writeFileSync(file, JSON.stringify({ models: [{ id: 'tiny', path: MODEL, ...extra }] }));
  return file;
}

const bytes = (dir: string, f: string) => fs.readFileSync(path.join(dir, f));

describe('choosing the backend', () => {
  test('parseBackend and makeConfig: auto by default, a bad value is E_BAD_ARGUMENT', () => {
    assert.equal(parseBackend(undefined), 'auto');
    for (const b of ['auto', 'cpu', 'cuda']) assert.equal(makeConfig({ format: 'fp4', backend: b }).backend, b);
    assert.equal(makeConfig({ format: 'fp4' }).backend, 'auto');
    for (const bad of ['gpu', 'CUDA', '', 'cuda-emulated']) {
      assert.throws(() => makeConfig({ format: 'fp4', backend: bad }), (e: CalibscopeError) => e.code === 'E_BAD_ARGUMENT' && /backend/.test(e.message), bad);
    }
  });

  test('the backend is not part of the config hash: every choice names the same profile folder', () => {
    const h = (backend?: string) => configHash(makeConfig({ format: 'nvfp4', backend }));
    assert.equal(h('cpu'), h(undefined));
    assert.equal(h('cuda'), h(undefined));
    assert.equal(h('auto'), h(undefined));
  });

  test('auto is cuda exactly when the addon says a device is usable', () => {
    assert.equal(resolveBackend('auto'), CUDA.available ? 'cuda' : 'cpu');
    assert.equal(resolveBackend('cpu'), 'cpu');
  });

  test('--backend with a bad value: E_BAD_ARGUMENT, exit 2, nothing written (model, pipeline, serve)', () => {
    const out = path.join(tmpDir('bad'), 'profile');
    const cache = path.join(tmpDir('bad-cache'), 'cache');
    expectError(cli(['calibrate', MODEL, '--format', 'fp4', '--backend', 'gpu', '--out', out, '--json']), 'E_BAD_ARGUMENT', 2, ['gpu', 'auto, cpu, cuda']);
    assertNothingAt(out);
    const err = expectError(cli(['calibrate', '--pipeline', manifest('bad-pipe'), '--format', 'fp4', '--backend', 'GPU', '--cache', cache, '--json']), 'E_BAD_ARGUMENT', 2, ['GPU']);
    assert.ok(!err.message.includes('pipeline.json'), `a flag's error, not the manifest's: ${err.message}`);
    assertNothingAt(cache);
    expectError(cli(['calibrate', MODEL, '--format', 'fp4', '--backend', '--json']), 'E_BAD_ARGUMENT', 2, ['--backend']);
    expectError(cli(['serve', '--backend', 'tpu', '--no-open', '--json']), 'E_BAD_ARGUMENT', 2, ['tpu']);
  });

  test('a pipeline manifest may not name a backend per model (it belongs to the machine)', () => {
    const cache = path.join(tmpDir('manifest-backend'), 'cache');
    expectError(cli(['calibrate', '--pipeline', manifest('m-backend', { backend: 'cpu' }), '--format', 'fp4', '--cache', cache, '--json']), 'E_BAD_ARGUMENT', 2, [
      '"backend"',
      '--backend',
    ]);
    assertNothingAt(cache);
  });
});

describe('the CPU results do not depend on the backend option', () => {
  test('--backend cpu and auto give the profile of a run without the option, byte for byte in the scales', () => {
    const run = (label: string, extra: string[]) => {
      const dir = path.join(tmpDir(label), 'profile');
      const out = oneJson(cli(['calibrate', MODEL, '--format', 'nvfp4', ...extra, '--out', dir, '--json']));
      return { dir, out };
    };
    const plain = run('plain', []);
    const cpu = run('cpu', ['--backend', 'cpu']);
    const auto = run('auto', ['--backend', 'auto']);
    const autoRan = CUDA.available ? 'cuda' : 'cpu';
    assert.equal(cpu.out.backend, 'cpu');
    assert.equal(cpu.out.profile.backend, 'cpu', 'profile.json records the backend that ran');
    assert.equal(cpu.out.profile.config.backend, 'cpu', 'and the config the one asked for');
    assert.equal(plain.out.backend, autoRan);
    assert.equal(auto.out.backend, autoRan);
    assert.equal(plain.out.profile.config.backend, 'auto');
    for (const x of [cpu, auto]) {
      for (const f of ['scales.safetensors', 'diagnostics.safetensors']) assert.ok(bytes(x.dir, f).equals(bytes(plain.dir, f)), `${f} of ${x.dir}`);
      assert.deepEqual(x.out.profile.tensor_calibrations, plain.out.profile.tensor_calibrations);
      assert.equal(x.out.profile.overall_mse, plain.out.profile.overall_mse);
      assert.equal(x.out.profile.scales_sha256, plain.out.profile.scales_sha256);
    }
    const human = cli(['calibrate', MODEL, '--format', 'fp4', '--backend', 'cpu', '--out', path.join(tmpDir('human'), 'p')]);
    assert.equal(human.status, 0, describeRun(human));
    assert.match(human.stdout, / on cpu\b/);
  });

  test('the cache: a profile made with one backend is reused under another (same folder)', () => {
    const cache = path.join(tmpDir('reuse'), 'cache');
    const first = oneJson(cli(['calibrate', MODEL, '--format', 'fp4', '--backend', 'cpu', '--cache', cache, '--json']));
    assert.equal(first.cached, false);
    const second = oneJson(cli(['calibrate', MODEL, '--format', 'fp4', '--backend', 'auto', '--cache', cache, '--json']));
    assert.equal(second.cached, true);
    assert.equal(second.profile_path, first.profile_path);
    assert.equal(second.backend, 'cpu', 'the backend that made the reused profile');
  });

  test('a pipeline records the backend per model, in --json and in the table', () => {
    const cache = path.join(tmpDir('pipe'), 'cache');
    const file = manifest('pipe');
    const j = oneJson(cli(['calibrate', '--pipeline', file, '--format', 'fp4', '--backend', 'cpu', '--cache', cache, '--json']));
    assert.equal(j.profiles.length, 1);
    assert.equal(j.profiles[0].backend, 'cpu');
    const human = cli(['calibrate', '--pipeline', file, '--format', 'fp4', '--backend', 'cpu', '--cache', cache]);
    assert.equal(human.status, 0, describeRun(human));
    assert.match(human.stdout, /backend/);
  });

  test('profiles written before backends existed still load, and count as cpu', async () => {
    const dir = path.join(tmpDir('old'), 'profile');
    oneJson(cli(['calibrate', MODEL, '--format', 'fp4', '--backend', 'cpu', '--out', dir, '--json']));
    const file = path.join(dir, 'profile.json');
    const p = JSON.parse(fs.readFileSync(file, 'utf8'));
    delete p.backend;
    delete p.config.backend;
    fs.writeFileSync(file, JSON.stringify(p, null, 2));
    const loaded = await loadProfile(dir);
    assert.equal(loaded.backend, undefined);
    assert.equal(profileBackend(loaded), 'cpu');
  });
});

describe('--backend cuda without a usable GPU', () => {
  const skip = CUDA.available ? 'a CUDA device is usable here, so --backend cuda does not fail' : false;

  test('calibrate --out: E_CUDA with the reason, exit 1, no profile folder', { skip }, () => {
    const out = path.join(tmpDir('cuda-out'), 'profile');
    const err = expectError(cli(['calibrate', MODEL, '--format', 'fp4', '--backend', 'cuda', '--out', out, '--json']), 'E_CUDA', 1, [CUDA.reason]);
    assert.equal(err.details.backend, 'cuda');
    assert.equal(err.details.reason, CUDA.reason);
    assertNothingAt(out);
  });

  test('calibrate --cache and --pipeline: E_CUDA, exit 1, the cache is not even created', { skip }, () => {
    const cache = path.join(tmpDir('cuda-cache'), 'cache');
    expectError(cli(['calibrate', MODEL, '--format', 'fp4', '--backend', 'cuda', '--cache', cache, '--json']), 'E_CUDA', 1, [CUDA.reason]);
    assertNothingAt(cache);
    expectError(cli(['calibrate', '--pipeline', manifest('cuda-pipe'), '--format', 'fp4', '--backend', 'cuda', '--cache', cache, '--json']), 'E_CUDA', 1);
    assertNothingAt(cache);
    const human = cli(['calibrate', MODEL, '--format', 'fp4', '--backend', 'cuda', '--cache', cache]);
    assert.equal(human.status, 1, describeRun(human));
    assert.match(human.stderr, /error E_CUDA: .*no usable CUDA device/);
  });

  test('the API refuses before writing: calibrateModel with backend cuda', { skip }, async () => {
    const out = path.join(tmpDir('cuda-api'), 'profile');
    await assert.rejects(new QuantizationCalibrator({ format: 'fp4', backend: 'cuda' }).calibrateModel(MODEL, { outDir: out }), (e: CalibscopeError) => e.code === 'E_CUDA');
    assertNothingAt(out);
  });
});

describe('info', () => {
  test('--json: the CUDA status, its devices and what auto picks', () => {
    const j = oneJson(cli(['info', '--json']));
    assert.deepEqual(Object.keys(j.cuda).sort(), ['available', 'compiled', 'devices', 'reason']);
    assert.equal(j.cuda.available, CUDA.available);
    assert.equal(j.cuda.compiled, CUDA.compiled);
    assert.equal(j.cuda.reason, CUDA.reason);
    assert.equal(j.auto_backend, CUDA.available ? 'cuda' : 'cpu');
    if (j.cuda.available) assert.equal(j.cuda.reason, '');
    else assert.ok(j.cuda.reason.length > 0, 'a reason when there is no usable device');
    assert.equal(j.cuda.devices.length, CUDA.devices.length);
    for (const d of j.cuda.devices) {
      assert.deepEqual(Object.keys(d).sort(), ['compute_capability', 'index', 'multiprocessors', 'name', 'total_memory_bytes', 'total_memory_gib']);
      assert.match(d.compute_capability, /^\d+\.\d+$/);
      assert.ok(d.total_memory_bytes > 0 && Math.abs(d.total_memory_gib - d.total_memory_bytes / 2 ** 30) < 0.01);
    }
  });

  test('human output: the devices, or why there is none', () => {
    const r = cli(['info']);
    assert.equal(r.status, 0, describeRun(r));
    if (CUDA.available) {
      for (const d of CUDA.devices) assert.ok(r.stdout.includes(d.name) && r.stdout.includes(`compute capability ${d.computeCapability}`), r.stdout);
    } else {
      assert.ok(r.stdout.includes(`cuda: not available`) && r.stdout.includes(CUDA.reason), r.stdout);
    }
    assert.match(r.stdout, /--backend auto runs on (cpu|cuda)/);
  });
});

// ---------------------------------------------------------------------------------------------
// A stand-in addon: the GPU paths of the TypeScript side, where there is no GPU.

/** Runs `fn` with info() claiming a usable device and calibrate() replaced; restores both. */
async function withFakeGpu<T>(calibrate: NativeAddon['calibrate'], fn: () => Promise<T>): Promise<T> {
  const addon = native();
  const { info, calibrate: real } = addon;
  addon.info = () => {
    const i = info();
    return {
      ...i,
      cuda: { compiled: true, available: true, reason: '', devices: [{ index: 0, name: 'Test GPU', totalMemory: 80 * 2 ** 30, computeCapability: '9.0', multiprocessors: 132 }] },
    };
  };
  addon.calibrate = calibrate;
  try {
    return await fn();
  } finally {
    addon.info = info;
    addon.calibrate = real;
  }
}

describe('with a stand-in GPU', () => {
  test('auto runs on cuda when a device is usable, and the profile says so', async () => {
    const real = native().calibrate;
    const asked: (string | undefined)[] = [];
    const out = path.join(tmpDir('fake-auto'), 'profile');
    const cpuOut = path.join(tmpDir('fake-cpu'), 'profile');
    const { profile } = await withFakeGpu(
      async (w, o) => {
        asked.push(o.backend);
        return { ...(await real(w, { ...o, backend: 'cpu' })), backend: o.backend };
      },
      () => new QuantizationCalibrator({ format: 'fp4' }).calibrateModel(MODEL, { outDir: out }),
    );
    assert.ok(asked.length > 0 && asked.every((b) => b === 'cuda'), `every search asked for cuda: ${asked.join(',')}`);
    assert.equal(profile.backend, 'cuda');
    assert.equal(profile.config.backend, 'auto');
    await new QuantizationCalibrator({ format: 'fp4', backend: 'cpu' }).calibrateModel(MODEL, { outDir: cpuOut });
    assert.ok(bytes(out, 'scales.safetensors').equals(bytes(cpuOut, 'scales.safetensors')));
  });

  test('a CUDA failure mid-run: E_CUDA naming the tensor, no partial profile, no cache folder', async (t) => {
    const real = native().calibrate;
    let calls = 0;
    const failing: NativeAddon['calibrate'] = async (w, o) => {
      if (o.backend === 'cuda' && ++calls === 3) {
        throw Object.assign(new Error('CUDA error: out of memory (cudaMalloc of 12.0 MiB)'), { code: 'E_CUDA' });
      }
      return { ...(await real(w, { ...o, backend: 'cpu' })), backend: o.backend };
    };
    const out = path.join(tmpDir('fake-oom'), 'profile');
    const err = await withFakeGpu(failing, () =>
      new QuantizationCalibrator({ format: 'fp4', backend: 'cuda' }).calibrateModel(MODEL, { outDir: out }).then(
        () => assert.fail('must fail'),
        (e: CalibscopeError) => e,
      ),
    );
    assert.equal(err.code, 'E_CUDA');
    assert.equal(typeof err.details.tensor, 'string');
    assert.ok(err.message.includes(err.details.tensor as string), err.message);
    assert.match(err.message, /out of memory/);
    assert.equal(err.details.backend, 'cuda');
    t.diagnostic(err.message);
    assertNothingAt(out);

    calls = 0;
    const cache = path.join(tmpDir('fake-oom-cache'), 'cache');
    fs.mkdirSync(cache, { recursive: true });
    await withFakeGpu(failing, () =>
      assert.rejects(calibrateCached({ cacheDir: cache, model: MODEL, config: { format: 'fp4', backend: 'auto' } }), (e: CalibscopeError) => e.code === 'E_CUDA'),
    );
    assert.deepEqual(fs.readdirSync(path.join(cache, 'calibration')), [], 'no model folder, profile or lock left in the cache');
  });
});

describe('the workbench service', () => {
  test('calibrations and re-runs use auto unless the service is told otherwise', async () => {
    const cache = tmpDir('svc');
    const service = new WorkbenchService({ cacheDir: cache, mode: 'browser' });
    const real = native().calibrate;
    const asked: (string | undefined)[] = [];
    try {
      await service.openModel(MODEL, 'fp4');
      const m = service.current.models[0];
      assert.equal(m.config.backend, 'auto');
      await withFakeGpu(
        async (w, o) => {
          asked.push(o.backend);
          return { ...(await real(w, { ...o, backend: 'cpu' })), backend: o.backend };
        },
        async () => {
          const job = await service.waitForJob((await service.call('calibrate.model', { modelId: m.id })).id);
          assert.equal(job?.status, 'done', JSON.stringify(job?.error));
          const n = asked.length;
          const rerun = await service.waitForJob(
            (await service.call('calibrate.tensor', { modelId: m.id, tensor: 'encoder.layer.0.attention.self.query.weight', blockSizes: [128] })).id,
          );
          assert.equal(rerun?.status, 'done', JSON.stringify(rerun?.error));
          assert.ok(asked.length > n, 'the re-run searched');
        },
      );
      assert.ok(asked.every((b) => b === 'cuda'), `auto took the (stand-in) GPU every time: ${asked.join(',')}`);
      assert.equal((await loadProfile(m.profileDir)).backend, 'cuda');
    } finally {
      await service.shutdown();
    }
    const cpuService = new WorkbenchService({ cacheDir: cache, mode: 'browser', backend: 'cpu' });
    try {
      await cpuService.openModel(MODEL, 'fp4');
      assert.equal(cpuService.current.models[0].config.backend, 'cpu');
    } finally {
      await cpuService.shutdown();
    }
    assert.throws(() => new WorkbenchService({ cacheDir: cache, mode: 'browser', backend: 'gpu' as never }), (e: CalibscopeError) => e.code === 'E_BAD_ARGUMENT');
  });
});

// ---------------------------------------------------------------------------------------------
// Parity: the CUDA backends against the CPU, block by block.

/** A trained-like F16 tensor of an odd shape: rows not a multiple of anything, a partial last block. */
function oddTensor(rows: number, cols: number, seed: number): TensorData {
  const bits = toFloat16Bits(trainedLike(rows, cols, { seed }));
  return { name: `odd.${rows}x${cols}.weight`, dtype: 'F16', shape: [rows, cols], data: new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength) };
}

const PARITY_CASES: { format: string; block_sizes?: number[]; search?: string }[] = [
  { format: 'fp4', block_sizes: [64, 256] },
  { format: 'nvfp4' },
  { format: 'mxfp4' },
  { format: 'mxfp8' },
  { format: 'fp8_e4m3', block_sizes: [32, 128] },
  { format: 'fp8_e5m2', block_sizes: [64] },
  { format: 'fp4', block_sizes: [64], search: 'ternary' },
  { format: 'nvfp4', search: 'naive' },
];

function assertSameCalibration(got: TensorCalibration, want: TensorCalibration, what: string): void {
  assert.equal(got.rows, want.rows, what);
  assert.equal(got.blocksPerRow, want.blocksPerRow, what);
  const same = (a: ArrayLike<number> | undefined, b: ArrayLike<number> | undefined, name: string) => {
    assert.equal(a === undefined, b === undefined, `${what}: ${name} present on both`);
    if (!a || !b) return;
    assert.equal(a.length, b.length, `${what}: ${name} length`);
    for (let i = 0; i < a.length; i++) {
      // Object.is: bit-identical, -0 and NaN included.
      if (!Object.is(a[i], b[i])) assert.fail(`${what}: ${name} differs at block [${Math.floor(i / want.blocksPerRow)}, ${i % want.blocksPerRow}]: ${a[i]} vs ${b[i]}`);
    }
  };
  same(got.scales, want.scales, 'scales');
  same(got.codes, want.codes, 'codes');
  same(got.blockMseBefore, want.blockMseBefore, 'MSE before');
  same(got.blockMseAfter, want.blockMseAfter, 'MSE after');
  same(got.blockOutliers, want.blockOutliers, 'outliers');
  assert.equal(got.globalScale, want.globalScale, `${what}: global scale`);
  assert.deepEqual(got.result, want.result, `${what}: the result (sums, block size, outliers)`);
}

async function parity(backend: NativeBackend, t: { skip: (reason: string) => void }, threads = 2): Promise<void> {
  for (const [rows, cols] of [
    [37, 300],
    [5, 1000],
  ]) {
    const tensor = oddTensor(rows, cols, rows * 7919 + cols);
    for (const c of PARITY_CASES) {
      // The bits policy evaluates every block size (min-mse skips those the smallest dominates).
      const config = makeConfig({ ...c, block_policy: 'bits' });
      const cpu = await calibrateTensorData(tensor, config, { backend: 'cpu', threads: 2 });
      let other: TensorCalibration;
      try {
        other = await calibrateTensorData(tensor, config, { backend, threads });
      } catch (err) {
        // The emulation is a test aid an addon may build only with its CUDA kernels.
        if (backend === 'cuda-emulated' && (err as CalibscopeError).code === 'E_CUDA') {
          t.skip(`the addon does not run the cuda-emulated backend: ${(err as Error).message}`);
          return;
        }
        throw err;
      }
      if (other.backend !== backend) {
        t.skip(`the addon does not provide the ${backend} backend yet (it ran ${other.backend})`);
        return;
      }
      assertSameCalibration(other, cpu, `${backend} vs cpu, ${c.format}${c.search ? ` ${c.search}` : ''} [${rows}×${cols}]`);
    }
  }
}

describe('parity with the CPU, block by block', () => {
  test('the comparison itself, where it can always run: cpu with one thread against cpu with two', async (t) => {
    await parity('cpu', t, 1);
  });

  test('cuda: same scales, codes, per-block MSEs, outliers and sums', { skip: CUDA.available ? false : NO_GPU_REASON }, async (t) => {
    await parity('cuda', t);
  });

  test('cuda-emulated (the GPU per-block code on CPU threads)', async (t) => {
    await parity('cuda-emulated', t);
  });
});
