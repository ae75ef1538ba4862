// calibscope-gpu-bench: the CUDA backend without Node. Checks GPU/CPU parity block by block on many
// shapes and times the kernels. Every result is one JSON line on stdout.
//
//   calibscope-gpu-bench info
//   calibscope-gpu-bench parity [--safetensors FILE]...    exit 1 on any difference
//   calibscope-gpu-bench bench --format F --block B [--safetensors FILE | --tensors T] [--reps R]
//   calibscope-gpu-bench streams --format F --blocks B1,B2,.. [--tensors T] [--threads H]
//   calibscope-gpu-bench write FILE [--tensors T]           the benchmark weights, for the peers
//
// Benchmark weights: T trained-like F16 tensors of 4096 × 1024 (default 24: 100,663,296 weights,
// the PyTorch peer's size), seed 2 + tensor index.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "../core/tensor_calibrate.h"
#include "../core/trained_like.h"
#include "../cuda/cuda_backend.h"
#include "safetensors_min.h"

using namespace calib;
using calib_tools::StFile;

namespace {

struct Tensor {
  std::string name;
  DType dtype;
  int64_t rows, cols;
  std::vector<uint8_t> bytes;
  TensorView view() const { return TensorView{bytes.data(), bytes.size(), dtype, rows, cols}; }
};

std::map<std::string, std::string> flags(int argc, char** argv, int from, std::vector<std::string>* files) {
  std::map<std::string, std::string> f;
  for (int i = from; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) == 0) {
      const std::string v = i + 1 < argc ? argv[i + 1] : "";
      if (a == "--safetensors" && files) files->push_back(v);
      else f[a.substr(2)] = v;
      ++i;
    } else if (files) {
      files->push_back(a);
    }
  }
  return f;
}

Tensor trained_like(int64_t rows, int64_t cols, uint64_t seed, bool f16) {
  TrainedLikeParams p;
  p.rows = rows, p.cols = cols, p.row_count = rows, p.seed = seed, p.f16 = f16;
  Tensor t{"w" + std::to_string(seed), f16 ? DType::F16 : DType::F32, rows, cols, {}};
  t.bytes.resize(trained_like_bytes(p));
  generate_trained_like(p, t.bytes.data());
  return t;
}

std::vector<Tensor> bench_tensors(int count) {
  std::vector<Tensor> ts;
  for (int i = 0; i < count; ++i) ts.push_back(trained_like(4096, 1024, uint64_t(2 + i), true));
  return ts;
}

std::vector<Tensor> load_2d(const std::string& path) {
  const StFile f = calib_tools::read_safetensors(path);
  std::vector<Tensor> ts;
  for (const auto& t : f.tensors) {
    DType d;
    if (t.dtype == "F16") d = DType::F16;
    else if (t.dtype == "BF16") d = DType::BF16;
    else if (t.dtype == "F32") d = DType::F32;
    else continue;
    if (t.shape.size() != 2) continue;
    ts.push_back({t.name, d, t.shape[0], t.shape[1], std::vector<uint8_t>(f.data.begin() + long(t.begin), f.data.begin() + long(t.end))});
  }
  return ts;
}

// The first difference between two results, or "" when they are identical bit for bit.
std::string diff(const CalibOutput& g, const CalibOutput& c) {
  auto arr = [](const char* name, const auto& a, const auto& b) -> std::string {
    if (a.size() != b.size()) return std::string(name) + " length " + std::to_string(a.size()) + " vs " + std::to_string(b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      if (std::memcmp(&a[i], &b[i], sizeof a[i]) != 0)
        return std::string(name) + "[" + std::to_string(i) + "] " + std::to_string(double(a[i])) + " vs cpu " + std::to_string(double(b[i]));
    }
    return "";
  };
  auto num = [](const char* name, double a, double b) -> std::string {
    return std::memcmp(&a, &b, sizeof a) == 0 ? "" : std::string(name) + " " + std::to_string(a) + " vs cpu " + std::to_string(b);
  };
  for (const std::string& s :
       {arr("scales", g.scales, c.scales), arr("codes", g.codes, c.codes), arr("mse_before", g.block_mse_before, c.block_mse_before),
        arr("mse_after", g.block_mse_after, c.block_mse_after), arr("outliers", g.block_outliers, c.block_outliers),
        num("sum_err_before", g.sum_err_before, c.sum_err_before), num("sum_err_after", g.sum_err_after, c.sum_err_after),
        num("sum_obj_before", g.sum_obj_before, c.sum_obj_before), num("sum_obj_after", g.sum_obj_after, c.sum_obj_after),
        num("outliers_total", double(g.outliers), double(c.outliers)), num("counted", double(g.counted), double(c.counted)),
        num("absmax", g.absmax, c.absmax), num("global_decode", g.global_decode, c.global_decode)}) {
    if (!s.empty()) return s;
  }
  return "";
}

