// The portable search's job description for a tensor (tensor_calibrate_emulated.cc): shared by the
// cuda-emulated backend and the CUDA backend, which swaps in device pointers.
#pragma once

#include "block_search_portable.h"
#include "tensor_calibrate.h"

namespace calib {

port::Job make_port_job(const TensorView& v, const CalibParams& p, const CalibOutput& out);

}  // namespace calib
