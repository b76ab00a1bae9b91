// Speedup (spec nni-config §5): the model rebuilt with the channels that pruning made zero
// physically removed (filters and rows of Linear/Conv, BatchNorm features, and through residual
// adds), as a float Graph that computes what the masked model computes. A channel goes only
// where it is exactly zero for every input: its producers' rows and biases are masked, and every
// node it passes through keeps zero at zero (a BatchNorm must be masked too, or its shift makes
// the channel a constant that the next layer still sees).
#pragma once

#include <string>
#include <vector>

#include "sparq/models/graph.h"

namespace sparq {

struct SpeedupReport {
  int64_t parameters_before = 0, parameters_after = 0;
  std::vector<std::string> changes;  ///< "conv1: 8 -> 4 channels"
};

/// The shrunk float model and its description. Throws sparq::Error for models it cannot rebuild
/// exactly (enabled quantizers, learned ReLU multipliers).
models::Graph speedup(const models::Graph& model, SpeedupReport* report = nullptr);
/// The GraphSpec speedup() builds (for model YAML output).
models::GraphSpec speedup_spec(const models::Graph& model);

}  // namespace sparq
