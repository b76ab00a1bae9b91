// Built-in tensor ops without parameters (add, concat, flatten, reshape) and the pass-through
// modules (Identity, Dropout). None has a PQ replacement; all but add keep the fixed-point grid.
#include <fmt/format.h>
#include <torch/torch.h>

#include "sparq/error.h"
#include "sparq/limits.h"
#include "sparq/models/graph.h"

namespace sparq::ops {
namespace {

using namespace models;

std::string at(const NodeSpec& spec) { return spec.where.empty() ? "" : spec.where + ": "; }

OpInfo builtin(std::string name, std::vector<std::string> aliases, std::vector<AttrInfo> attrs, int min_inputs,
               int max_inputs, bool keeps_grid,
               std::function<torch::Tensor(const Node&, const std::vector<torch::Tensor>&)> apply) {
  OpInfo info;
  info.name = std::move(name);
  info.aliases = std::move(aliases);
  info.attrs = std::move(attrs);
  info.min_inputs = min_inputs, info.max_inputs = max_inputs;
  info.keeps_grid = keeps_grid;
  info.apply = std::move(apply);
  return info;
}

OpInfo add_op() {
  auto info = builtin("add", {"Add"}, {}, 2, 64, false, [](const Node&, const std::vector<torch::Tensor>& in) {
    torch::Tensor sum = in[0];
    for (size_t i = 1; i < in.size(); ++i) sum = sum + in[i];
    return sum;
  });
  info.check_inputs = [](const NodeSpec& spec, const std::vector<std::vector<int64_t>>& in) {
    for (size_t i = 1; i < in.size(); ++i)
      if (in[i] != in[0])
        throw ModelError(fmt::format("{}node '{}' (add): input shapes differ: '{}' gives {}, '{}' gives {}", at(spec),
                                     spec.name, spec.inputs[0], shape_str(in[0]), spec.inputs[i], shape_str(in[i])));
  };
  return info;
}

OpInfo reshape_op() {
  auto info = builtin("reshape", {"Reshape"}, {{"shape", AttrType::IntList, true}}, 1, 1, true,
                      [](const Node& node, const std::vector<torch::Tensor>& in) {
                        auto shape = std::get<std::vector<int64_t>>(node.attrs.at("shape"));
                        shape.insert(shape.begin(), in[0].size(0));
                        return in[0].reshape(shape);
                      });
  info.check_inputs = [](const NodeSpec& spec, const std::vector<std::vector<int64_t>>& in) {
    auto shape = std::get<std::vector<int64_t>>(spec.attrs.at("shape"));
    auto want = checked_product(shape), have = checked_product(in[0]);  // no wrap: [4e9, 4e9] is not [16]
    if (!want || want != have)
      throw ModelError(fmt::format("{}node '{}' (reshape): cannot reshape {} to {}", at(spec), spec.name,
                                   shape_str(in[0]), shape_str(shape)));
  };
  return info;
}

OpInfo module_op(std::string name, std::vector<AttrInfo> attrs,
                 std::function<torch::nn::AnyModule(const NodeSpec&, const std::vector<int64_t>&)> build) {
  OpInfo info;
  info.name = std::move(name);
  info.attrs = std::move(attrs);
  info.keeps_grid = true;
  info.build = std::move(build);
  return info;
}

const bool registered =
    register_op(add_op()) && register_op(reshape_op()) &&
    register_op(builtin("concat", {"Concatenate"}, {{"dim", AttrType::Int}}, 2, 64, true,
                        [](const Node& node, const std::vector<torch::Tensor>& in) {
                          return torch::cat(in, int_attr(node, "dim", 1));
                        })) &&
    register_op(builtin("flatten", {"Flatten"}, {}, 1, 1, true,
                        [](const Node&, const std::vector<torch::Tensor>& in) { return in[0].flatten(1); })) &&
    register_op(module_op("Identity", {},
                          [](const NodeSpec&, const std::vector<int64_t>&) {
                            return torch::nn::AnyModule(torch::nn::Identity());
                          })) &&
    register_op(module_op("Dropout", {{"p", AttrType::Double}}, [](const NodeSpec& spec, const std::vector<int64_t>&) {
      AttrReader a(spec);
      double p = a.get_double("p", 0.5);
      if (p < 0 || p >= 1) a.fail("p", fmt::format("{} is out of range, expected 0 <= p < 1", p));
      return torch::nn::AnyModule(torch::nn::Dropout(torch::nn::DropoutOptions(p)));
    }));

}  // namespace
}  // namespace sparq::ops
