// The per-range work of calibrate_tensor, compiled once per instruction set (kernels_avx2.cc,
// kernels_baseline.cc) and picked at run time.
#pragma once

#include <cstdint>

#include "tensor_calibrate.h"

namespace calib {

struct KernelJob {
  TensorView view;
  CalibParams params;
  float global_decode;  // NVFP4
  int64_t blocks_per_row;
  CalibOutput* out;
};

struct ScanResult {
  float absmax = 0.0f;
  uint64_t nonfinite = 0;
  int64_t first_nonfinite = -1;
};

#define CALIB_DECLARE_KERNELS(ns)                                                     \
  namespace ns {                                                                      \
  ScanResult scan_range(const TensorView& v, int64_t begin, int64_t end);             \
  RangeSums calibrate_range(const KernelJob& job, int64_t block_begin, int64_t block_end); \
  }

CALIB_DECLARE_KERNELS(isa_avx2)
CALIB_DECLARE_KERNELS(isa_baseline)

}  // namespace calib
