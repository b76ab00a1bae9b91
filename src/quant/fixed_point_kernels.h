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
template <typename T>
void saturation_grad_range(const T* x, const T* g, T* out, int64_t begin, int64_t end, const TensorFormat<T>& p);
}
namespace avx2 {
template <typename T>
void quantize_range(const T* x, T* q, T* slope, int64_t begin, int64_t end, const TensorFormat<T>& p, RoundMode r,
                    OverflowMode o, bool training);
template <typename T>
void saturation_grad_range(const T* x, const T* g, T* out, int64_t begin, int64_t end, const TensorFormat<T>& p);
}

inline bool use_avx2();

/// q (and dq/dx into `slope` when not null) for elements [begin, end) of x; SAT, SAT_SYM or WRAP.
template <typename T>
inline void quantize_range(const T* x, T* q, T* slope, int64_t begin, int64_t end, const TensorFormat<T>& p,
                           RoundMode r, OverflowMode o, bool training) {
  if (use_avx2()) avx2::quantize_range<T>(x, q, slope, begin, end, p, r, o, training);
  else generic::quantize_range<T>(x, q, slope, begin, end, p, r, o, training);
}

inline bool use_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

/// dx = g where the saturating quantizer passes the gradient (x inside [lo, hi]), else 0.
template <typename T>
inline void saturation_grad_range(const T* x, const T* g, T* out, int64_t begin, int64_t end,
                                  const TensorFormat<T>& p) {
  if (use_avx2()) avx2::saturation_grad_range<T>(x, g, out, begin, end, p);
  else generic::saturation_grad_range<T>(x, g, out, begin, end, p);
}

}  // namespace sparq::quant::kernels
