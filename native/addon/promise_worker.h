// Runs native work on a libuv worker thread and settles a Promise with the result: the one shape
// every long operation of the addon has. `work` runs off the JS thread and may throw
// calib::CalibError (its code crosses to JS), std::bad_alloc (E_OUT_OF_MEMORY) or anything else
// (E_INTERNAL); `done` builds the result on the JS thread; `keep` holds the JS objects the work reads
// or writes, so that they outlive it.
#pragma once

#include <napi.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "../core/tensor_calibrate.h"
#include "js_convert.h"

namespace calib_js {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, const char* name, std::string what, std::vector<Napi::Object> keep,
                std::function<void()> work, std::function<Napi::Value(Napi::Env)> done)
      : Napi::AsyncWorker(env, name),
        deferred_(Napi::Promise::Deferred::New(env)),
        what_(std::move(what)),
        work_(std::move(work)),
        done_(std::move(done)) {
    for (Napi::Object& o : keep) keep_.push_back(Napi::Persistent(o));
  }

  /** Queues the work and returns its promise. The worker deletes itself when done. */
  static Napi::Promise Start(PromiseWorker* w) {
    Napi::Promise p = w->deferred_.Promise();
    w->Queue();
    return p;
  }

 protected:
  void Execute() override {
    try {
      work_();
    } catch (const calib::CalibError& e) {
      code_ = e.code;
      SetError(e.what());
    } catch (const std::bad_alloc&) {
      code_ = "E_OUT_OF_MEMORY";
      SetError("out of memory while " + what_);
    } catch (const std::exception& e) {
      code_ = "E_INTERNAL";
      SetError(e.what());
    }
  }
  void OnOK() override {
    try {
      deferred_.Resolve(done_(Env()));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override {
    deferred_.Reject(coded_error(Env(), code_.empty() ? "E_INTERNAL" : code_, e.Message()).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::ObjectReference> keep_;
  std::string what_;
  std::function<void()> work_;
  std::function<Napi::Value(Napi::Env)> done_;
  std::string code_;
};

}  // namespace calib_js
