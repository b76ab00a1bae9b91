// compress(graph, plan): puts PQ layers in place of the float nodes of a Graph, copying weights,
// biases and BatchNorm statistics, with the per-layer formats of the plan.
#pragma once

#include <string>
#include <vector>

#include "sparq/layers/pq_layers.h"
#include "sparq/models/graph.h"
#include "sparq/plan.h"

namespace sparq {

struct CompressReport {
  std::vector<std::string> replaced;    ///< nodes now PQ layers
  /// Nodes whose values leave the fixed-point grid in float ("name (op): why").
  std::vector<std::string> left_float;
};

/// Replaces Linear, Conv1d/2d, AvgPool1d/2d, BatchNorm1d/2d and activation nodes by PQ layers.
/// Weight layers are replaced even with quantization off (pruning lives in them). Throws
/// ConfigError for a layer override naming no node (with the nearest node name).
CompressReport compress(models::Graph& graph, const Plan& plan);

/// Costs of every PQ layer of a graph and their sum.
struct GraphCost {
  std::vector<std::pair<std::string, layers::LayerCost>> layers;
  layers::LayerCost total;
};
GraphCost graph_cost(const models::Graph& graph);

/// The PQ layer of node `name`, or nullptr if the node is not one.
std::shared_ptr<layers::PQLayer> pq_layer(const models::Graph& graph, const std::string& name);

}  // namespace sparq
