// ONNX export of a (compressed) Graph, as it computes in evaluation mode:
// - Standard: only ops of the default domain (opset 13), which ONNX Runtime and every edge
//   runtime run. Fixed-point quantizers become the exact float ops of their rounding and overflow
//   modes (Mul, Floor/Round, comparisons, Min/Max or the wrap-around); integer quantizers
//   QuantizeLinear -> [Clip] -> DequantizeLinear (int8/uint8, per tensor or per channel), integer
//   weights int8 initializers with DequantizeLinear. Weights are the deployed ones (pruned,
//   quantized, batch norms folded as the layer computes).
// - Qonnx: QONNX `Quant` nodes (domain qonnx.custom_op.general) for every quantizer, weights as
//   float initializers on their grid each followed by its `Quant`, Linear as MatMul + Add, for
//   QONNX tools and hls4ml's QONNX frontend. Modes without a QONNX equivalent are refused.
// The input is the normalised tensor the Trainer feeds ("input", batch axis dynamic), the output
// the logits ("logits"). See docs/onnx.md.
#pragma once

#include <string>
#include <vector>

#include "sparq/models/graph.h"

namespace sparq::exporting {

enum class OnnxFlavor { Standard, Qonnx };

struct OnnxExport {
  std::string path;
  int64_t nodes = 0;       ///< ONNX nodes written
  int64_t quantizers = 0;  ///< quantizers written (lanes and weights)
};

/// Writes `graph` (put in evaluation mode) to `path` atomically. Throws sparq::Error naming the
/// layer for what the flavor cannot express (a rounding mode without a QONNX equivalent, WRAP_SM).
OnnxExport export_onnx(models::Graph& graph, const std::string& path, OnnxFlavor flavor);

/// "qonnx" -> Qonnx, "onnx" -> Standard; throws ConfigError naming `what` otherwise.
OnnxFlavor parse_onnx_flavor(const std::string& name, const std::string& what);
/// The file a run folder keeps each flavor in: model.onnx, model_qonnx.onnx.
const char* onnx_file_name(OnnxFlavor flavor);

}  // namespace sparq::exporting
