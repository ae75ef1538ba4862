#include "encoder_binding.h"

#include <cmath>
#include <memory>

#include "../encoder/bert_encoder.h"
#include "js_convert.h"

using calib_js::coded_error;

namespace {

int64_t get_int(const Napi::Env& env, const Napi::Object& o, const char* key, int64_t lo, int64_t hi, bool required,
                int64_t def = 0) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() && !required) return def;
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!(d >= double(lo) && d <= double(hi)) || std::floor(d) != d)
    throw coded_error(env, "E_BAD_ARGUMENT",
                      std::string(key) + " must be an integer in " + std::to_string(lo) + ".." + std::to_string(hi));
  return int64_t(d);
}

class ForwardWorker;

class EncoderWrap : public Napi::ObjectWrap<EncoderWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Encoder",
                       {InstanceMethod("setWeight", &EncoderWrap::SetWeight), InstanceMethod("weights", &EncoderWrap::Weights),
                        InstanceMethod("missing", &EncoderWrap::Missing), InstanceMethod("forward", &EncoderWrap::Forward),
                        InstanceMethod("dispose", &EncoderWrap::Dispose), StaticMethod("isa", &EncoderWrap::Isa),
                        StaticMethod("allowSimd", &EncoderWrap::AllowSimd)});
  }

  explicit EncoderWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EncoderWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw coded_error(env, "E_BAD_ARGUMENT", "new Encoder(config: object)");
    Napi::Object o = info[0].As<Napi::Object>();
    enc::BertConfig c;
    const int64_t big = int64_t(1) << 30;
    c.vocab = get_int(env, o, "vocabSize", 1, big, true);
    c.hidden = get_int(env, o, "hiddenSize", 1, big, true);
    c.layers = get_int(env, o, "numLayers", 1, 1024, true);
    c.heads = get_int(env, o, "numHeads", 1, big, true);
    c.intermediate = get_int(env, o, "intermediateSize", 1, big, true);
    c.max_positions = get_int(env, o, "maxPositions", 1, big, true);
    c.type_vocab = get_int(env, o, "typeVocabSize", 1, big, true);
    Napi::Value eps = o.Get("layerNormEps");
    if (!eps.IsNumber()) throw coded_error(env, "E_BAD_ARGUMENT", "layerNormEps must be a number");
    c.eps = float(eps.As<Napi::Number>().DoubleValue());
    const std::string act = o.Get("activation").IsString() ? std::string(o.Get("activation").As<Napi::String>()) : "";
    if (act == "gelu") c.act = enc::Activation::GeluErf;
    else if (act == "gelu_tanh") c.act = enc::Activation::GeluTanh;
    else if (act == "relu") c.act = enc::Activation::Relu;
    else throw coded_error(env, "E_BAD_ARGUMENT", "activation must be gelu, gelu_tanh or relu");
    try {
      enc_ = std::make_shared<enc::BertEncoder>(c);
    } catch (const enc::EncoderError& e) {
      throw coded_error(env, e.code, e.what());
    } catch (const std::bad_alloc&) {
      throw coded_error(env, "E_OUT_OF_MEMORY", "out of memory allocating the encoder");
    }
  }

  void Release() { --busy_; }

 private:
  friend class ForwardWorker;

  void CheckUsable(Napi::Env env, const char* what) {
    if (!enc_) throw coded_error(env, "E_BAD_ARGUMENT", std::string("encoder.") + what + ": the encoder was disposed");
    if (busy_ > 0)
      throw coded_error(env, "E_BAD_ARGUMENT", std::string("encoder.") + what + ": a forward pass is still running");
  }

  Napi::Value SetWeight(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsString() || !info[1].IsTypedArray() ||
        info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      throw coded_error(env, "E_BAD_ARGUMENT", "setWeight(name: string, data: Float32Array)");
    CheckUsable(env, "setWeight");
    Napi::Float32Array a = info[1].As<Napi::Float32Array>();
    try {
      enc_->set_weight(info[0].As<Napi::String>(), a.Data(), a.ElementLength());
    } catch (const enc::EncoderError& e) {
      throw coded_error(env, e.code, e.what());
    } catch (const std::bad_alloc&) {
      throw coded_error(env, "E_OUT_OF_MEMORY", "out of memory copying a weight into the encoder");
    }
    return env.Undefined();
  }

  Napi::Value Weights(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!enc_) throw coded_error(env, "E_BAD_ARGUMENT", "encoder.weights: the encoder was disposed");
    const auto ws = enc_->weights();
    Napi::Array arr = Napi::Array::New(env, ws.size());
    for (size_t i = 0; i < ws.size(); ++i) {
      Napi::Object w = Napi::Object::New(env);
      w.Set("name", ws[i].name);
      Napi::Array shape = Napi::Array::New(env, ws[i].shape.size());
      for (size_t j = 0; j < ws[i].shape.size(); ++j) shape.Set(uint32_t(j), Napi::Number::New(env, double(ws[i].shape[j])));
      w.Set("shape", shape);
      arr.Set(uint32_t(i), w);
    }
    return arr;
  }

  Napi::Value Missing(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!enc_) throw coded_error(env, "E_BAD_ARGUMENT", "encoder.missing: the encoder was disposed");
    const auto ms = enc_->missing();
    Napi::Array arr = Napi::Array::New(env, ms.size());
    for (size_t i = 0; i < ms.size(); ++i) arr.Set(uint32_t(i), ms[i]);
    return arr;
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (enc_ && busy_ > 0) throw coded_error(env, "E_BAD_ARGUMENT", "encoder.dispose: a forward pass is still running");
    enc_.reset();
    return env.Undefined();
  }

  static Napi::Value Isa(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), enc::gemm_isa()); }

  static Napi::Value AllowSimd(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsBoolean()) throw coded_error(info.Env(), "E_BAD_ARGUMENT", "allowSimd(allow: boolean)");
    enc::gemm_allow_simd(info[0].As<Napi::Boolean>().Value());
    return Napi::String::New(info.Env(), enc::gemm_isa());
  }

  // Bad arguments reject the promise, as failures during the pass do.
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    try {
      return ForwardImpl(info);
    } catch (const Napi::Error& e) {
      Napi::Promise::Deferred d = Napi::Promise::Deferred::New(info.Env());
      d.Reject(e.Value());
      return d.Promise();
    }
  }
  Napi::Value ForwardImpl(const Napi::CallbackInfo& info);

  std::shared_ptr<enc::BertEncoder> enc_;
  int busy_ = 0;
};

