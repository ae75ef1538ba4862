// Throughput of quantize / fakeQuantize / dequantize on a 4096 × 4096 FP16 trained-like tensor,
// one JSON line per scheme and thread count: `npx tsc -p . && node dist/bench/quantize.bench.js`.
// Each figure is the best of 5 runs after one warm-up, in weights per second; the calibration that
// produces the scales is not timed.
import os from 'node:os';
import { native, type SchemeName } from '../src/native/index.js';
import { toFloat16Bits, trainedLike } from '../src/util/trained_like.js';

const ROWS = 4096;
const COLS = 4096;
const CASES: [SchemeName, number][] = [
  ['fp4', 64],
  ['fp8_e4m3', 32],
  ['fp8_e5m2', 32],
  ['nvfp4', 16],
  ['mxfp4', 32],
  ['mxfp8', 32],
];

async function best(fn: () => Promise<unknown>, runs = 5): Promise<number> {
  await fn();
  let t = Infinity;
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    t = Math.min(t, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return t;
}

async function main(): Promise<void> {
  const machine = `${os.cpus()[0]?.model.trim() ?? 'cpu'} × ${os.cpus().length}, node ${process.versions.node}, simd ${native().info().simd}`;
  const h = toFloat16Bits(trainedLike(ROWS, COLS, { seed: 1 }));
  const data = new Uint8Array(h.buffer, h.byteOffset, h.byteLength);
  const n = ROWS * COLS;
  const threadCounts = [...new Set([1, os.cpus().length])];
  for (const [scheme, blockSize] of CASES) {
    const c = await native().calibrate(data, { dtype: 'F16', rows: ROWS, cols: COLS, scheme, blockSize, diagnostics: false });
    const o = {
      dtype: 'F16' as const, rows: ROWS, cols: COLS, scheme, blockSize,
      ...(c.codes ? { codes: c.codes, globalScale: c.globalDecode } : { scales: c.scales }),
    };
    for (const threads of threadCounts) {
      const tq = await best(() => native().quantize(data, { ...o, threads }));
      const tf = await best(() => native().fakeQuantize(data, { ...o, threads }));
      const q = await native().quantize(data, { ...o, threads });
      const td = await best(() => native().dequantize(q.elements, { ...o, rowStride: q.rowStride, threads }));
      process.stdout.write(`${JSON.stringify({
        bench: 'quantize', machine, shape: [ROWS, COLS], dtype: 'F16', scheme, block_size: blockSize, threads,
        quantize_weights_per_s: Math.round(n / tq),
        fake_quantize_weights_per_s: Math.round(n / tf),
        dequantize_weights_per_s: Math.round(n / td),
      })}\n`);
    }
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
