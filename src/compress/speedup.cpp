#include "sparq/compress/speedup.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <functional>
#include <numeric>
#include <set>

#include "sparq/compress/compress.h"
#include "sparq/error.h"

namespace sparq {

namespace {

using models::Graph;
using models::Node;

bool is_weight_layer(const Node& n) { return n.info && n.info->prunable; }
bool is_batchnorm(const Node& n) { return n.source_op == "BatchNorm1d" || n.source_op == "BatchNorm2d"; }

const std::vector<int64_t>& input_shape(const Graph& g, const Node& n, size_t k = 0) {
  return n.inputs[k] < 0 ? g->input_shape() : g->nodes()[n.inputs[k]].out_shape;
}

/// An op that maps channel c of its input(s) to channel c of its output (BatchNorm, activations,
/// pooling, add): channels can be removed through it.
bool channelwise(const Graph& g, const Node& n) {
  static const std::set<std::string> mixing = {"Softmax", "flatten", "reshape", "concat"};
  if (is_weight_layer(n) || mixing.count(n.source_op) || n.inputs.empty() || n.out_shape.empty()) return false;
  for (size_t k = 0; k < n.inputs.size(); ++k) {
    const auto& in = input_shape(g, n, k);
    if (in.size() != n.out_shape.size() || in[0] != n.out_shape[0]) return false;
  }
  return true;
}

/// The effective (masked, and quantized when enabled) weight and bias of a weight layer or BN.
std::pair<torch::Tensor, torch::Tensor> effective(const Graph& g, const Node& n) {
  auto pq = pq_layer(g, n.name);
  if (auto w = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq)) return {w->effective_weight(), w->effective_bias()};
  auto params = n.module.ptr()->named_parameters(false);
  torch::Tensor weight = params.contains("weight") ? params["weight"] : torch::Tensor();
  torch::Tensor bias = params.contains("bias") ? params["bias"] : torch::Tensor();
  if (pq) {
    if (auto m = pq->mask("weight")) weight = m->apply(weight);
    if (auto m = pq->mask("bias"); m && bias.defined()) bias = m->apply(bias);
  }
  return {weight, bias};
}

/// Per node: which output channels are exactly zero for every input.
std::vector<std::vector<bool>> zero_channels(const Graph& g) {
  const auto& nodes = g->nodes();
  std::vector<std::vector<bool>> z(nodes.size());
  for (size_t i = 0; i < nodes.size(); ++i) {
    const auto& n = nodes[i];
    const int64_t c = n.out_shape.empty() ? 0 : n.out_shape[0];
    z[i].assign(c, false);
    auto in_zero = [&](size_t k) { return n.inputs[k] < 0 ? std::vector<bool>(c, false) : z[n.inputs[k]]; };
    if (is_weight_layer(n)) {
      auto [w, b] = effective(g, n);
      auto rows = (w.reshape({w.size(0), -1}) != 0).any(1);
      for (int64_t r = 0; r < c; ++r) z[i][r] = !rows[r].item<bool>() && (!b.defined() || b[r].item<float>() == 0.f);
    } else if (is_batchnorm(n) && !n.module.is_empty()) {
      auto [w, b] = effective(g, n);
      auto buffers = n.module.ptr()->named_buffers(false);
      double eps = 1e-5;
      if (auto pq = std::dynamic_pointer_cast<layers::PQBatchNormImpl>(pq_layer(g, n.name))) eps = pq->options().eps();
      else if (auto b1 = n.module.ptr()->as<torch::nn::BatchNorm1d>()) eps = b1->options.eps();
      else if (auto b2 = n.module.ptr()->as<torch::nn::BatchNorm2d>()) eps = b2->options.eps();
      auto at_zero = b - w * buffers["running_mean"] / torch::sqrt(buffers["running_var"] + eps);
      auto zin = in_zero(0);
      for (int64_t r = 0; r < c; ++r)
        z[i][r] = (w[r].item<float>() == 0.f && b[r].item<float>() == 0.f) || (zin[r] && at_zero[r].item<float>() == 0.f);
    } else if (n.source_op == "add") {
      for (int64_t r = 0; r < c; ++r) {
        bool all = true;
        for (size_t k = 0; k < n.inputs.size(); ++k) all = all && in_zero(k)[r];
        z[i][r] = all;
      }
    } else if (channelwise(g, n) && !n.module.is_empty() && n.inputs.size() == 1) {
      std::vector<int64_t> shape{1};
      const auto& in = input_shape(g, n);
      shape.insert(shape.end(), in.begin(), in.end());
      torch::nn::AnyModule op = n.module;  // a handle: forward is not const
      auto y = op.forward<torch::Tensor>(torch::zeros(shape));  // does the op keep zero at zero?
      auto keeps = (y.reshape({1, c, -1}) == 0).all(2)[0];
      auto zin = in_zero(0);
      for (int64_t r = 0; r < c; ++r) z[i][r] = zin[r] && keeps[r].item<bool>();
    }
  }
  return z;
}

struct Channels {
  std::vector<int> component;               ///< per node: the channel-connected group it belongs to
  std::map<int, std::vector<int64_t>> kept;  ///< per group: the channels that stay
};

Channels kept_channels(const Graph& g) {
  const auto& nodes = g->nodes();
  const int n = static_cast<int>(nodes.size());
  std::vector<int> parent(n + 1);  // n: the graph input
  std::iota(parent.begin(), parent.end(), 0);
  std::function<int(int)> root = [&](int x) { return parent[x] == x ? x : parent[x] = root(parent[x]); };
  auto id = [&](int i) { return i < 0 ? n : i; };
  for (int i = 0; i < n; ++i)
    if (channelwise(g, nodes[i]))
      for (int in : nodes[i].inputs) parent[root(id(in))] = root(i);
  // Groups whose channels must all stay: the graph input and output, and values a node reads
  // that cannot drop channels (reshape, concat, softmax, a Linear on a 3-d input, grouped convs).
  // A flatten can drop the features of removed channels only when Linears alone read it.
  std::vector<bool> read_by_linears_only(n, true);
  for (const auto& node : nodes)
    for (int in : node.inputs)
      if (in >= 0 && node.source_op != "Linear") read_by_linears_only[in] = false;
  std::set<int> fixed = {root(n), root(id(g->output_index()))};
  for (int i = 0; i < n; ++i) {
    const auto& node = nodes[i];
    if (channelwise(g, node)) continue;
    bool grouped = node.attrs.count("groups") && std::get<int64_t>(node.attrs.at("groups")) != 1;
    if (grouped) fixed.insert(root(i));
    bool reads_channels = (is_weight_layer(node) && !grouped &&
                           (node.source_op != "Linear" || input_shape(g, node, 0).size() == 1)) ||
                          (node.source_op == "flatten" && read_by_linears_only[i]);
    if (!reads_channels)
      for (int in : node.inputs) fixed.insert(root(id(in)));
  }
  auto z = zero_channels(g);
  Channels out;
  out.component.resize(n);
  for (int i = 0; i < n; ++i) {
    int r = out.component[i] = root(i);
    const int64_t c = nodes[i].out_shape.empty() ? 0 : nodes[i].out_shape[0];
    auto& kept = out.kept[r];
    for (int64_t ch = 0; ch < c; ++ch)
      if (fixed.count(r) || !z[i][ch]) kept.push_back(ch);
  }
  for (auto& [r, kept] : out.kept) {
    std::sort(kept.begin(), kept.end());
    kept.erase(std::unique(kept.begin(), kept.end()), kept.end());
  }
  return out;
}

/// The channel indices of node i's value that stay (all of them for the graph input).
std::vector<int64_t> kept_of(const Graph& g, const Channels& ch, int i) {
  if (i < 0) {
    std::vector<int64_t> all(g->input_shape()[0]);
    std::iota(all.begin(), all.end(), 0);
    return all;
  }
  return ch.kept.at(ch.component[i]);
}

/// The features a Linear after `flatten` keeps: every position of each kept channel.
std::vector<int64_t> flattened(const Graph& g, const Channels& ch, const Node& flatten) {
  const auto& in = input_shape(g, flatten);
  int64_t per_channel = 1;
  for (size_t d = 1; d < in.size(); ++d) per_channel *= in[d];
  std::vector<int64_t> out;
  for (int64_t c : kept_of(g, ch, flatten.inputs[0]))
    for (int64_t k = 0; k < per_channel; ++k) out.push_back(c * per_channel + k);
  return out;
}

std::vector<int64_t> input_kept(const Graph& g, const Channels& ch, const Node& n) {
  int in = n.inputs[0];
  if (in >= 0 && g->nodes()[in].source_op == "flatten") return flattened(g, ch, g->nodes()[in]);
  return kept_of(g, ch, in);
}

void check_float(const Graph& g) {
  for (const auto& n : g->nodes()) {
    auto pq = pq_layer(g, n.name);
    if (!pq) continue;
    for (const auto& [target, q] : pq->quantizers())
      if (q->enabled)
        throw Error(fmt::format("speedup: {} ({}) quantizes its {}; speedup rebuilds float models only (prune "
                                "first, then quantize the smaller model)",
                                n.name, n.source_op, target));
    for (const char* lane : {"_input_0", "_output_0"})
      if (pq->mask(lane))
        throw Error(fmt::format("speedup: {} masks its {}; speedup carries weight masks only", n.name, lane));
    if (auto a = std::dynamic_pointer_cast<layers::PQActivationImpl>(pq); a && a->options().relu_multiplier())
      throw Error(fmt::format("speedup: {} has a learned ReLU multiplier, which speedup cannot carry over", n.name));
  }
}

}  // namespace

