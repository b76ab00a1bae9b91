// BatchNorm1d/2d; PQ replacement PQBatchNorm1d/2d (quantized input, scale and shift; no output).
#include <fmt/format.h>
#include <torch/torch.h>

#include "sparq/layers/pq_layers.h"
#include "sparq/models/graph.h"

namespace sparq::ops {
namespace {

using namespace models;

template <int N>
torch::nn::AnyModule build_batchnorm(const NodeSpec& spec, const std::vector<int64_t>& in) {
  AttrReader a(spec);
  if (N == 2) a.need_rank(in, 3, "[channels, height, width]");
  else if (in.size() != 1 && in.size() != 2) a.need_rank(in, 1, "[features] or [channels, length]");
  int64_t c = a.inferred("num_features", in[0], in);
  double eps = a.get_double("eps", 1e-5), momentum = a.get_double("momentum", 0.1);
  if (!(eps > 0)) a.fail("eps", fmt::format("{} must be > 0", eps));
  if (momentum < 0 || momentum > 1) a.fail("momentum", fmt::format("{} is out of range, expected 0..1", momentum));
  if constexpr (N == 1) return torch::nn::AnyModule(torch::nn::BatchNorm1d(torch::nn::BatchNorm1dOptions(c).eps(eps).momentum(momentum)));
  else return torch::nn::AnyModule(torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(c).eps(eps).momentum(momentum)));
}

torch::nn::AnyModule pq_batchnorm(const Node& node, const layers::PQSettings& s) {
  auto options = layers::PQBatchNormOptions(0)
                     .eps(number_attr(node, "eps", 1e-5))
                     .momentum(number_attr(node, "momentum", 0.1))
                     .targets(s.targets);
  return torch::nn::AnyModule(layers::PQBatchNorm(*node.module.ptr(), options));
}

const std::vector<AttrInfo> kAttrs = {{"num_features", AttrType::Int}, {"eps", AttrType::Double}, {"momentum", AttrType::Double}};

const bool registered = register_op({
    .name = "BatchNorm1d",
    .aliases = {"BatchNormalization1D"},
    .attrs = kAttrs,
    .build = build_batchnorm<1>,
    .targets = {"weight", "bias", kInput},
    .pq = pq_batchnorm,
    .pq_class = "PQBatchNorm1d",
}) && register_op({
    .name = "BatchNorm2d",
    .aliases = {"BatchNormalization"},
    .attrs = kAttrs,
    .build = build_batchnorm<2>,
    .targets = {"weight", "bias", kInput},
    .pq = pq_batchnorm,
    .pq_class = "PQBatchNorm2d",
});

}  // namespace
}  // namespace sparq::ops
