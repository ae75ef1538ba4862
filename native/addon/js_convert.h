// Helpers shared by the bindings: reading options, building typed arrays, raising coded errors.
#pragma once

#include <napi.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/tensor_calibrate.h"

namespace calib_js {

// A JS Error with a stable `code` property, as the service protocol expects.
inline Napi::Error coded_error(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Value().Set("code", Napi::String::New(env, code));
  return e;
}

// Copies a vector (or a calib::BlockArray) into a new typed array. (Electron's V8 sandbox forbids
// external buffers.)
template <class TA, class V>
inline TA to_typed(Napi::Env env, const V& v) {
  using T = std::remove_cv_t<std::remove_reference_t<decltype(v[0])>>;
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(ab.Data(), v.data(), v.size() * sizeof(T));
  return TA::New(env, v.size(), ab, 0);
}

inline bool parse_dtype(const std::string& s, calib::DType* d) {
  if (s == "F32") *d = calib::DType::F32;
  else if (s == "F16") *d = calib::DType::F16;
  else if (s == "BF16") *d = calib::DType::BF16;
  else return false;
  return true;
}

// Reads a non-negative integer option; the native side checks what JS passes, it does not trust it.
inline bool get_count(const Napi::Object& o, const char* key, int64_t* out) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) return false;
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9.0e15 || std::floor(d) != d) return false;
  *out = int64_t(d);
  return true;
}

// The optional `control` words (Int32Array, [0] cancel, [1] progress) shared with native threads:
// sets *words and returns the array, to be kept alive for as long as the threads use it.
inline Napi::Object get_control(const Napi::Object& o, int32_t** words) {
  Napi::Value cv = o.Get("control");
  if (cv.IsTypedArray() && cv.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array &&
      cv.As<Napi::TypedArray>().ElementLength() >= 2) {
    Napi::Int32Array c = cv.As<Napi::Int32Array>();
    *words = c.Data();
    return c;
  }
  return Napi::Object();
}

inline bool get_bool(const Napi::Object& o, const char* key, bool def) {
  Napi::Value v = o.Get(key);
  return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : def;
}

}  // namespace calib_js
