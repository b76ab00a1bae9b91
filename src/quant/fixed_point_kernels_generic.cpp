#include "quant/fixed_point_kernels.h"
#define SPARQ_KERNEL_NS generic
#include "quant/fixed_point_kernels.inc"
