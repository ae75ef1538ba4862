// End-to-end tests of the `calibscope` CLI: real processes on the bert-tiny-a fixture and on
// hand-made broken checkpoints. The files the CLI writes are read back with a parser written here,
// so the checks do not share code with the writer they check.
import assert from 'node:assert/strict';
import type { SpawnSyncReturns } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { encodeSafetensors, type TensorToWrite } from '../src/checkpoints/safetensors_writer.js';
import { ROOT, describeRun, runCli, scratchSpace } from './helpers/cli_runner.js';

const MODEL = path.join(ROOT, 'test', 'fixtures', 'reference', 'bert-tiny-a', 'model');
const MODEL_FILE = path.join(MODEL, 'model.safetensors');

const { dir: scratch, tmpDir } = scratchSpace('calibscope-cli-');

// ---------------------------------------------------------------------------------------------
// Running the CLI

// A private cache, so no run can touch the user's real one.
const cli = (args: string[]) => runCli(args, { env: { XDG_CACHE_HOME: path.join(scratch, 'cache') }, timeout: 60_000 });


/** stdout must be exactly one line of JSON. */
function oneJsonLine(r: SpawnSyncReturns<string>): any {
  assert.match(r.stdout, /^[^\n]+\n$/, `expected exactly one JSON line on stdout\n${describeRun(r)}`);
  return JSON.parse(r.stdout);
}

interface Calibrated {
  dir: string;
  out: { profile_path: string; profile: any };
  profile: any;
}

function calibrate(label: string, args: string[], model = MODEL): Calibrated {
  const dir = path.join(tmpDir(label), 'profile');
  const r = cli(['calibrate', model, ...args, '--out', dir, '--json']);
  assert.equal(r.status, 0, describeRun(r));
  const out = oneJsonLine(r);
  assert.deepEqual(Object.keys(out).sort(), ['backend', 'profile', 'profile_path']);
  return { dir, out, profile: out.profile };
}

/** Checks the error contract: non-zero exit, one `{"error": {code, message, details}}` line. */
function expectError(r: SpawnSyncReturns<string>, code: string, opts: { exit?: number; mentions?: string[] } = {}): any {
  assert.equal(r.signal, null, `the process must exit, not die\n${describeRun(r)}`);
  assert.equal(typeof r.status, 'number', describeRun(r));
  assert.notEqual(r.status, 0, describeRun(r));
  if (opts.exit !== undefined) assert.equal(r.status, opts.exit, describeRun(r));
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace: bad input is not a crash');
  const j = oneJsonLine(r);
  assert.deepEqual(Object.keys(j), ['error']);
  assert.deepEqual(Object.keys(j.error).sort(), ['code', 'details', 'message']);
  assert.equal(j.error.code, code, j.error.message);
  assert.equal(typeof j.error.message, 'string');
  assert.ok(j.error.details !== null && typeof j.error.details === 'object' && !Array.isArray(j.error.details));
  for (const m of opts.mentions ?? []) assert.ok(j.error.message.includes(m), `message should mention ${m}: ${j.error.message}`);
  if (typeof j.error.details.tensor === 'string') {
    assert.ok(j.error.message.includes(j.error.details.tensor), `message should name tensor ${j.error.details.tensor}: ${j.error.message}`);
  }
  return j.error;
}

/** Nothing at `out` and no `.out.tmp-*` / `.out.old-*` siblings. */
function assertNoProfile(out: string): void {
  assert.ok(!fs.existsSync(out), `${out} must not exist after a failed run`);
  const leftovers = fs.readdirSync(path.dirname(out)).filter((n) => n.startsWith(`.${path.basename(out)}.`));
  assert.deepEqual(leftovers, [], 'no temporary folders left beside the output');
}

// ---------------------------------------------------------------------------------------------
// Reading safetensors back (independent of src/checkpoints)

interface StEntry {
  dtype: string;
  shape: number[];
  data: Buffer;
}

function readSt(file: string): { names: string[]; tensors: Map<string, StEntry>; metadata: Record<string, string> } {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const dataStart = 8 + n;
  const tensors = new Map<string, StEntry>();
  const names: string[] = [];
  let end = 0;
  for (const [name, e] of Object.entries<any>(header)) {
    if (name === '__metadata__') continue;
    const [b, f] = e.data_offsets as [number, number];
    assert.ok(b <= f && dataStart + f <= buf.byteLength, `${file}: ${name} offsets in range`);
    end = Math.max(end, f);
    names.push(name);
    tensors.set(name, { dtype: e.dtype, shape: e.shape, data: buf.subarray(dataStart + b, dataStart + f) });
  }
  assert.equal(dataStart + end, buf.byteLength, `${file}: no trailing bytes`);
  return { names, tensors, metadata: header.__metadata__ ?? {} };
}

