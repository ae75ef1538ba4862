// The per-span work of quantize.cc, compiled once per instruction set (quantize_kernels.inc is
// included by kernels_avx2.cc and kernels_baseline.cc) and picked at run time.
#pragma once

#include <cstdint>

#include "quantize.h"

namespace calib {

struct QuantJob {
  TensorView view;          // original weights (quantize, fake-quantize, error)
  PackedView packed;        // packed codes (dequantize, error)
  Elem elem = Elem::E2M1;
  ScaleEnc enc = ScaleEnc::FP32;
  int block_size = 0;
  int64_t blocks_per_row = 0;
  QuantScales scales;
  bool allow_nonfinite = false;
  const float* decode_table = nullptr;  // 256 entries: the value of every element byte (E2M1: 16)
  float scale_decode[256] = {};         // encoded schemes: the decode scale d of every scale code
  uint8_t* out_codes = nullptr;         // quantize: packed output
  float* out_xhat = nullptr;            // fake-quantize / dequantize: x̂ output
};

#define CALIB_DECLARE_QUANT_KERNELS(ns)                                                           \
  namespace ns {                                                                                  \
  /* Row `row`, columns [col0, col1): col0 a multiple of the block size and even. */              \
  QuantStats quantize_span(const QuantJob& job, int64_t row, int64_t col0, int64_t col1);         \
  void dequantize_span(const QuantJob& job, int64_t row, int64_t col0, int64_t col1);             \
  /* Flat blocks [b0, b1): the error sum in the search's order. */                                \
  QuantError error_range(const QuantJob& job, int64_t b0, int64_t b1);                            \
  }

CALIB_DECLARE_QUANT_KERNELS(isa_avx2)
CALIB_DECLARE_QUANT_KERNELS(isa_baseline)

}  // namespace calib
