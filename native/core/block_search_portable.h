// The per-block scale search as one GPU thread runs it: fixed-size state, no allocation, no SIMD.
// nvcc compiles it into the CUDA kernels; the host compiler compiles the same source for the
// `cuda-emulated` backend, which the tests compare with the CPU engine on every machine.
//
// It reproduces block_search.h operation for operation, so the two agree bit for bit:
//  - element errors: the same float32 products/quotients, differences and squares in float64,
//    element i into lane i mod 8, lanes combined as ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7));
//  - the exact sweep visits the breakpoints in the CPU's order (time, then element index: the
//    order of its stable sort) by merging each element's ascending breakpoints, instead of
//    materializing and sorting them, and accumulates A, B, M in that order;
//  - compiled without contraction into FMA and with IEEE division, square root and subnormals.
#pragma once

#include <math.h>

#include <cstdint>

#include "elem_format.h"
#include "hd.h"
#include "scheme.h"

namespace calib {
namespace port {

// ---- Tables (plain data: copied to the GPU as they are) ----

constexpr int kMaxGrid = 128;  // E4M3 has 127 non-negative values, E5M2 124, E2M1 8

struct GridTable {
  int K;
  double value[kMaxGrid], mid[kMaxGrid], inv_mid[kMaxGrid], d_val[kMaxGrid];
  float d_sq[kMaxGrid];
};

struct Tables {
  GridTable grid[3];  // indexed by Elem: E2M1, E4M3, E5M2
  float e4m3_value[127];
  uint8_t e4m3_halvable[127];
};

// Host side: fills the tables from the CPU engine's own grids (search_tables.cc).
void fill_tables(Tables* t);
const Tables& host_tables();

// ---- One calibration job and one block's result ----

struct Job {
  const void* data;  // rows × cols elements of `dtype` (DType values: 0 F32, 1 F16, 2 BF16)
  int dtype;
  int64_t rows, cols, blocks_per_row, blocks;
  int block_size;
  int enc;     // ScaleEnc
  int search;  // Search
  bool allow_nonfinite;
  float global_decode;
  const float* col_weights;  // optional, length cols
  const float* col_means;    // optional, with col_weights
};

struct BlockOut {
  float scale;
  uint8_t code;
  double err_before, err_after, obj_before, obj_after;
  uint32_t outliers;
  uint32_t counted;
};

// ---- Small helpers with the semantics of the std:: functions the CPU engine calls ----

template <class T>
CALIB_HD T pmin(T a, T b) { return b < a ? b : a; }  // std::min
template <class T>
CALIB_HD T pmax(T a, T b) { return a < b ? b : a; }  // std::max
CALIB_HD float pfabsf(float x) { return bits_to_float(float_to_bits(x) & 0x7fffffffu); }
CALIB_HD bool pfinite(float x) { return (float_to_bits(x) & 0x7f800000u) != 0x7f800000u; }
CALIB_HD double pinf() { return 1.0 / 0.0; }
// 2^k for k in [-127, 127], exactly (2^-127 is a float subnormal).
CALIB_HD float pow2_bits(int k) { return k >= -126 ? bits_to_float(uint32_t(k + 127) << 23) : bits_to_float(0x00400000u); }

// The elements of one block as float32; non-finite ones read as 0 when they are excluded.
struct Source {
  const void* data;
  int dtype;
  int64_t pos;
  bool zero_nonfinite;
  CALIB_HD float raw(int i) const {
    if (dtype == 0) return static_cast<const float*>(data)[pos + i];
    const uint16_t h = static_cast<const uint16_t*>(data)[pos + i];
    return dtype == 1 ? half_to_float(h) : bf16_to_float(h);
  }
  CALIB_HD float operator[](int i) const {
    const float v = raw(i);
    return zero_nonfinite && !pfinite(v) ? 0.0f : v;
  }
};

// ---- Block errors (block_search.h: elem_diff, eval_block, eval_obj) ----

struct Obj {
  double err, obj;
  uint32_t outliers;
};

template <class F, bool kDecode>
CALIB_HD double elem_diff(float x, float scale, uint32_t& outliers) {
  const float ax = pfabsf(x);
  const float y = kDecode ? ax / scale : ax * scale;
  outliers += y > F::kMax ? 1u : 0u;
  const float q = round_abs<F>(y);
  const float xh = kDecode ? q * scale : q / scale;
  return double(ax) - double(xh);
}

CALIB_HD double combine8(const double* l) { return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7])); }

