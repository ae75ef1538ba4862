#include "bert_encoder.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <system_error>
#include <thread>

namespace enc {

namespace {

// Sequences are grouped into chunks of about this many tokens; one thread runs a chunk through
// every layer. A token's result does not depend on the chunking (the GEMM sums every output in a
// fixed order, attention stays within a sequence), so results are the same for any thread count.
constexpr int64_t kChunkTokens = 256;

// Caps that keep a malformed config from asking for absurd allocations.
constexpr int64_t kMaxDim = int64_t(1) << 20;
constexpr int64_t kMaxElements = int64_t(1) << 33;

std::string shape_text(const std::vector<int64_t>& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

int64_t numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

bool cancelled(const int32_t* control) {
  return control && __atomic_load_n(&control[0], __ATOMIC_RELAXED) != 0;
}

}  // namespace

struct BertEncoder::Scratch {
  std::vector<float> x, q, k, v, ctx, tmp, inter, scores, aq;
  void size(int64_t tokens, int64_t hidden, int64_t intermediate, int64_t max_len, bool act_quant) {
    const size_t th = size_t(tokens * hidden);
    for (auto* a : {&x, &q, &k, &v, &ctx, &tmp}) a->resize(th);
    inter.resize(size_t(tokens * intermediate));
    scores.resize(size_t(std::max<int64_t>(max_len, 1)));
    if (act_quant) aq.resize(size_t(tokens * std::max(hidden, intermediate)));
  }
};

// One chunk's statistics, merged into the pass's totals in chunk order.
struct BertEncoder::ChunkStats {
  std::vector<LayerStats> layers;
  std::vector<double> pooler, pooler_sum;
  std::vector<ActQuantStats> act;
  ChunkStats(const BertConfig& c, bool stats, bool act_quant) {
    if (stats) {
      layers.resize(size_t(c.layers));
      for (LayerStats& L : layers) {
        L.input.assign(size_t(c.hidden), 0.0);
        L.context.assign(size_t(c.hidden), 0.0);
        L.attn_output.assign(size_t(c.hidden), 0.0);
        L.intermediate.assign(size_t(c.intermediate), 0.0);
        L.entropy.assign(size_t(c.heads), 0.0);
        L.input_sum.assign(size_t(c.hidden), 0.0);
        L.context_sum.assign(size_t(c.hidden), 0.0);
        L.attn_output_sum.assign(size_t(c.hidden), 0.0);
        L.intermediate_sum.assign(size_t(c.intermediate), 0.0);
      }
      pooler.assign(size_t(c.hidden), 0.0);
      pooler_sum.assign(size_t(c.hidden), 0.0);
    }
    if (act_quant) act.resize(size_t(c.layers * kLinears));
  }
  // Adds o into this, element by element (o is the later chunk).
  void merge(const ChunkStats& o) {
    auto add = [](std::vector<double>& a, const std::vector<double>& b) {
      for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
    };
    for (size_t l = 0; l < layers.size(); ++l) {
      add(layers[l].input, o.layers[l].input);
      add(layers[l].context, o.layers[l].context);
      add(layers[l].attn_output, o.layers[l].attn_output);
      add(layers[l].intermediate, o.layers[l].intermediate);
      add(layers[l].entropy, o.layers[l].entropy);
      add(layers[l].input_sum, o.layers[l].input_sum);
      add(layers[l].context_sum, o.layers[l].context_sum);
      add(layers[l].attn_output_sum, o.layers[l].attn_output_sum);
      add(layers[l].intermediate_sum, o.layers[l].intermediate_sum);
    }
    add(pooler, o.pooler);
    add(pooler_sum, o.pooler_sum);
    for (size_t i = 0; i < act.size(); ++i) act[i].merge(o.act[i]);
  }
};

namespace {

// acc[j] += Σ_t x[t][j]² and sum[j] += Σ_t x[t][j], tokens in order.
void add_squares(const float* x, int64_t n, int64_t cols, std::vector<double>& acc, std::vector<double>& sum) {
  double* a = acc.data();
  double* m = sum.data();
  for (int64_t t = 0; t < n; ++t) {
    const float* r = x + t * cols;
    for (int64_t j = 0; j < cols; ++j) {
      a[j] += double(r[j]) * double(r[j]);
      m[j] += double(r[j]);
    }
  }
}

}  // namespace

BertEncoder::BertEncoder(const BertConfig& c) : cfg_(c) {
  auto bad = [](const std::string& m) { return EncoderError("E_BAD_CHECKPOINT", "encoder config: " + m); };
  const std::pair<const char*, int64_t> dims[] = {{"vocab_size", c.vocab},
                                                 {"hidden_size", c.hidden},
                                                 {"num_hidden_layers", c.layers},
                                                 {"num_attention_heads", c.heads},
                                                 {"intermediate_size", c.intermediate},
                                                 {"max_position_embeddings", c.max_positions},
                                                 {"type_vocab_size", c.type_vocab}};
  for (const auto& d : dims)
    if (d.second < 1 || d.second > kMaxDim) throw bad(std::string(d.first) + " must be in 1.." + std::to_string(kMaxDim));
  if (c.layers > 1024) throw bad("num_hidden_layers must be at most 1024");
  if (c.hidden % c.heads != 0)
    throw bad("hidden_size " + std::to_string(c.hidden) + " is not a multiple of num_attention_heads " + std::to_string(c.heads));
  if (!(c.eps > 0.0f) || !std::isfinite(c.eps)) throw bad("layer_norm_eps must be a positive number");
  if (c.vocab * c.hidden > kMaxElements || c.intermediate * c.hidden > kMaxElements) throw bad("the model is too large");

  try {
    const int64_t H = c.hidden, I = c.intermediate;
    add_slot("embeddings.word_embeddings.weight", {c.vocab, H}, {{}, &word_});
    add_slot("embeddings.position_embeddings.weight", {c.max_positions, H}, {{}, &pos_});
    add_slot("embeddings.token_type_embeddings.weight", {c.type_vocab, H}, {{}, &type_});
    add_slot("embeddings.LayerNorm.weight", {H}, {{}, &emb_ln_g_});
    add_slot("embeddings.LayerNorm.bias", {H}, {{}, &emb_ln_b_});
    layers_.resize(size_t(c.layers));
    for (int64_t l = 0; l < c.layers; ++l) {
      Layer& L = layers_[size_t(l)];
      const std::string p = "encoder.layer." + std::to_string(l) + ".";
      const std::pair<std::string, PackedLinear*> lins[] = {{"attention.self.query", &L.q},
                                                             {"attention.self.key", &L.k},
                                                             {"attention.self.value", &L.v},
                                                             {"attention.output.dense", &L.attn_out},
                                                             {"intermediate.dense", &L.inter},
                                                             {"output.dense", &L.out}};
      for (const auto& e : lins) {
        const bool up = e.second == &L.inter, down = e.second == &L.out;
        const int64_t out = up ? I : H, in = down ? I : H;
        e.second->init(out, in);
        Slot w;
        w.lin = e.second;
        add_slot(p + e.first + ".weight", {out, in}, w);
        Slot b;
        b.bias_of = e.second;
        add_slot(p + e.first + ".bias", {out}, b);
      }
      add_slot(p + "attention.output.LayerNorm.weight", {H}, {{}, &L.ln1_g});
      add_slot(p + "attention.output.LayerNorm.bias", {H}, {{}, &L.ln1_b});
      add_slot(p + "output.LayerNorm.weight", {H}, {{}, &L.ln2_g});
      add_slot(p + "output.LayerNorm.bias", {H}, {{}, &L.ln2_b});
    }
  } catch (const std::bad_alloc&) {
    throw EncoderError("E_OUT_OF_MEMORY", "out of memory allocating the encoder weights");
  }
}

void BertEncoder::add_slot(const std::string& name, std::vector<int64_t> shape, Slot slot) {
  slot.shape = std::move(shape);
  if (slot.vec) slot.vec->assign(size_t(numel(slot.shape)), 0.0f);
  slots_[name] = std::move(slot);
}

std::vector<WeightInfo> BertEncoder::weights() const {
  std::vector<WeightInfo> out;
  out.reserve(slots_.size());
  for (const auto& e : slots_) out.push_back({e.first, e.second.shape});
  return out;
}

void BertEncoder::set_weight(const std::string& name, const float* data, size_t count) {
  auto it = slots_.find(name);
  if (it == slots_.end()) throw EncoderError("E_BAD_ARGUMENT", "the encoder has no weight named '" + name + "'");
  const Slot& s = it->second;
  if (int64_t(count) != numel(s.shape))
    throw EncoderError("E_BAD_CHECKPOINT", "weight '" + name + "' has " + std::to_string(count) + " elements, expected " +
                                              shape_text(s.shape) + " = " + std::to_string(numel(s.shape)));
  for (size_t i = 0; i < count; ++i)
    if (!std::isfinite(data[i]))
      throw EncoderError("E_NONFINITE", "weight '" + name + "' has a non-finite value at element " + std::to_string(i));
  if (s.vec) std::memcpy(s.vec->data(), data, count * sizeof(float));
  else if (s.lin) s.lin->pack(data);
  else s.bias_of->set_bias(data);
  loaded_.insert(name);
}

std::vector<std::string> BertEncoder::missing() const {
  std::vector<std::string> out;
  for (const auto& e : slots_)
    if (!loaded_.count(e.first)) out.push_back(e.first);
  return out;
}

void BertEncoder::layer_norm(float* x, int64_t n, const std::vector<float>& g, const std::vector<float>& b) const {
  const int64_t H = cfg_.hidden;
  for (int64_t t = 0; t < n; ++t) {
    float* r = x + t * H;
    double sum = 0.0;
    for (int64_t i = 0; i < H; ++i) sum += r[i];
    const double mean = sum / double(H);
    double var = 0.0;
    for (int64_t i = 0; i < H; ++i) {
      const double d = double(r[i]) - mean;
      var += d * d;
    }
    const double rstd = 1.0 / std::sqrt(var / double(H) + double(cfg_.eps));
    for (int64_t i = 0; i < H; ++i) r[i] = float((double(r[i]) - mean) * rstd) * g[size_t(i)] + b[size_t(i)];
  }
}

void BertEncoder::run_layer(const Layer& L, int layer, int64_t n, const std::vector<int64_t>& seq_off, const ForwardParams& p,
                            Scratch& s, ChunkStats* cs) const {
  const int64_t H = cfg_.hidden, I = cfg_.intermediate, nh = cfg_.heads, d = H / nh;
  LayerStats* st = p.stats ? &cs->layers[size_t(layer)] : nullptr;
  // The input a Linear multiplies: as is, or quantize-dequantized into s.aq.
  auto input = [&](int slot, const float* a, int64_t cols) -> const float* {
    if (!p.act_quant) return a;
    const int bs = p.act_block[size_t(layer * kLinears + slot)];
    if (bs <= 0) return a;
    fake_quantize_activations(p.act_scheme, bs, a, s.aq.data(), n, cols, seq_off, cs->act[size_t(layer * kLinears + slot)]);
    return s.aq.data();
  };
  float* x = s.x.data();
  if (st) add_squares(x, n, H, st->input, st->input_sum);
  linear(input(kQuery, x, H), n, H, L.q, s.q.data(), H);
  linear(input(kKey, x, H), n, H, L.k, s.k.data(), H);
  linear(input(kValue, x, H), n, H, L.v, s.v.data(), H);

  // Scaled dot-product attention within each sequence; padded positions are not there at all,
  // which is what an additive mask of -inf does.
  const float scale = float(1.0 / std::sqrt(double(d)));
  std::fill(s.ctx.begin(), s.ctx.begin() + n * H, 0.0f);
  float* sc = s.scores.data();
  for (size_t si = 0; si + 1 < seq_off.size(); ++si) {
    const int64_t o = seq_off[si], len = seq_off[si + 1] - o;
    for (int64_t h = 0; h < nh; ++h) {
      for (int64_t i = 0; i < len; ++i) {
        const float* qi = s.q.data() + (o + i) * H + h * d;
        float mx = -INFINITY;
        for (int64_t j = 0; j < len; ++j) {
          sc[j] = dot(qi, s.k.data() + (o + j) * H + h * d, d) * scale;
          mx = std::max(mx, sc[j]);
        }
        float sum = 0.0f;
        double et = 0.0;  // Σ e_j·t_j, for the entropy log(Σe) − Σ e·t / Σe of p = e / Σe
        for (int64_t j = 0; j < len; ++j) {
          const float t = sc[j] - mx;
          sc[j] = std::exp(t);
          sum += sc[j];
          if (st) et += double(sc[j]) * double(t);
        }
        if (st) {
          const double ent = std::log(double(sum)) - et / double(sum);
          st->entropy[size_t(h)] += std::min(std::max(ent, 0.0), std::log(double(len)));
        }
        float* ci = s.ctx.data() + (o + i) * H + h * d;
        for (int64_t j = 0; j < len; ++j) axpy(sc[j] / sum, s.v.data() + (o + j) * H + h * d, ci, d);
      }
    }
  }

  float* tmp = s.tmp.data();
  if (st) add_squares(s.ctx.data(), n, H, st->context, st->context_sum);
  linear(input(kAttnOut, s.ctx.data(), H), n, H, L.attn_out, tmp, H);
  for (int64_t i = 0; i < n * H; ++i) tmp[i] += x[i];
  layer_norm(tmp, n, L.ln1_g, L.ln1_b);
  std::memcpy(x, tmp, size_t(n * H) * sizeof(float));

  float* inter = s.inter.data();
  if (st) add_squares(x, n, H, st->attn_output, st->attn_output_sum);
  linear(input(kInter, x, H), n, H, L.inter, inter, I);
  switch (cfg_.act) {
    case Activation::GeluErf: gelu_erf_inplace(inter, n * I); break;
    case Activation::GeluTanh: gelu_tanh_inplace(inter, n * I); break;
    case Activation::Relu:
      for (int64_t i = 0; i < n * I; ++i) inter[i] = inter[i] > 0.0f ? inter[i] : 0.0f;
      break;
  }
  if (st) add_squares(inter, n, I, st->intermediate, st->intermediate_sum);
  linear(input(kOut, inter, I), n, I, L.out, tmp, H);
  for (int64_t i = 0; i < n * H; ++i) tmp[i] += x[i];
  layer_norm(tmp, n, L.ln2_g, L.ln2_b);
  std::memcpy(x, tmp, size_t(n * H) * sizeof(float));
}

void BertEncoder::run_chunk(const Chunk& ch, const std::vector<int32_t>& tok_id, const std::vector<int32_t>& tok_pos,
                            const std::vector<int64_t>& seq_start, const ForwardParams& p, int end_layer, Scratch& s,
                            ForwardOutput& out, ChunkStats* cs) const {
  const int64_t H = cfg_.hidden, n = ch.tok_end - ch.tok_begin;
  float* x = s.x.data();
  if (p.has_hidden_in) {
    std::memcpy(x, p.hidden_in.data() + ch.tok_begin * H, size_t(n * H) * sizeof(float));
  } else {
    // HF's order: (word + token type) + position.
    const float* type0 = type_.data();
    for (int64_t t = 0; t < n; ++t) {
      const float* w = word_.data() + int64_t(tok_id[size_t(ch.tok_begin + t)]) * H;
      const float* ps = pos_.data() + int64_t(tok_pos[size_t(ch.tok_begin + t)]) * H;
      float* r = x + t * H;
      for (int64_t i = 0; i < H; ++i) r[i] = (w[i] + type0[i]) + ps[i];
    }
    layer_norm(x, n, emb_ln_g_, emb_ln_b_);
  }
  std::vector<int64_t> seq_off;
  for (int64_t si = ch.seq_begin; si <= ch.seq_end; ++si) seq_off.push_back(seq_start[size_t(si)] - ch.tok_begin);
  for (int l = p.start_layer; l < end_layer; ++l) {
    if (cancelled(p.control)) return;
    if (p.capture)
      std::memcpy(out.layer_inputs[size_t(l - p.start_layer)].data() + ch.tok_begin * H, x, size_t(n * H) * sizeof(float));
    run_layer(layers_[size_t(l)], l, n, seq_off, p, s, cs);
  }
  if (p.stats) {
    // pooler.dense reads the first ([CLS]) token's last hidden state of each sequence.
    for (size_t si = 0; si + 1 < seq_off.size(); ++si)
      if (seq_off[si + 1] > seq_off[si]) add_squares(x + seq_off[si] * H, 1, H, cs->pooler, cs->pooler_sum);
  }
  std::memcpy(out.hidden.data() + ch.tok_begin * H, x, size_t(n * H) * sizeof(float));
}

ForwardOutput BertEncoder::forward(const Batch& b, const ForwardParams& p) const {
  const int64_t H = cfg_.hidden;
  if (b.batch < 0 || b.seq_len < 0 || b.batch * b.seq_len != int64_t(b.ids.size()) || b.ids.size() != b.mask.size())
    throw EncoderError("E_BAD_ARGUMENT", "input ids and attention mask must both hold batch × seq_len values");
  const int end_layer = p.end_layer < 0 ? int(cfg_.layers) : p.end_layer;
  if (p.start_layer < 0 || end_layer > cfg_.layers || p.start_layer > end_layer)
    throw EncoderError("E_BAD_ARGUMENT", "layer range [" + std::to_string(p.start_layer) + ", " + std::to_string(end_layer) +
                                             ") is not within the model's " + std::to_string(cfg_.layers) + " layers");
  if (p.start_layer > 0 && !p.has_hidden_in)
    throw EncoderError("E_BAD_ARGUMENT", "starting at a later layer needs the hidden state entering it");
  if (p.stats && (p.start_layer != 0 || p.has_hidden_in || end_layer != cfg_.layers))
    throw EncoderError("E_BAD_ARGUMENT", "calibration statistics need a full pass (from the embeddings through every layer)");
  if (p.act_quant) {
    if (p.act_block.size() != size_t(cfg_.layers * kLinears))
      throw EncoderError("E_BAD_ARGUMENT", "activation quantization needs " + std::to_string(cfg_.layers * kLinears) +
                                               " block sizes (layers × 6 Linears), got " + std::to_string(p.act_block.size()));
    for (int bs : p.act_block)
      if (bs < 0 || bs > (1 << 20))
        throw EncoderError("E_BAD_ARGUMENT", "activation block sizes must be in 0..2^20 (0: not quantized), got " + std::to_string(bs));
  }
  const std::vector<std::string> miss = missing();
  if (!miss.empty())
    throw EncoderError("E_BAD_CHECKPOINT", "the encoder's weight '" + miss.front() + "' was not loaded" +
                                               (miss.size() > 1 ? " (and " + std::to_string(miss.size() - 1) + " more)" : ""));

  // The attended tokens, in batch order.
  std::vector<int32_t> tok_id, tok_pos;
  std::vector<int64_t> seq_start(size_t(b.batch) + 1, 0);
  int64_t max_len = 0;
  for (int64_t r = 0; r < b.batch; ++r) {
    seq_start[size_t(r)] = int64_t(tok_id.size());
    for (int64_t c = 0; c < b.seq_len; ++c) {
      const size_t at = size_t(r * b.seq_len + c);
      if (b.mask[at] > 1) throw EncoderError("E_BAD_ARGUMENT", "attention mask values must be 0 or 1");
      if (!b.mask[at]) continue;
      const int32_t id = b.ids[at];
      if (id < 0 || id >= cfg_.vocab)
        throw EncoderError("E_BAD_ARGUMENT", "token id " + std::to_string(id) + " (sequence " + std::to_string(r) +
                                                 ") is outside the vocabulary of " + std::to_string(cfg_.vocab));
      if (c >= cfg_.max_positions)
        throw EncoderError("E_BAD_ARGUMENT", "sequence " + std::to_string(r) + " attends position " + std::to_string(c) +
                                                 ", beyond the model's " + std::to_string(cfg_.max_positions) + " positions");
      tok_id.push_back(id);
      tok_pos.push_back(int32_t(c));
    }
    max_len = std::max(max_len, int64_t(tok_id.size()) - seq_start[size_t(r)]);
  }
  const int64_t T = int64_t(tok_id.size());
  seq_start[size_t(b.batch)] = T;
  if (p.has_hidden_in && int64_t(p.hidden_in.size()) != T * H)
    throw EncoderError("E_BAD_ARGUMENT", "the hidden state given has " + std::to_string(p.hidden_in.size()) + " values, expected " +
                                             std::to_string(T) + " tokens × " + std::to_string(H));

  std::vector<Chunk> chunks;
  for (int64_t s0 = 0; s0 < b.batch;) {
    int64_t s1 = s0 + 1;
    while (s1 < b.batch && seq_start[size_t(s1 + 1)] - seq_start[size_t(s0)] <= kChunkTokens) ++s1;
    chunks.push_back({s0, s1, seq_start[size_t(s0)], seq_start[size_t(s1)]});
    s0 = s1;
  }
  int64_t max_chunk = 0;
  for (const Chunk& c : chunks) max_chunk = std::max(max_chunk, c.tok_end - c.tok_begin);

  ForwardOutput out;
  out.tokens = T;
  for (int64_t r = 0; r < b.batch; ++r) out.sequences += seq_start[size_t(r + 1)] > seq_start[size_t(r)] ? 1 : 0;
  try {
    out.hidden.assign(size_t(T * H), 0.0f);
    if (p.capture) out.layer_inputs.assign(size_t(end_layer - p.start_layer), std::vector<float>(size_t(T * H)));
  } catch (const std::bad_alloc&) {
    throw EncoderError("E_OUT_OF_MEMORY", "out of memory for the hidden states of " + std::to_string(T) + " tokens");
  }

  int threads = p.threads > 0 ? p.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  threads = int(std::min<int64_t>(threads, int64_t(chunks.size())));
  std::atomic<size_t> next{0};
  std::mutex err_mu;
  std::exception_ptr err;
  // Statistics: chunks finish in any order; each waits in `pending` until every earlier chunk has
  // been merged, so the totals are summed in chunk order whatever the thread count.
  const bool with_stats = p.stats || p.act_quant;
  std::unique_ptr<ChunkStats> total;
  std::map<size_t, std::unique_ptr<ChunkStats>> pending;
  size_t next_merge = 0;
  std::mutex stats_mu;
  if (with_stats) {
    try {
      total = std::make_unique<ChunkStats>(cfg_, p.stats, p.act_quant);
    } catch (const std::bad_alloc&) {
      throw EncoderError("E_OUT_OF_MEMORY", "out of memory for the calibration statistics");
    }
  }
  auto work = [&]() {
    try {
      Scratch s;
      s.size(max_chunk, H, cfg_.intermediate, max_len, p.act_quant);
      for (size_t ci; (ci = next.fetch_add(1)) < chunks.size();) {
        if (cancelled(p.control)) return;
        {
          std::lock_guard<std::mutex> g(err_mu);
          if (err) return;
        }
        std::unique_ptr<ChunkStats> cs = with_stats ? std::make_unique<ChunkStats>(cfg_, p.stats, p.act_quant) : nullptr;
        run_chunk(chunks[ci], tok_id, tok_pos, seq_start, p, end_layer, s, out, cs.get());
        if (cs) {
          std::lock_guard<std::mutex> g(stats_mu);
          pending[ci] = std::move(cs);
          for (auto it = pending.find(next_merge); it != pending.end(); it = pending.find(next_merge)) {
            total->merge(*it->second);
            pending.erase(it);
            ++next_merge;
          }
        }
        if (p.control) __atomic_fetch_add(&p.control[1], int32_t(chunks[ci].seq_end - chunks[ci].seq_begin), __ATOMIC_RELAXED);
      }
    } catch (const std::bad_alloc&) {
      std::lock_guard<std::mutex> g(err_mu);
      if (!err) err = std::make_exception_ptr(EncoderError("E_OUT_OF_MEMORY", "out of memory in the encoder forward pass"));
    } catch (...) {
      std::lock_guard<std::mutex> g(err_mu);
      if (!err) err = std::current_exception();
    }
  };
  if (threads <= 1) {
    work();
  } else {
    std::vector<std::thread> pool;
    try {
      for (int t = 0; t < threads; ++t) pool.emplace_back(work);
    } catch (const std::system_error&) {
      // Fewer threads than asked for: those that started take all the chunks.
    }
    if (pool.empty()) work();
    for (auto& t : pool) t.join();
  }
  if (err) std::rethrow_exception(err);
  if (cancelled(p.control)) throw EncoderError("E_CANCELLED", "encoder forward pass cancelled");
  if (with_stats) {
    out.stats = std::move(total->layers);
    out.pooler = std::move(total->pooler);
    out.pooler_sum = std::move(total->pooler_sum);
    out.act = std::move(total->act);
  }
  return out;
}

}  // namespace enc
