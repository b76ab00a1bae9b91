// The study driver (see tune.h): ask the sampler, run the trial's job, tell the storage.
#include "sparq/tune/tune.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "sparq/error.h"
#include "sparq/run/run_job.h"
#include "sparq/runtime.h"
#include "sparq/tune/sampler.h"

namespace sparq::tune {

namespace fs = std::filesystem;

std::string study_dir(const StudySpec& spec, const TuneOptions& options) {
  return options.output.empty() ? (fs::path("runs") / spec.experiment_name).string() : options.output;
}
std::string storage_url(const StudySpec& spec, const TuneOptions& options) {
  return options.storage.empty() ? "sqlite:///" + (fs::path(study_dir(spec, options)) / "study.db").string() : options.storage;
}

namespace {

struct TrialPruned {
  int64_t step;
};
struct TrialStopped {};

/// A metric after one epoch by its objective name (the intermediate values pruners read; the
/// test split's are the evaluation's until the run ends).
double epoch_metric(const std::string& name, const train::EpochMetrics& m, bool classification) {
  if (name == "eval_accuracy" || name == "test_accuracy") return classification ? m.eval.accuracy : NAN;
  if (name == "eval_loss" || name == "test_loss") return m.eval.loss;
  if (name == "train_loss") return m.train_loss;
  if (name == "ebops") return m.cost.ebops;
  if (name == "sparsity") return m.sparsity;
  if (name == "weight_bits") return m.cost.weight_bits;
  if (name == "nonzero_weights") return static_cast<double>(m.cost.nonzero);
  return NAN;
}
/// A metric of a finished run by its objective name (NaN when the run has none).
double metric(const std::string& name, const RunResult& r) {
  if (name == "test_accuracy") return r.test.samples > 0 && r.classification ? r.test.accuracy : NAN;
  if (name == "test_loss") return r.test.samples > 0 ? r.test.loss : NAN;
  if (name == "train_seconds") {
    double s = 0;
    for (const auto& e : r.history) s += e.seconds;
    return r.history.empty() ? NAN : s;
  }
  return r.history.empty() ? NAN : epoch_metric(name, r.history.back(), r.classification);
}

/// Reports each epoch's value of the first objective, asks the pruner, and stops on request.
class TrialCallback : public train::Callback {
 public:
  TrialCallback(Storage& storage, int64_t study, int64_t trial, int64_t number, const std::string& objective, const Pruner& pruner,
                const std::atomic<bool>& stop)
      : storage_(storage), study_(study), trial_(trial), number_(number), objective_(objective), pruner_(pruner), stop_(stop) {}
  void on_step_end(train::Trainer&, const train::TrainContext&) override {
    if (stop_) throw TrialStopped{};
  }
  void on_epoch_report(train::Trainer&, const train::TrainContext&, const train::EpochMetrics& m) override {
    const double v = epoch_metric(objective_, m, classification);
    if (std::isnan(v) && !std::isnan(m.train_loss)) return;  // a metric without per-epoch values
    storage_.report(trial_, m.epoch, v);
    own_[m.epoch] = v;
    if (pruner_.active() && pruner_.prune(number_, m.epoch, own_, storage_.trials(study_))) throw TrialPruned{m.epoch};
  }
  bool classification = true;

 private:
  Storage& storage_;
  int64_t study_, trial_, number_;
  std::string objective_;
  const Pruner& pruner_;
  const std::atomic<bool>& stop_;
  std::map<int64_t, double> own_;
};

class TrialObserver : public RunObserver {
 public:
  explicit TrialObserver(TrialCallback& callback) : callback_(callback) {}
  void on_data(const config::Job&, const data::Splits& splits) override {
    callback_.classification = splits.train.task == data::Task::Classification;
  }
  void on_trainer(const config::Job&, train::Trainer& trainer) override {
    trainer.add_callback(std::shared_ptr<train::Callback>(&callback_, [](train::Callback*) {}));
  }

