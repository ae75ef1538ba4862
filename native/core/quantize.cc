#include "quantize.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <string>
#include <vector>

#include "cpu_features.h"
#include "parallel.h"
#include "quantize_kernels.h"

namespace calib {

namespace {

// Quantize/dequantize split the tensor into spans of about this many elements (whole rows, or
// block-aligned pieces of long rows); the error sum uses the search's fixed 1024-block chunks.
constexpr int64_t kSpanTarget = 1 << 15;

// The value of every element byte: sign in the top bit of the code, NaN/Inf where the format has them.
struct DecodeTables {
  float e2m1[256], e4m3[256], e5m2[256];
  static void fill(float* t, int bits, int mant, int emin, Elem e) {
    const int n = 1 << bits;
    for (int code = 0; code < 256; ++code) t[code] = 0.0f;
    for (int code = 0; code < n; ++code) {
      const int mag = code & (n / 2 - 1);
      const int ef = mag >> mant, m = mag & ((1 << mant) - 1);
      float v = ef == 0 ? std::ldexp(float(m), emin - mant)
                        : std::ldexp(1.0f + float(m) / float(1 << mant), ef - 1 + emin);
      if (e == Elem::E4M3 && mag == 0x7f) v = std::numeric_limits<float>::quiet_NaN();
      if (e == Elem::E5M2 && ef == 31) v = m == 0 ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
      t[code] = (code & (n / 2)) ? -v : v;
    }
  }
  DecodeTables() {
    fill(e2m1, 4, E2M1::kMantBits, E2M1::kEmin, Elem::E2M1);
    fill(e4m3, 8, E4M3::kMantBits, E4M3::kEmin, Elem::E4M3);
    fill(e5m2, 8, E5M2::kMantBits, E5M2::kEmin, Elem::E5M2);
  }
  const float* of(Elem e) const { return e == Elem::E2M1 ? e2m1 : e == Elem::E4M3 ? e4m3 : e5m2; }
};
const DecodeTables& decode_tables() {
  static const DecodeTables t;
  return t;
}

// Spans: groups of whole rows when rows are short, otherwise pieces of one row whose length is a
// multiple of the block size and even (so that two spans never share an E2M1 byte).
struct SpanPlan {
  int64_t rows_per_span = 1, spans_per_row = 1, span_len = 0, count = 0;
};
SpanPlan plan_spans(int64_t rows, int64_t cols, int bs) {
  SpanPlan p;
  if (cols <= kSpanTarget) {
    p.rows_per_span = std::max<int64_t>(1, kSpanTarget / cols);
    p.span_len = cols;
    p.count = (rows + p.rows_per_span - 1) / p.rows_per_span;
    return p;
  }
  int64_t k = std::max<int64_t>(1, kSpanTarget / bs);
  if ((k * bs) & 1) ++k;
  p.span_len = k * bs;
  p.spans_per_row = (cols + p.span_len - 1) / p.span_len;
  p.count = rows * p.spans_per_row;
  return p;
}

template <class Fn>
void for_each_span(const SpanPlan& plan, int64_t rows, int64_t cols, int threads, Fn fn) {
  parallel_for(plan.count, thread_count(threads, plan.count), [&](int64_t u) {
    if (plan.spans_per_row == 1) {
      const int64_t r1 = std::min(rows, (u + 1) * plan.rows_per_span);
      for (int64_t r = u * plan.rows_per_span; r < r1; ++r) fn(r, int64_t(0), cols);
    } else {
      const int64_t r = u / plan.spans_per_row, c0 = (u % plan.spans_per_row) * plan.span_len;
      fn(r, c0, std::min(cols, c0 + plan.span_len));
    }
  });
}

std::string block_pos(int64_t b, int64_t bpr) {
  return "[" + std::to_string(b / bpr) + ", " + std::to_string(b % bpr) + "]";
}

void check_view(const TensorView& v, int64_t rows, int64_t cols) {
  const int64_t numel = rows * cols;
  if (v.data == nullptr || v.nbytes != size_t(numel) * dtype_size(v.dtype))
    throw CalibError("E_BAD_ARGUMENT", "weights hold " + std::to_string(v.nbytes) + " bytes, shape × dtype needs " +
                                           std::to_string(size_t(numel) * dtype_size(v.dtype)));
}

void check_packed(const PackedView& q, Elem e) {
  const int64_t need = packed_row_bytes(e, q.cols);
  if (q.row_stride < need || q.row_stride > INT64_MAX / std::max<int64_t>(1, q.rows))
    throw CalibError("E_BAD_ARGUMENT", "row stride " + std::to_string(q.row_stride) + " is smaller than a packed row (" +
                                           std::to_string(need) + " bytes)");
  if (q.elements == nullptr || q.nbytes != size_t(q.rows * q.row_stride))
    throw CalibError("E_BAD_ARGUMENT", "elements hold " + std::to_string(q.nbytes) + " bytes, rows × row stride needs " +
                                           std::to_string(q.rows * q.row_stride));
}

QuantJob make_job(const QuantParams& p, const QuantScales& s, int64_t cols) {
  const SchemeInfo& info = scheme_info(p.scheme);
  QuantJob j;
  j.elem = info.elem;
  j.enc = info.enc;
  j.block_size = p.block_size;
  j.blocks_per_row = (cols + p.block_size - 1) / p.block_size;
  j.scales = s;
  j.allow_nonfinite = p.allow_nonfinite;
  j.decode_table = decode_tables().of(info.elem);
  // d exactly as the search computes it: E4M3 value × g in float32 (NVFP4), 2^k (MX). Codes the
  // checks reject (NVFP4 0 and 127+, UE8M0 255) never reach the kernels.
  for (int c = 0; c < 256; ++c) {
    if (info.enc == ScaleEnc::E4M3G) j.scale_decode[c] = c >= 1 && c <= 126 ? e4m3_decode(uint8_t(c)) * s.global : 0.0f;
    else if (info.enc == ScaleEnc::UE8M0) j.scale_decode[c] = c < 255 ? std::ldexp(1.0f, c - 127) : 0.0f;
  }
  return j;
}

QuantStats run_quantize(QuantJob& j, const QuantParams& p, int64_t rows, int64_t cols) {
  const SpanPlan plan = plan_spans(rows, cols, p.block_size);
  std::mutex mu;
  QuantStats total;
  const bool avx2 = cpu_has_avx2();
  for_each_span(plan, rows, cols, p.threads, [&](int64_t r, int64_t c0, int64_t c1) {
    const QuantStats st = avx2 ? isa_avx2::quantize_span(j, r, c0, c1) : isa_baseline::quantize_span(j, r, c0, c1);
    if (st.outliers == 0 && st.nonfinite == 0) return;
    std::lock_guard<std::mutex> lock(mu);
    total.outliers += st.outliers;
    total.nonfinite += st.nonfinite;
    if (st.first_nonfinite >= 0 && (total.first_nonfinite < 0 || st.first_nonfinite < total.first_nonfinite))
      total.first_nonfinite = st.first_nonfinite;
  });
  if (total.nonfinite > 0 && !p.allow_nonfinite) {
    throw CalibError("E_NONFINITE", std::to_string(total.nonfinite) + " non-finite value(s) (NaN or Inf), first at flat index " +
                                        std::to_string(total.first_nonfinite));
  }
  return total;
}

}  // namespace

int64_t packed_row_bytes(Elem e, int64_t cols) { return e == Elem::E2M1 ? (cols + 1) / 2 : cols; }

int64_t packed_row_stride(Elem e, int64_t cols) { return (packed_row_bytes(e, cols) + 63) / 64 * 64; }

void check_quant_inputs(int64_t rows, int64_t cols, const QuantParams& p, const QuantScales& s) {
  if (rows < 0 || cols <= 0 || (rows > 0 && cols > INT64_MAX / 8 / rows))
    throw CalibError("E_BAD_ARGUMENT", "tensor shape must have a positive last dimension");
  if (rows == 0) throw CalibError("E_EMPTY_TENSOR", "tensor has no elements");
  if (!engine_block_size_ok(p.block_size))
    throw CalibError("E_BAD_BLOCK_SIZE", "block size must be between 1 and 4096, got " + std::to_string(p.block_size));
  const SchemeInfo& info = scheme_info(p.scheme);
  const int64_t bpr = (cols + p.block_size - 1) / p.block_size;
  const int64_t blocks = rows * bpr;
  const bool encoded = info.enc != ScaleEnc::FP32;
  if ((encoded ? s.codes : reinterpret_cast<const void*>(s.mult)) == nullptr)
    throw CalibError("E_BAD_PROFILE", std::string(info.name) + (encoded ? " needs per-block scale codes" : " needs per-block FP32 scales"));
  if (int64_t(s.count) != blocks)
    throw CalibError("E_BAD_PROFILE", "scales hold " + std::to_string(s.count) + " entries, shape [" + std::to_string(rows) + ", " +
                                          std::to_string(bpr) + "] needs " + std::to_string(blocks));
  switch (info.enc) {
    case ScaleEnc::FP32:
      for (int64_t b = 0; b < blocks; ++b) {
        const float v = s.mult[b];
        if (!(v > 0.0f) || !std::isfinite(v))
          throw CalibError("E_BAD_PROFILE", "scale at block " + block_pos(b, bpr) + " is " + std::to_string(v) +
                                                ": a multiplier must be positive and finite");
      }
      break;
    case ScaleEnc::E4M3G: {
      if (!(s.global > 0.0f) || !std::isfinite(s.global))
        throw CalibError("E_BAD_PROFILE", "NVFP4 global scale is " + std::to_string(s.global) + ": it must be positive and finite");
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t c = s.codes[b];
        if (c == 0 || c > 126)
          throw CalibError("E_BAD_PROFILE", "E4M3 scale code " + std::to_string(c) + " at block " + block_pos(b, bpr) +
                                                " is not a positive finite E4M3 value (1..126)");
      }
      if (!(e4m3_decode(1) * s.global > 0.0f))
        throw CalibError("E_BAD_PROFILE", "NVFP4 global scale " + std::to_string(s.global) + " is too small: decode scales underflow to 0");
      break;
    }
    case ScaleEnc::UE8M0:
      for (int64_t b = 0; b < blocks; ++b) {
        if (s.codes[b] == 255)
          throw CalibError("E_BAD_PROFILE", "UE8M0 scale code 255 (NaN) at block " + block_pos(b, bpr));
      }
      break;
  }
}

