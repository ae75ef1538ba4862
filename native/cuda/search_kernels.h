// The block-search kernel: one GPU thread per block, running block_search_portable.h. Instantiated
// once per element format in its own file (search_e2m1.cu, ...), so that nvcc compiles them in parallel.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../core/block_search_portable.h"

namespace calib {
namespace cuda {

// Device arrays the search writes, one entry per block.
struct BlockArrays {
  float* scales;
  uint8_t* codes;  // encoded schemes only
  float* mse_before;
  float* mse_after;
  uint16_t* outliers16;
  double* err_before;  // float64 errors and objectives, summed per chunk afterwards
  double* err_after;
  double* obj_before;  // weighted searches only
  double* obj_after;
  uint32_t* outliers;
  uint32_t* counted;
};

// Launches the search for element format F on `stream` (a grid sized for `sms` multiprocessors),
// through the kernel instantiated for the job's variant (port::with_variant): size_class is
// port::size_class(block size) for FP32 scales (the sweep's state size), ignored for encoded ones.
template <class F>
void launch_search(const port::Tables* tables, int size_class, int sms, cudaStream_t stream, const port::Job& job,
                   const BlockArrays& out, bool diagnostics);

}  // namespace cuda
}  // namespace calib
