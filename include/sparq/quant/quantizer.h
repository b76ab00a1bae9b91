// The Quantizer interface and the fixed-point family behind it.
// - Quantizer: what every quantizer kind offers the PQ layers, the losses and the exporters:
//   forward, its bit widths, an optional width loss, freezing, and describe() -> QuantFormat.
//   Kinds register a factory by name ("fixed", "hgq"); make_quantizer(spec) builds one.
// - FixedPointQuantizer: a format (k, i, f) per tensor, per output channel or per element.
//   fixed: bit widths are buffers; weight quantizers with per-channel/per-weight granularity
//   re-split their budget b = k + i + f from the data at every training forward (PQuantML).
//   HGQ (High Granularity Quantization): i and f are trainable parameters of a shape known at
//   construction, rounded half-to-even with a straight-through gradient; the task loss reaches
//   them through the rounding and saturation, the EBOPs and gamma terms push them down (spec
//   pquantml §3, anchors §1). Elements whose width reaches zero output 0 in evaluation.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "sparq/quant/fixed_point.h"
#include "sparq/quant/format.h"

namespace sparq::quant {

/// The interface of every quantizer kind.
class QuantizerImpl : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  /// relu(forward(x)), in one pass where the kind can (PQActivation's ReLU after its input lane).
  virtual torch::Tensor forward_relu(const torch::Tensor& x);
  /// The registered kind ("fixed", "hgq").
  virtual const char* kind() const = 0;
  /// How it quantizes now: widths per element, modes, granularity.
  virtual QuantFormat describe() const = 0;
  /// Bit width of every element of the widths' shape, differentiable where widths are trained.
  virtual torch::Tensor total_bits() const = 0;
  /// The width loss (HGQ: gamma * (sum f + sum i)) as a 0-d tensor; undefined when there is none.
  virtual torch::Tensor bits_loss() const { return {}; }
  /// Makes trained widths final (rounded, clamped); nothing for kinds that train none.
  virtual void freeze() {}
  /// Whether the widths are trained (they then take part in the EBOPs and width losses).
  virtual bool trains_widths() const { return false; }
  /// Whether every output is >= 0 with no gradient below 0 (an unsigned saturating format), so a
  /// ReLU after it is the identity.
  virtual bool clips_negatives() const { return false; }

  bool enabled = true;  ///< false: forward is the identity
};
TORCH_MODULE(Quantizer);

/// Builds a quantizer of one kind. `shape`: the parameter's shape for weight quantizers; for data
/// lanes (`is_data`) the sample shape without the batch axis.
using QuantizerFactory =
    std::function<Quantizer(const QuantizerSpec& spec, const std::vector<int64_t>& shape, bool is_data)>;
/// Registers a kind (called once, by the file that defines it).
bool register_quantizer_kind(const std::string& kind, QuantizerFactory factory);
/// The quantizer of `spec`'s kind. Throws sparq::Error for an invalid format.
Quantizer make_quantizer(const QuantizerSpec& spec, const std::vector<int64_t>& shape = {}, bool is_data = false);
std::vector<std::string> quantizer_kinds();

/// Fixed-point quantizers, fixed or trained (HGQ) widths.
class FixedPointQuantizerImpl : public QuantizerImpl {
 public:
  /// `shape`: the parameter's shape for weight quantizers (per-channel bits have shape
  /// [C, 1, ...], per-weight bits the full shape); for data lanes the sample shape without the
  /// batch axis (HGQ per-weight data bits have shape [1, *shape], per-channel [1, C, 1, ...];
  /// fixed data lanes are per tensor and ignore it). Throws sparq::Error for an invalid format.
  explicit FixedPointQuantizerImpl(const QuantizerSpec& spec, std::vector<int64_t> shape = {}, bool is_data = false);

  torch::Tensor forward(const torch::Tensor& x) override;
  /// HGQ with SAT/SAT_SYM: the ReLU inside the quantizer's pass (fixed_quantize_relu).
  torch::Tensor forward_relu(const torch::Tensor& x) override;
  const char* kind() const override { return hgq_ ? "hgq" : "fixed"; }
  QuantFormat describe() const override;
  /// k + i + f (fixed); k + relu(i + f) with the straight-through rounding (HGQ).
  torch::Tensor total_bits() const override;
  /// HGQ: gamma * (sum f + sum i), i left out under WRAP (a 0-d tensor); undefined otherwise.
  torch::Tensor bits_loss() const override;
  /// HGQ: clamps i and f to their bounds and rounds them in place (the widths are then final).
  void freeze() override;
  bool trains_widths() const override { return hgq_; }
  bool clips_negatives() const override;

  const FixedSpec& spec() const { return spec_; }
  double gamma() const { return gamma_; }
  bool is_data() const { return is_data_; }
  /// The integer (k, i, f) tensors of the bits shape, no gradient (HGQ: clamped and rounded;
  /// an element with k + i + f <= 0 has zero width and holds 0).
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> integer_bits() const;
  /// Fixed per-tensor widths (k, i, f) as host numbers: read from the device once and kept (the
  /// GPU forward's constants; set_widths refreshes them). Throws sparq::Error for other quantizers.
  std::array<double, 3> host_bits();
  /// The format of a per-tensor quantizer, or of the first element otherwise.
  FixedFormat format() const;
  /// Fixed widths: every element gets `int_bits` and `frac_bits` (k kept), the budget b follows
  /// (FITCompress's per-layer formats). Throws sparq::Error for an HGQ quantizer.
  void set_widths(int64_t int_bits, int64_t frac_bits);

  /// Fixed: buffers; b = k + i + f is the budget the dynamic split keeps. HGQ: k buffer, f
  /// parameter, i parameter (buffer tracked from the data under WRAP), b undefined.
  torch::Tensor k, i, f, b;

  /// HGQ bounds of the trainable widths (HGQ2's defaults).
  static constexpr double kMinI = -23, kMaxI = 23, kMinF = -24, kMaxF = 24;

 private:
  void split_bits(const torch::Tensor& magnitude);
  torch::Tensor hgq_forward(const torch::Tensor& x, bool relu = false);
  FixedSpec spec_;
  bool hgq_ = false;
  double gamma_ = 0;
  bool is_data_;
  torch::Tensor host_k_, host_i_, host_f_;  ///< per-tensor bits on the host, read once (GPU path)
};
TORCH_MODULE(FixedPointQuantizer);

/// The fixed-point quantizer behind `q`, or nullptr for another kind.
std::shared_ptr<FixedPointQuantizerImpl> as_fixed_point(const Quantizer& q);

}  // namespace sparq::quant