struct ParityCount {
  int cases = 0, failed = 0;
};

void compare(ParityCount& pc, const Tensor& t, CalibParams p, const std::string& what) {
  ++pc.cases;
  p.threads = 0;
  std::string d;
  try {
    CalibParams pc_cpu = p, pc_gpu = p;
    pc_cpu.backend = Backend::Cpu;
    pc_gpu.backend = Backend::Cuda;
    d = diff(calibrate_tensor(t.view(), pc_gpu), calibrate_tensor(t.view(), pc_cpu));
  } catch (const CalibError& e) {
    d = std::string("error ") + e.code + ": " + e.what();
  }
  if (!d.empty()) {
    ++pc.failed;
    if (pc.failed <= 20) std::printf("{\"parity_mismatch\": \"%s\", \"first_difference\": \"%s\"}\n", what.c_str(), d.c_str());
  }
}

int cmd_parity(const std::vector<std::string>& files) {
  ParityCount pc;
  const Scheme schemes[] = {Scheme::FP4, Scheme::FP8_E4M3, Scheme::FP8_E5M2, Scheme::NVFP4, Scheme::MXFP4, Scheme::MXFP8};
  const std::map<Scheme, std::vector<int>> sizes = {{Scheme::FP4, {16, 64, 100, 256}}, {Scheme::FP8_E4M3, {32, 128, 256}},
                                                    {Scheme::FP8_E5M2, {32, 256}},      {Scheme::NVFP4, {16}},
                                                    {Scheme::MXFP4, {32}},             {Scheme::MXFP8, {32}}};
  const int64_t shapes[][2] = {{37, 203}, {5, 1000}, {129, 77}, {1, 1}, {23, 4096}, {200, 384}};
  for (const auto& sh : shapes) {
    for (bool f16 : {true, false}) {
      const Tensor t = trained_like(sh[0], sh[1], uint64_t(sh[0] * 7919 + sh[1]), f16);
      std::vector<float> w(static_cast<size_t>(sh[1])), mu(static_cast<size_t>(sh[1]));
      for (int64_t j = 0; j < sh[1]; ++j) {
        w[size_t(j)] = j % 13 == 0 ? 0.0f : 0.01f + float((j * 37) % 101) / 7.0f;
        mu[size_t(j)] = float((j * 53) % 97) / 10.0f - 4.8f;
      }
      std::fprintf(stderr, "parity: %lldx%lld %s, %d cases so far, %d failed\n", (long long)sh[0], (long long)sh[1], f16 ? "F16" : "F32", pc.cases, pc.failed);
      for (Scheme s : schemes) {
        for (int bs : sizes.at(s)) {
          for (Search search : {Search::Exact, Search::Ternary, Search::Naive}) {
            CalibParams p;
            p.scheme = s, p.block_size = bs, p.search = search;
            const std::string what = std::string(scheme_info(s).name) + "/" + std::to_string(bs) + " " + std::to_string(sh[0]) + "x" +
                                     std::to_string(sh[1]) + (f16 ? " F16" : " F32") + " search " + std::to_string(int(search));
            compare(pc, t, p, what);
            if (search == Search::Exact) {
              p.col_weights = w.data();
              compare(pc, t, p, what + " weighted");
              p.col_means = mu.data();
              compare(pc, t, p, what + " weighted+means");
            }
          }
        }
      }
    }
  }
  for (const std::string& f : files) {
    for (const Tensor& t : load_2d(f)) {
      for (auto [s, bs] : std::vector<std::pair<Scheme, int>>{{Scheme::FP4, 64}, {Scheme::NVFP4, 16}, {Scheme::FP8_E4M3, 128}, {Scheme::MXFP4, 32}}) {
        CalibParams p;
        p.scheme = s, p.block_size = bs;
        compare(pc, t, p, f + ":" + t.name + " " + scheme_info(s).name);
      }
    }
  }
  std::printf("{\"parity\": {\"cases\": %d, \"failed\": %d}}\n", pc.cases, pc.failed);
  return pc.failed == 0 ? 0 : 1;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double sumsq(const std::vector<Tensor>& ts) {
  double s = 0;
  for (const Tensor& t : ts) {
    const uint16_t* h = reinterpret_cast<const uint16_t*>(t.bytes.data());
    for (size_t i = 0; i < t.bytes.size() / 2; ++i) {
      const double x = half_to_float(h[i]);
      s += x * x;
    }
  }
  return s;
}

int cmd_bench(const std::map<std::string, std::string>& f, const std::vector<std::string>& files) {
  CalibParams p;
  if (!parse_scheme(f.count("format") ? f.at("format") : "fp4", &p.scheme)) throw std::runtime_error("unknown --format");
  p.block_size = f.count("block") ? std::stoi(f.at("block")) : 16;
  const int reps = f.count("reps") ? std::stoi(f.at("reps")) : 5;
  std::vector<Tensor> ts = files.empty() ? bench_tensors(f.count("tensors") ? std::stoi(f.at("tensors")) : 24) : load_2d(files[0]);
  int64_t numel = 0, blocks = 0;
  size_t bytes_in = 0;
  for (const Tensor& t : ts) numel += t.rows * t.cols, bytes_in += t.bytes.size(), blocks += t.rows * ((t.cols + p.block_size - 1) / p.block_size);

  // CPU reference (all cores) and parity on every tensor.
  p.backend = Backend::Cpu;
  std::vector<CalibOutput> cpu;
  const auto c0 = std::chrono::steady_clock::now();
  for (const Tensor& t : ts) cpu.push_back(calibrate_tensor(t.view(), p));
  const double cpu_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - c0).count();

  p.backend = Backend::Cuda;
  int mismatched = 0;
  double err_after = 0, err_before = 0;
  std::vector<double> kernel, total, copy;
  for (int r = 0; r <= reps; ++r) {  // run 0 warms up and is checked for parity
    double k = 0, tt = 0, c = 0;
    for (size_t i = 0; i < ts.size(); ++i) {
      cuda::Timing tm;
      const CalibOutput g = cuda::calibrate_tensor(ts[i].view(), p, &tm);
      k += tm.search_ms, tt += tm.total_ms, c += tm.upload_scan_ms;
      if (r == 0) {
        if (!diff(g, cpu[i]).empty()) ++mismatched;
        err_after += g.sum_err_after, err_before += g.sum_err_before;
      }
    }
    if (r > 0) kernel.push_back(k), total.push_back(tt), copy.push_back(c);
  }
  const double k_ms = median(kernel), t_ms = median(total);
  const double ss = sumsq(ts);
  // Bytes the search kernel must move: each weight read once, each block's outputs written once
  // (scale, code, two float MSEs, outliers, float64 errors and counts for the chunk sums).
  const double out_per_block = 4 + (scheme_info(p.scheme).enc == ScaleEnc::FP32 ? 0 : 1) + 8 + 2 + 16 + 8;
  const double kernel_bytes = double(bytes_in) + double(blocks) * out_per_block;
  std::printf(
      "{\"bench\": {\"device\": \"%s\", \"format\": \"%s\", \"block\": %d, \"tensors\": %zu, \"weights\": %lld, \"blocks\": %lld, "
      "\"kernel_ms\": %.3f, \"end_to_end_ms\": %.3f, \"upload_scan_ms\": %.3f, \"kernel_weights_per_s\": %.4g, \"end_to_end_weights_per_s\": %.4g, "
      "\"kernel_bytes\": %.4g, \"kernel_bytes_per_s\": %.4g, \"cpu_ms\": %.1f, \"cpu_threads\": %u, \"rel_mse_naive\": %.6g, \"rel_mse\": %.6g, "
      "\"parity_mismatched_tensors\": %d}}\n",
      cuda::status().devices.empty() ? "?" : cuda::status().devices[0].name.c_str(), scheme_info(p.scheme).name, p.block_size, ts.size(),
      (long long)numel, (long long)blocks, k_ms, t_ms, median(copy), double(numel) / (k_ms / 1e3), double(numel) / (t_ms / 1e3), kernel_bytes,
      kernel_bytes / (k_ms / 1e3), cpu_ms, std::thread::hardware_concurrency(), err_before / ss, err_after / ss, mismatched);
  return mismatched == 0 ? 0 : 1;
}

