// Optuna's samplers (see sampler.h): Random, Grid, BruteForce, TPE (spec export-search-anchors §4:
// n_startup_trials 10, n_ei_candidates 24, gamma(n) = min(ceil(0.1 n), 25), prior weight 1, magic
// clip on, endpoints off, univariate) and NSGA-II (population 50, crossover 0.9, swapping 0.5,
// mutation 1/#params).
#include "sparq/tune/sampler.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "sparq/error.h"

namespace sparq::tune {

namespace {

using Kind = Distribution::Kind;

std::mt19937_64 trial_rng(const nlohmann::json& params, int64_t number, uint64_t salt) {
  if (params.contains("seed")) {
    // Seeded: a function of the seed and the trial number only, so a study repeats and a
    // resumed one continues as an uninterrupted one would.
    std::seed_seq seq{static_cast<uint64_t>(params["seed"].get<int64_t>()), static_cast<uint64_t>(number), salt};
    return std::mt19937_64(seq);
  }
  std::random_device device;
  std::seed_seq seq{device(), device(), static_cast<unsigned>(number), static_cast<unsigned>(salt)};
  return std::mt19937_64(seq);
}

double uniform(std::mt19937_64& rng, double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); }

/// A value of the distribution's range put on its grid and inside its bounds.
double snap(const Distribution& d, double v) {
  if (d.step) v = on_grid(d.low + std::round((v - d.low) / *d.step) * *d.step);
  return std::clamp(v, d.low, d.high);
}

/// The objective values of a COMPLETE trial as losses (smaller is better).
std::vector<double> losses_of(const TrialRecord& t, const std::vector<bool>& maximize) {
  std::vector<double> l;
  for (size_t o = 0; o < maximize.size() && o < t.values.size(); ++o) l.push_back(maximize[o] ? -t.values[o] : t.values[o]);
  return l;
}

bool dominates(const std::vector<double>& a, const std::vector<double>& b) {
  bool better = false;
  for (size_t o = 0; o < a.size(); ++o) {
    if (a[o] > b[o]) return false;
    better = better || a[o] < b[o];
  }
  return better;
}

std::vector<double> crowding_distance(const std::vector<std::vector<double>>& points) {
  const size_t n = points.size();
  std::vector<double> d(n, 0.0);
  if (n == 0) return d;
  for (size_t o = 0; o < points[0].size(); ++o) {
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return points[a][o] < points[b][o]; });
    const double span = points[order.back()][o] - points[order.front()][o];
    d[order.front()] = d[order.back()] = INFINITY;
    if (span <= 0) continue;
    for (size_t k = 1; k + 1 < n; ++k) d[order[k]] += (points[order[k + 1]][o] - points[order[k - 1]][o]) / span;
  }
  return d;
}

// ---- Random ----
class RandomSampler : public Sampler {
 public:
  explicit RandomSampler(nlohmann::json params) : params_(std::move(params)) {}
  Suggestion sample(const std::vector<Param>& ps, const std::vector<TrialRecord>&, const std::vector<bool>&, int64_t number) override {
    auto rng = trial_rng(params_, number, 1);
    Suggestion s;
    for (const auto& p : ps) s.values.push_back(random_value(p.distribution, rng));
    return s;
  }

 private:
  nlohmann::json params_;
};

