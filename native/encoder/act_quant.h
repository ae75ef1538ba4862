// Dynamic activation quantization for the encoder's Linear inputs: each token's row is cut into
// blocks along the hidden dimension and quantize-dequantized with the scheme's standard (absmax)
// scale, computed on the fly — the scale rule hardware applies to activations at run time:
//   FP32 scales (fp4, fp8_*): s = max / absmax(block), x̂ = Q(x·s)/s;
//   NVFP4: g = absmax(sequence's input) / (6·448), d = E4M3_rne(absmax(block) / (6·g))·g
//          (the smallest E4M3 value 2⁻⁹ when that rounds to zero), x̂ = Q(x/d)·d;
//   MX: d = 2^(floor(log2 absmax(block)) − emax_elem), x̂ = Q(x/d)·d.
// The same element rounding as the weights (native/core/elem_format.h), every operation in float32.
// The per-tensor NVFP4 scale is taken per sequence, so a token's result depends only on its own
// sequence (not on which sequences share a batch or a thread).
#pragma once

#include <cstdint>
#include <vector>

#include "../core/scheme.h"

namespace enc {

// What the quantizer saw: the range of block multipliers s (= 1/d for encoded scales) over blocks
// that are not all zero, NVFP4's per-sequence decode scales g, and counts.
struct ActQuantStats {
  float scale_min = 0.0f, scale_max = 0.0f;    // valid when blocks > zero_blocks
  float global_min = 0.0f, global_max = 0.0f;  // NVFP4 only, valid when globals > 0
  uint64_t blocks = 0, zero_blocks = 0, clipped = 0, elements = 0, globals = 0;
  void merge(const ActQuantStats& o);
};

// x̂ of rows [0, n) of x (n × cols, row-major) into y (same shape), blocks of `block_size` along
// each row. seq_off lists the first row of each sequence (and n at the end): NVFP4's global scale
// is per sequence. Non-finite blocks are passed through unchanged (and not counted).
void fake_quantize_activations(calib::Scheme scheme, int block_size, const float* x, float* y, int64_t n, int64_t cols,
                               const std::vector<int64_t>& seq_off, ActQuantStats& st);

}  // namespace enc
