// The integer quantizer kind ("integer"): torch FakeQuantize semantics (spec sparseml §2.12.5).
// A moving-average min/max observer (per tensor, or per output channel of a weight) gives the
// scale and zero point; the forward is clamp(round(x * (1/scale)) + zp, qmin, qmax) - zp, times
// scale, with a straight-through gradient inside the clamp range. The observer learns while the
// module is training and stops when frozen (SparseML's disable_quantization_observer_epoch).
#pragma once

#include <utility>

#include "sparq/quant/quantizer.h"

namespace sparq::quant {

class IntegerQuantizerImpl : public QuantizerImpl {
 public:
  /// `shape`: the parameter's shape (per-channel observers need its dim 0); data lanes are per tensor.
  IntegerQuantizerImpl(const IntegerSpec& spec, std::vector<int64_t> shape, bool is_data);

  torch::Tensor forward(const torch::Tensor& x) override;
  const char* kind() const override { return "integer"; }
  QuantFormat describe() const override;
  torch::Tensor total_bits() const override;
  /// Stops the observer: scale and zero point stay as they are.
  void freeze() override { observing.fill_(0); }
  bool clips_negatives() const override { return false; }

  /// The scale and zero point the observed range gives (float32, per tensor or per channel).
  std::pair<torch::Tensor, torch::Tensor> qparams() const;
  const IntegerSpec& spec() const { return spec_; }

  /// Observed range (per tensor: 0-d; per channel: [C]); `observed` 0 until the first batch;
  /// `observing` 1 while the observer learns. Buffers, so checkpoints resume them.
  torch::Tensor min_val, max_val, observed, observing;

 private:
  void observe(const torch::Tensor& x);
  IntegerSpec spec_;
  bool per_channel_;
  int64_t dims_ = 0;  ///< the parameter's rank (per-channel broadcasting)
};
TORCH_MODULE(IntegerQuantizer);

/// The integer quantizer behind `q`, or nullptr for another kind.
std::shared_ptr<IntegerQuantizerImpl> as_integer(const Quantizer& q);

}  // namespace sparq::quant
