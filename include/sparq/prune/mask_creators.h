// SparseML's mask creators (spec sparseml §2.8.3): scores -> 0/1 masks with an exact count of
// zeros (round half to even of sparsity x groups), over elements, blocks ([a, b], four-block with
// padding), whole filters or channels (L2 group scores), N:M patterns, and globally over several
// tensors. Pure functions of tensors, so the spec's reference cases are tests of this file.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "sparq/plan.h"

namespace sparq::prune {

/// The mask of exactly round(sparsity x numel) zeros at the smallest scores: ties at the
/// threshold keep their first elements (row-major); when the threshold is the minimum, the
/// first elements holding it are masked. sparsity <= 0 or > 1: all ones.
at::Tensor exact_mask(const at::Tensor& scores, double sparsity);

/// One score per group of `type` (mean over blocks, L2 over filters/channels), in a layout
/// `expand_groups` maps back. Throws sparq::Error when the tensor does not fit the type (a block
/// that does not divide a dim, a 1-D tensor).
at::Tensor group_scores(const at::Tensor& scores, const MaskType& type);
/// A group-space mask back at the tensor's shape.
at::Tensor expand_groups(const at::Tensor& group_mask, const MaskType& type, at::IntArrayRef shape);

/// The mask of one tensor at `sparsity`. N:M: sparsity 0 gives all ones; otherwise it must lie
/// within 0.01 of 1 - N/M.
at::Tensor sparsity_mask(const at::Tensor& scores, double sparsity, const MaskType& type);

/// One mask over several tensors: their group scores concatenated, one exact mask, split back
/// (the global fraction is the target; each tensor's differs).
std::vector<at::Tensor> global_masks(const std::vector<at::Tensor>& scores, double sparsity, const MaskType& type);

/// Structured masks for tensors pruned on the same indices: their group scores summed (all
/// must have the same number of groups), one mask for all.
std::vector<at::Tensor> shared_masks(const std::vector<at::Tensor>& scores, double sparsity, const MaskType& type);

/// The gradual schedule's target at epoch `e` (spec §2.9): x = (e - start) / (end - start)
/// clamped to [0, 1]; y = x | 1 - (1 - x)^3 | 1 - (1 - x)^(1/3); init at y <= eps, final at
/// y >= 1 - eps, init + y (final - init) between.
double interpolate_sparsity(double e, double start, double end, double init, double final, const std::string& func);

}  // namespace sparq::prune
