// The CUDA backend: the portable per-block search (block_search_portable.h), one GPU thread per
// block, with the CPU engine's chunked float64 sums. Each call takes a stream (and its pinned
// staging buffers) from a pool, so concurrent calls from several host threads run side by side:
// one tensor's copies overlap another's kernels. Every CUDA failure becomes CalibError E_CUDA.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../core/port_job.h"
#include "cuda_backend.h"
#include "search_kernels.h"

namespace calib {
namespace cuda {

namespace {

void check(cudaError_t e, const std::string& what) {
  if (e == cudaSuccess) return;
  cudaGetLastError();  // clear a non-sticky error so that the next call starts clean
  throw CalibError("E_CUDA", what + ": " + cudaGetErrorString(e) + " (" + cudaGetErrorName(e) + ")");
}

// ---- Kernels ----

struct ScanOut {
  unsigned int absmax_bits;
  unsigned long long nonfinite;
  unsigned long long first_nonfinite;
};

__global__ void scan_kernel(const void* data, int dtype, int64_t numel, ScanOut* out) {
  float m = 0.0f;
  unsigned long long bad = 0, first = ULLONG_MAX;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += stride) {
    const float a = port::pfabsf(port::Source{data, dtype, i, false}.raw(0));
    if (port::pfinite(a)) {
      m = fmaxf(m, a);
    } else {
      ++bad;
      first = min(first, (unsigned long long)i);
    }
  }
  for (int off = 16; off > 0; off >>= 1) {
    m = fmaxf(m, __shfl_down_sync(0xffffffffu, m, off));
    bad += __shfl_down_sync(0xffffffffu, bad, off);
    first = min(first, __shfl_down_sync(0xffffffffu, first, off));
  }
  if ((threadIdx.x & 31) == 0) {
    // Non-negative floats order like their bit patterns.
    atomicMax(&out->absmax_bits, __float_as_uint(m));
    if (bad) {
      atomicAdd(&out->nonfinite, bad);
      atomicMin(&out->first_nonfinite, first);
    }
  }
}

struct ChunkSums {
  double err_before, err_after, obj_before, obj_after;
  unsigned long long outliers, counted;
};

// One thread block per chunk of kChunkBlocks blocks: the values are staged through shared memory
// (coalesced loads) and one thread adds them in block order, as the CPU engine does.
constexpr int kSumThreads = 256;
__global__ void chunk_sums_kernel(BlockArrays o, int64_t blocks, ChunkSums* out) {
  __shared__ double s[4][kChunkBlocks];
  __shared__ unsigned int so[kChunkBlocks], sc[kChunkBlocks];
  const int64_t b0 = int64_t(blockIdx.x) * kChunkBlocks;
  const int n = int(blocks - b0 < kChunkBlocks ? blocks - b0 : kChunkBlocks);
  const bool weighted = o.obj_before != nullptr;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    s[0][i] = o.err_before[b0 + i];
    s[1][i] = o.err_after[b0 + i];
    s[2][i] = weighted ? o.obj_before[b0 + i] : s[0][i];
    s[3][i] = weighted ? o.obj_after[b0 + i] : s[1][i];
    so[i] = o.outliers[b0 + i];
    sc[i] = o.counted[b0 + i];
  }
  __syncthreads();
  if (threadIdx.x >= 6) return;
  // Six threads, one sum each: each adds its values in block order.
  if (threadIdx.x < 4) {
    double acc = 0.0;
    for (int i = 0; i < n; ++i) acc += s[threadIdx.x][i];
    (&out[blockIdx.x].err_before)[threadIdx.x] = acc;
  } else {
    const unsigned int* src = threadIdx.x == 4 ? so : sc;
    unsigned long long acc = 0;
    for (int i = 0; i < n; ++i) acc += src[i];
    (threadIdx.x == 4 ? out[blockIdx.x].outliers : out[blockIdx.x].counted) = acc;
  }
}

// ---- Device, streams, staging ----

constexpr size_t kStageBytes = size_t(16) << 20;  // per pinned staging buffer (two per stream)

struct Lane {
  cudaStream_t stream = nullptr;
  void* stage[2] = {nullptr, nullptr};
  cudaEvent_t staged[2] = {nullptr, nullptr};
  cudaEvent_t ev[5] = {};  // timing: start, scanned, search start, search end, done
};

class Device {
 public:
  static Device& get() {
    static Device d;
    return d;
  }