function f32s(e: StEntry): Float32Array {
  assert.equal(e.dtype, 'F32');
  return new Float32Array(e.data.buffer.slice(e.data.byteOffset, e.data.byteOffset + e.data.byteLength));
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

function absmaxF16(e: StEntry): number {
  assert.equal(e.dtype, 'F16');
  let m = 0;
  for (let i = 0; i < e.data.byteLength; i += 2) m = Math.max(m, Math.abs(halfToFloat(e.data.readUInt16LE(i))));
  return m;
}

/** E4M3 "fn": bias 7, no infinities, 0x7f/0xff NaN. */
function e4m3Decode(code: number): number {
  const sign = code & 0x80 ? -1 : 1;
  const e = (code >> 3) & 0xf;
  const m = code & 7;
  if (e === 15 && m === 7) return NaN;
  if (e === 0) return sign * (m / 8) * 2 ** -6;
  return sign * (1 + m / 8) * 2 ** (e - 7);
}

function sha256Hex(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** The documented checkpoint hash (src/checkpoints/hash.ts), recomputed for the fixture folder. */
function fixtureCheckpointHash(): string {
  const h = createHash('sha256');
  for (const rel of ['config.json', 'model.safetensors']) {
    const data = fs.readFileSync(path.join(MODEL, rel));
    h.update(Buffer.from(`${rel}\0${data.byteLength}\0`, 'utf8'));
    h.update(data);
  }
  return `sha256:${h.digest('hex')}`;
}

// ---------------------------------------------------------------------------------------------
// Building test checkpoints

/** Deterministic normal F16 values in about ±[0.004, 4]: bit patterns, so no conversion is needed. */
function f16Data(numel: number, seed: number): Buffer {
  const out = Buffer.alloc(numel * 2);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < numel; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const sign = (x >>> 31) << 15;
    const exp = 7 + ((x >>> 16) % 10); // 2^-8 .. 2^1
    out.writeUInt16LE(sign | (exp << 10) | (x & 0x3ff), i * 2);
  }
  return out;
}

function modelDir(label: string, tensors: TensorToWrite[]): { dir: string; file: string } {
  const dir = path.join(tmpDir(label), 'model');
  fs.mkdirSync(dir);
  const file = path.join(dir, 'model.safetensors');
  fs.writeFileSync(file, encodeSafetensors(tensors));
  return { dir, file };
}

/** A safetensors image with an arbitrary header (object or literal text) and data section. */
function rawModel(label: string, header: unknown, data: Uint8Array, declaredLength?: number): { dir: string; file: string } {
  const dir = path.join(tmpDir(label), 'model');
  fs.mkdirSync(dir);
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(declaredLength ?? json.byteLength));
  const file = path.join(dir, 'model.safetensors');
  fs.writeFileSync(file, Buffer.concat([prefix, json, data]));
  return { dir, file };
}

// ---------------------------------------------------------------------------------------------
// The fixture's own tensors, for the checks below

const fixture = readSt(MODEL_FILE);
const twoD = fixture.names.filter((n) => fixture.tensors.get(n)!.shape.length >= 2);
const oneD = fixture.names.filter((n) => fixture.tensors.get(n)!.shape.length < 2);

const SCHEME: Record<string, { elementBits: number; scaleBits: number; globalBits: number; encoding: string; sizes: number[] }> = {
  fp4: { elementBits: 4, scaleBits: 32, globalBits: 0, encoding: 'fp32', sizes: [64, 128, 256] },
  fp8_e4m3: { elementBits: 8, scaleBits: 32, globalBits: 0, encoding: 'fp32', sizes: [32, 64, 128, 256] },
  fp8_e5m2: { elementBits: 8, scaleBits: 32, globalBits: 0, encoding: 'fp32', sizes: [32, 64, 128, 256] },
  nvfp4: { elementBits: 4, scaleBits: 8, globalBits: 32, encoding: 'e4m3_x_fp32', sizes: [16] },
  mxfp4: { elementBits: 4, scaleBits: 8, globalBits: 0, encoding: 'ue8m0', sizes: [32] },
  mxfp8: { elementBits: 8, scaleBits: 8, globalBits: 0, encoding: 'ue8m0', sizes: [32] },
};

