// Trained-like weights for demo models and benchmarks, generated natively and fast: Student-t
// tails (4 degrees of freedom), a log-normal scale per row and a few input channels (columns)
// several times larger than the rest. The recipe of src/util/trained_like.ts, with a random
// stream per row so that any slice of rows, on any number of threads, gives the same bytes.
#pragma once

#include <cstdint>
#include <vector>

namespace calib {

struct TrainedLikeParams {
  int64_t rows = 0, cols = 0;             // the whole tensor (rows × cols)
  int64_t row_begin = 0, row_count = 0;   // the slice to generate
  uint64_t seed = 0;                      // below 2^53 (it crosses from JS as a double)
  float std = 0.02f;                      // bulk standard deviation before the row spread
  float row_spread = 0.3f;                // sigma of the log-normal row scale
  float offset = 0.0f;                    // added to every value (LayerNorm gains sit at 1)
  double outlier_fraction = 1.0 / 64.0;   // floor(cols · fraction) distinct outlier columns
  float outlier_gain = 8.0f;
  bool f16 = true;                        // IEEE half bits (round to nearest even) or float32
  int threads = 0;                        // 0: all hardware threads
  bool simd = true;                       // false: the baseline kernel even where AVX2 is there (tests)
};

// Checks the parameters; throws CalibError("E_BAD_ARGUMENT", ...) naming the bad one.
void check_trained_like(const TrainedLikeParams& p);

// Bytes of the slice: row_count · cols · (2 or 4).
uint64_t trained_like_bytes(const TrainedLikeParams& p);

// Writes the slice, row-major, into `out` (trained_like_bytes(p) bytes).
void generate_trained_like(const TrainedLikeParams& p, void* out);

// The outlier columns of a tensor, ascending (a function of seed, cols and the fraction only).
std::vector<int64_t> trained_like_outlier_columns(uint64_t seed, int64_t cols, double fraction);

// float32 → IEEE half bits, round to nearest even, NaN kept (quiet, sign kept), overflow to ±inf.
uint16_t f32_to_f16_rne(float x);

}  // namespace calib
