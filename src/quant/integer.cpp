#include "sparq/quant/integer.h"

#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <limits>

#include "quant/integer_kernels.h"
#include "quant/integer_qparams.h"
#ifdef SPARQ_WITH_CUDA
#include "quant/integer_cuda.h"
#endif
#include "sparq/error.h"

namespace sparq::quant {

namespace {

constexpr double kEps = std::numeric_limits<float>::epsilon();

/// Forward `value` exactly, backward the gradient of `grad_path` (straight-through
/// constructions). Not grad_path + (value - grad_path).detach(): that sum rounds, so the forward
/// value can miss the grid by an ulp, or by everything for an input far outside it.
torch::Tensor with_gradient_of(const torch::Tensor& value, const torch::Tensor& grad_path) {
  return value.detach() + (grad_path - grad_path.detach());
}

bool nni(IntegerMethod m) { return m != IntegerMethod::FakeQuant; }

/// The zero point of a symmetric grid.
int64_t symmetric_zero_point(const IntegerSpec& spec) {
  const int64_t qmin = spec.qmin(), qmax = spec.qmax();
  // NNI: floor((qmax + qmin + 1) / 2): int 0, uint8 128, uint2 2
  if (nni(spec.method)) return static_cast<int64_t>(std::floor((static_cast<double>(qmax) + qmin + 1) / 2));
  // torch: 0 for signed types, 128 for the default uint8 range, the middle code otherwise
  return spec.is_signed ? 0 : (spec.bits == 8 && !spec.reduce_range) ? 128 : (qmin + qmax) / 2;
}

/// The element loops over a contiguous x as [outer, channels, inner]: y = fake-quantized x, or,
/// with `grad`, the straight-through gradient.
torch::Tensor integer_loops(const torch::Tensor& x, const torch::Tensor* grad, const torch::Tensor& scale,
                            const torch::Tensor& zero_point, int64_t inner, double qmin, double qmax, bool nni_rule) {
  auto out = torch::empty_like(x);
#ifdef SPARQ_WITH_CUDA
  if (x.is_cuda()) {
    if (grad) cuda::integer_backward(x, *grad, out, scale, zero_point, inner, qmin, qmax, nni_rule);
    else cuda::integer_forward(x, out, scale, zero_point, inner, qmin, qmax, nni_rule);
    return out;
  }
#endif
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparq_integer_quantize", [&] {
    const kernels::IntegerGrid<scalar_t> g{scale.data_ptr<float>(), zero_point.data_ptr<float>(), scale.numel(), inner,
                                           scalar_t(qmin), scalar_t(qmax), nni_rule};
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gp = grad ? grad->data_ptr<scalar_t>() : nullptr;
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, x.numel(), 32768, [&](int64_t begin, int64_t end) {
      if (gp) kernels::integer_backward_range<scalar_t>(xp, gp, op, begin, end, g);
      else kernels::integer_forward_range<scalar_t>(xp, op, begin, end, g);
    });
  });
  return out;
}

/// Autograd wrapper of the fused loops: the gradient reaches x only (the scale and zero point
/// come from the observer), straight through inside the grid, or everywhere (`pass_all`, PTQ).
struct IntegerFakeQuantize : public torch::autograd::Function<IntegerFakeQuantize> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& scale, const torch::Tensor& zero_point, int64_t inner,
                               double qmin, double qmax, bool nni_rule, bool pass_all) {
    ctx->saved_data["inner"] = inner;
    ctx->saved_data["qmin"] = qmin;
    ctx->saved_data["qmax"] = qmax;
    ctx->saved_data["nni"] = nni_rule;
    ctx->saved_data["pass_all"] = pass_all;
    if (!pass_all) ctx->save_for_backward({x, scale, zero_point});
    return integer_loops(x, nullptr, scale, zero_point, inner, qmin, qmax, nni_rule);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    torch::Tensor dx;
    if (ctx->saved_data["pass_all"].toBool()) {
      dx = grad[0];
    } else {
      auto saved = ctx->get_saved_variables();
      auto g = grad[0].contiguous();
      dx = integer_loops(saved[0], &g, saved[1], saved[2], ctx->saved_data["inner"].toInt(),
                         ctx->saved_data["qmin"].toDouble(), ctx->saved_data["qmax"].toDouble(),
                         ctx->saved_data["nni"].toBool());
    }
    return {dx, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor()};
  }
};

}  // namespace

