// What a PQ layer is built with, as plain data: the quantizer spec of each target and the
// module's own settings. compress() fills it from the resolved Plan; C++ users fill it by hand.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "sparq/plan.h"
#include "sparq/quant/format.h"

namespace sparq::layers {

using quant::QuantizerSpec;

/// Which targets a layer quantizes and how. An unset spec leaves that target in float.
struct QuantTargets {
  std::optional<QuantizerSpec> input, weight, bias, output;
  bool enable_quantization = true;  ///< global switch: false makes every quantizer the identity
  /// Sample shapes (no batch axis) of the layer's input and output: HGQ data lanes with
  /// per-channel or per-weight widths are built with them.
  std::vector<int64_t> input_shape, output_shape;
};

/// Everything compress() hands an op's PQ builder for one node.
struct PQSettings {
  QuantTargets targets;
  ModuleSetting module;
};

}  // namespace sparq::layers
