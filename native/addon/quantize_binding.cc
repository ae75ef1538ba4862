#include "quantize_binding.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../core/quantize.h"
#include "js_convert.h"
#include "promise_worker.h"

using calib_js::coded_error;

namespace {

// A new typed array of `count` elements whose data starts at a 64-byte aligned address; `data`
// receives that address. Allocated on the JS thread, written by the worker, handed to JS after.
template <class TA>
TA aligned_array(Napi::Env env, size_t count, size_t elem_size, void** data) {
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, count * elem_size + 63);
  uint8_t* base = static_cast<uint8_t*>(ab.Data());
  size_t pad = (64 - reinterpret_cast<uintptr_t>(base) % 64) % 64;
  if (pad % elem_size != 0) pad = 0;  // an allocator below element alignment: unaligned, still correct
  *data = base + pad;
  return TA::New(env, count, ab, pad);
}


bool is_typed(const Napi::Value& v, napi_typedarray_type t) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == t;
}

// Everything the four calls share, read and checked on the JS thread. Scales are copied, so JS may
// change its arrays while the worker runs.
struct Request {
  int64_t rows = 0, cols = 0, row_stride = 0;
  calib::DType dtype = calib::DType::F32;
  calib::QuantParams params;
  std::vector<float> mult;
  std::vector<uint8_t> codes;
  float global = 0.0f;
  bool has_global = false;

  calib::QuantScales scales() const {
    calib::QuantScales s;
    s.mult = mult.empty() ? nullptr : mult.data();
    s.codes = codes.empty() ? nullptr : codes.data();
    s.count = mult.empty() ? codes.size() : mult.size();
    s.global = global;
    return s;
  }
  int64_t numel() const { return rows * cols; }
};

Request parse_request(Napi::Env env, const Napi::Object& o, bool need_dtype, bool need_stride) {
  Request r;
  if (need_dtype) {
    if (!o.Get("dtype").IsString() || !calib_js::parse_dtype(o.Get("dtype").As<Napi::String>(), &r.dtype))
      throw coded_error(env, "E_UNSUPPORTED_DTYPE", "dtype must be F32, F16 or BF16");
  }
  if (!calib_js::get_count(o, "rows", &r.rows) || !calib_js::get_count(o, "cols", &r.cols))
    throw coded_error(env, "E_BAD_ARGUMENT", "rows and cols must be non-negative integers");
  if (r.rows == 0 || r.cols == 0) throw coded_error(env, "E_EMPTY_TENSOR", "tensor has no elements");
  if (r.cols > INT64_MAX / 8 / r.rows) throw coded_error(env, "E_BAD_ARGUMENT", "tensor shape is too large");
  if (!o.Get("scheme").IsString() || !calib::parse_scheme(o.Get("scheme").As<Napi::String>(), &r.params.scheme))
    throw coded_error(env, "E_BAD_FORMAT", "unknown format (fp4, fp8_e4m3, fp8_e5m2, nvfp4, mxfp4, mxfp8)");
  int64_t bs = 0;
  if (!calib_js::get_count(o, "blockSize", &bs) || bs > 4096 || !calib::engine_block_size_ok(int(bs)))
    throw coded_error(env, "E_BAD_BLOCK_SIZE", "blockSize must be an integer in 1..4096");
  r.params.block_size = int(bs);
  if (o.Has("threads") && !o.Get("threads").IsUndefined()) {
    int64_t t = 0;
    if (!calib_js::get_count(o, "threads", &t) || t > 1024) throw coded_error(env, "E_BAD_ARGUMENT", "threads must be an integer in 0..1024");
    r.params.threads = int(t);
  }
  r.params.allow_nonfinite = calib_js::get_bool(o, "allowNonfinite", false);
  if (need_stride && !calib_js::get_count(o, "rowStride", &r.row_stride))
    throw coded_error(env, "E_BAD_ARGUMENT", "rowStride must be a non-negative integer");

  const calib::SchemeInfo& info = calib::scheme_info(r.params.scheme);
  if (info.enc == calib::ScaleEnc::FP32) {
    if (!is_typed(o.Get("scales"), napi_float32_array))
      throw coded_error(env, "E_BAD_PROFILE", std::string(info.name) + " needs `scales`: a Float32Array of per-block multipliers");
    Napi::Float32Array s = o.Get("scales").As<Napi::Float32Array>();
    r.mult.assign(s.Data(), s.Data() + s.ElementLength());
  } else {
    if (!is_typed(o.Get("codes"), napi_uint8_array))
      throw coded_error(env, "E_BAD_PROFILE", std::string(info.name) + " needs `codes`: a Uint8Array of per-block scale codes");
    Napi::Uint8Array c = o.Get("codes").As<Napi::Uint8Array>();
    r.codes.assign(c.Data(), c.Data() + c.ElementLength());
  }
  if (info.enc == calib::ScaleEnc::E4M3G) {
    if (!o.Get("globalScale").IsNumber())
      throw coded_error(env, "E_BAD_PROFILE", "nvfp4 needs `globalScale`: the per-tensor FP32 decode scale");
    r.global = o.Get("globalScale").As<Napi::Number>().FloatValue();
    r.has_global = true;
  }
  // Empty scale arrays would read as "missing" later: report the count mismatch here instead.
  if (r.mult.empty() && r.codes.empty())
    throw coded_error(env, "E_BAD_PROFILE", "the scales array is empty");
  return r;
}