IntegerQuantizerImpl::IntegerQuantizerImpl(const IntegerSpec& spec, std::vector<int64_t> shape, bool is_data)
    : spec_(spec), is_data_(is_data) {
  spec_.validate();
  const int64_t rank = static_cast<int64_t>(shape.size()) + (is_data ? 1 : 0);  // data: with the batch axis
  if (spec.channel_dim >= 0) {
    if (spec.channel_dim >= rank || (is_data && spec.channel_dim == 0))
      throw Error(fmt::format("integer quantizer: channel dim {} does not fit a {} of shape [{}]", spec.channel_dim,
                              is_data ? "data lane" : "parameter", fmt::join(shape, ", ")));
    range_shape_.assign(static_cast<size_t>(rank), 1);
    range_shape_[static_cast<size_t>(spec.channel_dim)] = shape[static_cast<size_t>(spec.channel_dim - (is_data ? 1 : 0))];
  }
  if ((spec.method == IntegerMethod::Dorefa || spec.method == IntegerMethod::Bnn) && spec.channel_dim >= 0)
    throw Error(fmt::format("integer quantizer: the {} method takes no granularity (one scale per tensor)", to_string(spec.method)));
  min_val = register_buffer("min_val", torch::zeros(range_shape_));
  max_val = register_buffer("max_val", torch::zeros(range_shape_));
  observed = register_buffer("observed", torch::zeros({}));
  observing = register_buffer("observing", torch::ones({}));
  const bool waits = spec.method == IntegerMethod::Qat || spec.method == IntegerMethod::Ptq;
  active = register_buffer("active", torch::full({}, waits ? 0.0 : 1.0));
  calibrating = register_buffer("calibrating", torch::full({}, spec.method == IntegerMethod::Ptq ? 1.0 : 0.0));
  if (spec.method == IntegerMethod::Lsq || spec.method == IntegerMethod::LsqPlus) {
    auto s = range_shape_.empty() ? std::vector<int64_t>{1} : range_shape_;
    scale = register_parameter("scale", torch::full(s, 0.01));
    if (spec.method == IntegerMethod::LsqPlus)  // NNI's initial zero point: (qmax - qmin) / 2
      zero_point = register_parameter("zero_point", torch::full(s, static_cast<double>(spec.qmax() - spec.qmin()) / 2));
  }
}

bool IntegerQuantizerImpl::flag(const torch::Tensor& t, HostFlag& mirror) const {
  if (mirror.impl != t.unsafeGetTensorImpl() || mirror.version != t._version())
    mirror = {t.unsafeGetTensorImpl(), t._version(), t.item<float>() != 0};
  return mirror.value;
}

void IntegerQuantizerImpl::set_flag(torch::Tensor& t, HostFlag& mirror, bool value) {
  if (flag(t, mirror) == value) return;
  t.fill_(value ? 1.0 : 0.0);
  mirror = {t.unsafeGetTensorImpl(), t._version(), value};
}

bool IntegerQuantizerImpl::started() const { return flag(active, active_h_); }

bool IntegerQuantizerImpl::passes_through() const {
  if (!enabled) return true;
  const bool seen = flag(observed, observed_h_);
  switch (spec_.method) {
    case IntegerMethod::Qat: return !started() || !seen;
    case IntegerMethod::Ptq: return flag(calibrating, calibrating_h_) || !seen;
    default: return false;
  }
}

void IntegerQuantizerImpl::start() {
  set_flag(active, active_h_, true);
  set_flag(calibrating, calibrating_h_, false);
}

