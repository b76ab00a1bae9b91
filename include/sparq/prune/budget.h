// The global pruning budget of PDP and Wanda (spec pquantml-pruning §2.3.7): one magnitude
// threshold over the weights of all layers, turned into a per-layer fraction to prune.
#pragma once

#include <torch/types.h>

#include <vector>

namespace sparq::prune {

/// For target sparsity `sparsity` over all `weights` together: the fraction of each layer's
/// weights whose magnitude lies below the global threshold (float32-rounded, as PQuantML).
/// Sparsity 0 gives 0 for every layer.
std::vector<double> layer_budgets(const std::vector<torch::Tensor>& weights, double sparsity);

}  // namespace sparq::prune
