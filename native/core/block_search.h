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
#include <type_traits>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "elem_format.h"
#include "scheme.h"

#ifndef CALIB_ISA_NS
#error "block_search.h is compiled per instruction set: include it through tensor_kernels.inc"
#endif

// Everything here lives in the per-ISA namespace, so the AVX2 and baseline copies of these inline
// functions never get merged by the linker (which could run AVX2 code on a CPU without it).
namespace calib {
namespace CALIB_ISA_NS {

struct BlockEval {
  double err;
  uint32_t outliers;
};

// |x| − |x̂| of one element (exact in double), counting it when it clips.
template <class F, bool kDecode>
inline double elem_diff(float x, float scale, uint32_t& outliers) {
  const float ax = std::fabs(x);
  const float y = kDecode ? ax / scale : ax * scale;
  outliers += y > F::kMax ? 1u : 0u;
  const float q = round_abs<F>(y);
  const float xh = kDecode ? q * scale : q / scale;
  return double(ax) - double(xh);
}

template <class F, bool kDecode>
inline BlockEval eval_block_scalar(const float* x, int i, int n, float scale, double* lane) {
  uint32_t outliers = 0;
  for (; i < n; ++i) {
    const double d = elem_diff<F, kDecode>(x[i], scale, outliers);
    lane[i & 7] += d * d;
  }
  return {0.0, outliers};
}

inline double combine_lanes(const double* l) {
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

#if defined(__AVX2__)
// The same arithmetic as eval_block_scalar, eight elements at a time: every operation is IEEE
// (no FMA, no approximations), so the result is bit-identical to the scalar path.
template <class F, bool kDecode>
inline BlockEval eval_block(const float* x, int n, float scale) {
  constexpr float kMinNormal = pow2f(F::kEmin);
  constexpr float kMagic = pow2f(F::kEmin - F::kMantBits + 23);
  constexpr int kShift = 23 - F::kMantBits;
  const __m256 vs = _mm256_set1_ps(scale), vmax = _mm256_set1_ps(F::kMax);
  const __m256 vmin_normal = _mm256_set1_ps(kMinNormal), vmagic = _mm256_set1_ps(kMagic);
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256i vhalf = _mm256_set1_epi32(int((1u << (kShift - 1)) - 1u));
  const __m256i vmask = _mm256_set1_epi32(int(~((1u << kShift) - 1u)));
  const __m256i one = _mm256_set1_epi32(1);
  __m256d acc_lo = _mm256_setzero_pd(), acc_hi = _mm256_setzero_pd();
  __m256i outl = _mm256_setzero_si256();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 ax = _mm256_and_ps(_mm256_loadu_ps(x + i), absmask);
    const __m256 y = kDecode ? _mm256_div_ps(ax, vs) : _mm256_mul_ps(ax, vs);
    outl = _mm256_sub_epi32(outl, _mm256_castps_si256(_mm256_cmp_ps(y, vmax, _CMP_GT_OQ)));
    const __m256 a = _mm256_min_ps(y, vmax);
    const __m256 sub = _mm256_sub_ps(_mm256_add_ps(a, vmagic), vmagic);
    __m256i u = _mm256_castps_si256(a);
    u = _mm256_and_si256(_mm256_add_epi32(_mm256_add_epi32(u, vhalf), _mm256_and_si256(_mm256_srli_epi32(u, kShift), one)), vmask);
    const __m256 q = _mm256_blendv_ps(_mm256_castsi256_ps(u), sub, _mm256_cmp_ps(a, vmin_normal, _CMP_LT_OQ));
    const __m256 xh = kDecode ? _mm256_mul_ps(q, vs) : _mm256_div_ps(q, vs);
    const __m256d d_lo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(ax)), _mm256_cvtps_pd(_mm256_castps256_ps128(xh)));
    const __m256d d_hi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(ax, 1)), _mm256_cvtps_pd(_mm256_extractf128_ps(xh, 1)));
    acc_lo = _mm256_add_pd(acc_lo, _mm256_mul_pd(d_lo, d_lo));
    acc_hi = _mm256_add_pd(acc_hi, _mm256_mul_pd(d_hi, d_hi));
  }
  alignas(32) double lane[8];
  _mm256_store_pd(lane, acc_lo);
  _mm256_store_pd(lane + 4, acc_hi);
  alignas(32) uint32_t o[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(o), outl);
  uint32_t outliers = o[0] + o[1] + o[2] + o[3] + o[4] + o[5] + o[6] + o[7];
  outliers += eval_block_scalar<F, kDecode>(x, i, n, scale, lane).outliers;
  return {combine_lanes(lane), outliers};
}

