// The Quantizer module: a fixed-point format (k, i, f) per tensor, per output channel or per
// element, applied in forward. Two kinds:
// - fixed: bit widths are buffers. Weight quantizers with per-channel/per-weight granularity
//   re-split their budget b = k + i + f from the data at every training forward (PQuantML).
// - HGQ (High Granularity Quantization): i and f are trainable parameters of a shape known at
//   construction, rounded half-to-even with a straight-through gradient; the task loss reaches
//   them through the rounding and saturation, the EBOPs and gamma terms push them down (spec
//   pquantml §3, anchors §1). Elements whose width reaches zero output 0 in evaluation.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "sparq/quant/fixed_point.h"

namespace sparq::quant {

enum class Granularity { PerTensor, PerChannel, PerWeight };
/// "per_tensor", "per_channel", "per_weight"; throws sparq::Error.
Granularity parse_granularity(const std::string& name);
const char* to_string(Granularity g);

/// A quantizer's format and behaviour, as a Plan gives it for one target.
struct QuantSpec {
  int k = 1, i = 0, f = 7;
  RoundMode round = RoundMode::RND;
  OverflowMode overflow = OverflowMode::SAT;
  Granularity granularity = Granularity::PerTensor;
  bool dynamic = false;  ///< data lanes: re-split i/f from the batch maximum while training
  bool hgq = false;        ///< trainable bit widths
  double hgq_gamma = 0;    ///< HGQ: coefficient of the L1 term gamma * (sum f + sum i)

  FixedFormat format() const { return {k, i, f, round, overflow}; }
  bool operator==(const QuantSpec& o) const {
    return k == o.k && i == o.i && f == o.f && round == o.round && overflow == o.overflow &&
           granularity == o.granularity && dynamic == o.dynamic && hgq == o.hgq && hgq_gamma == o.hgq_gamma;
  }
};

class QuantizerImpl : public torch::nn::Module {
 public:
  /// `shape`: the parameter's shape for weight quantizers (per-channel bits have shape
  /// [C, 1, ...], per-weight bits the full shape); for data lanes the sample shape without the
  /// batch axis (HGQ per-weight data bits have shape [1, *shape], per-channel [1, C, 1, ...];
  /// fixed data lanes are per tensor and ignore it). Throws sparq::Error for an invalid format.
  explicit QuantizerImpl(QuantSpec spec, std::vector<int64_t> shape = {}, bool is_data = false);

  torch::Tensor forward(const torch::Tensor& x);

  const QuantSpec& spec() const { return spec_; }
  bool is_data() const { return is_data_; }
  bool is_hgq() const { return spec_.hgq; }
  /// Bit width of every element of the bits tensor: k + i + f (fixed), k + relu(i + f) with the
  /// straight-through rounding (HGQ: differentiable in i and f).
  torch::Tensor total_bits() const;
  /// The integer (k, i, f) tensors of the bits shape, no gradient (HGQ: clamped and rounded;
  /// an element with k + i + f <= 0 has zero width and holds 0).
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> integer_bits() const;
  /// HGQ: gamma * (sum f + sum i), i left out under WRAP (a 0-d tensor); undefined otherwise.
  torch::Tensor bits_loss() const;
  /// HGQ: clamps i and f to their bounds and rounds them in place (the widths are then final).
  void freeze();
  /// The format of a per-tensor quantizer, or of the first element otherwise.
  FixedFormat format() const;

  bool enabled = true;  ///< false: forward is the identity
  /// Fixed: buffers; b = k + i + f is the budget the dynamic split keeps. HGQ: k buffer, f
  /// parameter, i parameter (buffer tracked from the data under WRAP), b undefined.
  torch::Tensor k, i, f, b;

  /// HGQ bounds of the trainable widths (HGQ2's defaults).
  static constexpr double kMinI = -23, kMaxI = 23, kMinF = -24, kMaxF = 24;

 private:
  void split_bits(const torch::Tensor& magnitude);
  torch::Tensor hgq_forward(const torch::Tensor& x);
  QuantSpec spec_;
  bool is_data_;
  torch::Tensor host_k_, host_i_, host_f_;  ///< per-tensor bits on the host, read once (GPU path)
};
TORCH_MODULE(Quantizer);

}  // namespace sparq::quant
