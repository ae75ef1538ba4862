#include "tensor_calibrate.h"

#include <algorithm>
#include <cmath>

#include "../cuda/cuda_backend.h"
#include "chunked.h"
#include "cpu_features.h"
#include "tensor_kernels.h"

namespace calib {

namespace {

// Work is split into chunks of a fixed number of blocks (kChunkBlocks), independent of the thread
// count; chunk sums are added in chunk order. So results are byte-identical whatever the number of
// threads, and the GPU reproduces them.
constexpr int64_t kScanChunk = 1 << 16;

ScanResult scan(const TensorView& v, int64_t begin, int64_t end) {
  return cpu_has_avx2() ? isa_avx2::scan_range(v, begin, end) : isa_baseline::scan_range(v, begin, end);
}

RangeSums run(const KernelJob& job, int64_t b0, int64_t b1) {
  return cpu_has_avx2() ? isa_avx2::calibrate_range(job, b0, b1) : isa_baseline::calibrate_range(job, b0, b1);
}

}  // namespace

void scan_tensor(const TensorView& v, const CalibParams& p, CalibOutput& out) {
  const int64_t numel = v.rows * v.cols;
  const int64_t scan_chunks = (numel + kScanChunk - 1) / kScanChunk;
  std::vector<ScanResult> scans(static_cast<size_t>(scan_chunks));
  parallel_chunks(scan_chunks, thread_count(p.threads, scan_chunks), p, [&](int64_t c) {
    scans[size_t(c)] = scan(v, c * kScanChunk, std::min(numel, (c + 1) * kScanChunk));
  });
  for (const ScanResult& s : scans) {
    out.absmax = std::max(out.absmax, s.absmax);
    if (s.nonfinite && out.first_nonfinite < 0) out.first_nonfinite = s.first_nonfinite;
    out.nonfinite += s.nonfinite;
  }
}

size_t dtype_size(DType d) { return d == DType::F32 ? 4 : 2; }

bool engine_block_size_ok(int bs) { return bs >= 1 && bs <= 4096; }

const char* simd_level() { return cpu_has_avx2() ? "avx2" : "baseline"; }

void check_tensor(const TensorView& v, const CalibParams& p) {
  if (v.rows < 0 || v.cols <= 0 || (v.rows > 0 && v.cols > INT64_MAX / v.rows))
    throw CalibError("E_BAD_ARGUMENT", "tensor shape must have a positive last dimension");
  if (!engine_block_size_ok(p.block_size))
    throw CalibError("E_BAD_ARGUMENT", "block size must be between 1 and 4096, got " + std::to_string(p.block_size));
  const int64_t numel = v.rows * v.cols;
  if (numel == 0) throw CalibError("E_EMPTY_TENSOR", "tensor has no elements");
  if (v.data == nullptr || v.nbytes != size_t(numel) * dtype_size(v.dtype))
    throw CalibError("E_BAD_ARGUMENT", "buffer holds " + std::to_string(v.nbytes) + " bytes, shape × dtype needs " +
                                           std::to_string(size_t(numel) * dtype_size(v.dtype)));
}

void init_output(CalibOutput& out, const TensorView& v, const CalibParams& p) {
  if (out.nonfinite > 0 && !p.allow_nonfinite) {
    throw CalibError("E_NONFINITE", std::to_string(out.nonfinite) + " non-finite value(s) (NaN or Inf), first at flat index " +
                                        std::to_string(out.first_nonfinite));
  }
  const SchemeInfo& info = scheme_info(p.scheme);
  if (info.enc == ScaleEnc::E4M3G) {
    // g = absmax(tensor) / (6·448), so that the largest block's standard scale is E4M3's maximum.
    float g = out.absmax / (6.0f * 448.0f);
    if (!(g > 0.0f)) g = 1.0f;  // an all-zero tensor: any scale gives zero error
    out.global_decode = g;
  }
  out.rows = v.rows;
  out.blocks_per_row = (v.cols + p.block_size - 1) / p.block_size;
  out.blocks = v.rows * out.blocks_per_row;
  const CalibParams::Lent& lent = p.lent.blocks >= 0 ? p.lent : CalibParams::Lent{};
  if (p.lent.blocks >= 0 && p.lent.blocks != out.blocks) {
    throw CalibError("E_BAD_ARGUMENT", "the output arrays hold " + std::to_string(p.lent.blocks) + " blocks; the tensor has " +
                                           std::to_string(out.blocks) + " at block size " + std::to_string(p.block_size));
  }
  const size_t n = size_t(out.blocks);
  out.scales.assign(n, 1.0f, lent.scales);
  if (info.enc != ScaleEnc::FP32) out.codes.assign(n, 0, lent.codes);
  if (p.diagnostics) {
    out.block_mse_before.assign(n, 0.0f, lent.mse_before);
    out.block_mse_after.assign(n, 0.0f, lent.mse_after);
    out.block_outliers.assign(n, 0, lent.outliers);
  }
}

void add_sums(CalibOutput& out, const RangeSums& s) {
  out.sum_err_before += s.err_before;
  out.sum_err_after += s.err_after;
  out.sum_obj_before += s.obj_before;
  out.sum_obj_after += s.obj_after;
  out.outliers += s.outliers;
  out.counted += s.counted;
}

namespace {

CalibOutput calibrate_tensor_cpu(const TensorView& v, const CalibParams& p) {
  CalibOutput out;
  scan_tensor(v, p, out);
  init_output(out, v, p);
  KernelJob job{v, p, out.global_decode, out.blocks_per_row, &out};

  // Pass 2: the block search.
  const int64_t chunks = (out.blocks + kChunkBlocks - 1) / kChunkBlocks;
  std::vector<RangeSums> sums(static_cast<size_t>(chunks));
  parallel_chunks(chunks, thread_count(p.threads, chunks), p, [&](int64_t c) {
    const int64_t b0 = c * kChunkBlocks, b1 = std::min(out.blocks, b0 + kChunkBlocks);
    sums[size_t(c)] = run(job, b0, b1);
    report_blocks(p, b1 - b0);
  });
  for (const RangeSums& s : sums) add_sums(out, s);
  return out;
}

}  // namespace

CalibOutput calibrate_tensor(const TensorView& v, const CalibParams& p) {
  check_tensor(v, p);
  switch (p.backend) {
    case Backend::Cuda: return cuda::calibrate_tensor(v, p);
    case Backend::CudaEmulated: return calibrate_tensor_emulated(v, p);
    case Backend::Cpu: break;
  }
  return calibrate_tensor_cpu(v, p);
}

}  // namespace calib
