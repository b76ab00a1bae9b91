#include "sparq/compress/compress.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "sparq/error.h"
#include "sparq/prune/mask_pruner.h"
#include "sparq/prune/methods.h"

namespace sparq {

namespace {

std::optional<quant::QuantizerSpec> target(const ResolvedModule& m, const char* name) {
  auto it = m.targets.find(name);
  return it == m.targets.end() ? std::nullopt : it->second.quantizer;
}

}  // namespace

std::shared_ptr<layers::PQLayer> pq_layer(const models::Graph& graph, const std::string& name) {
  const auto& node = graph->node(name);
  return node.module.is_empty() ? nullptr : std::dynamic_pointer_cast<layers::PQLayer>(node.module.ptr());
}

GraphCost graph_cost(const models::Graph& graph) {
  GraphCost cost;
  for (const auto& node : graph->nodes()) {
    auto pq = pq_layer(graph, node.name);
    if (!pq) continue;
    auto c = pq->cost();
    cost.total.weights += c.weights, cost.total.nonzero += c.nonzero;
    cost.total.weight_bits += c.weight_bits, cost.total.ebops += c.ebops;
    cost.layers.emplace_back(node.name, c);
  }
  return cost;
}

CompressReport compress(models::Graph& graph, const Plan& plan) { return compress(graph, resolve(plan, graph)); }

CompressReport compress(models::Graph& graph, const Resolution& resolution) {
  CompressReport report;
  auto device = graph->parameters().empty() ? torch::Device(torch::kCPU) : graph->parameters()[0].device();
  bool training = graph->is_training();
  bool quantized = false;
  for (const auto& m : resolution.modules) {
    const auto& node = graph->node(m.name);
    if (!m.selected || !node.info || !node.info->pq || node.module.is_empty() || pq_layer(graph, m.name)) continue;
    layers::PQSettings s;
    s.targets.input = target(m, kInput);
    s.targets.output = target(m, kOutput);
    s.targets.weight = target(m, "weight");
    s.targets.bias = target(m, "bias");
    // The sample shapes around the node, for HGQ data lanes.
    s.targets.input_shape = node.inputs.empty() || node.inputs[0] < 0 ? graph->input_shape()
                                                                      : graph->nodes()[node.inputs[0]].out_shape;
    s.targets.output_shape = node.out_shape;
    s.module = m.module;
    quantized |= s.targets.input || s.targets.output || s.targets.weight || s.targets.bias;
    torch::nn::AnyModule pq;
    try {
      torch::NoGradGuard no_grad;
      pq = node.info->pq(node, s);
    } catch (const ConfigError&) {
      throw;
    } catch (const Error& e) {  // a format the plan resolves to for this layer is not valid
      throw ConfigError(fmt::format("{}{}layer {} ({}): {}", m.where, m.where.empty() ? "" : ": ", m.name, m.op, e.what()));
    }
    pq.ptr()->to(device);
    pq.ptr()->train(training);
    graph->replace(m.name, std::move(pq), node.info->pq_class);
    report.replaced.push_back(m.name);
    auto layer = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(graph, m.name));
    if (!layer) continue;
    layer->pruning_first = m.module.pruning_first.value_or(false);
    const auto& weight = m.targets.at("weight");
    if (!weight.pruning) continue;
    auto kind = std::dynamic_pointer_cast<layers::PQDenseImpl>(layer) ? prune::LayerKind::Linear : prune::LayerKind::Conv;
    auto method = prune::make_method(*weight.pruning, layer->weight.sizes().vec(), kind);
    method->to(layer->weight.device());
    layer->set_pruning(method);
    layer->enable_pruning = weight.pruning_active;
  }
  prune::install_masks(resolution, graph);
  // Coverage: what computes in float. Shape-only ops and max pooling keep values on their grid.
  for (const auto& node : graph->nodes()) {
    if (node.info && node.info->keeps_grid) continue;
    auto pq = pq_layer(graph, node.name);
    if (!pq) {
      report.left_float.push_back(fmt::format("{} ({}): {}", node.name, node.op,
                                              node.module.is_empty() ? "built-in op, computes in float"
                                                                     : "no PQ replacement"));
    } else if (!quantized) {
      report.left_float.push_back(fmt::format("{} ({}): quantization disabled", node.name, node.source_op));
    }
  }
  return report;
}

}  // namespace sparq
