// ONNX import: a float ONNX model as torch.onnx.export writes it (opsets 11-17 and later ones
// with the same ops) becomes a GraphSpec plus the values of its parameters and buffers, named as
// the PyTorch modules were ("layer1.0.conv1.weight"), so configs that name PyTorch modules select
// the same layers. See docs/onnx.md for the ops and patterns it reads.
#pragma once

#include <map>
#include <string>

#include "sparq/models/graph.h"

namespace sparq::models {

struct OnnxImport {
  GraphSpec spec;
  /// Parameter and buffer values by their Graph name ("fc1.weight", "bn1.running_mean").
  std::map<std::string, torch::Tensor> state;
  int64_t opset = 0;
  std::string producer;  ///< "pytorch 1.13.1", from the file
};

/// Reads `path`. Throws ModelError (one line, naming the file, node, op and opset) for a file
/// that is not a valid ONNX model, an op or attribute sparq cannot represent, or shapes that are
/// dynamic where they must be static (anything but the batch axis).
OnnxImport import_onnx(const std::string& path);

/// Copies `state` into the parameters and buffers of `graph` (every entry must exist there with
/// its shape). `what` names the source in errors. Throws ModelError.
void load_state(Graph& graph, const std::map<std::string, torch::Tensor>& state, const std::string& what);

}  // namespace sparq::models
