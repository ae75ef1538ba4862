// Element-format primitives exposed for tests and for quantize/dequantize in TypeScript.
#pragma once

#include <napi.h>

Napi::Value RoundElements(const Napi::CallbackInfo& info);  // (Float32Array, "e2m1"|"e4m3"|"e5m2"|"fp16")
Napi::Value E8m0Cast(const Napi::CallbackInfo& info);       // (Float32Array) → Float32Array
Napi::Value E4m3Decode(const Napi::CallbackInfo& info);     // (Uint8Array) → Float32Array