  void init() {
    std::call_once(once_, [this] {
      try {
        check(cudaSetDevice(0), "selecting device 0");
        port::Tables t;
        port::fill_tables(&t);
        check(cudaMalloc(&tables_, sizeof t), "allocating the format tables");
        check(cudaMemcpy(tables_, &t, sizeof t, cudaMemcpyHostToDevice), "uploading the format tables");
        cudaDeviceProp prop;
        check(cudaGetDeviceProperties(&prop, 0), "reading device properties");
        sms_ = prop.multiProcessorCount;
      } catch (const CalibError& e) {
        init_error_ = e.what();
      }
    });
    if (!init_error_.empty()) throw CalibError("E_CUDA", init_error_);
    check(cudaSetDevice(0), "selecting device 0");  // per host thread
  }

  int sms() const { return sms_; }
  const port::Tables* tables() const { return tables_; }

  // A stream with its staging buffers, created on first need and reused; returned by Lease.
  std::unique_ptr<Lane> take() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        std::unique_ptr<Lane> l = std::move(free_.back());
        free_.pop_back();
        return l;
      }
    }
    auto l = std::make_unique<Lane>();
    check(cudaStreamCreateWithFlags(&l->stream, cudaStreamNonBlocking), "creating a stream");
    for (int i = 0; i < 2; ++i) {
      check(cudaMallocHost(&l->stage[i], kStageBytes), "allocating pinned staging memory");
      check(cudaEventCreateWithFlags(&l->staged[i], cudaEventDisableTiming), "creating an event");
    }
    for (cudaEvent_t& e : l->ev) check(cudaEventCreate(&e), "creating an event");
    return l;
  }
  void give(std::unique_ptr<Lane> l) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(std::move(l));
  }

 private:
  std::once_flag once_;
  std::string init_error_;
  int sms_ = 0;
  port::Tables* tables_ = nullptr;
  std::mutex mu_;
  std::vector<std::unique_ptr<Lane>> free_;
};

struct Lease {
  std::unique_ptr<Lane> lane;
  Lease() : lane(Device::get().take()) {}
  ~Lease() {
    // After a failure the stream may still run: wait, so that the next user starts clean.
    if (cudaStreamSynchronize(lane->stream) == cudaSuccess) Device::get().give(std::move(lane));
  }
};

// Device memory for one call, freed in stream order when the call ends, however it ends.
class Arena {
 public:
  explicit Arena(cudaStream_t s) : s_(s) {}
  ~Arena() {
    for (void* p : ptrs_) cudaFreeAsync(p, s_);
  }
  template <class T>
  T* alloc(size_t count, const char* what) {
    if (count == 0) return nullptr;
    void* p = nullptr;
    const size_t bytes = count * sizeof(T);
    cudaError_t e = cudaMallocAsync(&p, bytes, s_);
    if (e != cudaSuccess) check(e, std::string("allocating ") + std::to_string(bytes >> 20) + " MiB of device memory for " + what);
    ptrs_.push_back(p);
    return static_cast<T*>(p);
  }

 private:
  cudaStream_t s_;
  std::vector<void*> ptrs_;
};

// Host → device through two pinned buffers: the host copies piece i+1 into one while the DMA engine
// reads piece i from the other.
void upload(Lane& l, void* dst, const void* src, size_t bytes) {
  size_t done = 0;
  for (int i = 0; done < bytes; ++i) {
    const int k = i & 1;
    const size_t n = std::min(kStageBytes, bytes - done);
    check(cudaEventSynchronize(l.staged[k]), "waiting for a staging buffer");
    std::memcpy(l.stage[k], static_cast<const uint8_t*>(src) + done, n);
    check(cudaMemcpyAsync(static_cast<uint8_t*>(dst) + done, l.stage[k], n, cudaMemcpyHostToDevice, l.stream), "copying weights to the device");
    check(cudaEventRecord(l.staged[k], l.stream), "recording an event");
    done += n;
  }
}

// dst: a std::vector or a BlockArray (possibly the caller's lent memory).
template <class Dst, class T>
void download(Lane& l, Dst& dst, const T* src) {
  if (dst.empty()) return;
  check(cudaMemcpyAsync(dst.data(), src, dst.size() * sizeof(T), cudaMemcpyDeviceToHost, l.stream), "copying results to the host");
}

