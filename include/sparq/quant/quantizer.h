// The Quantizer module: a fixed-point format (k, i, f) per tensor, per output channel or per
// element, applied in forward. Weight quantizers with per-channel/per-weight granularity re-split
// their bit budget b = k + i + f from the data at every training forward (PQuantML's behaviour).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
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

  FixedFormat format() const { return {k, i, f, round, overflow}; }
  bool operator==(const QuantSpec& o) const {
    return k == o.k && i == o.i && f == o.f && round == o.round && overflow == o.overflow &&
           granularity == o.granularity && dynamic == o.dynamic;
  }
};

class QuantizerImpl : public torch::nn::Module {
 public:
  /// `shape`: the parameter's shape for weight quantizers (per-channel bits have shape
  /// [C, 1, ...], per-weight bits the full shape); empty for data lanes. Throws sparq::Error for an
  /// invalid format.
  explicit QuantizerImpl(QuantSpec spec, std::vector<int64_t> shape = {}, bool is_data = false);

  torch::Tensor forward(const torch::Tensor& x);

  const QuantSpec& spec() const { return spec_; }
  bool is_data() const { return is_data_; }
  /// Bit width k + i + f of every element (broadcast to `shape` when given).
  torch::Tensor total_bits() const;
  /// The format of a per-tensor quantizer, or of the first element otherwise.
  FixedFormat format() const;

  bool enabled = true;  ///< false: forward is the identity
  torch::Tensor k, i, f, b;  ///< buffers; b = k + i + f is the budget the dynamic split keeps

 private:
  void split_bits(const torch::Tensor& magnitude);
  QuantSpec spec_;
  bool is_data_;
  torch::Tensor host_k_, host_i_, host_f_;  ///< per-tensor bits on the host, read once (GPU path)
};
TORCH_MODULE(Quantizer);

}  // namespace sparq::quant
