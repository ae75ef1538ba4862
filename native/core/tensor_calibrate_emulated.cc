// The `cuda-emulated` backend: the GPU kernel's per-block code (block_search_portable.h) run on CPU
// threads, with the CPU engine's chunking. Tests compare it with the CPU engine block by block on
// every machine, so a change to either search that breaks GPU parity fails without a GPU.
#include <algorithm>

#include "chunked.h"
#include "port_job.h"

namespace calib {

namespace {

template <class F, int N, int kEnc, int kW>
RangeSums run_range(const port::Job& job, const CalibParams& p, CalibOutput& out, int64_t b0, int64_t b1) {
  const port::Tables& tb = port::host_tables();
  const bool encoded = scheme_info(p.scheme).enc != ScaleEnc::FP32;
  RangeSums s;
  // The heap's storage (blocks over 16), contiguous: stride 1.
  constexpr int kHeap = N > 16 ? N : 1;
  double t[kHeap];
  int16_t k[kHeap], k_end[kHeap], heap[kHeap];
  const port::HeapPending hp{t, k, k_end, heap, 1, 0};
  for (int64_t b = b0; b < b1; ++b) {
    const port::BlockOut r = port::calibrate_block<F, N, kEnc, kW>(tb, job, b, hp);
    out.scales[size_t(b)] = r.scale;
    if (encoded) out.codes[size_t(b)] = r.code;
    if (p.diagnostics) {
      out.block_mse_before[size_t(b)] = port::block_mse(r.err_before, r.counted);
      out.block_mse_after[size_t(b)] = port::block_mse(r.err_after, r.counted);
      out.block_outliers[size_t(b)] = uint16_t(std::min<uint32_t>(r.outliers, 65535u));
    }
    s.err_before += r.err_before;
    s.err_after += r.err_after;
    s.obj_before += r.obj_before;
    s.obj_after += r.obj_after;
    s.outliers += r.outliers;
    s.counted += r.counted;
  }
  return s;
}

// The blocks [b0, b1) of a job, through the GPU kernel's variant for it (host-only sizes above
// the GPU's limit get their own).
template <class F>
struct RangeRunner {
  const port::Job& job;
  const CalibParams& p;
  CalibOutput& out;
  int64_t b0, b1;
  template <int N, int kEnc, int kW>
  RangeSums run() const {
    return run_range<F, N, kEnc, kW>(job, p, out, b0, b1);
  }
};

template <class F>
RangeSums run_variant(const port::Job& job, const CalibParams& p, CalibOutput& out, int64_t b0, int64_t b1) {
  const RangeRunner<F> runner{job, p, out, b0, b1};
  const int sc = port::size_class(p.block_size);
  if (job.enc == int(ScaleEnc::FP32) && sc > port::kMaxDeviceBlock) {
    return port::with_weighting<4096, int(ScaleEnc::FP32)>(port::job_weighting(job), runner);
  }
  return port::with_variant(sc, job, runner);
}

}  // namespace

port::Job make_port_job(const TensorView& v, const CalibParams& p, const CalibOutput& out) {
  port::Job job{};
  job.data = v.data;
  job.dtype = int(v.dtype);
  job.rows = v.rows;
  job.cols = v.cols;
  job.blocks_per_row = out.blocks_per_row;
  job.blocks = out.blocks;
  job.block_size = p.block_size;
  job.enc = int(scheme_info(p.scheme).enc);
  job.search = int(p.search);
  job.allow_nonfinite = p.allow_nonfinite;
  job.global_decode = out.global_decode;
  job.col_weights = p.col_weights;
  job.col_means = p.col_weights ? p.col_means : nullptr;
  return job;
}

CalibOutput calibrate_tensor_emulated(const TensorView& v, const CalibParams& p) {
  CalibOutput out;
  scan_tensor(v, p, out);
  init_output(out, v, p);
  const port::Job job = make_port_job(v, p, out);
  const Elem elem = scheme_info(p.scheme).elem;
  if (elem == Elem::FP16) throw CalibError("E_BAD_ARGUMENT", "FP16 is an element format for rounding only, not a calibration scheme");
  const int64_t chunks = (out.blocks + kChunkBlocks - 1) / kChunkBlocks;
  std::vector<RangeSums> sums(static_cast<size_t>(chunks));
  parallel_chunks(chunks, thread_count(p.threads, chunks), p, [&](int64_t c) {
    const int64_t b0 = c * kChunkBlocks, b1 = std::min(out.blocks, b0 + kChunkBlocks);
    switch (elem) {
      case Elem::E2M1: sums[size_t(c)] = run_variant<E2M1>(job, p, out, b0, b1); break;
      case Elem::E4M3: sums[size_t(c)] = run_variant<E4M3>(job, p, out, b0, b1); break;
      default: sums[size_t(c)] = run_variant<E5M2>(job, p, out, b0, b1); break;
    }
    report_blocks(p, b1 - b0);
  });
  for (const RangeSums& s : sums) add_sums(out, s);
  return out;
}

}  // namespace calib
