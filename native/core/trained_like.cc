#include "trained_like.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "parallel.h"
#include "tensor_calibrate.h"  // CalibError

// The row kernel is written once, over a scalar type and over GCC/Clang vectors of 8 lanes, and
// the vector form is compiled twice: for the baseline instruction set and, on x86-64, for AVX2
// (picked at run time). It uses only IEEE-exact operations (+ − × ÷ √, integer ops, conversions)
// and its own polynomials for log and sin/cos — never libm, never FMA (the project builds with
// -ffp-contract=off) — so every form, on every platform, gives the same bits.
// (Build with -DCALIB_TL_SCALAR to check the one-lane form against the vector forms.)
#if defined(__GNUC__) && !defined(CALIB_TL_SCALAR)
#define TL_VECTOR 1
#define TL_INLINE inline __attribute__((always_inline))
#else
#define TL_VECTOR 0
#define TL_INLINE inline
#endif
#if TL_VECTOR
// Vectors only pass between always-inlined functions of this file, never across a call: the
// AVX2 and baseline kernels pass them differently, so a real call between them would be wrong.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
#if TL_VECTOR && (defined(__x86_64__) || defined(__i386__))
#define TL_X86 1
#include <immintrin.h>
#else
#define TL_X86 0
#endif

namespace calib {

namespace {

constexpr int kLanes = 8;  // independent xoshiro128** streams per row; 16 values per step

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

struct SplitMix {
  uint64_t x;
  uint64_t next() { return mix64(x += 0x9E3779B97F4A7C15ull); }
};

// ---- the two arithmetic types: one lane (float) or 8 lanes (GCC vector extension) ----------

TL_INLINE uint32_t as_u(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}
TL_INLINE float as_f(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
TL_INLINE float to_f(int32_t i) { return float(i); }
TL_INLINE int32_t trunc_i(float x) { return int32_t(x); }
TL_INLINE float sel(bool m, float a, float b) { return m ? a : b; }
TL_INLINE int32_t sel(bool m, int32_t a, int32_t b) { return m ? a : b; }
TL_INLINE uint32_t sel(bool m, uint32_t a, uint32_t b) { return m ? a : b; }

#if TL_VECTOR
typedef float v8f __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint16_t v8h __attribute__((vector_size(16)));
TL_INLINE v8u as_u(const v8f& x) { return (v8u)x; }
TL_INLINE v8f as_f(const v8u& u) { return (v8f)u; }
TL_INLINE v8f to_f(const v8i& i) { return __builtin_convertvector(i, v8f); }
TL_INLINE v8i trunc_i(const v8f& x) { return __builtin_convertvector(x, v8i); }
TL_INLINE v8f sel(const v8i& m, const v8f& a, const v8f& b) { return (v8f)(((v8i)a & m) | ((v8i)b & ~m)); }
TL_INLINE v8i sel(const v8i& m, const v8i& a, const v8i& b) { return (a & m) | (b & ~m); }
TL_INLINE v8u sel(const v8i& m, const v8u& a, const v8u& b) { return (a & (v8u)m) | (b & ~(v8u)m); }
#endif

// Uniform in (0, 1): (2k + 1) · 2⁻²⁴ for the top 23 bits k. Never 0 or 1, so logs stay finite
// and a product of two stays below 1.
template <class F, class U>
TL_INLINE F unit(const U& x) {
  typedef decltype(trunc_i(F())) I;
  return to_f(I(((x >> 9) << 1) | 1u)) * 5.9604644775390625e-8f;
}

// Natural log of a positive normal float (Cephes' logf polynomial; about 1 ulp).
template <class F>
TL_INLINE F ln(const F& x) {
  typedef decltype(as_u(F())) U;
  typedef decltype(trunc_i(F())) I;
  const U i = as_u(x);
  I e = I((i >> 23) & 0xffu) - 127;
  F m = as_f(U((i & 0x7fffffu) | 0x3f800000u));  // [1, 2)
  const auto big = m > 1.41421356f;
  m = sel(big, m * 0.5f, m);
  e = sel(big, I(e + 1), e);
  const F f = m - 1.0f;
  const F z = f * f;
  F y = f * 7.0376836292e-2f;
  y = (y - 1.1514610310e-1f) * f;
  y = (y + 1.1676998740e-1f) * f;
  y = (y - 1.2420140846e-1f) * f;
  y = (y + 1.4249322787e-1f) * f;
  y = (y - 1.6668057665e-1f) * f;
  y = (y + 2.0000714765e-1f) * f;
  y = (y - 2.4999993993e-1f) * f;
  y = (y + 3.3333331174e-1f) * f;
  y = y * z;
  const F fe = to_f(e);
  y = y + fe * -2.12194440e-4f;
  y = y - z * 0.5f;
  return (f + y) + fe * 0.693359375f;
}

// cos(2πu) and sin(2πu) for u in (0, 1): the quadrant's centre angle (q + ½)·π/2, whose cos and
// sin are ±√½, plus Taylor polynomials on |a| ≤ π/4.
template <class F>
TL_INLINE void cossin2pi(const F& u, F* c, F* s) {
  typedef decltype(trunc_i(F())) I;
  const F u4 = u * 4.0f;
  const I q = trunc_i(u4);  // 0..3
  const F a = ((u4 - to_f(q)) - 0.5f) * 1.57079632679f;
  const F a2 = a * a;
  F sa = a2 * -1.98412698e-4f;
  sa = (sa + 8.33333333e-3f) * a2;
  sa = (sa - 1.66666667e-1f) * a2;
  sa = sa * a + a;
  F ca = a2 * 2.48015873e-5f;
  ca = (ca - 1.38888889e-3f) * a2;
  ca = (ca + 4.16666667e-2f) * a2;
  ca = (ca - 0.5f) * a2;
  ca = ca + 1.0f;
  const F h = F() + 0.70710678118f;
  const F cc = sel(q == 0, h, sel(q == 3, h, -h));
  const F sc = sel(q < 2, h, -h);
  *c = cc * ca - sc * sa;
  *s = sc * ca + cc * sa;
}

// float32 → half bits, as src/util/trained_like.ts toFloat16Bits, branch-free.
template <class F>
TL_INLINE decltype(as_u(F())) half_bits(const F& x) {
  typedef decltype(as_u(F())) U;
  U f = as_u(x);
  const U sign = f & 0x80000000u;
  f ^= sign;
  // Inf or NaN (and every finite value ≥ 65536, which rounds to inf); NaN stays a quiet NaN.
  const U special = sel(f > 0x7f800000u, U() + 0x7e00u, U() + 0x7c00u);
  // Subnormal or zero: adding 0.5 puts the 10 result bits at the bottom, rounded to nearest even.
  const U sub = as_u(F(as_f(f) + 0.5f)) - 0x3f000000u;
  // Normal: rebias the exponent, round to nearest even on the 13 dropped bits.
  const U norm = (f + 0xc8000fffu + ((f >> 13) & 1u)) >> 13;
  return sel(f >= 0x47800000u, special, sel(f < 0x38800000u, sub, norm)) | (sign >> 16);
}

TL_INLINE float sqrt_lanes(float x) { return std::sqrt(x); }

#if TL_VECTOR
// sqrt of 8 lanes, correctly rounded in every form. SSE's sqrtps on two halves also serves the
// AVX2 kernel: an AVX intrinsic could not be inlined through these target-neutral helpers.
TL_INLINE v8f sqrt_lanes(const v8f& x) {
#if TL_X86
  const __m128 lo = _mm_sqrt_ps(__m128{x[0], x[1], x[2], x[3]});
  const __m128 hi = _mm_sqrt_ps(__m128{x[4], x[5], x[6], x[7]});
  return v8f{lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]};
#else
  v8f r;
  for (int l = 0; l < 8; ++l) r[l] = std::sqrt(x[l]);
  return r;
#endif
}
#endif

// Row state: xoshiro128** words s0..s3 for each of the 8 lanes.
struct RowState {
  uint32_t s[4][kLanes];
};

// One lane group's step: 6 draws per lane → a Box–Muller pair and two χ²₄ = −2 ln(U₁U₂) →
// two Student-t values (t = z / √(χ²₄/4)).
template <class F, class U>
TL_INLINE void lane_step(U& s0, U& s1, U& s2, U& s3, F* t0, F* t1) {
  U r[6];
  for (int k = 0; k < 6; ++k) {
    const U m = s1 * 5u;
    r[k] = ((m << 7) | (m >> 25)) * 9u;
    const U t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = (s3 << 11) | (s3 >> 21);
  }
  const F radius = sqrt_lanes(F(ln(unit<F>(r[0])) * -2.0f));
  F c, s;
  cossin2pi(unit<F>(r[1]), &c, &s);
  const F chi_a = ln(F(unit<F>(r[2]) * unit<F>(r[3]))) * -2.0f;
  const F chi_b = ln(F(unit<F>(r[4]) * unit<F>(r[5]))) * -2.0f;
  *t0 = (radius * c) / sqrt_lanes(F(chi_a * 0.25f));
  *t1 = (radius * s) / sqrt_lanes(F(chi_b * 0.25f));
}

template <bool F16>
TL_INLINE void store(float x, void* out, int64_t i) {
  if (F16) static_cast<uint16_t*>(out)[i] = uint16_t(half_bits(x));
  else static_cast<float*>(out)[i] = x;
}

// Values c0..c0+15 of a row are the 8 cosine-lane values, then the 8 sine-lane values.
template <int ISA, bool F16>
TL_INLINE void row_kernel(RowState& st, const float* gain, int64_t cols, float rs, float offset, void* out) {
#if TL_VECTOR
  v8u s0, s1, s2, s3;
  std::memcpy(&s0, st.s[0], 32);
  std::memcpy(&s1, st.s[1], 32);
  std::memcpy(&s2, st.s[2], 32);
  std::memcpy(&s3, st.s[3], 32);
  for (int64_t c0 = 0; c0 < cols; c0 += 2 * kLanes) {
    v8f t[2];
    lane_step<v8f, v8u>(s0, s1, s2, s3, &t[0], &t[1]);
    if (cols - c0 >= 2 * kLanes) {
      for (int h = 0; h < 2; ++h) {
        v8f g;
        std::memcpy(&g, gain + c0 + h * kLanes, 32);
        const v8f x = (t[h] * rs) * g + offset;
        if (F16) {
          const v8h b = __builtin_convertvector(half_bits(x), v8h);
          std::memcpy(static_cast<uint16_t*>(out) + c0 + h * kLanes, &b, 16);
        } else {
          std::memcpy(static_cast<float*>(out) + c0 + h * kLanes, &x, 32);
        }
      }
    } else {
      float v[2 * kLanes];
      std::memcpy(v, t, sizeof v);
      for (int64_t k = 0; k < cols - c0; ++k) store<F16>((v[k] * rs) * gain[c0 + k] + offset, out, c0 + k);
    }
  }
#else
  uint32_t(&s)[4][kLanes] = st.s;
  for (int64_t c0 = 0; c0 < cols; c0 += 2 * kLanes) {
    float v[2 * kLanes];
    for (int l = 0; l < kLanes; ++l) lane_step<float, uint32_t>(s[0][l], s[1][l], s[2][l], s[3][l], &v[l], &v[kLanes + l]);
    for (int64_t k = 0; k < std::min<int64_t>(2 * kLanes, cols - c0); ++k) store<F16>((v[k] * rs) * gain[c0 + k] + offset, out, c0 + k);
  }
#endif
}

void row_baseline(RowState& st, const float* gain, int64_t cols, float rs, float offset, bool f16, void* out) {
  if (f16) row_kernel<1, true>(st, gain, cols, rs, offset, out);
  else row_kernel<1, false>(st, gain, cols, rs, offset, out);
}

#if TL_X86
__attribute__((target("avx2"))) void row_avx2(RowState& st, const float* gain, int64_t cols, float rs, float offset, bool f16,
                                               void* out) {
  if (f16) row_kernel<2, true>(st, gain, cols, rs, offset, out);
  else row_kernel<2, false>(st, gain, cols, rs, offset, out);
}

bool have_avx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}
#endif

// exp(x) for the per-row scale, |x| small: 2^k · e^r with |r| ≤ ln2/2 and a degree-7 Taylor.
float row_exp(float x) {
  const float k = float(int32_t(x * 1.44269504f + (x >= 0.0f ? 0.5f : -0.5f)));
  const float r = (x - k * 0.693359375f) - k * -2.12194440e-4f;
  float p = 1.98412698e-4f;
  p = p * r + 1.38888889e-3f;
  p = p * r + 8.33333333e-3f;
  p = p * r + 4.16666667e-2f;
  p = p * r + 1.66666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t ki = std::max(-126, std::min(127, int32_t(k)));
  return p * as_f(uint32_t(ki + 127) << 23);
}

// Everything a row needs, drawn from its own stream: the row scale, then the 8 lane states.
float seed_row(uint64_t seed, int64_t row, float std_, float spread, RowState& st) {
  SplitMix sm{mix64(mix64(seed ^ 0x5851F42D4C957F2Dull) + uint64_t(row))};
  const uint64_t w = sm.next();
  const float u1 = unit<float>(uint32_t(w)), u2 = unit<float>(uint32_t(w >> 32));
  float c, s;
  cossin2pi(u2, &c, &s);
  const float n = std::sqrt(-2.0f * ln(u1)) * c;
  for (int l = 0; l < kLanes; ++l) {
    uint64_t a = sm.next(), b = sm.next();
    if ((a | b) == 0) a = 1;  // xoshiro's one forbidden state
    st.s[0][l] = uint32_t(a);
    st.s[1][l] = uint32_t(a >> 32);
    st.s[2][l] = uint32_t(b);
    st.s[3][l] = uint32_t(b >> 32);
  }
  return row_exp(spread * n) * std_;
}


}  // namespace

