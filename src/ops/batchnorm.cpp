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
  a.check_parameter("weight, bias and running statistics", {4, c});
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

OpInfo batchnorm_op(int dims) {
  OpInfo info;
  info.name = fmt::format("BatchNorm{}d", dims);
  info.aliases = {dims == 1 ? "BatchNormalization1D" : "BatchNormalization"};
  info.attrs = kAttrs;
  info.build = dims == 1 ? build_batchnorm<1> : build_batchnorm<2>;
  info.targets = {"weight", "bias", kInput};  // no output quantizer
  info.pq = pq_batchnorm;
  info.pq_class = fmt::format("PQBatchNorm{}d", dims);
  return info;
}

const bool registered = register_op(batchnorm_op(1)) && register_op(batchnorm_op(2));

}  // namespace
}  // namespace sparq::ops
