// The integer quantizer kind ("integer"): value (q - zp) * scale, q an integer in [qmin, qmax],
// with one scale and zero point per tensor or per channel. The method decides where they come
// from and how the rounding's gradient flows:
// - FakeQuant (SparseML's QAT, torch FakeQuantize, spec sparseml §2.12.5): a moving-average
//   min/max observer while training; clamp(round(x * (1/scale)) + zp) with a straight-through
//   gradient inside the range;
// - the NNI quantizers (spec nni-config §3.2-3.4): Qat (EMA of min/max in training, bypass until
//   started), Ptq (running min/max while calibrating, then clamp_round with an identity
//   gradient), Lsq / LsqPlus (the scale, and LSQ+'s zero point, are trained parameters with
//   LSQ's scaled gradients), Dorefa (tanh-normalised weights, [0, 1] outputs, per-batch input
//   ranges), Bnn (sign). NNI's scale / zero-point rules: the range widened to contain 0,
//   symmetric zp = floor((qmax + qmin + 1) / 2), scale >= FLT_EPSILON.
// FakeQuant, Qat and Ptq run fused (CPU loops, CUDA kernels): the observer update and the scale /
// zero point in one pass over the channels, the fake quantization and its gradient in one pass
// over the elements; the composed tensor ops stay as the reference (reference_forward) the tests
// compare them with, bit for bit.
#pragma once

#include <utility>

#include "sparq/quant/quantizer.h"

namespace sparq::quant {

class IntegerQuantizerImpl : public QuantizerImpl {
 public:
  /// `shape`: the parameter's shape for weights; the sample shape (without the batch axis) for
  /// data lanes. Throws sparq::Error for a spec that does not fit (a channel dim the tensor lacks).
  IntegerQuantizerImpl(const IntegerSpec& spec, std::vector<int64_t> shape, bool is_data);

  torch::Tensor forward(const torch::Tensor& x) override;
  const char* kind() const override { return "integer"; }
  QuantFormat describe() const override;
  torch::Tensor total_bits() const override;
  /// Stops the observer: scale and zero point stay as they are.
  void freeze() override;

  /// The scale and zero point now (float32, keepdim per-channel shape or 0-d).
  std::pair<torch::Tensor, torch::Tensor> qparams() const;
  const IntegerSpec& spec() const { return spec_; }

  /// Qat / Ptq: from now on quantize (Ptq: calibration ends, the running range is kept).
  void start();
  bool started() const;
  /// Whether an evaluation-mode forward returns its input unchanged (disabled, Qat before its
  /// start, Qat/Ptq before the first batch, Ptq while calibrating): what exporters write.
  bool passes_through() const;
  /// Ptq: forgets the range and records again (calibration after the model changed).
  void restart_calibration();
  /// The composed-ops forward (the fused paths' reference): same results, many more operations.
  torch::Tensor reference_forward(const torch::Tensor& x);

  /// Observed range (per tensor: 0-d; per channel: keepdim shape); `observed` 0 until the first
  /// batch; `observing` 1 while the observer learns; `active` 0 while Qat/Ptq pass data through;
  /// `calibrating` 1 while Ptq records its range. Buffers, so checkpoints resume them.
  torch::Tensor min_val, max_val, observed, observing, active, calibrating;
  /// Lsq / LsqPlus: the trained scale (and zero point), parameters the optimizer sees.
  torch::Tensor scale, zero_point;

 private:
  /// A 0/1 buffer as the host last read it: read again (one device read) only when the buffer
  /// was changed in place (its version counter moved) or replaced (moved to another device).
  struct HostFlag {
    const void* impl = nullptr;
    int64_t version = -1;
    bool value = false;
  };
  bool flag(const torch::Tensor& t, HostFlag& mirror) const;
  void set_flag(torch::Tensor& t, HostFlag& mirror, bool value);
  mutable HostFlag observing_h_, observed_h_, active_h_, calibrating_h_;

  /// The fused path: whether it runs x; the observer step (0 first batch, 1 running range, 2 EMA,
  /// 3 none: the scale from the range as it is); the fake quantization with its gradient rule.
  bool fused(const torch::Tensor& x) const;
  void fused_observe(const torch::Tensor& x, int update);
  const std::pair<torch::Tensor, torch::Tensor>& fused_qparams();
  torch::Tensor fused_quantize(const torch::Tensor& x, bool nni, bool pass_all);
  /// Scale and zero point (float, one per channel) of the fused path, and the range buffers'
  /// versions they were computed from.
  std::pair<torch::Tensor, torch::Tensor> fused_qp_;
  const void* fused_qp_impl_ = nullptr;
  std::pair<int64_t, int64_t> fused_qp_version_{-1, -1};

  void observe(const torch::Tensor& x, bool running);
  std::pair<torch::Tensor, torch::Tensor> range_qparams(const torch::Tensor& lo, const torch::Tensor& hi) const;
  torch::Tensor reduce_min(const torch::Tensor& x) const;
  torch::Tensor reduce_max(const torch::Tensor& x) const;
  IntegerSpec spec_;
  bool is_data_;
  std::vector<int64_t> range_shape_;  ///< keepdim shape of the per-channel range (with the batch axis for data)
};
TORCH_MODULE(IntegerQuantizer);

/// The integer quantizer behind `q`, or nullptr for another kind.
std::shared_ptr<IntegerQuantizerImpl> as_integer(const Quantizer& q);

}  // namespace sparq::quant
