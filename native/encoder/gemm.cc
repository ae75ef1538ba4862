// The encoder's GEMM and elementwise kernels, in a portable version and an AVX2/FMA version picked
// at run time. The AVX2 functions carry a target attribute instead of living in a file compiled
// with -mavx2, so the build needs no per-file flags; nothing here runs AVX2 code on a CPU without it.
#include "gemm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ENC_X86 1
#define ENC_AVX2 __attribute__((target("avx2,fma")))
#else
#define ENC_X86 0
#endif

namespace enc {

namespace {

constexpr int kRows = 6;         // rows of A per micro-kernel call
constexpr int64_t kDepth = 256;  // k block: a 256 × 16 slice of a panel (16 KiB) stays in L1

std::atomic<bool> g_allow_simd{true};

bool cpu_avx2() {
#if ENC_X86
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

inline bool use_avx2() { return g_allow_simd.load(std::memory_order_relaxed) && cpu_avx2(); }

// A micro-kernel computes a R × kPanel tile of C over kc steps of k. Every element is one
// accumulator running through k in order: the first k block starts from the bias (or zero),
// later blocks continue from C.
using Kernel = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, const float* init, bool load_c);

// The portable kernel, in GCC/Clang vector extensions (SSE2 on x86-64, NEON on ARM). A is a
// packed panel: for every k, kRows consecutive values (one per row; padding rows are zero).
typedef float v4f __attribute__((vector_size(16)));

inline v4f load4(const float* p) {
  v4f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store4(float* p, v4f v) { std::memcpy(p, &v, sizeof v); }

void kernel_base(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, const float* init, bool load_c) {
  // Two passes of 8 columns keep the accumulators (12) within SSE's 16 registers.
  for (int half = 0; half < 2; ++half) {
    const int j0 = half * 8;
    v4f acc[kRows][2];
    for (int r = 0; r < kRows; ++r)
      for (int q = 0; q < 2; ++q) {
        if (load_c) acc[r][q] = load4(c + r * ldc + j0 + 4 * q);
        else if (init) acc[r][q] = load4(init + j0 + 4 * q);
        else acc[r][q] = v4f{0.0f, 0.0f, 0.0f, 0.0f};
      }
    for (int64_t k = 0; k < kc; ++k) {
      const v4f b0 = load4(b + k * kPanel + j0), b1 = load4(b + k * kPanel + j0 + 4);
      const float* ak = a + k * kRows;
      for (int r = 0; r < kRows; ++r) {
        const v4f av = v4f{ak[r], ak[r], ak[r], ak[r]};
        acc[r][0] += av * b0;
        acc[r][1] += av * b1;
      }
    }
    for (int r = 0; r < kRows; ++r)
      for (int q = 0; q < 2; ++q) store4(c + r * ldc + j0 + 4 * q, acc[r][q]);
  }
}

#if ENC_X86
// Twelve named accumulators: GCC keeps them in registers (an array of __m256 gets spilled to the
// stack on every iteration).
ENC_AVX2 void kernel_avx2(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, const float* init, bool load_c) {
  __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
#define ENC_INIT(r, lo, hi)                                                       \
  if (load_c) {                                                                   \
    lo = _mm256_loadu_ps(c + r * ldc);                                            \
    hi = _mm256_loadu_ps(c + r * ldc + 8);                                        \
  } else if (init) {                                                              \
    lo = _mm256_loadu_ps(init);                                                   \
    hi = _mm256_loadu_ps(init + 8);                                               \
  } else {                                                                        \
    lo = _mm256_setzero_ps();                                                     \
    hi = _mm256_setzero_ps();                                                     \
  }
  ENC_INIT(0, c00, c01)
  ENC_INIT(1, c10, c11)
  ENC_INIT(2, c20, c21)
  ENC_INIT(3, c30, c31)
  ENC_INIT(4, c40, c41)
  ENC_INIT(5, c50, c51)
#undef ENC_INIT
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b + k * kPanel);
    const __m256 b1 = _mm256_loadu_ps(b + k * kPanel + 8);
    const float* ak = a + k * kRows;
    __m256 av;
#define ENC_STEP(r, lo, hi)              \
  av = _mm256_broadcast_ss(ak + r);      \
  lo = _mm256_fmadd_ps(av, b0, lo);      \
  hi = _mm256_fmadd_ps(av, b1, hi);
    ENC_STEP(0, c00, c01)
    ENC_STEP(1, c10, c11)
    ENC_STEP(2, c20, c21)
    ENC_STEP(3, c30, c31)
    ENC_STEP(4, c40, c41)
    ENC_STEP(5, c50, c51)
#undef ENC_STEP
  }
#define ENC_STORE(r, lo, hi)             \
  _mm256_storeu_ps(c + r * ldc, lo);     \
  _mm256_storeu_ps(c + r * ldc + 8, hi);
  ENC_STORE(0, c00, c01)
  ENC_STORE(1, c10, c11)
  ENC_STORE(2, c20, c21)
  ENC_STORE(3, c30, c31)
  ENC_STORE(4, c40, c41)
  ENC_STORE(5, c50, c51)
#undef ENC_STORE
}
#endif

// erf as a rational function on [-4, 4] (±1 outside, where float erf is ±1): the same
// approximation XLA uses for float32, within 4.2e-7 of the true value.
constexpr float kErfA[7] = {-1.60960333262415e-02f, -2.95459980854025e-03f, -7.34990630326855e-04f, -5.69250639462346e-05f,
                            -2.10102402082508e-06f, 2.77068142495902e-08f,  -2.72614225801306e-10f};
constexpr float kErfB[5] = {-1.42647390514189e-02f, -7.37332916720468e-03f, -1.68282697438203e-03f, -2.13374055278905e-04f,
                            -1.45660718464996e-05f};
constexpr float kInvSqrt2 = 0.70710678118654752f;

inline float erf_approx(float v) {
  const float x = std::max(-4.0f, std::min(4.0f, v));
  const float x2 = x * x;
  float p = x2 * kErfA[6] + kErfA[5];
  p = x2 * p + kErfA[4];
  p = x2 * p + kErfA[3];
  p = x2 * p + kErfA[2];
  p = x2 * p + kErfA[1];
  p = x2 * p + kErfA[0];
  p = x * p;
  float q = x2 * kErfB[4] + kErfB[3];
  q = x2 * q + kErfB[2];
  q = x2 * q + kErfB[1];
  q = x2 * q + kErfB[0];
  return p / q;
}

void gelu_erf_base(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + erf_approx(x[i] * kInvSqrt2));
}

