// The definition behind search_kernels.h; included by the per-format .cu files only.
#pragma once

#include "search_kernels.h"

namespace calib {
namespace cuda {

// Blocks over 16 elements keep the sweep's heap in shared memory: N × (8 + 3·2) bytes per thread,
// with as many threads per block (at most 128, a multiple of 32) as fit in 112 KiB, so that two
// blocks share a multiprocessor. Blocks of up to 16 keep their state in registers.
constexpr int kHeapBytesPerElement = 8 + 3 * 2;
constexpr int kHeapSmemBudget = 112 * 1024;
constexpr int heap_threads(int N) {
  const int fit = kHeapSmemBudget / (kHeapBytesPerElement * N) / 32 * 32;
  return fit > 128 ? 128 : fit;
}
constexpr int threads_for(int N) { return N <= 16 ? 128 : heap_threads(N); }

template <class F, int N, int kEnc, int kW>
__global__ void __launch_bounds__(128) search_kernel(const port::Tables* tables, port::Job job, BlockArrays o, bool diagnostics) {
  extern __shared__ double heap_smem[];
  port::HeapPending hp{nullptr, nullptr, nullptr, nullptr, 1, 0};
  if constexpr (N > 16) {
    const int T = blockDim.x, tid = threadIdx.x;
    int16_t* k = reinterpret_cast<int16_t*>(heap_smem + N * T);
    hp = port::HeapPending{heap_smem + tid, k + tid, k + N * T + tid, k + 2 * N * T + tid, T, 0};
  }
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; b < job.blocks; b += stride) {
    const port::BlockOut r = port::calibrate_block<F, N, kEnc, kW>(*tables, job, b, hp);
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

template <class F, int N, int kEnc, int kW>
void launch(const port::Tables* tables, int sms, cudaStream_t s, const port::Job& job, const BlockArrays& o, bool diag) {
  constexpr int T = threads_for(N);
  const int smem = N > 16 ? kHeapBytesPerElement * N * T : 0;
  // Above the default 48 KiB a kernel must opt in, once per instantiation (a thread-safe static).
  static const bool opted_in = smem <= 48 * 1024 ||
                               (cudaFuncSetAttribute(search_kernel<F, N, kEnc, kW>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem), true);
  (void)opted_in;
  const int64_t want = (job.blocks + T - 1) / T;
  const int grid = int(want < int64_t(sms) * 64 ? want : int64_t(sms) * 64);
  search_kernel<F, N, kEnc, kW><<<grid, T, smem, s>>>(tables, job, o, diag);
}

template <class F>
struct Launcher {
  const port::Tables* tables;
  int sms;
  cudaStream_t stream;
  const port::Job& job;
  const BlockArrays& o;
  bool diag;
  template <int N, int kEnc, int kW>
  void run() const {
    launch<F, N, kEnc, kW>(tables, sms, stream, job, o, diag);
  }
};

template <class F>
void launch_search(const port::Tables* tables, int size_class, int sms, cudaStream_t s, const port::Job& job, const BlockArrays& o,
                   bool diag) {
  port::with_variant(size_class, job, Launcher<F>{tables, sms, s, job, o, diag});
}

}  // namespace cuda
}  // namespace calib
