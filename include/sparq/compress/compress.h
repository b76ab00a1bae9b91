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

/// Replaces Linear, Conv1d/2d, AvgPool1d/2d, BatchNorm1d/2d and activation nodes by PQ layers,
/// and gives every weight layer the plan's pruning method (enabled or not per layer) and order of
/// pruning and quantization. Weight layers are replaced even with quantization off (pruning lives
/// in them). Throws ConfigError for names the graph lacks, formats that are not valid, and
/// methods not implemented.
CompressReport compress(models::Graph& graph, const Plan& plan);

/// Throws ConfigError if the plan names layers the graph lacks (layer_specific, or weight layers
/// in disable_pruning_for_layers), with the nearest name.
void check_plan_names(const models::Graph& graph, const Plan& plan);

/// Costs of every PQ layer of a graph and their sum.
struct GraphCost {
  std::vector<std::pair<std::string, layers::LayerCost>> layers;
  layers::LayerCost total;
};
GraphCost graph_cost(const models::Graph& graph);

/// The PQ layer of node `name`, or nullptr if the node is not one.
std::shared_ptr<layers::PQLayer> pq_layer(const models::Graph& graph, const std::string& name);

}  // namespace sparq
