// Element formats and scale encodings against PyTorch's and ml_dtypes' casts, bit for bit.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { native } from '../src/native/index.js';
import { fromFloat16Bits } from '../src/util/trained_like.js';
import { loadTables } from './helpers/reference.js';

function bitsEqual(got: Float32Array, want: Float32Array, label: string, inputs: Float32Array): void {
  assert.equal(got.length, want.length);
  const g = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const w = new Uint32Array(want.buffer, want.byteOffset, want.length);
  let bad = 0;
  let first = -1;
  for (let i = 0; i < w.length; i++) {
    const same = g[i] === w[i] || (Number.isNaN(got[i]) && Number.isNaN(want[i]));
    if (!same) {
      bad++;
      if (first < 0) first = i;
    }
  }
  assert.equal(bad, 0, `${label}: ${bad} mismatches, first at ${first}: ${inputs[first]} → ${got[first]}, want ${want[first]}`);
}

describe('FP8 rounding agrees with torch casts (fp8_ref.safetensors)', () => {
  let t: Record<string, Float32Array | Int16Array>;
  let fp16: Float32Array;
  before(async () => {
    t = await loadTables('fp8_ref.safetensors');
    const bits = t.fp16_bits as Int16Array;
    fp16 = fromFloat16Bits(new Uint16Array(bits.buffer, bits.byteOffset, bits.length));
  });

  for (const [fmt, elem] of [['e4m3', 'e4m3'], ['e5m2', 'e5m2']] as const) {
    it(`every FP16 value → ${fmt}`, () => {
      bitsEqual(native().roundElements(fp16, elem), t[`fp16_${fmt}`] as Float32Array, `fp16→${fmt}`, fp16);
    });
    it(`200,000 random values → ${fmt}`, () => {
      const x = t.rand_f32 as Float32Array;
      bitsEqual(native().roundElements(x, elem), t[`rand_${fmt}`] as Float32Array, `rand→${fmt}`, x);
    });
    it(`ties → even mantissa (${fmt})`, () => {
      const x = t[`ties_${fmt}_in`] as Float32Array;
      bitsEqual(native().roundElements(x, elem), t[`ties_${fmt}_out`] as Float32Array, `ties ${fmt}`, x);
    });
    it(`the grid is fixed by rounding (${fmt})`, () => {
      const g = t[`grid_${fmt}`] as Float32Array;
      bitsEqual(native().roundElements(g, elem), g, `grid ${fmt}`, g);
    });
  }

  it('E8M0 cast of 200,000 positive values', () => {
    const x = t.rand_pos_f32 as Float32Array;
    bitsEqual(native().e8m0Cast(x), t.rand_pos_e8m0 as Float32Array, 'e8m0', x);
  });

  it('E4M3 scale codes 0..126 decode to the E4M3 grid', () => {
    const codes = Uint8Array.from({ length: 127 }, (_, i) => i);
    bitsEqual(native().e4m3Decode(codes), t.grid_e4m3 as Float32Array, 'e4m3 decode', new Float32Array(127));
  });
});

describe('FP4 E2M1 rounding agrees with ml_dtypes (fp4_ref.safetensors)', () => {
  let t: Record<string, Float32Array | Int16Array>;
  before(async () => {
    t = await loadTables('fp4_ref.safetensors');
  });

  it('every finite FP16 value → e2m1', () => {
    const bits = t.fp16_bits as Int16Array;
    const all = fromFloat16Bits(new Uint16Array(bits.buffer, bits.byteOffset, bits.length));
    const idx = [...all.keys()].filter((i) => Number.isFinite(all[i]));
    const x = Float32Array.from(idx, (i) => all[i]);
    const want = Float32Array.from(idx, (i) => (t.fp16_e2m1 as Float32Array)[i]);
    bitsEqual(native().roundElements(x, 'e2m1'), want, 'fp16→e2m1', x);
  });
  it('200,000 random values → e2m1', () => {
    const x = t.rand_f32 as Float32Array;
    bitsEqual(native().roundElements(x, 'e2m1'), t.rand_e2m1 as Float32Array, 'rand→e2m1', x);
  });
  it('every midpoint, both signs, ties to even', () => {
    const x = t.ties_e2m1_in as Float32Array;
    bitsEqual(native().roundElements(x, 'e2m1'), t.ties_e2m1_out as Float32Array, 'ties e2m1', x);
  });
  it('E8M0 type cast (ml_dtypes)', () => {
    const x = t.rand_pos_f32 as Float32Array;
    bitsEqual(native().e8m0Cast(x), t.rand_pos_e8m0 as Float32Array, 'e8m0', x);
  });
  it('saturates and keeps NaN', () => {
    const x = new Float32Array([7, -100, Infinity, -Infinity, NaN, 5, 0.25, -0.75]);
    const got = Array.from(native().roundElements(x, 'e2m1'));
    assert.deepEqual(got.slice(0, 4), [6, -6, 6, -6]);
    assert.ok(Number.isNaN(got[4]));
    assert.deepEqual(got.slice(5), [4, 0, -1]);
  });
});

describe('FP16 as an element format', () => {
  it('rounds float32 to half precision like the F16 checkpoint encoding', () => {
    const x = new Float32Array([1 + 2 ** -11, 1 + 3 * 2 ** -11, 65504, 70000, 2 ** -25, 3 * 2 ** -26]);
    assert.deepEqual(Array.from(native().roundElements(x, 'fp16')), [1, 1 + 2 ** -9, 65504, 65504, 0, 2 ** -24]);
  });
});
