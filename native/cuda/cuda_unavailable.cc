// The CUDA backend of a build without nvcc (or with CALIBSCOPE_CUDA=0): no kernels, a clear reason.
#include "cuda_backend.h"

namespace calib {
namespace cuda {

const Status& status() {
  static const Status s = [] {
    Status x;
    x.reason = "this build has no CUDA kernels (nvcc was not found when the addon was built, or CALIBSCOPE_CUDA=0)";
    return x;
  }();
  return s;
}

CalibOutput calibrate_tensor(const TensorView&, const CalibParams&, Timing*) { throw CalibError("E_CUDA", status().reason); }

}  // namespace cuda
}  // namespace calib