inline float block_absmax(const float* x, int n) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 m = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + i), absmask));
  alignas(32) float v[8];
  _mm256_store_ps(v, m);
  float r = 0.0f;
  for (int j = 0; j < 8; ++j) r = std::max(r, v[j]);
  for (; i < n; ++i) r = std::max(r, std::fabs(x[i]));
  return r;
}
#else
template <class F, bool kDecode>
inline BlockEval eval_block(const float* x, int n, float scale) {
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const uint32_t outliers = eval_block_scalar<F, kDecode>(x, 0, n, scale, lane).outliers;
  return {combine_lanes(lane), outliers};
}

inline float block_absmax(const float* x, int n) {
  float m = 0.0f;
  for (int i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}
#endif

struct BlockResult {
  float scale;        // multiplier s
  uint8_t code;       // E4M3 byte (NVFP4) or biased exponent (UE8M0); 0 for FP32 scales
  double err_before;  // squared error with the standard scale
  double err_after;   // squared error with the chosen scale
  uint32_t outliers;  // elements with |x·s| > max under the chosen scale
  double obj_before;  // the searched objective (weighted error; = err without weights)
  double obj_after;
};

// A block's error and its search objective: Σ w_i (x_i − x̂_i)² with per-element weights (the
// activation-aware modes), or the plain squared error when w is null. With input means mu as well
// (w is then non-null), the block's bias term (Σ mu_i (x_i − x̂_i))² is added: the rank-1 part
// μμᵀ of E[x xᵀ] that the diagonal weights do not see.
struct BlockObj {
  double err;
  double obj;
  uint32_t outliers;
};

template <class F, bool kDecode>
inline BlockObj eval_obj(const float* x, const float* w, const float* mu, int n, float scale) {
  if (w == nullptr) {
    const BlockEval e = eval_block<F, kDecode>(x, n, scale);
    return {e.err, e.err, e.outliers};
  }
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0}, wlane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  uint32_t outliers = 0;
  double bias = 0.0;
  for (int i = 0; i < n; ++i) {
    const double d = elem_diff<F, kDecode>(x[i], scale, outliers);
    const double d2 = d * d;
    lane[i & 7] += d2;
    wlane[i & 7] += double(w[i]) * d2;
    if (mu) bias += double(mu[i]) * (x[i] < 0.0f ? -d : d);  // signed x − x̂
  }
  return {combine_lanes(lane), combine_lanes(wlane) + bias * bias, outliers};
}

// Events of the exact sweep: at decode scale t one element's rounding steps one grid value down.
// Unweighted, the changes are exact in float (grid squares; |x| times a power-of-two step);
// weighted, they need double.
template <class W>
struct SweepEventT {
  double t;
  W dA;  // change of Σ w q²
  W dB;  // change of Σ w |x| q
};
using SweepEvent = SweepEventT<float>;
using SweepEventW = SweepEventT<double>;
// With input means: also the change of M = Σ mu sign(x) q.
struct SweepEventM {
  double t;
  double dA, dB, dM;
};

template <class E>
struct EventBuffers {
  std::vector<E> events, sorted;  // grown once, never shrunk: no per-block allocation
};

struct Scratch {
  EventBuffers<SweepEvent> plain;
  EventBuffers<SweepEventW> weighted;
  EventBuffers<SweepEventM> mean;
  std::vector<uint32_t> bucket_start;
  std::vector<int> kidx;
  size_t count = 0;  // events in use
};

