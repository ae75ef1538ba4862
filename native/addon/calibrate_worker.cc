#include "calibrate_worker.h"

#include <cmath>
#include <memory>

#include "../core/tensor_calibrate.h"
#include "js_convert.h"
#include "promise_worker.h"

using calib_js::coded_error;

namespace {

// Reads the optional `output` object: typed arrays, one element per block, that the engine writes
// the results into (CalibParams::lent). Returns a new object holding exactly the arrays taken
// (empty when none), to keep them alive whatever the caller does with `output` meanwhile.
Napi::Object lend_output(Napi::Env env, const Napi::Object& o, calib::CalibParams::Lent* lent) {
  Napi::Value v = o.Get("output");
  if (v.IsUndefined() || v.IsNull()) return Napi::Object();
  if (!v.IsObject()) throw coded_error(env, "E_BAD_ARGUMENT", "output must be an object of typed arrays");
  Napi::Object arrays = v.As<Napi::Object>();
  Napi::Object taken = Napi::Object::New(env);
  int64_t blocks = -1;
  auto take = [&](const char* key, napi_typedarray_type type, const char* type_name) -> void* {
    Napi::Value a = arrays.Get(key);
    if (a.IsUndefined()) return nullptr;
    if (!a.IsTypedArray() || a.As<Napi::TypedArray>().TypedArrayType() != type)
      throw coded_error(env, "E_BAD_ARGUMENT", std::string("output.") + key + " must be a " + type_name);
    Napi::TypedArray ta = a.As<Napi::TypedArray>();
    if (blocks >= 0 && int64_t(ta.ElementLength()) != blocks)
      throw coded_error(env, "E_BAD_ARGUMENT", "the output arrays must all have one element per block");
    blocks = int64_t(ta.ElementLength());
    taken.Set(key, ta);
    return static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  };
  lent->scales = static_cast<float*>(take("scales", napi_float32_array, "Float32Array"));
  lent->codes = static_cast<uint8_t*>(take("codes", napi_uint8_array, "Uint8Array"));
  lent->mse_before = static_cast<float*>(take("blockMseBefore", napi_float32_array, "Float32Array"));
  lent->mse_after = static_cast<float*>(take("blockMseAfter", napi_float32_array, "Float32Array"));
  lent->outliers = static_cast<uint16_t*>(take("blockOutliers", napi_uint16_array, "Uint16Array"));
  lent->blocks = blocks;
  return blocks >= 0 ? taken : Napi::Object();
}

// The result object of calibrate(): per-block arrays (the caller's own where it lent them) and the
// tensor's sums.
Napi::Value calibration_result(Napi::Env env, const calib::CalibOutput& out, const calib::CalibParams& params, Napi::Object lent) {
  Napi::Object r = Napi::Object::New(env);
  r.Set("rows", Napi::Number::New(env, double(out.rows)));
  r.Set("blocksPerRow", Napi::Number::New(env, double(out.blocks_per_row)));
  auto set = [&](const char* key, auto typed, const auto& arr) {
    if (arr.lent()) r.Set(key, lent.Get(key));
    else r.Set(key, calib_js::to_typed<decltype(typed)>(env, arr));
  };
  set("scales", Napi::Float32Array(), out.scales);
  if (!out.codes.empty()) set("codes", Napi::Uint8Array(), out.codes);
  if (params.diagnostics) {
    set("blockMseBefore", Napi::Float32Array(), out.block_mse_before);
    set("blockMseAfter", Napi::Float32Array(), out.block_mse_after);
    set("blockOutliers", Napi::Uint16Array(), out.block_outliers);
  }
  r.Set("sumErrBefore", Napi::Number::New(env, out.sum_err_before));
  r.Set("sumErrAfter", Napi::Number::New(env, out.sum_err_after));
  if (params.col_weights) {
    r.Set("sumObjBefore", Napi::Number::New(env, out.sum_obj_before));
    r.Set("sumObjAfter", Napi::Number::New(env, out.sum_obj_after));
  }
  r.Set("outliers", Napi::Number::New(env, double(out.outliers)));
  r.Set("counted", Napi::Number::New(env, double(out.counted)));
  r.Set("nonfinite", Napi::Number::New(env, double(out.nonfinite)));
  r.Set("firstNonfinite", Napi::Number::New(env, double(out.first_nonfinite)));
  r.Set("absmax", Napi::Number::New(env, out.absmax));
  r.Set("globalDecode", Napi::Number::New(env, out.global_decode));
  r.Set("backend", params.backend == calib::Backend::Cuda ? "cuda" : params.backend == calib::Backend::CudaEmulated ? "cuda-emulated" : "cpu");
  return r;
}


}  // namespace