describe('calibrate the bert-tiny-a fixture', () => {
  test('the fixture is what these tests assume: F16, 1-D and 2-D tensors', () => {
    assert.ok(fixture.names.every((n) => fixture.tensors.get(n)!.dtype === 'F16'));
    assert.ok(twoD.length > 0 && oneD.length > 0);
  });

  for (const format of Object.keys(SCHEME)) {
    test(`--format ${format}: JSON, profile.json and scales.safetensors agree and follow the conventions`, () => {
      const spec = SCHEME[format];
      const { dir, out, profile } = calibrate(`fmt-${format}`, ['--format', format]);
      assert.equal(out.profile_path, path.resolve(dir));

      assert.equal(profile.model_id, 'model');
      assert.equal(profile.format, format);
      assert.ok(typeof profile.timestamp === 'string' && !Number.isNaN(Date.parse(profile.timestamp)), profile.timestamp);
      assert.equal(profile.semantic_correlation, null);
      assert.match(profile.golden_checkpoint_hash, /^sha256:[0-9a-f]{64}$/);
      assert.equal(profile.golden_checkpoint_hash, fixtureCheckpointHash());

      // Only 2-D tensors are calibrated; every 1-D one is reported as skipped.
      assert.deepEqual(Object.keys(profile.tensor_calibrations).sort(), [...twoD].sort());
      assert.deepEqual(profile.skipped_tensors.map((s: any) => s.name).sort(), [...oneD].sort());
      for (const s of profile.skipped_tensors) assert.ok(typeof s.reason === 'string' && s.reason.length > 0);

      let weighted = 0;
      let total = 0;
      for (const [name, r] of Object.entries<any>(profile.tensor_calibrations)) {
        const w = fixture.tensors.get(name)!;
        for (const k of ['tensor_name', 'format', 'block_size', 'mse_before', 'mse_after', 'improvement_ratio', 'outlier_count', 'shape', 'numel', 'scale_encoding', 'bits_per_weight']) {
          assert.ok(k in r, `${name}: ${k}`);
        }
        assert.equal(r.tensor_name, name);
        assert.equal(r.format, format);
        assert.deepEqual(r.shape, w.shape);
        assert.equal(r.numel, w.shape.reduce((a, b) => a * b, 1));
        assert.equal(r.scale_encoding, spec.encoding);
        assert.ok(spec.sizes.includes(r.block_size), `${name}: block ${r.block_size}`);
        assert.ok(Number.isFinite(r.mse_before) && Number.isFinite(r.mse_after), name);
        assert.ok(r.mse_after <= r.mse_before, `${name}: ${r.mse_after} > ${r.mse_before}`);
        assert.equal(r.improvement_ratio, r.mse_before / r.mse_after, name);
        assert.ok(Number.isInteger(r.outlier_count) && r.outlier_count >= 0);
        // The scheme's storage cost (where the block fits the row evenly; see the block > row test below).
        const cols = w.shape[w.shape.length - 1];
        if (cols % r.block_size === 0) {
          assert.equal(r.bits_per_weight, spec.elementBits + spec.scaleBits / r.block_size + spec.globalBits / r.numel, name);
        }
        weighted += r.mse_after * r.numel;
        total += r.numel;
      }
      assert.ok(Math.abs(profile.overall_mse - weighted / total) <= 1e-12 * weighted / total, 'overall_mse is the numel-weighted mean');

      // Spot values from DESIGN's table, on the tensors that got the block size in question.
      const spot: Record<string, [number, (numel: number) => number]> = {
        fp4: [64, () => 4.5],
        fp8_e4m3: [32, () => 9],
        fp8_e5m2: [32, () => 9],
        nvfp4: [16, (numel) => 4.5 + 32 / numel],
        mxfp4: [32, () => 4.25],
        mxfp8: [32, () => 8.25],
      };
      const [spotBlock, spotBits] = spot[format];
      const spotted = Object.values<any>(profile.tensor_calibrations).filter((r) => r.block_size === spotBlock);
      assert.ok(spotted.length > 0, `some tensor uses block ${spotBlock}`);
      for (const r of spotted) assert.equal(r.bits_per_weight, spotBits(r.numel), r.tensor_name);

      // profile.json is the JSON's profile; scales_sha256 is the scales file's checksum.
      assert.deepEqual(fs.readdirSync(dir).filter((n) => n.startsWith('.')), []);
      const onDisk = JSON.parse(fs.readFileSync(path.join(dir, 'profile.json'), 'utf8'));
      assert.deepEqual(onDisk, profile);
      const scalesFile = path.join(dir, 'scales.safetensors');
      assert.equal(profile.scales_sha256, sha256Hex(scalesFile));

      const scales = readSt(scalesFile);
      const expected: string[] = [];
      for (const [name, r] of Object.entries<any>(profile.tensor_calibrations)) {
        const w = fixture.tensors.get(name)!;
        const cols = w.shape[w.shape.length - 1];
        const rows = r.numel / cols;
        const shape = [rows, Math.ceil(cols / r.block_size)];
        expected.push(name);
        const s = scales.tensors.get(name);
        assert.ok(s, `scales for ${name}`);
        assert.deepEqual(s.shape, shape, name);
        const sv = f32s(s);
        assert.equal(sv.length, shape[0] * shape[1]);
        assert.ok(sv.every((v) => Number.isFinite(v) && v > 0), `${name}: scales are positive and finite`);
        if (spec.encoding === 'fp32') continue;

        expected.push(`${name}:codes`);
        const c = scales.tensors.get(`${name}:codes`);
        assert.ok(c, `codes for ${name}`);
        assert.equal(c.dtype, 'U8');
        assert.deepEqual(c.shape, shape);
        if (spec.encoding === 'ue8m0') {
          // MX: s = 1/decode = 2^(127 - code), a power of two.
          for (let i = 0; i < sv.length; i++) {
            assert.ok(c.data[i] !== 255, `${name}[${i}]: 0xff is NaN in E8M0`);
            assert.equal(sv[i], 2 ** (127 - c.data[i]), `${name}[${i}]`);
          }
        } else {
          expected.push(`${name}:global`);
          const g = scales.tensors.get(`${name}:global`);
          assert.ok(g, `global scale for ${name}`);
          assert.deepEqual(g.shape, [1]);
          const gv = f32s(g)[0];
          // g = absmax / (6·448) in float32 (one division of exact values, so fround of the double quotient).
          assert.equal(gv, Math.fround(absmaxF16(w) / (6 * 448)), `${name}: global scale`);
          assert.equal(r.global_scale, gv, `${name}: profile's global_scale`);
          // s = 1 / (E4M3(code) · g), each step in float32; codes are positive, finite E4M3 values.
          for (let i = 0; i < sv.length; i++) {
            const code: number = c.data[i];
            assert.ok(code >= 1 && code <= 126, `${name}[${i}]: code ${code}`);
            assert.equal(sv[i], Math.fround(1 / Math.fround(e4m3Decode(code) * gv)), `${name}[${i}]`);
          }
        }
      }
      assert.deepEqual([...scales.names].sort(), expected.sort(), 'exactly the calibrated tensors, plus :codes/:global');
    });
  }

  test('determinism: byte-identical scales across runs and thread counts', () => {
    for (const format of ['fp8_e4m3', 'nvfp4']) {
      const a = calibrate(`det-a-${format}`, ['--format', format]);
      const b = calibrate(`det-b-${format}`, ['--format', format]);
      const c = calibrate(`det-c-${format}`, ['--format', format, '--threads', '1']);
      const bytes = (x: Calibrated, f: string) => fs.readFileSync(path.join(x.dir, f));
      for (const f of ['scales.safetensors', 'diagnostics.safetensors']) {
        assert.ok(bytes(a, f).equals(bytes(b, f)), `${format} ${f}: run 1 vs run 2`);
        assert.ok(bytes(a, f).equals(bytes(c, f)), `${format} ${f}: default threads vs --threads 1`);
      }
      assert.deepEqual(b.profile.tensor_calibrations, a.profile.tensor_calibrations);
      assert.deepEqual(c.profile.tensor_calibrations, a.profile.tensor_calibrations);
      assert.equal(c.profile.overall_mse, a.profile.overall_mse);
    }
  });

  describe('block-size policies over 64,128,256 (fp4)', () => {
    let minMse: any;
    let bits: any;
    before(() => {
      minMse = calibrate('pol-min', ['--format', 'fp4', '--block-sizes', '64,128,256', '--block-policy', 'min-mse']).profile;
      bits = calibrate('pol-bits', ['--format', 'fp4', '--block-sizes', '64,128,256', '--block-policy', 'bits', '--bits-tolerance', '1']).profile;
    });

    test('min-mse picks the least-MSE size: the smallest, larger ones provably dominated (exact search)', () => {
      for (const [name, r] of Object.entries<any>(minMse.tensor_calibrations)) {
        // Only 64 is evaluated: a larger block's best scale is available to each of its halves.
        assert.deepEqual(r.block_sizes_tried.map((t: any) => t.block_size), [64], name);
        assert.deepEqual(r.block_sizes_dominated, [128, 256], name);
        // The bits run evaluates every size: 64 has the least MSE there too, and the same value.
        const all = bits.tensor_calibrations[name].block_sizes_tried as { block_size: number; mse_after: number }[];
        assert.deepEqual(all.map((t) => t.block_size), [64, 128, 256], name);
        const best = Math.min(...all.map((t) => t.mse_after));
        assert.equal(all[0].mse_after, best, name);
        assert.equal(r.block_size, 64, name);
        assert.equal(r.mse_after, best, name);
      }
    });

    test('bits with tolerance 1 picks the largest block within 2× the least MSE: 256 wherever it qualifies', () => {
      let at256 = 0;
      for (const [name, r] of Object.entries<any>(bits.tensor_calibrations)) {
        const tried = r.block_sizes_tried as { block_size: number; mse_after: number }[];
        assert.deepEqual(tried.map((t) => t.block_size), [64, 128, 256], `${name}: the bits policy evaluates every size`);
        assert.deepEqual(r.block_sizes_dominated, [], name);
        const best = Math.min(...tried.map((t) => t.mse_after));
        const want = Math.max(...tried.filter((t) => t.mse_after <= best * 2).map((t) => t.block_size));
        assert.equal(r.block_size, want, name);
        assert.equal(r.mse_after, tried.find((t) => t.block_size === want)!.mse_after, name);
        if (tried.find((t) => t.block_size === 256)!.mse_after <= 2 * best) {
          assert.equal(r.block_size, 256, name);
          at256++;
        }
      }
      // On this fixture only the [128, 512] output.dense weights lose more than 2× at 256.
      assert.ok(at256 >= Object.keys(bits.tensor_calibrations).length - 2, `256 chosen for ${at256} tensors`);
      assert.ok(bits.overall_mse >= minMse.overall_mse);
    });

    test('bits_per_weight counts the scales actually stored when the block is longer than the row', () => {
      // A 256 block on a 128-wide row stores one scale per 128 weights (DESIGN: a row's last block is
      // shorter and has its own scale), i.e. 4 + 32/128 bits per weight, not 4 + 32/256.
      for (const [name, r] of Object.entries<any>(bits.tensor_calibrations)) {
        const cols = r.shape[r.shape.length - 1];
        const rows = r.numel / cols;
        const stored = rows * Math.ceil(cols / r.block_size);
        assert.equal(r.bits_per_weight, 4 + (32 * stored) / r.numel, `${name}: block ${r.block_size}, ${cols} columns`);
      }
    });
  });

  test('--search: exact <= ternary <= naive, and naive does not change the error', () => {
    const p: Record<string, any> = {};
    for (const s of ['exact', 'ternary', 'naive']) p[s] = calibrate(`search-${s}`, ['--format', 'fp4', '--search', s]).profile;
    assert.ok(p.exact.overall_mse <= p.ternary.overall_mse, `exact ${p.exact.overall_mse} > ternary ${p.ternary.overall_mse}`);
    assert.ok(p.ternary.overall_mse <= p.naive.overall_mse, `ternary ${p.ternary.overall_mse} > naive ${p.naive.overall_mse}`);
    assert.ok(p.exact.overall_mse < p.naive.overall_mse, 'the exact search improves on absmax scaling');
    for (const [name, n] of Object.entries<any>(p.naive.tensor_calibrations)) {
      assert.equal(n.search, 'naive');
      assert.equal(n.mse_after, n.mse_before, name);
      assert.equal(n.improvement_ratio, 1, name);
      // The naive error does not depend on the search, and exact is optimal per block, so per tensor too.
      assert.equal(p.exact.tensor_calibrations[name].mse_before, n.mse_before, name);
      assert.ok(p.exact.tensor_calibrations[name].mse_after <= p.ternary.tensor_calibrations[name].mse_after, name);
    }
  });

  test('human output: a table of tensors and the profile path', () => {
    const dir = path.join(tmpDir('human'), 'profile');
    const r = cli(['calibrate', MODEL, '--format', 'mxfp4', '--out', dir]);
    assert.equal(r.status, 0, describeRun(r));
    for (const name of twoD) assert.ok(r.stdout.includes(name), `table lists ${name}`);
    const lines = r.stdout.split('\n');
    assert.ok(lines.some((l) => /^tensor\s+shape\s+block/.test(l)), 'table header');
    assert.ok(lines.includes(`profile: ${dir}`), r.stdout);
    assert.ok(fs.existsSync(path.join(dir, 'profile.json')));
  });
});

