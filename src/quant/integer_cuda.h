// The integer quantizer on CUDA (built only against a CUDA LibTorch, SPARQ_WITH_CUDA): the
// observer's update and the scale / zero point in one kernel (a thread per channel), the fake
// quantization and its straight-through gradient in one kernel each. Scales stay on the device:
// a step never waits for it.
#pragma once

#include <ATen/core/Tensor.h>

#include "quant/integer_qparams.h"

namespace sparq::quant::cuda {

/// min_val / max_val (float, `channels` each) updated with lo / hi, then scale / zero_point.
void integer_update(const at::Tensor& lo, const at::Tensor& hi, at::Tensor& min_val, at::Tensor& max_val,
                    at::Tensor& scale, at::Tensor& zero_point, kernels::RangeUpdate update,
                    const kernels::RangeRule& rule);
/// y = the fake-quantized x (contiguous, seen as [outer, channels, inner]); `nni` as kernels::IntegerGrid.
void integer_forward(const at::Tensor& x, at::Tensor& y, const at::Tensor& scale, const at::Tensor& zero_point,
                     int64_t inner, double qmin, double qmax, bool nni);
/// dx = g where the straight-through estimator passes it, else 0.
void integer_backward(const at::Tensor& x, const at::Tensor& g, at::Tensor& dx, const at::Tensor& scale,
                      const at::Tensor& zero_point, int64_t inner, double qmin, double qmax, bool nni);

}  // namespace sparq::quant::cuda
