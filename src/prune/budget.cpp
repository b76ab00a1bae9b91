#include "sparq/prune/budget.h"

#include <torch/torch.h>

namespace sparq::prune {

std::vector<double> layer_budgets(const std::vector<torch::Tensor>& weights, double sparsity) {
  torch::NoGradGuard no_grad;
  std::vector<double> budgets(weights.size(), 0.0);
  if (weights.empty() || sparsity <= 0) return budgets;
  std::vector<torch::Tensor> flat;
  for (const auto& w : weights) flat.push_back(w.detach().abs().flatten().to(torch::kFloat32).cpu());
  auto all = std::get<0>(torch::cat(flat).sort(/*dim=*/0, /*descending=*/true));
  int64_t n = all.numel();
  int64_t index = std::min<int64_t>(static_cast<int64_t>((1.0 - sparsity) * n), n - 1);
  float theta = all[index].item<float>();
  for (size_t l = 0; l < flat.size(); ++l) {
    float below = (flat[l] < theta).sum().item<int64_t>();
    budgets[l] = static_cast<float>(below / static_cast<float>(flat[l].numel()));
  }
  return budgets;
}

}  // namespace sparq::prune
