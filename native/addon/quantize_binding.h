// Quantized tensors from JS: quantize, dequantize, fakeQuantize, quantizedError and scaledHistogram, each a
// Promise resolved by a Napi::AsyncWorker (the loops run on the addon's threads, not the JS thread).
//
//   quantize(weights: Uint8Array, opts) → { elements: Uint8Array, rowStride, scales, globalScale?,
//                                           outliers, nonfinite }
//   fakeQuantize(weights: Uint8Array, opts) → Float32Array x̂ (rows·cols)
//   dequantize(elements: Uint8Array, opts & { rowStride }) → Float32Array x̂
//   quantizedError(weights: Uint8Array, elements: Uint8Array, opts & { rowStride })
//       → { sumSquaredError, counted, nonfinite }
// opts: { dtype, rows, cols, scheme, blockSize, scales?: Float32Array (FP32 schemes),
//         codes?: Uint8Array (nvfp4, mx), globalScale?: number (nvfp4), threads?, allowNonfinite? }
//
// Alignment: each returned array is a view whose first byte sits at a 64-byte aligned address
// (its ArrayBuffer is allocated up to 63 bytes larger and the view starts at the aligned offset,
// so `byteOffset` may be non-zero: use the view, not `.buffer` alone). Packed rows start at
// multiples of `rowStride` (a multiple of 64) from the view's first byte.
#pragma once

#include <napi.h>

void RegisterQuantize(Napi::Env env, Napi::Object exports);
