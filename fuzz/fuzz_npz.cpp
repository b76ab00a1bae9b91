// Fuzz target: the NPZ (zip, stored and deflated members) reader.
#include <torch/torch.h>

#include "fuzz_input.h"
#include "sparq/data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparq;
  fuzz::expect_clean_end([&] { data::read_npz(fuzz::input_file(data, size, "x.npz")); });
  return 0;
}
