// The fused HGQ loss of one Dense or activation layer on CUDA (built only against a CUDA LibTorch,
// SPARQ_WITH_CUDA): the GPU twin of hgq_loss.cpp's CPU pass, one kernel per layer instead of ~35
// composed ops and as many backward kernels.
#pragma once

#include <cstdint>

namespace sparq::layers::cuda {

constexpr int kMaxTrained = 6;

/// A quantizer whose widths train: its k, i, f (float32, `numel` each) and where the gradient of
/// the loss with respect to f (equal to the one with respect to i) goes.
struct TrainedWidths {
  const float *k = nullptr, *i = nullptr, *f = nullptr;
  float* grad = nullptr;
  double* slope = nullptr;  ///< scratch: d EBOPs / d bits per width element
  int64_t numel = 0;
  double gamma = 0;
  bool wrap = false;  ///< i enters unrounded and outside gamma's sum
};

/// The bits of one lane of the EBOPs formula: a trained quantizer's (`trained` >= 0), a fixed
/// bits tensor (`bits`), or 32 (neither). `numel` 1 broadcasts one width to the whole lane;
/// otherwise the widths are the lane's, element by element.
struct LaneWidths {
  int trained = -1;
  const float* bits = nullptr;
  int64_t numel = 1;
};

struct HgqLossArgs {
  enum Kind { kNone, kDense, kActivation } kind = kNone;
  TrainedWidths trained[kMaxTrained];
  int n_trained = 0;
  /// Dense: input [positions, features], weight [outputs, features], bias [outputs];
  /// activation: input and output [lane] (the output lane may be the input's).
  LaneWidths input, weight, bias, output;
  int64_t positions = 0, features = 0, outputs = 0, lane = 0;
  bool has_bias = false;
  double* sums = nullptr;  ///< scratch, 2·features doubles (Dense)
  const float* beta = nullptr;
  float* value = nullptr;  ///< beta·EBOPs + Σ gamma·(rounded widths)
};

/// One block computes the loss and writes every trained quantizer's gradient
/// (alive ? beta·dEBOPs/dbits : 0) + gamma, as the CPU's HgqBits does.
void hgq_layer_loss(const HgqLossArgs& args);

/// out[t] = in[t]·(*g) for `count` float32 tensors in one launch: the loss's backward (one kernel
/// per layer, not one per width tensor).
constexpr int kMaxScaled = 2 * kMaxTrained;
struct ScaleArgs {
  const float* in[kMaxScaled] = {};
  float* out[kMaxScaled] = {};
  int64_t n[kMaxScaled] = {};
  int count = 0;
  const float* g = nullptr;
};
void scale_by(const ScaleArgs& args);

}  // namespace sparq::layers::cuda