// ---- Grid and BruteForce: each point of the product of the parameters' grids once ----
class GridSampler : public Sampler {
 public:
  GridSampler(const StudySpec& spec, bool brute_force) : params_(spec.sampler_params), brute_force_(brute_force) {
    const auto* space = spec.sampler_params.contains("search_space") ? &spec.sampler_params["search_space"] : nullptr;
    if (space && !space->is_object())
      throw ConfigError("sampler.params.search_space: expected a mapping of parameter names to lists of values");
    for (const auto& p : spec.params) {
      std::vector<double> values;
      if (space && space->contains(p.name)) {
        for (const auto& v : (*space)[p.name]) {
          double internal = 0;
          try {
            internal = p.distribution.to_internal(v);
          } catch (const std::exception&) {
            throw ConfigError(fmt::format("sampler.params.search_space.{}: {} is not a value of the parameter", p.name, v.dump()));
          }
          if (!p.distribution.contains(internal))
            throw ConfigError(fmt::format("sampler.params.search_space.{}: {} is outside the parameter's range", p.name, v.dump()));
          values.push_back(internal);
        }
      } else {
        values = p.distribution.grid();
      }
      if (values.empty())
        throw ConfigError(fmt::format("{}: {}: parameter '{}' is continuous; {} needs {}", p.where, spec.sampler, p.name,
                                      spec.sampler, brute_force ? "discrete parameters (a step, an int or categorical)"
                                                                : "its values in sampler.params.search_space, or a step"));
      grids_.push_back(values);
    }
    if (space)
      for (const auto& [name, values] : space->items()) {
        bool known = false;
        for (const auto& p : spec.params) known = known || p.name == name;
        if (!known) throw ConfigError(fmt::format("sampler.params.search_space.{}: not a parameter of the search", name));
      }
    size_ = 1;
    for (const auto& g : grids_) size_ *= static_cast<int64_t>(g.size());
  }
  Suggestion sample(const std::vector<Param>& ps, const std::vector<TrialRecord>& trials, const std::vector<bool>&, int64_t number) override {
    auto visited = visited_ids(trials);
    std::vector<int64_t> free;
    for (int64_t id = 0; id < size_; ++id)
      if (!visited.count(id)) free.push_back(id);
    auto rng = trial_rng(params_, number, 2);
    // All taken (by running trials of other workers): Optuna then repeats a random point.
    int64_t id = free.empty() ? std::uniform_int_distribution<int64_t>(0, size_ - 1)(rng)
                              : free[std::uniform_int_distribution<size_t>(0, free.size() - 1)(rng)];
    Suggestion s;
    int64_t rest = id;
    std::vector<double> values(grids_.size());
    for (size_t k = grids_.size(); k-- > 0;) {
      values[k] = grids_[k][static_cast<size_t>(rest % static_cast<int64_t>(grids_[k].size()))];
      rest /= static_cast<int64_t>(grids_[k].size());
    }
    s.values = values;
    s.system_attrs[brute_force_ ? "sparq:brute_force_id" : "grid_id"] = id;
    return s;
  }
  bool exhausted(const std::vector<Param>&, const std::vector<TrialRecord>& trials) const override {
    return static_cast<int64_t>(visited_ids(trials).size()) >= size_;
  }

 private:
  std::set<int64_t> visited_ids(const std::vector<TrialRecord>& trials) const {
    std::set<int64_t> ids;
    const char* key = brute_force_ ? "sparq:brute_force_id" : "grid_id";
    for (const auto& t : trials) {
      if (t.state == TrialState::Fail) continue;  // a failed point is tried again
      if (t.system_attrs.contains(key)) ids.insert(t.system_attrs[key].get<int64_t>());
    }
    return ids;
  }
  nlohmann::json params_;
  bool brute_force_;
  std::vector<std::vector<double>> grids_;
  int64_t size_ = 1;
};

// ---- TPE ----
double normal_cdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }

/// A mixture of truncated normals on [low, high] (or, for categorical parameters, of
/// distributions over the choices), as Optuna's _ParzenEstimator builds it.
struct Parzen {
  std::vector<double> weights, mus, sigmas;
  std::vector<std::vector<double>> categorical;  ///< per kernel: a distribution over the choices
  double low = 0, high = 0, step = 0;             ///< transformed space; step > 0: discrete

  static std::vector<double> default_weights(size_t n) {
    std::vector<double> w(n, 1.0);
    if (n >= 25)
      for (size_t k = 0; k < n - 25; ++k) w[k] = 1.0 / n + (1.0 - 1.0 / n) * k / std::max<size_t>(1, n - 26);
    return w;
  }

