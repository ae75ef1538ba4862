// The CUDA backend's interface, in plain C++. Implemented by cuda_backend.cu where the build had
// nvcc (CALIBSCOPE_CUDA=1), else by cuda_unavailable.cc, whose functions say why there is no GPU.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "../core/tensor_calibrate.h"

namespace calib {
namespace cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  size_t total_memory = 0;
  int cc_major = 0, cc_minor = 0;
  int multiprocessors = 0;
};

struct Status {
  bool compiled = false;   // the build has CUDA kernels
  bool available = false;  // and a device they can run on
  std::string reason;      // why not, when not available
  std::vector<DeviceInfo> devices;
};

// Queried once per process (device enumeration is slow); never throws.
const Status& status();

// Where one call's time went (CUDA events; total on the host clock, copies included).
struct Timing {
  float upload_scan_ms = 0, search_ms = 0, sums_download_ms = 0;
  double total_ms = 0;
};

// calibrate_tensor on the GPU: the CPU engine's results bit for bit. Throws CalibError with code
// E_CUDA when there is no usable device or a CUDA call fails (the message says which and why).
CalibOutput calibrate_tensor(const TensorView& view, const CalibParams& params, Timing* timing = nullptr);

}  // namespace cuda
}  // namespace calib
