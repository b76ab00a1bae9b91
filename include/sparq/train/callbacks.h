// Callbacks a run folder needs: metrics.jsonl (one JSON object per epoch) and checkpoint.pt
// (everything to resume bit for bit).
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <map>
#include <string>

#include "sparq/train/trainer.h"

namespace sparq::train {

/// Appends each epoch to `dir`/metrics.jsonl; a resumed run first drops the lines after its start.
class MetricsWriter : public Callback {
 public:
  /// `classification`: accuracies are written (null for regression).
  MetricsWriter(std::string dir, bool classification) : dir_(std::move(dir)), classification_(classification) {}
  void on_train_begin(Trainer& t, const TrainContext& ctx) override;
  void on_epoch_report(Trainer& t, const TrainContext& ctx, const EpochMetrics& m) override;

 private:
  std::string dir_;
  bool classification_;
};

/// Saves `dir`/checkpoint.pt after every epoch (after the hooks between epochs ran).
class Checkpointer : public Callback {
 public:
  explicit Checkpointer(std::string dir) : dir_(std::move(dir)) {}
  void on_epoch_report(Trainer& t, const TrainContext& ctx, const EpochMetrics& m) override;

 private:
  std::string dir_;
};

/// Writes text files (name -> text) into `dir` when training begins: after a checkpoint to resume
/// from has loaded, so a resume that is refused leaves the run folder as it was.
class RunFilesWriter : public Callback {
 public:
  RunFilesWriter(std::string dir, std::map<std::string, std::string> files) : dir_(std::move(dir)), files_(std::move(files)) {}
  void on_train_begin(Trainer& t, const TrainContext& ctx) override;

 private:
  std::string dir_;
  std::map<std::string, std::string> files_;
};

/// Gives `trainer` the run folder `dir`: its text `files` (a RunFilesWriter), a MetricsWriter and a
/// Checkpointer (what run_job does).
void write_run_folder(Trainer& trainer, const std::string& dir, bool classification,
                      std::map<std::string, std::string> files = {});
/// `dir`/checkpoint.pt.
std::string checkpoint_path(const std::string& dir);
/// checkpoint_path(dir) when it exists; otherwise throws sparq::Error ("--resume: no checkpoint at ...").
std::string resume_checkpoint(const std::string& dir);

/// One metrics.jsonl line.
nlohmann::json metrics_json(const EpochMetrics& m, bool classification);

}  // namespace sparq::train