QuantStats quantize_tensor(const TensorView& v, const QuantParams& p, const QuantScales& s, uint8_t* elements,
                           size_t elements_nbytes) {
  check_quant_inputs(v.rows, v.cols, p, s);
  check_view(v, v.rows, v.cols);
  const Elem e = scheme_info(p.scheme).elem;
  const int64_t stride = packed_row_stride(e, v.cols);
  if (elements == nullptr || elements_nbytes != size_t(v.rows * stride))
    throw CalibError("E_BAD_ARGUMENT", "output holds " + std::to_string(elements_nbytes) + " bytes, needs " +
                                           std::to_string(v.rows * stride));
  QuantJob j = make_job(p, s, v.cols);
  j.view = v;
  j.packed.rows = v.rows;
  j.packed.cols = v.cols;
  j.packed.row_stride = stride;
  j.out_codes = elements;
  return run_quantize(j, p, v.rows, v.cols);
}

QuantStats fake_quantize_tensor(const TensorView& v, const QuantParams& p, const QuantScales& s, float* xhat,
                                size_t xhat_count) {
  check_quant_inputs(v.rows, v.cols, p, s);
  check_view(v, v.rows, v.cols);
  if (xhat == nullptr || xhat_count != size_t(v.rows * v.cols))
    throw CalibError("E_BAD_ARGUMENT", "output holds " + std::to_string(xhat_count) + " values, needs " + std::to_string(v.rows * v.cols));
  QuantJob j = make_job(p, s, v.cols);
  j.view = v;
  j.out_xhat = xhat;
  return run_quantize(j, p, v.rows, v.cols);
}

