import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { openCheckpoint } from '../src/checkpoints/checkpoint.js';
import { checkpointHash, hashFiles, hashOrder, sha256File } from '../src/checkpoints/hash.js';
import { SafetensorsFile } from '../src/checkpoints/safetensors.js';
import { encodeSafetensors, SafetensorsAppendWriter, SafetensorsStreamWriter, writeSafetensors } from '../src/checkpoints/safetensors_writer.js';
import { removeStaleTemps, writeFileAtomic } from '../src/util/atomic.js';
import { CalibscopeError } from '../src/util/errors.js';

const FIXTURES = path.resolve(__dirname, '..', '..', 'test', 'fixtures', 'reference');
const TINY_MODEL = path.join(FIXTURES, 'bert-tiny-a', 'model');
const TINY_ST = path.join(FIXTURES, 'bert-tiny-a', 'sentence_transformer');

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'calibscope-ckpt-'));
after(() => fs.rmSync(scratch, { recursive: true, force: true }));
let dirCount = 0;
function tmpDir(label: string): string {
  const d = path.join(scratch, `${label}-${dirCount++}`);
  fs.mkdirSync(d);
  return d;
}

function f32(values: number[]): Uint8Array {
  return new Uint8Array(new Float32Array(values).buffer);
}
function bytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed * 7) & 0xff;
  return out;
}

/** A raw safetensors image with an arbitrary header (object or literal text) and data section. */
function rawFile(dir: string, header: unknown, data: Uint8Array = new Uint8Array(0), name = 'model.safetensors'): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.byteLength));
  const file = path.join(dir, name);
  fs.writeFileSync(file, Buffer.concat([prefix, json, data]));
  return file;
}