Napi::Value Calibrate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsTypedArray() || !info[1].IsObject()) {
    throw coded_error(env, "E_BAD_ARGUMENT", "calibrate(weights: Uint8Array, options: object)");
  }
  Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
  Napi::Object o = info[1].As<Napi::Object>();

  calib::TensorView view;
  view.data = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  view.nbytes = ta.ByteLength();
  if (!o.Get("dtype").IsString() || !calib_js::parse_dtype(o.Get("dtype").As<Napi::String>(), &view.dtype))
    throw coded_error(env, "E_UNSUPPORTED_DTYPE", "dtype must be F32, F16 or BF16");
  if (!calib_js::get_count(o, "rows", &view.rows) || !calib_js::get_count(o, "cols", &view.cols))
    throw coded_error(env, "E_BAD_ARGUMENT", "rows and cols must be non-negative integers");

  calib::CalibParams p;
  if (!o.Get("scheme").IsString() || !calib::parse_scheme(o.Get("scheme").As<Napi::String>(), &p.scheme))
    throw coded_error(env, "E_BAD_FORMAT", "unknown format (fp4, fp8_e4m3, fp8_e5m2, nvfp4, mxfp4, mxfp8)");
  int64_t bs = 0, threads = 0;
  if (!calib_js::get_count(o, "blockSize", &bs) || !calib::engine_block_size_ok(int(bs)) || bs > 4096)
    throw coded_error(env, "E_BAD_BLOCK_SIZE", "blockSize must be an integer in 1..4096");
  p.block_size = int(bs);
  if (o.Has("threads") && !o.Get("threads").IsUndefined()) {
    if (!calib_js::get_count(o, "threads", &threads) || threads > 1024)
      throw coded_error(env, "E_BAD_ARGUMENT", "threads must be an integer in 0..1024");
  }
  p.threads = int(threads);
  std::string search = o.Get("search").IsString() ? std::string(o.Get("search").As<Napi::String>()) : "exact";
  if (!calib::parse_search(search, &p.search))
    throw coded_error(env, "E_BAD_ARGUMENT", "search must be exact, ternary or naive");
  const std::string backend = o.Get("backend").IsString() ? std::string(o.Get("backend").As<Napi::String>()) : "cpu";
  if (backend == "cpu") p.backend = calib::Backend::Cpu;
  else if (backend == "cuda") p.backend = calib::Backend::Cuda;
  else if (backend == "cuda-emulated") p.backend = calib::Backend::CudaEmulated;
  else throw coded_error(env, "E_BAD_ARGUMENT", "backend must be cpu, cuda or cuda-emulated");
  p.allow_nonfinite = calib_js::get_bool(o, "allowNonfinite", false);
  p.diagnostics = calib_js::get_bool(o, "diagnostics", true);

  Napi::Object control = calib_js::get_control(o, &p.control);

  Napi::Object weights;
  Napi::Value wv = o.Get("columnWeights");
  if (!wv.IsUndefined() && !wv.IsNull()) {
    if (!wv.IsTypedArray() || wv.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array ||
        int64_t(wv.As<Napi::TypedArray>().ElementLength()) != view.cols)
      throw coded_error(env, "E_BAD_ARGUMENT", "columnWeights must be a Float32Array with one weight per column");
    Napi::Float32Array cw = wv.As<Napi::Float32Array>();
    for (size_t i = 0; i < cw.ElementLength(); ++i) {
      if (!(cw[i] >= 0.0f) || !std::isfinite(cw[i]))
        throw coded_error(env, "E_BAD_ARGUMENT", "columnWeights must be finite and non-negative (index " + std::to_string(i) + ")");
    }
    p.col_weights = cw.Data();
    weights = cw;
  }

  Napi::Object means;
  Napi::Value mv = o.Get("columnMeans");
  if (!mv.IsUndefined() && !mv.IsNull()) {
    if (!p.col_weights) throw coded_error(env, "E_BAD_ARGUMENT", "columnMeans needs columnWeights");
    if (!mv.IsTypedArray() || mv.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array ||
        int64_t(mv.As<Napi::TypedArray>().ElementLength()) != view.cols)
      throw coded_error(env, "E_BAD_ARGUMENT", "columnMeans must be a Float32Array with one mean per column");
    Napi::Float32Array cm = mv.As<Napi::Float32Array>();
    for (size_t i = 0; i < cm.ElementLength(); ++i) {
      if (!std::isfinite(cm[i]))
        throw coded_error(env, "E_BAD_ARGUMENT", "columnMeans must be finite (index " + std::to_string(i) + ")");
    }
    p.col_means = cm.Data();
    means = cm;
  }

  // The weight bytes, the control words and the column weights are read by the worker threads:
  // keep them alive until it finishes.
  std::vector<Napi::Object> keep{ta};
  if (!control.IsEmpty()) keep.push_back(control);
  if (!weights.IsEmpty()) keep.push_back(weights);
  if (!means.IsEmpty()) keep.push_back(means);
  // The lent arrays are written by the worker threads and returned: the reference keeps them alive.
  Napi::Object lent = lend_output(env, o, &p.lent);
  std::shared_ptr<Napi::ObjectReference> lent_ref;
  if (!lent.IsEmpty()) lent_ref = std::make_shared<Napi::ObjectReference>(Napi::Persistent(lent));
  auto out = std::make_shared<calib::CalibOutput>();
  return calib_js::PromiseWorker::Start(new calib_js::PromiseWorker(
      env, "calibscope.calibrate", "calibrating the tensor", std::move(keep),
      [out, view, p]() { *out = calib::calibrate_tensor(view, p); },
      [out, p, lent_ref](Napi::Env env) { return calibration_result(env, *out, p, lent_ref ? lent_ref->Value() : Napi::Object()); }));
}
