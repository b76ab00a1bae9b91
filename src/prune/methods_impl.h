// Shape helpers the method files share (one file per method: cs.cpp, pdp.cpp, wanda.cpp, ...;
// each registers itself). Tests reach the methods through make_method and the PruningMethod
// interface.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "sparq/prune/methods.h"

namespace sparq::prune {

/// Shape of DST/AutoSparse thresholds against the weight viewed as [C_out, fan_in]:
/// layerwise [1, 1], channelwise [C_out, 1], weightwise [C_out, fan_in].
std::vector<int64_t> threshold_shape(const std::string& type, const std::vector<int64_t>& shape);

/// Every axis of a `dims`-dimensional layer input or output except its feature/channel axis: the
/// last one for linear layers, axis 1 for convolutions (what the data taps reduce over).
std::vector<int64_t> axes_but_features(int64_t dims, LayerKind kind);

/// Methods that wait t_start_collecting_batch training epochs, then collect t_delta batches: the
/// training epoch (1-based) at whose end their first mask exists, for `steps` batches per epoch.
int64_t epoch_after_collection(const PruningSpec& spec, int64_t steps);

/// {C_out, 1, ...}: the shape of a per-output-row (structured) mask for a weight of `shape`.
std::vector<int64_t> row_shape(const std::vector<int64_t>& shape);

}  // namespace sparq::prune
