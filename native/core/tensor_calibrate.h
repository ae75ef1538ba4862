// Calibrates one weight tensor (viewed as rows × cols) for one scheme and block size, on CPU threads.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "scheme.h"

namespace calib {

enum class DType : int { F32 = 0, F16 = 1, BF16 = 2 };
size_t dtype_size(DType d);

// An error with a stable code (E_BAD_ARGUMENT, E_NONFINITE, E_CANCELLED, ...) that crosses to JS.
struct CalibError : std::runtime_error {
  std::string code;
  CalibError(std::string c, const std::string& msg) : std::runtime_error(msg), code(std::move(c)) {}
};

struct TensorView {
  const void* data = nullptr;
  size_t nbytes = 0;
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
};

// Where the block search runs. CudaEmulated runs the GPU's per-block code on CPU threads: the
// tests compare it with the CPU engine on machines without a GPU.
enum class Backend : int { Cpu = 0, Cuda = 1, CudaEmulated = 2 };

struct CalibParams {
  Backend backend = Backend::Cpu;
  Scheme scheme = Scheme::FP4;
  int block_size = 64;
  Search search = Search::Exact;
  int threads = 0;               // 0: all hardware threads
  bool allow_nonfinite = false;  // NaN/Inf elements are excluded (treated as 0, not counted) instead of rejected
  bool diagnostics = true;       // per-block MSE before/after and outlier counts
  // Optional per-column weights (length cols, finite, >= 0): the search then minimizes
  // Σ_j w_j (x_ij − x̂_ij)², e.g. with w_j = E[x_j²] of the layer's inputs (activation-aware).
  const float* col_weights = nullptr;
  // Optional per-column input means (length cols, finite; only with col_weights): the search then
  // adds the block's bias term (Σ_j mu_j (x_ij − x̂_ij))² to the weighted error.
  const float* col_means = nullptr;
  // Optional control words shared with the caller: [0] != 0 requests cancellation,
  // [1] receives the number of blocks done (relaxed atomics).
  int32_t* control = nullptr;
  // Optional caller memory for the per-block results, `blocks` elements each (checked against the
  // tensor's block count): the output's arrays are then written there (BlockArray).
  struct Lent {
    float* scales = nullptr;
    uint8_t* codes = nullptr;
    float* mse_before = nullptr;
    float* mse_after = nullptr;
    uint16_t* outliers = nullptr;
    int64_t blocks = -1;  // -1: nothing lent
  } lent;
};

// A per-block result array: its own storage, or memory the caller lends (CalibParams::lent). The
// addon lends the JS arrays it returns, so each result is written once, by the thread that
// computes it, and nothing is copied on the JS thread.
template <class T>
class BlockArray {
 public:
  // n elements: `lent` (caller memory of n elements, left as it is: every backend writes every
  // element) when given, else its own, set to v.
  void assign(size_t n, T v, T* lent = nullptr) {
    lent_ = lent;
    if (lent) own_.clear();
    else own_.assign(n, v);
    size_ = n;
  }
  T* data() { return lent_ ? lent_ : own_.data(); }
  const T* data() const { return lent_ ? lent_ : own_.data(); }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  bool lent() const { return lent_ != nullptr; }
  T& operator[](size_t i) { return data()[i]; }
  const T& operator[](size_t i) const { return data()[i]; }

 private:
  std::vector<T> own_;
  T* lent_ = nullptr;
  size_t size_ = 0;
};

struct CalibOutput {
  int64_t rows = 0, blocks_per_row = 0, blocks = 0;
  BlockArray<float> scales;           // multiplier s per block
  BlockArray<uint8_t> codes;          // encoded schemes only
  BlockArray<float> block_mse_before, block_mse_after;
  BlockArray<uint16_t> block_outliers;
  double sum_err_before = 0.0, sum_err_after = 0.0;
  double sum_obj_before = 0.0, sum_obj_after = 0.0;  // the weighted objective (= errors without weights)
  uint64_t outliers = 0;
  uint64_t counted = 0;               // elements in the error sums (numel minus excluded non-finite)
  uint64_t nonfinite = 0;
  int64_t first_nonfinite = -1;
  float absmax = 0.0f;
  float global_decode = 0.0f;         // NVFP4's g; 0 otherwise
};

CalibOutput calibrate_tensor(const TensorView& view, const CalibParams& params);

// The steps every backend shares (tensor_calibrate.cc). check_tensor validates shape, block size
// and buffer size; init_output takes the tensor's absmax and non-finite census (out.absmax,
// out.nonfinite, out.first_nonfinite already set), rejects non-finite values unless allowed, sets
// NVFP4's global decode scale and sizes the per-block arrays.
void check_tensor(const TensorView& view, const CalibParams& params);
void init_output(CalibOutput& out, const TensorView& view, const CalibParams& params);
// Blocks per chunk: sums are taken per chunk in block order, then over chunks in chunk order.
constexpr int64_t kChunkBlocks = 1024;

// One chunk's sums, added to the output in chunk order.
struct RangeSums {
  double err_before = 0.0, err_after = 0.0;
  double obj_before = 0.0, obj_after = 0.0;
  uint64_t outliers = 0, counted = 0;
};
void add_sums(CalibOutput& out, const RangeSums& s);

CalibOutput calibrate_tensor_emulated(const TensorView& view, const CalibParams& params);

// Validates a block size for a scheme in the engine (the CLI applies the stricter scheme table).
bool engine_block_size_ok(int block_size);

// Which instruction set the kernels run with on this CPU ("avx2" or "baseline").
const char* simd_level();

}  // namespace calib
