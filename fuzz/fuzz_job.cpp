// Fuzz target: a job file, parsed and validated as `sparq run` does before loading data; for
// random data its model is built too, so model keys and sizes are checked.
#include <torch/torch.h>

#include "fuzz_input.h"
#include "sparq/config/job.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparq;
  std::string text(reinterpret_cast<const char*>(data), size);
  fuzz::expect_clean_end([&] {
    auto job = config::parse_job(text, "job.yaml", fuzz::work_dir().string());
    if (job.data.dataset == "random")
      config::build_model(job.model, job.data.random_shape, job.data.num_classes > 0 ? job.data.num_classes : 10);
  });
  return 0;
}
