// Fixed-point quantization (k, i, f): what an ap_fixed<W, I, Q, O> / ap_ufixed<W, I, Q, O> variable
// stores, with W = k + i + f and I = k + i (`i` excludes the sign bit). Evaluation output equals the
// hardware type bit for bit; training mode follows PQuantML (straight-through rounding, saturation
// gradient, no wrap-around).
#pragma once

#include <torch/types.h>

#include "sparq/quant/format.h"

#include <cmath>
#include <cstdint>
#include <string>

namespace sparq::quant {

/// The integer code n (value = n * 2^-f) that a hardware variable stores for x, in eval semantics.
/// Exact in T for |n| < 2^digits(T). Used by the fused kernel, the calculator and the tests.
template <typename T>
T quantize_code(T x, T k, T i, T f, RoundMode round, OverflowMode overflow);

/// Quantizes `x` (float32 or float64) to the formats `k`, `i`, `f` (tensors broadcastable against
/// `x`: per tensor, per channel, per element). `training`: PQuantML's training behaviour (no
/// wrap-around, gradient 1 inside the range and 0 where saturated); otherwise the hardware value.
/// Gradients reach `i` and `f` when they require them (HGQ: such trained widths are used rounded
/// half to even, their gradients straight through; on the CPU one fused pass that also writes the
/// derivatives, elsewhere the composed ops); otherwise one fused pass per element.
torch::Tensor fixed_quantize(const torch::Tensor& x, const torch::Tensor& k, const torch::Tensor& i,
                             const torch::Tensor& f, RoundMode round, OverflowMode overflow,
                             bool training);

/// relu(fixed_quantize(...)): one pass forward and backward for trained widths on the CPU with
/// SAT or SAT_SYM (the ReLU's mask q > 0 applied inside the HGQ kernel), the two ops otherwise.
torch::Tensor fixed_quantize_relu(const torch::Tensor& x, const torch::Tensor& k, const torch::Tensor& i,
                                  const torch::Tensor& f, RoundMode round, OverflowMode overflow, bool training);

/// The same function built from LibTorch ops only (differentiable in k, i, f; any device).
torch::Tensor fixed_quantize_composed(const torch::Tensor& x, const torch::Tensor& k,
                                      const torch::Tensor& i, const torch::Tensor& f,
                                      RoundMode round, OverflowMode overflow, bool training);

}  // namespace sparq::quant
