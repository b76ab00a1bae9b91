#include "sparq/quant/fixed_point.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <limits>
#include <optional>

#include "quant/fixed_point_kernels.h"
#ifdef SPARQ_WITH_CUDA
#include "quant/fixed_point_cuda.h"
#endif
#include "sparq/error.h"

namespace sparq::quant {

namespace {

constexpr const char* kRoundNames[] = {"TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_INF", "RND_MIN_INF", "RND_CONV"};
constexpr const char* kOverflowNames[] = {"SAT", "SAT_SYM", "WRAP", "WRAP_SM"};

std::string normalise(std::string name) {
  std::transform(name.begin(), name.end(), name.begin(), ::toupper);
  if (name.rfind("AP_", 0) == 0) name = name.substr(3);
  return name;
}

/// Rounds u to an integer. Ties are decided on the exact fraction u - floor(u), never on u + 0.5,
/// which loses the tie (or the integer) once |u| nears 2^digits.
template <typename T>
inline T round_code(T u, RoundMode mode) {
  T fl = std::floor(u), d = u - fl;
  switch (mode) {
    case RoundMode::TRN: return fl;
    case RoundMode::TRN_ZERO: return (u < 0 && d > 0) ? fl + 1 : fl;
    case RoundMode::RND: return d >= T(0.5) ? fl + 1 : fl;
    case RoundMode::RND_MIN_INF: return d > T(0.5) ? fl + 1 : fl;
    case RoundMode::RND_ZERO: return (d > T(0.5) || (d == T(0.5) && u < 0)) ? fl + 1 : fl;
    case RoundMode::RND_INF: return (d > T(0.5) || (d == T(0.5) && u > 0)) ? fl + 1 : fl;
    case RoundMode::RND_CONV:
      if (d != T(0.5)) return d > T(0.5) ? fl + 1 : fl;
      return std::fmod(fl, T(2)) == 0 ? fl : fl + 1;
  }
  return fl;
}

/// Bit `b` (0 = least significant) of the two's-complement integer n.
template <typename T>
inline bool bit(T n, T b) {
  T q = std::floor(std::ldexp(n, -static_cast<int>(b)));
  return q - T(2) * std::floor(q / T(2)) != 0;
}

/// Code n of x and the derivative dq/dx (1 inside the range, 0 saturated, -1 folded by WRAP_SM).
template <typename T>
inline T quantize_one(T x, T k, T i, T f, RoundMode round, OverflowMode overflow, bool training, T* slope) {
  const int fi = static_cast<int>(f);
  T u = std::ldexp(x, fi);
  // A tiny x scaled by a negative f can underflow to zero; its sign still decides TRN (-1, not 0).
  if (u == 0 && x != 0) u = std::copysign(std::numeric_limits<T>::denorm_min(), x);
  const T n = round_code(u, round);
  const auto [nmax, nmin, sat_lo, modulus] = bounds<T>(k, i, f, overflow);
  if (slope) *slope = 1;
  switch (overflow) {
    case OverflowMode::SAT:
    case OverflowMode::SAT_SYM: {
      if (slope && (u > nmax || u < sat_lo)) *slope = 0;
      return std::min(std::max(n, sat_lo), nmax);
    }
    case OverflowMode::WRAP: {
      if (training) return n;                                  // wrap-around only in eval
      T t = n - modulus * std::floor(n / modulus);
      if (k > 0 && t > nmax) t -= modulus;
      return t;
    }
    case OverflowMode::WRAP_SM: {
      if (n >= nmin && n <= nmax) return n;
      const T width = k + i + f;
      T t = n - modulus * std::floor(n / modulus);
      if (t > nmax) t -= modulus;
      // The hardware decides the fold from bit W of floor(u) (before rounding) and bit W-1 of n.
      if (bit(std::floor(u), width) != bit(n, width - 1)) {
        if (slope) *slope = -1;
        return -t - 1;
      }
      return t;
    }
  }
  return n;
}

void check_dtype(const torch::Tensor& x) {
  if (x.scalar_type() != torch::kFloat32 && x.scalar_type() != torch::kFloat64)
    throw Error(fmt::format("fixed-point quantization needs float32 or float64 values, got {}",
                            c10::toString(x.scalar_type())));
}

/// k, i, f as contiguous tensors of x's shape and dtype (kept 1-element when per tensor).
torch::Tensor expand_like(const torch::Tensor& bits, const torch::Tensor& x, const char* name) {
  auto b = bits.detach().to(x.device(), x.scalar_type());
  if (b.numel() == 1) return b.reshape({1});
  try {
    return b.expand(x.sizes()).contiguous();
  } catch (const c10::Error&) {
    throw Error(fmt::format("quantizer '{}' of shape [{}] does not broadcast to the input shape [{}]", name,
                            fmt::join(bits.sizes(), ", "), fmt::join(x.sizes(), ", ")));
  }
}

/// format_constants for per-tensor bits held in CPU tensors of type T.
template <typename T>
std::optional<kernels::TensorFormat<T>> tensor_format(const torch::Tensor& k, const torch::Tensor& i,
                                                      const torch::Tensor& f, OverflowMode overflow) {
  if (k.numel() != 1 || i.numel() != 1 || f.numel() != 1) return std::nullopt;
  auto p = kernels::format_constants(k.data_ptr<T>()[0], i.data_ptr<T>()[0], f.data_ptr<T>()[0], overflow);
  if (!p) return std::nullopt;
  return kernels::TensorFormat<T>{T(p->scale), T(p->step), T(p->nmin), T(p->nmax), T(p->lo), T(p->modulus),
                                  T(p->inv_modulus), p->signed_type};
}

/// One pass: q (and the slope if wanted) for every element.
void fused_kernel(const torch::Tensor& x, const torch::Tensor& k, const torch::Tensor& i, const torch::Tensor& f,
                  RoundMode round, OverflowMode overflow, bool training, torch::Tensor& q, torch::Tensor* slope) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fixed_quantize", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t *kp = k.data_ptr<scalar_t>(), *ip = i.data_ptr<scalar_t>(), *fp = f.data_ptr<scalar_t>();
    const bool ks = k.numel() == 1, is = i.numel() == 1, fs = f.numel() == 1;
    scalar_t* qp = q.data_ptr<scalar_t>();
    scalar_t* sp = slope ? slope->data_ptr<scalar_t>() : nullptr;
    if (auto p = tensor_format<scalar_t>(k, i, f, overflow)) {
      at::parallel_for(0, x.numel(), 32768, [&](int64_t begin, int64_t end) {
        kernels::quantize_range<scalar_t>(xp, qp, sp, begin, end, *p, round, overflow, training);
      });
      return;
    }
    at::parallel_for(0, x.numel(), 16384, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        scalar_t kk = kp[ks ? 0 : e], ii = ip[is ? 0 : e], ff = fp[fs ? 0 : e];
        scalar_t n = quantize_one<scalar_t>(xp[e], kk, ii, ff, round, overflow, training, sp ? sp + e : nullptr);
        qp[e] = std::ldexp(n, -static_cast<int>(ff)) + scalar_t(0);  // + 0 turns -0 into 0
      }
    });
  });
}