  Parzen(const Distribution& d, const std::vector<double>& observations, double prior_weight) {
    auto w = default_weights(observations.size());
    if (d.kind == Kind::Categorical) {
      const size_t c = d.choices.size(), n = observations.size();
      for (size_t k = 0; k <= n; ++k) {
        std::vector<double> row(c, prior_weight / static_cast<double>(n + 1));
        if (k < n) row[static_cast<size_t>(observations[k])] += 1.0;
        double sum = std::accumulate(row.begin(), row.end(), 0.0);
        for (auto& v : row) v /= sum;
        categorical.push_back(row);
      }
      weights = w;
      weights.push_back(prior_weight);
      normalise();
      return;
    }
    if (d.log && d.kind == Kind::Int) {  // Optuna: log-scale integers on [low - 1/2, high + 1/2], continuous
      low = std::log(d.low - 0.5), high = std::log(d.high + 0.5);
    } else {
      low = d.log ? std::log(d.low) : d.low, high = d.log ? std::log(d.high) : d.high;
      if (d.step) step = *d.step, low -= step / 2, high += step / 2;
    }
    // The kernels: one per observation and the prior (the middle of the range), each kernel's
    // width the larger gap to its neighbours among them all (the bounds outside).
    std::vector<double> x;
    for (double v : observations) x.push_back(d.log ? std::log(v) : v);
    x.push_back(0.5 * (low + high));
    const size_t n = x.size();
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
    std::vector<double> s{low};
    for (size_t k : order) s.push_back(x[k]);
    s.push_back(high);
    std::vector<double> sorted(n);
    for (size_t k = 0; k < n; ++k) sorted[k] = std::max(s[k + 1] - s[k], s[k + 2] - s[k + 1]);
    if (n >= 2) {  // endpoints off: the outermost kernels look inward only
      sorted[0] = s[2] - s[1];
      sorted[n - 1] = s[n] - s[n - 1];
    }
    sigmas.assign(n, 0.0);
    for (size_t k = 0; k < n; ++k) sigmas[order[k]] = sorted[k];
    const double max_sigma = high - low;
    const double min_sigma = (high - low) / std::min(100.0, 1.0 + static_cast<double>(n));  // magic clip
    for (auto& sg : sigmas) sg = std::clamp(sg, min_sigma, max_sigma);
    sigmas.back() = high - low;  // the prior's
    mus = x;
    weights = w;
    weights.push_back(prior_weight);
    normalise();
  }
  void normalise() {
    double sum = std::accumulate(weights.begin(), weights.end(), 0.0);
    for (auto& v : weights) v /= sum;
  }

  double sample(std::mt19937_64& rng) const {
    const size_t k = std::discrete_distribution<size_t>(weights.begin(), weights.end())(rng);
    if (!categorical.empty()) {
      const auto& row = categorical[k];
      return static_cast<double>(std::discrete_distribution<size_t>(row.begin(), row.end())(rng));
    }
    // A truncated normal by inverse CDF (rejection stalls when the kernel sits far outside).
    const double a = normal_cdf((low - mus[k]) / sigmas[k]), b = normal_cdf((high - mus[k]) / sigmas[k]);
    double u = uniform(rng, a, b);
    u = std::clamp(u, 1e-300, 1 - 1e-16);
    // inverse of the normal CDF by bisection on erfc (enough for sampling)
    double lo = -40, hi = 40;
    for (int it = 0; it < 100; ++it) {
      double mid = 0.5 * (lo + hi);
      (normal_cdf(mid) < u ? lo : hi) = mid;
    }
    return std::clamp(mus[k] + sigmas[k] * 0.5 * (lo + hi), low, high);
  }
  double log_pdf(double x) const {
    double total = 0;
    if (!categorical.empty()) {
      for (size_t k = 0; k < weights.size(); ++k) total += weights[k] * categorical[k][static_cast<size_t>(x)];
      return std::log(std::max(total, 1e-300));
    }
    for (size_t k = 0; k < weights.size(); ++k) {
      const double z = normal_cdf((high - mus[k]) / sigmas[k]) - normal_cdf((low - mus[k]) / sigmas[k]);
      if (z <= 0) continue;
      double p;
      if (step > 0) {  // the mass of the grid cell around x
        p = normal_cdf((x + step / 2 - mus[k]) / sigmas[k]) - normal_cdf((x - step / 2 - mus[k]) / sigmas[k]);
      } else {
        const double t = (x - mus[k]) / sigmas[k];
        p = std::exp(-0.5 * t * t) / (sigmas[k] * std::sqrt(2 * M_PI));
      }
      total += weights[k] * p / z;
    }
    return std::log(std::max(total, 1e-300));
  }
};

class TpeSampler : public Sampler {
 public:
  explicit TpeSampler(nlohmann::json params) : params_(std::move(params)) {
    startup_ = params_.value("n_startup_trials", int64_t(10));
    candidates_ = params_.value("n_ei_candidates", int64_t(24));
    prior_weight_ = params_.value("prior_weight", 1.0);
  }
  Suggestion sample(const std::vector<Param>& ps, const std::vector<TrialRecord>& trials, const std::vector<bool>& maximize,
                    int64_t number) override {
    auto rng = trial_rng(params_, number, 3);
    Suggestion s;
    for (const auto& p : ps) s.values.push_back(sample_one(p, trials, maximize, rng));
    return s;
  }

