// Backend parity, in the manner of a backend-ops test: every scheme, search, block size and mode,
// on odd shapes, compared block by block and bit for bit with the CPU engine.
//  - 'cuda-emulated' (the GPU kernel's per-block code compiled for the host) runs everywhere, so a
//    change to either search that would break GPU parity fails here without a GPU;
//  - 'cuda' runs where a usable GPU is; elsewhere those tests are skipped with the reason.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { openCheckpoint } from '../src/checkpoints/checkpoint.js';
import { native, type NativeCalibrateOptions, type NativeCalibrateResult, type SchemeName, type SearchName } from '../src/native/index.js';
import { toFloat16Bits, trainedLike } from '../src/util/trained_like.js';
import { FIXTURES } from './helpers/reference.js';

type Backend = 'cpu' | 'cuda' | 'cuda-emulated';

const cuda = native().info().cuda;
const noGpu = cuda.available ? false : cuda.reason;

function bytesOf(a: Float32Array | Uint16Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function run(bytes: Uint8Array, opts: NativeCalibrateOptions, backend: Backend): Promise<NativeCalibrateResult> {
  return native().calibrate(bytes, { ...opts, backend, threads: 2 });
}

function firstDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return i;
  return a.length === b.length ? -1 : Math.min(a.length, b.length);
}

// Every per-block array and every sum must be identical, not close.
function assertSame(got: NativeCalibrateResult, want: NativeCalibrateResult, what: string): void {
  const arrays = ['scales', 'codes', 'blockMseBefore', 'blockMseAfter', 'blockOutliers'] as const;
  for (const k of arrays) {
    const g = got[k], w = want[k];
    assert.equal(g === undefined, w === undefined, `${what}: ${k} present on one backend only`);
    if (!g || !w) continue;
    assert.equal(g.length, w.length, `${what}: ${k} length`);
    const i = firstDiff(g, w);
    assert.equal(i, -1, `${what}: ${k}[${i}] = ${g[i]} vs CPU ${w[i]}`);
  }
  for (const k of ['sumErrBefore', 'sumErrAfter', 'sumObjBefore', 'sumObjAfter', 'outliers', 'counted', 'nonfinite', 'absmax', 'globalDecode'] as const) {
    assert.ok(Object.is(got[k], want[k]), `${what}: ${k} = ${got[k]} vs CPU ${want[k]}`);
  }
}

async function compare(backend: Backend, bytes: Uint8Array, opts: NativeCalibrateOptions, what: string): Promise<void> {
  const want = await run(bytes, opts, 'cpu');
  const got = await run(bytes, opts, backend);
  assert.equal(got.backend, backend);
  assertSame(got, want, what);
}

// Shapes with rows and columns that are multiples of nothing, so last blocks are partial.
const SHAPES: [number, number][] = [[37, 203], [5, 1000], [129, 77]];
const SCHEMES: [SchemeName, number[]][] = [
  ['fp4', [16, 64, 100, 256]],
  ['fp8_e4m3', [32, 128]],
  ['fp8_e5m2', [32, 256]],
  ['nvfp4', [16]],
  ['mxfp4', [32]],
  ['mxfp8', [32]],
];
const SEARCHES: SearchName[] = ['exact', 'ternary', 'naive'];

function columnStats(cols: number, seed: number): { w: Float32Array; mu: Float32Array } {
  const w = new Float32Array(cols), mu = new Float32Array(cols);
  const r = trainedLike(2, cols, { seed });
  for (let j = 0; j < cols; j++) {
    w[j] = j % 13 === 0 ? 0 : Math.abs(r[j]) * 50 + 0.01;  // some zero weights on purpose
    mu[j] = r[cols + j] * 10;
  }
  return { w, mu };
}