/// Widths broadcast against x without copying them: a tensor and the period after which its
/// elements repeat along x's flat index (1: one width; its numel: its shape is x's trailing
/// shape, as data lanes [1, *sample] and per-weight widths are); otherwise an expanded copy.
std::pair<torch::Tensor, int64_t> periodic(const torch::Tensor& bits, const torch::Tensor& x, const char* name) {
  auto b = bits.detach().to(x.device(), x.scalar_type());
  if (b.numel() == 1) return {b.reshape({1}), 1};
  auto dims = b.sizes();
  size_t first = 0;  // leading axes of extent 1 broadcast over x's leading axes
  while (first < dims.size() && dims[first] == 1) ++first;
  size_t rest = dims.size() - first;
  if (rest <= static_cast<size_t>(x.dim()) &&
      std::equal(dims.begin() + first, dims.end(), x.sizes().end() - static_cast<int64_t>(rest)))
    return {b.contiguous(), b.numel()};
  return {expand_like(bits, x, name), x.numel()};
}

/// The period the HGQ loops run over: a short one (a data lane of 5 or 16 features, one width per
/// tensor) repeated up to ~256 elements. Each period is one vectorised segment with a set-up of its
/// own: the backward pass over 5-element segments took 2.5 ns an element on the CI-sized VM, over
/// 256-element ones 1.05 ns (the loop alone).
int64_t tiled_period(int64_t period) { return period >= 256 ? period : period * (256 / period); }

/// Trained widths as the HGQ passes use them: f and i rounded half to even (straight through),
/// i never below -f (the range never empties).
template <typename T>
std::pair<T, T> usable_widths(T i, T f) {
  const T ff = std::nearbyint(f);
  return {std::max(std::nearbyint(i), -ff), ff};
}

