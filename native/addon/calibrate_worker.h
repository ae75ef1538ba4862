// calibrate(buffer, options) → Promise<result>: one tensor, one scheme, one block size, on CPU threads.
#pragma once

#include <napi.h>

Napi::Value Calibrate(const Napi::CallbackInfo& info);