class ForwardWorker : public Napi::AsyncWorker {
 public:
  ForwardWorker(Napi::Env env, EncoderWrap* wrap, enc::Batch batch, enc::ForwardParams params, Napi::Object control)
      : Napi::AsyncWorker(env, "calibscope.encoder.forward"),
        deferred_(Napi::Promise::Deferred::New(env)),
        wrap_(wrap),
        enc_(wrap->enc_),
        batch_(std::move(batch)),
        params_(std::move(params)) {
    // The encoder object and the control words stay alive while the pass runs.
    self_ref_ = Napi::Persistent(wrap->Value());
    if (!control.IsEmpty()) control_ref_ = Napi::Persistent(control);
    ++wrap_->busy_;
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      out_ = enc_->forward(batch_, params_);
    } catch (const enc::EncoderError& e) {
      code_ = e.code;
      SetError(e.what());
    } catch (const std::bad_alloc&) {
      code_ = "E_OUT_OF_MEMORY";
      SetError("out of memory in the encoder forward pass");
    } catch (const std::exception& e) {
      code_ = "E_INTERNAL";
      SetError(e.what());
    }
  }

  void OnOK() override {
    wrap_->Release();
    Napi::Env env = Env();
    Napi::Object r = Napi::Object::New(env);
    r.Set("tokens", Napi::Number::New(env, double(out_.tokens)));
    r.Set("sequences", Napi::Number::New(env, double(out_.sequences)));
    r.Set("hidden", calib_js::to_typed<Napi::Float32Array>(env, out_.hidden));
    if (params_.capture) {
      Napi::Array layers = Napi::Array::New(env, out_.layer_inputs.size());
      for (size_t i = 0; i < out_.layer_inputs.size(); ++i) {
        layers.Set(uint32_t(i), calib_js::to_typed<Napi::Float32Array>(env, out_.layer_inputs[i]));
        std::vector<float>().swap(out_.layer_inputs[i]);
      }
      r.Set("layerInputs", layers);
    }
    if (params_.stats) {
      Napi::Array layers = Napi::Array::New(env, out_.stats.size());
      for (size_t i = 0; i < out_.stats.size(); ++i) {
        const enc::LayerStats& L = out_.stats[i];
        Napi::Object o = Napi::Object::New(env);
        o.Set("input", calib_js::to_typed<Napi::Float64Array>(env, L.input));
        o.Set("context", calib_js::to_typed<Napi::Float64Array>(env, L.context));
        o.Set("attentionOutput", calib_js::to_typed<Napi::Float64Array>(env, L.attn_output));
        o.Set("intermediate", calib_js::to_typed<Napi::Float64Array>(env, L.intermediate));
        o.Set("entropy", calib_js::to_typed<Napi::Float64Array>(env, L.entropy));
        o.Set("inputSum", calib_js::to_typed<Napi::Float64Array>(env, L.input_sum));
        o.Set("contextSum", calib_js::to_typed<Napi::Float64Array>(env, L.context_sum));
        o.Set("attentionOutputSum", calib_js::to_typed<Napi::Float64Array>(env, L.attn_output_sum));
        o.Set("intermediateSum", calib_js::to_typed<Napi::Float64Array>(env, L.intermediate_sum));
        layers.Set(uint32_t(i), o);
      }
      Napi::Object st = Napi::Object::New(env);
      st.Set("layers", layers);
      st.Set("pooler", calib_js::to_typed<Napi::Float64Array>(env, out_.pooler));
      st.Set("poolerSum", calib_js::to_typed<Napi::Float64Array>(env, out_.pooler_sum));
      r.Set("stats", st);
    }
    if (params_.act_quant) {
      Napi::Array act = Napi::Array::New(env, out_.act.size());
      for (size_t i = 0; i < out_.act.size(); ++i) {
        const enc::ActQuantStats& a = out_.act[i];
        Napi::Object o = Napi::Object::New(env);
        const bool scaled = a.blocks > a.zero_blocks;
        o.Set("scaleMin", scaled ? Napi::Value(Napi::Number::New(env, a.scale_min)) : env.Null());
        o.Set("scaleMax", scaled ? Napi::Value(Napi::Number::New(env, a.scale_max)) : env.Null());
        o.Set("globalMin", a.globals ? Napi::Value(Napi::Number::New(env, a.global_min)) : env.Null());
        o.Set("globalMax", a.globals ? Napi::Value(Napi::Number::New(env, a.global_max)) : env.Null());
        o.Set("blocks", Napi::Number::New(env, double(a.blocks)));
        o.Set("zeroBlocks", Napi::Number::New(env, double(a.zero_blocks)));
        o.Set("clipped", Napi::Number::New(env, double(a.clipped)));
        o.Set("elements", Napi::Number::New(env, double(a.elements)));
        act.Set(uint32_t(i), o);
      }
      r.Set("actQuant", act);
    }
    deferred_.Resolve(r);
  }

  void OnError(const Napi::Error& e) override {
    wrap_->Release();
    deferred_.Reject(coded_error(Env(), code_.empty() ? "E_INTERNAL" : code_, e.Message()).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  EncoderWrap* wrap_;
  std::shared_ptr<enc::BertEncoder> enc_;
  Napi::ObjectReference self_ref_, control_ref_;
  enc::Batch batch_;
  enc::ForwardParams params_;
  enc::ForwardOutput out_;
  std::string code_;
};

Napi::Value EncoderWrap::ForwardImpl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usage = "forward(ids: Int32Array, mask: Uint8Array, options: {batch, seqLen, ...})";
  if (info.Length() < 3 || !info[0].IsTypedArray() || !info[1].IsTypedArray() || !info[2].IsObject())
    throw coded_error(env, "E_BAD_ARGUMENT", usage);
  Napi::TypedArray ids = info[0].As<Napi::TypedArray>(), mask = info[1].As<Napi::TypedArray>();
  if (ids.TypedArrayType() != napi_int32_array || mask.TypedArrayType() != napi_uint8_array)
    throw coded_error(env, "E_BAD_ARGUMENT", usage);
  if (!enc_) throw coded_error(env, "E_BAD_ARGUMENT", "encoder.forward: the encoder was disposed");
  Napi::Object o = info[2].As<Napi::Object>();

  enc::Batch b;
  b.batch = get_int(env, o, "batch", 0, int64_t(1) << 31, true);
  b.seq_len = get_int(env, o, "seqLen", 0, int64_t(1) << 31, true);
  const Napi::Int32Array ia = ids.As<Napi::Int32Array>();
  const Napi::Uint8Array ma = mask.As<Napi::Uint8Array>();
  if (double(b.batch) * double(b.seq_len) != double(ia.ElementLength()) || ia.ElementLength() != ma.ElementLength())
    throw coded_error(env, "E_BAD_ARGUMENT", "ids and mask must both hold batch × seqLen values");
  b.ids.assign(ia.Data(), ia.Data() + ia.ElementLength());
  b.mask.assign(ma.Data(), ma.Data() + ma.ElementLength());

  enc::ForwardParams p;
  const int64_t layers = enc_->config().layers;
  p.threads = int(get_int(env, o, "threads", 0, 1024, false, 0));
  p.start_layer = int(get_int(env, o, "startLayer", 0, layers, false, 0));
  p.end_layer = int(get_int(env, o, "endLayer", 0, layers, false, layers));
  p.capture = calib_js::get_bool(o, "capture", false);
  p.stats = calib_js::get_bool(o, "stats", false);
  Napi::Value aqv = o.Get("actQuant");
  if (!aqv.IsUndefined() && !aqv.IsNull()) {
    const char* aq_usage = "actQuant must be {scheme: string, blockSizes: Int32Array(layers × 6)}";
    if (!aqv.IsObject()) throw coded_error(env, "E_BAD_ARGUMENT", aq_usage);
    Napi::Object aq = aqv.As<Napi::Object>();
    Napi::Value sv = aq.Get("scheme"), bv = aq.Get("blockSizes");
    if (!sv.IsString() || !bv.IsTypedArray() || bv.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw coded_error(env, "E_BAD_ARGUMENT", aq_usage);
    const std::string scheme = sv.As<Napi::String>();
    if (!calib::parse_scheme(scheme, &p.act_scheme))
      throw coded_error(env, "E_BAD_FORMAT", "actQuant: unknown scheme '" + scheme + "'");
    Napi::Int32Array bs = bv.As<Napi::Int32Array>();
    p.act_block.assign(bs.Data(), bs.Data() + bs.ElementLength());
    p.act_quant = true;
  }
  Napi::Value hin = o.Get("hiddenIn");
  if (!hin.IsUndefined()) {
    if (!hin.IsTypedArray() || hin.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      throw coded_error(env, "E_BAD_ARGUMENT", "hiddenIn must be a Float32Array");
    Napi::Float32Array h = hin.As<Napi::Float32Array>();
    p.hidden_in.assign(h.Data(), h.Data() + h.ElementLength());
    p.has_hidden_in = true;
  }
  Napi::Object control = calib_js::get_control(o, &p.control);
  auto* w = new ForwardWorker(env, this, std::move(b), std::move(p), control);
  Napi::Promise promise = w->Promise();
  w->Queue();
  return promise;
}

}  // namespace

Napi::Function EncoderClass(Napi::Env env) { return EncoderWrap::Define(env); }