/// The per-width constants of trained widths k, i, f laid out along x (see periodic): 2^f, 2^-f,
/// the code bounds and the bound derivatives, computed once per call, repeated
/// to tiled_period(period) entries.
template <typename T>
struct HgqConstants {
  torch::Tensor c;  ///< the 8 arrays, `tiled` entries each (a tensor: the backward reuses the forward's)
  kernels::WidthConstants<T> w;
  HgqConstants(const T* kp, const T* ip, const T* fp, int64_t period, OverflowMode overflow)
      : c(torch::empty({8 * tiled_period(period)}, c10::CppTypeToScalarType<T>::value)) {
    const int64_t tiled = c.numel() / 8;
    point();
    const T ln2 = static_cast<T>(0.69314718055994530942);
    T* const at[8] = {c_(0), c_(1), c_(2), c_(3), c_(4), c_(5), c_(6), c_(7)};  // in WidthConstants' order
    for (int64_t j = 0; j < period; ++j) {
      const T kk = kp[j];
      const auto [ii, ff] = usable_widths(ip[j], fp[j]);
      const int fi = static_cast<int>(ff);
      const T step = pow2<T>(-fi), top = pow2<T>(static_cast<int>(ii));
      const auto b = bounds(kk, ii, ff, overflow);
      const bool symmetric = b.lo != b.nmin;
      at[0][j] = pow2<T>(fi), at[1][j] = step, at[2][j] = b.nmax, at[3][j] = b.lo;
      at[4][j] = ln2 * step, at[5][j] = symmetric ? -ln2 * step : T(0);
      at[6][j] = ln2 * top, at[7][j] = symmetric ? -ln2 * top : -kk * ln2 * top;
    }
    for (T* a : at)  // each array's first period, repeated
      for (int64_t done = period; done < tiled; done *= 2) std::copy_n(a, std::min(done, tiled - done), a + done);
  }
  explicit HgqConstants(torch::Tensor stored) : c(std::move(stored)) { point(); }
  /// What the forward and backward loops over x share besides the widths: a ReLU after the
  /// quantizer, and four rows at a time where x fits in the L2 cache (512 KB; see
  /// kernels::WidthConstants::group_rows).
  void set_pass(const torch::Tensor& x, bool relu) {
    if (relu) w.keep_above = 0;
    w.group_rows = x.numel() * static_cast<int64_t>(x.element_size()) <= (512 << 10);
  }

 private:
  T* c_(int a) { return c.data_ptr<T>() + a * (c.numel() / 8); }
  void point() { w = {c_(0), c_(1), c_(2), c_(3), c_(4), c_(5), c_(6), c_(7), c.numel() / 8}; }
};

/// k, i, f broadcast to each other and laid out periodically along x: one period of widths each.
struct PeriodicWidths {
  torch::Tensor k, i, f;
  int64_t period;
  std::vector<int64_t> shape;  ///< the shape the period's sums reshape to (before sum_to_size)
};

PeriodicWidths periodic_widths(const torch::Tensor& x, const torch::Tensor& k, const torch::Tensor& i,
                               const torch::Tensor& f) {
  auto same = torch::broadcast_tensors({k.detach(), i.detach(), f.detach()});
  auto [kp, period] = periodic(same[0], x, "k");
  auto shape = period == x.numel() && period != same[0].numel() ? x.sizes().vec() : same[0].sizes().vec();
  return {kp, periodic(same[1], x, "i").first, periodic(same[2], x, "f").first, period, shape};
}

/// What hgq_kernel's backward needs besides x: the constants, their period and the shape their
/// sums reshape to.
struct HgqSaved {
  torch::Tensor constants;
  int64_t period = 0;
  std::vector<int64_t> shape;
  bool relu = false;  ///< a ReLU after the quantizer, in the same pass
};

/// One pass over x for trained bit widths (HGQ, CPU): q and, when `slope` is given, the
/// derivatives of q with respect to x, f and i per element, what autograd gives through the
/// composed ops (spec pquantml §3.4): dq/dx = 1 inside the range, dq/df = ln2·(c − q) plus
/// ln2·2^-f on the saturated upper bound (−ln2·2^-f on SAT_SYM's lower), dq/di = ln2·2^i on the
/// upper bound and −k·ln2·2^i (SAT_SYM: −ln2·2^i) on the lower; WRAP: dq/df = ln2·(x − q), no dq/di.
/// i is used as max(i, −f), its gradient passes straight through. The element loop is the
/// vectorised kernels::hgq_range.
HgqSaved hgq_kernel(const torch::Tensor& x, const torch::Tensor& k_in, const torch::Tensor& i_in,
                    const torch::Tensor& f_in, RoundMode round, OverflowMode overflow, bool training,
                    torch::Tensor& q, torch::Tensor* slope, torch::Tensor* grad_f, torch::Tensor* grad_i,
                    bool relu = false) {
  RECORD_FUNCTION("sparq::hgq_quantize", std::vector<c10::IValue>{});  // named in LibTorch's profiler
  TORCH_CHECK(!relu || (overflow != OverflowMode::WRAP && !slope), "hgq_kernel: the ReLU is fused for SAT/SAT_SYM");
  const auto widths = periodic_widths(x, k_in, i_in, f_in);
  const int64_t period = widths.period;
  HgqSaved saved{torch::Tensor(), period, widths.shape, relu};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "hgq_quantize", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t *kp = widths.k.data_ptr<scalar_t>(), *ip = widths.i.data_ptr<scalar_t>(),
                   *fp = widths.f.data_ptr<scalar_t>();
    scalar_t* qp = q.data_ptr<scalar_t>();
    if (overflow == OverflowMode::WRAP && !training) {  // evaluation wrap-around: the per-element rule
      at::parallel_for(0, x.numel(), 16384, [&](int64_t begin, int64_t end) {
        for (int64_t e = begin; e < end; ++e) {
          const int64_t j = e % period;
          const auto [ii, ff] = usable_widths(ip[j], fp[j]);
          qp[e] = std::ldexp(quantize_one<scalar_t>(xp[e], kp[j], ii, ff, round, overflow, false, nullptr),
                             -static_cast<int>(ff)) + scalar_t(0);
        }
      });
      if (slope) {  // the value is wrapped, the derivatives are WRAP's: 1, ln2·(x − q), 0
        slope->fill_(1);
        grad_f->copy_((x - q) * std::log(2.0));
        grad_i->zero_();
      }
      return;
    }
    HgqConstants<scalar_t> constants(kp, ip, fp, period, overflow);
    constants.set_pass(x, relu);
    saved.constants = constants.c;
    scalar_t* sp = slope ? slope->data_ptr<scalar_t>() : nullptr;
    scalar_t* gfp = grad_f ? grad_f->data_ptr<scalar_t>() : nullptr;
    scalar_t* gip = grad_i ? grad_i->data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, x.numel(), 32768, [&](int64_t begin, int64_t end) {
      kernels::hgq_range<scalar_t>(xp, qp, sp, gfp, gip, begin, end, constants.w, round,
                                   overflow != OverflowMode::WRAP);
    });
  });
  return saved;
}

