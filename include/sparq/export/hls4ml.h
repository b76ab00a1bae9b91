// The hls4ml hand-off (`sparq export RUN --format hls4ml`): the QONNX model rewritten as hls4ml's
// ONNX frontend reads it after qonnx's own preparation (cleanup_model, ConvertToChannelsLastAndClean,
// GemmToMatMul), so it goes straight to hls4ml, and an hls4ml configuration whose per-layer
// precisions keep every value the trained model computes:
// - model_hls4ml.onnx: node names as qonnx's GiveUniqueNodeNames gives them (`MatMul_0`,
//   `Quant_3`), tensor names as GiveReadableTensorNames (`global_in`, `Quant_3_out0`,
//   `MatMul_0_param0`), a shape for every tensor (value_info, batch 1), each weight as an
//   initializer followed by one per-tensor power-of-two `Quant` that feeds its layer directly,
//   Conv/MaxPool/AveragePool/BatchNormalization in the `qonnx.custom_op.channels_last` domain on
//   NHWC tensors (convolution weights OHWI, the dense weight after a flatten permuted to match).
// - hls4ml.yaml: OnnxModel, OutputDir, ProjectName, Backend, Part, ClockPeriod, IOType and
//   HLSConfig (Model defaults; LayerName: every node with its Precision — weight and bias from
//   the weights' formats, result and accum of dense and convolution layers the accumulator no sum
//   can overflow, data-lane results the Quant's type — ReuseFactor and Strategy).
// See docs/hls4ml.md.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "sparq/models/graph.h"

namespace sparq::exporting {

struct Hls4mlOptions {
  std::string project_name;  ///< empty: the job's name as a C identifier (myproject without a job)
  std::string output_dir = "hls4ml_prj";
  std::string backend = "Vitis";  ///< Vivado, Vitis, Quartus, oneAPI, Catapult
  std::string part = "xcvu13p-flga2577-2-e";
  double clock_period = 5;        ///< ns
  std::string io_type = "io_parallel";  ///< io_parallel, io_stream
  std::string strategy = "Latency";     ///< Latency, Resource
  int reuse_factor = 1;
};

/// Throws ConfigError naming the option for a value hls4ml does not take.
void check_hls4ml_options(const Hls4mlOptions& options);

struct Hls4mlExport {
  std::string onnx_path, config_path;
  int64_t nodes = 0;               ///< ONNX nodes, each listed under HLSConfig.LayerName
  std::vector<std::string> notes;  ///< what the hand-off changed, and where it is not exact
  /// Every value hls4ml computes equals sparq's: all ops have exact fixed-point types (no batch
  /// norm, lookup-table activation or unquantized input or weight).
  bool exact = true;
  /// Per node: what it comes from, `<layer>` or `<layer>.<lane>` (fc1.input, fc1.weight.quant).
  std::map<std::string, std::string> origin;
};

/// Writes `dir`/model_hls4ml.onnx and `dir`/hls4ml.yaml from `graph` in evaluation mode. Throws
/// sparq::Error naming the layer for what hls4ml's QONNX frontend cannot take exactly (a data
/// lane with several formats, a rounding mode other than RND_CONV/TRN, WRAP on a data lane).
Hls4mlExport export_hls4ml(models::Graph& graph, const std::string& dir, const Hls4mlOptions& options);

}  // namespace sparq::exporting