void dequantize_tensor(const PackedView& q, const QuantParams& p, const QuantScales& s, float* xhat, size_t xhat_count) {
  check_quant_inputs(q.rows, q.cols, p, s);
  const Elem e = scheme_info(p.scheme).elem;
  check_packed(q, e);
  if (xhat == nullptr || xhat_count != size_t(q.rows * q.cols))
    throw CalibError("E_BAD_ARGUMENT", "output holds " + std::to_string(xhat_count) + " values, needs " + std::to_string(q.rows * q.cols));
  QuantJob j = make_job(p, s, q.cols);
  j.packed = q;
  j.out_xhat = xhat;
  const bool avx2 = cpu_has_avx2();
  for_each_span(plan_spans(q.rows, q.cols, p.block_size), q.rows, q.cols, p.threads, [&](int64_t r, int64_t c0, int64_t c1) {
    if (avx2) isa_avx2::dequantize_span(j, r, c0, c1);
    else isa_baseline::dequantize_span(j, r, c0, c1);
  });
}

namespace {

// Every F16 bit pattern as float32 (half_to_float's exact values), built once: a lookup is faster
// than the conversion, which takes a slow path on subnormals.
const float* half_table() {
  static const std::vector<float> t = [] {
    std::vector<float> v(65536);
    for (uint32_t h = 0; h < 65536; ++h) v[h] = half_to_float(uint16_t(h));
    return v;
  }();
  return t.data();
}

// Element i of the raw weights as float32: the search's own conversions (exact for F16 and BF16).
template <DType kD>
inline float element(const void* data, const float* halves, int64_t i) {
  if (kD == DType::F16) return halves[static_cast<const uint16_t*>(data)[i]];
  if (kD == DType::BF16) return bf16_to_float(static_cast<const uint16_t*>(data)[i]);
  return static_cast<const float*>(data)[i];
}

// Calls fn(y) for every |x·s| (FP32 scales) or |x|/d (encoded) of columns [c0, c1) of row r.
template <DType kD, bool kDecode, class Fn>
inline void scaled_span(const QuantJob& j, int64_t r, int64_t c0, int64_t c1, Fn& fn) {
  const float* halves = kD == DType::F16 ? half_table() : nullptr;
  for (int64_t c = c0; c < c1; c += j.block_size) {
    const int64_t b = r * j.blocks_per_row + c / j.block_size;
    const float param = kDecode ? j.scale_decode[j.scales.codes[b]] : j.scales.mult[b];
    const int64_t i1 = r * j.view.cols + std::min(c1, c + j.block_size);
    for (int64_t i = r * j.view.cols + c; i < i1; ++i) {
      const float ax = std::fabs(element<kD>(j.view.data, halves, i));
      fn(kDecode ? ax / param : ax * param);
    }
  }
}

// The loop above, instantiated for the job's dtype and scale encoding (no branch per element).
template <class Fn>
inline void for_each_scaled(const QuantJob& j, int64_t r, int64_t c0, int64_t c1, Fn fn) {
  const bool decode = j.enc != ScaleEnc::FP32;
  switch (j.view.dtype) {
    case DType::F16: return decode ? scaled_span<DType::F16, true>(j, r, c0, c1, fn) : scaled_span<DType::F16, false>(j, r, c0, c1, fn);
    case DType::BF16: return decode ? scaled_span<DType::BF16, true>(j, r, c0, c1, fn) : scaled_span<DType::BF16, false>(j, r, c0, c1, fn);
    default: return decode ? scaled_span<DType::F32, true>(j, r, c0, c1, fn) : scaled_span<DType::F32, false>(j, r, c0, c1, fn);
  }
}

}  // namespace

