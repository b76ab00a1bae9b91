// The integer reference: a quantized Graph evaluated the way the firmware computes it. Every value
// is an exact rational code / den (int64 codes, den = 2^F times a pooling divisor), every
// fixed-point lane applies its (k, i, f) per element with its rounding and overflow mode on those
// integers (ap_fixed semantics), dense and convolution layers multiply and sum in int64. The
// nodes that have no integer form in the training graph (batch norm with float statistics, tanh,
// sigmoid, ...) are evaluated in float32 exactly as sparq's graph does and named in the result.
// `sparq verify RUN` compares it with sparq's float evaluation (docs/onnx.md, "verify").
#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

#include "sparq/models/graph.h"

namespace sparq::exporting {

struct ReferenceResult {
  torch::Tensor output;                 ///< the graph output, as float64 (exact: code / den)
  torch::Tensor output_code;            ///< int64 codes of the output
  int64_t output_den = 1;               ///< output = output_code / output_den
  /// Nodes whose values are float32, as in the training graph: those without an integer form
  /// (batch norm, tanh, ...) and what passes their values on before a quantizer.
  std::vector<std::string> float_nodes;
};

/// Evaluates `model` (put in eval mode, on the CPU) on `x` in batches of `batch`. Throws
/// sparq::Error naming the node for what has no exact evaluation: an unquantized weight layer, a
/// WRAP_SM or integer (non-fixed-point) lane, an op the reference does not know, or a sum that
/// could leave int64.
ReferenceResult integer_reference(models::Graph& model, const torch::Tensor& x, int64_t batch = 1024);

/// Per node, whether sparq's own evaluation of `x` equals the reference bit for bit: the first
/// node (in graph order) whose output differs, with the count and the first differing element.
struct NodeMismatch {
  std::string node;
  int64_t count = 0, elements = 0;
  std::vector<int64_t> first_index;  ///< [sample, ...] of the first differing element
  double sparq_value = 0, reference_value = 0;
};
/// All nodes' outputs of one batch compared; empty when every node agrees.
std::vector<NodeMismatch> compare_nodes(models::Graph& model, const torch::Tensor& x);

}  // namespace sparq::exporting