 private:
  double sample_one(const Param& p, const std::vector<TrialRecord>& trials, const std::vector<bool>& maximize,
                    std::mt19937_64& rng) const {
    // The completed trials that have this parameter with this distribution (univariate TPE).
    std::vector<const TrialRecord*> done;
    for (const auto& t : trials) {
      if (t.state != TrialState::Complete || t.values.size() != maximize.size()) continue;
      auto it = t.params.find(p.name);
      if (it != t.params.end() && it->second.second == p.distribution) done.push_back(&t);
    }
    if (static_cast<int64_t>(done.size()) < startup_) return random_value(p.distribution, rng);
    // Split: the best gamma(n) = min(ceil(0.1 n), 25) below, the rest above. Several objectives:
    // by non-dominated front, then by the first objective.
    std::vector<std::vector<double>> losses;
    for (const auto* t : done) losses.push_back(losses_of(*t, maximize));
    auto rank = front_ranks(losses);
    std::vector<size_t> order(done.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return rank[a] != rank[b] ? rank[a] < rank[b] : losses[a][0] < losses[b][0];
    });
    const size_t n_below = std::min<size_t>(static_cast<size_t>(std::ceil(0.1 * done.size())), 25);
    std::vector<size_t> below(order.begin(), order.begin() + n_below), above(order.begin() + n_below, order.end());
    auto observations = [&](std::vector<size_t> group) {  // by trial number: older trials first (the weight ramp)
      std::sort(group.begin(), group.end(), [&](size_t a, size_t b) { return done[a]->number < done[b]->number; });
      std::vector<double> v;
      for (size_t k : group) v.push_back(done[k]->params.at(p.name).first);
      return v;
    };
    Parzen l(p.distribution, observations(below), prior_weight_), g(p.distribution, observations(above), prior_weight_);
    double best = 0, best_score = -INFINITY;
    for (int64_t c = 0; c < candidates_; ++c) {
      const double x = l.sample(rng);
      double value = x;
      if (p.distribution.kind != Kind::Categorical) {
        if (p.distribution.log) value = std::exp(value);
        value = snap(p.distribution, value);
      }
      const double xt = p.distribution.kind == Kind::Categorical || !p.distribution.log ? value : std::log(value);
      const double score = l.log_pdf(xt) - g.log_pdf(xt);
      if (score > best_score) best_score = score, best = value;
    }
    return best;
  }
  nlohmann::json params_;
  int64_t startup_ = 10, candidates_ = 24;
  double prior_weight_ = 1.0;
};

// ---- NSGA-II ----
class NsgaIISampler : public Sampler {
 public:
  explicit NsgaIISampler(nlohmann::json params) : params_(std::move(params)) {
    population_ = params_.value("population_size", int64_t(50));
    crossover_ = params_.value("crossover_prob", 0.9);
    swapping_ = params_.value("swapping_prob", 0.5);
  }
  Suggestion sample(const std::vector<Param>& ps, const std::vector<TrialRecord>& trials, const std::vector<bool>& maximize,
                    int64_t number) override {
    auto rng = trial_rng(params_, number, 4);
    const char* key = "nsga2:generation";
    // The generation: the newest one, or the next once it has a full population of finished trials.
    int64_t generation = 0;
    for (const auto& t : trials)
      if (t.system_attrs.contains(key)) generation = std::max(generation, t.system_attrs[key].get<int64_t>());
    int64_t in_generation = 0;
    for (const auto& t : trials)
      if (t.finished() && t.system_attrs.value(key, int64_t(-1)) == generation) ++in_generation;
    if (in_generation >= population_) ++generation;
    Suggestion s;
    s.system_attrs[key] = generation;
    // Parents: the elite of all completed trials of the earlier generations ((mu + lambda)).
    std::vector<const TrialRecord*> pool;
    for (const auto& t : trials)
      if (t.state == TrialState::Complete && t.values.size() == maximize.size() && t.system_attrs.value(key, int64_t(-1)) < generation &&
          has_all(t, ps))
        pool.push_back(&t);
    if (generation == 0 || pool.size() < 2) {
      for (const auto& p : ps) s.values.push_back(random_value(p.distribution, rng));
      return s;
    }
    auto parents = elite(pool, maximize);
    auto pick = [&]() {  // binary tournament: the dominating one, else either
      auto a = parents[std::uniform_int_distribution<size_t>(0, parents.size() - 1)(rng)];
      auto b = parents[std::uniform_int_distribution<size_t>(0, parents.size() - 1)(rng)];
      auto la = losses_of(*a, maximize), lb = losses_of(*b, maximize);
      if (dominates(la, lb)) return a;
      if (dominates(lb, la)) return b;
      return uniform(rng, 0, 1) < 0.5 ? a : b;
    };
    const TrialRecord* p0 = pick();
    const TrialRecord* p1 = pick();
    const bool cross = uniform(rng, 0, 1) < crossover_;
    const double mutation = params_.contains("mutation_prob") && !params_["mutation_prob"].is_null()
                                ? params_["mutation_prob"].get<double>()
                                : 1.0 / std::max<size_t>(1, ps.size());
    for (const auto& p : ps) {
      const TrialRecord* from = cross && uniform(rng, 0, 1) < swapping_ ? p1 : p0;
      double v = from->params.at(p.name).first;
      if (uniform(rng, 0, 1) < mutation) v = random_value(p.distribution, rng);
      s.values.push_back(v);
    }
    return s;
  }

