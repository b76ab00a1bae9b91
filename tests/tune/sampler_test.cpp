// The search definition and the samplers, without training: Optuna's step rule and distribution
// JSON, PQuantML's typing and flat-name rules, the trial job, and each sampler on in-memory
// studies (grid covers its grid once, seeded samplers repeat, TPE beats random on a 2-D function
// over seeds, NSGA-II moves toward the front).
#include <gtest/gtest.h>
#include <fmt/format.h>

#include <cmath>
#include <functional>
#include <set>

#include "sparq/tune/sampler.h"
#include "sparq/tune/search.h"
#include "sparq/tune/tune.h"
#include "test_util.h"

using namespace sparq;
using namespace sparq::tune;

namespace {

config::Job job_from(const std::string& text) { return config::parse_job(text, "job.yaml", "."); }

const char* kBase = R"(
model: mlp
data: {dataset: random, shape: [16], samples: 64, num_classes: 5}
training: {epochs: 1, batch_size: 16}
)";

/// Runs `n` trials of `spec` in memory: each trial's values are `f(external params)`.
std::vector<TrialRecord> simulate(const StudySpec& spec, const std::function<std::vector<double>(const std::vector<nlohmann::json>&)>& f,
                                  int n) {
  auto sampler = make_sampler(spec);
  std::vector<bool> maximize;
  for (const auto& o : spec.objectives) maximize.push_back(o.maximize);
  std::vector<TrialRecord> trials;
  for (int k = 0; k < n; ++k) {
    if (sampler->exhausted(spec.params, trials)) break;
    TrialRecord t;
    t.id = k + 1, t.number = k;
    trials.push_back(t);
    auto s = sampler->sample(spec.params, trials, maximize, k);
    std::vector<nlohmann::json> external;
    for (size_t p = 0; p < spec.params.size(); ++p) {
      trials.back().params.emplace(spec.params[p].name, std::make_pair(s.values[p], spec.params[p].distribution));
      external.push_back(spec.params[p].distribution.to_external(s.values[p]));
      EXPECT_TRUE(spec.params[p].distribution.contains(s.values[p])) << spec.params[p].name << " " << s.values[p];
    }
    trials.back().system_attrs = s.system_attrs;
    trials.back().values = f(external);
    trials.back().state = TrialState::Complete;
  }
  return trials;
}

StudySpec two_d(const std::string& sampler, int seed) {
  StudySpec s;
  s.sampler = sampler;
  s.sampler_params = {{"seed", seed}};
  s.params = {{"x", Distribution::floating(-5, 5), "x", ""}, {"y", Distribution::floating(-5, 5), "y", ""}};
  s.objectives = {{"loss", false}};
  return s;
}

}  // namespace

TEST(TuneSearch, OptunasStepRuleShrinksTheRangeInDecimalArithmetic) {
  // The shipped finetuning.yaml's learning_rate: [1e-5, 1e-3, 0.2] is the single value 1e-5.
  EXPECT_EQ(adjust_high(1e-5, 1e-3, 0.2), 1e-5);
  EXPECT_EQ(adjust_high(0.0, 1.0, 0.3), 0.9);     // decimal: 0.9, not 0.8999999999999999
  EXPECT_EQ(adjust_high(0.1, 0.7, 0.2), 0.7);     // on the grid in decimal (binary floats are not)
  EXPECT_EQ(adjust_high(0.5, 0.95, 0.05), 0.95);  // PQuantML's sparsity example
  EXPECT_EQ(Distribution::integer(16, 256, 32).high, 240);  // batch_size: [16, 256, 32] -> {16, 48, ..., 240}
  EXPECT_EQ(Distribution::integer(0, 8, 2).grid(), (std::vector<double>{0, 2, 4, 6, 8}));
  EXPECT_EQ(Distribution::floating(0, 1, 0.25).grid(), (std::vector<double>{0, 0.25, 0.5, 0.75, 1}));
}

TEST(TuneSearch, DistributionsAreOptunasJson) {
  auto f = Distribution::floating(1e-4, 0.1, std::nullopt, true);
  EXPECT_EQ(f.to_json(), nlohmann::json::parse(R"({"name":"FloatDistribution","attributes":{"step":null,"low":0.0001,"high":0.1,"log":true}})"));
  auto i = Distribution::integer(2, 8);
  EXPECT_EQ(i.to_json(), nlohmann::json::parse(R"({"name":"IntDistribution","attributes":{"log":false,"step":1,"low":2,"high":8}})"));
  auto c = Distribution::categorical({"pdp", "wanda", nullptr, 3});
  EXPECT_EQ(c.to_json(), nlohmann::json::parse(R"({"name":"CategoricalDistribution","attributes":{"choices":["pdp","wanda",null,3]}})"));
  EXPECT_EQ(c.to_internal("wanda"), 1);  // the categorical's index is the stored param_value
  EXPECT_EQ(c.to_external(3), 3);
  for (const auto& d : {f, i, c}) EXPECT_EQ(Distribution::from_json(d.to_json()), d);
}