// Many tensors and block sizes from several host threads at once (each call on its own stream), against
// the same work one call at a time: copies of one call overlap kernels of another.
int cmd_streams(const std::map<std::string, std::string>& f) {
  CalibParams p;
  if (!parse_scheme(f.count("format") ? f.at("format") : "fp4", &p.scheme)) throw std::runtime_error("unknown --format");
  p.backend = Backend::Cuda;
  std::vector<int> sizes;
  std::string b = f.count("blocks") ? f.at("blocks") : "64,128,256";
  for (size_t i = 0; i < b.size();) {
    const size_t j = b.find(',', i);
    sizes.push_back(std::stoi(b.substr(i, j - i)));
    i = j == std::string::npos ? b.size() : j + 1;
  }
  const int threads = f.count("threads") ? std::stoi(f.at("threads")) : 4;
  const std::vector<Tensor> ts = bench_tensors(f.count("tensors") ? std::stoi(f.at("tensors")) : 24);
  struct Work {
    const Tensor* t;
    int bs;
  };
  std::vector<Work> work;
  for (const Tensor& t : ts)
    for (int bs : sizes) work.push_back({&t, bs});
  auto run = [&](int nthreads) {
    std::atomic<size_t> next{0};
    std::atomic<int> failures{0};
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int h = 0; h < nthreads; ++h) {
      pool.emplace_back([&] {
        for (size_t i; (i = next++) < work.size();) {
          CalibParams q = p;
          q.block_size = work[i].bs;
          try {
            cuda::calibrate_tensor(work[i].t->view(), q);
          } catch (...) {
            ++failures;
          }
        }
      });
    }
    for (auto& th : pool) th.join();
    if (failures) throw std::runtime_error(std::to_string(failures.load()) + " calls failed");
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  run(threads);  // warm-up: streams, pinned buffers, the allocator's pool
  const double one = run(1), many = run(threads);
  int64_t numel = 0;
  for (const Tensor& t : ts) numel += t.rows * t.cols;
  std::printf("{\"streams\": {\"format\": \"%s\", \"block_sizes\": \"%s\", \"calls\": %zu, \"weights_per_call_set\": %lld, "
              "\"one_thread_ms\": %.1f, \"threads\": %d, \"threads_ms\": %.1f, \"speedup\": %.2f}}\n",
              scheme_info(p.scheme).name, b.c_str(), work.size(), (long long)numel, one, threads, many, many > 0 ? one / many : 0.0);
  return 0;
}

