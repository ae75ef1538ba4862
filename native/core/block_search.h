// Per-block scale search. Header-only templates: they are compiled once per instruction set
// (see kernels_*.cc) so that the error loops vectorize with the widest SIMD the CPU has.
//
// Conventions (docs/numerics.md):
//  - FP32 scales: multiplier s, x̂ = Q(x·s)/s in float32.
//  - Encoded scales: decode scale d (E4M3 code × global g, or 2^k), x̂ = Q(x/d)·d in float32;
//    the stored multiplier is s = 1/d.
//  - A block's squared error is summed in float64 over 8 lanes (element i goes to lane i mod 8,
//    lanes in element order), combined as ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "elem_format.h"
#include "scheme.h"

namespace calib {

struct BlockEval {
  double err;
  uint32_t outliers;
};

template <class F, bool kDecode>
inline BlockEval eval_block(const float* x, int n, float scale) {
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  uint32_t outliers = 0;
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) {
      const float ax = std::fabs(x[i + j]);
      const float y = kDecode ? ax / scale : ax * scale;
      outliers += y > F::kMax ? 1u : 0u;
      const float q = round_abs<F>(y);
      const float xh = kDecode ? q * scale : q / scale;
      const double d = double(ax) - double(xh);
      lane[j] += d * d;
    }
  }
  for (; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    const float y = kDecode ? ax / scale : ax * scale;
    outliers += y > F::kMax ? 1u : 0u;
    const float q = round_abs<F>(y);
    const float xh = kDecode ? q * scale : q / scale;
    const double d = double(ax) - double(xh);
    lane[i & 7] += d * d;
  }
  return {((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7])),
          outliers};
}

struct BlockResult {
  float scale;       // multiplier s
  uint8_t code;      // E4M3 byte (NVFP4) or biased exponent (UE8M0); 0 for FP32 scales
  double err_before; // squared error with the standard scale
  double err_after;  // squared error with the chosen scale
  uint32_t outliers; // elements with |x·s| > max under the chosen scale
};

// Events of the exact sweep: at decode scale t one element's rounding steps one grid value down.
struct SweepEvent {
  double t;
  float dA;  // change of Σ q²
  float dB;  // change of Σ |x|·q
};

struct Scratch {
  std::vector<SweepEvent> events;
};