TEST(TuneSearch, PquantmlTypingAndFlatNames) {
  auto job = job_from(std::string(kBase) + R"(
compression:
  pruning_parameters: {pruning_method: pdp, sparsity: 0.8}
  hpo_parameters:
    experiment_name: pq
    num_trials: 3
    sampler: {type: RandomSampler, params: {seed: 4}}
    hyperparameter_search:
      numerical:
        sparsity: [0.5, 0.95, 0.05]
        learning_rate: [1e-5, 1e-3]
        batch_size: [16, 256, 32]
        epsilon: [1, 2]
      categorical:
        optimizer: [adam, sgd]
)");
  auto spec = load_study_spec(job);
  EXPECT_EQ(spec.experiment_name, "pq");
  EXPECT_EQ(spec.sampler, "RandomSampler");
  EXPECT_EQ(spec.sampler_params["seed"], 4);
  EXPECT_EQ(spec.num_trials, 3);
  std::map<std::string, Param> by;
  for (const auto& p : spec.params) by[p.name] = p;
  // PQuantML's section order: a method's parameter goes to pruning_parameters; training names to the job.
  EXPECT_EQ(by.at("sparsity").path, "compression.pruning_parameters.sparsity");
  EXPECT_EQ(by.at("sparsity").distribution.kind, Distribution::Kind::Float);
  EXPECT_EQ(*by.at("sparsity").distribution.step, 0.05);
  EXPECT_EQ(by.at("learning_rate").path, "training.lr");
  EXPECT_EQ(by.at("learning_rate").distribution.kind, Distribution::Kind::Float);  // 1e-5: a float literal
  EXPECT_EQ(by.at("batch_size").distribution.kind, Distribution::Kind::Int);       // integers only: an int
  EXPECT_EQ(by.at("batch_size").distribution.high, 240);
  EXPECT_EQ(by.at("epsilon").distribution.kind, Distribution::Kind::Int);  // [1, 2] without a point: int, as PQuantML
  EXPECT_EQ(by.at("optimizer").distribution.choices, (std::vector<nlohmann::json>{"adam", "sgd"}));
  EXPECT_EQ(spec.objectives.size(), 1u);
  EXPECT_EQ(spec.objectives[0].name, "eval_accuracy");
  // The trial job carries the values where they belong.
  auto trial = trial_job(job, spec.params, {0.7, 1e-4, 48, 2, "sgd"}, "out/t", "t");
  auto methods = trial.plan.pruning_methods();
  ASSERT_EQ(methods.size(), 1u);
  EXPECT_DOUBLE_EQ(methods[0].number("sparsity"), 0.7);
  EXPECT_DOUBLE_EQ(trial.training.lr, 1e-4);
  EXPECT_EQ(trial.training.batch_size, 48);
  EXPECT_EQ(trial.training.optimizer, "sgd");
  EXPECT_EQ(trial.output, "out/t");
}

TEST(TuneSearch, GeneralSectionSetsDottedPathsAndListEntries) {
  auto job = job_from(std::string(kBase) + R"(
compression:
  config_list:
    - {op_types: [Linear], sparse_ratio: 0.5}
  pruner: {type: LevelPruner}
search:
  experiment_name: nni_ratio
  num_trials: 4
  params:
    compression.config_list.0.sparse_ratio: {type: float, low: 0.3, high: 0.9, step: 0.2}
    training.batch_size: {type: int, low: 8, high: 64, step: 8}
  objectives: {eval_accuracy: maximize, sparsity: maximize}
)");
  auto spec = load_study_spec(job);
  ASSERT_EQ(spec.params.size(), 2u);
  EXPECT_EQ(spec.params[0].distribution.grid(), (std::vector<double>{0.3, 0.5, 0.7, 0.9}));
  EXPECT_EQ(spec.objectives.size(), 2u);
  auto text = trial_job_text(job, spec.params, {0.7, 32}, "o", "n");
  EXPECT_NE(text.find("sparse_ratio: 0.7"), std::string::npos) << text;
  EXPECT_EQ(text.find("search"), std::string::npos) << text;  // a trial's job searches nothing
  auto trial = trial_job(job, spec.params, {0.7, 32}, "o", "n");
  EXPECT_EQ(trial.training.batch_size, 32);
}

