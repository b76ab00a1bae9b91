// The per-tensor quantization loop on CUDA (built only against a CUDA LibTorch, SPARQ_WITH_CUDA).
// Formats come as host numbers, so a step launches one kernel and never waits for the device.
#pragma once

#include <ATen/core/Tensor.h>

namespace sparq::quant::cuda {

/// The constants of one per-tensor format in code units (see kernels::TensorFormat).
struct Format {
  double scale, step, lo, nmax, modulus, inv_modulus;
  bool signed_type;
};

/// q = the quantized x (round mode and overflow mode as their enum values; SAT, SAT_SYM or WRAP).
void quantize(const at::Tensor& x, at::Tensor& q, const Format& p, int round, int overflow, bool training);
/// out = g where lo <= x * scale <= nmax, else 0.
void saturation_grad(const at::Tensor& x, const at::Tensor& g, at::Tensor& out, const Format& p);

}  // namespace sparq::quant::cuda