std::vector<int64_t> trained_like_outlier_columns(uint64_t seed, int64_t cols, double fraction) {
  std::vector<int64_t> picked;
  if (cols <= 0 || !(fraction > 0.0)) return picked;
  const int64_t n = std::min<int64_t>(cols, int64_t(std::floor(double(cols) * std::min(fraction, 1.0))));
  if (n <= 0) return picked;
  // Partial Fisher–Yates: n distinct columns, from a stream of their own.
  std::vector<int64_t> idx(static_cast<size_t>(cols));
  for (int64_t i = 0; i < cols; ++i) idx[size_t(i)] = i;
  SplitMix sm{mix64(seed ^ 0xA0761D6478BD642Full) ^ uint64_t(cols)};
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t span = uint64_t(cols - i);
    const int64_t j = i + int64_t(sm.next() % span);
    std::swap(idx[size_t(i)], idx[size_t(j)]);
  }
  picked.assign(idx.begin(), idx.begin() + n);
  std::sort(picked.begin(), picked.end());
  return picked;
}

uint16_t f32_to_f16_rne(float x) { return uint16_t(half_bits(x)); }

void check_trained_like(const TrainedLikeParams& p) {
  auto bad = [](const std::string& m) { throw CalibError("E_BAD_ARGUMENT", "generateTrainedLike: " + m); };
  if (p.rows <= 0 || p.cols <= 0) bad("rows and cols must be positive");
  if (p.rows > (int64_t(1) << 40) / p.cols) bad("rows × cols is too large");
  if (p.row_begin < 0 || p.row_count < 0 || p.row_begin > p.rows || p.row_count > p.rows - p.row_begin)
    bad("rowStart/rowCount " + std::to_string(p.row_begin) + "+" + std::to_string(p.row_count) + " is outside the " +
        std::to_string(p.rows) + " rows");
  if (p.seed >= (uint64_t(1) << 53)) bad("seed must be below 2^53");
  if (!std::isfinite(p.std) || p.std < 0.0f) bad("std must be a finite non-negative number");
  if (!std::isfinite(p.row_spread) || p.row_spread < 0.0f || p.row_spread > 4.0f) bad("rowSpread must be in [0, 4]");
  if (!std::isfinite(p.offset)) bad("offset must be finite");
  if (!std::isfinite(p.outlier_fraction) || p.outlier_fraction < 0.0 || p.outlier_fraction > 1.0)
    bad("outlierFraction must be in [0, 1]");
  if (!std::isfinite(p.outlier_gain) || p.outlier_gain < 0.0f) bad("outlierGain must be a finite non-negative number");
}