/// The backward of hgq_kernel's training pass, the derivatives recomputed from x (saving them in
/// the forward pass costs three tensors of x's size, written and read again): dx = g·dq/dx (when
/// dx is defined) and the sums of g·dq/df, g·dq/di per width, reduced to f's and i's shapes. The
/// rows of a period are summed in double, in chunks of a fixed size (the result does not depend on
/// the number of threads).
std::pair<torch::Tensor, torch::Tensor> hgq_grad_kernel(const torch::Tensor& x, const torch::Tensor& g,
                                                        const HgqSaved& saved, at::IntArrayRef f_shape,
                                                        at::IntArrayRef i_shape, RoundMode round,
                                                        OverflowMode overflow, torch::Tensor* dx) {
  RECORD_FUNCTION("sparq::hgq_quantize_backward", std::vector<c10::IValue>{});
  // Rows of the tiled period (the last one may be partial), summed per tile entry, then the
  // entries of each width in order.
  const int64_t period = saved.period, tiled = tiled_period(period), n = x.numel();
  const int64_t rows = (n + tiled - 1) / tiled;
  // Chunks of ~16k elements: the 32k-element lanes of a batch of 1,024 run on two threads (the
  // backward pass costs ~7x the forward's per element).
  const int64_t rows_per_chunk = std::max<int64_t>(1, 16384 / tiled), chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;
  std::vector<double> sums(static_cast<size_t>(chunks * 2 * tiled), 0.0);
  double* sp = sums.data();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "hgq_backward", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    scalar_t* dxp = dx ? dx->data_ptr<scalar_t>() : nullptr;
    HgqConstants<scalar_t> constants(saved.constants);
    constants.set_pass(x, saved.relu);
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t begin = c * rows_per_chunk * tiled, end = std::min(n, (c + 1) * rows_per_chunk * tiled);
        double* chunk = sp + c * 2 * tiled;
        kernels::hgq_grad_range<scalar_t>(xp, gp, dxp, chunk, chunk + tiled, begin, end, constants.w, round,
                                          overflow != OverflowMode::WRAP);
      }
    });
  });
  for (int64_t c = 1; c < chunks; ++c)  // the chunks in order, into the first
    for (int64_t j = 0; j < 2 * tiled; ++j) sp[j] += sp[c * 2 * tiled + j];
  for (double* part : {sp, sp + tiled})  // the tiles in order, into the first
    for (int64_t t = period; t < tiled; t += period)
      for (int64_t j = 0; j < period; ++j) part[j] += part[t + j];
  // A copy (also for double x): the sums' vector is freed on return.
  auto total = torch::from_blob(sp, {2, tiled}, torch::kFloat64).narrow(1, 0, period).to(x.scalar_type(), false, true);
  return {total[0].reshape(saved.shape).sum_to_size(f_shape), total[1].reshape(saved.shape).sum_to_size(i_shape)};
}