// Lanes are indexed only by unrolled constants, so on the GPU they stay in registers.
template <class F, bool kDecode, class X>
CALIB_HD Obj eval_obj(const X& x, const float* w, const float* mu, int n, float scale) {
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  uint32_t outliers = 0;
  if (w == nullptr) {
    for (int i0 = 0; i0 < n; i0 += 8) {
CALIB_UNROLL
      for (int j = 0; j < 8; ++j) {
        if (i0 + j < n) {
          const double d = elem_diff<F, kDecode>(x[i0 + j], scale, outliers);
          lane[j] += d * d;
        }
      }
    }
    const double e = combine8(lane);
    return {e, e, outliers};
  }
  double wlane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  double bias = 0.0;
  for (int i0 = 0; i0 < n; i0 += 8) {
CALIB_UNROLL
    for (int j = 0; j < 8; ++j) {
      const int i = i0 + j;
      if (i < n) {
        const float xi = x[i];
        const double d = elem_diff<F, kDecode>(xi, scale, outliers);
        const double d2 = d * d;
        lane[j] += d2;
        wlane[j] += double(w[i]) * d2;
        if (mu) bias += double(mu[i]) * (xi < 0.0f ? -d : d);
      }
    }
  }
  return {combine8(lane), combine8(wlane) + bias * bias, outliers};
}

template <class X>
CALIB_HD float block_absmax(const X& x, int n) {
  float m = 0.0f;
  for (int i = 0; i < n; ++i) m = pmax(m, pfabsf(x[i]));
  return m;
}

// ---- The exact sweep (block_search.h: exact_decode_scale_impl) ----

// Each element's breakpoints a/mid[k], k = k_hi down to k_lo+1, ascending in time. The sweep takes
// the earliest pending one across elements, ties to the lower element index: a linear scan over
// registers for blocks of up to 16 (LinearPending), a binary heap above (HeapPending).
template <int N>
struct LinearPending {
  double t[N];  // the element's next breakpoint; +inf when it has none left
  int k[N], k_end[N];
};

// The heap's state lives where the caller puts it: in shared memory on the GPU (element j of a
// thread at [j * stride], stride = threads per block, so a warp's accesses spread over the banks),
// in a stack buffer on the host (stride 1).
struct HeapPending {
  double* t;
  int16_t* k;
  int16_t* k_end;
  int16_t* heap;
  int stride;
  int size;

  CALIB_HD double& T(int j) const { return t[j * stride]; }
  CALIB_HD int16_t& Kc(int j) const { return k[j * stride]; }
  CALIB_HD int16_t& Ke(int j) const { return k_end[j * stride]; }
  CALIB_HD int16_t& H(int j) const { return heap[j * stride]; }
  CALIB_HD bool before(int i, int j) const { return T(i) < T(j) || (T(i) == T(j) && i < j); }
  CALIB_HD void swap(int a, int b) const {
    const int16_t tmp = H(a);
    H(a) = H(b), H(b) = tmp;
  }
  CALIB_HD void sift_up(int p) const {
    while (p > 0) {
      const int parent = (p - 1) >> 1;
      if (!before(H(p), H(parent))) break;
      swap(p, parent);
      p = parent;
    }
  }
  CALIB_HD void sift_down(int p) const {
    for (;;) {
      const int l = 2 * p + 1;
      if (l >= size) break;
      int c = l;
      if (l + 1 < size && before(H(l + 1), H(l))) c = l + 1;
      if (!before(H(c), H(p))) break;
      swap(p, c);
      p = c;
    }
  }
};

