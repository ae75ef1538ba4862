// A BERT-family encoder forward pass in float32 on CPU threads: embeddings (word + absolute
// position + token type 0) → LayerNorm → N × (self-attention, dense + residual + LayerNorm,
// intermediate dense + activation, dense + residual + LayerNorm). It returns the last hidden state
// of every attended token; pooling is the caller's (it follows the model folder's settings).
//
// Weights are copied in once (Linear weights packed for the GEMM) and can be replaced one tensor at
// a time between passes, which is what drift attribution does.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "../core/scheme.h"
#include "act_quant.h"
#include "gemm.h"

namespace enc {

// An error with a stable code (E_BAD_ARGUMENT, E_BAD_CHECKPOINT, E_CANCELLED, ...) for JS.
struct EncoderError : std::runtime_error {
  std::string code;
  EncoderError(std::string c, const std::string& msg) : std::runtime_error(msg), code(std::move(c)) {}
};

enum class Activation { GeluErf, GeluTanh, Relu };

struct BertConfig {
  int64_t vocab = 0, hidden = 0, layers = 0, heads = 0, intermediate = 0, max_positions = 0, type_vocab = 0;
  float eps = 1e-12f;
  Activation act = Activation::GeluErf;
};

struct WeightInfo {
  std::string name;
  std::vector<int64_t> shape;
};

// A padded batch as Hugging Face takes it: ids and attention mask, both batch × seq_len, row-major.
// A token at column p has position p. Only attended tokens (mask 1) are computed: a padded
// position influences nothing, and its hidden state is not returned.
struct Batch {
  int64_t batch = 0, seq_len = 0;
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
};

struct ForwardParams {
  int threads = 0;  // 0: all hardware threads
  // Run layers [start_layer, end_layer); end_layer < 0 means all. With start_layer > 0 (or with
  // hidden_in given) the pass starts from hidden_in, the hidden state entering start_layer.
  int start_layer = 0, end_layer = -1;
  std::vector<float> hidden_in;  // tokens × hidden, attended tokens in batch order
  bool has_hidden_in = false;
  // Also return the hidden state entering every layer that runs.
  bool capture = false;
  // Calibration statistics (full passes only): Σ x_j² of every Linear layer's input over the
  // attended tokens, and each head's attention entropy summed over the attended query tokens.
  // Summed per chunk in token order, then over chunks in chunk order: the same bytes for any
  // thread count.
  bool stats = false;
  // Dynamic activation quantization: each Linear's input is quantize-dequantized (act_quant.h)
  // before the product. act_block holds layers × kLinears block sizes (0: that input stays FP32).
  bool act_quant = false;
  calib::Scheme act_scheme = calib::Scheme::NVFP4;
  std::vector<int> act_block;
  // [0] != 0 cancels; [1] receives the number of sequences done (relaxed atomics).
  int32_t* control = nullptr;
};

// The Linear layers of an encoder layer, in the order act_block and the statistics use.
enum LinearSlot : int { kQuery = 0, kKey, kValue, kAttnOut, kInter, kOut, kLinears };

// Σ x_j² of the inputs of one layer's Linears (query/key/value share `input`) and Σ entropy per head.
// The *_sum vectors hold Σ x_j of the same inputs (their means, for the bias term of the error).
struct LayerStats {
  std::vector<double> input, context, attn_output, intermediate, entropy;
  std::vector<double> input_sum, context_sum, attn_output_sum, intermediate_sum;
};

struct ForwardOutput {
  int64_t tokens = 0, sequences = 0;
  std::vector<float> hidden;                    // tokens × hidden
  std::vector<std::vector<float>> layer_inputs;  // capture only: one tokens × hidden array per layer run
  std::vector<LayerStats> stats;                 // stats only: one per layer
  std::vector<double> pooler;                    // stats only: Σ x_j² of each sequence's first token, last layer
  std::vector<double> pooler_sum;                // stats only: Σ x_j of the same
  std::vector<ActQuantStats> act;                // act_quant only: layers × kLinears
};

class BertEncoder {
 public:
  explicit BertEncoder(const BertConfig& cfg);

  const BertConfig& config() const { return cfg_; }
  // Every weight the forward pass reads, with its Hugging Face name and shape.
  std::vector<WeightInfo> weights() const;
  // Copies one weight in (name and element count checked against the config).
  void set_weight(const std::string& name, const float* data, size_t count);
  std::vector<std::string> missing() const;

  ForwardOutput forward(const Batch& batch, const ForwardParams& params) const;

 private:
  struct Layer {
    PackedLinear q, k, v, attn_out, inter, out;
    std::vector<float> ln1_g, ln1_b, ln2_g, ln2_b;
  };
  struct Slot {
    std::vector<int64_t> shape;
    std::vector<float>* vec = nullptr;  // plain copy (tables, LayerNorm)
    PackedLinear* lin = nullptr;        // packed weight
    PackedLinear* bias_of = nullptr;    // bias of a packed layer
  };
  struct Chunk {
    int64_t seq_begin, seq_end, tok_begin, tok_end;
  };
  struct Scratch;
  struct ChunkStats;

  void add_slot(const std::string& name, std::vector<int64_t> shape, Slot slot);
  void run_chunk(const Chunk& ch, const std::vector<int32_t>& tok_id, const std::vector<int32_t>& tok_pos,
                 const std::vector<int64_t>& seq_start, const ForwardParams& p, int end_layer, Scratch& s, ForwardOutput& out,
                 ChunkStats* cs) const;
  void run_layer(const Layer& L, int layer, int64_t n, const std::vector<int64_t>& seq_off, const ForwardParams& p, Scratch& s,
                 ChunkStats* cs) const;
  void layer_norm(float* x, int64_t n, const std::vector<float>& g, const std::vector<float>& b) const;

  BertConfig cfg_;
  std::vector<float> word_, pos_, type_, emb_ln_g_, emb_ln_b_;
  std::vector<Layer> layers_;
  std::map<std::string, Slot> slots_;
  std::set<std::string> loaded_;
};

}  // namespace enc
