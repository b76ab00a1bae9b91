#include "sparq/compress/compress.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "sparq/config/yaml.h"
#include "sparq/error.h"
#include "sparq/prune/methods.h"

namespace sparq {

namespace {

template <typename T>
T attr(const models::Node& node, const std::string& key, T fallback) {
  auto it = node.attrs.find(key);
  if (it == node.attrs.end()) return fallback;
  if (auto v = std::get_if<T>(&it->second)) return *v;
  return fallback;
}

std::vector<int64_t> dims_attr(const models::Node& node, const std::string& key, size_t n, int64_t fallback) {
  auto it = node.attrs.find(key);
  if (it == node.attrs.end()) return std::vector<int64_t>(n, fallback);
  if (auto v = std::get_if<int64_t>(&it->second)) return std::vector<int64_t>(n, *v);
  return std::get<std::vector<int64_t>>(it->second);
}

double number_attr(const models::Node& node, const std::string& key, double fallback) {
  auto it = node.attrs.find(key);
  if (it == node.attrs.end()) return fallback;
  if (auto v = std::get_if<double>(&it->second)) return *v;
  if (auto v = std::get_if<int64_t>(&it->second)) return static_cast<double>(*v);
  return fallback;
}

/// The PQ replacement of one node, or an empty AnyModule if the op has none.
torch::nn::AnyModule replacement(const models::Node& node, const QuantPlan& qp, std::vector<int64_t> input_shape) {
  auto t = qp.targets(node.name, node.op);
  t.input_shape = std::move(input_shape);
  t.output_shape = node.out_shape;
  auto& module = *node.module.ptr();
  const std::string& op = node.op;
  torch::NoGradGuard no_grad;
  if (op == "Linear") {
    auto params = module.named_parameters(false);
    auto w = params["weight"];
    auto* b = params.find("bias");
    layers::PQDense dense(w.size(1), w.size(0), b != nullptr, t);
    dense->weight.copy_(w);
    if (b) dense->bias.copy_(*b);
    return torch::nn::AnyModule(dense);
  }
  if (op == "Conv1d" || op == "Conv2d") {
    size_t n = op == "Conv1d" ? 1 : 2;
    auto params = module.named_parameters(false);
    auto w = params["weight"];
    auto* b = params.find("bias");
    int64_t groups = attr<int64_t>(node, "groups", 1);
    std::vector<int64_t> kernel(w.sizes().begin() + 2, w.sizes().end());
    layers::PQConv conv(static_cast<int>(n), w.size(1) * groups, w.size(0), kernel, dims_attr(node, "stride", n, 1),
                        dims_attr(node, "padding", n, 0), dims_attr(node, "dilation", n, 1), groups, b != nullptr, t);
    conv->weight.copy_(w);
    if (b) conv->bias.copy_(*b);
    return torch::nn::AnyModule(conv);
  }
  if (op == "AvgPool1d" || op == "AvgPool2d") {
    size_t n = op == "AvgPool1d" ? 1 : 2;
    auto kernel = dims_attr(node, "kernel_size", n, 1);
    auto stride = node.attrs.count("stride") ? dims_attr(node, "stride", n, 1) : kernel;
    return torch::nn::AnyModule(layers::PQAvgPool(static_cast<int>(n), kernel, stride, dims_attr(node, "padding", n, 0), t));
  }
  if (op == "BatchNorm1d" || op == "BatchNorm2d")
    return torch::nn::AnyModule(layers::PQBatchNorm(module, number_attr(node, "eps", 1e-5),
                                                    number_attr(node, "momentum", 0.1), t));
  if (!qp.enabled) return {};  // activations are replaced only when quantizing
  std::string function = op == "ReLU" ? "relu" : op == "Tanh" ? (qp.use_real_tanh ? "tanh" : "hard_tanh")
                       : op == "Hardtanh" ? "hard_tanh" : op == "LeakyReLU" ? "leaky_relu" : op == "Sigmoid" ? "sigmoid"
                       : op == "GELU" ? "gelu" : op == "Softmax" ? "softmax" : "";
  if (function.empty()) return {};
  layers::PQActivation act(function, t, qp.use_relu_multiplier && !qp.hgq);  // HGQ learns the scale in its bits
  act->negative_slope = number_attr(node, "negative_slope", 0.01);
  act->min_val = number_attr(node, "min_val", -1.0);
  act->max_val = number_attr(node, "max_val", 1.0);
  act->softmax_dim = attr<int64_t>(node, "dim", 1);
  return torch::nn::AnyModule(act);
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

void check_plan_names(const models::Graph& graph, const Plan& plan) {
  std::vector<std::string> names, weight_layers;
  for (const auto& n : graph->nodes()) {
    names.push_back(n.name);
    if (n.op == "Linear" || n.op == "Conv1d" || n.op == "Conv2d" || n.op == "PQLinear" || n.op == "PQConv1d" ||
        n.op == "PQConv2d")
      weight_layers.push_back(n.name);
  }
  if (plan.quantization)
    for (const auto& [name, o] : plan.quantization->layers)
      if (std::find(names.begin(), names.end(), name) == names.end())
        throw ConfigError(fmt::format("{}{}: layer_specific names no layer of model '{}', did you mean '{}'?",
                                      o.where.empty() ? "" : o.where + ": ", name, graph->name(),
                                      config::nearest(name, names)));
  if (plan.pruning)
    for (size_t i = 0; i < plan.pruning->disabled_layers.size(); ++i) {
      const std::string& name = plan.pruning->disabled_layers[i];
      if (std::find(weight_layers.begin(), weight_layers.end(), name) != weight_layers.end()) continue;
      std::string at = i < plan.pruning->disabled_where.size() ? plan.pruning->disabled_where[i] : plan.pruning->where;
      throw ConfigError(fmt::format("{}{}disable_pruning_for_layers names '{}', which is not a weight layer (Linear, "
                                    "Conv1d, Conv2d) of model '{}'; did you mean '{}'?",
                                    at, at.empty() ? "" : ": ", name, graph->name(),
                                    config::nearest(name, weight_layers)));
    }
}

CompressReport compress(models::Graph& graph, const Plan& plan) {
  CompressReport report;
  check_plan_names(graph, plan);
  QuantPlan qp = plan.quantization.value_or(QuantPlan{});
  if (!plan.quantization) qp.enabled = false;
  std::vector<std::string> names;
  for (const auto& n : graph->nodes()) names.push_back(n.name);
  auto device = graph->parameters().empty() ? torch::Device(torch::kCPU) : graph->parameters()[0].device();
  bool training = graph->is_training();
  for (const auto& name : names) {
    const auto& node = graph->node(name);
    if (node.module.is_empty() || pq_layer(graph, name)) continue;
    torch::nn::AnyModule pq;
    try {
      // The sample shape reaching the node (its first input's), for HGQ data lanes.
      auto input_shape = node.inputs.empty() || node.inputs[0] < 0 ? graph->input_shape()
                                                                   : graph->nodes()[node.inputs[0]].out_shape;
      pq = replacement(node, qp, input_shape);
    } catch (const ConfigError&) {
      throw;
    } catch (const Error& e) {  // a format the plan resolves to for this layer is not valid
      throw ConfigError(fmt::format("{}{}layer {} ({}): {}", qp.where, qp.where.empty() ? "" : ": ", name, node.op,
                                    e.what()));
    }
    if (pq.is_empty()) continue;
    pq.ptr()->to(device);
    pq.ptr()->train(training);
    std::string op = node.op;
    graph->replace(name, std::move(pq), "PQ" + op);
    report.replaced.push_back(name);
  }
  for (const auto& name : names) {
    auto layer = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(graph, name));
    if (!layer) continue;
    layer->pruning_first = plan.pruning_first;
    if (!plan.pruning) continue;
    auto kind = std::dynamic_pointer_cast<layers::PQDenseImpl>(layer) ? prune::LayerKind::Linear : prune::LayerKind::Conv;
    auto method = prune::make_method(plan.pruning->spec, layer->weight.sizes().vec(), kind);
    method->to(layer->weight.device());
    layer->set_pruning(method);
    layer->enable_pruning = plan.pruning->enabled_for(name);
  }
  // Coverage: what computes in float. Shape-only ops and max pooling keep values on their grid.
  static const std::vector<std::string> grid_preserving = {"flatten", "reshape", "concat", "Identity", "Dropout",
                                                           "MaxPool1d", "MaxPool2d"};
  for (const auto& node : graph->nodes()) {
    if (std::find(grid_preserving.begin(), grid_preserving.end(), node.op) != grid_preserving.end()) continue;
    auto pq = pq_layer(graph, node.name);
    if (!pq) {
      report.left_float.push_back(fmt::format("{} ({}): {}", node.name, node.op,
                                              node.module.is_empty() ? "built-in op, computes in float"
                                                                     : "no PQ replacement"));
    } else if (!qp.enabled) {
      report.left_float.push_back(fmt::format("{} ({}): quantization disabled", node.name, node.op));
    }
  }
  return report;
}

}  // namespace sparq