void IntegerQuantizerImpl::restart_calibration() {
  set_flag(observed, observed_h_, false);
  set_flag(active, active_h_, false);
  set_flag(calibrating, calibrating_h_, true);
}

void IntegerQuantizerImpl::freeze() { set_flag(observing, observing_h_, false); }

torch::Tensor IntegerQuantizerImpl::reduce_min(const torch::Tensor& x) const {
  if (range_shape_.empty()) return x.min();
  auto moved = x.transpose(0, spec_.channel_dim).reshape({x.size(spec_.channel_dim), -1});
  return std::get<0>(moved.min(1)).view(range_shape_);
}

torch::Tensor IntegerQuantizerImpl::reduce_max(const torch::Tensor& x) const {
  if (range_shape_.empty()) return x.max();
  auto moved = x.transpose(0, spec_.channel_dim).reshape({x.size(spec_.channel_dim), -1});
  return std::get<0>(moved.max(1)).view(range_shape_);
}

void IntegerQuantizerImpl::observe(const torch::Tensor& x, bool running) {
  torch::NoGradGuard no_grad;
  auto v = x.detach().to(torch::kFloat);
  auto lo = reduce_min(v), hi = reduce_max(v);
  if (!flag(observed, observed_h_)) {
    min_val.copy_(lo), max_val.copy_(hi);
    set_flag(observed, observed_h_, true);
  } else if (running) {  // PTQ: the range of everything seen
    min_val.copy_(torch::minimum(min_val, lo)), max_val.copy_(torch::maximum(max_val, hi));
  } else {  // torch's MovingAverageMinMaxObserver, NNI's EMA: min += c (batch_min - min)
    const double c = spec_.averaging_constant;
    min_val.add_((lo - min_val) * c);
    max_val.add_((hi - max_val) * c);
  }
}

std::pair<torch::Tensor, torch::Tensor> IntegerQuantizerImpl::range_qparams(const torch::Tensor& lo,
                                                                           const torch::Tensor& hi) const {
  torch::NoGradGuard no_grad;
  const double qmin = static_cast<double>(spec_.qmin()), qmax = static_cast<double>(spec_.qmax());
  auto mn = torch::clamp_max(lo, 0), mx = torch::clamp_min(hi, 0);  // the range contains 0
  torch::Tensor s, zp;
  if (spec_.symmetric) {
    auto a = torch::maximum(-mn, mx);
    s = torch::clamp_min(a / static_cast<float>((qmax - qmin) / 2), kEps);
    zp = torch::full_like(s, static_cast<float>(symmetric_zero_point(spec_)));
  } else {
    s = torch::clamp_min((mx - mn) / static_cast<float>(qmax - qmin), kEps);
    zp = torch::clamp(qmin - torch::round(mn / s), qmin, qmax);
  }
  return {s, zp};
}

std::pair<torch::Tensor, torch::Tensor> IntegerQuantizerImpl::qparams() const {
  torch::NoGradGuard no_grad;
  const double qmin = static_cast<double>(spec_.qmin()), qmax = static_cast<double>(spec_.qmax());
  switch (spec_.method) {
    case IntegerMethod::Lsq: return {scale.detach().clone(), torch::zeros_like(scale)};
    case IntegerMethod::LsqPlus: return {scale.detach().clone(), zero_point.detach().clone()};
    case IntegerMethod::Bnn: return {torch::ones({}), torch::zeros({})};
    case IntegerMethod::Dorefa:
      if (!is_data_ || spec_.output_lane) {  // parameters and outputs: the affine grid of [0, 1]
        auto s = torch::full({}, static_cast<float>(1.0 / (qmax - qmin)));
        return {s, torch::full({}, static_cast<float>(qmin))};
      }
      [[fallthrough]];
    default: return range_qparams(min_val, max_val);
  }
}

