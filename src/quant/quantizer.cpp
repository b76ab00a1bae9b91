#include "sparq/quant/quantizer.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "sparq/error.h"

namespace sparq::quant {

Granularity parse_granularity(const std::string& name) {
  if (name == "per_tensor") return Granularity::PerTensor;
  if (name == "per_channel") return Granularity::PerChannel;
  if (name == "per_weight") return Granularity::PerWeight;
  throw Error(fmt::format("unknown granularity '{}', expected per_tensor, per_channel or per_weight", name));
}

const char* to_string(Granularity g) {
  switch (g) {
    case Granularity::PerTensor: return "per_tensor";
    case Granularity::PerChannel: return "per_channel";
    case Granularity::PerWeight: return "per_weight";
  }
  return "?";
}

QuantizerImpl::QuantizerImpl(QuantSpec spec, std::vector<int64_t> shape, bool is_data)
    : spec_(spec), is_data_(is_data) {
  spec_.format().validate();
  // Data lanes and 1-D parameters (biases, BatchNorm) have one format per tensor.
  if (is_data_ || shape.size() < 2) spec_.granularity = Granularity::PerTensor;
  std::vector<int64_t> bits_shape;
  if (spec_.granularity == Granularity::PerChannel) {
    bits_shape.assign(shape.size(), 1);
    bits_shape[0] = shape[0];
  } else if (spec_.granularity == Granularity::PerWeight) {
    bits_shape = shape;
  }
  auto filled = [&](double v) { return torch::full(bits_shape, v, torch::kFloat32); };
  k = register_buffer("k", filled(spec_.k));
  i = register_buffer("i", filled(spec_.i));
  f = register_buffer("f", filled(spec_.f));
  b = register_buffer("b", filled(spec_.k + spec_.i + spec_.f));
}

void QuantizerImpl::split_bits(const torch::Tensor& magnitude) {
  // The integer part covers the magnitude, the rest of the budget b goes to the fraction:
  // i = clamp(ceil(log2(a + 1e-6)), 0, b - k), f = max(b - i - k, 0).
  torch::NoGradGuard no_grad;
  auto m = torch::ceil(torch::log2(magnitude.to(torch::kFloat32) + 1e-6));
  auto new_i = torch::min(torch::clamp_min(m, 0), b - k);
  i.copy_(new_i.expand_as(i));
  f.copy_(torch::clamp_min(b - i - k, 0));
}

torch::Tensor QuantizerImpl::forward(const torch::Tensor& x) {
  if (!enabled) return x;
  if (is_training()) {
    if (is_data_ && spec_.dynamic) {
      split_bits(x.detach().abs().max());
    } else if (!is_data_ && spec_.granularity == Granularity::PerChannel) {
      split_bits(std::get<0>(x.detach().abs().flatten(1).max(1)).view(i.sizes()));
    } else if (!is_data_ && spec_.granularity == Granularity::PerWeight) {
      split_bits(x.detach().abs());
    }
  }
  // On a GPU, static per-tensor formats go as host numbers: the fused CUDA kernel then never
  // reads the device to learn its constants.
  if (x.is_cuda() && k.numel() == 1 && !(is_data_ && spec_.dynamic)) {
    auto host = [](const torch::Tensor& t) { return torch::full({}, static_cast<double>(t.item<float>())); };
    if (!host_k_.defined()) host_k_ = host(k), host_i_ = host(i), host_f_ = host(f);
    return fixed_quantize(x, host_k_, host_i_, host_f_, spec_.round, spec_.overflow, is_training());
  }
  return fixed_quantize(x, k, i, f, spec_.round, spec_.overflow, is_training());
}

torch::Tensor QuantizerImpl::total_bits() const { return k + i + f; }

FixedFormat QuantizerImpl::format() const {
  return {static_cast<int>(k.flatten()[0].item<float>()), static_cast<int>(i.flatten()[0].item<float>()),
          static_cast<int>(f.flatten()[0].item<float>()), spec_.round, spec_.overflow};
}

}  // namespace sparq::quant
