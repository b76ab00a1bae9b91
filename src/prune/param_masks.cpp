#include "sparq/prune/param_masks.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "sparq/compress/compress.h"
#include "sparq/error.h"
#include "sparq/train/modifiers.h"

namespace sparq::prune {

ParamMasks::Entry& ParamMasks::entry(const std::string& node, const std::string& target) {
  auto key = std::make_pair(node, target);
  auto it = entries_.find(key);
  if (it != entries_.end()) return it->second;
  auto pq = pq_layer(graph_, node);
  if (!pq) throw Error(fmt::format("{}.{}: pruning needs the layer to be a PQ layer", node, target));
  torch::Tensor param = train::parameter_of(graph_, node, target);
  Entry e{node, target, param, pq->mask(target), {}, 0};
  if (!e.mask) {
    e.mask = std::make_shared<TargetMask>(param.sizes().vec(), "mul");
    e.mask->to(param.device());
    pq->set_mask(target, e.mask);
  }
  return entries_.emplace(key, std::move(e)).first->second;
}

void ParamMasks::refresh(Entry& e, bool bake) {
  torch::NoGradGuard no_grad;
  if (bake) e.param.mul_(e.mask->mask);  // the zeros the old product made, kept in the raw weight
  auto product = torch::ones_like(e.mask->mask);
  for (const auto& [owner, part] : e.parts) product.mul_(part);
  e.mask->mask.copy_(product);
  ++e.version;
}

void ParamMasks::set(int owner, Entry& e, const torch::Tensor& mask) {
  e.parts[owner] = mask.to(e.mask->mask.options());
  refresh(e);
}

void ParamMasks::restore(int owner, Entry& e, const torch::Tensor& mask) {
  e.parts[owner] = mask.to(e.mask->mask.options());
  refresh(e, /*bake=*/false);
}

void ParamMasks::remove(int owner, Entry& e) {
  if (e.parts.erase(owner)) refresh(e);
}

torch::Tensor ParamMasks::masked(const Entry& e) const {
  torch::NoGradGuard no_grad;
  return e.param * e.mask->mask;
}

void ParamMasks::bake() {
  torch::NoGradGuard no_grad;
  for (auto& [key, e] : entries_) e.param.mul_(e.mask->mask);
}

}  // namespace sparq::prune
