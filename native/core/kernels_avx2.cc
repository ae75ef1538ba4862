// Kernels compiled for x86-64 with AVX2/FMA/F16C (selected at run time when the CPU has them).
#define CALIB_ISA_NS isa_avx2
#include "tensor_kernels.inc"
#include "quantize_kernels.inc"
