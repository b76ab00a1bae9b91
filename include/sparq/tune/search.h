// What a study searches: the parameters (Optuna's distributions, each mapped to a place in the
// job), the objectives with their directions, the sampler and the trial budget. Read from a job's
// general `search:` section or from its PQuantML config's `hpo_parameters` (the seeds'
// `finetuning_parameters`), with PQuantML's flat-name mapping; every name must map to a key of the
// job before any trial runs. See docs/search.md.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "sparq/config/job.h"

namespace sparq::tune {

/// Optuna's FloatDistribution, IntDistribution and CategoricalDistribution.
struct Distribution {
  enum class Kind { Float, Int, Categorical };
  Kind kind = Kind::Float;
  double low = 0, high = 0;
  std::optional<double> step;  ///< Float: none = continuous; Int: always (default 1)
  bool log = false;
  std::vector<nlohmann::json> choices;  ///< Categorical: strings, numbers, booleans, null

  static Distribution floating(double low, double high, std::optional<double> step = {}, bool log = false);
  static Distribution integer(int64_t low, int64_t high, int64_t step = 1, bool log = false);
  static Distribution categorical(std::vector<nlohmann::json> choices);

  /// Optuna's distribution_json: {"name": "FloatDistribution", "attributes": {...}}.
  nlohmann::json to_json() const;
  static Distribution from_json(const nlohmann::json& j);  ///< throws Error on an unknown name
  /// Optuna's internal representation (param_value): the number, or the categorical's index.
  double to_internal(const nlohmann::json& value) const;
  nlohmann::json to_external(double internal) const;
  bool contains(double internal) const;
  /// Discrete values in order (Int, stepped Float, Categorical indices); empty when continuous.
  std::vector<double> grid() const;
  bool operator==(const Distribution& o) const;
};

/// A grid point as its decimal reads (0.3 + 2 * 0.2 is 0.7, not 0.7000000000000001).
double on_grid(double v);

/// Optuna's step rule: `high` moves down to low + floor((high - low) / step) * step, in decimal
/// arithmetic on the numbers as written (so [1e-5, 1e-3] with step 0.2 is the single value 1e-5).
double adjust_high(double low, double high, double step);

struct Param {
  std::string name;   ///< the Optuna parameter name, as written
  Distribution distribution;
  std::string path;   ///< the job key it sets: "training.lr", "compression.pruning_parameters.sparsity"
  std::string where;  ///< "job.yaml:12:5", for messages
};

/// The metrics a trial can report: eval_accuracy, eval_loss, test_accuracy, test_loss, train_loss,
/// ebops, sparsity, weight_bits, nonzero_weights, train_seconds.
const std::vector<std::string>& objective_names();

struct Objective {
  std::string name;
  bool maximize = true;
};

struct StudySpec {
  std::string experiment_name = "experiment_1";
  std::string sampler = "TPESampler";
  nlohmann::json sampler_params = nlohmann::json::object();  ///< Optuna's keyword arguments
  int64_t num_trials = 0;
  std::vector<Param> params;
  std::vector<Objective> objectives;  ///< default: eval_accuracy, maximize
  std::string pruner;                 ///< "", MedianPruner, SuccessiveHalvingPruner, NopPruner
  nlohmann::json pruner_params = nlohmann::json::object();
  std::string source;                 ///< "search" or "hpo_parameters" (where it was read from)
};

/// The study of a job file: its `search:` section, else its PQuantML config's search section.
/// Throws ConfigError with file:line for a bad section, a sampler sparq does not have, a name that
/// maps nowhere, an objective that does not exist, or a job without either section.
StudySpec load_study_spec(const config::Job& job);

/// The job of one trial: `job` with each value (by parameter) set at its path, its output folder
/// `output` and its name `name`. Throws ConfigError naming the parameter when the job refuses it.
config::Job trial_job(const config::Job& job, const std::vector<Param>& params, const std::vector<nlohmann::json>& values,
                      const std::string& output, const std::string& name);
/// The trial job's YAML text (best_job.yaml).
std::string trial_job_text(const config::Job& job, const std::vector<Param>& params,
                           const std::vector<nlohmann::json>& values, const std::string& output, const std::string& name);

}  // namespace sparq::tune
