// Element formats (E2M1, E4M3 "fn", E5M2, FP16) and scale encodings (E4M3, UE8M0).
// Rounding is round-to-nearest, ties to even mantissa, saturating at ±max: the contract in
// docs/numerics.md, checked bit for bit against PyTorch's casts in test/formats.test.ts.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "hd.h"

namespace calib {

CALIB_HD constexpr float pow2f(int e) {
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
// Always inlined: it is compiled into each instruction-set variant of the kernels and into the GPU's.
template <class F>
CALIB_HD float round_abs(float a) {
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

// The index of a grid value r >= 0 among the format's non-negative values (0 for zero, K for max):
// multiples of the subnormal spacing below the smallest normal, then 2^kMantBits per binade.
template <class F>
CALIB_HD int grid_index(float r) {
  constexpr float kMinNormal = pow2f(F::kEmin);
  if (r < kMinNormal) return int(r * pow2f(F::kMantBits - F::kEmin));
  const uint32_t u = float_to_bits(r);
  const int e = int((u >> 23) & 0xff) - 127;
  return ((e - F::kEmin + 1) << F::kMantBits) | int((u >> (23 - F::kMantBits)) & ((1u << F::kMantBits) - 1u));
}

// Midpoints mid[1..K] (ascending) below y >= 0, strictly or at or below: the index of y's nearest
// grid value in float, then corrected against the exact midpoints in double (at most a step or
// two). The same count as a binary search, without its unpredictable branches.
template <class F, bool kStrict>
CALIB_HD int count_mids_near(const double* mid, int K, double y) {
  int k = grid_index<F>(round_abs<F>(float(y < double(F::kMax) ? y : double(F::kMax))));
  while (k < K && (kStrict ? mid[k + 1] < y : mid[k + 1] <= y)) ++k;
  while (k > 0 && !(kStrict ? mid[k] < y : mid[k] <= y)) --k;
  return k;
}

template <class F>
inline float round_elem(float x) {
  if (std::isnan(x)) return x;
  return std::copysign(round_abs<F>(std::fabs(x)), x);
}

float round_elem(Elem e, float x);

// Storage types to float32 (exact): FP16 re-biased by multiplying by 2^112, which is exact for
// normals and subnormals alike; BF16 is the top half of a float32.
CALIB_HD float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;
  const float f = bits_to_float(em << 13) * 0x1p112f;
  const uint32_t finite = float_to_bits(f) | sign;
  const uint32_t special = sign | 0x7f800000u | (em & 0x3ffu) << 13;
  return bits_to_float(em >= 0x7c00u ? special : finite);
}
CALIB_HD float bf16_to_float(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }

// floor(log2(v)) for a positive finite float, exactly from its bits.
CALIB_HD int floor_log2(float v) {
  const uint32_t u = float_to_bits(v);
  const int e = int((u >> 23) & 0xff);
  if (e != 0) return e - 127;
  int k = -127;
  uint32_t m = u & 0x7fffff;
  while (!(m & 0x400000)) m <<= 1, --k;
  return k;
}
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
// v >= 0; RNE, saturating at 448.
CALIB_HD uint8_t e4m3_encode_rne(float v) {
  const float r = round_abs<E4M3>(v);
  if (r < pow2f(E4M3::kEmin)) return uint8_t(r * 512.0f);  // subnormal: multiples of 2^-9
  const uint32_t u = float_to_bits(r);
  const int exp = int((u >> 23) & 0xff) - 127 + 7;
  return uint8_t((exp << 3) | ((u >> 20) & 7));
}
bool e4m3_halvable(uint8_t code);  // value/2 is also an E4M3 value

// UE8M0 (MX): value 2^(code-127); code 255 is NaN.
float ue8m0_decode(uint8_t code);
// The type cast (round to the nearest power of two, ties to even exponent), as torch does it.
float e8m0_cast(float v);

}  // namespace calib