#if ENC_X86
ENC_AVX2 void gelu_erf_avx2(float* xs, int64_t n) {
  const __m256 four = _mm256_set1_ps(4.0f), mfour = _mm256_set1_ps(-4.0f), half = _mm256_set1_ps(0.5f),
               one = _mm256_set1_ps(1.0f), rs2 = _mm256_set1_ps(kInvSqrt2);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(xs + i);
    const __m256 x = _mm256_max_ps(mfour, _mm256_min_ps(four, _mm256_mul_ps(v, rs2)));
    const __m256 x2 = _mm256_mul_ps(x, x);
    __m256 p = _mm256_fmadd_ps(x2, _mm256_set1_ps(kErfA[6]), _mm256_set1_ps(kErfA[5]));
    for (int k = 4; k >= 0; --k) p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(kErfA[k]));
    p = _mm256_mul_ps(x, p);
    __m256 q = _mm256_fmadd_ps(x2, _mm256_set1_ps(kErfB[4]), _mm256_set1_ps(kErfB[3]));
    for (int k = 2; k >= 0; --k) q = _mm256_fmadd_ps(x2, q, _mm256_set1_ps(kErfB[k]));
    const __m256 e = _mm256_div_ps(p, q);
    _mm256_storeu_ps(xs + i, _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, e)));
  }
  gelu_erf_base(xs + i, n - i);
}

