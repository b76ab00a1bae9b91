// Linear: y = x W^T + b over the last axis; PQ replacement PQDense.
#include <torch/torch.h>

#include "sparq/layers/pq_layers.h"
#include "sparq/models/graph.h"

namespace sparq::ops {
namespace {

using namespace models;

OpInfo linear_op() {
  OpInfo info;
  info.name = "Linear";
  info.aliases = {"Dense"};
  info.attrs = {{"in_features", AttrType::Int}, {"out_features", AttrType::Int, true}, {"bias", AttrType::Bool}};
  info.prunable = true;
  info.build = [](const NodeSpec& spec, const std::vector<int64_t>& in) {
    AttrReader a(spec);
    if (in.empty()) a.need_rank(in, 1, "[features]");
    int64_t fin = a.inferred("in_features", in.back(), in), fout = a.get_size("out_features");
    a.check_parameter("weight", {fout, fin});
    return torch::nn::AnyModule(torch::nn::Linear(torch::nn::LinearOptions(fin, fout).bias(a.get_bool("bias", true))));
  };
  info.targets = {"weight", "bias", kInput, kOutput};
  info.pq = [](const Node& node, const layers::PQSettings& s) {
    return torch::nn::AnyModule(layers::PQDense(node.module.get<torch::nn::Linear>(), s.targets));
  };
  info.pq_class = "PQDense";
  return info;
}

const bool registered = register_op(linear_op());

}  // namespace
}  // namespace sparq::ops