ScaledHistogram scaled_histogram(const TensorView& v, const QuantParams& p, const QuantScales& s, int bins) {
  check_quant_inputs(v.rows, v.cols, p, s);
  check_view(v, v.rows, v.cols);
  if (bins < 1) throw CalibError("E_BAD_ARGUMENT", "a histogram needs at least one bin");
  QuantJob j = make_job(p, s, v.cols);
  j.view = v;
  const float max = elem_max(j.elem);
  const SpanPlan plan = plan_spans(v.rows, v.cols, p.block_size);
  std::mutex mu;
  float hi = 0.0f;
  ScaledHistogram h;
  for_each_span(plan, v.rows, v.cols, p.threads, [&](int64_t r, int64_t c0, int64_t c1) {
    float span_hi = 0.0f;
    uint64_t total = 0, clipped = 0;
    for_each_scaled(j, r, c0, c1, [&](float y) {
      const bool finite = y <= 3.4028235e38f;  // false for NaN and Inf
      total += finite ? 1u : 0u;
      clipped += finite && y > max ? 1u : 0u;
      span_hi = finite && y > span_hi ? y : span_hi;
    });
    std::lock_guard<std::mutex> lock(mu);
    hi = std::max(hi, span_hi);
    h.total += total;
    h.clipped += clipped;
  });
  h.top = double(std::max(hi, max)) * 1.05;
  const double width = h.top / bins;
  std::vector<uint64_t> counts(size_t(bins), 0);
  for_each_span(plan, v.rows, v.cols, p.threads, [&](int64_t r, int64_t c0, int64_t c1) {
    // A last slot takes the non-finite values. y / width ≥ 0, so the truncating conversion is
    // its floor (std::floor is a libm call on baseline x86-64).
    std::vector<uint64_t> local(size_t(bins) + 1, 0);
    for_each_scaled(j, r, c0, c1, [&](float y) {
      const double q = double(y) / width;
      ++local[y <= 3.4028235e38f ? (q < bins - 1 ? size_t(q) : size_t(bins - 1)) : size_t(bins)];
    });
    std::lock_guard<std::mutex> lock(mu);
    for (size_t b = 0; b < size_t(bins); ++b) counts[b] += local[b];
  });
  h.counts.assign(counts.begin(), counts.end());
  return h;
}

