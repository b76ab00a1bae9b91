// AvgPool1d/2d (PQ replacement PQAvgPool1d/2d) and MaxPool1d/2d (keeps the grid: no replacement).
#include <fmt/format.h>
#include <torch/torch.h>

#include "sparq/layers/pq_layers.h"
#include "sparq/models/graph.h"

namespace sparq::ops {
namespace {

using namespace models;

const std::vector<AttrInfo> kPoolAttrs = {
    {"kernel_size", AttrType::IntOrList, true}, {"stride", AttrType::IntOrList}, {"padding", AttrType::IntOrList}};

template <size_t N, bool Max>
torch::nn::AnyModule build_pool(const NodeSpec& spec, const std::vector<int64_t>& in) {
  AttrReader a(spec);
  a.need_rank(in, N + 1, N == 1 ? "[channels, length]" : "[channels, height, width]");
  auto k = a.get_dims("kernel_size", N, 1);
  auto s = a.has("stride") ? a.get_dims("stride", N, 1) : k;
  auto p = a.get_dims("padding", N, 0);
  a.check_output(check_window(a, in, in[0], k, s, p, std::vector<int64_t>(N, 1)), in);
  for (size_t i = 0; i < N; ++i)
    if (2 * p[i] > k[i]) a.fail("padding", fmt::format("{} is more than half the kernel size {}", p[i], k[i]));
  auto dims = [](const std::vector<int64_t>& v) { return torch::ExpandingArray<N>(v); };
  namespace nn = torch::nn;
  if constexpr (Max) {
    using M = std::conditional_t<N == 1, nn::MaxPool1d, nn::MaxPool2d>;
    using O = std::conditional_t<N == 1, nn::MaxPool1dOptions, nn::MaxPool2dOptions>;
    return nn::AnyModule(M(O(dims(k)).stride(dims(s)).padding(dims(p))));
  } else {
    using M = std::conditional_t<N == 1, nn::AvgPool1d, nn::AvgPool2d>;
    using O = std::conditional_t<N == 1, nn::AvgPool1dOptions, nn::AvgPool2dOptions>;
    return nn::AnyModule(M(O(dims(k)).stride(dims(s)).padding(dims(p))));
  }
}

torch::nn::AnyModule pq_avg_pool(const Node& node, const layers::PQSettings& s, int dims) {
  size_t n = static_cast<size_t>(dims);
  auto kernel = dims_attr(node, "kernel_size", n, 1);
  auto stride = node.attrs.count("stride") ? dims_attr(node, "stride", n, 1) : kernel;
  return torch::nn::AnyModule(layers::PQAvgPool(
      layers::PQAvgPoolOptions(dims, kernel).stride(stride).padding(dims_attr(node, "padding", n, 0)).targets(s.targets)));
}

OpInfo pool_op(int dims, bool max) {
  OpInfo info;
  info.name = fmt::format("{}Pool{}d", max ? "Max" : "Avg", dims);
  info.aliases = {fmt::format("{}Pooling{}D", max ? "Max" : "Average", dims)};
  info.attrs = kPoolAttrs;
  info.keeps_grid = max;  // max pooling picks values: they stay on their grid (no replacement needed)
  info.build = dims == 1 ? (max ? build_pool<1, true> : build_pool<1, false>)
                         : (max ? build_pool<2, true> : build_pool<2, false>);
  if (max) return info;
  info.targets = {kInput, kOutput};
  info.pq = [dims](const Node& node, const layers::PQSettings& s) { return pq_avg_pool(node, s, dims); };
  info.pq_class = fmt::format("PQAvgPool{}d", dims);
  return info;
}

const bool registered = register_op(pool_op(1, false)) && register_op(pool_op(2, false)) &&
                        register_op(pool_op(1, true)) && register_op(pool_op(2, true));

}  // namespace
}  // namespace sparq::ops
