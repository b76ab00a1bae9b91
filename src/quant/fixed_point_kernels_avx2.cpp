#include "quant/fixed_point_kernels.h"
#define SPARQ_KERNEL_NS avx2
#include "quant/fixed_point_kernels.inc"
