// Conv1d and Conv2d (groups, stride, padding, dilation); PQ replacements PQConv1d and PQConv2d.
#include <fmt/format.h>
#include <torch/torch.h>

#include "sparq/layers/pq_layers.h"
#include "sparq/models/graph.h"

namespace sparq::ops {
namespace {

using namespace models;

template <size_t N>
torch::nn::AnyModule build_conv(const NodeSpec& spec, const std::vector<int64_t>& in) {
  AttrReader a(spec);
  a.need_rank(in, N + 1, N == 1 ? "[channels, length]" : "[channels, height, width]");
  int64_t cin = a.inferred("in_channels", in[0], in);
  int64_t cout = a.get_size("out_channels");
  auto k = a.get_dims("kernel_size", N, 1), s = a.get_dims("stride", N, 1), p = a.get_dims("padding", N, 0),
       d = a.get_dims("dilation", N, 1);
  int64_t groups = a.get_int("groups", 1);
  auto out = check_window(a, in, cout, k, s, p, d);
  bool bias = a.get_bool("bias", true);
  if (groups < 1 || cin % groups || cout % groups)
    a.fail("groups", fmt::format("{} must divide in_channels {} and out_channels {}", groups, cin, cout));
  std::vector<int64_t> weight = {cout, cin / groups};
  weight.insert(weight.end(), k.begin(), k.end());
  a.check_parameter("weight", weight);
  a.check_output(out, in);
  using Options = std::conditional_t<N == 1, torch::nn::Conv1dOptions, torch::nn::Conv2dOptions>;
  using Module = std::conditional_t<N == 1, torch::nn::Conv1d, torch::nn::Conv2d>;
  auto dims = [](const std::vector<int64_t>& v) { return torch::ExpandingArray<N>(v); };
  return torch::nn::AnyModule(
      Module(Options(cin, cout, dims(k)).stride(dims(s)).padding(dims(p)).dilation(dims(d)).groups(groups).bias(bias)));
}

torch::nn::AnyModule pq_conv(const Node& node, const layers::PQSettings& s, int dims) {
  auto params = node.module.ptr()->named_parameters(false);
  auto w = params["weight"];
  auto* b = params.find("bias");
  int64_t groups = int_attr(node, "groups", 1);
  std::vector<int64_t> kernel(w.sizes().begin() + 2, w.sizes().end());
  size_t n = static_cast<size_t>(dims);
  layers::PQConv conv(layers::PQConvOptions(dims, w.size(1) * groups, w.size(0), kernel)
                          .stride(dims_attr(node, "stride", n, 1))
                          .padding(dims_attr(node, "padding", n, 0))
                          .dilation(dims_attr(node, "dilation", n, 1))
                          .groups(groups)
                          .bias(b != nullptr)
                          .targets(s.targets));
  torch::NoGradGuard no_grad;
  conv->weight.copy_(w);
  if (b) conv->bias.copy_(*b);
  return torch::nn::AnyModule(conv);
}

const std::vector<AttrInfo> kConvAttrs = {{"in_channels", AttrType::Int},       {"out_channels", AttrType::Int, true},
                                          {"kernel_size", AttrType::IntOrList, true}, {"stride", AttrType::IntOrList},
                                          {"padding", AttrType::IntOrList},     {"dilation", AttrType::IntOrList},
                                          {"groups", AttrType::Int},            {"bias", AttrType::Bool}};

OpInfo conv_op(int dims) {
  OpInfo info;
  info.name = fmt::format("Conv{}d", dims);
  info.aliases = {fmt::format("Conv{}D", dims)};
  info.attrs = kConvAttrs;
  info.prunable = true;
  info.build = dims == 1 ? build_conv<1> : build_conv<2>;
  info.targets = {"weight", "bias", kInput, kOutput};
  info.pq = [dims](const Node& node, const layers::PQSettings& s) { return pq_conv(node, s, dims); };
  info.pq_class = fmt::format("PQConv{}d", dims);
  return info;
}

const bool registered = register_op(conv_op(1)) && register_op(conv_op(2));

}  // namespace
}  // namespace sparq::ops
