// Fuzz target: the CSV reader, as a classification file (target column `label`) and as a
// regression file (target `y`).
#include <torch/torch.h>

#include "fuzz_input.h"
#include "sparq/data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparq;
  auto path = fuzz::input_file(data, size, "x.csv");
  fuzz::expect_clean_end([&] { data::read_csv(path, "label", data::Task::Classification); });
  fuzz::expect_clean_end([&] { data::read_csv(path, "y", data::Task::Regression); });
  return 0;
}