// Sorts events by t: counting sort into buckets uniform over [t_lo, t_hi], then insertion sort,
// which only has to fix the order inside each bucket. About one event per bucket: linear time.
// Both passes are stable, so equal times keep their generation order (deterministic).
template <class E>
inline void sort_events(EventBuffers<E>& buf, Scratch& sc, double t_lo, double t_hi) {
  const size_t n = sc.count;
  if (n < 2) return;
  size_t nb = 1;
  while (nb < n) nb <<= 1;
  const double inv = double(nb) / (t_hi - t_lo);
  if (sc.bucket_start.size() < nb + 1) sc.bucket_start.resize(nb + 1);
  std::fill(sc.bucket_start.begin(), sc.bucket_start.begin() + long(nb + 1), 0u);
  auto bucket = [&](double t) {
    const double f = (t - t_lo) * inv;
    return f <= 0.0 ? size_t(0) : std::min(nb - 1, size_t(f));
  };
  const E* in = buf.events.data();
  for (size_t i = 0; i < n; ++i) ++sc.bucket_start[bucket(in[i].t) + 1];
  for (size_t b = 0; b < nb; ++b) sc.bucket_start[b + 1] += sc.bucket_start[b];
  if (buf.sorted.size() < buf.events.size()) buf.sorted.resize(buf.events.size());
  for (size_t i = 0; i < n; ++i) buf.sorted[sc.bucket_start[bucket(in[i].t)]++] = in[i];
  E* a = buf.sorted.data();
  for (size_t i = 1; i < n; ++i) {
    const E v = a[i];
    size_t j = i;
    while (j > 0 && a[j - 1].t > v.t) {
      a[j] = a[j - 1];
      --j;
    }
    a[j] = v;
  }
  buf.events.swap(buf.sorted);
}

