// One channel's observer update and scale / zero point, shared by the CPU path (a loop over the
// channels) and the CUDA kernel (a thread per channel). The arithmetic is float32 in the order the
// composed tensor ops of IntegerQuantizerImpl::range_qparams use, with no fused multiply-add, so
// all paths give the same bits.
#pragma once

#ifdef __CUDACC__
#define SPARQ_HOST_DEVICE __host__ __device__
#else
#define SPARQ_HOST_DEVICE
#endif

#include <cmath>

namespace sparq::quant::kernels {

/// How the observed range becomes a scale and zero point (spec nni-config §3.2).
struct RangeRule {
  float qmin, qmax;
  float half_span;  ///< float((qmax - qmin) / 2): symmetric scale divisor
  float span;       ///< float(qmax - qmin): affine scale divisor
  float mid;        ///< symmetric zero point
  float eps;        ///< the scale's floor
  float averaging;  ///< the EMA step
  bool symmetric;
};

/// What the observer does with this batch's range.
enum class RangeUpdate { First, Running, Average, Keep };

SPARQ_HOST_DEVICE inline float product_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);  // never contracted into an FMA
#else
  volatile float p = a * b;  // a separate rounding, as the composed ops have
  return p;
#endif
}

SPARQ_HOST_DEVICE inline float round_half_even(float v) {
#ifdef __CUDA_ARCH__
  return rintf(v);
#else
  return std::nearbyint(v);
#endif
}

/// Updates min / max with the batch range lo / hi, then writes the scale and zero point.
SPARQ_HOST_DEVICE inline void update_channel(float lo, float hi, float& min_val, float& max_val, float& scale,
                                             float& zero_point, RangeUpdate update, const RangeRule& r) {
  if (update == RangeUpdate::First) {
    min_val = lo, max_val = hi;
  } else if (update == RangeUpdate::Running) {
    min_val = lo < min_val ? lo : min_val, max_val = hi > max_val ? hi : max_val;
  } else if (update == RangeUpdate::Average) {
    min_val = min_val + product_rn(lo - min_val, r.averaging);
    max_val = max_val + product_rn(hi - max_val, r.averaging);
  }
  const float mn = min_val < 0 ? min_val : 0.0f, mx = max_val > 0 ? max_val : 0.0f;  // the range contains 0
  if (r.symmetric) {
    const float a = -mn > mx ? -mn : mx;
    const float s = a / r.half_span;
    scale = s < r.eps ? r.eps : s;
    zero_point = r.mid;
  } else {
    const float s = (mx - mn) / r.span;
    scale = s < r.eps ? r.eps : s;
    const float z = r.qmin - round_half_even(mn / scale);
    zero_point = z < r.qmin ? r.qmin : (z > r.qmax ? r.qmax : z);
  }
}

}  // namespace sparq::quant::kernels
