// Quantized tensors: packing weights into element codes with calibrated block scales, and back.
//
// x̂ is exactly the one the block-scale search scores (docs/numerics.md):
//   FP32 scales (fp4, fp8_e4m3, fp8_e5m2): x̂ = Q(x·s)/s, s the block's multiplier;
//   encoded scales (nvfp4, mxfp4, mxfp8):  x̂ = Q(x/d)·d, d = E4M3(code)·g or 2^(code−127);
// every operation in float32, with the same load (F16/BF16 → float32) and the same rounding.
//
// Packed layout: row r of the tensor (viewed as rows × cols) starts at byte r·row_stride, where
// row_stride is the row's byte count rounded up to a multiple of 64; padding bytes are zero.
//   E2M1: two codes per byte, element 2j in the low nibble, 2j+1 in the high one; sign in bit 3,
//         magnitude code 0..7 = 0, 0.5, 1, 1.5, 2, 3, 4, 6.
//   E4M3 / E5M2: one byte per element, the format's bit pattern (sign in bit 7).
// A negative element that rounds to zero keeps its sign (code 0x8 / 0x80, x̂ = −0), like the
// reference casts.
#pragma once

#include <cstdint>
#include <vector>

#include "scheme.h"
#include "tensor_calibrate.h"

namespace calib {

// The block scales of one tensor, rows × blocks_per_row, row-major.
struct QuantScales {
  const float* mult = nullptr;     // FP32 schemes: the multiplier s per block
  const uint8_t* codes = nullptr;  // encoded schemes: E4M3 byte (NVFP4) or biased exponent (MX)
  size_t count = 0;                // entries in mult or codes
  float global = 0.0f;             // NVFP4: the per-tensor decode scale g
};

struct QuantParams {
  Scheme scheme = Scheme::FP4;
  int block_size = 64;
  int threads = 0;               // 0: all hardware threads
  bool allow_nonfinite = false;  // NaN/Inf become 0 (as the search excluded them) instead of an error
};

// A packed tensor as stored: element codes with their row stride, plus its scales.
struct PackedView {
  const uint8_t* elements = nullptr;
  size_t nbytes = 0;
  int64_t rows = 0, cols = 0, row_stride = 0;
};

struct QuantStats {
  uint64_t outliers = 0;   // elements with |x·s| > max (or |x/d| > max): clipped
  uint64_t nonfinite = 0;  // NaN/Inf inputs (zeroed under allow_nonfinite)
  int64_t first_nonfinite = -1;
};

struct QuantError {
  double sum_err = 0.0;  // Σ (x − x̂)², summed exactly as the search sums its error
  uint64_t counted = 0;  // elements in the sum (non-finite originals are excluded)
  uint64_t nonfinite = 0;
};

// The histogram of |x·s| (FP32 scales) or |x|/d (encoded scales) over a tensor, each value computed
// in float32 exactly as the search scores it: `bins` linear bins from 0 to
// top = max(largest value, format max) · 1.05. Non-finite values (NaN/Inf weights) are not counted.
struct ScaledHistogram {
  std::vector<double> counts;
  double top = 0.0;
  uint64_t total = 0;    // finite values counted
  uint64_t clipped = 0;  // values above the format's max: the calibration's outlier count
};

// Bytes of one packed row before padding, and the 64-byte aligned row stride.
int64_t packed_row_bytes(Elem e, int64_t cols);
int64_t packed_row_stride(Elem e, int64_t cols);

// Checks shape, block size, buffer sizes and every scale (positive and finite; NVFP4 codes 1..126
// with a positive finite g; UE8M0 codes 0..254). Throws CalibError (E_BAD_ARGUMENT, E_BAD_PROFILE).
void check_quant_inputs(int64_t rows, int64_t cols, const QuantParams& p, const QuantScales& s);

// Packs `v` into `elements` (rows × packed_row_stride bytes, written whole, padding zeroed).
QuantStats quantize_tensor(const TensorView& v, const QuantParams& p, const QuantScales& s, uint8_t* elements,
                           size_t elements_nbytes);

// x̂ of `v` without packing: `xhat` receives rows·cols float32 values.
QuantStats fake_quantize_tensor(const TensorView& v, const QuantParams& p, const QuantScales& s, float* xhat,
                                size_t xhat_count);

// Two passes over the weights (the largest value, then the bins) on the addon's threads; the
// counts are integers, so they do not depend on the thread count.
ScaledHistogram scaled_histogram(const TensorView& v, const QuantParams& p, const QuantScales& s, int bins);

// Decodes a packed tensor into rows·cols float32 values.
void dequantize_tensor(const PackedView& q, const QuantParams& p, const QuantScales& s, float* xhat,
                       size_t xhat_count);

// Σ (x − x̂)² between the original weights and a packed tensor, with the search's summation order
// (8 float64 lanes per block, blocks in order within chunks of 1024, chunks in order): for the
// calibration's own scales it equals the calibration's sum_err_after bit for bit.
QuantError quantized_error(const TensorView& v, const PackedView& q, const QuantParams& p, const QuantScales& s);

}  // namespace calib