// Exact minimum of E(t) = Σ w_i (|x_i| − t·Q(|x_i|/t))² (w_i = 1 without weights) over decode
// scales t ∈ (t_lo, 2·t0), t0 = absmax/max.
// Between breakpoints t = |x_i|/mid_k the assignment q is fixed and E is the quadratic
// A t² − 2 B t + C with minimum at B/A; at a breakpoint E is continuous and its slope drops,
// so minima lie at the clamped B/A of some interval. Scales t ≥ 2·t0 never win: every grid value
// that can matter at 2t is also on the grid at t (the formats are closed under doubling there),
// element by element, so also for any non-negative weights.
// Below t_lo some element's clipping error alone exceeds the naive objective.
// With input means (kM), the bias term (P − t·M)², P = Σ mu sign(x)|x|, M = Σ mu sign(x) q, adds
// M², P·M and P² to A, B and C: still piecewise quadratic with the same breakpoints. The t ≥ 2·t0
// argument is element by element and does not hold for this term (a larger scale that rounds more
// elements to zero can cancel the bias), so with means the sweep runs up to amax / mid[1], where
// every element rounds to zero and the objective stops changing: exact over all t > t_lo.
template <class F, bool kW, bool kM = false>
inline double exact_decode_scale_impl(const float* x, const float* w, const float* mu, int n, float amax, double obj_naive, Scratch& sc) {
  using Event = typename std::conditional<kM, SweepEventM, SweepEventT<typename std::conditional<kW, double, float>::type>>::type;
  EventBuffers<Event>& buf = *[&]() {
    if constexpr (kM) return &sc.mean;
    else if constexpr (kW) return &sc.weighted;
    else return &sc.plain;
  }();
  const Grid& g = grid_of(F::kId);
  const int K = g.K;
  const double* val = g.value.data();
  const double* mid = g.mid.data();
  const double* inv_mid = g.inv_mid.data();
  const double t0 = double(amax) / double(F::kMax);
  const double t_hi = kM ? double(amax) / mid[1] * (1.0 + 1e-6) : 2.0 * t0;
  const double root = std::sqrt(obj_naive) * (1.0 + 1e-9);
  double t_lo = (double(amax) - root) / double(F::kMax);
  if constexpr (kW) {
    t_lo = 0.0;
    for (int i = 0; i < n; ++i) {
      if (w[i] > 0.0f) t_lo = std::max(t_lo, (std::fabs(double(x[i])) - root / std::sqrt(double(w[i]))) / double(F::kMax));
    }
  }
  if (!(t_lo > 0.0)) t_lo = 0.0;
  const double inv_t_hi = 1.0 / t_hi;
  const double inv_t_lo = t_lo > 0.0 ? 1.0 / t_lo : 0.0;

  // Event times use reciprocal products: a rounding difference can only reorder events that are
  // within an ulp of each other, and a misplaced event can only overestimate E (any assignment other
  // than nearest rounding has more error), never produce a value that is not achievable.
  if (buf.events.size() < size_t(n) * size_t(K)) buf.events.resize(size_t(n) * size_t(K));
  if (sc.kidx.size() < size_t(2 * n)) sc.kidx.resize(size_t(2 * n));
  int* k_hi = sc.kidx.data();
  int* k_lo = k_hi + n;
  // Grid index just above t_lo (all midpoints lie below a/t_lo when t_lo is 0) and the count of
  // midpoints at or below a/t_hi: the element's events are the midpoints in between.
  if (K <= 8) {
    // E2M1: branch-free counting across elements, which vectorizes.
    for (int i = 0; i < n; ++i) k_hi[i] = 0, k_lo[i] = 0;
    for (int k = 1; k <= K; ++k) {
      const double m = mid[k];
      for (int i = 0; i < n; ++i) {
        const double a = std::fabs(double(x[i]));
        k_hi[i] += (t_lo == 0.0 || m < a * inv_t_lo) ? 1 : 0;
        k_lo[i] += m <= a * inv_t_hi ? 1 : 0;
      }
    }
  } else {
    for (int i = 0; i < n; ++i) {
      const double a = std::fabs(double(x[i]));
      k_hi[i] = t_lo == 0.0 ? K : count_mids_near<F, true>(mid, K, a * inv_t_lo);
      k_lo[i] = count_mids_near<F, false>(mid, K, a * inv_t_hi);
    }
  }
  Event* ev = buf.events.data();
  size_t ne = 0;
  double A = 0.0, B = 0.0, C = 0.0, M = 0.0, P = 0.0;
  for (int i = 0; i < n; ++i) {
    const double a = std::fabs(double(x[i]));
    const double c = kW ? double(w[i]) : 1.0;
    const double ms = kM ? (x[i] < 0.0f ? -double(mu[i]) : double(mu[i])) : 0.0;
    if (a == 0.0 || (c == 0.0 && ms == 0.0)) continue;
    C += c * (a * a);
    const double q = val[k_hi[i]];
    A += c * (q * q);
    B += c * (a * q);
    if constexpr (kM) {
      M += ms * q;
      P += ms * a;
    }
    for (int k = k_hi[i]; k > k_lo[i]; --k) {
      ev[ne].t = a * inv_mid[k];
      if constexpr (kM) {
        ev[ne].dA = c * double(g.d_sq[k]);
        ev[ne].dB = c * (a * g.d_val[k]);
        ev[ne].dM = ms * g.d_val[k];
      } else if constexpr (kW) {
        ev[ne].dA = c * double(g.d_sq[k]);
        ev[ne].dB = c * (a * g.d_val[k]);
      } else {
        ev[ne].dA = g.d_sq[k];
        ev[ne].dB = float(a * g.d_val[k]);
      }
      ++ne;
    }
  }
  sc.count = ne;
  sort_events(buf, sc, t_lo, t_hi);
  ev = buf.events.data();

  double best_e = std::numeric_limits<double>::infinity(), best_t = t0;
  double t_prev = t_lo;
  for (size_t j = 0; j <= ne; ++j) {
    const double t_end = j < ne ? ev[j].t : t_hi;
    const double A2 = kM ? A + M * M : A, B2 = kM ? B + P * M : B, C2 = kM ? C + P * P : C;
    double lo = t_prev, hi = t_end;
    if constexpr (kM) {
      // The bias term jumps at a breakpoint (the rounding error changes sign there), so an
      // interval's end is only approached from inside: keep the candidate strictly inside, further
      // than the float32 scale's rounding (8 ulp) can move it.
      const double nudge = 4.8e-7 * hi;
      if (2.0 * nudge < hi - lo) lo += nudge, hi -= nudge;
      else lo = hi = 0.5 * (lo + hi);
    }
    double t = A2 > 0.0 ? B2 / A2 : lo;
    t = std::min(std::max(t, lo), hi);
    const double e = (A2 * t - 2.0 * B2) * t + C2;
    const bool better = t > 0.0 && e < best_e;  // branch-free: this is taken unpredictably
    best_t = better ? t : best_t;
    best_e = better ? e : best_e;
    t_prev = t_end;
    if (j < ne) {
      A += ev[j].dA;
      B += ev[j].dB;
      if constexpr (kM) M += ev[j].dM;
    }
  }
  return best_t;
}