bool cancelled(const CalibParams& p) { return p.control && __atomic_load_n(&p.control[0], __ATOMIC_RELAXED) != 0; }

float elapsed(cudaEvent_t a, cudaEvent_t b) {
  float ms = 0.0f;
  return cudaEventElapsedTime(&ms, a, b) == cudaSuccess ? ms : -1.0f;
}

}  // namespace

const Status& status() {
  static const Status s = [] {
    Status x;
    x.compiled = true;
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      cudaGetLastError();
      x.reason = e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice
                     ? std::string("no usable CUDA device: no NVIDIA driver, or one older than this build's CUDA runtime (") +
                           cudaGetErrorString(e) + ")"
                     : std::string("no usable CUDA device (") + cudaGetErrorString(e) + ")";
      return x;
    }
    if (n == 0) {
      x.reason = "no CUDA device found";
      return x;
    }
    for (int i = 0; i < n; ++i) {
      cudaDeviceProp p;
      if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
      DeviceInfo d;
      d.index = i;
      d.name = p.name;
      d.total_memory = p.totalGlobalMem;
      d.cc_major = p.major;
      d.cc_minor = p.minor;
      d.multiprocessors = p.multiProcessorCount;
      x.devices.push_back(d);
    }
    if (x.devices.empty()) {
      x.reason = "the CUDA devices could not be queried";
    } else if (x.devices[0].cc_major * 10 + x.devices[0].cc_minor < 75) {
      x.reason = "device 0 (" + x.devices[0].name + ") has compute capability " + std::to_string(x.devices[0].cc_major) + "." +
                 std::to_string(x.devices[0].cc_minor) + "; the kernels need 7.5 or newer";
    } else {
      x.available = true;
    }
    return x;
  }();
  return s;
}

