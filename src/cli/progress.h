// Progress of one epoch: a bar redrawn in place on a terminal, plain periodic lines otherwise.
// It only counts batches, so it never forces a device synchronisation.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "sparq/train/trainer.h"

namespace sparq::cli {

using train::Progress;

class ProgressDisplay {
 public:
  ProgressDisplay(Progress mode, std::string label, int64_t total_batches, int64_t batch_size);
  void step(int64_t batches_done);
  /// Clears the bar; the caller prints the epoch summary line.
  void finish();

 private:
  void draw(int64_t done, double elapsed);
  Progress mode_;
  std::string label_;
  int64_t total_, batch_size_;
  std::chrono::steady_clock::time_point start_, last_draw_;
  int64_t last_line_decile_ = 0;
};

}  // namespace sparq::cli
