// Activations: ReLU, Tanh, Sigmoid, GELU, LeakyReLU, Hardtanh, Softmax; PQ replacement
// PQActivation (the function a Plan's module setting names, e.g. hard_tanh for Tanh).
#include <fmt/format.h>
#include <torch/torch.h>

#include "sparq/error.h"
#include "sparq/layers/pq_layers.h"
#include "sparq/models/graph.h"

namespace sparq::ops {
namespace {

using namespace models;

torch::nn::AnyModule pq_activation(const Node& node, const layers::PQSettings& s, const std::string& function) {
  layers::PQActivationOptions o(s.module.function.value_or(function));
  o.negative_slope(number_attr(node, "negative_slope", 0.01))
      .min_val(number_attr(node, "min_val", -1.0))
      .max_val(number_attr(node, "max_val", 1.0))
      .dim(int_attr(node, "dim", 1))
      .relu_multiplier(s.module.relu_multiplier.value_or(false))
      .targets(s.targets);
  return torch::nn::AnyModule(layers::PQActivation(o));
}

/// One activation op: its float module and the PQActivation function it becomes.
template <typename Module>
bool activation(const std::string& name, std::vector<std::string> aliases, std::string function,
                std::vector<AttrInfo> attrs = {},
                std::function<torch::nn::AnyModule(const AttrReader&)> build = nullptr) {
  OpInfo info;
  info.name = name;
  info.aliases = std::move(aliases);
  info.attrs = std::move(attrs);
  info.build = [build](const NodeSpec& spec, const std::vector<int64_t>&) -> torch::nn::AnyModule {
    if (build) return build(AttrReader(spec));
    if constexpr (std::is_default_constructible_v<typename Module::ContainedType>) return torch::nn::AnyModule(Module());
    throw Error(fmt::format("op {} needs its builder", spec.op));
  };
  info.targets = {kInput, kOutput};
  info.pq = [function](const Node& node, const layers::PQSettings& s) { return pq_activation(node, s, function); };
  info.pq_class = "PQActivation";
  return register_op(std::move(info));
}

const bool registered =
    activation<torch::nn::ReLU>("ReLU", {"relu"}, "relu") && activation<torch::nn::Tanh>("Tanh", {"tanh"}, "tanh") &&
    activation<torch::nn::Sigmoid>("Sigmoid", {"sigmoid"}, "sigmoid") &&
    activation<torch::nn::GELU>("GELU", {"gelu"}, "gelu") &&
    activation<torch::nn::LeakyReLU>("LeakyReLU", {"leaky_relu"}, "leaky_relu", {{"negative_slope", AttrType::Double}},
                                     [](const AttrReader& a) {
                                       return torch::nn::AnyModule(torch::nn::LeakyReLU(
                                           torch::nn::LeakyReLUOptions().negative_slope(a.get_double("negative_slope", 0.01))));
                                     }) &&
    activation<torch::nn::Hardtanh>("Hardtanh", {"hard_tanh"}, "hard_tanh",
                                    {{"min_val", AttrType::Double}, {"max_val", AttrType::Double}},
                                    [](const AttrReader& a) {
                                      double lo = a.get_double("min_val", -1.0), hi = a.get_double("max_val", 1.0);
                                      if (lo > hi) a.fail("min_val", fmt::format("{} is above max_val {}", lo, hi));
                                      return torch::nn::AnyModule(
                                          torch::nn::Hardtanh(torch::nn::HardtanhOptions().min_val(lo).max_val(hi)));
                                    }) &&
    activation<torch::nn::Softmax>("Softmax", {"softmax"}, "softmax", {{"dim", AttrType::Int}}, [](const AttrReader& a) {
      // dim counts the batch axis, as in PyTorch; default: the feature axis.
      return torch::nn::AnyModule(torch::nn::Softmax(torch::nn::SoftmaxOptions(a.get_int("dim", 1))));
    });

}  // namespace
}  // namespace sparq::ops
