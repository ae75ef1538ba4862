// The chunked, cancellable loops the host backends (CPU engine, cuda-emulated) share.
#pragma once

#include <cstdint>

#include "parallel.h"
#include "tensor_calibrate.h"

namespace calib {

inline bool cancelled(const CalibParams& p) {
  return p.control != nullptr && __atomic_load_n(&p.control[0], __ATOMIC_RELAXED) != 0;
}

// parallel_for over chunks, checking for cancellation before each one.
template <class Fn>
void parallel_chunks(int64_t n, int threads, const CalibParams& p, Fn fn) {
  parallel_for(n, threads, [&](int64_t c) {
    if (cancelled(p)) throw CalibError("E_CANCELLED", "calibration cancelled");
    fn(c);
  });
}

inline void report_blocks(const CalibParams& p, int64_t blocks) {
  if (p.control) __atomic_fetch_add(&p.control[1], int32_t(blocks), __ATOMIC_RELAXED);
}

// Pass 1 on CPU threads: absmax over finite values and the non-finite census (out.absmax,
// out.nonfinite, out.first_nonfinite).
void scan_tensor(const TensorView& v, const CalibParams& p, CalibOutput& out);

}  // namespace calib