TEST(TuneSampler, GridCoversItsGridExactlyOnce) {
  StudySpec s;
  s.sampler = "GridSampler";
  s.sampler_params = {{"seed", 1}};
  s.params = {{"a", Distribution::integer(0, 4), "a", ""}, {"b", Distribution::categorical({"x", "y", "z"}), "b", ""}};
  s.objectives = {{"v", true}};
  auto trials = simulate(s, [](const auto& p) { return std::vector<double>{p[0].template get<double>()}; }, 100);
  ASSERT_EQ(trials.size(), 15u);  // 5 x 3, then exhausted
  std::set<std::pair<int64_t, std::string>> seen;
  for (const auto& t : trials) seen.insert({std::llround(t.params.at("a").first), t.params.at("b").second.to_external(t.params.at("b").first)});
  EXPECT_EQ(seen.size(), 15u);
  // search_space picks the values; BruteForce enumerates the discrete product.
  s.sampler_params["search_space"] = {{"a", {1, 3}}, {"b", {"z"}}};
  EXPECT_EQ(simulate(s, [](const auto&) { return std::vector<double>{0}; }, 100).size(), 2u);
  s.sampler = "BruteForceSampler";
  s.sampler_params = nlohmann::json::object();
  EXPECT_EQ(simulate(s, [](const auto&) { return std::vector<double>{0}; }, 100).size(), 15u);
}

TEST(TuneSampler, SeededSamplersRepeat) {
  auto f = [](const std::vector<nlohmann::json>& p) {
    double x = p[0].get<double>(), y = p[1].get<double>();
    return std::vector<double>{(x - 1) * (x - 1) + (y + 2) * (y + 2)};
  };
  for (const char* name : {"RandomSampler", "TPESampler"}) {
    auto a = simulate(two_d(name, 7), f, 25), b = simulate(two_d(name, 7), f, 25), c = simulate(two_d(name, 8), f, 25);
    for (size_t k = 0; k < a.size(); ++k) EXPECT_EQ(a[k].params.at("x").first, b[k].params.at("x").first) << name << " " << k;
    EXPECT_NE(a[20].params.at("x").first, c[20].params.at("x").first) << name;
  }
}

TEST(TuneSampler, TpeBeatsRandomOnATwoDimensionalFunctionOverSeeds) {
  // A shifted quadratic bowl on [-5, 5]^2 (minimum 0 at (1.5, -2)), 40 trials each, 10 seeds.
  auto f = [](const std::vector<nlohmann::json>& p) {
    double x = p[0].get<double>(), y = p[1].get<double>();
    return std::vector<double>{(x - 1.5) * (x - 1.5) + (y + 2) * (y + 2)};
  };
  double tpe = 0, random = 0;
  int tpe_wins = 0;
  for (int seed = 0; seed < 10; ++seed) {
    auto best = [&](const std::vector<TrialRecord>& trials) {
      double b = INFINITY;
      for (const auto& t : trials) b = std::min(b, t.values[0]);
      return b;
    };
    double bt = best(simulate(two_d("TPESampler", seed), f, 40)), br = best(simulate(two_d("RandomSampler", seed), f, 40));
    tpe += bt / 10, random += br / 10, tpe_wins += bt < br;
  }
  EXPECT_LT(tpe, 0.5 * random) << "TPE mean best " << tpe << ", random " << random;
  EXPECT_GE(tpe_wins, 7);
}

TEST(TuneSampler, TpeSearchesIntegersCategoricalsAndLogScales) {
  StudySpec s;
  s.sampler = "TPESampler";
  s.sampler_params = {{"seed", 3}};
  s.params = {{"n", Distribution::integer(1, 64, 1, true), "n", ""},
              {"c", Distribution::categorical({"bad", "good", "worse"}), "c", ""},
              {"lr", Distribution::floating(1e-5, 1e-1, std::nullopt, true), "lr", ""}};
  s.objectives = {{"v", false}};
  auto trials = simulate(s, [](const auto& p) {
    double n = p[0].template get<double>(), lr = p[2].template get<double>();
    double c = p[1] == "good" ? 0 : 3;
    return std::vector<double>{std::abs(std::log2(n) - 3) + c + std::abs(std::log10(lr) + 3)};
  }, 60);
  int good_late = 0;
  for (size_t k = 40; k < trials.size(); ++k) good_late += trials[k].params.at("c").first == 1;
  EXPECT_GE(good_late, 14);  // after the startup trials it keeps to the good choice
}

