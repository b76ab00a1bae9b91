// Fuzz target: ONNX import (protobuf, graph, initializers) and building the imported Graph.
#include <torch/torch.h>

#include "fuzz_input.h"
#include "sparq/models/graph.h"
#include "sparq/models/onnx_import.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparq;
  fuzz::expect_clean_end([&] {
    auto imported = models::import_onnx(fuzz::input_file(data, size, "model.onnx"));
    models::Graph graph(imported.spec);
    models::load_state(graph, imported.state, "model.onnx");
  });
  return 0;
}