calib::TensorView weights_view(Napi::Env env, const Napi::Value& v, const Request& r) {
  if (!v.IsTypedArray()) throw coded_error(env, "E_BAD_ARGUMENT", "weights must be a Uint8Array of raw element bytes");
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  calib::TensorView view;
  view.data = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  view.nbytes = ta.ByteLength();
  view.dtype = r.dtype;
  view.rows = r.rows;
  view.cols = r.cols;
  const size_t need = size_t(r.numel()) * calib::dtype_size(r.dtype);
  if (view.nbytes != need)
    throw coded_error(env, "E_BAD_ARGUMENT", "weights hold " + std::to_string(view.nbytes) + " bytes, shape × dtype needs " + std::to_string(need));
  return view;
}

calib::PackedView packed_view(Napi::Env env, const Napi::Value& v, const Request& r) {
  if (!is_typed(v, napi_uint8_array)) throw coded_error(env, "E_BAD_ARGUMENT", "elements must be a Uint8Array");
  Napi::Uint8Array ta = v.As<Napi::Uint8Array>();
  calib::PackedView q;
  q.elements = ta.Data();
  q.nbytes = ta.ByteLength();
  q.rows = r.rows;
  q.cols = r.cols;
  q.row_stride = r.row_stride;
  const calib::Elem e = calib::scheme_info(r.params.scheme).elem;
  if (r.row_stride < calib::packed_row_bytes(e, r.cols) || r.row_stride > INT64_MAX / r.rows)
    throw coded_error(env, "E_BAD_ARGUMENT", "rowStride " + std::to_string(r.row_stride) + " is smaller than a packed row (" +
                                                 std::to_string(calib::packed_row_bytes(e, r.cols)) + " bytes)");
  if (q.nbytes != size_t(r.rows * r.row_stride))
    throw coded_error(env, "E_BAD_ARGUMENT", "elements hold " + std::to_string(q.nbytes) + " bytes, rows × rowStride needs " +
                                                 std::to_string(r.rows * r.row_stride));
  return q;
}

calib_js::PromiseWorker* make_worker(Napi::Env env, std::vector<Napi::Object> keep, std::function<void()> work,
                                     std::function<Napi::Value(Napi::Env)> done) {
  return new calib_js::PromiseWorker(env, "calibscope.quantize", "quantizing the tensor", std::move(keep), std::move(work),
                                     std::move(done));
}

Napi::Value Queue(calib_js::PromiseWorker* w) { return calib_js::PromiseWorker::Start(w); }

// A 64-byte aligned Float32Array of `count` values for x̂, written by the worker through *data and
// handed to JS when it is done.
std::shared_ptr<Napi::Reference<Napi::Float32Array>> float_output(Napi::Env env, size_t count, float** data) {
  void* out = nullptr;
  Napi::Float32Array a = aligned_array<Napi::Float32Array>(env, count, 4, &out);
  *data = static_cast<float*>(out);
  return std::make_shared<Napi::Reference<Napi::Float32Array>>(Napi::Persistent(a));
}

Napi::Value Quantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsTypedArray() || !info[1].IsObject())
    throw coded_error(env, "E_BAD_ARGUMENT", "quantize(weights: Uint8Array, options: object)");
  auto req = std::make_shared<Request>(parse_request(env, info[1].As<Napi::Object>(), true, false));
  const calib::TensorView view = weights_view(env, info[0], *req);
  const calib::Elem e = calib::scheme_info(req->params.scheme).elem;
  const int64_t stride = calib::packed_row_stride(e, req->cols);
  const size_t nbytes = size_t(req->rows * stride);
  void* out = nullptr;
  Napi::Uint8Array elements = aligned_array<Napi::Uint8Array>(env, nbytes, 1, &out);
  auto stats = std::make_shared<calib::QuantStats>();
  auto* w = make_worker(
      env, {info[0].As<Napi::Object>()},
      [req, view, out, nbytes, stats]() {
        *stats = calib::quantize_tensor(view, req->params, req->scales(), static_cast<uint8_t*>(out), nbytes);
      },
      [req, stride, stats, elements_ref = std::make_shared<Napi::Reference<Napi::Uint8Array>>(Napi::Persistent(elements))](Napi::Env env) -> Napi::Value {
        Napi::Object r = Napi::Object::New(env);
        r.Set("elements", elements_ref->Value());
        r.Set("rowStride", Napi::Number::New(env, double(stride)));
        void* data = nullptr;
        if (!req->mult.empty()) {
          Napi::Float32Array s = aligned_array<Napi::Float32Array>(env, req->mult.size(), 4, &data);
          std::memcpy(data, req->mult.data(), req->mult.size() * 4);
          r.Set("scales", s);
        } else {
          Napi::Uint8Array s = aligned_array<Napi::Uint8Array>(env, req->codes.size(), 1, &data);
          std::memcpy(data, req->codes.data(), req->codes.size());
          r.Set("scales", s);
        }
        if (req->has_global) r.Set("globalScale", Napi::Number::New(env, req->global));
        r.Set("outliers", Napi::Number::New(env, double(stats->outliers)));
        r.Set("nonfinite", Napi::Number::New(env, double(stats->nonfinite)));
        return r;
      });
  return Queue(w);
}

