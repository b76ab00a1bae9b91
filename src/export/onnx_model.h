// The ONNX writer's model in memory, for the exports that rewrite it further (hls4ml). Private to
// src/export: only these files see the protobuf types.
#pragma once

#include <onnx/onnx_pb.h>

#include <map>
#include <string>

#include "sparq/export/onnx_export.h"

namespace sparq::exporting {

struct BuiltOnnx {
  onnx::ModelProto model;
  /// Per ONNX node name: the hint it was written under, `<layer>` or `<layer>.<lane>`
  /// (`fc1.input`, `fc1.weight.quant`, `fc1.bias.quant`, `fc1.output`, `fc1.multiplier`).
  std::map<std::string, std::string> origin_of;
  int64_t quantizers = 0;
};

BuiltOnnx build_onnx(models::Graph& graph, OnnxFlavor flavor);

/// Checks `model` with Debian's onnx checker and writes it atomically; throws sparq::Error.
void write_onnx(const onnx::ModelProto& model, const std::string& path);

}  // namespace sparq::exporting