test('info --json: version, threads, SIMD and CUDA status', () => {
  const r = cli(['info', '--json']);
  assert.equal(r.status, 0, describeRun(r));
  const info = oneJsonLine(r);
  assert.match(info.version, /^\d+\.\d+\.\d+/);
  assert.ok(Number.isInteger(info.threads) && info.threads >= 1);
  assert.ok(typeof info.simd === 'string' && info.simd.length > 0);
  assert.equal(typeof info.cuda.compiled, 'boolean');
  assert.equal(typeof info.cuda.available, 'boolean');
  assert.equal(typeof info.cuda.reason, 'string');
  assert.ok(Array.isArray(info.cuda.devices));
  if (!info.cuda.compiled) assert.equal(info.cuda.available, false);
  // What --backend auto picks here (test/backend.test.ts checks the rest of the backend story).
  assert.equal(info.auto_backend, info.cuda.available ? 'cuda' : 'cpu');
});

test('calibrate --help lists --backend', () => {
  const r = cli(['calibrate', '--help']);
  assert.equal(r.status, 0, describeRun(r));
  assert.match(r.stdout, /--backend B\s+auto \| cpu \| cuda/);
});

// ---------------------------------------------------------------------------------------------

describe('bad input: a clear error, a non-zero exit, no profile', () => {
  /** Runs calibrate on `model` with a fresh --out and checks nothing was left there. */
  function failing(model: string, args: string[], code: string, opts: { exit?: number; mentions?: string[] } = {}): any {
    const out = path.join(tmpDir('out'), 'out');
    const r = cli(['calibrate', model, ...args, '--out', out, '--json']);
    const err = expectError(r, code, opts);
    assertNoProfile(out);
    return err;
  }

  test('a truncated file: names the file and the first tensor past the end', () => {
    const whole = fs.readFileSync(MODEL_FILE);
    const dir = path.join(tmpDir('trunc'), 'model');
    fs.mkdirSync(dir);
    const file = path.join(dir, 'model.safetensors');
    fs.writeFileSync(file, whole.subarray(0, Math.floor(whole.byteLength / 2)));
    const err = failing(dir, ['--format', 'nvfp4'], 'E_BAD_CHECKPOINT', { mentions: [file] });
    assert.equal(typeof err.details.tensor, 'string', 'the tensor that runs past the end is named');
    assert.ok(fixture.names.includes(err.details.tensor));
  });

  test('a header length past the end of the file', () => {
    const { dir, file } = rawModel('hdrlen', '{"w":', new Uint8Array(16), 1_000_000);
    failing(dir, ['--format', 'fp4'], 'E_BAD_CHECKPOINT', { mentions: [file, 'header length'] });
  });

  test('a header that is not JSON', () => {
    const { dir, file } = rawModel('notjson', 'this is {not json', new Uint8Array(0));
    failing(dir, ['--format', 'fp4'], 'E_BAD_CHECKPOINT', { mentions: [file, 'JSON'] });
  });

  test('data offsets out of range', () => {
    const { dir, file } = rawModel('range', { 'w.weight': { dtype: 'F16', shape: [2, 64], data_offsets: [256, 512] } }, f16Data(128, 1));
    const err = failing(dir, ['--format', 'fp8_e4m3'], 'E_BAD_CHECKPOINT', { mentions: [file, 'w.weight'] });
    assert.equal(err.details.tensor, 'w.weight');
  });

  test('overlapping data offsets', () => {
    const header = {
      'a.weight': { dtype: 'F16', shape: [2, 64], data_offsets: [0, 256] },
      'b.weight': { dtype: 'F16', shape: [2, 64], data_offsets: [128, 384] },
    };
    const { dir, file } = rawModel('overlap', header, f16Data(192, 2));
    const err = failing(dir, ['--format', 'fp8_e4m3'], 'E_BAD_CHECKPOINT', { mentions: [file, 'overlap', 'a.weight', 'b.weight'] });
    assert.equal(err.details.tensor, 'b.weight');
  });

  test('data offsets that do not match shape × dtype', () => {
    const { dir, file } = rawModel('mismatch', { 'w.weight': { dtype: 'F16', shape: [2, 64], data_offsets: [0, 200] } }, f16Data(100, 3));
    const err = failing(dir, ['--format', 'fp8_e4m3'], 'E_BAD_CHECKPOINT', { mentions: [file, 'w.weight', '200', '256'] });
    assert.equal(err.details.tensor, 'w.weight');
  });

  test('only unsupported dtypes: E_NOTHING_TO_CALIBRATE says why', () => {
    const { dir, file } = modelDir('unsupported', [
      { name: 'ids', dtype: 'I32', shape: [4, 64], data: new Uint8Array(4 * 64 * 4) },
      { name: 'w64', dtype: 'F64', shape: [4, 64], data: new Uint8Array(4 * 64 * 8) },
    ]);
    const err = failing(dir, ['--format', 'fp8_e4m3'], 'E_NOTHING_TO_CALIBRATE', { mentions: [file, 'I32', 'F64'] });
    const skipped = err.details.skipped as { name: string; reason: string }[];
    assert.deepEqual(skipped.map((s) => s.name).sort(), ['ids', 'w64']);
    assert.match(skipped.find((s) => s.name === 'ids')!.reason, /I32/);
    assert.match(skipped.find((s) => s.name === 'w64')!.reason, /F64/);
  });

  test('F16 and I32 mixed: the F16 weight is calibrated, the I32 one skipped with a reason', () => {
    const { dir } = modelDir('mixed', [
      { name: 'ids', dtype: 'I32', shape: [4, 64], data: new Uint8Array(4 * 64 * 4) },
      { name: 'w.weight', dtype: 'F16', shape: [4, 64], data: f16Data(256, 4) },
    ]);
    const { profile } = calibrate('mixed-out', ['--format', 'fp8_e4m3'], dir);
    assert.deepEqual(Object.keys(profile.tensor_calibrations), ['w.weight']);
    assert.equal(profile.skipped_tensors.length, 1);
    assert.equal(profile.skipped_tensors[0].name, 'ids');
    assert.match(profile.skipped_tensors[0].reason, /I32/);
  });

  describe('NaN and Inf weights', () => {
    // [4, 64] F16: NaN at flat 70 = [1, 6], +Inf at 200 = [3, 8], -Inf at 201.
    const data = f16Data(256, 5);
    data.writeUInt16LE(0x7e00, 70 * 2);
    data.writeUInt16LE(0x7c00, 200 * 2);
    data.writeUInt16LE(0xfc00, 201 * 2);
    const tensors: TensorToWrite[] = [
      { name: 'ok.weight', dtype: 'F16', shape: [4, 64], data: f16Data(256, 6) },
      { name: 'bad.weight', dtype: 'F16', shape: [4, 64], data },
    ];

    test('fail with E_NONFINITE naming the tensor, the count and the first position', () => {
      const { dir, file } = modelDir('nonfinite', tensors);
      const err = failing(dir, ['--format', 'nvfp4'], 'E_NONFINITE', { mentions: [file, 'bad.weight', '3', '[1, 6]', '--allow-nonfinite'] });
      assert.equal(err.details.tensor, 'bad.weight');
      assert.equal(err.details.count, 3);
      assert.deepEqual(err.details.first_position, [1, 6]);
    });

    test('--allow-nonfinite excludes them and succeeds', () => {
      const { dir } = modelDir('nonfinite-ok', tensors);
      const { profile } = calibrate('nonfinite-ok-out', ['--format', 'nvfp4', '--allow-nonfinite'], dir);
      const bad = profile.tensor_calibrations['bad.weight'];
      assert.equal(bad.nonfinite_excluded, 3);
      assert.ok(Number.isFinite(bad.mse_before) && Number.isFinite(bad.mse_after) && bad.mse_after <= bad.mse_before);
      assert.equal(profile.tensor_calibrations['ok.weight'].nonfinite_excluded, 0);
      assert.ok(Number.isFinite(profile.overall_mse));
    });
  });

  test('an empty 2-D tensor: E_EMPTY_TENSOR naming it, nothing half-written', () => {
    // A good tensor first, so the failure comes after something was already written.
    const { dir, file } = modelDir('empty', [
      { name: 'a.weight', dtype: 'F16', shape: [4, 64], data: f16Data(256, 7) },
      { name: 'empty.weight', dtype: 'F16', shape: [0, 64], data: new Uint8Array(0) },
    ]);
    const err = failing(dir, ['--format', 'fp8_e4m3'], 'E_EMPTY_TENSOR', { mentions: [file, 'empty.weight'] });
    assert.equal(err.details.tensor, 'empty.weight');
  });

  test('a block size the scheme does not allow: E_BAD_BLOCK_SIZE, exit 2', () => {
    failing(MODEL, ['--format', 'fp4', '--block-sizes', '32'], 'E_BAD_BLOCK_SIZE', { exit: 2, mentions: ['32', 'fp4'] });
  });

  test('an unknown format: E_BAD_FORMAT, exit 2', () => {
    failing(MODEL, ['--format', 'fp3'], 'E_BAD_FORMAT', { exit: 2, mentions: ['fp3'] });
  });

  test('a missing folder: E_NOT_FOUND naming it', () => {
    const missing = path.join(tmpDir('missing'), 'nope', 'model');
    failing(missing, ['--format', 'fp4'], 'E_NOT_FOUND', { mentions: [missing] });
  });

  test('an unknown option: exit 2', () => {
    failing(MODEL, ['--format', 'fp4', '--frobnicate'], 'E_BAD_ARGUMENT', { exit: 2, mentions: ['--frobnicate'] });
  });
});