inline float block_absmax(const float* x, int n) {
  float m = 0.0f;
  for (int i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

// Exact minimum of E(t) = Σ (|x_i| − t·Q(|x_i|/t))² over decode scales t ∈ (t_lo, 2·t0), t0 = absmax/max.
// Between breakpoints t = |x_i|/mid_k the assignment q is fixed and E is the quadratic
// A t² − 2 B t + C with minimum at B/A; at a breakpoint E is continuous and its slope drops,
// so minima lie at the clamped B/A of some interval. Scales t ≥ 2·t0 never win: every grid value
// that can matter at 2t is also on the grid at t (the formats are closed under doubling there).
// Below t_lo the largest element's clipping error alone exceeds the naive error.
template <class F>
inline double exact_decode_scale(const float* x, int n, float amax, double err_naive, Scratch& sc) {
  const Grid& g = grid_of(F::kId);
  const int K = g.K;
  const double* val = g.value.data();
  const double* mid = g.mid.data();
  const double t0 = double(amax) / double(F::kMax);
  const double t_hi = 2.0 * t0;
  double t_lo = (double(amax) - std::sqrt(err_naive) * (1.0 + 1e-9)) / double(F::kMax);
  if (!(t_lo > 0.0)) t_lo = 0.0;

  sc.events.clear();
  double A = 0.0, B = 0.0, C = 0.0;
  for (int i = 0; i < n; ++i) {
    const double a = std::fabs(double(x[i]));
    if (a == 0.0) continue;
    C += a * a;
    const double y_lo = a / t_hi;
    // k_hi: midpoints strictly below a/t_lo (all of them when t_lo is 0) = the grid index just above t_lo.
    int k_hi, k_lo;
    if (t_lo == 0.0) {
      k_hi = K;
    } else {
      const double y_hi = a / t_lo;
      k_hi = int(std::lower_bound(mid + 1, mid + K + 1, y_hi) - (mid + 1));
    }
    k_lo = int(std::upper_bound(mid + 1, mid + K + 1, y_lo) - (mid + 1));  // midpoints <= y_lo
    const double q = val[k_hi];
    A += q * q;
    B += a * q;
    for (int k = k_hi; k > k_lo; --k) {
      SweepEvent e;
      e.t = a / mid[k];
      e.dA = float(val[k - 1] * val[k - 1] - val[k] * val[k]);
      e.dB = float(a * (val[k - 1] - val[k]));
      sc.events.push_back(e);
    }
  }
  std::sort(sc.events.begin(), sc.events.end(),
            [](const SweepEvent& p, const SweepEvent& q) { return p.t < q.t; });

  double best_e = std::numeric_limits<double>::infinity(), best_t = t0;
  double t_prev = t_lo;
  auto consider = [&](double t_end) {
    double t = A > 0.0 ? B / A : t_prev;
    t = std::min(std::max(t, t_prev), t_end);
    if (t <= 0.0) return;
    const double e = (A * t - 2.0 * B) * t + C;
    if (e < best_e) {
      best_e = e;
      best_t = t;
    }
  };
  for (const SweepEvent& e : sc.events) {
    if (e.t > t_prev) consider(e.t);
    A += e.dA;
    B += e.dB;
    t_prev = std::max(t_prev, e.t);
  }
  consider(t_hi);
  return best_t;
}

// The specification's search over multipliers s in [0.1·s0, 2·s0]: 20 ternary rounds.
template <class F>
inline float ternary_multiplier(const float* x, int n, float s0, double e0) {
  float lo = s0 * 0.1f, hi = s0 * 2.0f, best = s0;
  double best_e = e0;
  for (int r = 0; r < 20; ++r) {
    const float m1 = lo + (hi - lo) / 3.0f;
    const float m2 = hi - (hi - lo) / 3.0f;
    const double e1 = eval_block<F, false>(x, n, m1).err;
    const double e2 = eval_block<F, false>(x, n, m2).err;
    if (e1 < e2) {
      hi = m2;
      if (e1 < best_e) best_e = e1, best = m1;
    } else {
      lo = m1;
      if (e2 < best_e) best_e = e2, best = m2;
    }
  }
  return best;
}

// FP32 scales: naive s0 = max/absmax, then the chosen search; never worse than naive.
template <class F>
inline BlockResult search_fp32(const float* x, int n, Search mode, Scratch& sc) {
  const float amax = block_absmax(x, n);
  if (amax == 0.0f) return {1.0f, 0, 0.0, 0.0, 0};
  const float s0 = F::kMax / amax;
  const BlockEval naive = eval_block<F, false>(x, n, s0);
  BlockResult r{s0, 0, naive.err, naive.err, naive.outliers};
  float s = s0;
  if (mode == Search::Exact) {
    const double t = exact_decode_scale<F>(x, n, amax, naive.err, sc);
    s = float(1.0 / t);
  } else if (mode == Search::Ternary) {
    s = ternary_multiplier<F>(x, n, s0, naive.err);
  }
  if (s != s0 && std::isfinite(s) && s > 0.0f) {
    const BlockEval e = eval_block<F, false>(x, n, s);
    if (e.err < naive.err) {
      r.scale = s;
      r.err_after = e.err;
      r.outliers = e.outliers;
    }
  }
  return r;
}

// Encoded scales: evaluate candidate decode scales in ascending code order, standard first;
// strict improvement only, so ties keep the standard (or the smaller code).
// A candidate d is skipped when it cannot win: (1) the block's largest element clips by more than
// the best error so far, or (2) d ≥ absmax/(max/2) and d/2 is representable too: then every grid
// value that matters at d is also on the grid at d/2, which is at least as good.

// Precomputed E4M3 scale values and which of them can be halved exactly (codes 1..126).
struct E4M3Table {
  float value[127];
  bool halvable[127];
  E4M3Table() {
    for (int c = 0; c < 127; ++c) {
      value[c] = e4m3_decode(uint8_t(c));
      halvable[c] = e4m3_halvable(uint8_t(c));
    }
  }
};
inline const E4M3Table& e4m3_table() {
  static const E4M3Table t;
  return t;
}

template <class F>
inline BlockResult search_nvfp4(const float* x, int n, float g, Search mode) {
  const E4M3Table& tab = e4m3_table();
  const float amax = block_absmax(x, n);
  if (amax == 0.0f) return {1.0f / (tab.value[1] * g), 1, 0.0, 0.0, 0};
  uint8_t std_code = e4m3_encode_rne(amax / (6.0f * g));
  if (std_code == 0) std_code = 1;  // the smallest positive E4M3 value, 2^-9
  const float d_std = tab.value[std_code] * g;
  const BlockEval e_std = eval_block<F, true>(x, n, d_std);
  BlockResult r{1.0f / d_std, std_code, e_std.err, e_std.err, e_std.outliers};
  auto try_code = [&](int c) {
    const float d = tab.value[c] * g;
    if (!(d > 0.0f) || !std::isfinite(d)) return;
    const BlockEval e = eval_block<F, true>(x, n, d);
    if (e.err < r.err_after) {
      r.scale = 1.0f / d;
      r.code = uint8_t(c);
      r.err_after = e.err;
      r.outliers = e.outliers;
    }
  };
  if (mode == Search::Exact) {
    const double half_range = double(amax) / (double(F::kMax) * 0.5);
    const double d_lo = (double(amax) - std::sqrt(r.err_after) * (1.0 + 1e-9)) / double(F::kMax);
    int c_lo = 1;
    if (d_lo > 0.0) c_lo = std::max(1, int(e4m3_encode_rne(float(d_lo / double(g)))) - 1);
    for (int c = c_lo; c <= 126; ++c) {
      const double d = double(tab.value[c]) * double(g);
      if (d >= half_range) {
        if (c >= 16) break;  // codes from 16 up can all be halved exactly
        if (tab.halvable[c]) continue;
      }
      if (c == std_code) continue;
      const double clip = double(amax) - double(F::kMax) * d * (1.0 + 1e-6);
      if (clip > 0.0 && clip * clip > r.err_after) continue;
      try_code(c);
    }
  } else if (mode == Search::Ternary) {
    const float s = ternary_multiplier<F>(x, n, 1.0f / d_std, e_std.err);
    int c = e4m3_encode_rne((1.0f / s) / g);
    if (c == 0) c = 1;
    if (c != std_code) try_code(c);
  }
  return r;
}

// Decode scale 2^k of a UE8M0 code k+127, computed exactly (2^-127 is a float subnormal).
inline float pow2_exact(int k) { return std::ldexp(1.0f, k); }

// floor(log2(v)) for a positive finite float, exactly from its bits.
inline int floor_log2(float v) {
  const uint32_t u = float_to_bits(v);
  const int e = int((u >> 23) & 0xff);
  if (e != 0) return e - 127;
  int k = -127;
  uint32_t m = u & 0x7fffff;
  while (!(m & 0x400000)) m <<= 1, --k;
  return k;
}

template <class F>
inline BlockResult search_mx(const float* x, int n, Search mode) {
  const float amax = block_absmax(x, n);
  if (amax == 0.0f) return {1.0f, 127, 0.0, 0.0, 0};
  const int emax = mx_emax_elem(F::kId);
  const int k_std = std::min(127, std::max(-127, floor_log2(amax) - emax));
  const float d_std = pow2_exact(k_std);
  const BlockEval e_std = eval_block<F, true>(x, n, d_std);
  BlockResult r{1.0f / d_std, uint8_t(k_std + 127), e_std.err, e_std.err, e_std.outliers};
  auto try_k = [&](int k) {
    const float d = pow2_exact(k);
    const BlockEval e = eval_block<F, true>(x, n, d);
    if (e.err < r.err_after) {
      r.scale = 1.0f / d;
      r.code = uint8_t(k + 127);
      r.err_after = e.err;
      r.outliers = e.outliers;
    }
  };
  if (mode == Search::Exact) {
    const double half_range = double(amax) / (double(F::kMax) * 0.5);
    // Below: stop once the largest element's clipping alone exceeds the best error.
    // Above: the first power of two >= absmax/(max/2) dominates every larger one.
    int k_top = k_std;
    while (k_top < 127 && double(pow2_exact(k_top)) < half_range) ++k_top;
    int k_bottom = k_std;
    while (k_bottom > -127) {
      const double clip = double(amax) - double(F::kMax) * double(pow2_exact(k_bottom - 1));
      if (clip > 0.0 && clip * clip > r.err_after) break;
      --k_bottom;
    }
    for (int k = k_bottom; k <= k_top; ++k) {
      if (k != k_std) try_k(k);
    }
  } else if (mode == Search::Ternary) {
    const float s = ternary_multiplier<F>(x, n, 1.0f / d_std, e_std.err);
    const int k = std::min(127, std::max(-127, int(std::lround(-std::log2(double(s))))));
    if (k != k_std) try_k(k);
  }
  return r;
}

}  // namespace calib