// fl(B/A) clamped to [lo, hi] (A > 0), without the division when the clamp decides: if B < lo·A by
// more than the roundings of the product and the quotient can move it (relative 1e-14, against
// ~2^-52), then fl(B/A) < lo too, and likewise above hi. Products near the subnormal range or
// overflow fall through to the division. Equal to pmin(pmax(B / A, lo), hi) in every case.
CALIB_HD double clamped_quotient(double B, double A, double lo, double hi) {
  const double plo = lo * A, phi = hi * A;
  if (plo > 1e-290 && B < plo * (1.0 - 1e-14)) return pmin(lo, hi);
  if (phi > 1e-290 && phi < 1e290 && B > phi * (1.0 + 1e-14)) return hi;
  return pmin(pmax(B / A, lo), hi);
}

template <class F, bool kW, bool kM, int N, class X>
CALIB_HD double exact_decode_scale(const GridTable& g, const X& x, const float* w, const float* mu, int n, float amax,
                                   double obj_naive, HeapPending hp) {
  constexpr bool kLinear = N <= 16;
  const int K = g.K;
  const double t0 = double(amax) / double(F::kMax);
  const double t_hi = kM ? double(amax) / g.mid[1] * (1.0 + 1e-6) : 2.0 * t0;
  const double root = sqrt(obj_naive) * (1.0 + 1e-9);
  double t_lo = (double(amax) - root) / double(F::kMax);
  if (kW) {
    t_lo = 0.0;
    for (int i = 0; i < n; ++i) {
      if (w[i] > 0.0f) t_lo = pmax(t_lo, (fabs(double(x[i])) - root / sqrt(double(w[i]))) / double(F::kMax));
    }
  }
  if (!(t_lo > 0.0)) t_lo = 0.0;
  const double inv_t_hi = 1.0 / t_hi;
  const double inv_t_lo = t_lo > 0.0 ? 1.0 / t_lo : 0.0;

  LinearPending<kLinear ? N : 1> pend;
  if constexpr (!kLinear) hp.size = 0;
  double A = 0.0, B = 0.0, C = 0.0, M = 0.0, P = 0.0;
  // Initial assignment (every element at its grid index just above t_lo) and pending breakpoints.
  auto add_element = [&](int i) {
    double t_i = pinf();
    int k_i = 0, k_end_i = 0;
    if (i < n) {
      const float xi = x[i];
      const double a = fabs(double(xi));
      const double c = kW ? double(w[i]) : 1.0;
      const double ms = kM ? (xi < 0.0f ? -double(mu[i]) : double(mu[i])) : 0.0;
      if (a != 0.0 && !(c == 0.0 && ms == 0.0)) {
        const int k_hi = t_lo == 0.0 ? K : count_mids_near<F, true>(g.mid, K, a * inv_t_lo);
        const int k_lo = count_mids_near<F, false>(g.mid, K, a * inv_t_hi);
        C += c * (a * a);
        const double q = g.value[k_hi];
        A += c * (q * q);
        B += c * (a * q);
        if (kM) {
          M += ms * q;
          P += ms * a;
        }
        if (k_hi > k_lo) t_i = a * g.inv_mid[k_hi], k_i = k_hi, k_end_i = k_lo;
      }
    }
    if constexpr (kLinear) {
      pend.t[i] = t_i, pend.k[i] = k_i, pend.k_end[i] = k_end_i;
    } else if (k_i > 0) {
      hp.T(i) = t_i, hp.Kc(i) = int16_t(k_i), hp.Ke(i) = int16_t(k_end_i);
      hp.H(hp.size) = int16_t(i);
      hp.sift_up(hp.size++);
    }
  };
  if constexpr (kLinear) {
    // Unrolled, so that the state stays in registers on the GPU.
    CALIB_UNROLL
    for (int i = 0; i < N; ++i) add_element(i);
  } else {
    for (int i = 0; i < n; ++i) add_element(i);
  }

  double best_e = pinf(), best_t = t0;
  double t_prev = t_lo;
  for (;;) {
    int i = -1;
    if constexpr (kLinear) {
      double tm = pinf();
CALIB_UNROLL
      for (int j = 0; j < N; ++j) {
        if (pend.t[j] < tm) tm = pend.t[j], i = j;
      }
    } else if (hp.size > 0) {
      i = hp.H(0);
    }
    double t_end = t_hi;
    int k = 0;
    if constexpr (kLinear) {
CALIB_UNROLL
      for (int j = 0; j < N; ++j) {
        if (j == i) t_end = pend.t[j], k = pend.k[j];
      }
    } else if (i >= 0) {
      t_end = hp.T(i), k = hp.Kc(i);
    }
    const double A2 = kM ? A + M * M : A, B2 = kM ? B + P * M : B, C2 = kM ? C + P * P : C;
    double lo = t_prev, hi = t_end;
    if (kM) {
      const double nudge = 4.8e-7 * hi;
      if (2.0 * nudge < hi - lo) lo += nudge, hi -= nudge;
      else lo = hi = 0.5 * (lo + hi);
    }
    const double t = A2 > 0.0 ? clamped_quotient(B2, A2, lo, hi) : pmin(lo, hi);
    const double e = (A2 * t - 2.0 * B2) * t + C2;
    const bool better = t > 0.0 && e < best_e;
    best_t = better ? t : best_t;
    best_e = better ? e : best_e;
    t_prev = t_end;
    if (i < 0) break;

    const float xi = x[i];
    const double a = fabs(double(xi));
    if (kM) {
      const double c = double(w[i]);
      const double ms = xi < 0.0f ? -double(mu[i]) : double(mu[i]);
      A += c * double(g.d_sq[k]);
      B += c * (a * g.d_val[k]);
      M += ms * g.d_val[k];
    } else if (kW) {
      const double c = double(w[i]);
      A += c * double(g.d_sq[k]);
      B += c * (a * g.d_val[k]);
    } else {
      A += double(g.d_sq[k]);
      B += double(float(a * g.d_val[k]));
    }
    if constexpr (kLinear) {
CALIB_UNROLL
      for (int j = 0; j < N; ++j) {
        if (j == i) {
          pend.k[j] = k - 1;
          pend.t[j] = k - 1 > pend.k_end[j] ? a * g.inv_mid[k - 1] : pinf();
        }
      }
    } else {
      hp.Kc(i) = int16_t(k - 1);
      if (k - 1 > hp.Ke(i)) {
        hp.T(i) = a * g.inv_mid[k - 1];
      } else {
        hp.H(0) = hp.H(--hp.size);
      }
      hp.sift_down(0);
    }
  }
  return best_t;
}

