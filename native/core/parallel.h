// The work-sharing loop every native operation uses: units [0, n) taken one at a time by a few
// std::threads (the calling thread among them). The first exception stops the other threads and is
// rethrown to the caller. Results must not depend on which thread ran a unit.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace calib {

// `requested` threads (0: all hardware threads), never more than there are units, at most 256.
inline int thread_count(int requested, int64_t units) {
  int hw = int(std::thread::hardware_concurrency());
  if (hw <= 0) hw = 1;
  int t = requested > 0 ? requested : hw;
  t = int(std::min<int64_t>(t, std::max<int64_t>(1, units)));
  return std::max(1, std::min(t, 256));
}

template <class Fn>
void parallel_for(int64_t n, int threads, Fn fn) {
  std::atomic<int64_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mu;
  auto worker = [&]() {
    try {
      for (;;) {
        if (failed.load(std::memory_order_relaxed)) return;
        const int64_t u = next.fetch_add(1);
        if (u >= n) return;
        fn(u);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu);
      if (!error) error = std::current_exception();
      failed.store(true);
    }
  };
  std::vector<std::thread> pool;
  try {
    for (int i = 1; i < threads; ++i) pool.emplace_back(worker);
  } catch (const std::system_error&) {
    // Fewer threads than asked for: the ones that started share all the units.
  }
  worker();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace calib
