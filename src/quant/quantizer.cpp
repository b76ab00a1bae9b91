#include "sparq/quant/quantizer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "sparq/error.h"

#include <map>

namespace sparq::quant {

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

/// round(t) forward, the incoming gradient unchanged backward: one op where the textbook
/// t + (round(t) - t).detach() takes three, with the same values (r - t is exact for |t| < 2^23).
struct SteRound : public torch::autograd::Function<SteRound> {
  static torch::Tensor forward(torch::autograd::AutogradContext*, torch::Tensor t) { return torch::round(t); }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list g) {
    return {g[0]};
  }
};

/// Rounded half to even in the forward pass, the identity in the backward pass.
torch::Tensor ste_round(const torch::Tensor& t) {
  return t.requires_grad() && torch::GradMode::is_enabled() ? SteRound::apply(t) : torch::round(t);
}

}  // namespace

FixedPointQuantizerImpl::FixedPointQuantizerImpl(const QuantizerSpec& spec, std::vector<int64_t> shape, bool is_data)
    : spec_(*fixed_part(spec)), is_data_(is_data) {
  if (auto h = std::get_if<HgqSpec>(&spec)) hgq_ = true, gamma_ = h->gamma;
  spec_.format().validate();
  if (hgq_) {
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
  if (!hgq_) {
    i = register_buffer("i", filled(spec_.i));
    f = register_buffer("f", filled(spec_.f));
    b = register_buffer("b", filled(spec_.k + spec_.i + spec_.f));
    return;
  }
  f = register_parameter("f", filled(spec_.f));
  // Under WRAP the integer bits follow the data (no gradient reaches them); otherwise they learn.
  i = spec_.overflow == OverflowMode::WRAP ? register_buffer("i", filled(spec_.i)) : register_parameter("i", filled(spec_.i));
}

void FixedPointQuantizerImpl::split_bits(const torch::Tensor& magnitude) {
  // The integer part covers the magnitude, the rest of the budget b goes to the fraction:
  // i = clamp(ceil(log2(a + 1e-6)), 0, b - k), f = max(b - i - k, 0).
  torch::NoGradGuard no_grad;
  auto m = torch::ceil(torch::log2(magnitude.to(torch::kFloat32) + 1e-6));
  auto new_i = torch::min(torch::clamp_min(m, 0), b - k);
  i.copy_(new_i.expand_as(i));
  f.copy_(torch::clamp_min(b - i - k, 0));
}

void FixedPointQuantizerImpl::set_widths(int64_t int_bits, int64_t frac_bits) {
  if (hgq_) throw Error("an HGQ quantizer learns its widths; they cannot be set");
  torch::NoGradGuard no_grad;
  i.fill_(static_cast<double>(int_bits));
  f.fill_(static_cast<double>(frac_bits));
  b.copy_(k + i + f);
  host_k_ = host_i_ = host_f_ = torch::Tensor();  // the GPU path re-reads them
}

torch::Tensor FixedPointQuantizerImpl::forward(const torch::Tensor& x) {
  if (!enabled) return x;
  if (hgq_) return hgq_forward(x);
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
    host_bits();
    return fixed_quantize(x, host_k_, host_i_, host_f_, spec_.round, spec_.overflow, is_training());
  }
  return fixed_quantize(x, k, i, f, spec_.round, spec_.overflow, is_training());
}

std::array<double, 3> FixedPointQuantizerImpl::host_bits() {
  if (hgq_ || k.numel() != 1) throw Error("host_bits: only fixed per-tensor widths are host numbers");
  auto host = [](const torch::Tensor& t) { return torch::full({}, static_cast<double>(t.item<float>())); };
  if (!host_k_.defined()) host_k_ = host(k), host_i_ = host(i), host_f_ = host(f);
  return {host_k_.item<double>(), host_i_.item<double>(), host_f_.item<double>()};
}

torch::Tensor QuantizerImpl::forward_relu(const torch::Tensor& x) { return torch::relu(forward(x)); }

torch::Tensor FixedPointQuantizerImpl::forward_relu(const torch::Tensor& x) {
  // WRAP tracks its integer bits from the quantized values before the ReLU: not fused.
  if (!enabled || !hgq_ || spec_.overflow == OverflowMode::WRAP) return QuantizerImpl::forward_relu(x);
  return hgq_forward(x, /*relu=*/true);
}