uint64_t trained_like_bytes(const TrainedLikeParams& p) { return uint64_t(p.row_count) * uint64_t(p.cols) * (p.f16 ? 2u : 4u); }

void generate_trained_like(const TrainedLikeParams& p, void* out) {
  check_trained_like(p);
  if (p.row_count == 0) return;
  std::vector<float> gain(static_cast<size_t>(p.cols), 1.0f);
  for (int64_t c : trained_like_outlier_columns(p.seed, p.cols, p.outlier_fraction)) gain[size_t(c)] = p.outlier_gain;

  // Rows are independent, so any split gives the same bytes; ~64K values per unit of work.
  const int64_t rows_per_unit = std::max<int64_t>(1, (int64_t(1) << 16) / p.cols);
  const int64_t units = (p.row_count + rows_per_unit - 1) / rows_per_unit;
  const size_t esize = p.f16 ? 2 : 4;
#if TL_X86
  const bool avx2 = p.simd && have_avx2();
#endif
  parallel_for(units, thread_count(p.threads, units), [&](int64_t u) {
    const int64_t r0 = u * rows_per_unit, r1 = std::min(p.row_count, r0 + rows_per_unit);
    for (int64_t r = r0; r < r1; ++r) {
      RowState st;
      const float rs = seed_row(p.seed, p.row_begin + r, p.std, p.row_spread, st);
      void* row_out = static_cast<uint8_t*>(out) + size_t(r) * size_t(p.cols) * esize;
#if TL_X86
      if (avx2) {
        row_avx2(st, gain.data(), p.cols, rs, p.offset, p.f16, row_out);
        continue;
      }
#endif
      row_baseline(st, gain.data(), p.cols, rs, p.offset, p.f16, row_out);
    }
  });
}

}  // namespace calib