template <class F>
inline double exact_decode_scale(const float* x, const float* w, const float* mu, int n, float amax, double obj_naive, Scratch& sc) {
  if (w && mu) return exact_decode_scale_impl<F, true, true>(x, w, mu, n, amax, obj_naive, sc);
  return w ? exact_decode_scale_impl<F, true>(x, w, nullptr, n, amax, obj_naive, sc)
           : exact_decode_scale_impl<F, false>(x, nullptr, nullptr, n, amax, obj_naive, sc);
}

// The specification's search over multipliers s in [0.1·s0, 2·s0]: 20 ternary rounds.
template <class F>
inline float ternary_multiplier(const float* x, const float* w, const float* mu, int n, float s0, double e0) {
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

// FP32 scales: naive s0 = max/absmax, then the chosen search; never worse than naive.
template <class F>
inline BlockResult search_fp32(const float* x, const float* w, const float* mu, int n, Search mode, Scratch& sc) {
  const float amax = block_absmax(x, n);
  if (amax == 0.0f) return {1.0f, 0, 0.0, 0.0, 0, 0.0, 0.0};
  const float s0 = F::kMax / amax;
  const BlockObj naive = eval_obj<F, false>(x, w, mu, n, s0);
  BlockResult r{s0, 0, naive.err, naive.err, naive.outliers, naive.obj, naive.obj};
  float s = s0;
  if (mode == Search::Exact) {
    const double t = exact_decode_scale<F>(x, w, mu, n, amax, naive.obj, sc);
    s = float(1.0 / t);
  } else if (mode == Search::Ternary) {
    s = ternary_multiplier<F>(x, w, mu, n, s0, naive.obj);
  }
  if (s != s0 && std::isfinite(s) && s > 0.0f) {
    const BlockObj e = eval_obj<F, false>(x, w, mu, n, s);
    if (e.obj < naive.obj) {
      r.scale = s;
      r.err_after = e.err;
      r.obj_after = e.obj;
      r.outliers = e.outliers;
    }
  }
  return r;
}

// The largest clipping penalty of any element at decode scale d: a lower bound of the objective.
template <class F>
inline double clip_bound(const float* x, const float* w, int n, float amax, double d) {
  const double limit = double(F::kMax) * d * (1.0 + 1e-6);
  if (w == nullptr) {
    const double clip = double(amax) - limit;
    return clip > 0.0 ? clip * clip : 0.0;
  }
  double b = 0.0;
  for (int i = 0; i < n; ++i) {
    const double clip = std::fabs(double(x[i])) - limit;
    if (clip > 0.0) b = std::max(b, double(w[i]) * clip * clip);
  }
  return b;
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
inline BlockResult search_nvfp4(const float* x, const float* w, const float* mu, int n, float g, Search mode) {
  const E4M3Table& tab = e4m3_table();
  const float amax = block_absmax(x, n);
  if (amax == 0.0f) return {1.0f / (tab.value[1] * g), 1, 0.0, 0.0, 0, 0.0, 0.0};
  uint8_t std_code = e4m3_encode_rne(amax / (6.0f * g));
  if (std_code == 0) std_code = 1;  // the smallest positive E4M3 value, 2^-9
  const float d_std = tab.value[std_code] * g;
  const BlockObj e_std = eval_obj<F, true>(x, w, mu, n, d_std);
  BlockResult r{1.0f / d_std, std_code, e_std.err, e_std.err, e_std.outliers, e_std.obj, e_std.obj};
  auto try_code = [&](int c) {
    const float d = tab.value[c] * g;
    if (!(d > 0.0f) || !std::isfinite(d)) return;
    const BlockObj e = eval_obj<F, true>(x, w, mu, n, d);
    if (e.obj < r.obj_after) {
      r.scale = 1.0f / d;
      r.code = uint8_t(c);
      r.err_after = e.err;
      r.obj_after = e.obj;
      r.outliers = e.outliers;
    }
  };
  if (mode == Search::Exact) {
    const double half_range = double(amax) / (double(F::kMax) * 0.5);
    // Without weights, codes below d_lo clip the largest element by more than the standard error.
    const double d_lo = w ? 0.0 : (double(amax) - std::sqrt(r.obj_after) * (1.0 + 1e-9)) / double(F::kMax);
    int c_lo = 1;
    if (d_lo > 0.0) c_lo = std::max(1, int(e4m3_encode_rne(float(d_lo / double(g)))) - 1);
    // With means the halving argument does not hold: every code up to the first that rounds the
    // whole block to zero (larger ones give the same objective) is a candidate.
    const double all_zero = double(amax) / grid_of(F::kId).mid[1];
    for (int c = c_lo; c <= 126; ++c) {
      const double d = double(tab.value[c]) * double(g);
      if (mu) {
        if (d > all_zero && double(tab.value[c - 1]) * double(g) > all_zero) break;
      } else if (d >= half_range) {
        if (c >= 16) break;  // codes from 16 up can all be halved exactly
        if (tab.halvable[c]) continue;
      }
      if (c == std_code) continue;
      if (clip_bound<F>(x, w, n, amax, d) > r.obj_after) continue;
      try_code(c);
    }
  } else if (mode == Search::Ternary) {
    const float s = ternary_multiplier<F>(x, w, mu, n, 1.0f / d_std, e_std.obj);
    int c = e4m3_encode_rne((1.0f / s) / g);
    if (c == 0) c = 1;
    if (c != std_code) try_code(c);
  }
  return r;
}

// Decode scale 2^k of a UE8M0 code k+127, computed exactly (2^-127 is a float subnormal).
inline float pow2_exact(int k) { return std::ldexp(1.0f, k); }

template <class F>
inline BlockResult search_mx(const float* x, const float* w, const float* mu, int n, Search mode) {
  const float amax = block_absmax(x, n);
  if (amax == 0.0f) return {1.0f, 127, 0.0, 0.0, 0, 0.0, 0.0};
  const int emax = mx_emax_elem(F::kId);
  const int k_std = std::min(127, std::max(-127, floor_log2(amax) - emax));
  const float d_std = pow2_exact(k_std);
  const BlockObj e_std = eval_obj<F, true>(x, w, mu, n, d_std);
  BlockResult r{1.0f / d_std, uint8_t(k_std + 127), e_std.err, e_std.err, e_std.outliers, e_std.obj, e_std.obj};
  auto try_k = [&](int k) {
    const float d = pow2_exact(k);
    const BlockObj e = eval_obj<F, true>(x, w, mu, n, d);
    if (e.obj < r.obj_after) {
      r.scale = 1.0f / d;
      r.code = uint8_t(k + 127);
      r.err_after = e.err;
      r.obj_after = e.obj;
      r.outliers = e.outliers;
    }
  };
  if (mode == Search::Exact) {
    const double half_range = double(amax) / (double(F::kMax) * 0.5);
    // Below: stop once the largest element's clipping alone exceeds the best error.
    // Above: the first power of two >= absmax/(max/2) dominates every larger one.
    // With means (no halving argument): up to the first power of two that rounds every element to zero.
    const double top = mu ? double(amax) / grid_of(F::kId).mid[1] : half_range;
    int k_top = k_std;
    while (k_top < 127 && (mu ? double(pow2_exact(k_top)) <= top : double(pow2_exact(k_top)) < top)) ++k_top;
    int k_bottom = k_std;
    while (k_bottom > -127) {
      if (clip_bound<F>(x, w, n, amax, double(pow2_exact(k_bottom - 1))) > r.obj_after) break;
      --k_bottom;
    }
    for (int k = k_bottom; k <= k_top; ++k) {
      if (k != k_std) try_k(k);
    }
  } else if (mode == Search::Ternary) {
    const float s = ternary_multiplier<F>(x, w, mu, n, 1.0f / d_std, e_std.obj);
    const int k = std::min(127, std::max(-127, int(std::lround(-std::log2(double(s))))));
    if (k != k_std) try_k(k);
  }
  return r;
}

}  // namespace CALIB_ISA_NS
}  // namespace calib
