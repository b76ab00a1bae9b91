// compress(graph, plan): resolves the plan's rules on the graph, then puts PQ layers in place of
// the float nodes the rules select, copying weights, biases and BatchNorm statistics, with the
// resolved quantizer of every target and the pruning method of every weight.
#pragma once

#include <string>
#include <vector>

#include "sparq/compress/resolve.h"
#include "sparq/layers/pq_layers.h"
#include "sparq/models/graph.h"
#include "sparq/plan.h"

namespace sparq {

struct CompressReport {
  std::vector<std::string> replaced;    ///< nodes now PQ layers
  /// Nodes whose values leave the fixed-point grid in float ("name (op): why").
  std::vector<std::string> left_float;
};

/// Builds the PQ layer of every node the resolution selects whose op has one (through the op
/// registry), with its targets' quantizers, its weight's pruning method (active or not) and its
/// module settings. Throws ConfigError for formats that are not valid and methods not implemented.
CompressReport compress(models::Graph& graph, const Resolution& resolution);
/// resolve(plan, graph), then compress.
CompressReport compress(models::Graph& graph, const Plan& plan);

/// Turns on the deferred Conv-BN(-ReLU) folding of layer `lead` (ModuleSetting::fuse_following):
/// with `copy_statistics` the BatchNorm's current parameters and running statistics are folded
/// in first (QAT's start; a resumed run keeps the checkpoint's); its followers are skipped.
void activate_fusion(models::Graph& graph, const std::string& lead, bool copy_statistics);

/// Costs of every PQ layer of a graph and their sum.
struct GraphCost {
  std::vector<std::pair<std::string, layers::LayerCost>> layers;
  layers::LayerCost total;
};
GraphCost graph_cost(const models::Graph& graph);

/// The PQ layer of node `name`, or nullptr if the node is not one.
std::shared_ptr<layers::PQLayer> pq_layer(const models::Graph& graph, const std::string& name);

}  // namespace sparq
