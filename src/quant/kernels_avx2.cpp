// The CPU quantization loops (fixed point and integer) for one instruction set.
#include "quant/fixed_point_kernels.h"
#include "quant/integer_kernels.h"
#define SPARQ_KERNEL_NS avx2
#include "quant/fixed_point_kernels.inc"
#include "quant/integer_kernels.inc"