template <class F, int N, class X>
CALIB_HD double exact_dispatch(const GridTable& g, const X& x, const float* w, const float* mu, int n, float amax, double obj,
                               const HeapPending& hp) {
  if (w && mu) return exact_decode_scale<F, true, true, N>(g, x, w, mu, n, amax, obj, hp);
  return w ? exact_decode_scale<F, true, false, N>(g, x, w, nullptr, n, amax, obj, hp)
           : exact_decode_scale<F, false, false, N>(g, x, nullptr, nullptr, n, amax, obj, hp);
}

// ---- The three scale encodings (block_search.h: search_fp32, search_nvfp4, search_mx) ----

struct Result {
  float scale;
  uint8_t code;
  double err_before, err_after;
  uint32_t outliers;
  double obj_before, obj_after;
};

template <class F, class X>
CALIB_HD float ternary_multiplier(const X& x, const float* w, const float* mu, int n, float s0, double e0) {
  float lo = s0 * 0.1f, hi = s0 * 2.0f, best = s0;
  double best_e = e0;
  for (int r = 0; r < 20; ++r) {
    const float m1 = lo + (hi - lo) / 3.0f;
    const float m2 = hi - (hi - lo) / 3.0f;
    const double e1 = eval_obj<F, false>(x, w, mu, n, m1).obj;
    const double e2 = eval_obj<F, false>(x, w, mu, n, m2).obj;
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

template <class F, bool kDecode, class X>
CALIB_HD void take_if_better(Result& r, const X& x, const float* w, const float* mu, int n, float scale_arg, float s, uint8_t code) {
  const Obj e = eval_obj<F, kDecode>(x, w, mu, n, scale_arg);
  if (e.obj < r.obj_after) {
    r.scale = s;
    r.code = code;
    r.err_after = e.err;
    r.obj_after = e.obj;
    r.outliers = e.outliers;
  }
}

template <class F, int N, class X>
CALIB_HD Result search_fp32(const GridTable& g, const X& x, const float* w, const float* mu, int n, int mode, const HeapPending& hp) {
  const float amax = block_absmax(x, n);
  if (amax == 0.0f) return {1.0f, 0, 0.0, 0.0, 0, 0.0, 0.0};
  const float s0 = F::kMax / amax;
  const Obj naive = eval_obj<F, false>(x, w, mu, n, s0);
  Result r{s0, 0, naive.err, naive.err, naive.outliers, naive.obj, naive.obj};
  float s = s0;
  if (mode == int(Search::Exact)) {
    s = float(1.0 / exact_dispatch<F, N>(g, x, w, mu, n, amax, naive.obj, hp));
  } else if (mode == int(Search::Ternary)) {
    s = ternary_multiplier<F>(x, w, mu, n, s0, naive.obj);
  }
  if (s != s0 && pfinite(s) && s > 0.0f) take_if_better<F, false>(r, x, w, mu, n, s, s, 0);
  return r;
}

template <class F, class X>
CALIB_HD double clip_bound(const X& x, const float* w, int n, float amax, double d) {
  const double limit = double(F::kMax) * d * (1.0 + 1e-6);
  if (w == nullptr) {
    const double clip = double(amax) - limit;
    return clip > 0.0 ? clip * clip : 0.0;
  }
  double b = 0.0;
  for (int i = 0; i < n; ++i) {
    const double clip = fabs(double(x[i])) - limit;
    if (clip > 0.0) b = pmax(b, double(w[i]) * clip * clip);
  }
  return b;
}

template <class F, class X>
CALIB_HD Result search_nvfp4(const Tables& tb, const X& x, const float* w, const float* mu, int n, float g, int mode) {
  const float amax = block_absmax(x, n);
  if (amax == 0.0f) return {1.0f / (tb.e4m3_value[1] * g), 1, 0.0, 0.0, 0, 0.0, 0.0};
  uint8_t std_code = e4m3_encode_rne(amax / (6.0f * g));
  if (std_code == 0) std_code = 1;
  const float d_std = tb.e4m3_value[std_code] * g;
  const Obj e_std = eval_obj<F, true>(x, w, mu, n, d_std);
  Result r{1.0f / d_std, std_code, e_std.err, e_std.err, e_std.outliers, e_std.obj, e_std.obj};
  auto try_code = [&](int c) {
    const float d = tb.e4m3_value[c] * g;
    if (!(d > 0.0f) || !pfinite(d)) return;
    take_if_better<F, true>(r, x, w, mu, n, d, 1.0f / d, uint8_t(c));
  };
  if (mode == int(Search::Exact)) {
    const double half_range = double(amax) / (double(F::kMax) * 0.5);
    const double d_lo = w ? 0.0 : (double(amax) - sqrt(r.obj_after) * (1.0 + 1e-9)) / double(F::kMax);
    int c_lo = 1;
    if (d_lo > 0.0) c_lo = pmax(1, int(e4m3_encode_rne(float(d_lo / double(g)))) - 1);
    const double all_zero = double(amax) / tb.grid[int(F::kId)].mid[1];
    for (int c = c_lo; c <= 126; ++c) {
      const double d = double(tb.e4m3_value[c]) * double(g);
      if (mu) {
        if (d > all_zero && double(tb.e4m3_value[c - 1]) * double(g) > all_zero) break;
      } else if (d >= half_range) {
        if (c >= 16) break;
        if (tb.e4m3_halvable[c]) continue;
      }
      if (c == std_code) continue;
      if (clip_bound<F>(x, w, n, amax, d) > r.obj_after) continue;
      try_code(c);
    }
  } else if (mode == int(Search::Ternary)) {
    const float s = ternary_multiplier<F>(x, w, mu, n, 1.0f / d_std, e_std.obj);
    int c = e4m3_encode_rne((1.0f / s) / g);
    if (c == 0) c = 1;
    if (c != std_code) try_code(c);
  }
  return r;
}

// round(-log2(s)) exactly: with s = f·2^e, f in [1, 2), it is -e when f < √2, else -e-1 (a float
// is never exactly √2, so there are no ties).
CALIB_HD int nearest_neg_log2(float s) {
  const int e = floor_log2(s);
  const double f = double(s) * ldexp(1.0, -e);
  return f < 1.4142135623730951 ? -e : -e - 1;
}

template <class F, class X>
CALIB_HD Result search_mx(const GridTable& grid, const X& x, const float* w, const float* mu, int n, int mode) {
  const float amax = block_absmax(x, n);
  if (amax == 0.0f) return {1.0f, 127, 0.0, 0.0, 0, 0.0, 0.0};
  const int emax = mx_emax_elem(F::kId);
  const int k_std = pmin(127, pmax(-127, floor_log2(amax) - emax));
  const float d_std = pow2_bits(k_std);
  const Obj e_std = eval_obj<F, true>(x, w, mu, n, d_std);
  Result r{1.0f / d_std, uint8_t(k_std + 127), e_std.err, e_std.err, e_std.outliers, e_std.obj, e_std.obj};
  auto try_k = [&](int k) {
    const float d = pow2_bits(k);
    take_if_better<F, true>(r, x, w, mu, n, d, 1.0f / d, uint8_t(k + 127));
  };
  if (mode == int(Search::Exact)) {
    const double half_range = double(amax) / (double(F::kMax) * 0.5);
    const double top = mu ? double(amax) / grid.mid[1] : half_range;
    int k_top = k_std;
    while (k_top < 127 && (mu ? double(pow2_bits(k_top)) <= top : double(pow2_bits(k_top)) < top)) ++k_top;
    int k_bottom = k_std;
    while (k_bottom > -127) {
      if (clip_bound<F>(x, w, n, amax, double(pow2_bits(k_bottom - 1))) > r.obj_after) break;
      --k_bottom;
    }
    for (int k = k_bottom; k <= k_top; ++k) {
      if (k != k_std) try_k(k);
    }
  } else if (mode == int(Search::Ternary)) {
    const float s = ternary_multiplier<F>(x, w, mu, n, 1.0f / d_std, e_std.obj);
    const int k = pmin(127, pmax(-127, nearest_neg_log2(s)));
    if (k != k_std) try_k(k);
  }
  return r;
}

// ---- One block of a job (tensor_kernels.inc: run_range's loop body) ----

// A job's weighting: 0 none, 1 column weights, 2 column weights and means.
CALIB_HD int job_weighting(const Job& job) { return job.col_weights == nullptr ? 0 : job.col_means == nullptr ? 1 : 2; }

// One instantiation per variant of the search (sweep state size N, scale encoding kEnc, weighting
// kW), so that each holds only the code its jobs run: on the GPU the registers a thread needs, and
// so how many threads fit on a multiprocessor, are those of its own search, not of the largest.
// hp: the heap's storage for blocks over 16 elements (unused for blocks of up to 16).
template <class F, int N, int kEnc, int kW>
CALIB_HD BlockOut calibrate_block(const Tables& tb, const Job& job, int64_t b, const HeapPending& hp) {
  const int64_t row = b / job.blocks_per_row, col0 = (b % job.blocks_per_row) * job.block_size;
  const int n = int(pmin<int64_t>(job.block_size, job.cols - col0));
  const Source x{job.data, job.dtype, row * job.cols + col0, job.allow_nonfinite};
  uint32_t counted = uint32_t(n);
  if (job.allow_nonfinite) {
    for (int i = 0; i < n; ++i) counted -= pfinite(x.raw(i)) ? 0u : 1u;
  }
  const float* w = kW > 0 ? job.col_weights + col0 : nullptr;
  const float* mu = kW == 2 ? job.col_means + col0 : nullptr;
  const GridTable& g = tb.grid[int(F::kId)];
  Result r;
  if constexpr (kEnc == int(ScaleEnc::E4M3G)) r = search_nvfp4<F>(tb, x, w, mu, n, job.global_decode, job.search);
  else if constexpr (kEnc == int(ScaleEnc::UE8M0)) r = search_mx<F>(g, x, w, mu, n, job.search);
  else r = search_fp32<F, N>(g, x, w, mu, n, job.search, hp);
  return {r.scale, r.code, r.err_before, r.err_after, r.obj_before, r.obj_after, r.outliers, counted};
}

// A block's mean squared error as stored per block (float of the float64 quotient).
CALIB_HD float block_mse(double err, uint32_t counted) { return float(err / (counted > 0 ? double(counted) : 1.0)); }

// The template size class for a block size (the sweep's per-element state is sized for it).
// The GPU stops at 256 (its per-thread state lives in local memory, reserved for every resident
// thread); the host goes up to the engine's 4096.
constexpr int kMaxDeviceBlock = 256;
CALIB_HD int size_class(int block_size) {
  return block_size <= 16 ? 16 : block_size <= 32 ? 32 : block_size <= 64 ? 64 : block_size <= 128 ? 128 : block_size <= 256 ? 256 : 4096;
}

// Host side: calls fn.run<N, kEnc, kW>() for a job's variant. The encoded searches keep no
// per-element state and run as N = 16; FP32 scales take the size class (16 … kMaxDeviceBlock; a
// host caller with larger blocks picks N = 4096 itself).
template <int N, int kEnc, class Fn>
auto with_weighting(int weighting, const Fn& fn) {
  if (weighting == 0) return fn.template run<N, kEnc, 0>();
  if (weighting == 1) return fn.template run<N, kEnc, 1>();
  return fn.template run<N, kEnc, 2>();
}

template <class Fn>
auto with_variant(int size_class, const Job& job, const Fn& fn) {
  constexpr int kFp32 = int(ScaleEnc::FP32), kE4M3G = int(ScaleEnc::E4M3G), kUE8M0 = int(ScaleEnc::UE8M0);
  const int wt = job_weighting(job);
  if (job.enc == kE4M3G) return with_weighting<16, kE4M3G>(wt, fn);
  if (job.enc == kUE8M0) return with_weighting<16, kUE8M0>(wt, fn);
  switch (size_class) {
    case 16: return with_weighting<16, kFp32>(wt, fn);
    case 32: return with_weighting<32, kFp32>(wt, fn);
    case 64: return with_weighting<64, kFp32>(wt, fn);
    case 128: return with_weighting<128, kFp32>(wt, fn);
    default: return with_weighting<kMaxDeviceBlock, kFp32>(wt, fn);
  }
}

}  // namespace port
}  // namespace calib