int cmd_write(const std::string& path, const std::map<std::string, std::string>& f) {
  const std::vector<Tensor> ts = bench_tensors(f.count("tensors") ? std::stoi(f.at("tensors")) : 24);
  std::vector<std::string> names;
  std::vector<const uint8_t*> datas;
  for (const Tensor& t : ts) names.push_back(t.name), datas.push_back(t.bytes.data());
  calib_tools::write_safetensors_f16(path, names, 4096, 1024, datas);
  std::printf("{\"written\": \"%s\", \"tensors\": %zu}\n", path.c_str(), ts.size());
  return 0;
}

int cmd_info() {
  const cuda::Status& s = cuda::status();
  std::printf("{\"cuda\": {\"compiled\": %s, \"available\": %s, \"reason\": \"%s\", \"devices\": [", s.compiled ? "true" : "false",
              s.available ? "true" : "false", s.reason.c_str());
  for (size_t i = 0; i < s.devices.size(); ++i) {
    const cuda::DeviceInfo& d = s.devices[i];
    std::printf("%s{\"name\": \"%s\", \"memory_gib\": %.1f, \"cc\": \"%d.%d\", \"sms\": %d}", i ? ", " : "", d.name.c_str(),
                double(d.total_memory) / (1 << 30), d.cc_major, d.cc_minor, d.multiprocessors);
  }
  std::printf("]}}\n");
  return s.available ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: calibscope-gpu-bench info | parity [--safetensors F] | bench --format F --block B | streams | write FILE\n");
    return 2;
  }
  const std::string cmd = argv[1];
  try {
    std::vector<std::string> files;
    if (cmd == "info") return cmd_info();
    // What needs the GPU says at once why there is none, rather than failing case after case.
    if ((cmd == "parity" || cmd == "bench" || cmd == "streams") && !cuda::status().available) {
      throw CalibError("E_CUDA", cuda::status().reason);
    }
    if (cmd == "parity") {
      flags(argc, argv, 2, &files);
      return cmd_parity(files);
    }
    if (cmd == "bench") {
      const auto f = flags(argc, argv, 2, &files);
      return cmd_bench(f, files);
    }
    if (cmd == "streams") return cmd_streams(flags(argc, argv, 2, nullptr));
    if (cmd == "write" && argc >= 3) return cmd_write(argv[2], flags(argc, argv, 3, nullptr));
  } catch (const CalibError& e) {
    std::printf("{\"error\": {\"code\": \"%s\", \"message\": \"%s\"}}\n", e.code.c_str(), e.what());
    return 1;
  } catch (const std::exception& e) {
    std::printf("{\"error\": {\"code\": \"E_INTERNAL\", \"message\": \"%s\"}}\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "unknown command %s\n", cmd.c_str());
  return 2;
}