models::GraphSpec speedup_spec(const Graph& g) {
  check_float(g);
  torch::NoGradGuard no_grad;
  auto ch = kept_channels(g);
  models::GraphSpec spec{g->name(), g->input_shape(), {}, g->nodes()[g->output_index()].name};
  for (size_t i = 0; i < g->nodes().size(); ++i) {
    const auto& n = g->nodes()[i];
    models::NodeSpec s{n.name, n.source_op, {}, n.attrs, ""};
    for (int in : n.inputs) {
      if (in < 0 && i != 0)
        throw Error(fmt::format("speedup: {} reads the graph input after the first node (not supported)", n.name));
      if (in >= 0) s.inputs.push_back(g->nodes()[in].name);
    }
    for (const char* inferred : {"in_features", "in_channels", "num_features"}) s.attrs.erase(inferred);
    const auto kept = static_cast<int64_t>(kept_of(g, ch, static_cast<int>(i)).size());
    if (n.source_op == "Linear") s.attrs["out_features"] = kept;
    if (n.source_op == "Conv1d" || n.source_op == "Conv2d") s.attrs["out_channels"] = kept;
    spec.nodes.push_back(std::move(s));
  }
  return spec;
}

models::Graph speedup(const Graph& g, SpeedupReport* report) {
  auto spec = speedup_spec(g);
  torch::NoGradGuard no_grad;
  auto ch = kept_channels(g);
  Graph small(spec);
  for (size_t i = 0; i < g->nodes().size(); ++i) {
    const auto& n = g->nodes()[i];
    const auto& target = small->nodes()[i];
    if (target.module.is_empty() || (!is_weight_layer(n) && !is_batchnorm(n))) continue;
    auto out = torch::tensor(kept_of(g, ch, static_cast<int>(i)), torch::kInt64);
    auto [w, b] = effective(g, n);
    w = w.index_select(0, out);
    if (is_weight_layer(n)) w = w.index_select(1, torch::tensor(input_kept(g, ch, n), torch::kInt64));
    auto params = target.module.ptr()->named_parameters(false);
    params["weight"].copy_(w);
    if (b.defined()) params["bias"].copy_(b.index_select(0, out));
    if (is_batchnorm(n)) {
      auto from = n.module.ptr()->named_buffers(false), to = target.module.ptr()->named_buffers(false);
      for (const char* k : {"running_mean", "running_var"}) to[k].copy_(from[k].index_select(0, out));
    }
    const int64_t before = n.out_shape[0], after = out.numel();
    if (report && after != before)
      report->changes.push_back(fmt::format("{} ({}): {} -> {} {}", n.name, n.source_op, before, after,
                                            n.source_op == "Linear" ? "features" : "channels"));
  }
  if (report) {
    for (const auto& p : g->parameters()) report->parameters_before += p.numel();
    for (const auto& p : small->parameters()) report->parameters_after += p.numel();
  }
  small->train(g->is_training());
  return small;
}

}  // namespace sparq
