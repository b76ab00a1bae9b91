#include "sparq/quant/quantizer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
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

namespace {

/// Shape of the bits tensor: one width per tensor, per channel or per element; data lanes share
/// their widths over the batch axis.
std::vector<int64_t> bits_shape(Granularity g, const std::vector<int64_t>& shape, bool is_data) {
  if (g == Granularity::PerTensor || shape.empty()) return {};
  std::vector<int64_t> s = shape;
  if (g == Granularity::PerChannel) std::fill(s.begin() + 1, s.end(), 1);
  if (is_data) s.insert(s.begin(), 1);
  return s;
}

/// Rounded half to even in the forward pass, the identity in the backward pass.
torch::Tensor ste_round(const torch::Tensor& t) { return t + (torch::round(t) - t).detach(); }

}  // namespace

QuantizerImpl::QuantizerImpl(QuantSpec spec, std::vector<int64_t> shape, bool is_data)
    : spec_(spec), is_data_(is_data) {
  spec_.format().validate();
  if (spec_.hgq) {
    if (spec_.dynamic) throw Error("an HGQ quantizer learns its widths; dynamic_data_quantization does not apply");
    if (is_data_ && shape.empty() && spec_.granularity != Granularity::PerTensor)
      throw Error(fmt::format("an HGQ data quantizer with granularity {} needs the sample shape",
                              to_string(spec_.granularity)));
  } else if (is_data_ || shape.size() < 2) {
    // Fixed data lanes and 1-D parameters (biases, BatchNorm) have one format per tensor.
    spec_.granularity = Granularity::PerTensor;
  }
  auto filled = [&](double v) { return torch::full(bits_shape(spec_.granularity, shape, is_data_), v, torch::kFloat32); };
  k = register_buffer("k", filled(spec_.k));
  if (!spec_.hgq) {
    i = register_buffer("i", filled(spec_.i));
    f = register_buffer("f", filled(spec_.f));
    b = register_buffer("b", filled(spec_.k + spec_.i + spec_.f));
    return;
  }
  f = register_parameter("f", filled(spec_.f));
  // Under WRAP the integer bits follow the data (no gradient reaches them); otherwise they learn.
  i = spec_.overflow == OverflowMode::WRAP ? register_buffer("i", filled(spec_.i)) : register_parameter("i", filled(spec_.i));
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
  if (spec_.hgq) return hgq_forward(x);
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

torch::Tensor QuantizerImpl::hgq_forward(const torch::Tensor& x) {
  const bool training = is_training(), wrap = spec_.overflow == OverflowMode::WRAP;
  // Widths fit an input of the shape they were built for: per axis equal, or 1 (per-channel
  // widths and the batch axis of data lanes broadcast).
  bool fits = k.numel() == 1 || x.dim() == k.dim();
  for (int64_t d = 0; fits && k.numel() > 1 && d < x.dim(); ++d) fits = k.size(d) == x.size(d) || k.size(d) == 1;
  if (!fits)
    throw Error(fmt::format("HGQ quantizer with bit widths of shape [{}] got an input of shape [{}]",
                            fmt::join(k.sizes(), ", "), fmt::join(x.sizes(), ", ")));
  if (training) {
    torch::NoGradGuard no_grad;
    f.clamp_(kMinF, kMaxF);
    if (!wrap) i.clamp_(kMinI, kMaxI);
  }
  auto fr = ste_round(f);
  auto ir = wrap ? i : ste_round(i);
  auto y = fixed_quantize(x, k, ir, fr, spec_.round, spec_.overflow, training);
  if (wrap && training) {
    // The integer bits that hold the batch's largest rounded value (PQuantML: reset every step).
    torch::NoGradGuard no_grad;
    auto a = y.detach().abs();
    if (is_data_) a = std::get<0>(a.max(0, /*keepdim=*/true));
    if (k.numel() == 1) a = a.max();
    auto needed = torch::ceil(torch::log2(a + torch::exp2(-fr.detach()) + 1e-10));
    i.copy_(torch::clamp(needed, kMinI, kMaxI).expand_as(i));
  }
  if (!training) {
    // Zero-width elements hold nothing: HGQ's pruning by bit width.
    torch::NoGradGuard no_grad;
    auto [kk, ii, ff] = integer_bits();
    y = torch::where(kk + ii + ff <= 0, torch::zeros_like(y), y);
  }
  return y;
}

torch::Tensor QuantizerImpl::total_bits() const {
  if (!spec_.hgq) return k + i + f;
  auto ir = spec_.overflow == OverflowMode::WRAP ? i : ste_round(i);
  return k + torch::relu(ir + ste_round(f));
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> QuantizerImpl::integer_bits() const {
  torch::NoGradGuard no_grad;
  if (!spec_.hgq) return {k.clone(), i.clone(), f.clone()};
  auto ff = torch::round(torch::clamp(f, kMinF, kMaxF));
  auto ii = torch::round(spec_.overflow == OverflowMode::WRAP ? i : torch::clamp(i, kMinI, kMaxI));
  return {k.clone(), ii, ff};
}

torch::Tensor QuantizerImpl::bits_loss() const {
  if (!spec_.hgq || spec_.hgq_gamma == 0) return {};
  auto sum = ste_round(f).sum();
  if (spec_.overflow != OverflowMode::WRAP) sum = sum + ste_round(i).sum();
  return spec_.hgq_gamma * sum;
}

void QuantizerImpl::freeze() {
  if (!spec_.hgq) return;
  torch::NoGradGuard no_grad;
  f.clamp_(kMinF, kMaxF).round_();
  if (spec_.overflow != OverflowMode::WRAP) i.clamp_(kMinI, kMaxI);
  i.round_();
}

FixedFormat QuantizerImpl::format() const {
  auto [kk, ii, ff] = integer_bits();
  return {static_cast<int>(kk.flatten()[0].item<float>()), static_cast<int>(ii.flatten()[0].item<float>()),
          static_cast<int>(ff.flatten()[0].item<float>()), spec_.round, spec_.overflow};
}

}  // namespace sparq::quant
