// generateTrainedLike(options) → Promise<Uint8Array>: trained-like weights (F16 bits or F32),
// generated on CPU threads.
#pragma once

#include <napi.h>

Napi::Value GenerateTrainedLike(const Napi::CallbackInfo& info);