/// Autograd wrapper of hgq_kernel: gradients to x and to the (broadcast) widths i and f.
struct HgqQuantize : public torch::autograd::Function<HgqQuantize> {
  /// `relu`: relu(q) in the same pass (the CPU's SAT/SAT_SYM only; see fixed_quantize_relu).
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x, torch::Tensor k,
                               torch::Tensor i, torch::Tensor f, int64_t round, int64_t overflow, bool training,
                               bool relu) {
    auto xc = x.contiguous();
    ctx->saved_data["i_shape"] = i.sizes().vec();
    ctx->saved_data["f_shape"] = f.sizes().vec();
    ctx->saved_data["round"] = round;
    ctx->saved_data["overflow"] = overflow;
    const bool wrap = static_cast<OverflowMode>(overflow) == OverflowMode::WRAP;
    auto q = torch::empty_like(xc);
    // One pass forward, x and the widths saved: the backward recomputes the derivatives from x.
    // WRAP moves i in place after the forward pass (to the batch's range): this step's is kept.
#ifdef SPARQ_WITH_CUDA
    if (xc.is_cuda()) {
      TORCH_CHECK(!relu, "HgqQuantize: the fused ReLU is the CPU's");
      auto w = periodic_widths(xc, k, i, f);  // the kernel rounds i and f (as the CPU's HgqConstants do)
      cuda::hgq_quantize(xc, w.k, w.i, w.f, q, static_cast<int>(round), static_cast<int>(overflow));
      ctx->saved_data["shape"] = w.shape;
      ctx->save_for_backward({xc, w.k, wrap ? w.i.clone() : w.i, w.f});
      return q;
    }
#endif
    if (training || !wrap) {
      // The constants of this step's widths kept for the backward (WRAP then moves i in place).
      auto saved = hgq_kernel(xc, k, i, f, static_cast<RoundMode>(round), static_cast<OverflowMode>(overflow),
                              training, q, nullptr, nullptr, nullptr, relu);
      ctx->saved_data["period"] = saved.period;
      ctx->saved_data["shape"] = saved.shape;
      ctx->saved_data["relu"] = relu;
      ctx->save_for_backward({xc, saved.constants});
      return q;
    }
    // WRAP in evaluation (the per-element rule): the derivatives as tensors.
    auto slope = torch::empty_like(xc), gf = torch::empty_like(xc), gi = torch::empty_like(xc);
    hgq_kernel(xc, k, i, f, static_cast<RoundMode>(round), static_cast<OverflowMode>(overflow), training, q, &slope,
               &gf, &gi);
    ctx->save_for_backward({slope, gf, gi});
    return q;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    auto saved = ctx->get_saved_variables();
    const auto& g = grad[0];
    const auto i_shape = ctx->saved_data["i_shape"].toIntVector(), f_shape = ctx->saved_data["f_shape"].toIntVector();
#ifdef SPARQ_WITH_CUDA
    if (saved.size() == 4 && saved[0].is_cuda()) {
      auto gc = g.contiguous();
      const int round = static_cast<int>(ctx->saved_data["round"].toInt()),
                overflow = static_cast<int>(ctx->saved_data["overflow"].toInt());
      if (saved[1].numel() < gc.numel()) {  // widths shared by rows: summed in the kernel
        auto dx = torch::empty_like(gc), sums = torch::empty({2, saved[1].numel()}, gc.options());
        cuda::hgq_backward_sums(saved[0], saved[1], saved[2], saved[3], gc, dx, sums, round, overflow);
        const auto shape = ctx->saved_data["shape"].toIntVector();
        return {dx, torch::Tensor(), sums[1].reshape(shape).sum_to_size(i_shape),
                sums[0].reshape(shape).sum_to_size(f_shape), torch::Tensor(), torch::Tensor(), torch::Tensor(),
                torch::Tensor()};
      }
      auto dx = torch::empty_like(gc), gf = torch::empty_like(gc), gi = torch::empty_like(gc);
      cuda::hgq_backward(saved[0], saved[1], saved[2], saved[3], gc, dx, gf, gi, round, overflow);
      return {dx, torch::Tensor(), gi.sum_to_size(i_shape), gf.sum_to_size(f_shape), torch::Tensor(), torch::Tensor(), torch::Tensor(),
              torch::Tensor()};
    }
#endif
    if (saved.size() == 2) {  // the CPU's training pass: x and the constants
      torch::Tensor dx;
      if (ctx->needs_input_grad(0)) dx = torch::empty_like(saved[0]);
      const HgqSaved kept{saved[1], ctx->saved_data["period"].toInt(), ctx->saved_data["shape"].toIntVector(),
                          ctx->saved_data["relu"].toBool()};
      auto [df, di] = hgq_grad_kernel(saved[0], g.contiguous(), kept, f_shape, i_shape,
                                      static_cast<RoundMode>(ctx->saved_data["round"].toInt()),
                                      static_cast<OverflowMode>(ctx->saved_data["overflow"].toInt()),
                                      dx.defined() ? &dx : nullptr);
      return {dx, torch::Tensor(), di, df, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
    }
    auto di = (g * saved[2]).sum_to_size(i_shape);
    auto df = (g * saved[1]).sum_to_size(f_shape);
    return {g * saved[0], torch::Tensor(), di, df, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

#ifdef SPARQ_WITH_CUDA
/// The CUDA fast path's format: bits given as host scalars (no device read), per tensor, f >= 0,
/// SAT, SAT_SYM or WRAP.
std::optional<cuda::Format> cuda_format(const torch::Tensor& k, const torch::Tensor& i, const torch::Tensor& f,
                                        OverflowMode overflow) {
  for (const auto* t : {&k, &i, &f})
    if (!t->device().is_cpu() || t->numel() != 1) return std::nullopt;
  auto p = kernels::format_constants(k.item<double>(), i.item<double>(), f.item<double>(), overflow);
  if (!p) return std::nullopt;
  return cuda::Format{p->scale, p->step, p->lo, p->nmax, p->modulus, p->inv_modulus, p->signed_type};
}

#endif

/// Autograd wrapper of the fused kernels (CPU loop or CUDA kernel) for bit widths that are not
/// trained. On the GPU the bits come as host scalars (see cuda_format).
struct FusedQuantize : public torch::autograd::Function<FusedQuantize> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x, torch::Tensor k,
                               torch::Tensor i, torch::Tensor f, int64_t round, int64_t overflow, bool training) {
    auto xc = x.contiguous();
    auto q = torch::empty_like(xc);
    auto mode = static_cast<OverflowMode>(overflow);
    ctx->saved_data["overflow"] = overflow;
#ifdef SPARQ_WITH_CUDA
    if (xc.is_cuda()) {
      cuda::quantize(xc, q, *cuda_format(k, i, f, mode), static_cast<int>(round), static_cast<int>(overflow), training);
      ctx->save_for_backward({xc, k, i, f});
      return q;
    }
#endif
    bool vectorised = k.numel() == 1 && i.numel() == 1 && f.numel() == 1 &&
                      kernels::format_constants(k.item<double>(), i.item<double>(), f.item<double>(), mode).has_value();
    if (vectorised) {
      // The slope is 1 (WRAP) or a range test on x (SAT): recomputed in backward, nothing stored.
      fused_kernel(xc, k, i, f, static_cast<RoundMode>(round), mode, training, q, nullptr);
      ctx->save_for_backward({xc, k, i, f});
    } else {
      auto slope = torch::empty_like(xc);
      fused_kernel(xc, k, i, f, static_cast<RoundMode>(round), mode, training, q, &slope);
      ctx->save_for_backward({slope});
    }
    return q;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    auto saved = ctx->get_saved_variables();
    auto mode = static_cast<OverflowMode>(ctx->saved_data["overflow"].toInt());
    torch::Tensor dx;
    if (saved.size() == 1) {
      dx = grad[0] * saved[0];
    } else if (mode == OverflowMode::WRAP) {
      dx = grad[0];
    } else {
      const auto& x = saved[0];
      auto g = grad[0].contiguous();
      dx = torch::empty_like(x);
      saturation_grad(x, g, dx, saved[1], saved[2], saved[3], mode);
    }
    return {dx, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }

  /// dx = g inside the saturating range, 0 outside, on the tensor's device.
  static void saturation_grad(const torch::Tensor& x, const torch::Tensor& g, torch::Tensor& dx, const torch::Tensor& k,
                              const torch::Tensor& i, const torch::Tensor& f, OverflowMode mode) {
#ifdef SPARQ_WITH_CUDA
    if (x.is_cuda()) return cuda::saturation_grad(x, g, dx, *cuda_format(k, i, f, mode));
#endif
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fixed_quantize_backward", [&] {
      auto p = *tensor_format<scalar_t>(k, i, f, mode);
      const scalar_t *xp = x.data_ptr<scalar_t>(), *gp = g.data_ptr<scalar_t>();
      scalar_t* dp = dx.data_ptr<scalar_t>();
      at::parallel_for(0, x.numel(), 32768, [&](int64_t begin, int64_t end) {
        kernels::saturation_grad_range<scalar_t>(xp, gp, dp, begin, end, p);
      });
    });
  }
};