bool IntegerQuantizerImpl::fused(const torch::Tensor& x) const {
  const auto m = spec_.method;
  if (m != IntegerMethod::FakeQuant && m != IntegerMethod::Qat && m != IntegerMethod::Ptq) return false;
  if ((x.scalar_type() != torch::kFloat && x.scalar_type() != torch::kDouble) || min_val.scalar_type() != torch::kFloat ||
      min_val.device() != x.device())
    return false;
#ifdef SPARQ_WITH_CUDA
  if (x.is_cuda()) return true;
#endif
  return x.is_cpu();
}

void IntegerQuantizerImpl::fused_observe(const torch::Tensor& x, int update) {
  torch::NoGradGuard no_grad;
  const auto how = static_cast<kernels::RangeUpdate>(update);
  torch::Tensor lo = min_val, hi = max_val;  // Keep: the range as it is
  if (how != kernels::RangeUpdate::Keep) {
    if (range_shape_.empty()) {
      std::tie(lo, hi) = torch::aminmax(x.detach());
    } else {
      if (x.dim() <= spec_.channel_dim || x.size(spec_.channel_dim) != min_val.numel())
        throw Error(fmt::format("integer quantizer with {} channels (dim {}) got an input of shape [{}]",
                                min_val.numel(), spec_.channel_dim, fmt::join(x.sizes(), ", ")));
      if (spec_.channel_dim == 0) {  // weights: one reduction over the rows
        std::tie(lo, hi) = torch::aminmax(x.detach().reshape({x.size(0), -1}), 1);
      } else {
        std::vector<int64_t> dims;
        for (int64_t d = 0; d < x.dim(); ++d)
          if (d != spec_.channel_dim) dims.push_back(d);
        lo = torch::amin(x.detach(), dims), hi = torch::amax(x.detach(), dims);
      }
    }
    lo = lo.to(torch::kFloat).contiguous(), hi = hi.to(torch::kFloat).contiguous();
  }
  auto& [s, zp] = fused_qp_;
  if (!s.defined() || s.device() != min_val.device() || s.numel() != min_val.numel())
    s = torch::empty({min_val.numel()}, min_val.options()), zp = torch::empty_like(s);
  const double qmin = static_cast<double>(spec_.qmin()), qmax = static_cast<double>(spec_.qmax());
  const kernels::RangeRule rule{static_cast<float>(qmin), static_cast<float>(qmax),
                                static_cast<float>((qmax - qmin) / 2), static_cast<float>(qmax - qmin),
                                static_cast<float>(symmetric_zero_point(spec_)), static_cast<float>(kEps),
                                static_cast<float>(spec_.averaging_constant), spec_.symmetric};
#ifdef SPARQ_WITH_CUDA
  if (min_val.is_cuda()) {
    cuda::integer_update(lo, hi, min_val, max_val, s, zp, how, rule);
  } else
#endif
  {
    const float *lp = lo.data_ptr<float>(), *hp = hi.data_ptr<float>();
    float *mn = min_val.data_ptr<float>(), *mx = max_val.data_ptr<float>();
    float *sp = s.data_ptr<float>(), *zpp = zp.data_ptr<float>();
    for (int64_t c = 0; c < min_val.numel(); ++c) kernels::update_channel(lp[c], hp[c], mn[c], mx[c], sp[c], zpp[c], how, rule);
  }
  if (how != kernels::RangeUpdate::Keep)  // written in place, outside the tensor ops: say so to the version counters
    min_val.unsafeGetTensorImpl()->bump_version(), max_val.unsafeGetTensorImpl()->bump_version();
  fused_qp_impl_ = min_val.unsafeGetTensorImpl();
  fused_qp_version_ = {min_val._version(), max_val._version()};
}

const std::pair<torch::Tensor, torch::Tensor>& IntegerQuantizerImpl::fused_qparams() {
  // The range changed outside the fused path (a checkpoint, a calibration table, a move): recompute.
  if (!fused_qp_.first.defined() || fused_qp_impl_ != min_val.unsafeGetTensorImpl() ||
      fused_qp_version_ != std::pair<int64_t, int64_t>{min_val._version(), max_val._version()})
    fused_observe(min_val, static_cast<int>(kernels::RangeUpdate::Keep));
  return fused_qp_;
}

