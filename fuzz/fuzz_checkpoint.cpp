// Fuzz target: sparq's checks of a checkpoint before LibTorch reads it (the CRC-32 trailer, the
// archive's end for checkpoints written before checksums). An input that passes them is handed
// to Trainer::load_checkpoint only when its archive is one of the seeds': the archive itself is
// LibTorch's TorchScript format, and its reader crashes on crafted archives (LibTorch 1.13:
// docs/reliability.md), which no check in front of it can prevent; a changed file can only pass
// with a recomputed checksum.
#include <torch/torch.h>

#include <set>

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
  static const std::set<std::string> seed_archives = [] {
    std::set<std::string> out;
    for (const char* seed : {"mlp8.pt", "mlp8_no_checksum.pt"})
      out.insert(train::read_checkpoint_archive(std::string(SPARQ_SOURCE_DIR) + "/fuzz/corpus/checkpoint/" + seed));
    return out;
  }();
  auto path = fuzz::input_file(data, size, "checkpoint.pt");
  fuzz::expect_clean_end([&] {
    if (seed_archives.count(train::read_checkpoint_archive(path))) trainer.load_checkpoint(path);
  });
  return 0;
}
