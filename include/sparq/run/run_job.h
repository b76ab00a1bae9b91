// run_job: a whole run as one library call (data -> model -> plan -> compress -> train -> export),
// what `sparq run`, the benches and C++ users call alike. An observer sees each step and can add
// training callbacks (the CLI's progress bar and tables are one); the library prints nothing.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sparq/compress/compress.h"
#include "sparq/compress/speedup.h"
#include "sparq/config/job.h"
#include "sparq/data/dataset.h"
#include "sparq/fit/fitcompress.h"
#include "sparq/export/hls4ml.h"
#include "sparq/models/graph.h"
#include "sparq/train/trainer.h"

namespace sparq {

struct RunOptions {
  bool resume = false;      ///< continue from the run folder's checkpoint
  int64_t stop_after = -1;  ///< > 0: stop after that many global epochs
  /// Rebuild the finished run in job.output (model.pt and run.json) instead of training, and
  /// write `formats` ("onnx", "qonnx"); nothing else in the folder is touched.
  bool export_only = false;
  std::vector<std::string> formats;
  exporting::Hls4mlOptions hls4ml;  ///< for the "hls4ml" format (job `export: [hls4ml]` or `--format hls4ml`)
};

struct RunResult {
  models::Graph model{nullptr};
  std::vector<train::EpochMetrics> history;
  train::EvalResult test;               ///< samples = 0 without a test split
  bool classification = true;
  std::string run_dir;
  CompressReport compression;
  std::optional<nlohmann::json> precision;  ///< precision.json, when the model quantizes
  std::optional<SpeedupReport> speedup;     ///< the plan asked for speedup: model_speedup.pt
  std::vector<std::string> exported;        ///< the ONNX files the job's `export:` wrote
  data::Splits data;                        ///< the data the run loaded (sparq verify compares on its test split)
};

/// Sees a run's steps, in order. Default: nothing.
class RunObserver {
 public:
  virtual ~RunObserver() = default;
  virtual void on_data(const config::Job& job, const data::Splits& splits) {}
  virtual void on_model(const config::Job& job, const models::Graph& model, const torch::Device& device) {}
  virtual void on_compressed(const config::Job& job, const CompressReport& report) {}
  /// A configured setting that cannot take effect in this run (told once, before training).
  virtual void on_warning(const config::Job& job, const std::string& message) {}
  /// FITCompress chose the per-layer formats and masks (at the end of pretraining).
  virtual void on_fitcompress(const config::Job& job, const fit::SearchResult& result) {}
  /// Before training starts: add callbacks here.
  virtual void on_trainer(const config::Job& job, train::Trainer& trainer) {}
  virtual void on_finished(const config::Job& job, const RunResult& result) {}
};

/// The generator state of one run: swapped into LibTorch's default CPU generator while the run
/// builds and trains, and back out after, so runs in one process do not share a random stream.
class RunRng {
 public:
  explicit RunRng(uint64_t seed);
  ~RunRng();
  RunRng(const RunRng&) = delete;
  RunRng& operator=(const RunRng&) = delete;

 private:
  torch::Tensor outer_state_;
};

/// What the job configures that cannot take effect: pruning that starts after its schedule ends,
/// HGQ without epochs after pretraining, a search section under `run`. `steps_per_epoch`: the
/// training batches per epoch.
std::vector<std::string> ineffective_settings(const config::Job& job, int64_t steps_per_epoch);

/// Runs the job; writes metrics.jsonl, checkpoint.pt, model.pt, precision.json (when the model
/// quantizes) and model_speedup.pt (when the plan asks for speedup) to job.output. Throws sparq::Error on bad input.
RunResult run_job(const config::Job& job, RunObserver& observer, const RunOptions& options = {});

/// The layout version of the run folders this sparq writes (run.json's "format"); readers of a run
/// folder (export, verify, report) refuse others.
constexpr int kRunFormat = 1;

/// Throws ConfigError unless `run` (a folder's run.json) is of kRunFormat.
void check_run_format(const nlohmann::json& run, const std::string& run_dir);

/// The job of a finished run folder, from the copy `sparq run` keeps there (job.yaml, and
/// run.json: the job's folder for its relative paths, recipe variables); its output is `run_dir`.
/// Throws ConfigError when the folder is not a run folder of this version.
config::Job load_run_job(const std::string& run_dir);

}  // namespace sparq