/// Rounded codes of u (no gradient), the tensor form of round_code.
torch::Tensor round_tensor(const torch::Tensor& u, RoundMode mode) {
  auto fl = torch::floor(u), d = u - fl, up = fl + 1;
  switch (mode) {
    case RoundMode::TRN: return fl;
    case RoundMode::TRN_ZERO: return torch::where((u < 0).logical_and(d > 0), up, fl);
    case RoundMode::RND: return torch::where(d >= 0.5, up, fl);
    case RoundMode::RND_MIN_INF: return torch::where(d > 0.5, up, fl);
    case RoundMode::RND_ZERO: return torch::where((d > 0.5).logical_or((d == 0.5).logical_and(u < 0)), up, fl);
    case RoundMode::RND_INF: return torch::where((d > 0.5).logical_or((d == 0.5).logical_and(u > 0)), up, fl);
    case RoundMode::RND_CONV: {
      auto odd = torch::remainder(fl, 2) != 0;
      return torch::where((d > 0.5).logical_or((d == 0.5).logical_and(odd)), up, fl);
    }
  }
  return fl;
}

torch::Tensor tensor_bit(const torch::Tensor& n, const torch::Tensor& b) {
  auto q = torch::floor(n * torch::exp2(-b));
  return torch::remainder(q, 2) != 0;
}

}  // namespace

std::optional<kernels::TensorFormat<double>> kernels::format_constants(double k, double i, double f, OverflowMode overflow) {
  if (overflow == OverflowMode::WRAP_SM || f < 0) return std::nullopt;
  const auto b = bounds(k, i, f, overflow);
  kernels::TensorFormat<double> p;
  p.scale = std::ldexp(1.0, static_cast<int>(f));
  p.step = std::ldexp(1.0, -static_cast<int>(f));
  p.nmax = b.nmax, p.nmin = b.nmin, p.lo = b.lo, p.modulus = b.modulus;
  p.inv_modulus = 1 / p.modulus;
  p.signed_type = k > 0;
  return p;
}

