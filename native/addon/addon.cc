// The calibscope native addon: module registration and `info()`.
#include <napi.h>

#include <thread>

#include "../core/tensor_calibrate.h"
#include "../cuda/cuda_backend.h"
#include "calibrate_worker.h"
#include "encoder_binding.h"
#include "formats_binding.h"
#include "generate_binding.h"
#include "quantize_binding.h"

#ifndef CALIBSCOPE_VERSION
#define CALIBSCOPE_VERSION "0.0.0"
#endif

namespace {

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("version", CALIBSCOPE_VERSION);
  o.Set("simd", calib::simd_level());
  o.Set("hardwareThreads", Napi::Number::New(env, std::thread::hardware_concurrency()));
  const calib::cuda::Status& st = calib::cuda::status();
  Napi::Object cuda = Napi::Object::New(env);
  cuda.Set("compiled", st.compiled);
  cuda.Set("available", st.available);
  cuda.Set("reason", st.reason);
  Napi::Array devices = Napi::Array::New(env, st.devices.size());
  for (size_t i = 0; i < st.devices.size(); ++i) {
    const calib::cuda::DeviceInfo& d = st.devices[i];
    Napi::Object dev = Napi::Object::New(env);
    dev.Set("index", d.index);
    dev.Set("name", d.name);
    dev.Set("totalMemory", Napi::Number::New(env, double(d.total_memory)));
    dev.Set("computeCapability", std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor));
    dev.Set("multiprocessors", d.multiprocessors);
    devices.Set(uint32_t(i), dev);
  }
  cuda.Set("devices", devices);
  o.Set("cuda", cuda);
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("calibrate", Napi::Function::New(env, Calibrate));
  exports.Set("roundElements", Napi::Function::New(env, RoundElements));
  exports.Set("e8m0Cast", Napi::Function::New(env, E8m0Cast));
  exports.Set("e4m3Decode", Napi::Function::New(env, E4m3Decode));
  exports.Set("generateTrainedLike", Napi::Function::New(env, GenerateTrainedLike));
  RegisterQuantize(env, exports);  // quantize, fakeQuantize, dequantize, quantizedError
  exports.Set("Encoder", EncoderClass(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(calibscope, Init)
