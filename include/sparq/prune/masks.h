// The mask machinery of the model-wide pruners (NNI's pruners, SparseML's magnitude modifiers):
// tensors reduced into blocks by a granularity kernel, and one "mask generation" over all targets
// of a pruner: threshold -> dependency groups -> global groups -> plain ratio -> align, the masks
// of several rules on one target multiplied (spec nni-config §1.8, §2.1-2.7). Pure functions of
// tensors, so the spec's worked examples are tests of this file.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "sparq/plan.h"

namespace sparq::prune {

/// The block size per dim for a tensor of `shape` (every entry divides its dim; a collapsed dim
/// has its full size). `granularity` must be resolved (not Default). Throws sparq::Error, naming
/// `what`, when the granularity does not fit the tensor.
std::vector<int64_t> block_kernel(const MaskGranularity& granularity, const std::vector<int64_t>& shape,
                                  bool is_parameter, const std::string& what);

/// `x` cut into blocks: shape [blocks per dim..., elements per block].
at::Tensor blocks_of(const at::Tensor& x, const std::vector<int64_t>& kernel);
/// One value per block, keepdim form ([dim / kernel] per dim).
enum class BlockReduce { SumAbs, L2, Mean };
at::Tensor shrink(const at::Tensor& x, const std::vector<int64_t>& kernel, BlockReduce reduce);
/// The inverse of shrink: every block value repeated over its block, to the full shape.
at::Tensor expand(const at::Tensor& m, const std::vector<int64_t>& kernel);

/// One target of a mask generation.
struct MaskTarget {
  std::string module, target;
  MaskSetting setting;           ///< granularity resolved
  std::vector<int64_t> shape;    ///< the target tensor's shape
  std::vector<int64_t> kernel;   ///< its block kernel
  at::Tensor metric;             ///< block-space metric (smaller: less important); undefined when inactive
  std::string what() const { return module + "." + target; }
};

using MaskKey = std::pair<std::string, std::string>;  ///< (module, target)

/// The 0/1 mask of the `ratio` smallest metric values (floor(numel x ratio) of them); ratio 0:
/// all ones, 1: all zeros.
at::Tensor ratio_mask(const at::Tensor& metric, double ratio);

/// One mask generation: a full-shape 0/1 mask for every target some rule produced one for.
/// Throws sparq::Error for group settings that cannot work (different ratios in a group, metric
/// shapes that differ in a dependency group, a ratio outside [0, 1]).
std::map<MaskKey, at::Tensor> generate_masks(const std::vector<MaskTarget>& targets);

}  // namespace sparq::prune