RoundMode parse_round_mode(const std::string& name) {
  std::string n = normalise(name);
  for (int m = 0; m < 7; ++m)
    if (n == kRoundNames[m]) return static_cast<RoundMode>(m);
  throw Error(fmt::format("unknown rounding mode '{}', expected one of {}", name, fmt::join(kRoundNames, ", ")));
}

OverflowMode parse_overflow_mode(const std::string& name) {
  std::string n = normalise(name);
  for (int m = 0; m < 4; ++m)
    if (n == kOverflowNames[m]) return static_cast<OverflowMode>(m);
  throw Error(fmt::format("unknown overflow mode '{}', expected one of {}", name, fmt::join(kOverflowNames, ", ")));
}

const char* to_string(RoundMode mode) { return kRoundNames[static_cast<int>(mode)]; }
const char* to_string(OverflowMode mode) { return kOverflowNames[static_cast<int>(mode)]; }

void FixedFormat::validate() const {
  if (k != 0 && k != 1) throw Error(fmt::format("fixed-point format: k = {} must be 0 or 1", k));
  if (width() < 1)
    throw Error(fmt::format("fixed-point format (k={}, i={}, f={}): width k+i+f = {} must be at least 1", k, i, f,
                            width()));
  if (width() > 64) throw Error(fmt::format("fixed-point format (k={}, i={}, f={}): width {} exceeds 64 bits", k, i, f, width()));
  if (k == 0 && overflow == OverflowMode::WRAP_SM)
    throw Error(fmt::format("fixed-point format (k=0, i={}, f={}): WRAP_SM needs a signed type (k=1); "
                            "ap_ufixed does not support it",
                            i, f));
}

std::string FixedFormat::type_name() const {
  return fmt::format("{}<{},{},AP_{},AP_{}>", k ? "ap_fixed" : "ap_ufixed", width(), k + i, to_string(round),
                     to_string(overflow));
}

double FixedFormat::min_value() const {
  return bounds<double>(k, i, f, overflow).lo * step() + 0.0;  // + 0: an unsigned type's -0 is 0
}

template <typename T>
T quantize_code(T x, T k, T i, T f, RoundMode round, OverflowMode overflow) {
  return quantize_one<T>(x, k, i, f, round, overflow, /*training=*/false, nullptr);
}
template float quantize_code<float>(float, float, float, float, RoundMode, OverflowMode);
template double quantize_code<double>(double, double, double, double, RoundMode, OverflowMode);

namespace {
/// Trained widths on the CPU: the HGQ kernel, through autograd when gradients are on.
torch::Tensor hgq_cpu(const torch::Tensor& x, const torch::Tensor& k, const torch::Tensor& i, const torch::Tensor& f,
                      RoundMode round, OverflowMode overflow, bool training, bool relu) {
  if (torch::GradMode::is_enabled())
    return HgqQuantize::apply(x, k, i, f, static_cast<int64_t>(round), static_cast<int64_t>(overflow), training, relu);
  auto xc = x.contiguous();
  auto q = torch::empty_like(xc);
  hgq_kernel(xc, k, i, f, round, overflow, training, q, nullptr, nullptr, nullptr, relu);
  return q;
}
}  // namespace

torch::Tensor fixed_quantize(const torch::Tensor& x, const torch::Tensor& k, const torch::Tensor& i,
                             const torch::Tensor& f, RoundMode round, OverflowMode overflow, bool training) {
  check_dtype(x);
  bool bits_learn = k.requires_grad() || i.requires_grad() || f.requires_grad();
#ifdef SPARQ_WITH_CUDA
  if (x.is_cuda() && !bits_learn) {
    if (auto p = cuda_format(k, i, f, overflow)) {
      if (x.requires_grad() && torch::GradMode::is_enabled())
        return FusedQuantize::apply(x, k, i, f, static_cast<int64_t>(round), static_cast<int64_t>(overflow), training);
      auto xc = x.contiguous();
      auto q = torch::empty_like(xc);
      cuda::quantize(xc, q, *p, static_cast<int>(round), static_cast<int>(overflow), training);
      return q;
    }
  }
#endif
#ifdef SPARQ_WITH_CUDA
  // Trained widths on the GPU: the one-pass CUDA kernel, except WRAP's evaluation rule and WRAP_SM.
  if (bits_learn && x.is_cuda() &&
      (overflow == OverflowMode::SAT || overflow == OverflowMode::SAT_SYM || (overflow == OverflowMode::WRAP && training))) {
    if (torch::GradMode::is_enabled())
      return HgqQuantize::apply(x, k, i, f, static_cast<int64_t>(round), static_cast<int64_t>(overflow), training,
                                false);
    auto xc = x.contiguous();
    auto w = periodic_widths(xc, k, i, f);
    auto q = torch::empty_like(xc);
    cuda::hgq_quantize(xc, w.k, w.i, w.f, q, static_cast<int>(round), static_cast<int>(overflow));
    return q;
  }
#endif
  if (bits_learn && x.device().is_cpu() && overflow != OverflowMode::WRAP_SM)
    return hgq_cpu(x, k, i, f, round, overflow, training, /*relu=*/false);
  if (bits_learn || !x.device().is_cpu()) return fixed_quantize_composed(x, k, i, f, round, overflow, training);
  auto ke = expand_like(k, x, "k"), ie = expand_like(i, x, "i"), fe = expand_like(f, x, "f");
  if (x.requires_grad() && torch::GradMode::is_enabled())
    return FusedQuantize::apply(x, ke, ie, fe, static_cast<int64_t>(round), static_cast<int64_t>(overflow), training);
  auto xc = x.contiguous();
  auto q = torch::empty_like(xc);
  fused_kernel(xc, ke, ie, fe, round, overflow, training, q, nullptr);
  return q;
}