CalibOutput calibrate_tensor(const TensorView& v, const CalibParams& p, Timing* timing) {
  const Status& st = status();
  if (!st.available) throw CalibError("E_CUDA", st.reason);
  const SchemeInfo& info = scheme_info(p.scheme);
  if (info.elem == Elem::FP16) throw CalibError("E_BAD_ARGUMENT", "FP16 is an element format for rounding only, not a calibration scheme");
  if (p.block_size > port::kMaxDeviceBlock) {
    throw CalibError("E_CUDA", "the CUDA kernels take blocks of up to " + std::to_string(port::kMaxDeviceBlock) + " elements, got " +
                                   std::to_string(p.block_size) + " (use the cpu backend)");
  }
  check_tensor(v, p);
  const auto t_begin = std::chrono::steady_clock::now();
  Device& dev = Device::get();
  dev.init();
  Lease lease;
  Lane& l = *lease.lane;
  Arena arena(l.stream);
  const int64_t numel = v.rows * v.cols;

  // Pass 1 on the GPU: weights in, absmax and the non-finite census out.
  check(cudaEventRecord(l.ev[0], l.stream), "recording an event");
  void* d_data = arena.alloc<uint8_t>(v.nbytes, "the weights");
  upload(l, d_data, v.data, v.nbytes);
  ScanOut* d_scan = arena.alloc<ScanOut>(1, "the scan");
  const ScanOut init{0u, 0ull, ULLONG_MAX};
  check(cudaMemcpyAsync(d_scan, &init, sizeof init, cudaMemcpyHostToDevice, l.stream), "initializing the scan");
  const int scan_grid = int(std::min<int64_t>(int64_t(dev.sms()) * 8, (numel + 255) / 256));
  scan_kernel<<<std::max(1, scan_grid), 256, 0, l.stream>>>(d_data, int(v.dtype), numel, d_scan);
  check(cudaGetLastError(), "launching the scan kernel");
  ScanOut scan;
  check(cudaMemcpyAsync(&scan, d_scan, sizeof scan, cudaMemcpyDeviceToHost, l.stream), "reading the scan");
  check(cudaEventRecord(l.ev[1], l.stream), "recording an event");
  check(cudaStreamSynchronize(l.stream), "scanning the weights");

  CalibOutput out;
  uint32_t bits = scan.absmax_bits;
  std::memcpy(&out.absmax, &bits, sizeof bits);
  out.nonfinite = scan.nonfinite;
  out.first_nonfinite = scan.nonfinite ? int64_t(scan.first_nonfinite) : -1;
  init_output(out, v, p);
  if (cancelled(p)) throw CalibError("E_CANCELLED", "calibration cancelled");

  // Pass 2: the block search, then the chunk sums.
  port::Job job = make_port_job(v, p, out);
  job.data = d_data;
  if (p.col_weights) {
    float* w = arena.alloc<float>(size_t(v.cols), "the column weights");
    check(cudaMemcpyAsync(w, p.col_weights, size_t(v.cols) * 4, cudaMemcpyHostToDevice, l.stream), "copying column weights");
    job.col_weights = w;
    if (p.col_means) {
      float* mu = arena.alloc<float>(size_t(v.cols), "the column means");
      check(cudaMemcpyAsync(mu, p.col_means, size_t(v.cols) * 4, cudaMemcpyHostToDevice, l.stream), "copying column means");
      job.col_means = mu;
    }
  }
  const size_t nb = size_t(out.blocks);
  BlockArrays o{};
  o.scales = arena.alloc<float>(nb, "the scales");
  if (info.enc != ScaleEnc::FP32) o.codes = arena.alloc<uint8_t>(nb, "the scale codes");
  if (p.diagnostics) {
    o.mse_before = arena.alloc<float>(nb, "per-block errors");
    o.mse_after = arena.alloc<float>(nb, "per-block errors");
    o.outliers16 = arena.alloc<uint16_t>(nb, "per-block outliers");
  }
  o.err_before = arena.alloc<double>(nb, "per-block sums");
  o.err_after = arena.alloc<double>(nb, "per-block sums");
  if (p.col_weights) {
    o.obj_before = arena.alloc<double>(nb, "per-block sums");
    o.obj_after = arena.alloc<double>(nb, "per-block sums");
  }
  o.outliers = arena.alloc<uint32_t>(nb, "per-block outliers");
  o.counted = arena.alloc<uint32_t>(nb, "per-block counts");
  const int64_t chunks = (out.blocks + kChunkBlocks - 1) / kChunkBlocks;
  ChunkSums* d_sums = arena.alloc<ChunkSums>(size_t(chunks), "the chunk sums");

  check(cudaEventRecord(l.ev[2], l.stream), "recording an event");
  const int sc = info.enc == ScaleEnc::FP32 ? port::size_class(p.block_size) : 16;
  switch (info.elem) {
    case Elem::E2M1: launch_search<E2M1>(dev.tables(), sc, dev.sms(), l.stream, job, o, p.diagnostics); break;
    case Elem::E4M3: launch_search<E4M3>(dev.tables(), sc, dev.sms(), l.stream, job, o, p.diagnostics); break;
    default: launch_search<E5M2>(dev.tables(), sc, dev.sms(), l.stream, job, o, p.diagnostics); break;
  }
  check(cudaGetLastError(), "launching the search kernel");
  check(cudaEventRecord(l.ev[3], l.stream), "recording an event");
  chunk_sums_kernel<<<int(chunks), kSumThreads, 0, l.stream>>>(o, out.blocks, d_sums);
  check(cudaGetLastError(), "launching the sum kernel");

  std::vector<ChunkSums> sums(static_cast<size_t>(chunks));
  download(l, sums, d_sums);
  download(l, out.scales, o.scales);
  download(l, out.codes, o.codes);
  if (p.diagnostics) {
    download(l, out.block_mse_before, o.mse_before);
    download(l, out.block_mse_after, o.mse_after);
    download(l, out.block_outliers, o.outliers16);
  }
  check(cudaEventRecord(l.ev[4], l.stream), "recording an event");
  check(cudaStreamSynchronize(l.stream), "running the search");
  for (const ChunkSums& c : sums) {
    RangeSums r;
    r.err_before = c.err_before;
    r.err_after = c.err_after;
    r.obj_before = c.obj_before;
    r.obj_after = c.obj_after;
    r.outliers = c.outliers;
    r.counted = c.counted;
    add_sums(out, r);
  }
  if (p.control) __atomic_fetch_add(&p.control[1], int32_t(out.blocks), __ATOMIC_RELAXED);
  if (timing) {
    timing->upload_scan_ms = elapsed(l.ev[0], l.ev[1]);
    timing->search_ms = elapsed(l.ev[2], l.ev[3]);
    timing->sums_download_ms = elapsed(l.ev[3], l.ev[4]);
    timing->total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_begin).count();
  }
  return out;
}

}  // namespace cuda
}  // namespace calib