function parity(backend: Backend, skip: string | false): void {
  describe(`${backend} vs cpu: trained-like weights`, { skip }, () => {
    for (const [rows, cols] of SHAPES) {
      const w = trainedLike(rows, cols, { seed: rows * 1000 + cols });
      const f16 = bytesOf(toFloat16Bits(w));
      const f32 = bytesOf(w);
      for (const [scheme, sizes] of SCHEMES) {
        it(`${scheme} ${rows}×${cols} blocks ${sizes.join('/')}`, async () => {
          for (const blockSize of sizes) {
            for (const search of SEARCHES) {
              const opts: NativeCalibrateOptions = { dtype: 'F16', rows, cols, scheme, blockSize, search };
              await compare(backend, f16, opts, `${scheme}/${blockSize}/${search} F16`);
            }
            await compare(backend, f32, { dtype: 'F32', rows, cols, scheme, blockSize }, `${scheme}/${blockSize} F32`);
          }
        });
      }
      it(`weighted modes ${rows}×${cols}: column weights, and weights with means`, async () => {
        const { w: cw, mu } = columnStats(cols, rows + cols);
        for (const [scheme, sizes] of SCHEMES) {
          for (const blockSize of sizes.slice(0, 2)) {
            const base: NativeCalibrateOptions = { dtype: 'F16', rows, cols, scheme, blockSize, columnWeights: cw };
            await compare(backend, f16, base, `${scheme}/${blockSize} weighted`);
            await compare(backend, f16, { ...base, columnMeans: mu }, `${scheme}/${blockSize} weighted+means`);
          }
        }
      });
    }

    it('BF16 input, excluded non-finite values, an all-zero row and a single column', async () => {
      const rows = 9, cols = 70;
      const w = trainedLike(rows, cols, { seed: 7 });
      w.fill(0, cols, 2 * cols);
      w[5] = NaN;
      w[3 * cols + 1] = Infinity;
      w[4 * cols + 69] = -Infinity;
      const bf16 = new Uint16Array(w.length);
      const u32 = new Uint32Array(w.buffer);
      for (let i = 0; i < w.length; i++) bf16[i] = u32[i] >>> 16;
      for (const [scheme, sizes] of SCHEMES) {
        for (const blockSize of sizes) {
          await compare(backend, bytesOf(bf16), { dtype: 'BF16', rows, cols, scheme, blockSize, allowNonfinite: true }, `${scheme}/${blockSize} BF16 non-finite`);
        }
      }
      const col = trainedLike(50, 1, { seed: 3 });
      await compare(backend, bytesOf(col), { dtype: 'F32', rows: 50, cols: 1, scheme: 'fp4', blockSize: 64 }, 'one column');
    });
  });

  describe(`${backend} vs cpu: the reference BERT model`, { skip }, () => {
    it('every 2-D tensor, fp4/64, nvfp4 and fp8_e4m3/128', async () => {
      const ckpt = await openCheckpoint(path.join(FIXTURES, 'bert-tiny-a', 'model'));
      try {
        let checked = 0;
        for (const t of ckpt.tensors) {
          if (t.shape.length !== 2 || !['F32', 'F16', 'BF16'].includes(t.dtype)) continue;
          const bytes = new Uint8Array(await ckpt.readTensor(t));
          const [rows, cols] = t.shape;
          for (const [scheme, blockSize] of [['fp4', 64], ['nvfp4', 16], ['fp8_e4m3', 128]] as [SchemeName, number][]) {
            await compare(backend, bytes, { dtype: t.dtype as 'F32', rows, cols, scheme, blockSize }, `${t.name} ${scheme}/${blockSize}`);
          }
          checked++;
        }
        assert.ok(checked >= 10, `only ${checked} 2-D tensors found`);
      } finally {
        await ckpt.close();
      }
    });
  });
}

parity('cuda-emulated', false);
parity('cuda', noGpu);

describe('cuda backend selection', () => {
  it('info() says whether CUDA kernels are built and why a device is or is not usable', () => {
    assert.equal(typeof cuda.compiled, 'boolean');
    assert.equal(typeof cuda.available, 'boolean');
    if (!cuda.available) assert.ok(cuda.reason.length > 10, 'a reason is given');
    else assert.ok(cuda.devices.length > 0);
  });

  it('backend cuda without a usable device rejects with E_CUDA and the reason', { skip: cuda.available ? 'a CUDA device is available' : false }, async () => {
    const w = trainedLike(4, 64, { seed: 1 });
    await assert.rejects(run(bytesOf(w), { dtype: 'F32', rows: 4, cols: 64, scheme: 'fp4', blockSize: 64 }, 'cuda'), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'E_CUDA');
      assert.equal(e.message, cuda.reason);
      return true;
    });
  });

  it('an unknown backend is a bad argument', async () => {
    const w = trainedLike(1, 64, { seed: 1 });
    await assert.rejects(
      async () => native().calibrate(bytesOf(w), { dtype: 'F32', rows: 1, cols: 64, scheme: 'fp4', blockSize: 64, backend: 'tpu' as Backend }),
      (e: Error & { code?: string }) => e.code === 'E_BAD_ARGUMENT',
    );
  });
});
