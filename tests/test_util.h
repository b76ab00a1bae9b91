// Helpers shared by the tests: temporary folders, running the sparq program, fixture paths.
#pragma once

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "sparq/data/dataset.h"
#include "sparq/error.h"
#include "sparq/models/graph.h"
#include "sparq/config/pquant.h"
#include "sparq/train/callbacks.h"
#include "sparq/yaml/reader.h"
#include "sparq/train/trainer.h"

/// Skips the test when a real client (`what`) is missing, unless scripts/setup.sh runs the suite
/// (SPARQ_REQUIRE_CLIENTS=1): then a missing client fails it.
#define SPARQ_REQUIRE_CLIENT(present, what)                                                          \
  if (!(present)) {                                                                                \
    if (std::getenv("SPARQ_REQUIRE_CLIENTS")) FAIL() << what << " is not installed";             \
    GTEST_SKIP() << what << " is not installed (scripts/setup.sh test installs it)";             \
  }

namespace sparq::test {

/// Two Gaussian blobs in 8 dimensions, 3 classes (class 2 is the union of both, shifted): a small
/// separable problem for trainer tests.
inline data::Dataset blobs(int64_t n, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto y = at::randint(3, {n}, gen, torch::kInt64);
  auto x = at::normal(0.0, 1.0, {n, 8}, gen) + y.unsqueeze(1).to(torch::kFloat32) * 2.0;
  return data::make_dataset(x, y, data::Task::Classification, 3, "blobs");
}

/// 8 -> 16 -> ReLU -> 3: a small model for blobs().
inline models::GraphSpec blobs_mlp() {
  return models::parse_model_yaml(R"(
input_shape: [8]
layers:
  - {name: fc1, op: Linear, out_features: 16}
  - {name: relu1, op: ReLU}
  - {name: fc2, op: Linear, out_features: 3}
)", "mlp.yaml");
}

/// A fresh folder under the system temp dir, removed when the object goes away.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    path_ = std::filesystem::temp_directory_path() /
            ("sparq_test_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  static inline int counter_ = 0;
};

struct CommandResult {
  int exit_code;
  std::string output;  ///< stdout and stderr together
};

/// Runs the sparq program with `args` (a shell-quoted string).
inline CommandResult run_sparq(const std::string& args) {
  std::string cmd = std::string(SPARQ_CLI_PATH) + " " + args + " 2>&1";
  CommandResult r{-1, ""};
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return r;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) r.output.append(buf, n);
  int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

inline std::string fixture(const std::string& name) { return std::string(SPARQ_TEST_DATA) + "/" + name; }

/// The golden ap_fixed table: the copy in tests/fixtures/golden (so the suite never runs without
/// it), or $SPARQ_GOLDEN_DIR. golden_source_table() is the workplace's original beside the
/// checkout, which a test compares with the copy when it is there.
inline std::string golden_table() {
  const char* dir = std::getenv("SPARQ_GOLDEN_DIR");
  return (dir ? std::string(dir) : std::string(SPARQ_TEST_DATA) + "/golden") + "/fixed_point_ap.csv";
}
inline std::string golden_source_table() { return std::string(SPARQ_SOURCE_DIR) + "/../shared/golden/fixed_point_ap.csv"; }

/// The message of the exception of type E that `fn` throws ("" if none is thrown).
template <typename E, typename Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  return "";
}

inline void write_file(const std::string& path, const std::string& text) {
  FILE* f = std::fopen(path.c_str(), "wb");
  std::fwrite(text.data(), 1, text.size(), f);
  std::fclose(f);
}

/// A file's whole text ("" when it cannot be read).
inline std::string read_text(const std::string& path) {
  std::string text;
  if (FILE* f = std::fopen(path.c_str(), "rb")) {
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) text.append(buf, n);
    std::fclose(f);
  }
  return text;
}

/// The records of a run folder's metrics.jsonl, one per epoch.
inline std::vector<nlohmann::json> metrics_of(const std::string& run_dir) {
  std::istringstream in(read_text(run_dir + "/metrics.jsonl"));
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

/// Two runs of the same job done two ways agree epoch by epoch: train and eval losses within
/// `rel` (relative, absolute below 1), EBOPs within 1e-3.
inline void expect_epochs_near(const std::vector<train::EpochMetrics>& a, const std::vector<train::EpochMetrics>& b,
                               double rel = 1e-4) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t e = 0; e < a.size(); ++e) {
    const auto &l = a[e], &m = b[e];
    EXPECT_NEAR(l.train_loss, m.train_loss, rel * std::max(1.0, std::abs(l.train_loss))) << "epoch " << e + 1;
    EXPECT_NEAR(l.eval.loss, m.eval.loss, rel * std::max(1.0, std::abs(l.eval.loss))) << "epoch " << e + 1;
    EXPECT_NEAR(l.cost.ebops, m.cost.ebops, 1e-3 * std::max(1.0, l.cost.ebops)) << "epoch " << e + 1;
  }
}

/// The Plan of a PQuantML config given as text (errors name "c.yaml").
inline Plan pquant_plan(const std::string& text) {
  auto doc = yaml::YamlDoc::load_string(text, "c.yaml");
  return config::parse_pquant(doc.file, doc.root);
}

/// A Trainer set up as run_job sets it up: with a run folder `dir` it writes metrics.jsonl and
/// checkpoint.pt there, and fit(resume) continues from that checkpoint ("" writes nothing).
class RunTrainer {
 public:
  RunTrainer(models::Graph model, train::TrainOptions options, std::string dir,
             std::optional<Schedule> schedule = std::nullopt, std::vector<Event> events = {})
      : trainer_(std::move(model), std::move(options), std::move(schedule), std::move(events)), dir_(std::move(dir)) {
    if (!dir_.empty()) train::write_run_folder(trainer_, dir_, true);
  }
  std::vector<train::EpochMetrics> fit(const data::Dataset& train, const data::Dataset& eval, bool resume = false,
                                       int64_t stop_after = -1) {
    train::FitOptions f;
    if (resume) f.resume_from = train::resume_checkpoint(dir_);
    f.stop_after = stop_after;
    return trainer_.fit(train, eval, f);
  }
  train::Trainer* operator->() { return &trainer_; }
  train::Trainer& operator*() { return trainer_; }

 private:
  train::Trainer trainer_;
  std::string dir_;
};

}  // namespace sparq::test
