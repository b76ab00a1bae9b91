// Vectorised per-tensor quantization loops. Compiled twice: baseline x86-64 and AVX2 (chosen at
// run time), because GCC's target_clones does not vectorise these template loops.
#pragma once

#include <cmath>
#include <cstdint>

#include "sparq/quant/fixed_point.h"

namespace sparq::quant::kernels {

/// Constants of one per-tensor format with f >= 0, in code units (value = n * step).
template <typename T>
struct TensorFormat {
  T scale, step, nmin, nmax, lo, modulus, inv_modulus;
  bool signed_type;
};

namespace generic {
template <typename T>
void quantize_range(const T* x, T* q, T* slope, int64_t begin, int64_t end, const TensorFormat<T>& p, RoundMode r,
                    OverflowMode o, bool training);
}
namespace avx2 {
template <typename T>
void quantize_range(const T* x, T* q, T* slope, int64_t begin, int64_t end, const TensorFormat<T>& p, RoundMode r,
                    OverflowMode o, bool training);
}

/// q (and dq/dx into `slope` when not null) for elements [begin, end) of x; SAT, SAT_SYM or WRAP.
template <typename T>
inline void quantize_range(const T* x, T* q, T* slope, int64_t begin, int64_t end, const TensorFormat<T>& p,
                           RoundMode r, OverflowMode o, bool training) {
  static const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (has_avx2) avx2::quantize_range<T>(x, q, slope, begin, end, p, r, o, training);
  else generic::quantize_range<T>(x, q, slope, begin, end, p, r, o, training);
}

}  // namespace sparq::quant::kernels
