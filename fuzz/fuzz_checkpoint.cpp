// Fuzz target: resuming from a checkpoint (the checksum trailer, torch's zip archive, the weights,
// optimizer and callback state read into a Trainer). An input whose first byte is odd gets a valid
// checksum appended, so the archive reader behind the checksum is fuzzed too.
#include <torch/torch.h>
#include <zlib.h>

#include <fmt/format.h>

#include "fuzz_input.h"
#include "sparq/models/graph.h"
#include "sparq/train/trainer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparq;
  // The model of the seed checkpoints (fuzz/make_corpus.py): mlp, widths [8], 16 features, 5 classes.
  static train::Trainer trainer = [] {
    models::ZooOptions small;
    small.widths = {8};
    return train::Trainer(models::Graph(models::zoo_spec("mlp", {16}, 5, small)), train::TrainOptions{});
  }();
  std::string bytes(reinterpret_cast<const char*>(data), size);
  if (size > 0 && (data[0] & 1)) {
    uint32_t crc = static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(bytes.data()), static_cast<uInt>(bytes.size())));
    bytes += fmt::format("sparq-crc32:{:08x}", crc);
  }
  auto path = fuzz::input_file(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "checkpoint.pt");
  fuzz::expect_clean_end([&] { trainer.load_checkpoint(path); });
  return 0;
}
