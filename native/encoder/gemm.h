// Single-precision GEMM for the encoder's Linear layers: C = A · Wᵀ + b, with W (out × in, as
// PyTorch stores it) packed once when the weight is loaded and reused for every forward pass.
#pragma once

#include <cstdint>
#include <vector>

namespace enc {

// Output features are packed in panels of kPanel: panel p holds, for every k, the kPanel values
// W[p·kPanel + c][k] (zero past the last row), so the micro-kernel reads B contiguously.
constexpr int kPanel = 16;

struct PackedLinear {
  int64_t out = 0, in = 0;   // W is out × in
  std::vector<float> panels;  // ceil(out / kPanel) · in · kPanel
  std::vector<float> bias;    // out, padded to whole panels (zeros when the layer has none)
  // Sizes the panels and the bias (all zero) for an out × in weight.
  void init(int64_t out_features, int64_t in_features);
  // Packs a row-major out × in matrix (the size given to init).
  void pack(const float* w);
  void set_bias(const float* b);
};

// C[m × out] (row stride ldc) = A[m × in] (row stride lda) · Wᵀ + bias. Each output element is
// summed in the same order whatever m is and wherever its row lies in A, so a token's result does
// not depend on which other tokens share the call.
void linear(const float* a, int64_t m, int64_t lda, const PackedLinear& w, float* c, int64_t ldc);

// Whether the AVX2/FMA kernels run on this CPU ("avx2" or "baseline").
const char* gemm_isa();

// Test hook: force the portable kernels (false) or let the CPU decide (true).
void gemm_allow_simd(bool allow);

// Elementwise helpers with the same run-time ISA choice.
void gelu_erf_inplace(float* x, int64_t n);
void gelu_tanh_inplace(float* x, int64_t n);
float dot(const float* a, const float* b, int64_t n);
// y += alpha · x
void axpy(float alpha, const float* x, float* y, int64_t n);

}  // namespace enc