QuantError quantized_error(const TensorView& v, const PackedView& q, const QuantParams& p, const QuantScales& s) {
  check_quant_inputs(v.rows, v.cols, p, s);
  check_view(v, v.rows, v.cols);
  if (q.rows != v.rows || q.cols != v.cols)
    throw CalibError("E_BAD_ARGUMENT", "the packed tensor is " + std::to_string(q.rows) + " × " + std::to_string(q.cols) +
                                           ", the original " + std::to_string(v.rows) + " × " + std::to_string(v.cols));
  check_packed(q, scheme_info(p.scheme).elem);
  QuantJob j = make_job(p, s, v.cols);
  j.view = v;
  j.packed = q;
  const int64_t blocks = v.rows * j.blocks_per_row;
  const int64_t chunks = (blocks + kChunkBlocks - 1) / kChunkBlocks;
  std::vector<QuantError> parts(static_cast<size_t>(chunks));
  const bool avx2 = cpu_has_avx2();
  parallel_for(chunks, thread_count(p.threads, chunks), [&](int64_t c) {
    const int64_t b0 = c * kChunkBlocks, b1 = std::min(blocks, b0 + kChunkBlocks);
    parts[size_t(c)] = avx2 ? isa_avx2::error_range(j, b0, b1) : isa_baseline::error_range(j, b0, b1);
  });
  QuantError total;
  for (const QuantError& e : parts) {
    total.sum_err += e.sum_err;
    total.counted += e.counted;
    total.nonfinite += e.nonfinite;
  }
  return total;
}

}  // namespace calib
