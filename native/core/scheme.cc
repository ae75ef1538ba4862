#include "scheme.h"

namespace calib {

namespace {
const SchemeInfo kSchemes[] = {
    {Scheme::FP4, "fp4", Elem::E2M1, ScaleEnc::FP32, 32},
    {Scheme::FP8_E4M3, "fp8_e4m3", Elem::E4M3, ScaleEnc::FP32, 32},
    {Scheme::FP8_E5M2, "fp8_e5m2", Elem::E5M2, ScaleEnc::FP32, 32},
    {Scheme::NVFP4, "nvfp4", Elem::E2M1, ScaleEnc::E4M3G, 8},
    {Scheme::MXFP4, "mxfp4", Elem::E2M1, ScaleEnc::UE8M0, 8},
    {Scheme::MXFP8, "mxfp8", Elem::E4M3, ScaleEnc::UE8M0, 8},
};
}  // namespace

const SchemeInfo& scheme_info(Scheme s) { return kSchemes[int(s)]; }

bool parse_scheme(const std::string& name, Scheme* out) {
  for (const auto& s : kSchemes) {
    if (name == s.name) {
      *out = s.id;
      return true;
    }
  }
  return false;
}

bool parse_search(const std::string& name, Search* out) {
  if (name == "exact") *out = Search::Exact;
  else if (name == "ternary") *out = Search::Ternary;
  else if (name == "naive") *out = Search::Naive;
  else return false;
  return true;
}

}  // namespace calib
