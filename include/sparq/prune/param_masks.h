// The masks SparseML's pruning modifiers keep on parameters. Each modifier owns its own mask per
// parameter (as in SparseML); the product of the enabled ones is the parameter's TargetMask on
// its PQ layer, applied in the forward. Whenever that product changes, the raw weight is first
// multiplied by the old one, as SparseML's in-place masking leaves it: an element a later mask
// lets back grows from zero, and magnitudes of pruned elements are zero.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "sparq/models/graph.h"
#include "sparq/prune/target_mask.h"

namespace sparq::prune {

class ParamMasks {
 public:
  explicit ParamMasks(models::Graph graph) : graph_(std::move(graph)) {}

  struct Entry {
    std::string node, target;
    torch::Tensor param;                   ///< the raw parameter
    std::shared_ptr<TargetMask> mask;      ///< the product the layer applies
    std::map<int, torch::Tensor> parts;    ///< each enabled modifier's mask
    int64_t version = 0;                   ///< bumped at every change of the product
    std::string what() const { return node + "." + target; }
  };

  /// The entry of (node, target): an all-ones TargetMask is installed on its PQ layer at first use.
  /// Throws sparq::Error when the node is not a PQ layer holding that parameter.
  Entry& entry(const std::string& node, const std::string& target);
  /// Sets (or replaces) `owner`'s mask of the entry.
  void set(int owner, Entry& e, const torch::Tensor& mask);
  /// Sets `owner`'s mask as a checkpoint had it (the product is recomputed, the weight is not
  /// multiplied: it comes from the same checkpoint).
  void restore(int owner, Entry& e, const torch::Tensor& mask);
  /// Drops `owner`'s mask (the weight keeps its zeros, and may grow back).
  void remove(int owner, Entry& e);
  /// The weight as the layer computes with it: raw x product (no gradient).
  torch::Tensor masked(const Entry& e) const;
  /// Multiplies every raw parameter by its product (the end of training: model.pt holds the zeros).
  void bake();
  /// A new owner id.
  int owner() { return next_owner_++; }

 private:
  void refresh(Entry& e, bool bake = true);
  models::Graph graph_;
  std::map<std::pair<std::string, std::string>, Entry> entries_;
  int next_owner_ = 0;
};

}  // namespace sparq::prune