torch::Tensor fixed_quantize_relu(const torch::Tensor& x, const torch::Tensor& k, const torch::Tensor& i,
                                  const torch::Tensor& f, RoundMode round, OverflowMode overflow, bool training) {
  const bool bits_learn = k.requires_grad() || i.requires_grad() || f.requires_grad();
  if (!bits_learn || !x.device().is_cpu() || (overflow != OverflowMode::SAT && overflow != OverflowMode::SAT_SYM))
    return torch::relu(fixed_quantize(x, k, i, f, round, overflow, training));
  check_dtype(x);
  return hgq_cpu(x, k, i, f, round, overflow, training, /*relu=*/true);
}

torch::Tensor fixed_quantize_composed(const torch::Tensor& x, const torch::Tensor& k, const torch::Tensor& i,
                                      const torch::Tensor& f, RoundMode round, OverflowMode overflow,
                                      bool training) {
  check_dtype(x);
  auto dt = x.scalar_type();
  const bool trained = k.requires_grad() || i.requires_grad() || f.requires_grad();
  auto kk = k.to(x.device(), dt), ii = i.to(x.device(), dt), ff = f.to(x.device(), dt);
  if (trained) {  // trained widths: rounded half to even, straight through
    ii = ii + (torch::round(ii) - ii).detach();
    ff = ff + (torch::round(ff) - ff).detach();
  }
  // i never below -f (the range never empties); the gradient still reaches i (straight through).
  ii = ii + (torch::max(ii, -ff) - ii).detach();
  auto scale = torch::exp2(ff), step = torch::exp2(-ff);
  // Underflowed tiny values keep their sign for rounding (see quantize_one).
  const double tiny = dt == torch::kFloat32 ? std::numeric_limits<float>::denorm_min()
                                            : std::numeric_limits<double>::denorm_min();
  torch::Tensor q;
  if (overflow == OverflowMode::SAT || overflow == OverflowMode::SAT_SYM) {
    auto top = torch::exp2(ii);
    auto hi = top - step;
    auto lo = -kk * top;
    if (overflow == OverflowMode::SAT_SYM) lo = torch::where((kk > 0).logical_and(ii + ff > 0), -hi, lo);
    auto c = torch::where(x > hi, hi, torch::where(x < lo, lo, x));
    auto v = c * scale;
    auto u = v.detach();
    u = torch::where((u == 0).logical_and(c != 0), torch::copysign(torch::full_like(u, tiny), c.detach()), u);
    auto n = round_tensor(u, round);
    q = (n + (v - v.detach())) * step;  // straight through: the value is exactly n, the slope 1
  } else {
    auto v = x * scale;
    auto u = v.detach();
    u = torch::where((u == 0).logical_and(x != 0), torch::copysign(torch::full_like(u, tiny), x.detach()), u);
    auto n = round_tensor(u, round);
    auto target = n;
    torch::Tensor sign = torch::ones_like(u);
    bool wrap = overflow == OverflowMode::WRAP_SM || !training;
    if (wrap) {
      auto span = ii.detach() + ff.detach();
      auto nmax = torch::exp2(span) - 1, nmin = -kk.detach() * torch::exp2(span);
      auto width = kk.detach() + span, modulus = torch::exp2(width);
      auto t = n - modulus * torch::floor(n / modulus);
      t = torch::where(t > nmax, t - modulus, t);
      if (overflow == OverflowMode::WRAP) {
        target = t;
      } else {
        auto inside = (n >= nmin).logical_and(n <= nmax);
        auto fold = inside.logical_not().logical_and(tensor_bit(torch::floor(u), width) != tensor_bit(n, width - 1));
        target = torch::where(inside, n, torch::where(fold, -t - 1, t));
        sign = torch::where(fold, -sign, sign);
      }
    }
    q = (target + sign * (v - v.detach())) * step;
  }
  return q + 0.0;  // -0 becomes 0, as the hardware has no negative zero
}

}  // namespace sparq::quant
