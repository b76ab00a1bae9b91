// The dialect-neutral Plan: what every config dialect (PQuantML, NNI, SparseML) is parsed into.
// Nothing downstream of config/ knows which dialect a setting came from.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "sparq/layers/pq_layers.h"
#include "sparq/quant/quantizer.h"

namespace sparq {

/// A per-layer override of one target's format ("input", "weight", "bias", "output").
struct TargetOverride {
  std::optional<int> k, i, f;
  std::optional<bool> quantize;  ///< data targets: switch the lane on or off
};

/// Overrides of one layer, by target; `where` is the config position for errors.
struct LayerOverride {
  std::map<std::string, TargetOverride> targets;
  std::string where;
};

/// How layers are quantized: global defaults for data lanes and parameters, per-layer overrides.
struct QuantPlan {
  bool enabled = true;               ///< false: PQ layers run in float (pruning still applies)
  quant::QuantSpec weight{1, 0, 7};  ///< weights and biases
  quant::QuantSpec data{0, 0, 7};    ///< inputs, outputs, activations
  bool quantize_input = true, quantize_output = false;
  bool use_real_tanh = false;        ///< Tanh stays tanh; otherwise the hardware-friendly hard tanh
  bool use_relu_multiplier = false;  ///< learned power-of-two scale in front of each ReLU
  std::map<std::string, LayerOverride> layers;  ///< by node name

  /// The quantizers of node `name` whose op is `op` (PyTorch name: Linear, Conv2d, ReLU, ...),
  /// defaults and op rules first, then the node's overrides.
  layers::QuantTargets targets(const std::string& name, const std::string& op) const;
};

struct Plan {
  std::optional<QuantPlan> quantization;  ///< absent: float model
};

}  // namespace sparq
