// Quantization schemes (the `format` a user picks): element format plus scale encoding.
#pragma once

#include <cstdint>
#include <string>

#include "elem_format.h"
#include "hd.h"

namespace calib {

enum class ScaleEnc : int {
  FP32 = 0,   // any positive float multiplier
  E4M3G = 1,  // E4M3 per block times an FP32 per-tensor global decode scale (NVFP4)
  UE8M0 = 2,  // power of two (MX)
};

enum class Scheme : int { FP4 = 0, FP8_E4M3 = 1, FP8_E5M2 = 2, NVFP4 = 3, MXFP4 = 4, MXFP8 = 5 };

enum class Search : int {
  Exact = 0,    // the true minimum of the block's squared error over the encoding's scales
  Ternary = 1,  // the original specification's 20-round ternary search, kept for comparison
  Naive = 2,    // the format's standard scale only (absmax rule)
};

struct SchemeInfo {
  Scheme id;
  const char* name;
  Elem elem;
  ScaleEnc enc;
  int scale_bits;
};

const SchemeInfo& scheme_info(Scheme s);
bool parse_scheme(const std::string& name, Scheme* out);
bool parse_search(const std::string& name, Search* out);

// MX: the element's largest exponent (OCP MX v1.0): 2 for E2M1, 8 for E4M3.
CALIB_HD int mx_emax_elem(Elem e) { return e == Elem::E2M1 ? 2 : 8; }

}  // namespace calib