 private:
  static bool has_all(const TrialRecord& t, const std::vector<Param>& ps) {
    for (const auto& p : ps) {
      auto it = t.params.find(p.name);
      if (it == t.params.end() || !(it->second.second == p.distribution)) return false;
    }
    return true;
  }
  std::vector<const TrialRecord*> elite(const std::vector<const TrialRecord*>& pool, const std::vector<bool>& maximize) const {
    std::vector<std::vector<double>> losses;
    for (const auto* t : pool) losses.push_back(losses_of(*t, maximize));
    auto rank = front_ranks(losses);
    std::vector<const TrialRecord*> out;
    for (int front = 0; static_cast<int64_t>(out.size()) < population_; ++front) {
      std::vector<size_t> members;
      for (size_t k = 0; k < pool.size(); ++k)
        if (rank[k] == front) members.push_back(k);
      if (members.empty()) break;
      if (static_cast<int64_t>(out.size() + members.size()) > population_) {  // the last front by crowding distance
        std::vector<std::vector<double>> pts;
        for (size_t k : members) pts.push_back(losses[k]);
        auto d = crowding_distance(pts);
        std::vector<size_t> order(members.size());
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return d[a] > d[b]; });
        for (size_t k = 0; static_cast<int64_t>(out.size()) < population_; ++k) out.push_back(pool[members[order[k]]]);
        break;
      }
      for (size_t k : members) out.push_back(pool[k]);
    }
    return out;
  }
  nlohmann::json params_;
  int64_t population_ = 50;
  double crossover_ = 0.9, swapping_ = 0.5;
};

}  // namespace

double random_value(const Distribution& d, std::mt19937_64& rng) {
  switch (d.kind) {
    case Kind::Categorical: return static_cast<double>(std::uniform_int_distribution<size_t>(0, d.choices.size() - 1)(rng));
    case Kind::Int: {
      const double s = *d.step;
      if (d.log) return snap(d, std::round(std::exp(uniform(rng, std::log(d.low - 0.5), std::log(d.high + 0.5)))));
      return snap(d, d.low + std::round(uniform(rng, -0.5, (d.high - d.low) / s + 0.5)) * s);
    }
    case Kind::Float:
      if (d.log) return std::clamp(std::exp(uniform(rng, std::log(d.low), std::log(d.high))), d.low, d.high);
      if (d.step) return snap(d, d.low + std::round(uniform(rng, -0.5, (d.high - d.low) / *d.step + 0.5)) * *d.step);
      return d.low == d.high ? d.low : uniform(rng, d.low, d.high);
  }
  return d.low;
}

std::vector<int> front_ranks(const std::vector<std::vector<double>>& losses) {
  const size_t n = losses.size();
  std::vector<int> rank(n, -1);
  std::vector<size_t> left(n);
  std::iota(left.begin(), left.end(), 0);
  for (int front = 0; !left.empty(); ++front) {
    std::vector<size_t> current, rest;
    for (size_t a : left) {
      bool dominated = false;
      for (size_t b : left) dominated = dominated || (a != b && dominates(losses[b], losses[a]));
      (dominated ? rest : current).push_back(a);
    }
    for (size_t a : current) rank[a] = front;
    left = rest;
  }
  return rank;
}

std::unique_ptr<Sampler> make_sampler(const StudySpec& spec) {
  if (spec.sampler == "RandomSampler") return std::make_unique<RandomSampler>(spec.sampler_params);
  if (spec.sampler == "GridSampler") return std::make_unique<GridSampler>(spec, false);
  if (spec.sampler == "BruteForceSampler") return std::make_unique<GridSampler>(spec, true);
  if (spec.sampler == "TPESampler") return std::make_unique<TpeSampler>(spec.sampler_params);
  if (spec.sampler == "NSGAIISampler") return std::make_unique<NsgaIISampler>(spec.sampler_params);
  throw ConfigError(fmt::format("sampler '{}' is not implemented in sparq", spec.sampler));
}

}  // namespace sparq::tune
