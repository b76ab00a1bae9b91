#include "sparq/quant/integer.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <limits>

#include "sparq/error.h"

namespace sparq::quant {

IntegerQuantizerImpl::IntegerQuantizerImpl(const IntegerSpec& spec, std::vector<int64_t> shape, bool is_data)
    : spec_(spec), per_channel_(spec.per_channel && !is_data) {
  spec_.validate();
  if (spec.per_channel && (is_data || shape.empty()))
    throw Error("integer quantizer: per-channel observers apply to weights (dim 0), not to data lanes");
  dims_ = static_cast<int64_t>(shape.size());
  auto range_shape = per_channel_ ? std::vector<int64_t>{shape[0]} : std::vector<int64_t>{};
  min_val = register_buffer("min_val", torch::zeros(range_shape));
  max_val = register_buffer("max_val", torch::zeros(range_shape));
  observed = register_buffer("observed", torch::zeros({}));
  observing = register_buffer("observing", torch::ones({}));
}

void IntegerQuantizerImpl::observe(const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  auto v = x.detach().to(torch::kFloat);
  torch::Tensor lo, hi;
  if (per_channel_) {
    auto flat = v.reshape({v.size(0), -1});
    lo = std::get<0>(flat.min(1)), hi = std::get<0>(flat.max(1));
  } else {
    lo = v.min(), hi = v.max();
  }
  if (observed.item<float>() == 0) {
    min_val.copy_(lo), max_val.copy_(hi);
    observed.fill_(1);
  } else {  // torch's MovingAverageMinMaxObserver: min += c (batch_min - min)
    const double c = spec_.averaging_constant;
    min_val.add_((lo - min_val) * c);
    max_val.add_((hi - max_val) * c);
  }
}

std::pair<torch::Tensor, torch::Tensor> IntegerQuantizerImpl::qparams() const {
  torch::NoGradGuard no_grad;
  const double qmin = static_cast<double>(spec_.qmin()), qmax = static_cast<double>(spec_.qmax());
  const double eps = std::numeric_limits<float>::epsilon();
  auto mn = torch::clamp_max(min_val, 0), mx = torch::clamp_min(max_val, 0);
  torch::Tensor scale, zp;
  if (spec_.symmetric) {
    auto a = torch::maximum(-mn, mx);
    scale = torch::clamp_min(a / static_cast<float>((qmax - qmin) / 2), eps);
    // torch: 0 for signed types, 128 for the default uint8 range, the middle code otherwise
    int64_t mid = spec_.is_signed ? 0 : (spec_.bits == 8 && !spec_.reduce_range) ? 128 : (spec_.qmin() + spec_.qmax()) / 2;
    zp = torch::full_like(scale, static_cast<float>(mid));
  } else {
    scale = torch::clamp_min((mx - mn) / static_cast<float>(qmax - qmin), eps);
    zp = torch::clamp(qmin - torch::round(mn / scale), qmin, qmax);
  }
  return {scale, zp};
}

torch::Tensor IntegerQuantizerImpl::forward(const torch::Tensor& x) {
  if (!enabled) return x;
  if ((is_training() && observing.item<float>() != 0) || observed.item<float>() == 0) observe(x);
  auto [scale, zp] = qparams();
  if (per_channel_) {
    std::vector<int64_t> view(static_cast<size_t>(dims_), 1);
    view[0] = -1;
    scale = scale.view(view), zp = zp.view(view);
  }
  const double qmin = static_cast<double>(spec_.qmin()), qmax = static_cast<double>(spec_.qmax());
  auto inv = 1.0 / scale;
  auto r = torch::round(x * inv) + zp;  // round: half to even, as torch's nearbyint
  auto y = (torch::clamp(r, qmin, qmax) - zp) * scale;
  if (!x.requires_grad()) return y;
  auto inside = ((r >= qmin) & (r <= qmax)).to(x.dtype());
  auto pass = x * inside;  // straight-through inside the range, zero outside
  return pass + (y - pass).detach();
}

QuantFormat IntegerQuantizerImpl::describe() const {
  QuantFormat d;
  d.kind = kind();
  d.enabled = enabled;
  d.granularity = per_channel_ ? Granularity::PerChannel : Granularity::PerTensor;
  d.round = RoundMode::RND_CONV;
  d.overflow = OverflowMode::SAT;
  auto [scale, zp] = qparams();
  auto s = scale.reshape({-1}).to(torch::kDouble).cpu(), z = zp.reshape({-1}).to(torch::kLong).cpu();
  for (int64_t c = 0; c < s.numel(); ++c) {
    d.scale.push_back(s[c].item<double>());
    d.zero_point.push_back(z[c].item<int64_t>());
    d.k.push_back(spec_.is_signed ? 1 : 0);
    d.i.push_back(spec_.bits - (spec_.is_signed ? 1 : 0));
    d.f.push_back(0);
  }
  if (per_channel_) d.shape = {s.numel()};
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
