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

/// HGQ with trained widths (the CPU's hgq_kernel in one CUDA pass): k, i, f contiguous, of x's
/// dtype, `period` entries each (element e of x uses entry e % period; i and f are rounded half
/// to even, then i is used as max(i, -f)).
/// overflow: SAT, SAT_SYM, or WRAP while training. The widths' constants are computed per element
/// from the three numbers, so nothing is precomputed on the host.
void hgq_quantize(const at::Tensor& x, const at::Tensor& k, const at::Tensor& i, const at::Tensor& f, at::Tensor& q,
                  int round, int overflow);
/// The backward pass of hgq_quantize, recomputed from x: per element dx = g·dq/dx, gf = g·dq/df,
/// gi = g·dq/di (widths with an entry per element; see hgq_backward_sums for shared ones).
void hgq_backward(const at::Tensor& x, const at::Tensor& k, const at::Tensor& i, const at::Tensor& f,
                  const at::Tensor& g, at::Tensor& dx, at::Tensor& gf, at::Tensor& gi, int round, int overflow);
/// The backward for widths shared by rows (k.numel() < x.numel()): dx per element and sums
/// ([2, period], x's dtype) = the sums over the rows of g·dq/df (row 0) and g·dq/di (row 1) per
/// width, accumulated in double in a fixed order (two kernels; no x-sized gf, gi and reductions).
void hgq_backward_sums(const at::Tensor& x, const at::Tensor& k, const at::Tensor& i, const at::Tensor& f,
                       const at::Tensor& g, at::Tensor& dx, at::Tensor& sums, int round, int overflow);

}  // namespace sparq::quant::cuda
