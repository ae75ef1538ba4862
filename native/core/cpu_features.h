// Which instruction-set variant of the kernels this CPU can run (checked once, at first use).
#pragma once

namespace calib {

// The kernels_avx2 variants are compiled with -mavx2 -mfma -mf16c: all three must be present.
inline bool cpu_has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
  return has;
#else
  return false;
#endif
}

}  // namespace calib
