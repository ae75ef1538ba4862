#include "elem_format.h"

#include <limits>

namespace calib {

float round_elem(Elem e, float x) {
  switch (e) {
    case Elem::E2M1: return round_elem<E2M1>(x);
    case Elem::E4M3: return round_elem<E4M3>(x);
    case Elem::E5M2: return round_elem<E5M2>(x);
    case Elem::FP16: return round_elem<FP16>(x);
  }
  return x;
}

float elem_max(Elem e) {
  switch (e) {
    case Elem::E2M1: return E2M1::kMax;
    case Elem::E4M3: return E4M3::kMax;
    case Elem::E5M2: return E5M2::kMax;
    case Elem::FP16: return FP16::kMax;
  }
  return 0.0f;
}

int elem_bits(Elem e) {
  switch (e) {
    case Elem::E2M1: return E2M1::kBits;
    case Elem::E4M3: return E4M3::kBits;
    case Elem::E5M2: return E5M2::kBits;
    case Elem::FP16: return FP16::kBits;
  }
  return 0;
}

namespace {

// Every non-negative value of a minifloat with the given layout, ascending, up to max.
Grid make_grid(int mant_bits, int emin, double max) {
  Grid g;
  const double sub_step = std::ldexp(1.0, emin - mant_bits);
  for (int m = 0; m < (1 << mant_bits); ++m) g.value.push_back(m * sub_step);
  for (int e = emin;; ++e) {
    bool done = false;
    for (int m = 0; m < (1 << mant_bits); ++m) {
      const double v = std::ldexp(1.0 + double(m) / (1 << mant_bits), e);
      if (v > max) {
        done = true;
        break;
      }
      g.value.push_back(v);
    }
    if (done) break;
  }
  g.K = int(g.value.size()) - 1;
  g.mid.assign(g.value.size(), 0.0);
  g.inv_mid.assign(g.value.size(), 0.0);
  g.d_sq.assign(g.value.size(), 0.0f);
  g.d_val.assign(g.value.size(), 0.0);
  for (int k = 1; k <= g.K; ++k) {
    g.mid[k] = 0.5 * (g.value[k - 1] + g.value[k]);
    g.inv_mid[k] = 1.0 / g.mid[k];
    g.d_sq[k] = float(g.value[k - 1] * g.value[k - 1] - g.value[k] * g.value[k]);
    g.d_val[k] = g.value[k - 1] - g.value[k];
  }
  return g;
}

}  // namespace

const Grid& grid_of(Elem e) {
  static const Grid e2m1 = make_grid(E2M1::kMantBits, E2M1::kEmin, E2M1::kMax);
  static const Grid e4m3 = make_grid(E4M3::kMantBits, E4M3::kEmin, E4M3::kMax);
  static const Grid e5m2 = make_grid(E5M2::kMantBits, E5M2::kEmin, E5M2::kMax);
  static const Grid fp16 = make_grid(FP16::kMantBits, FP16::kEmin, FP16::kMax);
  switch (e) {
    case Elem::E2M1: return e2m1;
    case Elem::E4M3: return e4m3;
    case Elem::E5M2: return e5m2;
    case Elem::FP16: return fp16;
  }
  return e2m1;
}

float e4m3_decode(uint8_t code) {
  const int exp = (code >> 3) & 0xf, man = code & 7;
  if (exp == 0) return std::ldexp(float(man), -9);
  return std::ldexp(1.0f + float(man) / 8.0f, exp - 7);
}

bool e4m3_halvable(uint8_t code) {
  const float half = e4m3_decode(code) * 0.5f;
  return e4m3_decode(e4m3_encode_rne(half)) == half;
}

float ue8m0_decode(uint8_t code) {
  if (code == 255) return std::numeric_limits<float>::quiet_NaN();
  return std::ldexp(1.0f, int(code) - 127);
}

float e8m0_cast(float v) {
  if (std::isnan(v) || v <= 0.0f) return std::numeric_limits<float>::quiet_NaN();
  uint32_t u = float_to_bits(v);
  if ((u >> 23) == 0) return std::ldexp(1.0f, -127);  // float subnormals: the smallest E8M0 value
  // Drop the mantissa with round-to-nearest, ties to the even exponent.
  u = (u + 0x3fffffu + ((u >> 23) & 1u)) & 0xff800000u;
  if ((u >> 23) >= 255) return std::numeric_limits<float>::quiet_NaN();
  return bits_to_float(u);
}

}  // namespace calib