async function rejectsWith(p: Promise<unknown>, code: string, mentions: string[]): Promise<CalibscopeError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof CalibscopeError, `expected a CalibscopeError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    for (const m of mentions) assert.ok(err.message.includes(m), `message should mention ${m}: ${err.message}`);
    return err;
  }
  assert.fail(`expected ${code}`);
}

describe('reference fixture bert-tiny-a', () => {
  test('the HF model folder', async () => {
    const ckpt = await openCheckpoint(TINY_MODEL);
    try {
      assert.equal(ckpt.modelId, 'model');
      assert.equal(ckpt.root, TINY_MODEL);
      assert.deepEqual(ckpt.files, [path.join(TINY_MODEL, 'model.safetensors')]);
      assert.equal(ckpt.configPath, path.join(TINY_MODEL, 'config.json'));
      assert.equal(ckpt.indexPath, null);
      assert.equal(ckpt.tensors.length, 39);
      assert.ok(ckpt.tensors.every((t) => t.dtype === 'F16' && t.knownDtype));
      assert.equal(ckpt.tensors[0].name, 'embeddings.LayerNorm.bias');
      const word = ckpt.tensor('embeddings.word_embeddings.weight')!;
      assert.deepEqual(word.shape, [2715, 128]);
      assert.equal(word.numel, 2715 * 128);
      assert.equal(word.byteLength, 2715 * 128 * 2);
      assert.deepEqual(ckpt.tensor('encoder.layer.1.output.dense.weight')!.shape, [128, 512]);
      assert.deepEqual(ckpt.tensor('pooler.dense.bias')!.shape, [128]);

      // The bytes must be exactly the file's range: header is 4120 bytes, this tensor starts 512 into the data.
      const pos = ckpt.tensor('embeddings.position_embeddings.weight')!;
      assert.equal(pos.byteOffset, 8 + 4120 + 512);
      const got = await ckpt.readTensor(pos);
      const whole = fs.readFileSync(ckpt.files[0]);
      assert.ok(got.equals(whole.subarray(pos.byteOffset, pos.byteOffset + pos.byteLength)));
      assert.equal(got.byteLength, 128 * 128 * 2);
    } finally {
      await ckpt.close();
    }
  });

  test('the sentence-transformers folder, the file itself, and its metadata', async () => {
    const st = await openCheckpoint(TINY_ST);
    const direct = await openCheckpoint(path.join(TINY_MODEL, 'model.safetensors'));
    const sf = await SafetensorsFile.open(path.join(TINY_MODEL, 'model.safetensors'));
    try {
      assert.equal(st.modelId, 'sentence_transformer');
      assert.deepEqual(st.tensors.map((t) => t.name), direct.tensors.map((t) => t.name));
      assert.equal(direct.modelId, 'model');
      assert.equal(direct.configPath, path.join(TINY_MODEL, 'config.json'));
      assert.deepEqual(sf.metadata, { format: 'pt' });
      assert.equal(sf.tensors.length, 39);
    } finally {
      await Promise.all([st.close(), direct.close(), sf.close()]);
    }
  });

  test('fp8_ref.safetensors: a lone file named by its stem, F32 and I16 contents', async () => {
    const ckpt = await openCheckpoint(path.join(FIXTURES, 'fp8_ref.safetensors'));
    try {
      assert.equal(ckpt.modelId, 'fp8_ref');
      assert.equal(ckpt.configPath, null);
      const grid = ckpt.tensor('grid_e4m3')!;
      const buf = await ckpt.readTensor(grid);
      const values = new Float32Array(buf.buffer, buf.byteOffset, grid.numel);
      assert.equal(values[0], 0);
      assert.equal(values[values.length - 1], 448);
      const bits = ckpt.tensor('fp16_bits')!;
      assert.equal(bits.dtype, 'I16');
      const b = await ckpt.readTensor(bits);
      assert.equal(b.readInt16LE(0), -32768);
      assert.equal(b.readInt16LE(b.byteLength - 2), 32767);
    } finally {
      await ckpt.close();
    }
  });
});

describe('other layouts', () => {
  test('an older sentence-transformers folder keeps its weights in the Transformer module folder', async () => {
    const dir = tmpDir('st-old');
    const sub = path.join(dir, '0_Transformer');
    fs.mkdirSync(sub);
    fs.mkdirSync(path.join(dir, '1_Pooling'));
    fs.writeFileSync(
      path.join(dir, 'modules.json'),
      JSON.stringify([
        { idx: 0, name: '0', path: '0_Transformer', type: 'sentence_transformers.models.Transformer' },
        { idx: 1, name: '1', path: '1_Pooling', type: 'sentence_transformers.models.Pooling' },
      ]),
    );
    await writeSafetensors(path.join(sub, 'model.safetensors'), [{ name: 'w', dtype: 'F32', shape: [1], data: f32([1]) }]);
    fs.writeFileSync(path.join(sub, 'config.json'), '{}');
    const ckpt = await openCheckpoint(dir);
    try {
      assert.equal(ckpt.modelId, path.basename(dir));
      assert.equal(ckpt.root, sub);
      assert.equal(ckpt.configPath, path.join(sub, 'config.json'));
      assert.deepEqual(ckpt.tensors.map((t) => t.name), ['w']);
    } finally {
      await ckpt.close();
    }
  });

  test('a file truncated after opening fails the read, naming file and tensor', async () => {
    const dir = tmpDir('late-trunc');
    const file = path.join(dir, 'model.safetensors');
    await writeSafetensors(file, [{ name: 'w', dtype: 'F32', shape: [4], data: f32([1, 2, 3, 4]) }]);
    const ckpt = await openCheckpoint(dir);
    try {
      fs.truncateSync(file, fs.statSync(file).size - 4);
      const err = await rejectsWith(ckpt.readTensor(ckpt.tensor('w')!), 'E_BAD_CHECKPOINT', [file, "'w'"]);
      assert.equal(err.details.tensor, 'w');
      await rejectsWith(ckpt.readTensor({ ...ckpt.tensor('w')!, file: '/elsewhere.safetensors' }), 'E_BAD_ARGUMENT', ['/elsewhere']);
    } finally {
      await ckpt.close();
    }
  });
});

describe('encode, write, read back', () => {
  const tensors = [
    { name: 'w32', dtype: 'F32', shape: [2, 3], data: f32([1, -2, 3.5, 0, 1e-20, -448]) },
    { name: 'h16', dtype: 'F16', shape: [5], data: bytes(10, 1) },
    { name: 'empty', dtype: 'F32', shape: [0, 4], data: new Uint8Array(0) },
    { name: 'bf', dtype: 'BF16', shape: [3, 1, 2], data: bytes(12, 2) },
    { name: 'scalar', dtype: 'F32', shape: [], data: f32([7]) },
  ];

  test('round trip keeps names, order, shapes, dtypes, bytes and metadata', async () => {
    const dir = tmpDir('roundtrip');
    const file = path.join(dir, 'rt.safetensors');
    await writeSafetensors(file, tensors, { format: 'pt', note: 'x' });
    const raw = fs.readFileSync(file);
    assert.equal(Number(raw.readBigUInt64LE(0)) % 8, 0, 'header padded to 8 bytes');
    const sf = await SafetensorsFile.open(file);
    try {
      assert.deepEqual(sf.metadata, { format: 'pt', note: 'x' });
      assert.deepEqual(sf.tensors.map((t) => t.name), tensors.map((t) => t.name));
      for (const t of tensors) {
        const info = sf.tensor(t.name)!;
        assert.equal(info.dtype, t.dtype);
        assert.deepEqual(info.shape, t.shape);
        const back = await sf.readTensor(info);
        assert.ok(back.equals(Buffer.from(t.data)), t.name);
      }
      assert.equal(sf.tensor('empty')!.numel, 0);
      assert.equal(sf.tensor('scalar')!.numel, 1);
      assert.equal(sf.size, raw.byteLength);
    } finally {
      await sf.close();
    }
    assert.deepEqual(fs.readdirSync(dir), ['rt.safetensors']);
  });

  test('encoder rejects wrong data sizes, unknown dtypes and duplicate names', () => {
    assert.throws(() => encodeSafetensors([{ name: 'a', dtype: 'F32', shape: [3], data: new Uint8Array(8) }]), { code: 'E_BAD_ARGUMENT' });
    assert.throws(() => encodeSafetensors([{ name: 'a', dtype: 'Q7', shape: [1], data: new Uint8Array(1) }]), { code: 'E_UNSUPPORTED_DTYPE' });
    const t = { name: 'a', dtype: 'U8', shape: [1], data: new Uint8Array(1) };
    assert.throws(() => encodeSafetensors([t, t]), { code: 'E_BAD_ARGUMENT' });
    assert.throws(() => encodeSafetensors([{ ...t, shape: [-1] }]), { code: 'E_BAD_ARGUMENT' });
  });

  test('an unknown dtype is reported, not rejected', async () => {
    const dir = tmpDir('unknown-dtype');
    const file = rawFile(dir, { odd: { dtype: 'F12_EXOTIC', shape: [3], data_offsets: [0, 5] } }, new Uint8Array(5));
    const sf = await SafetensorsFile.open(file);
    try {
      assert.equal(sf.tensors[0].dtype, 'F12_EXOTIC');
      assert.equal(sf.tensors[0].knownDtype, false);
      assert.equal((await sf.readTensor(sf.tensors[0])).byteLength, 5);
    } finally {
      await sf.close();
    }
  });
});

describe('sharded checkpoints', () => {
  async function makeSharded(): Promise<string> {
    const dir = tmpDir('sharded');
    await writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), [
      { name: 'a.weight', dtype: 'F32', shape: [2, 2], data: f32([1, 2, 3, 4]) },
      { name: 'b.bias', dtype: 'F16', shape: [2], data: bytes(4, 3) },
    ]);
    await writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), [
      { name: 'c.weight', dtype: 'BF16', shape: [1, 4], data: bytes(8, 4) },
    ]);
    fs.writeFileSync(
      path.join(dir, 'model.safetensors.index.json'),
      JSON.stringify({
        metadata: { total_size: 28 },
        weight_map: {
          'c.weight': 'model-00002-of-00002.safetensors',
          'a.weight': 'model-00001-of-00002.safetensors',
          'b.bias': 'model-00001-of-00002.safetensors',
        },
      }),
    );
    fs.writeFileSync(path.join(dir, 'config.json'), '{"model_type":"bert"}');
    return dir;
  }

  test('opens by folder and by index file, files sorted, tensors readable', async () => {
    const dir = await makeSharded();
    for (const arg of [dir, path.join(dir, 'model.safetensors.index.json')]) {
      const ckpt = await openCheckpoint(arg);
      try {
        assert.equal(ckpt.modelId, path.basename(dir));
        assert.deepEqual(ckpt.files, [
          path.join(dir, 'model-00001-of-00002.safetensors'),
          path.join(dir, 'model-00002-of-00002.safetensors'),
        ]);
        assert.equal(ckpt.indexPath, path.join(dir, 'model.safetensors.index.json'));
        assert.equal(ckpt.configPath, path.join(dir, 'config.json'));
        assert.deepEqual(ckpt.tensors.map((t) => t.name), ['a.weight', 'b.bias', 'c.weight']);
        const a = await ckpt.readTensor(ckpt.tensor('a.weight')!);
        assert.deepEqual([...new Float32Array(a.buffer, a.byteOffset, 4)], [1, 2, 3, 4]);
        assert.ok((await ckpt.readTensor(ckpt.tensor('c.weight')!)).equals(Buffer.from(bytes(8, 4))));
      } finally {
        await ckpt.close();
      }
    }
  });

  test('missing shard, tensor not in its shard, duplicates across shards, shard outside the folder', async () => {
    const index = (dir: string) => path.join(dir, 'model.safetensors.index.json');
    const setMap = (dir: string, map: Record<string, string>) => fs.writeFileSync(index(dir), JSON.stringify({ weight_map: map }));

    let dir = await makeSharded();
    fs.rmSync(path.join(dir, 'model-00002-of-00002.safetensors'));
    await rejectsWith(openCheckpoint(dir), 'E_BAD_CHECKPOINT', [index(dir), 'model-00002-of-00002.safetensors', 'does not exist']);

    dir = await makeSharded();
    setMap(dir, { 'a.weight': 'model-00002-of-00002.safetensors', 'c.weight': 'model-00002-of-00002.safetensors' });
    // a.weight lives in shard 1, which the map does not list: so shard 2 lacks it.
    await rejectsWith(openCheckpoint(dir), 'E_BAD_CHECKPOINT', ['a.weight', 'does not contain it']);

    dir = await makeSharded();
    await writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), [
      { name: 'c.weight', dtype: 'BF16', shape: [1, 4], data: bytes(8, 4) },
      { name: 'a.weight', dtype: 'F32', shape: [1], data: f32([9]) },
    ]);
    const dup = await rejectsWith(openCheckpoint(dir), 'E_BAD_CHECKPOINT', ["'a.weight'", 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    assert.equal(dup.details.tensor, 'a.weight');

    dir = await makeSharded();
    setMap(dir, { 'a.weight': '../elsewhere.safetensors' });
    await rejectsWith(openCheckpoint(dir), 'E_BAD_CHECKPOINT', [index(dir), 'outside']);

    dir = await makeSharded();
    fs.writeFileSync(index(dir), '{"weight_map": ');
    await rejectsWith(openCheckpoint(dir), 'E_BAD_CHECKPOINT', [index(dir), 'JSON']);
  });
});

describe('bad input', () => {
  const entry = (extra: object = {}) => ({ dtype: 'F32', shape: [2], data_offsets: [0, 8], ...extra });

  async function expectBad(label: string, header: unknown, data: Uint8Array, mentions: string[], tensor?: string): Promise<void> {
    const dir = tmpDir(label);
    const file = rawFile(dir, header, data);
    const err = await rejectsWith(SafetensorsFile.open(file), 'E_BAD_CHECKPOINT', [file, ...mentions]);
    assert.equal(err.details.file, file, label);
    if (tensor !== undefined) {
      assert.equal(err.details.tensor, tensor, label);
      assert.ok(err.message.includes(tensor), label);
    }
    // The same error reaches a caller opening the folder.
    await rejectsWith(openCheckpoint(dir), 'E_BAD_CHECKPOINT', [file]);
  }

  test('missing path and folders without weights are E_NOT_FOUND', async () => {
    const missing = path.join(scratch, 'no-such-model');
    await rejectsWith(openCheckpoint(missing), 'E_NOT_FOUND', [missing]);
    const empty = tmpDir('empty');
    fs.writeFileSync(path.join(empty, 'config.json'), '{}');
    await rejectsWith(openCheckpoint(empty), 'E_NOT_FOUND', [empty, 'model.safetensors', 'model.safetensors.index.json']);
    const bin = tmpDir('bin');
    fs.writeFileSync(path.join(bin, 'pytorch_model.bin'), 'x');
    await rejectsWith(openCheckpoint(bin), 'E_NOT_FOUND', [bin, 'convert']);
    const other = path.join(tmpDir('txt'), 'weights.txt');
    fs.writeFileSync(other, 'x');
    await rejectsWith(openCheckpoint(other), 'E_BAD_CHECKPOINT', [other]);
  });

  test('truncated or absurd header lengths', async () => {
    const dir = tmpDir('short');
    const short = path.join(dir, 'model.safetensors');
    fs.writeFileSync(short, Buffer.from([1, 2, 3]));
    await rejectsWith(SafetensorsFile.open(short), 'E_BAD_CHECKPOINT', [short, 'truncated']);

    const dir2 = tmpDir('pastend');
    const past = path.join(dir2, 'model.safetensors');
    const b = Buffer.alloc(64);
    b.writeBigUInt64LE(1000n);
    fs.writeFileSync(past, b);
    await rejectsWith(SafetensorsFile.open(past), 'E_BAD_CHECKPOINT', [past, 'past the end']);

    // A sparse file big enough that only the 100 MB cap can reject its header length.
    const dir3 = tmpDir('absurd');
    const absurd = path.join(dir3, 'model.safetensors');
    const head = Buffer.alloc(8);
    head.writeBigUInt64LE(BigInt(150 * 1024 * 1024));
    fs.writeFileSync(absurd, head);
    fs.truncateSync(absurd, 200 * 1024 * 1024);
    await rejectsWith(SafetensorsFile.open(absurd), 'E_BAD_CHECKPOINT', [absurd, 'absurd']);
    fs.rmSync(absurd);
  });

  test('headers that are not UTF-8 JSON objects', async () => {
    const dir = tmpDir('utf8');
    const file = path.join(dir, 'model.safetensors');
    const h = Buffer.alloc(8);
    h.writeBigUInt64LE(4n);
    fs.writeFileSync(file, Buffer.concat([h, Buffer.from([0x7b, 0xff, 0xfe, 0x7d])]));
    await rejectsWith(SafetensorsFile.open(file), 'E_BAD_CHECKPOINT', [file, 'UTF-8']);
    await expectBad('notjson', '{"a": ', new Uint8Array(0), ['JSON']);
    await expectBad('array', '[1, 2]', new Uint8Array(0), ['not an object']);
    await expectBad('meta', { __metadata__: { n: 3 } }, new Uint8Array(0), ['__metadata__']);
  });

  test('malformed entries name the tensor', async () => {
    const data = new Uint8Array(16);
    await expectBad('not-object', { t: 5 }, data, ['not an object'], 't');
    await expectBad('no-dtype', { t: { shape: [2], data_offsets: [0, 8] } }, data, ['missing dtype'], 't');
    await expectBad('no-shape', { t: { dtype: 'F32', data_offsets: [0, 8] } }, data, ['missing shape'], 't');
    await expectBad('no-offsets', { t: { dtype: 'F32', shape: [2] } }, data, ['missing data_offsets'], 't');
    await expectBad('dtype-type', { t: entry({ dtype: 4 }) }, data, ['dtype'], 't');
    await expectBad('shape-type', { t: entry({ shape: '2' }) }, data, ['shape'], 't');
    await expectBad('offsets-type', { t: entry({ data_offsets: [0, 4, 8] }) }, data, ['data_offsets'], 't');
    await expectBad('offsets-str', { t: entry({ data_offsets: ['0', '8'] }) }, data, ['data_offsets'], 't');
    await expectBad('neg-dim', { t: entry({ shape: [-2] }) }, data, ['non-negative integer'], 't');
    await expectBad('frac-dim', { t: entry({ shape: [1.5] }) }, data, ['non-negative integer'], 't');
    await expectBad('past-data', { t: entry({ data_offsets: [8, 24], shape: [4] }) }, data, ['past the data section'], 't');
    await expectBad('reversed', { t: entry({ data_offsets: [8, 0] }) }, data, ['end before'], 't');
    await expectBad('size', { t: entry({ shape: [3] }) }, data, ['needs 12'], 't');
    await expectBad('size-f16', { t: entry({ dtype: 'F16', shape: [2, 3] }) }, data, ['needs 12'], 't');
    await expectBad(
      'overlap',
      { a: entry({ data_offsets: [0, 8] }), b: entry({ data_offsets: [4, 12] }) },
      data,
      ['overlap', "'a'"],
      'b',
    );
  });

  test('empty tensors are valid and overlap nothing', async () => {
    const dir = tmpDir('empty-ok');
    const file = rawFile(dir, { a: entry(), z: { dtype: 'F16', shape: [4, 0], data_offsets: [4, 4] } }, new Uint8Array(8));
    const sf = await SafetensorsFile.open(file);
    try {
      assert.equal(sf.tensor('z')!.numel, 0);
      assert.equal((await sf.readTensor(sf.tensor('z')!)).byteLength, 0);
    } finally {
      await sf.close();
    }
  });
});

describe('checkpoint hash', () => {
  function copyModel(): string {
    const dir = tmpDir('hash');
    for (const f of ['config.json', 'model.safetensors']) fs.copyFileSync(path.join(TINY_MODEL, f), path.join(dir, f));
    return dir;
  }
  async function hashOf(dir: string): Promise<string> {
    const ckpt = await openCheckpoint(dir);
    try {
      return await checkpointHash(ckpt);
    } finally {
      await ckpt.close();
    }
  }

  test('stable, and reproducible from the documented framing', async () => {
    const dir = copyModel();
    const h1 = await hashOf(dir);
    assert.match(h1, /^sha256:[0-9a-f]{64}$/);
    assert.equal(await hashOf(dir), h1);
    const ref = createHash('sha256');
    for (const rel of ['config.json', 'model.safetensors']) {
      const data = fs.readFileSync(path.join(dir, rel));
      ref.update(Buffer.concat([Buffer.from(`${rel}\0${data.byteLength}\0`), data]));
    }
    assert.equal(h1, `sha256:${ref.digest('hex')}`);
    // Contents only: the fixture folder hashes the same as its copy.
    assert.equal(await hashOf(TINY_MODEL), h1);
  });

  test('one flipped weight byte changes it, even with size and mtime restored', async () => {
    const dir = copyModel();
    const weights = path.join(dir, 'model.safetensors');
    // Whole seconds, so that restoring the times is exact.
    fs.utimesSync(weights, 1_700_000_000, 1_700_000_000);
    const before = await hashOf(dir);
    const st = fs.statSync(weights);
    const fd = fs.openSync(weights, 'r+');
    const one = Buffer.alloc(1);
    fs.readSync(fd, one, 0, 1, st.size - 1);
    one[0] ^= 0x01;
    fs.writeSync(fd, one, 0, 1, st.size - 1);
    fs.closeSync(fd);
    fs.utimesSync(weights, 1_700_000_000, 1_700_000_000);
    const after2 = fs.statSync(weights);
    assert.equal(after2.size, st.size);
    assert.equal(after2.mtimeMs, st.mtimeMs);
    assert.notEqual(await hashOf(dir), before);
  });

  test('changing config.json changes it', async () => {
    const dir = copyModel();
    const before = await hashOf(dir);
    fs.appendFileSync(path.join(dir, 'config.json'), ' ');
    assert.notEqual(await hashOf(dir), before);
  });

  test('sharded: index file is part of it', async () => {
    const dir = tmpDir('hash-sharded');
    await writeSafetensors(path.join(dir, 's1.safetensors'), [{ name: 'a', dtype: 'U8', shape: [1], data: new Uint8Array([1]) }]);
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { a: 's1.safetensors' } }));
    const before = await hashOf(dir);
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: { a: 's1.safetensors' } }));
    assert.notEqual(await hashOf(dir), before);
  });

  test('computed on a worker thread: the same hash as on this thread, and its errors keep their code', async () => {
    const dir = copyModel();
    const ckpt = await openCheckpoint(dir);
    try {
      const files = hashOrder(ckpt);
      assert.deepEqual(
        files.map((f) => f.rel),
        ['config.json', 'model.safetensors'],
      );
      assert.equal(await checkpointHash(ckpt), await hashFiles(files));
      // A large-enough file to take the worker more than one read, beside the real ones.
      const big = path.join(dir, 'extra.bin');
      fs.writeFileSync(big, randomBytes(9 << 20));
      const withBig = { ...ckpt, files: [...ckpt.files, big] };
      assert.deepEqual(
        hashOrder(withBig).map((f) => f.rel),
        ['config.json', 'extra.bin', 'model.safetensors'],
      );
      assert.equal(await checkpointHash(withBig), await hashFiles(hashOrder(withBig)));
      fs.rmSync(big);
      await assert.rejects(checkpointHash(withBig), (err: CalibscopeError) => {
        assert.equal(err.code, 'E_IO');
        assert.match(err.message, /extra\.bin: cannot hash/);
        return true;
      });
    } finally {
      await ckpt.close();
    }
  });
});

describe('stream writer', () => {
  const specs = [
    { name: 'w', dtype: 'F32', shape: [3, 4] },
    { name: 'nothing', dtype: 'F16', shape: [0] },
    { name: '0', dtype: 'BF16', shape: [5] },
  ];
  const w = f32([...Array(12).keys()].map((i) => i - 5.5));
  const z = bytes(10, 9);

  test('chunked writes give the same file as encodeSafetensors', async () => {
    const dir = tmpDir('stream');
    const file = path.join(dir, 'scales.safetensors');
    const sw = await SafetensorsStreamWriter.create(file, specs, { format: 'pt' });
    await sw.write('w', w.subarray(0, 20));
    await sw.write('w', w.subarray(20, 21));
    await sw.write('w', w.subarray(21));
    await sw.write('0', z); // the empty tensor needs no write
    assert.equal(fs.existsSync(file), false, 'nothing at the target before close');
    await sw.close();
    const expected = encodeSafetensors(
      [
        { ...specs[0], data: w },
        { ...specs[1], data: new Uint8Array(0) },
        { ...specs[2], data: z },
      ],
      { format: 'pt' },
    );
    assert.ok(fs.readFileSync(file).equals(expected));
    assert.deepEqual(fs.readdirSync(dir), ['scales.safetensors']);
    const sf = await SafetensorsFile.open(file);
    try {
      assert.ok((await sf.readTensor(sf.tensor('0')!)).equals(Buffer.from(z)));
    } finally {
      await sf.close();
    }
  });

  test('order, overflow and incomplete files are refused; abort leaves nothing', async () => {
    const dir = tmpDir('stream-bad');
    const file = path.join(dir, 'scales.safetensors');
    const sw = await SafetensorsStreamWriter.create(file, specs);
    await assert.rejects(sw.write('0', z), { code: 'E_BAD_ARGUMENT' });
    await assert.rejects(sw.write('w', new Uint8Array(49)), { code: 'E_BAD_ARGUMENT' });
    await assert.rejects(sw.write('nope', z), { code: 'E_BAD_ARGUMENT' });
    await sw.write('w', w);
    await assert.rejects(sw.write('w', new Uint8Array(1)), { code: 'E_BAD_ARGUMENT' });
    await sw.abort();
    await sw.abort();
    await assert.rejects(sw.write('0', z), { code: 'E_BAD_ARGUMENT' });
    assert.deepEqual(fs.readdirSync(dir), []);

    const sw2 = await SafetensorsStreamWriter.create(file, specs);
    await sw2.write('w', w.subarray(0, 8));
    await assert.rejects(sw2.close(), (err: CalibscopeError) => err.code === 'E_BAD_ARGUMENT' && err.message.includes("'w'"));
    assert.deepEqual(fs.readdirSync(dir), []);
  });
});

describe('append writer', () => {
  const w = f32([...Array(12).keys()].map((i) => i - 5.5));
  const z = bytes(10, 9);
  const tensors = [
    { name: 'w', dtype: 'F32', shape: [3, 4], data: w },
    { name: 'nothing', dtype: 'F16', shape: [0], data: new Uint8Array(0) },
    { name: '0', dtype: 'BF16', shape: [5], data: z },
  ];

  async function appendAll(file: string, reserve: number): Promise<void> {
    const aw = await SafetensorsAppendWriter.create(file, reserve);
    for (const t of tensors) await aw.append(t, t.data);
    assert.equal(fs.existsSync(file), false, 'nothing at the target before close');
    await aw.close({ format: 'pt' });
  }

  async function readsBack(file: string): Promise<void> {
    const sf = await SafetensorsFile.open(file);
    try {
      assert.deepEqual(sf.metadata, { format: 'pt' });
      for (const t of tensors) {
        const info = sf.tensor(t.name)!;
        assert.deepEqual([info.dtype, info.shape], [t.dtype, t.shape]);
        assert.ok((await sf.readTensor(info)).equals(Buffer.from(t.data)), t.name);
      }
    } finally {
      await sf.close();
    }
  }

  test('the header fills the room left for it with spaces; the data is encodeSafetensors\'s', async () => {
    const dir = tmpDir('append');
    const file = path.join(dir, 'scales.safetensors');
    await appendAll(file, 4096);
    const image = fs.readFileSync(file);
    assert.equal(image.readBigUInt64LE(0), 4096n - 8n);
    assert.match(image.subarray(8, 4096).toString('utf8'), /^\{.*\} +$/);
    const expected = encodeSafetensors(tensors, { format: 'pt' });
    assert.ok(image.subarray(4096).equals(expected.subarray(Number(expected.readBigUInt64LE(0)) + 8)));
    assert.deepEqual(fs.readdirSync(dir), ['scales.safetensors']);
    await readsBack(file);
  });

  test('a header that outgrows its room moves the data once: the same file as encodeSafetensors', async () => {
    const dir = tmpDir('append-small');
    const file = path.join(dir, 'scales.safetensors');
    await appendAll(file, 16);
    assert.ok(fs.readFileSync(file).equals(encodeSafetensors(tensors, { format: 'pt' })));
    assert.deepEqual(fs.readdirSync(dir), ['scales.safetensors']);
    await readsBack(file);
  });

  test('a wrong size or a second tensor of one name is refused; abort leaves nothing', async () => {
    const dir = tmpDir('append-bad');
    const file = path.join(dir, 'scales.safetensors');
    const aw = await SafetensorsAppendWriter.create(file, 1024);
    await assert.rejects(aw.append(tensors[0], new Uint8Array(49)), { code: 'E_BAD_ARGUMENT' });
    await aw.append(tensors[0], w);
    await assert.rejects(aw.append(tensors[0], w), (err: CalibscopeError) => err.code === 'E_BAD_ARGUMENT' && err.message.includes('twice'));
    await assert.rejects(aw.append({ name: 'x', dtype: 'Q7', shape: [1] }, z), { code: 'E_UNSUPPORTED_DTYPE' });
    await aw.abort();
    await aw.abort();
    await assert.rejects(aw.append(tensors[2], z), { code: 'E_BAD_ARGUMENT' });
    assert.deepEqual(fs.readdirSync(dir), []);
  });
});

describe('reading into a given buffer', () => {
  test('a large-enough buffer is read into; a small one is left alone', async () => {
    const sf = await SafetensorsFile.open(path.join(TINY_MODEL, 'model.safetensors'));
    try {
      const [a, b] = [...sf.tensors].sort((x, y) => y.byteLength - x.byteLength);
      const fresh = await sf.readTensor(b);
      const big = Buffer.alloc(a.byteLength + 8, 0xee);
      const into = await sf.readTensor(b, big);
      assert.equal(into.buffer, big.buffer, 'read into the given buffer');
      assert.ok(into.equals(fresh));
      assert.equal(big[b.byteLength], 0xee, 'nothing written past the tensor');
      const small = Buffer.alloc(1);
      const other = await sf.readTensor(a, small);
      assert.notEqual(other.buffer, small.buffer);
      assert.equal(other.byteLength, a.byteLength);
    } finally {
      await sf.close();
    }
  });
});

describe('file hash', () => {
  test('sha256File (a worker thread for large files) gives the digest of the bytes, and an fs error keeps its code', async () => {
    const dir = tmpDir('sha');
    for (const size of [(64 << 20) + 3, 1000]) {
      const file = path.join(dir, `blob-${size}.bin`);
      const data = randomBytes(size);
      fs.writeFileSync(file, data);
      assert.equal(await sha256File(file), createHash('sha256').update(data).digest('hex'));
    }
    await assert.rejects(sha256File(path.join(dir, 'missing.bin')), { code: 'ENOENT' });
    await assert.rejects(sha256File(dir), { code: 'EISDIR' });
  });
});

describe('atomic writes', () => {
  test('writeFileAtomic replaces the file and leaves no temp files', async () => {
    const dir = tmpDir('atomic');
    const file = path.join(dir, 'profile.json');
    await writeFileAtomic(file, '{"v":1}');
    await writeFileAtomic(file, Buffer.from('{"v":2}'));
    assert.equal(fs.readFileSync(file, 'utf8'), '{"v":2}');
    assert.deepEqual(fs.readdirSync(dir), ['profile.json']);
  });

  test('a failed write removes its temp file and keeps the target', async () => {
    const dir = tmpDir('atomic-fail');
    const target = path.join(dir, 'occupied');
    fs.mkdirSync(target);
    fs.writeFileSync(path.join(target, 'keep'), 'x');
    await assert.rejects(writeFileAtomic(target, 'data'));
    assert.deepEqual(fs.readdirSync(dir), ['occupied']);
    assert.deepEqual(fs.readdirSync(target), ['keep']);
  });

  test('removeStaleTemps removes only temps of dead processes', async () => {
    const dir = tmpDir('stale');
    const child = spawnSync(process.execPath, ['-e', '0']);
    const dead = child.pid!;
    const stale = `.scales.safetensors.tmp-${dead}-0a1b2c`;
    const live = `.profile.json.tmp-${process.pid}-abcdef`;
    for (const n of [stale, live, 'profile.json', '.hidden']) fs.writeFileSync(path.join(dir, n), 'x');
    const removed = await removeStaleTemps(dir);
    assert.deepEqual(removed, [path.join(dir, stale)]);
    assert.deepEqual(fs.readdirSync(dir).sort(), ['.hidden', live, 'profile.json'].sort());
    assert.deepEqual(await removeStaleTemps(path.join(dir, 'missing')), []);
  });
});

describe('sharded checkpoints: tensors the index does not list', () => {
  /** Two shards and an index that lists a.weight and c.weight; shard 1 also holds stray.weight. */
  async function makeWithStray(): Promise<string> {
    const dir = tmpDir('unlisted');
    await writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), [
      { name: 'a.weight', dtype: 'F32', shape: [2, 2], data: f32([1, 2, 3, 4]) },
      { name: 'stray.weight', dtype: 'F32', shape: [2, 2], data: f32([5, 6, 7, 8]) },
    ]);
    await writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), [{ name: 'c.weight', dtype: 'BF16', shape: [1, 4], data: bytes(8, 4) }]);
    fs.writeFileSync(
      path.join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ weight_map: { 'a.weight': 'model-00001-of-00002.safetensors', 'c.weight': 'model-00002-of-00002.safetensors' } }),
    );
    fs.writeFileSync(path.join(dir, 'config.json'), '{"model_type":"bert"}');
    return dir;
  }

  test('only the listed tensors are the model; the others are reported as unlisted', async () => {
    const dir = await makeWithStray();
    const ckpt = await openCheckpoint(dir);
    try {
      assert.deepEqual(ckpt.tensors.map((t) => t.name), ['a.weight', 'c.weight']);
      assert.deepEqual(ckpt.unlisted.map((t) => [t.name, path.basename(t.file)]), [['stray.weight', 'model-00001-of-00002.safetensors']]);
      assert.equal(ckpt.tensor('stray.weight'), undefined);
      const a = await ckpt.readTensor(ckpt.tensor('a.weight')!);
      assert.deepEqual([...new Float32Array(a.buffer, a.byteOffset, 4)], [1, 2, 3, 4]);
    } finally {
      await ckpt.close();
    }
    // A single file has no index to leave anything out.
    const single = await openCheckpoint(TINY_MODEL);
    try {
      assert.deepEqual(single.unlisted, []);
    } finally {
      await single.close();
    }
  });

  test('the checkpoint hash still covers whole files, the unlisted bytes included', async () => {
    const dir = await makeWithStray();
    const ckpt = await openCheckpoint(dir);
    let hash: string;
    try {
      assert.deepEqual(
        hashOrder(ckpt).map((f) => f.rel),
        ['config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json'],
      );
      hash = await checkpointHash(ckpt);
    } finally {
      await ckpt.close();
    }
    // As docs/numerics.md spells it out: relative path, NUL, size, NUL, bytes, file after file.
    const h = createHash('sha256');
    for (const rel of ['config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']) {
      const data = fs.readFileSync(path.join(dir, rel));
      h.update(Buffer.concat([Buffer.from(`${rel}\0${data.length}\0`), data]));
    }
    assert.equal(hash, `sha256:${h.digest('hex')}`);
    // Changing only the unlisted tensor's bytes changes the hash.
    await writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), [
      { name: 'a.weight', dtype: 'F32', shape: [2, 2], data: f32([1, 2, 3, 4]) },
      { name: 'stray.weight', dtype: 'F32', shape: [2, 2], data: f32([5, 6, 7, 9]) },
    ]);
    const again = await openCheckpoint(dir);
    try {
      assert.notEqual(await checkpointHash(again), hash);
    } finally {
      await again.close();
    }
  });

  test('a name stored in two shards is still an error, even when the index lists one of them', async () => {
    const dir = await makeWithStray();
    await writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), [
      { name: 'c.weight', dtype: 'BF16', shape: [1, 4], data: bytes(8, 4) },
      { name: 'stray.weight', dtype: 'F32', shape: [1], data: f32([1]) },
    ]);
    await rejectsWith(openCheckpoint(dir), 'E_BAD_CHECKPOINT', ["'stray.weight'", 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
  });
});
