// Optuna's samplers, written from Optuna's algorithms: each picks a new trial's parameter values
// from the study's trials so far (read from the storage, so workers in other processes and
// Python's Optuna inform each other). GridSampler and BruteForceSampler visit each point once;
// RandomSampler; TPESampler (univariate Parzen estimators, Optuna's defaults); NSGAIISampler
// (generations, non-dominated sorting, crowding distance, uniform crossover, mutation).
#pragma once

#include <memory>
#include <random>
#include <vector>

#include "sparq/tune/search.h"
#include "sparq/tune/storage.h"

namespace sparq::tune {

struct Suggestion {
  std::vector<double> values;  ///< internal representation, per parameter
  nlohmann::json system_attrs = nlohmann::json::object();  ///< stored with the trial (grid_id, generation)
};

class Sampler {
 public:
  virtual ~Sampler() = default;
  /// Values for trial `number` (already created, RUNNING, in `trials`); `maximize` per objective.
  virtual Suggestion sample(const std::vector<Param>& params, const std::vector<TrialRecord>& trials,
                            const std::vector<bool>& maximize, int64_t number) = 0;
  /// Grid-like samplers: whether every point has a trial (the study stops).
  virtual bool exhausted(const std::vector<Param>& params, const std::vector<TrialRecord>& trials) const { return false; }
};

/// From the study's `sampler` and `sampler.params`. Throws ConfigError for what the sampler cannot
/// search (a continuous parameter for a grid, a search_space that does not fit).
std::unique_ptr<Sampler> make_sampler(const StudySpec& spec);

/// Optuna's RandomSampler draw of one parameter (internal representation).
double random_value(const Distribution& d, std::mt19937_64& rng);

/// Non-dominated sorting: the front index (0 = Pareto front) of each point, all objectives
/// turned to "smaller is better".
std::vector<int> front_ranks(const std::vector<std::vector<double>>& losses);

}  // namespace sparq::tune
