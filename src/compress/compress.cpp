#include "sparq/compress/compress.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
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

/// The nodes that read node `index`'s value.
std::vector<int> readers(const models::Graph& graph, int index) {
  std::vector<int> out;
  for (size_t n = 0; n < graph->nodes().size(); ++n)
    for (int i : graph->nodes()[n].inputs)
      if (i == index) out.push_back(static_cast<int>(n));
  if (index + 1 < static_cast<int>(graph->nodes().size()) && graph->nodes()[index + 1].inputs.empty())
    out.push_back(index + 1);  // a node without inputs reads the one before it
  return out;
}

bool is_batchnorm(const std::string& op) { return op == "BatchNorm1d" || op == "BatchNorm2d"; }

/// The BatchNorm (then ReLU), or ReLU, that alone reads `lead` (SparseML's conv_bn_relus).
std::vector<std::string> following_chain(const models::Graph& graph, const std::string& lead) {
  std::vector<std::string> out;
  int at = graph->index_of(lead);
  for (int step = 0; step < 2; ++step) {
    auto r = readers(graph, at);
    if (r.size() != 1 || at == graph->output_index()) break;
    const auto& next = graph->nodes()[r[0]];
    if (step == 0 && is_batchnorm(next.source_op)) out.push_back(next.name);
    else if (next.source_op == "ReLU") {
      out.push_back(next.name);
      break;
    } else break;
    at = r[0];
  }
  return out;
}

/// Folds `followers` (a BatchNorm and/or a ReLU, each reading the one before) into `layer` and
/// makes them pass their input through (spec nni-config §3.7).
void fuse(models::Graph& graph, const Resolution& resolution, const ResolvedModule& m, layers::PQWeightLayer& layer,
          const std::vector<std::string>& followers) {
  auto fail = [&](const std::string& why) {
    throw ConfigError(fmt::format("{}{}fusing {} with {}: {}", m.where, m.where.empty() ? "" : ": ", m.name,
                                  fmt::format("{}", fmt::join(followers, ", ")), why));
  };
  int at = graph->index_of(m.name);
  for (size_t k = 0; k < followers.size(); ++k) {
    const auto& name = followers[k];
    int index = -1;
    for (size_t n = 0; n < graph->nodes().size(); ++n)
      if (graph->nodes()[n].name == name) index = static_cast<int>(n);
    if (index < 0) fail(fmt::format("'{}' is not a module of the model", name));
    const auto& node = graph->nodes()[index];
    auto r = readers(graph, at);
    if (r.size() != 1 || r[0] != index || at == graph->output_index())
      fail(fmt::format("'{}' must be the only reader of '{}'", name, graph->nodes()[at].name));
    auto rm = resolution.find(name);
    if (pq_layer(graph, name) || (rm && rm->selected))
      fail(fmt::format("'{}' is configured for quantization itself; a follower is not", name));
    if (is_batchnorm(node.source_op) && k == 0) {
      auto params = node.module.ptr()->named_parameters(false);
      auto buffers = node.module.ptr()->named_buffers(false);
      double eps = 1e-5, momentum = 0.1;
      if (auto bn = std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(node.module.ptr()))
        eps = bn->options.eps(), momentum = bn->options.momentum().value_or(0.1);
      else if (auto bn1 = std::dynamic_pointer_cast<torch::nn::BatchNorm1dImpl>(node.module.ptr()))
        eps = bn1->options.eps(), momentum = bn1->options.momentum().value_or(0.1);
      if (!params.contains("weight") || !buffers.contains("running_mean"))
        fail(fmt::format("'{}' needs affine parameters and running statistics", name));
      layer.fold_batchnorm(params["weight"], params["bias"], buffers["running_mean"], buffers["running_var"], eps, momentum);
    } else if (node.source_op == "ReLU" && k + 1 == followers.size()) {
      layer.fused_relu = true;
    } else {
      fail(fmt::format("'{}' ({}) cannot be fused: the chains are Linear/Conv + BatchNorm [+ ReLU] or + ReLU", name,
                       node.source_op));
    }
    layer.fused_followers.push_back(name);
    if (layer.fold_active) graph->set_skipped(name, true);
    at = index;
  }
}

/// The BatchNorm follower's parameters and statistics into the layer's folded copies.
void copy_batchnorm(const models::Graph& graph, layers::PQWeightLayer& layer) {
  torch::NoGradGuard no_grad;
  for (const auto& name : layer.fused_followers) {
    const auto& node = graph->node(name);
    if (!is_batchnorm(node.source_op)) continue;
    auto params = node.module.ptr()->named_parameters(false);
    auto buffers = node.module.ptr()->named_buffers(false);
    layer.bn_weight.copy_(params["weight"]), layer.bn_bias.copy_(params["bias"]);
    layer.bn_mean.copy_(buffers["running_mean"]), layer.bn_var.copy_(buffers["running_var"]);
  }
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

void activate_fusion(models::Graph& graph, const std::string& lead, bool copy_statistics) {
  auto layer = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(graph, lead));
  if (!layer || layer->fused_followers.empty() || layer->fold_active) return;
  if (copy_statistics && layer->folds_batchnorm()) copy_batchnorm(graph, *layer);
  layer->fold_active = true;
  for (const auto& name : layer->fused_followers) graph->set_skipped(name, true);
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
    auto followers = m.module.fuse_with;
    if (followers.empty() && m.module.fuse_following) {
      followers = following_chain(graph, m.name);
      layer->fold_active = false;  // until activate_fusion (QAT's start)
    }
    if (!followers.empty()) fuse(graph, resolution, m, *layer, followers);
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
