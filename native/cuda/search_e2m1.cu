// The block search for E2M1 elements (fp4/nvfp4/mxfp4 use E2M1, fp8_e4m3/mxfp8 E4M3, fp8_e5m2 E5M2).
#include "search_kernel.cuh"

namespace calib {
namespace cuda {
template void launch_search<E2M1>(const port::Tables*, int, int, cudaStream_t, const port::Job&, const BlockArrays&, bool);
}  // namespace cuda
}  // namespace calib
