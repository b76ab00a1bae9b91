// The fused MLP's CUDA kernels (built only against a CUDA LibTorch, SPARQ_WITH_CUDA): a block per
// tile of src/train/fused_mlp_tile.h, on the current stream (so a captured step records them).
#pragma once

#include <string>

#include "train/fused_mlp_tile.h"

namespace sparq::train::mlp::cuda {

/// Why the current device cannot run `d` (its shared memory per block), or empty.
std::string refusal(const Desc& d);
/// y = the network's output for x ([d.n, in] and [d.n, out], float32, contiguous); the trained
/// widths' i and f clamped in place as the HGQ quantizer's training forward does.
void forward(const Desc& d, const float* x, float* y);
/// The tiles' partial rows ([tiles, d.row]) and their sums in tile order (`sums`, [d.row]).
void backward(const Desc& d, const float* x, const float* gy, float* partial, float* sums);

}  // namespace sparq::train::mlp::cuda