torch::Tensor FixedPointQuantizerImpl::hgq_forward(const torch::Tensor& x, bool relu) {
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
  // The quantizer rounds the trained widths itself (straight through): no rounding nodes here.
  auto y = relu ? fixed_quantize_relu(x, k, i, f, spec_.round, spec_.overflow, training)
              : fixed_quantize(x, k, i, f, spec_.round, spec_.overflow, training);
  if (wrap && training) {
    // The integer bits that hold the batch's largest rounded value (PQuantML: reset every step).
    torch::NoGradGuard no_grad;
    auto a = y.detach().abs();
    if (is_data_) a = std::get<0>(a.max(0, /*keepdim=*/true));
    if (k.numel() == 1) a = a.max();
    auto needed = torch::ceil(torch::log2(a + torch::exp2(-torch::round(f)) + 1e-10));
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

torch::Tensor FixedPointQuantizerImpl::total_bits() const {
  if (!hgq_) return k + i + f;
  // Recomputed on every call: a cache keyed on the widths' version counter went stale under a
  // replayed CUDA graph, whose in-place updates move no version counter.
  auto ir = spec_.overflow == OverflowMode::WRAP ? i : ste_round(i);
  return k + torch::relu(ir + ste_round(f));
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> FixedPointQuantizerImpl::integer_bits() const {
  torch::NoGradGuard no_grad;
  if (!hgq_) return {k.clone(), i.clone(), f.clone()};
  auto ff = torch::round(torch::clamp(f, kMinF, kMaxF));
  auto ii = torch::round(spec_.overflow == OverflowMode::WRAP ? i : torch::clamp(i, kMinI, kMaxI));
  return {k.clone(), ii, ff};
}

torch::Tensor FixedPointQuantizerImpl::bits_loss() const {
  if (!hgq_ || gamma_ == 0) return {};
  auto sum = ste_round(f).sum();
  if (spec_.overflow != OverflowMode::WRAP) sum = sum + ste_round(i).sum();
  return gamma_ * sum;
}

void FixedPointQuantizerImpl::freeze() {
  if (!hgq_) return;
  torch::NoGradGuard no_grad;
  f.clamp_(kMinF, kMaxF).round_();
  if (spec_.overflow != OverflowMode::WRAP) i.clamp_(kMinI, kMaxI);
  i.round_();
}

FixedFormat FixedPointQuantizerImpl::format() const {
  auto [kk, ii, ff] = integer_bits();
  return {static_cast<int>(kk.flatten()[0].item<float>()), static_cast<int>(ii.flatten()[0].item<float>()),
          static_cast<int>(ff.flatten()[0].item<float>()), spec_.round, spec_.overflow};
}

bool FixedPointQuantizerImpl::clips_negatives() const {
  return spec_.k == 0 && (spec_.overflow == OverflowMode::SAT || spec_.overflow == OverflowMode::SAT_SYM);
}

namespace {
std::vector<int> to_ints(const torch::Tensor& t) {
  auto c = t.to(torch::kCPU, torch::kInt32).contiguous().flatten();
  return std::vector<int>(c.data_ptr<int>(), c.data_ptr<int>() + c.numel());
}
}  // namespace

QuantFormat FixedPointQuantizerImpl::describe() const {
  auto [kk, ii, ff] = integer_bits();
  QuantFormat q;
  q.kind = kind();
  q.enabled = enabled;
  q.granularity = spec_.granularity;
  q.round = spec_.round;
  q.overflow = spec_.overflow;
  q.shape = kk.sizes().vec();
  q.k = to_ints(kk), q.i = to_ints(ii), q.f = to_ints(ff);
  return q;
}

std::shared_ptr<FixedPointQuantizerImpl> as_fixed_point(const Quantizer& q) {
  return q ? std::dynamic_pointer_cast<FixedPointQuantizerImpl>(q.ptr()) : nullptr;
}

// ---- the registry of kinds ----

namespace {
std::map<std::string, QuantizerFactory>& kinds() {
  static std::map<std::string, QuantizerFactory> table;
  return table;
}

Quantizer fixed_point(const QuantizerSpec& spec, const std::vector<int64_t>& shape, bool is_data) {
  return Quantizer(std::static_pointer_cast<QuantizerImpl>(std::make_shared<FixedPointQuantizerImpl>(spec, shape, is_data)));
}
const bool registered = register_quantizer_kind("fixed", fixed_point) && register_quantizer_kind("hgq", fixed_point);
}  // namespace

bool register_quantizer_kind(const std::string& kind, QuantizerFactory factory) {
  kinds()[kind] = std::move(factory);
  return true;
}

Quantizer make_quantizer(const QuantizerSpec& spec, const std::vector<int64_t>& shape, bool is_data) {
  auto it = kinds().find(kind_of(spec));
  if (it == kinds().end()) throw Error(fmt::format("quantizer kind '{}' is not registered", kind_of(spec)));
  return it->second(spec, shape, is_data);
}

std::vector<std::string> quantizer_kinds() {
  std::vector<std::string> names;
  for (const auto& [name, factory] : kinds()) names.push_back(name);
  return names;
}

}  // namespace sparq::quant
