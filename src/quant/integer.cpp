#include "sparq/quant/integer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <limits>

#include "sparq/error.h"

namespace sparq::quant {

namespace {

constexpr double kEps = std::numeric_limits<float>::epsilon();

/// Forward `value`, backward the gradient of `grad_path` (straight-through constructions).
torch::Tensor with_gradient_of(const torch::Tensor& value, const torch::Tensor& grad_path) {
  return grad_path + (value - grad_path).detach();
}

bool nni(IntegerMethod m) { return m != IntegerMethod::FakeQuant; }

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

bool IntegerQuantizerImpl::started() const { return active.item<float>() != 0; }

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
  if (observed.item<float>() == 0) {
    min_val.copy_(lo), max_val.copy_(hi);
    observed.fill_(1);
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
    int64_t mid;
    if (nni(spec_.method)) mid = static_cast<int64_t>(std::floor((qmax + qmin + 1) / 2));  // int 0, uint8 128, uint2 2
    else  // torch: 0 for signed types, 128 for the default uint8 range, the middle code otherwise
      mid = spec_.is_signed ? 0 : (spec_.bits == 8 && !spec_.reduce_range) ? 128 : (spec_.qmin() + spec_.qmax()) / 2;
    zp = torch::full_like(s, static_cast<float>(mid));
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

torch::Tensor IntegerQuantizerImpl::forward(const torch::Tensor& x) {
  if (!enabled) return x;
  const double qmin = static_cast<double>(spec_.qmin()), qmax = static_cast<double>(spec_.qmax());
  // NNI's clamp_round: (round(clamp(zp + x / s, qmin, qmax)) - zp) * s
  auto clamp_round = [&](const torch::Tensor& v, const torch::Tensor& s, const torch::Tensor& zp) {
    return (torch::round(torch::clamp(zp + v / s, qmin, qmax)) - zp) * s;
  };
  switch (spec_.method) {
    case IntegerMethod::FakeQuant: {
      if ((is_training() && observing.item<float>() != 0) || observed.item<float>() == 0) observe(x, false);
      auto [s, zp] = qparams();
      auto r = torch::round(x * (1.0 / s)) + zp;  // round: half to even, as torch's nearbyint
      auto y = (torch::clamp(r, qmin, qmax) - zp) * s;
      if (!x.requires_grad()) return y;
      auto pass = x * ((r >= qmin) & (r <= qmax)).to(x.dtype());  // straight-through inside the range
      return with_gradient_of(y, pass);
    }
    case IntegerMethod::Qat: {
      if (is_training() && observing.item<float>() != 0) observe(x, false);
      if (!started() || observed.item<float>() == 0) return x;  // bypass before the start
      auto [s, zp] = qparams();
      auto q = zp + x / s;
      auto y = clamp_round(x, s, zp);
      if (!x.requires_grad()) return y;
      return with_gradient_of(y, x * ((q >= qmin) & (q <= qmax)).to(x.dtype()));
    }
    case IntegerMethod::Ptq: {
      if (calibrating.item<float>() != 0) {
        observe(x, true);
        return x;
      }
      if (observed.item<float>() == 0) return x;
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
