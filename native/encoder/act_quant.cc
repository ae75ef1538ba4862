#include "act_quant.h"

#include <algorithm>
#include <cmath>

#include "../core/elem_format.h"

namespace enc {

namespace {

using calib::round_abs;

void note_scale(ActQuantStats& st, float s) {
  if (st.blocks == st.zero_blocks) {
    st.scale_min = st.scale_max = s;
  } else {
    st.scale_min = std::min(st.scale_min, s);
    st.scale_max = std::max(st.scale_max, s);
  }
}

float absmax(const float* x, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

// FP32 multiplier s (the block is not all zero): x̂ = Q(|x|·s)/s with x's sign, as for weights.
template <class F>
void block_fp32(const float* x, float* y, int n, ActQuantStats& st) {
  const float s = F::kMax / absmax(x, n);
  note_scale(st, s);
  ++st.blocks;
  for (int i = 0; i < n; ++i) {
    const float v = std::fabs(x[i]) * s;
    st.clipped += v > F::kMax ? 1u : 0u;
    y[i] = std::copysign(round_abs<F>(v) / s, x[i]);
  }
}

// Decode scale d: x̂ = Q(|x|/d)·d with x's sign.
template <class F>
void block_decode(const float* x, float* y, int n, float d, ActQuantStats& st) {
  note_scale(st, 1.0f / d);
  ++st.blocks;
  for (int i = 0; i < n; ++i) {
    const float v = std::fabs(x[i]) / d;
    st.clipped += v > F::kMax ? 1u : 0u;
    y[i] = std::copysign(round_abs<F>(v) * d, x[i]);
  }
}

int floor_log2(float v) {
  int e = 0;
  std::frexp(v, &e);  // v = m·2^e, m in [0.5, 1): exact for every positive float, subnormals too
  return e - 1;
}

template <class F>
void run(calib::ScaleEnc enc, int bs, const float* x, float* y, int64_t n, int64_t cols, const std::vector<int64_t>& seq_off,
         ActQuantStats& st) {
  const int emax = calib::mx_emax_elem(F::kId);
  for (size_t si = 0; si + 1 < seq_off.size(); ++si) {
    const int64_t r0 = seq_off[si], r1 = seq_off[si + 1];
    float g = 0.0f;
    if (enc == calib::ScaleEnc::E4M3G) {
      const float amax = absmax(x + r0 * cols, (r1 - r0) * cols);
      if (!std::isfinite(amax)) {
        std::copy(x + r0 * cols, x + r1 * cols, y + r0 * cols);
        continue;
      }
      // g = absmax / (6·448), as for weights; an all-zero sequence input gives zeros below.
      g = amax / (6.0f * 448.0f);
      if (g > 0.0f) {
        if (st.globals == 0) st.global_min = st.global_max = g;
        st.global_min = std::min(st.global_min, g);
        st.global_max = std::max(st.global_max, g);
        ++st.globals;
      }
    }
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t c0 = 0; c0 < cols; c0 += bs) {
        const int len = int(std::min<int64_t>(bs, cols - c0));
        const float* xb = x + r * cols + c0;
        float* yb = y + r * cols + c0;
        st.elements += uint64_t(len);
        const float amax = absmax(xb, len);
        if (!std::isfinite(amax)) {
          std::copy(xb, xb + len, yb);
          continue;
        }
        if (amax == 0.0f) {
          std::fill(yb, yb + len, 0.0f);
          ++st.blocks, ++st.zero_blocks;
          continue;
        }
        if (enc == calib::ScaleEnc::FP32) {
          block_fp32<F>(xb, yb, len, st);
        } else if (enc == calib::ScaleEnc::E4M3G) {
          uint8_t code = calib::e4m3_encode_rne(amax / (6.0f * g));
          if (code == 0) code = 1;  // the smallest positive E4M3 value, 2^-9
          block_decode<F>(xb, yb, len, calib::e4m3_decode(code) * g, st);
        } else {
          const int k = std::min(127, std::max(-127, floor_log2(amax) - emax));
          block_decode<F>(xb, yb, len, std::ldexp(1.0f, k), st);
        }
      }
    }
  }
}

}  // namespace

void ActQuantStats::merge(const ActQuantStats& o) {
  if (o.blocks > o.zero_blocks) {
    if (blocks == zero_blocks) {
      scale_min = o.scale_min, scale_max = o.scale_max;
    } else {
      scale_min = std::min(scale_min, o.scale_min);
      scale_max = std::max(scale_max, o.scale_max);
    }
  }
  if (o.globals > 0) {
    if (globals == 0) {
      global_min = o.global_min, global_max = o.global_max;
    } else {
      global_min = std::min(global_min, o.global_min);
      global_max = std::max(global_max, o.global_max);
    }
  }
  blocks += o.blocks, zero_blocks += o.zero_blocks, clipped += o.clipped, elements += o.elements, globals += o.globals;
}

void fake_quantize_activations(calib::Scheme scheme, int block_size, const float* x, float* y, int64_t n, int64_t cols,
                               const std::vector<int64_t>& seq_off, ActQuantStats& st) {
  const calib::SchemeInfo& info = calib::scheme_info(scheme);
  switch (info.elem) {
    case calib::Elem::E2M1: run<calib::E2M1>(info.enc, block_size, x, y, n, cols, seq_off, st); break;
    case calib::Elem::E4M3: run<calib::E4M3>(info.enc, block_size, x, y, n, cols, seq_off, st); break;
    case calib::Elem::E5M2: run<calib::E5M2>(info.enc, block_size, x, y, n, cols, seq_off, st); break;
    case calib::Elem::FP16: run<calib::FP16>(info.enc, block_size, x, y, n, cols, seq_off, st); break;
  }
}

}  // namespace enc