Napi::Value FakeQuantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsTypedArray() || !info[1].IsObject())
    throw coded_error(env, "E_BAD_ARGUMENT", "fakeQuantize(weights: Uint8Array, options: object)");
  auto req = std::make_shared<Request>(parse_request(env, info[1].As<Napi::Object>(), true, false));
  const calib::TensorView view = weights_view(env, info[0], *req);
  const size_t count = size_t(req->numel());
  float* out = nullptr;
  const auto ref = float_output(env, count, &out);
  auto* w = make_worker(
      env, {info[0].As<Napi::Object>()},
      [req, view, out, count]() {
        calib::fake_quantize_tensor(view, req->params, req->scales(), out, count);
      },
      [ref](Napi::Env) -> Napi::Value { return ref->Value(); });
  return Queue(w);
}

Napi::Value Dequantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[1].IsObject())
    throw coded_error(env, "E_BAD_ARGUMENT", "dequantize(elements: Uint8Array, options: object)");
  auto req = std::make_shared<Request>(parse_request(env, info[1].As<Napi::Object>(), false, true));
  const calib::PackedView q = packed_view(env, info[0], *req);
  const size_t count = size_t(req->numel());
  float* out = nullptr;
  const auto ref = float_output(env, count, &out);
  auto* w = make_worker(
      env, {info[0].As<Napi::Object>()},
      [req, q, out, count]() { calib::dequantize_tensor(q, req->params, req->scales(), out, count); },
      [ref](Napi::Env) -> Napi::Value { return ref->Value(); });
  return Queue(w);
}

Napi::Value QuantizedError(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsTypedArray() || !info[2].IsObject())
    throw coded_error(env, "E_BAD_ARGUMENT", "quantizedError(weights: Uint8Array, elements: Uint8Array, options: object)");
  auto req = std::make_shared<Request>(parse_request(env, info[2].As<Napi::Object>(), true, true));
  const calib::TensorView view = weights_view(env, info[0], *req);
  const calib::PackedView q = packed_view(env, info[1], *req);
  auto err = std::make_shared<calib::QuantError>();
  auto* w = make_worker(
      env, {info[0].As<Napi::Object>(), info[1].As<Napi::Object>()},
      [req, view, q, err]() { *err = calib::quantized_error(view, q, req->params, req->scales()); },
      [err](Napi::Env env) -> Napi::Value {
        Napi::Object r = Napi::Object::New(env);
        r.Set("sumSquaredError", Napi::Number::New(env, err->sum_err));
        r.Set("counted", Napi::Number::New(env, double(err->counted)));
        r.Set("nonfinite", Napi::Number::New(env, double(err->nonfinite)));
        return r;
      });
  return Queue(w);
}

Napi::Value ScaledHistogramJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsTypedArray() || !info[1].IsObject())
    throw coded_error(env, "E_BAD_ARGUMENT", "scaledHistogram(weights: Uint8Array, options: object)");
  const Napi::Object o = info[1].As<Napi::Object>();
  auto req = std::make_shared<Request>(parse_request(env, o, true, false));
  int64_t bins = 0;
  if (!calib_js::get_count(o, "bins", &bins) || bins < 1 || bins > 65536)
    throw coded_error(env, "E_BAD_ARGUMENT", "bins must be an integer in 1..65536");
  const calib::TensorView view = weights_view(env, info[0], *req);
  auto h = std::make_shared<calib::ScaledHistogram>();
  auto* w = make_worker(
      env, {info[0].As<Napi::Object>()},
      [req, view, bins, h]() { *h = calib::scaled_histogram(view, req->params, req->scales(), int(bins)); },
      [h](Napi::Env env) -> Napi::Value {
        Napi::Object r = Napi::Object::New(env);
        Napi::Float64Array counts = Napi::Float64Array::New(env, h->counts.size());
        std::memcpy(counts.Data(), h->counts.data(), h->counts.size() * sizeof(double));
        r.Set("counts", counts);
        r.Set("top", Napi::Number::New(env, h->top));
        r.Set("total", Napi::Number::New(env, double(h->total)));
        r.Set("clipped", Napi::Number::New(env, double(h->clipped)));
        return r;
      });
  return Queue(w);
}

}  // namespace

void RegisterQuantize(Napi::Env env, Napi::Object exports) {
  exports.Set("quantize", Napi::Function::New(env, Quantize));
  exports.Set("fakeQuantize", Napi::Function::New(env, FakeQuantize));
  exports.Set("dequantize", Napi::Function::New(env, Dequantize));
  exports.Set("quantizedError", Napi::Function::New(env, QuantizedError));
  exports.Set("scaledHistogram", Napi::Function::New(env, ScaledHistogramJs));
}
