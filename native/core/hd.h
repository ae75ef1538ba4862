// Marks functions that are compiled for the host and, by nvcc, for the GPU as well: the per-block
// search runs the same source on both, which is what makes the CUDA backend's results equal the CPU's.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define CALIB_HD __host__ __device__ __forceinline__
#define CALIB_UNROLL _Pragma("unroll")
#else
#define CALIB_HD __attribute__((always_inline)) inline
#define CALIB_UNROLL _Pragma("GCC unroll 16")
#endif

namespace calib {

CALIB_HD float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

CALIB_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

}  // namespace calib