ENC_AVX2 float dot_avx2(const float* a, const float* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  float s = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

ENC_AVX2 void axpy_avx2(float alpha, const float* x, float* y, int64_t n) {
  const __m256 al = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(al, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += alpha * x[i];
}
#endif

float dot_base(const float* a, const float* b, int64_t n) {
  float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) lanes[l] += a[i + l] * b[i + l];
  float s = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy_base(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

}  // namespace

void PackedLinear::init(int64_t out_features, int64_t in_features) {
  out = out_features;
  in = in_features;
  const int64_t np = (out + kPanel - 1) / kPanel;
  panels.assign(size_t(np * in * kPanel), 0.0f);
  bias.assign(size_t(np * kPanel), 0.0f);
}

void PackedLinear::set_bias(const float* b) { std::memcpy(bias.data(), b, size_t(out) * sizeof(float)); }

void PackedLinear::pack(const float* w) {
  const int64_t np = (out + kPanel - 1) / kPanel;
  for (int64_t p = 0; p < np; ++p) {
    float* dst = panels.data() + p * in * kPanel;
    const int64_t rows = std::min<int64_t>(kPanel, out - p * kPanel);
    for (int64_t j = 0; j < rows; ++j) {
      const float* src = w + (p * kPanel + j) * in;
      for (int64_t k = 0; k < in; ++k) dst[k * kPanel + j] = src[k];
    }
  }
}

void linear(const float* a, int64_t m, int64_t lda, const PackedLinear& w, float* c, int64_t ldc) {
  const int64_t K = w.in, N = w.out, np = (N + kPanel - 1) / kPanel;
  if (m <= 0 || N <= 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < m; ++i) std::memcpy(c + i * ldc, w.bias.data(), size_t(N) * sizeof(float));
    return;
  }
  Kernel kern = kernel_base;
#if ENC_X86
  if (use_avx2()) kern = kernel_avx2;
#endif
  // A's k block, packed in panels of kRows rows (k-major within a panel, padding rows zero), so the
  // kernel broadcasts from one contiguous stream. One buffer per thread, reused across calls.
  thread_local std::vector<float> apack;
  const int64_t mp = (m + kRows - 1) / kRows;
  apack.resize(size_t(mp * kRows * std::min(kDepth, K)));
  float tile[kRows * kPanel];
  for (int64_t k0 = 0; k0 < K; k0 += kDepth) {
    const int64_t kc = std::min(kDepth, K - k0);
    const bool first = k0 == 0;
    for (int64_t ip = 0; ip < mp; ++ip) {
      float* dst = apack.data() + ip * kRows * kc;
      for (int r = 0; r < kRows; ++r) {
        const int64_t i = ip * kRows + r;
        if (i < m) {
          const float* src = a + i * lda + k0;
          for (int64_t k = 0; k < kc; ++k) dst[k * kRows + r] = src[k];
        } else {
          for (int64_t k = 0; k < kc; ++k) dst[k * kRows + r] = 0.0f;
        }
      }
    }
    for (int64_t p = 0; p < np; ++p) {
      const float* bp = w.panels.data() + (p * K + k0) * kPanel;
      const int64_t n0 = p * kPanel, nw = std::min<int64_t>(kPanel, N - n0);
      const float* init = first ? w.bias.data() + n0 : nullptr;
      for (int64_t ip = 0; ip < mp; ++ip) {
        const int64_t i0 = ip * kRows;
        const int r = int(std::min<int64_t>(kRows, m - i0));
        const float* ap = apack.data() + ip * kRows * kc;
        float* cp = c + i0 * ldc + n0;
        if (nw == kPanel && r == kRows) {
          kern(kc, ap, bp, cp, ldc, init, !first);
        } else {
          // An edge tile (fewer rows, or the last, narrower panel) goes through a full tile: the
          // padding is zero weights / zero rows, dropped afterwards; the arithmetic is the same.
          if (!first)
            for (int rr = 0; rr < kRows; ++rr) {
              if (rr < r) std::memcpy(tile + rr * kPanel, cp + rr * ldc, size_t(nw) * sizeof(float));
              std::fill(tile + rr * kPanel + (rr < r ? nw : 0), tile + (rr + 1) * kPanel, 0.0f);
            }
          kern(kc, ap, bp, tile, kPanel, init, !first);
          for (int rr = 0; rr < r; ++rr) std::memcpy(cp + rr * ldc, tile + rr * kPanel, size_t(nw) * sizeof(float));
        }
      }
    }
  }
}

const char* gemm_isa() { return use_avx2() ? "avx2" : "baseline"; }

void gemm_allow_simd(bool allow) { g_allow_simd.store(allow, std::memory_order_relaxed); }

void gelu_erf_inplace(float* x, int64_t n) {
#if ENC_X86
  if (use_avx2()) return gelu_erf_avx2(x, n);
#endif
  gelu_erf_base(x, n);
}

void gelu_tanh_inplace(float* x, int64_t n) {
  // The "gelu_new" / "gelu_pytorch_tanh" form: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
  const float k = 0.7978845608028654f;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::tanh(k * (v + 0.044715f * v * v * v)));
  }
}

float dot(const float* a, const float* b, int64_t n) {
#if ENC_X86
  if (use_avx2()) return dot_avx2(a, b, n);
#endif
  return dot_base(a, b, n);
}

void axpy(float alpha, const float* x, float* y, int64_t n) {
#if ENC_X86
  if (use_avx2()) return axpy_avx2(alpha, x, y, n);
#endif
  axpy_base(alpha, x, y, n);
}

}  // namespace enc
