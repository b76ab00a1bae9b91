#include "cli/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

namespace sparq::cli {

using train::Progress;

namespace {
std::string duration(double s) {
  int total = static_cast<int>(s + 0.5);
  return total >= 3600 ? fmt::format("{}:{:02}:{:02}", total / 3600, total / 60 % 60, total % 60)
                       : fmt::format("{:02}:{:02}", total / 60, total % 60);
}
}  // namespace

ProgressDisplay::ProgressDisplay(Progress mode, std::string label, int64_t total_batches,
                                 int64_t batch_size)
    : mode_(mode), label_(std::move(label)), total_(total_batches), batch_size_(batch_size) {
  if (mode_ == Progress::Auto) mode_ = isatty(STDERR_FILENO) ? Progress::Bar : Progress::Lines;
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

void ProgressDisplay::step(int64_t done) {
  if (mode_ == Progress::None) return;
  auto now = std::chrono::steady_clock::now();
  double elapsed = std::chrono::duration<double>(now - start_).count();
  if (mode_ == Progress::Bar) {
    // Redraw at most 10 times a second.
    if (done < total_ && std::chrono::duration<double>(now - last_draw_).count() < 0.1) return;
    last_draw_ = now;
    draw(done, elapsed);
    return;
  }
  // Lines: one line per 25% of the epoch, for logs that are read later.
  int64_t quarter = done * 4 / total_;
  if (quarter > last_line_decile_ && done < total_) {
    last_line_decile_ = quarter;
    double rate = elapsed > 0 ? done * batch_size_ / elapsed : 0;
    double eta = done > 0 ? elapsed * (total_ - done) / done : 0;
    fmt::print(stderr, "{} {}/{} batches, {:.0f} samples/s, ETA {}\n", label_, done, total_, rate,
               duration(eta));
    std::fflush(stderr);
  }
}

void ProgressDisplay::draw(int64_t done, double elapsed) {
  const int width = 30;
  int filled = static_cast<int>(width * done / std::max<int64_t>(total_, 1));
  double rate = elapsed > 0 ? done * batch_size_ / elapsed : 0;
  double eta = done > 0 ? elapsed * (total_ - done) / done : 0;
  fmt::print(stderr, "\r{} [{}{}] {}/{} {:.0f} samples/s ETA {}   ", label_, std::string(filled, '#'),
             std::string(width - filled, '.'), done, total_, rate, duration(eta));
  std::fflush(stderr);
}

void ProgressDisplay::finish() {
  if (mode_ == Progress::Bar) {
    fmt::print(stderr, "\r{}\r", std::string(label_.size() + 80, ' '));
    std::fflush(stderr);
  }
}

}  // namespace sparq::cli