 private:
  TrialCallback& callback_;
};

/// Keeps a RUNNING trial's heartbeat fresh from its own connection until destroyed.
class Heartbeat {
 public:
  Heartbeat(const std::string& url, int64_t trial, double seconds) {
    thread_ = std::thread([this, url, trial, seconds] {
      try {
        Storage storage(url);
        std::unique_lock<std::mutex> lock(mutex_);
        while (!done_) {
          cv_.wait_for(lock, std::chrono::duration<double>(seconds));
          if (!done_) storage.heartbeat(trial);
        }
      } catch (const std::exception&) {
        // the trial then goes stale and another worker fails it: said by the study, not here
      }
    });
  }
  ~Heartbeat() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
};

std::vector<bool> directions_of(const StudySpec& spec) {
  std::vector<bool> d;
  for (const auto& o : spec.objectives) d.push_back(o.maximize);
  return d;
}

}  // namespace

std::vector<TrialReport> run_trials(const config::Job& job, const StudySpec& spec, const TuneOptions& options, TuneObserver& observer,
                                    const std::atomic<bool>& stop) {
  const std::string dir = study_dir(spec, options), url = storage_url(spec, options);
  // A storage the user named is opened first (a wrong URL writes nothing); the default lives in the folder.
  if (options.storage.empty()) fs::create_directories(dir);
  Storage storage(url);
  fs::create_directories(dir);
  const auto maximize = directions_of(spec);
  if (!spec.pruner.empty() && spec.pruner != "NopPruner" && maximize.size() > 1)
    throw ConfigError(fmt::format("{}: search.pruner: Optuna's pruners take one objective; the search has {}", job.file, maximize.size()));
  const int64_t study = storage.study(spec.experiment_name, maximize);
  auto sampler = make_sampler(spec);
  const Pruner pruner(spec, maximize[0]);
  const int64_t budget = options.trials >= 0 ? options.trials : spec.num_trials;
  std::vector<TrialReport> reports;
  for (int64_t k = 0; k < budget && !stop; ++k) {
    storage.fail_stale(study, options.grace_seconds);
    auto trials = storage.trials(study);
    if (sampler->exhausted(spec.params, trials)) break;
    auto [trial, number] = storage.create_trial(study);
    Heartbeat heartbeat(url, trial, options.heartbeat_seconds);
    trials = storage.trials(study);
    TrialReport report;
    report.number = number;
    const auto started = std::chrono::steady_clock::now();
    try {
      auto suggestion = sampler->sample(spec.params, trials, maximize, number);
      for (size_t p = 0; p < spec.params.size(); ++p) {
        storage.set_param(trial, spec.params[p].name, suggestion.values[p], spec.params[p].distribution);
        report.params.push_back(spec.params[p].distribution.to_external(suggestion.values[p]));
      }
      for (const auto& [key, value] : suggestion.system_attrs.items()) storage.set_system_attr(trial, key, value);
      report.run_dir = (fs::path(dir) / fmt::format("trial_{}", number)).string();
      storage.set_user_attr(trial, "run_dir", fs::absolute(report.run_dir).string());
      if (!options.worker.empty()) storage.set_user_attr(trial, "worker", options.worker);
      observer.on_trial_start(number, report.params);
      auto trial_job_ = trial_job(job, spec.params, report.params, report.run_dir, fmt::format("{}_trial_{}", spec.experiment_name, number));
      if (options.threads > 0) trial_job_.threads = options.threads;
      configure_runtime(static_cast<int>(trial_job_.threads));
      TrialCallback callback(storage, study, trial, number, spec.objectives[0].name, pruner, stop);
      TrialObserver trial_observer(callback);
      auto result = run_job(trial_job_, trial_observer);
      for (const auto& o : spec.objectives) report.values.push_back(metric(o.name, result));
      const auto& last = result.history.empty() ? train::EpochMetrics{} : result.history.back();
      storage.set_user_attr(trial, "ebops", last.cost.ebops);
      storage.set_user_attr(trial, "sparsity", last.sparsity);
      storage.set_user_attr(trial, "weight_bits", last.cost.weight_bits);
      if (result.test.samples > 0) storage.set_user_attr(trial, "test_accuracy", result.test.accuracy);
      bool finite = true;
      for (double v : report.values) finite = finite && !std::isnan(v);
      if (finite) {
        report.state = TrialState::Complete;
        storage.finish(trial, TrialState::Complete, report.values);
      } else {
        report.state = TrialState::Fail, report.message = "an objective is NaN (the run diverged, or has no such metric)";
        storage.set_user_attr(trial, "fail_reason", report.message);
        storage.finish(trial, TrialState::Fail);
      }
    } catch (const TrialPruned& p) {
      report.state = TrialState::Pruned, report.message = fmt::format("pruned after epoch {}", p.step);
      storage.finish(trial, TrialState::Pruned);
    } catch (const TrialStopped&) {
      report.state = TrialState::Fail, report.message = "interrupted";
      storage.set_user_attr(trial, "fail_reason", report.message);
      storage.finish(trial, TrialState::Fail);
    } catch (const std::exception& e) {
      // A trial that throws (a value the job refuses, a diverged loss, an I/O error) fails; the study goes on.
      report.state = TrialState::Fail, report.message = e.what();
      storage.set_user_attr(trial, "fail_reason", report.message);
      storage.finish(trial, TrialState::Fail);
    }
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    observer.on_trial_end(report);
    reports.push_back(report);
  }
  return reports;
}

bool Pruner::prune(int64_t number, int64_t step, const std::map<int64_t, double>& own, const std::vector<TrialRecord>& trials) const {
  if (!active()) return false;
  const double value = own.at(step);
  if (std::isnan(value)) return true;
  auto better = [&](double a, double b) { return maximize_ ? a > b : a < b; };
  if (type_ == "MedianPruner") {
    const int64_t startup = params_.value("n_startup_trials", int64_t(5)), warmup = params_.value("n_warmup_steps", int64_t(0));
    const int64_t interval = params_.value("interval_steps", int64_t(1)), min_trials = params_.value("n_min_trials", int64_t(1));
    if (step < warmup || (step - warmup) % interval != 0) return false;
    std::vector<double> others;
    int64_t completed = 0;
    for (const auto& t : trials) {
      if (t.number == number || t.state != TrialState::Complete) continue;
      ++completed;
      auto it = t.intermediate.find(step);
      if (it != t.intermediate.end() && !std::isnan(it->second)) others.push_back(it->second);
    }
    if (completed < startup || static_cast<int64_t>(others.size()) < min_trials) return false;
    std::sort(others.begin(), others.end());
    const size_t n = others.size();
    const double median = n % 2 ? others[n / 2] : 0.5 * (others[n / 2 - 1] + others[n / 2]);
    double best = value;
    for (const auto& [s, v] : own)
      if (s <= step && !std::isnan(v) && better(v, best)) best = v;
    return better(median, best);
  }
  // SuccessiveHalvingPruner: rungs at min_resource * reduction_factor^(rate + k).
  const int64_t min_resource = params_.contains("min_resource") && params_["min_resource"].is_number_integer()
                                   ? params_["min_resource"].get<int64_t>()
                                   : 1;
  const int64_t factor = params_.value("reduction_factor", int64_t(4)), rate = params_.value("min_early_stopping_rate", int64_t(0));
  int64_t rung_step = min_resource;
  for (int64_t k = 0; k < rate; ++k) rung_step *= factor;
  while (rung_step < step) rung_step *= factor;
  if (rung_step != step) return false;
  std::vector<double> competing{value};
  for (const auto& t : trials) {
    if (t.number == number) continue;
    auto it = t.intermediate.find(step);
    if (it != t.intermediate.end() && !std::isnan(it->second)) competing.push_back(it->second);
  }
  std::sort(competing.begin(), competing.end(), [&](double a, double b) { return better(a, b); });
  int64_t promotable = static_cast<int64_t>(competing.size()) / factor - 1;
  if (promotable < 0) promotable = 0;
  return better(competing[static_cast<size_t>(promotable)], value);
}


std::vector<TrialRecord> best_trials(const std::vector<TrialRecord>& trials, const std::vector<bool>& maximize) {
  std::vector<TrialRecord> done;
  for (const auto& t : trials)
    if (t.state == TrialState::Complete && t.values.size() == maximize.size()) done.push_back(t);
  if (done.empty()) return {};
  std::vector<std::vector<double>> losses;
  for (const auto& t : done) {
    std::vector<double> l;
    for (size_t o = 0; o < maximize.size(); ++o) l.push_back(maximize[o] ? -t.values[o] : t.values[o]);
    losses.push_back(l);
  }
  if (maximize.size() == 1) {
    size_t best = 0;
    for (size_t k = 1; k < done.size(); ++k)
      if (losses[k][0] < losses[best][0]) best = k;  // ties: the earlier trial, as Optuna
    return {done[best]};
  }
  auto rank = front_ranks(losses);
  std::vector<TrialRecord> front;
  for (size_t k = 0; k < done.size(); ++k)
    if (rank[k] == 0) front.push_back(done[k]);
  std::sort(front.begin(), front.end(), [](const TrialRecord& a, const TrialRecord& b) { return a.values[0] > b.values[0]; });
  return front;
}

std::vector<nlohmann::json> trial_values(const StudySpec& spec, const TrialRecord& trial) {
  std::vector<nlohmann::json> values;
  for (const auto& p : spec.params) {
    auto it = trial.params.find(p.name);
    values.push_back(it == trial.params.end() ? nlohmann::json(nullptr) : it->second.second.to_external(it->second.first));
  }
  return values;
}

std::string job_of_trial(const config::Job& job, const StudySpec& spec, const TrialRecord& trial, const std::string& output) {
  for (const auto& p : spec.params)
    if (!trial.params.count(p.name))
      throw Error(fmt::format("trial {} has no value of '{}' (added by another search?)", trial.number, p.name));
  return trial_job_text(job, spec.params, trial_values(spec, trial), output, fs::path(output).filename().string());
}

}  // namespace sparq::tune
