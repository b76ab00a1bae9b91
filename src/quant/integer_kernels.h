// Vectorised element loops of the integer quantizer (value = (q - zp) * scale per tensor or per
// channel), compiled like the fixed-point loops: once for baseline x86-64, once for AVX2.
#pragma once

#include <cstdint>

#include "quant/fixed_point_kernels.h"

namespace sparq::quant::kernels {

/// One integer grid over a contiguous tensor seen as [outer, channels, inner]: element e uses
/// channel (e / inner) % channels.
template <typename T>
struct IntegerGrid {
  const float* scale;       ///< per channel
  const float* zero_point;  ///< per channel (integer-valued)
  int64_t channels, inner;
  T qmin, qmax;
  /// NNI's clamp_round: round(clamp(zp + x / s)), gradient where the unrounded code is in range.
  /// Otherwise torch's fake quantize: clamp(round(x * (1 / s)) + zp), gradient where the rounded
  /// code is in range.
  bool nni;
};

namespace generic {
template <typename T>
void integer_forward_range(const T* x, T* y, int64_t begin, int64_t end, const IntegerGrid<T>& g);
template <typename T>
void integer_backward_range(const T* x, const T* grad, T* dx, int64_t begin, int64_t end, const IntegerGrid<T>& g);
}  // namespace generic
namespace avx2 {
template <typename T>
void integer_forward_range(const T* x, T* y, int64_t begin, int64_t end, const IntegerGrid<T>& g);
template <typename T>
void integer_backward_range(const T* x, const T* grad, T* dx, int64_t begin, int64_t end, const IntegerGrid<T>& g);
}  // namespace avx2

/// y = the fake-quantized x for elements [begin, end).
template <typename T>
inline void integer_forward_range(const T* x, T* y, int64_t begin, int64_t end, const IntegerGrid<T>& g) {
  if (use_avx2()) avx2::integer_forward_range<T>(x, y, begin, end, g);
  else generic::integer_forward_range<T>(x, y, begin, end, g);
}

/// dx = grad where the straight-through estimator passes it, else 0, for elements [begin, end).
template <typename T>
inline void integer_backward_range(const T* x, const T* grad, T* dx, int64_t begin, int64_t end,
                                   const IntegerGrid<T>& g) {
  if (use_avx2()) avx2::integer_backward_range<T>(x, grad, dx, begin, end, g);
  else generic::integer_backward_range<T>(x, grad, dx, begin, end, g);
}

}  // namespace sparq::quant::kernels
