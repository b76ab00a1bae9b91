// Fuzz target: the IDX reader.
#include <torch/torch.h>

#include "fuzz_input.h"
#include "sparq/data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparq;
  fuzz::expect_clean_end([&] { data::read_idx(fuzz::input_file(data, size, "x.idx")); });
  return 0;
}
