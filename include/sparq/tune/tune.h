// `sparq tune JOB`: a study of the job's search section. Each trial is a job (the values set at
// their paths) run by run_job into its own folder under the study's; its objectives, per-epoch
// intermediate values, run folder and costs go to the study (Optuna's schema). Any number of
// processes run trials of one study: they share it through the storage, heartbeat their RUNNING
// trials, and fail the trials of workers that died (stale heartbeat). See docs/search.md.
#pragma once

#include <atomic>
#include <map>
#include <string>
#include <vector>

#include "sparq/tune/search.h"
#include "sparq/tune/storage.h"

namespace sparq::tune {

struct TuneOptions {
  std::string storage;  ///< default: sqlite:///<study dir>/study.db
  std::string output;   ///< the study's folder; default runs/<experiment_name>
  int64_t trials = -1;  ///< trials this process runs; -1: the spec's num_trials
  int threads = 0;      ///< CPU threads per trial (0: the job's, or all cores)
  double heartbeat_seconds = 10;
  double grace_seconds = 30;  ///< a RUNNING trial whose heartbeat is older fails (its worker died)
  std::string worker;         ///< a name in the lines this process prints ("" alone)
};

/// Where a study lives: its folder and its storage URL (the defaults filled in).
std::string study_dir(const StudySpec& spec, const TuneOptions& options);
std::string storage_url(const StudySpec& spec, const TuneOptions& options);

/// Optuna's MedianPruner and SuccessiveHalvingPruner (spec.pruner, spec.pruner_params) on the
/// first objective's intermediate values (one per epoch).
class Pruner {
 public:
  Pruner(const StudySpec& spec, bool maximize) : type_(spec.pruner), params_(spec.pruner_params), maximize_(maximize) {}
  bool active() const { return !type_.empty() && type_ != "NopPruner"; }
  /// Whether trial `number` stops after `step`, with its values so far (`own`) and the study's trials.
  bool prune(int64_t number, int64_t step, const std::map<int64_t, double>& own, const std::vector<TrialRecord>& trials) const;

 private:
  std::string type_;
  nlohmann::json params_;
  bool maximize_;
};

/// A trial as it ends, for the live line.
struct TrialReport {
  int64_t number = 0;
  TrialState state = TrialState::Running;
  std::vector<nlohmann::json> params;  ///< per parameter of the spec
  std::vector<double> values;          ///< per objective (COMPLETE)
  std::string run_dir, message;        ///< message: why it failed or was pruned
  double seconds = 0;
};

class TuneObserver {
 public:
  virtual ~TuneObserver() = default;
  virtual void on_trial_start(int64_t number, const std::vector<nlohmann::json>& params) {}
  virtual void on_trial_end(const TrialReport& report) {}
};

/// Runs trials of the study until this process's budget is spent or a grid is exhausted; stops
/// early (the running trial FAIL, "interrupted") when `stop` becomes true. Returns the trials run.
std::vector<TrialReport> run_trials(const config::Job& job, const StudySpec& spec, const TuneOptions& options,
                                    TuneObserver& observer, const std::atomic<bool>& stop);

/// The study's best trial (one objective) or Pareto front (several), COMPLETE trials only.
std::vector<TrialRecord> best_trials(const std::vector<TrialRecord>& trials, const std::vector<bool>& maximize);

/// A stored trial's values, per parameter of the spec (null where the trial has none).
std::vector<nlohmann::json> trial_values(const StudySpec& spec, const TrialRecord& trial);
/// The job of a stored trial (best_job.yaml), its values read back from the storage.
std::string job_of_trial(const config::Job& job, const StudySpec& spec, const TrialRecord& trial, const std::string& output);

}  // namespace sparq::tune