torch::Tensor IntegerQuantizerImpl::fused_quantize(const torch::Tensor& x, bool nni_rule, bool pass_all) {
  const auto& [s, zp] = fused_qparams();
  auto xc = x.contiguous();
  int64_t inner = 1;
  if (range_shape_.empty()) inner = std::max<int64_t>(xc.numel(), 1);
  else
    for (int64_t d = spec_.channel_dim + 1; d < xc.dim(); ++d) inner *= xc.size(d);
  const double qmin = static_cast<double>(spec_.qmin()), qmax = static_cast<double>(spec_.qmax());
  if (xc.requires_grad() && torch::GradMode::is_enabled())
    return IntegerFakeQuantize::apply(xc, s, zp, inner, qmin, qmax, nni_rule, pass_all);
  return integer_loops(xc, nullptr, s, zp, inner, qmin, qmax, nni_rule);
}

torch::Tensor IntegerQuantizerImpl::forward(const torch::Tensor& x) {
  if (!enabled) return x;
  if (!fused(x)) return reference_forward(x);
  const bool first = !flag(observed, observed_h_);
  auto observe_batch = [&](bool running) {
    fused_observe(x, static_cast<int>(first     ? kernels::RangeUpdate::First
                                      : running ? kernels::RangeUpdate::Running
                                                : kernels::RangeUpdate::Average));
    set_flag(observed, observed_h_, true);
  };
  const bool learning = is_training() && flag(observing, observing_h_);
  switch (spec_.method) {
    case IntegerMethod::FakeQuant:
      if (learning || first) observe_batch(false);
      return fused_quantize(x, /*nni=*/false, /*pass_all=*/false);
    case IntegerMethod::Qat:
      if (learning) observe_batch(false);
      if (!started() || !flag(observed, observed_h_)) return x;  // bypass before the start
      return fused_quantize(x, /*nni=*/true, /*pass_all=*/false);
    case IntegerMethod::Ptq:
      if (flag(calibrating, calibrating_h_)) {
        observe_batch(true);
        return x;
      }
      if (first) return x;
      return fused_quantize(x, /*nni=*/true, /*pass_all=*/true);  // identity gradient
    default: return reference_forward(x);
  }
}

