// Helpers shared by the bindings: reading options, building typed arrays, raising coded errors.
#pragma once

#include <napi.h>

#include <cstring>
#include <string>
#include <vector>

namespace calib_js {

// A JS Error with a stable `code` property, as the service protocol expects.
inline Napi::Error coded_error(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Value().Set("code", Napi::String::New(env, code));
  return e;
}

// Copies a vector into a new typed array. (Electron's V8 sandbox forbids external buffers.)
template <class TA, class T>
inline TA to_typed(Napi::Env env, const std::vector<T>& v) {
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(ab.Data(), v.data(), v.size() * sizeof(T));
  return TA::New(env, v.size(), ab, 0);
}

inline bool get_bool(const Napi::Object& o, const char* key, bool def) {
  Napi::Value v = o.Get(key);
  return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : def;
}

}  // namespace calib_js
