// Linear: y = x W^T + b over the last axis; PQ replacement PQDense.
#include <torch/torch.h>

#include "sparq/layers/pq_layers.h"
#include "sparq/models/graph.h"

namespace sparq::ops {
namespace {

using namespace models;

const bool registered = register_op({
    .name = "Linear",
    .aliases = {"Dense"},
    .attrs = {{"in_features", AttrType::Int}, {"out_features", AttrType::Int, true}, {"bias", AttrType::Bool}},
    .prunable = true,
    .build =
        [](const NodeSpec& spec, const std::vector<int64_t>& in) {
          AttrReader a(spec);
          if (in.empty()) a.need_rank(in, 1, "[features]");
          int64_t fin = a.inferred("in_features", in.back(), in);
          return torch::nn::AnyModule(torch::nn::Linear(
              torch::nn::LinearOptions(fin, a.get_int("out_features", 0)).bias(a.get_bool("bias", true))));
        },
    .targets = {"weight", "bias", kInput, kOutput},
    .pq =
        [](const Node& node, const layers::PQSettings& s) {
          return torch::nn::AnyModule(layers::PQDense(node.module.get<torch::nn::Linear>(), s.targets));
        },
    .pq_class = "PQDense",
});

}  // namespace
}  // namespace sparq::ops
