#include "formats_binding.h"

#include "../core/elem_format.h"
#include "js_convert.h"

using calib_js::coded_error;

namespace {

bool parse_elem(const std::string& s, calib::Elem* e) {
  if (s == "e2m1") *e = calib::Elem::E2M1;
  else if (s == "e4m3") *e = calib::Elem::E4M3;
  else if (s == "e5m2") *e = calib::Elem::E5M2;
  else if (s == "fp16") *e = calib::Elem::FP16;
  else return false;
  return true;
}

Napi::Float32Array map_f32(const Napi::CallbackInfo& info, float (*fn)(float, int), int arg) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray() ||
      info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw coded_error(env, "E_BAD_ARGUMENT", "expected a Float32Array");
  Napi::Float32Array in = info[0].As<Napi::Float32Array>();
  Napi::Float32Array out = Napi::Float32Array::New(env, in.ElementLength());
  for (size_t i = 0; i < in.ElementLength(); ++i) out[i] = fn(in[i], arg);
  return out;
}

}  // namespace

Napi::Value RoundElements(const Napi::CallbackInfo& info) {
  calib::Elem e;
  if (info.Length() < 2 || !info[1].IsString() || !parse_elem(info[1].As<Napi::String>(), &e))
    throw coded_error(info.Env(), "E_BAD_ARGUMENT", "element format must be e2m1, e4m3, e5m2 or fp16");
  return map_f32(info, [](float x, int el) { return calib::round_elem(calib::Elem(el), x); }, int(e));
}

Napi::Value E8m0Cast(const Napi::CallbackInfo& info) {
  return map_f32(info, [](float x, int) { return calib::e8m0_cast(x); }, 0);
}

Napi::Value E4m3Decode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray() ||
      info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    throw coded_error(env, "E_BAD_ARGUMENT", "expected a Uint8Array");
  Napi::Uint8Array in = info[0].As<Napi::Uint8Array>();
  Napi::Float32Array out = Napi::Float32Array::New(env, in.ElementLength());
  for (size_t i = 0; i < in.ElementLength(); ++i) out[i] = calib::e4m3_decode(in[i]);
  return out;
}