torch::Tensor IntegerQuantizerImpl::reference_forward(const torch::Tensor& x) {
  if (!enabled) return x;
  const double qmin = static_cast<double>(spec_.qmin()), qmax = static_cast<double>(spec_.qmax());
  // NNI's clamp_round: (round(clamp(zp + x / s, qmin, qmax)) - zp) * s
  auto clamp_round = [&](const torch::Tensor& v, const torch::Tensor& s, const torch::Tensor& zp) {
    return (torch::round(torch::clamp(zp + v / s, qmin, qmax)) - zp) * s;
  };
  switch (spec_.method) {
    case IntegerMethod::FakeQuant: {
      if ((is_training() && flag(observing, observing_h_)) || !flag(observed, observed_h_)) observe(x, false);
      auto [s, zp] = qparams();
      auto r = torch::round(x * (1.0 / s)) + zp;  // round: half to even, as torch's nearbyint
      auto y = (torch::clamp(r, qmin, qmax) - zp) * s;
      if (!x.requires_grad()) return y;
      auto pass = x * ((r >= qmin) & (r <= qmax)).to(x.dtype());  // straight-through inside the range
      return with_gradient_of(y, pass);
    }
    case IntegerMethod::Qat: {
      if (is_training() && flag(observing, observing_h_)) observe(x, false);
      if (!started() || !flag(observed, observed_h_)) return x;  // bypass before the start
      auto [s, zp] = qparams();
      auto q = zp + x / s;
      auto y = clamp_round(x, s, zp);
      if (!x.requires_grad()) return y;
      return with_gradient_of(y, x * ((q >= qmin) & (q <= qmax)).to(x.dtype()));
    }
    case IntegerMethod::Ptq: {
      if (flag(calibrating, calibrating_h_)) {
        observe(x, true);
        return x;
      }
      if (!flag(observed, observed_h_)) return x;
      auto [s, zp] = qparams();
      return with_gradient_of(clamp_round(x, s, zp), x);  // identity gradient
    }
    case IntegerMethod::Lsq:
    case IntegerMethod::LsqPlus: {
      // LSQ's gradient scale g = 1 / sqrt(qmax * numel) on the step size
      double n = static_cast<double>(qmax) * static_cast<double>(x.numel());
      double g = n > 0 ? 1.0 / std::sqrt(n) : 1.0;
      auto s = with_gradient_of(scale, scale * g);  // forward s, gradient g * grad
      auto zp = spec_.method == IntegerMethod::LsqPlus ? zero_point : torch::zeros_like(scale);
      auto qc = torch::clamp(x / s + zp, qmin, qmax);
      auto rounded = with_gradient_of(torch::round(qc), qc);  // round with an identity gradient
      return (rounded - zp) * s;
    }
    case IntegerMethod::Dorefa: {
      if (!is_data_) {  // weights: tanh, normalised to [0, 1], quantized, back to [-1, 1]
        auto t = torch::tanh(x);
        auto u = t / (2 * t.abs().max().detach()) + 0.5;
        auto [s, zp] = qparams();
        return 2 * with_gradient_of(clamp_round(u, s, zp), u) - 1;
      }
      if (spec_.output_lane) {
        auto c = torch::clamp(x, 0, 1);
        auto [s, zp] = qparams();
        return with_gradient_of(clamp_round(c, s, zp), c);
      }
      auto [s, zp] = range_qparams(reduce_min(x.detach()), reduce_max(x.detach()));  // this batch's range
      return with_gradient_of(clamp_round(x, s, zp), x);
    }
    case IntegerMethod::Bnn: {
      auto y = torch::where(x >= 0, torch::ones_like(x), -torch::ones_like(x));
      auto path = spec_.output_lane ? x * (x.abs() <= 1).to(x.dtype()) : x;  // outputs: no gradient beyond |x| > 1
      return with_gradient_of(y, path);
    }
  }
  return x;
}

QuantFormat IntegerQuantizerImpl::describe() const {
  QuantFormat d;
  d.kind = kind();
  d.enabled = enabled;
  d.granularity = range_shape_.empty() ? Granularity::PerTensor : Granularity::PerChannel;
  d.round = RoundMode::RND_CONV;
  d.overflow = OverflowMode::SAT;
  auto [s_t, z_t] = qparams();
  auto s = s_t.reshape({-1}).to(torch::kDouble).cpu(), z = z_t.reshape({-1}).to(torch::kDouble).cpu();
  for (int64_t c = 0; c < s.numel(); ++c) {
    d.scale.push_back(s[c].item<double>());
    d.zero_point.push_back(static_cast<int64_t>(std::nearbyint(z[c].item<double>())));
    d.k.push_back(spec_.is_signed ? 1 : 0);
    d.i.push_back(spec_.bits - (spec_.is_signed ? 1 : 0));
    d.f.push_back(0);
  }
  if (!range_shape_.empty()) d.shape = {s.numel()};
  d.qmin = spec_.qmin(), d.qmax = spec_.qmax();
  return d;
}

torch::Tensor IntegerQuantizerImpl::total_bits() const {
  return torch::full({}, static_cast<float>(spec_.bits), min_val.options());
}

std::shared_ptr<IntegerQuantizerImpl> as_integer(const Quantizer& q) {
  return q ? std::dynamic_pointer_cast<IntegerQuantizerImpl>(q.ptr()) : nullptr;
}

namespace {
const bool registered = register_quantizer_kind("integer", [](const QuantizerSpec& spec, const std::vector<int64_t>& shape,
                                                               bool is_data) {
  return Quantizer(std::static_pointer_cast<QuantizerImpl>(
      std::make_shared<IntegerQuantizerImpl>(std::get<IntegerSpec>(spec), shape, is_data)));
});
}  // namespace

}  // namespace sparq::quant
