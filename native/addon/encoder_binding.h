// `Encoder`: a BERT-family encoder held by the addon. Weights are copied in once with setWeight
// (and may be replaced between passes); forward() runs on worker threads and resolves a promise.
#pragma once

#include <napi.h>

Napi::Function EncoderClass(Napi::Env env);
