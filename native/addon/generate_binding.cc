#include "generate_binding.h"

#include <cmath>
#include <string>

#include "../core/tensor_calibrate.h"
#include "../core/trained_like.h"
#include "js_convert.h"
#include "promise_worker.h"

using calib_js::coded_error;

namespace {

// One call returns at most this many bytes; larger tensors are generated in row slices.
constexpr uint64_t kMaxBytes = uint64_t(1) << 31;

// Reads an optional number option; `integer` also requires a whole number in [0, 2^53).
bool get_number(Napi::Env env, const Napi::Object& o, const char* key, bool integer, double* out) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return false;
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!std::isfinite(d) || (integer && (d < 0 || d >= 9007199254740992.0 || std::floor(d) != d))) {
    throw coded_error(env, "E_BAD_ARGUMENT",
                      std::string("generateTrainedLike: ") + key + (integer ? " must be a non-negative integer" : " must be a finite number"));
  }
  *out = d;
  return true;
}

}  // namespace

Napi::Value GenerateTrainedLike(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject() || info[0].IsArray())
    throw coded_error(env, "E_BAD_ARGUMENT", "generateTrainedLike(options: {rows, cols, seed, dtype, ...})");
  Napi::Object o = info[0].As<Napi::Object>();

  calib::TrainedLikeParams p;
  double d = 0;
  if (!get_number(env, o, "rows", true, &d)) throw coded_error(env, "E_BAD_ARGUMENT", "generateTrainedLike: rows is required");
  p.rows = int64_t(d);
  if (!get_number(env, o, "cols", true, &d)) throw coded_error(env, "E_BAD_ARGUMENT", "generateTrainedLike: cols is required");
  p.cols = int64_t(d);
  if (!get_number(env, o, "seed", true, &d)) throw coded_error(env, "E_BAD_ARGUMENT", "generateTrainedLike: seed is required");
  p.seed = uint64_t(d);
  p.row_begin = get_number(env, o, "rowStart", true, &d) ? int64_t(d) : 0;
  p.row_count = get_number(env, o, "rowCount", true, &d) ? int64_t(d) : p.rows - p.row_begin;
  if (get_number(env, o, "std", false, &d)) p.std = float(d);
  if (get_number(env, o, "rowSpread", false, &d)) p.row_spread = float(d);
  if (get_number(env, o, "offset", false, &d)) p.offset = float(d);
  if (get_number(env, o, "outlierFraction", false, &d)) p.outlier_fraction = d;
  if (get_number(env, o, "outlierGain", false, &d)) p.outlier_gain = float(d);
  if (get_number(env, o, "threads", true, &d)) {
    if (d > 1024) throw coded_error(env, "E_BAD_ARGUMENT", "generateTrainedLike: threads must be in 0..1024");
    p.threads = int(d);
  }
  p.simd = calib_js::get_bool(o, "simd", true);
  Napi::Value dt = o.Get("dtype");
  const std::string dtype = dt.IsString() ? std::string(dt.As<Napi::String>()) : std::string();
  if (dtype == "F16") p.f16 = true;
  else if (dtype == "F32") p.f16 = false;
  else throw coded_error(env, "E_UNSUPPORTED_DTYPE", "generateTrainedLike: dtype must be F16 or F32");

  try {
    calib::check_trained_like(p);
  } catch (const calib::CalibError& e) {
    throw coded_error(env, e.code, e.what());
  }
  const uint64_t bytes = calib::trained_like_bytes(p);
  if (bytes > kMaxBytes)
    throw coded_error(env, "E_BAD_ARGUMENT", "generateTrainedLike: " + std::to_string(bytes) +
                                                 " bytes in one call is too many (at most 2 GiB): generate rows in slices with rowStart/rowCount");

  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, size_t(bytes));
  // A fresh V8-owned buffer, filled on the worker threads; JS sees it only once it is complete.
  void* data = buffer.Data();
  auto ref = std::make_shared<Napi::Reference<Napi::ArrayBuffer>>(Napi::Persistent(buffer));
  return calib_js::PromiseWorker::Start(new calib_js::PromiseWorker(
      env, "calibscope.generateTrainedLike", "generating weights", {},
      [p, data]() { calib::generate_trained_like(p, data); },
      [ref, bytes](Napi::Env env) -> Napi::Value { return Napi::Uint8Array::New(env, size_t(bytes), ref->Value(), 0); }));
}
