// Fuzz target: a compression config in any dialect (PQuantML, NNI config list, SparseML recipe),
// recognised and lowered to a Plan as `sparq run` does.
#include <torch/torch.h>

#include "fuzz_input.h"
#include "sparq/config/dialect.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparq;
  fuzz::expect_clean_end([&] { config::load_plan(fuzz::input_file(data, size, "config.yaml")); });
  return 0;
}
