// Fuzz target: a model YAML file, parsed and built into a Graph (shapes inferred, parameters
// allocated after the size checks).
#include <torch/torch.h>

#include "fuzz_input.h"
#include "sparq/models/graph.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparq;
  std::string text(reinterpret_cast<const char*>(data), size);
  fuzz::expect_clean_end([&] { models::Graph graph(models::parse_model_yaml(text, "model.yaml", {1, 8, 8})); });
  return 0;
}
