// Kernels compiled for the baseline instruction set of the target (SSE2 on x86-64).
#define CALIB_ISA_NS isa_baseline
#include "tensor_kernels.inc"
#include "quantize_kernels.inc"
