#include "sparq/prune/target_mask.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "sparq/error.h"

#include "sparq/prune/masks.h"

namespace sparq::prune {

namespace {
std::vector<int64_t> block_shape(const torch::Tensor& mask, const std::vector<int64_t>& kernel) {
  std::vector<int64_t> shape;
  for (int64_t d = 0; d < mask.dim(); ++d) shape.push_back(mask.size(d) / kernel[d]);
  return shape;
}
}  // namespace

TargetMask::TargetMask(const std::vector<int64_t>& shape, const std::string& method) {
  if (method == "add") apply_method = Apply::Add;
  else if (method == "bypass") apply_method = Apply::Bypass;
  else if (method != "mul") throw Error(fmt::format("apply_method '{}' is not one of mul, add, bypass", method));
  mask = register_buffer("mask", torch::ones(shape));
}

torch::Tensor TargetMask::apply(const torch::Tensor& x) const {
  if (apply_method == Apply::Bypass) return x;
  auto y = factor.defined() ? x * expand(factor, kernel) : x;
  auto m = mask;
  if (score.defined()) {  // forward: the 0/1 mask; backward: the mask's gradient goes to the score
    auto s = expand(score, kernel);
    m = m + (s - s.detach());
  }
  if (apply_method == Apply::Add) return y + (m - 1.0) * 1000.0;
  return y * m;
}

void TargetMask::add_factor(const std::vector<int64_t>& k) {
  kernel = k;
  factor = register_buffer("factor", torch::ones(block_shape(mask, k), mask.options()).requires_grad_());
}

void TargetMask::add_score(const std::vector<int64_t>& k) {
  kernel = k;
  score = register_buffer("score", torch::zeros(block_shape(mask, k), mask.options()).requires_grad_());
}

}  // namespace sparq::prune