TEST(TuneSampler, NsgaIIBreedsGenerationsTowardTheFront) {
  // Two objectives in conflict (ZDT1-like on [0, 1]^2): minimise x and 1 - sqrt(x) + y.
  StudySpec s;
  s.sampler = "NSGAIISampler";
  s.sampler_params = {{"seed", 0}, {"population_size", 8}, {"mutation_prob", 0.1}};
  s.params = {{"x", Distribution::floating(0, 1), "x", ""}, {"y", Distribution::floating(0, 1), "y", ""}};
  s.objectives = {{"f1", false}, {"f2", false}};
  auto trials = simulate(s, [](const auto& p) {
    double x = p[0].template get<double>(), y = p[1].template get<double>();
    return std::vector<double>{x, 1 - std::sqrt(x) + y};
  }, 64);
  EXPECT_EQ(trials[0].system_attrs["nsga2:generation"], 0);
  EXPECT_EQ(trials[63].system_attrs["nsga2:generation"], 7);  // 8 generations of 8
  // Children recombine and mutate the elite: y (the distance from the front) falls; a random
  // study keeps it at 1/2 on average.
  double early = 0, late = 0;
  for (int k = 0; k < 8; ++k) early += trials[k].params.at("y").first / 8;
  for (int k = 40; k < 64; ++k) late += trials[k].params.at("y").first / 24;
  EXPECT_LT(late, 0.75 * early) << early << " -> " << late;
  auto front = best_trials(trials, {false, false});
  EXPECT_GE(front.size(), 4u);
  for (size_t k = 1; k < front.size(); ++k) EXPECT_LE(front[k].values[0], front[k - 1].values[0]);
}

TEST(TunePruner, MedianAndSuccessiveHalvingStopTheTrialsBehind) {
  // Completed trials with accuracies per epoch 1..4; a new trial is compared at each epoch.
  std::vector<TrialRecord> trials;
  for (int k = 0; k < 5; ++k) {
    TrialRecord t;
    t.number = k, t.state = TrialState::Complete;
    for (int e = 1; e <= 4; ++e) t.intermediate[e] = 0.1 * k + 0.05 * e;  // 0.05 .. 0.6
    t.values = {t.intermediate[4]};
    trials.push_back(t);
  }
  StudySpec s;
  s.pruner = "MedianPruner";
  s.pruner_params = {{"n_startup_trials", 5}};
  Pruner median(s, /*maximize=*/true);
  // The median at epoch 2 is 0.3 (0.1, 0.2, 0.3, 0.4, 0.5): 0.25 is behind, 0.35 ahead.
  EXPECT_TRUE(median.prune(5, 2, {{1, 0.2}, {2, 0.25}}, trials));
  EXPECT_FALSE(median.prune(5, 2, {{1, 0.2}, {2, 0.35}}, trials));
  EXPECT_FALSE(median.prune(5, 2, {{1, 0.31}, {2, 0.25}}, trials));  // its best so far counts
  EXPECT_FALSE(Pruner(s, /*maximize=*/false).prune(5, 2, {{1, 0.2}, {2, 0.25}}, trials));  // a loss of 0.25 is ahead
  s.pruner_params = {{"n_startup_trials", 6}};
  EXPECT_FALSE(Pruner(s, true).prune(5, 2, {{2, 0.0}}, trials));  // too few completed trials yet
  s.pruner_params = {{"n_startup_trials", 0}, {"n_warmup_steps", 3}};
  EXPECT_FALSE(Pruner(s, true).prune(5, 2, {{2, 0.0}}, trials));  // warm-up
  // Successive halving (reduction factor 4): at rungs 1 and 4 only the top quarter goes on.
  s.pruner = "SuccessiveHalvingPruner";
  s.pruner_params = nlohmann::json::object();
  Pruner halving(s, true);
  EXPECT_FALSE(halving.prune(5, 2, {{2, 0.0}}, trials));         // not a rung
  EXPECT_TRUE(halving.prune(5, 1, {{1, 0.3}}, trials));          // 6 values at epoch 1: only the best 1 goes on (0.45)
  EXPECT_FALSE(halving.prune(5, 1, {{1, 0.5}}, trials));
  EXPECT_TRUE(halving.prune(5, 4, {{4, 0.5}}, trials));          // 0.6 leads at epoch 4
  EXPECT_FALSE(Pruner(StudySpec{}, true).prune(5, 1, {{1, 0.0}}, trials));  // no pruner: never
}
