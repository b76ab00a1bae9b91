// Vectorised per-tensor quantization loops. Compiled twice: baseline x86-64 and AVX2 (chosen at
// run time), because GCC's target_clones does not vectorise these template loops.
#pragma once

#include <cmath>
#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>

#include "sparq/quant/fixed_point.h"

namespace sparq::quant::kernels {

/// Constants of one per-tensor format with f >= 0, in code units (value = n * step).
template <typename T>
struct TensorFormat {
  T scale, step, nmin, nmax, lo, modulus, inv_modulus;
  bool signed_type;
};

/// The constants of the vectorised paths (CPU loop, CUDA kernels, the fused MLP) for one
/// per-tensor format, or nothing where they do not apply (f < 0 needs the underflow guard;
/// WRAP_SM the bit rule).
std::optional<TensorFormat<double>> format_constants(double k, double i, double f, OverflowMode overflow);

/// Per-width constants of trained (HGQ) bit widths, `period` entries each; element e of x uses
/// entry e % period. Code units for the bounds (nmax, nlo), values for the rest.
template <typename T>
struct WidthConstants {
  const T *scale, *step, *nmax, *nlo, *gf_above, *gf_below, *gi_above, *gi_below;
  int64_t period;
  T keep_above = -std::numeric_limits<T>::infinity();  ///< 0: a ReLU follows (q <= 0 gives 0, no gradient)
  /// Four rows at a time (see hgq_rows): faster where x is in the cache (a [1024, 64] lane forward and
  /// backward, 126 us against 150 us on the CI-sized VM), slower where it streams from memory
  /// ([33200, 64]: 5.4 ms against 3.5 ms; four times as many streams for the prefetcher).
  bool group_rows = false;
};

namespace generic {
template <typename T>
void hgq_range(const T* x, T* q, T* slope, T* gf, T* gi, int64_t begin, int64_t end, const WidthConstants<T>& w,
               RoundMode r, bool saturate);
template <typename T>
void hgq_grad_range(const T* x, const T* g, T* dx, double* sf, double* si, int64_t begin, int64_t end,
                    const WidthConstants<T>& w, RoundMode r, bool saturate);
template <typename T>
void quantize_range(const T* x, T* q, T* slope, int64_t begin, int64_t end, const TensorFormat<T>& p, RoundMode r,
                    OverflowMode o, bool training);
template <typename T>
void saturation_grad_range(const T* x, const T* g, T* out, int64_t begin, int64_t end, const TensorFormat<T>& p);
}
namespace avx2 {
template <typename T>
void hgq_range(const T* x, T* q, T* slope, T* gf, T* gi, int64_t begin, int64_t end, const WidthConstants<T>& w,
               RoundMode r, bool saturate);
template <typename T>
void hgq_grad_range(const T* x, const T* g, T* dx, double* sf, double* si, int64_t begin, int64_t end,
                    const WidthConstants<T>& w, RoundMode r, bool saturate);
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

/// HGQ training pass over elements [begin, end): q and, when `slope` is not null, dq/dx, dq/df and
/// dq/di. `saturate`: SAT/SAT_SYM (bounds in the constants); otherwise WRAP while training.
template <typename T>
inline void hgq_range(const T* x, T* q, T* slope, T* gf, T* gi, int64_t begin, int64_t end,
                      const WidthConstants<T>& w, RoundMode r, bool saturate) {
  if (use_avx2()) avx2::hgq_range<T>(x, q, slope, gf, gi, begin, end, w, r, saturate);
  else generic::hgq_range<T>(x, q, slope, gf, gi, begin, end, w, r, saturate);
}

/// HGQ backward over elements [begin, end), the derivatives recomputed from x: dx = g·dq/dx (dx
/// may be null), and g·dq/df, g·dq/di added into sf, si, indexed by width (e % period).
template <typename T>
inline void hgq_grad_range(const T* x, const T* g, T* dx, double* sf, double* si, int64_t begin, int64_t end,
                           const WidthConstants<T>& w, RoundMode r, bool saturate) {
  if (use_avx2()) avx2::hgq_grad_range<T>(x, g, dx, sf, si, begin, end, w, r, saturate);
  else generic::hgq_grad_range<T>(x, g, dx, sf, si, begin, end, w, r, saturate);
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
