// One element of the fixed-point and HGQ quantizers, written once for the CUDA kernels and for
// host code that must give the same numbers (the fused MLP's CPU twin): the rounding rule, the
// per-tensor training pass (fixed widths) and HGQ from a width's k, i, f with its derivatives.
#pragma once

#include <cmath>

#ifdef __CUDACC__
#define SPARQ_HD __host__ __device__ __forceinline__
#else
#define SPARQ_HD inline
#endif

namespace sparq::quant::element {

#ifndef __CUDA_ARCH__
using std::copysign;
using std::floor;
using std::ldexp;
using std::rint;
#endif

// Enum values of RoundMode and OverflowMode (sparq/quant/fixed_point.h).
enum { TRN, TRN_ZERO, RND, RND_ZERO, RND_INF, RND_MIN_INF, RND_CONV };
enum { SAT, SAT_SYM, WRAP, WRAP_SM };

/// Whether rounding mode `round` takes the code floor(u) + 1 (fl = floor(u), d = u - fl).
template <typename T>
SPARQ_HD bool rounds_up(int round, T u, T fl, T d) {
  switch (round) {
    case TRN: return false;
    case TRN_ZERO: return (u < 0) && (d > 0);
    case RND: return d >= T(0.5);
    case RND_MIN_INF: return d > T(0.5);
    case RND_ZERO: return (d > T(0.5)) || ((d == T(0.5)) && (u < 0));
    case RND_INF: return (d > T(0.5)) || ((d == T(0.5)) && (u > 0));
    default: return (d > T(0.5)) || ((d == T(0.5)) && (fl * T(0.5) != floor(fl * T(0.5))));
  }
}

template <typename T>
SPARQ_HD T denorm_min();
template <>
SPARQ_HD float denorm_min<float>() { return 1.40129846e-45f; }
template <>
SPARQ_HD double denorm_min<double>() { return 4.9406564584124654e-324; }

/// A per-tensor fixed format in code units (quant::cuda::Format's numbers, kernels::TensorFormat).
template <typename T>
struct FixedConstants {
  T scale, step, lo, nmax;
  bool wrap;  ///< WRAP while training: no clamp, gradient 1
};

/// The training value of a fixed-width quantizer (no wrap-around) and its slope dq/dx.
template <typename T>
SPARQ_HD T fixed_training_value(T xv, const FixedConstants<T>& p, int round) {
  const T u = xv * p.scale, fl = floor(u), d = u - fl;
  T code = fl + (rounds_up<T>(round, u, fl, d) ? T(1) : T(0));
  if (!p.wrap) code = code < p.lo ? p.lo : (code > p.nmax ? p.nmax : code);
  return code * p.step + T(0);
}
template <typename T>
SPARQ_HD T fixed_training_slope(T xv, const FixedConstants<T>& p) {
  const T u = xv * p.scale;
  return p.wrap || (u >= p.lo && u <= p.nmax) ? T(1) : T(0);
}

/// What one HGQ element gives: q, and with Backward dx = g·dq/dx, g·dq/df and g·dq/di.
template <typename T>
struct HgqElement {
  T q, dx, gf, gi;
};

/// The numbers of one HGQ width (k, i, f) that its elements share: computed once per width by the
/// kernels that apply one width to many elements (i and f rounded half to even, as the CPU's
/// usable_widths does: no rounding kernels).
template <typename T>
struct HgqConstants {
  T kk, scale, step, nmax, nlo, top, hi, lo;
  bool symmetric;
};

template <typename T>
SPARQ_HD HgqConstants<T> hgq_constants(T kk, T fraw, T iraw, int overflow) {
  const T ff = rint(fraw), ir = rint(iraw), ii = ir > -ff ? ir : -ff;
  const int fi = static_cast<int>(ff);
  HgqConstants<T> c;
  c.kk = kk;
  c.scale = ldexp(T(1), fi), c.step = ldexp(T(1), -fi);
  const T span = ii + ff;
  c.nmax = ldexp(T(1), static_cast<int>(span)) - T(1);
  const T nmin = -kk * ldexp(T(1), static_cast<int>(span));
  c.symmetric = overflow == SAT_SYM && kk > 0 && span > 0;
  c.nlo = c.symmetric ? -c.nmax : nmin;
  c.top = ldexp(T(1), static_cast<int>(ii));
  c.hi = c.top - c.step, c.lo = c.symmetric ? -c.hi : -kk * c.top;
  return c;
}

/// HGQ of one element from its width's constants.
template <typename T, bool Backward>
SPARQ_HD HgqElement<T> hgq_apply(const HgqConstants<T>& c, T xv, T gv, int round, int overflow) {
  const T ln2 = T(0.69314718055994530942);
  T u = xv * c.scale;
  if (u == T(0) && xv != T(0)) u = copysign(denorm_min<T>(), xv);  // a tiny x keeps its sign for TRN
  const T fl = floor(u), d = u - fl;
  T code = fl + (rounds_up<T>(round, u, fl, d) ? T(1) : T(0));
  const bool saturate = overflow != WRAP;
  if (saturate) code = code < c.nlo ? c.nlo : (code > c.nmax ? c.nmax : code);
  HgqElement<T> out{code * c.step + T(0), T(0), T(0), T(0)};
  if (!Backward) return out;
  if (!saturate) {
    out.dx = gv, out.gf = gv * (ln2 * (xv - out.q));
    return out;
  }
  const bool above = u > c.nmax, below = !above && u < c.nlo;
  const T v = above ? c.hi : (below ? c.lo : xv);
  const T bound_f = above ? ln2 * c.step : (below && c.symmetric ? -ln2 * c.step : T(0));
  const T bound_i = above ? ln2 * c.top : (below ? (c.symmetric ? -ln2 * c.top : -c.kk * ln2 * c.top) : T(0));
  out.dx = (above || below) ? T(0) : gv;
  out.gf = gv * (ln2 * (v - out.q) + bound_f);
  out.gi = gv * bound_i;
  return out;
}

/// HGQ of one element from its width's k, i, f.
template <typename T, bool Backward>
SPARQ_HD HgqElement<T> hgq_element(T xv, T kk, T fraw, T iraw, T gv, int round, int overflow) {
  return hgq_apply<T, Backward>(hgq_constants<T>(kk, fraw, iraw, overflow), xv, gv, round, overflow);
}

}  // namespace sparq::quant::element