describe('the --out folder', () => {
  test('an existing folder that is not a profile is refused and left untouched', () => {
    const parent = tmpDir('user-folder');
    const out = path.join(parent, 'mine');
    fs.mkdirSync(path.join(out, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(out, 'notes.txt'), 'keep me');
    fs.writeFileSync(path.join(out, 'sub', 'data.bin'), Buffer.from([1, 2, 3]));
    const r = cli(['calibrate', MODEL, '--format', 'mxfp8', '--out', out, '--json']);
    expectError(r, 'E_BAD_ARGUMENT', { mentions: [out] });
    assert.deepEqual(fs.readdirSync(out).sort(), ['notes.txt', 'sub']);
    assert.equal(fs.readFileSync(path.join(out, 'notes.txt'), 'utf8'), 'keep me');
    assert.deepEqual([...fs.readFileSync(path.join(out, 'sub', 'data.bin'))], [1, 2, 3]);
    assert.deepEqual(fs.readdirSync(out, { recursive: true }).map(String).sort(), ['notes.txt', 'sub', path.join('sub', 'data.bin')]);
    assert.deepEqual(fs.readdirSync(parent), ['mine'], 'no temporary folders left beside it');
  });

  test('a failed run removes the parent folders it created', () => {
    const base = tmpDir('parents');
    const out = path.join(base, 'a', 'b', 'out');
    const r = cli(['calibrate', MODEL, '--format', 'fp4', '--include', 'nomatch*', '--out', out, '--json']);
    expectError(r, 'E_NOTHING_TO_CALIBRATE');
    assert.deepEqual(fs.readdirSync(base), []);
  });

  test('an error removed entirely is an improvement ratio of null, not Infinity', () => {
    // Alternating 4 and 3: at the naive scale 6/4, 3 × 1.5 = 4.5 rounds to 4 (an error); at the
    // scale 1 both values are on the E2M1 grid, so the calibrated error is exactly 0.
    const data = new Float32Array(128).map((_, i) => (i % 2 ? 3 : 4));
    const { dir } = modelDir('zero-error', [{ name: 'w', dtype: 'F32', shape: [2, 64], data: new Uint8Array(data.buffer) }]);
    const out = path.join(tmpDir('zero-error-out'), 'p');
    const r = cli(['calibrate', dir, '--format', 'fp4', '--out', out, '--json']);
    assert.equal(r.status, 0, describeRun(r));
    const t = oneJsonLine(r).profile.tensor_calibrations.w;
    assert.ok(t.mse_before > 0);
    assert.equal(t.mse_after, 0);
    assert.equal(t.improvement_ratio, null);
    // A zero error ties every block size: they are all evaluated, and the larger block wins the tie.
    assert.deepEqual(t.block_sizes_dominated, []);
    assert.equal(t.block_size, 256);
  });

  test('an existing profile is replaced by the new calibration', () => {
    const parent = tmpDir('replace');
    const out = path.join(parent, 'profile');
    const first = cli(['calibrate', MODEL, '--format', 'fp4', '--out', out, '--json']);
    assert.equal(first.status, 0, describeRun(first));
    assert.ok(fs.existsSync(path.join(out, 'diagnostics.safetensors')));
    const second = cli(['calibrate', MODEL, '--format', 'mxfp4', '--no-diagnostics', '--out', out, '--json']);
    assert.equal(second.status, 0, describeRun(second));
    const { profile } = oneJsonLine(second);
    const onDisk = JSON.parse(fs.readFileSync(path.join(out, 'profile.json'), 'utf8'));
    assert.equal(onDisk.format, 'mxfp4');
    assert.deepEqual(onDisk, profile);
    // The whole folder is the new one: the old run's diagnostics do not linger.
    assert.deepEqual(fs.readdirSync(out).sort(), ['profile.json', 'scales.safetensors']);
    assert.equal(onDisk.scales_sha256, sha256Hex(path.join(out, 'scales.safetensors')));
    assert.ok(readSt(path.join(out, 'scales.safetensors')).tensors.has('pooler.dense.weight:codes'));
    assert.deepEqual(fs.readdirSync(parent), ['profile'], 'no .old or .tmp folders left beside it');
  });
});
