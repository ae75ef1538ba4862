// The definition behind search_kernels.h; included by the per-format .cu files only.
#pragma once

#include "search_kernels.h"

namespace calib {
namespace cuda {

template <class F, int N>
__global__ void __launch_bounds__(128) search_kernel(const port::Tables* tables, port::Job job, BlockArrays o, bool diagnostics) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; b < job.blocks; b += stride) {
    const port::BlockOut r = port::calibrate_block<F, N>(*tables, job, b);
    o.scales[b] = r.scale;
    if (o.codes) o.codes[b] = r.code;
    if (diagnostics) {
      o.mse_before[b] = port::block_mse(r.err_before, r.counted);
      o.mse_after[b] = port::block_mse(r.err_after, r.counted);
      o.outliers16[b] = uint16_t(min(r.outliers, 65535u));
    }
    o.err_before[b] = r.err_before;
    o.err_after[b] = r.err_after;
    if (o.obj_before) {
      o.obj_before[b] = r.obj_before;
      o.obj_after[b] = r.obj_after;
    }
    o.outliers[b] = r.outliers;
    o.counted[b] = r.counted;
  }
}

template <class F>
void launch_search(const port::Tables* tables, int size_class, int grid, cudaStream_t s, const port::Job& job, const BlockArrays& o,
                   bool diag) {
  switch (size_class) {
    case 16: search_kernel<F, 16><<<grid, 128, 0, s>>>(tables, job, o, diag); break;
    case 32: search_kernel<F, 32><<<grid, 128, 0, s>>>(tables, job, o, diag); break;
    case 64: search_kernel<F, 64><<<grid, 128, 0, s>>>(tables, job, o, diag); break;
    case 128: search_kernel<F, 128><<<grid, 128, 0, s>>>(tables, job, o, diag); break;
    default: search_kernel<F, 256><<<grid, 128, 0, s>>>(tables, job, o, diag); break;
  }
}

}  // namespace cuda
}  // namespace calib
