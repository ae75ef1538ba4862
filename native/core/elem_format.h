// Element formats (E2M1, E4M3 "fn", E5M2, FP16) and scale encodings (E4M3, UE8M0).
// Rounding is round-to-nearest, ties to even mantissa, saturating at ±max: the contract in
// docs/numerics.md, checked bit for bit against PyTorch's casts in test/formats.test.ts.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace calib {

__attribute__((always_inline)) inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
__attribute__((always_inline)) inline uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

constexpr float pow2f(int e) {
  float r = 1.0f;
  if (e >= 0) {
    for (int i = 0; i < e; ++i) r *= 2.0f;
  } else {
    for (int i = 0; i < -e; ++i) r *= 0.5f;
  }
  return r;
}

enum class Elem : int { E2M1 = 0, E4M3 = 1, E5M2 = 2, FP16 = 3 };

// Traits: mantissa bits, smallest normal exponent, largest finite value, element storage bits.
struct E2M1 {
  static constexpr int kMantBits = 1, kEmin = 0, kBits = 4;
  static constexpr float kMax = 6.0f;
  static constexpr Elem kId = Elem::E2M1;
};
struct E4M3 {
  static constexpr int kMantBits = 3, kEmin = -6, kBits = 8;
  static constexpr float kMax = 448.0f;
  static constexpr Elem kId = Elem::E4M3;
};
struct E5M2 {
  static constexpr int kMantBits = 2, kEmin = -14, kBits = 8;
  static constexpr float kMax = 57344.0f;
  static constexpr Elem kId = Elem::E5M2;
};
struct FP16 {
  static constexpr int kMantBits = 10, kEmin = -14, kBits = 16;
  static constexpr float kMax = 65504.0f;
  static constexpr Elem kId = Elem::FP16;
};

// Rounds a > = 0 (finite or +inf) to the format: branch-free so that loops over it vectorize.
// Subnormal range: adding a constant whose ulp is the subnormal spacing makes the FPU do the RNE.
// Normal range: RNE on the float's bit pattern at the format's mantissa width.
// Always inlined: it is compiled into each instruction-set variant of the kernels.
template <class F>
__attribute__((always_inline)) inline float round_abs(float a) {
  constexpr float kMinNormal = pow2f(F::kEmin);
  constexpr float kMagic = pow2f(F::kEmin - F::kMantBits + 23);
  constexpr int kShift = 23 - F::kMantBits;
  constexpr uint32_t kHalfMinus1 = (1u << (kShift - 1)) - 1u;
  constexpr uint32_t kMask = ~((1u << kShift) - 1u);
  a = a < F::kMax ? a : F::kMax;
  const float sub = (a + kMagic) - kMagic;
  uint32_t u = float_to_bits(a);
  u = (u + kHalfMinus1 + ((u >> kShift) & 1u)) & kMask;
  const float nrm = bits_to_float(u);
  return a < kMinNormal ? sub : nrm;
}

template <class F>
inline float round_elem(float x) {
  if (std::isnan(x)) return x;
  return std::copysign(round_abs<F>(std::fabs(x)), x);
}

float round_elem(Elem e, float x);
float elem_max(Elem e);
int elem_bits(Elem e);

// The non-negative values of a format in ascending order and the midpoints between neighbours:
// the breakpoints where rounding changes, used by the exact scale search.
struct Grid {
  std::vector<double> value;  // value[0] = 0 ... value[K] = max
  std::vector<double> mid;    // mid[k] between value[k-1] and value[k], k = 1..K; mid[0] unused
  std::vector<double> inv_mid;  // 1 / mid[k]
  std::vector<float> d_sq;      // value[k-1]² − value[k]² (exact in float for these formats)
  std::vector<double> d_val;    // value[k-1] − value[k]
  int K = 0;
};
const Grid& grid_of(Elem e);

// E4M3 as a scale encoding (NVFP4): codes 0..126 are the non-negative finite values.
float e4m3_decode(uint8_t code);
uint8_t e4m3_encode_rne(float v);  // v >= 0; RNE, saturating at 448
bool e4m3_halvable(uint8_t code);  // value/2 is also an E4M3 value

// UE8M0 (MX): value 2^(code-127); code 255 is NaN.
float ue8m0_decode(uint8_t code);
// The type cast (round to the nearest power of two, ties to even exponent), as torch does it.
float e8m0_cast(float v);

}  // namespace calib
