// The study's definition (see search.h): the two grammars, Optuna's distributions and step rule,
// PQuantML's flat-name mapping, and the trial jobs (the job's YAML with the values set).
#include "sparq/tune/search.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "sparq/config/pquant.h"
#include "sparq/error.h"
#include "sparq/prune/methods.h"
#include "sparq/yaml/reader.h"

namespace sparq::tune {

namespace fs = std::filesystem;
using yaml::MapReader;
using yaml::where;

// ---- distributions ----
double on_grid(double v) { return std::stod(fmt::format("{:.15g}", v)); }

Distribution Distribution::floating(double low, double high, std::optional<double> step, bool log) {
  Distribution d;
  d.kind = Kind::Float, d.low = low, d.high = step ? adjust_high(low, high, *step) : high, d.step = step, d.log = log;
  return d;
}
Distribution Distribution::integer(int64_t low, int64_t high, int64_t step, bool log) {
  Distribution d;
  d.kind = Kind::Int, d.low = static_cast<double>(low), d.step = static_cast<double>(step), d.log = log;
  d.high = static_cast<double>(low + (high - low) / step * step);  // Optuna shrinks the range to the grid
  return d;
}
Distribution Distribution::categorical(std::vector<nlohmann::json> choices) {
  Distribution d;
  d.kind = Kind::Categorical, d.choices = std::move(choices);
  return d;
}

nlohmann::json Distribution::to_json() const {
  switch (kind) {
    case Kind::Float:
      return {{"name", "FloatDistribution"},
              {"attributes", {{"step", step ? nlohmann::json(*step) : nlohmann::json(nullptr)}, {"low", low}, {"high", high}, {"log", log}}}};
    case Kind::Int:
      return {{"name", "IntDistribution"},
              {"attributes",
               {{"log", log}, {"step", static_cast<int64_t>(*step)}, {"low", static_cast<int64_t>(low)}, {"high", static_cast<int64_t>(high)}}}};
    case Kind::Categorical: return {{"name", "CategoricalDistribution"}, {"attributes", {{"choices", choices}}}};
  }
  return {};
}

Distribution Distribution::from_json(const nlohmann::json& j) {
  const std::string name = j.value("name", "");
  const auto& a = j.at("attributes");
  if (name == "FloatDistribution" || name == "UniformDistribution" || name == "LogUniformDistribution" ||
      name == "DiscreteUniformDistribution") {
    Distribution d;
    d.kind = Kind::Float, d.low = a.at("low").get<double>(), d.high = a.at("high").get<double>();
    d.log = a.value("log", name == "LogUniformDistribution");
    if (a.contains("step") && !a["step"].is_null()) d.step = a["step"].get<double>();
    if (a.contains("q")) d.step = a["q"].get<double>();
    return d;
  }
  if (name == "IntDistribution" || name == "IntUniformDistribution" || name == "IntLogUniformDistribution") {
    Distribution d;
    d.kind = Kind::Int, d.low = a.at("low").get<double>(), d.high = a.at("high").get<double>();
    d.step = a.contains("step") && !a["step"].is_null() ? a["step"].get<double>() : 1.0;
    d.log = a.value("log", name == "IntLogUniformDistribution");
    return d;
  }
  if (name == "CategoricalDistribution") return categorical(a.at("choices").get<std::vector<nlohmann::json>>());
  throw Error(fmt::format("unknown Optuna distribution '{}'", name));
}

double Distribution::to_internal(const nlohmann::json& value) const {
  if (kind != Kind::Categorical) return value.get<double>();
  for (size_t c = 0; c < choices.size(); ++c)
    if (choices[c] == value) return static_cast<double>(c);
  throw Error(fmt::format("{} is not one of the choices {}", value.dump(), nlohmann::json(choices).dump()));
}
nlohmann::json Distribution::to_external(double internal) const {
  switch (kind) {
    case Kind::Float: return internal;
    case Kind::Int: return static_cast<int64_t>(std::llround(internal));
    case Kind::Categorical: return choices.at(static_cast<size_t>(internal));
  }
  return nullptr;
}
bool Distribution::contains(double v) const {
  if (kind == Kind::Categorical) return v >= 0 && v < static_cast<double>(choices.size()) && v == std::floor(v);
  if (v < low || v > high) return false;
  if (!step) return true;
  const double k = (v - low) / *step;
  return std::abs(k - std::round(k)) < 1e-8;
}
std::vector<double> Distribution::grid() const {
  std::vector<double> g;
  if (kind == Kind::Categorical) {
    for (size_t c = 0; c < choices.size(); ++c) g.push_back(static_cast<double>(c));
  } else if (step) {
    const int64_t n = static_cast<int64_t>(std::llround((high - low) / *step));
    for (int64_t k = 0; k <= n; ++k) g.push_back(on_grid(low + k * *step));
  }
  return g;
}
bool Distribution::operator==(const Distribution& o) const {
  return kind == o.kind && low == o.low && high == o.high && step == o.step && log == o.log && choices == o.choices;
}

namespace {

/// A number as Python's str() writes it, as an exact decimal: digits * 10^exponent.
struct Decimal {
  __int128 digits = 0;
  int exponent = 0;
};
Decimal decimal_of(double v) {
  std::string s = fmt::format("{}", v);  // the shortest text that reads back as v, as Python's repr
  Decimal d;
  bool negative = false;
  size_t i = 0;
  if (s[i] == '-') negative = true, ++i;
  int fraction_digits = 0;
  bool after_point = false;
  for (; i < s.size() && s[i] != 'e'; ++i) {
    if (s[i] == '.') {
      after_point = true;
      continue;
    }
    d.digits = d.digits * 10 + (s[i] - '0');
    if (after_point) ++fraction_digits;
  }
  int e = i < s.size() ? std::stoi(s.substr(i + 1)) : 0;
  d.exponent = e - fraction_digits;
  if (negative) d.digits = -d.digits;
  return d;
}
__int128 scaled(const Decimal& d, int exponent) {  // d in units of 10^exponent (exponent <= d.exponent)
  __int128 v = d.digits;
  for (int k = exponent; k < d.exponent; ++k) v *= 10;
  return v;
}

}  // namespace

double adjust_high(double low, double high, double step) {
  const Decimal l = decimal_of(low), h = decimal_of(high), s = decimal_of(step);
  const int e = std::min({l.exponent, h.exponent, s.exponent});
  if (e < -30) return high;  // beyond int128 at this scale: leave it as written
  const __int128 L = scaled(l, e), H = scaled(h, e), S = scaled(s, e);
  const __int128 r = H - L;
  if (r % S == 0) return high;
  const __int128 adjusted = L + (r / S) * S;
  return std::stod(fmt::format("{}e{}", static_cast<long long>(adjusted), e));
}

const std::vector<std::string>& objective_names() {
  static const std::vector<std::string> names = {"eval_accuracy", "eval_loss",       "test_accuracy", "test_loss",
                                                 "train_loss",    "ebops",           "sparsity",      "weight_bits",
                                                 "nonzero_weights", "train_seconds"};
  return names;
}

namespace {

const std::vector<std::string> kSamplers = {"GridSampler", "RandomSampler", "BruteForceSampler", "TPESampler", "NSGAIISampler"};
/// Optuna's samplers that the seeds name and sparq does not have.
const std::vector<std::string> kOtherSamplers = {"CmaEsSampler", "GPSampler", "NSGAIIISampler", "QMCSampler",
                                                 "PartialFixedSampler", "MOTPESampler"};
const std::vector<std::string>& sampler_arguments(const std::string& sampler) {
  static const std::map<std::string, std::vector<std::string>> args = {
      {"GridSampler", {"search_space", "seed"}},
      {"RandomSampler", {"seed"}},
      {"BruteForceSampler", {"seed"}},
      {"TPESampler",
       {"seed", "n_startup_trials", "n_ei_candidates", "prior_weight", "consider_prior", "consider_magic_clip",
        "consider_endpoints", "multivariate", "group", "constant_liar"}},
      {"NSGAIISampler", {"seed", "population_size", "mutation_prob", "crossover_prob", "swapping_prob"}}};
  return args.at(sampler);
}
const std::vector<std::string> kPruners = {"NopPruner", "MedianPruner", "SuccessiveHalvingPruner"};

nlohmann::json json_of(const std::string& file, const YAML::Node& n, const std::string& what) {
  if (n.IsNull()) return nullptr;
  if (n.IsSequence()) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& item : n) a.push_back(json_of(file, item, what));
    return a;
  }
  if (n.IsMap()) {
    nlohmann::json o = nlohmann::json::object();
    for (auto it = n.begin(); it != n.end(); ++it) o[it->first.Scalar()] = json_of(file, it->second, what);
    return o;
  }
  const std::string& s = n.Scalar();
  if (n.Tag() == "!") return s;  // quoted: a string
  if (s == "true" || s == "True") return true;
  if (s == "false" || s == "False") return false;
  if (s == "null" || s == "~") return nullptr;
  try {
    size_t used = 0;
    if (s.find_first_of(".eE") == std::string::npos) {
      long long v = std::stoll(s, &used);
      if (used == s.size()) return v;
    }
    double v = std::stod(s, &used);
    if (used == s.size()) return v;
  } catch (const std::exception&) {
  }
  return s;
}

/// {type, params} or a bare name.
std::pair<std::string, nlohmann::json> typed(const std::string& file, const MapReader& r, const std::string& key,
                                             const std::string& fallback, const std::vector<std::string>& known,
                                             const std::vector<std::string>& refused, const char* kind) {
  if (!r.has(key)) return {fallback, nlohmann::json::object()};
  YAML::Node n = r.node(key);
  std::string type;
  nlohmann::json params = nlohmann::json::object();
  YAML::Node type_node = n;
  if (n.IsScalar()) {
    type = n.Scalar();
  } else {
    MapReader sr(file, n, key, {"type", "params"});
    if (!sr.has("type")) sr.fail("type", fmt::format("is required: the {} class name", kind));
    type = sr.require_string("type");
    type_node.reset(sr.node("type"));
    if (sr.has("params")) {
      if (!sr.node("params").IsMap()) sr.fail("params", "expected a mapping of the constructor's keyword arguments");
      params = json_of(file, sr.node("params"), key + ".params");
    }
  }
  if (std::find(known.begin(), known.end(), type) == known.end()) {
    std::string list;
    for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
    if (std::find(refused.begin(), refused.end(), type) != refused.end())
      throw ConfigError(fmt::format("{}: {}: Optuna's {} is not implemented in sparq; use one of {}", where(file, type_node), key,
                                    type, list));
    throw ConfigError(fmt::format("{}: {}: unknown {} '{}', expected one of {}", where(file, type_node), key, kind, type, list));
  }
  return {type, params};
}

void check_sampler_params(const std::string& file, const YAML::Node& section, const StudySpec& s) {
  const auto& allowed = sampler_arguments(s.sampler);
  for (const auto& [k, v] : s.sampler_params.items()) {
    if (std::find(allowed.begin(), allowed.end(), k) != allowed.end()) continue;
    YAML::Node sampler = section["sampler"];
    YAML::Node at = sampler.IsMap() && sampler["params"] ? sampler["params"] : sampler;
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    throw ConfigError(fmt::format("{}: sampler.params: {} has no argument '{}' (it takes {})", where(file, at), s.sampler, k, list));
  }
  auto positive_int = [&](const char* key) {
    if (!s.sampler_params.contains(key)) return;
    const auto& v = s.sampler_params[key];
    if (!v.is_number_integer() || v.get<int64_t>() < (std::string(key) == "seed" ? 0 : 1))
      throw ConfigError(fmt::format("{}: sampler.params.{}: expected a {} integer", where(file, section["sampler"]), key,
                                    std::string(key) == "seed" ? "non-negative" : "positive"));
  };
  for (const char* key : {"seed", "n_startup_trials", "n_ei_candidates", "population_size"}) positive_int(key);
  if (s.sampler_params.value("multivariate", false))
    throw ConfigError(fmt::format("{}: sampler.params.multivariate: sparq's TPE is Optuna's univariate TPE (the default "
                                  "before Optuna 5.0)",
                                  where(file, section["sampler"])));
  if (s.sampler == "NSGAIISampler" && s.sampler_params.contains("population_size") &&
      s.sampler_params["population_size"].get<int64_t>() < 2)
    throw ConfigError(fmt::format("{}: sampler.params.population_size: must be at least 2", where(file, section["sampler"])));
}

Distribution parse_distribution(const std::string& file, const YAML::Node& node, const std::string& what) {
  MapReader r(file, node, what, {"type", "low", "high", "step", "log", "choices"});
  if (!r.has("type")) r.fail("type", "is required: float, int or categorical");
  const std::string type = r.get_choice("type", "", {"float", "int", "categorical"});
  if (type == "categorical") {
    for (const char* k : {"low", "high", "step", "log"})
      if (r.has(k)) r.fail(k, "applies to float and int parameters, not categorical ones");
    if (!r.has("choices") || !r.node("choices").IsSequence() || r.node("choices").size() == 0)
      r.fail("choices", "expected a non-empty list of choices");
    auto choices = json_of(file, r.node("choices"), what + ".choices").get<std::vector<nlohmann::json>>();
    std::set<std::string> seen;
    for (const auto& c : choices) {
      if (c.is_object() || c.is_array()) r.fail("choices", "each choice must be a string, number, boolean or null");
      if (!seen.insert(c.dump()).second) r.fail("choices", fmt::format("{} is listed twice", c.dump()));
    }
    return Distribution::categorical(choices);
  }
  if (r.has("choices")) r.fail("choices", "applies to categorical parameters");
  if (!r.has("low")) r.fail("low", "is required");
  if (!r.has("high")) r.fail("high", "is required");
  const bool log = r.get_bool("log", false);
  if (type == "int") {
    const int64_t low = r.get_int("low", 0), high = r.get_int("high", 0), step = r.get_int("step", 1);
    if (low > high) r.fail("low", fmt::format("low {} is above high {}", low, high));
    if (step <= 0) r.fail("step", fmt::format("step {} must be positive", step));
    if (log && r.has("step") && step != 1) r.fail("step", "log and step cannot be used together (Optuna refuses it)");
    if (log && low < 1) r.fail("low", fmt::format("a log-scale int range must start at 1 or more, not {}", low));
    return Distribution::integer(low, high, step, log);
  }
  const double low = r.get_double("low", 0), high = r.get_double("high", 0);
  if (low > high) r.fail("low", fmt::format("low {} is above high {}", low, high));
  std::optional<double> step;
  if (r.has("step")) {
    step = r.get_double("step", 0);
    if (*step <= 0) r.fail("step", fmt::format("step {} must be positive", *step));
    if (log) r.fail("step", "log and step cannot be used together (Optuna refuses it)");
  }
  if (log && low <= 0) r.fail("low", fmt::format("a log-scale range must start above 0, not {}", low));
  return Distribution::floating(low, high, step, log);
}

std::vector<Objective> parse_objectives(const std::string& file, const MapReader& r) {
  std::vector<Objective> out;
  if (!r.has("objectives")) return {{"eval_accuracy", true}};
  YAML::Node o = r.node("objectives");
  if (!o.IsMap() || o.size() == 0) r.fail("objectives", "expected a mapping of metrics to maximize or minimize");
  for (auto it = o.begin(); it != o.end(); ++it) {
    const std::string name = it->first.Scalar();
    const auto& names = objective_names();
    if (std::find(names.begin(), names.end(), name) == names.end()) {
      std::string list;
      for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
      throw ConfigError(fmt::format("{}: search.objectives: unknown objective '{}'{}; a trial reports {}", where(file, it->first),
                                    name, yaml::nearest(name, names).empty() ? "" : ", did you mean '" + yaml::nearest(name, names) + "'?",
                                    list));
    }
    const std::string direction = yaml::as_string(file, it->second, "search.objectives." + name);
    if (direction != "maximize" && direction != "minimize")
      throw ConfigError(fmt::format("{}: search.objectives.{}: '{}' is not maximize or minimize", where(file, it->second), name,
                                    direction));
    out.push_back({name, direction == "maximize"});
  }
  return out;
}

/// PQuantML's flat names (spec §5.4): the first of its sections with that key, then sparq's own
/// training keys under PQuantML's spelling.
std::optional<std::string> pquant_path(const std::string& name) {
  for (const char* section : {"training_parameters", "pruning_parameters", "quantization_parameters", "fitcompress_parameters"}) {
    auto keys = config::pquant_section_keys(section);
    if (std::string(section) == "pruning_parameters")  // the methods' own parameters (sparsity, final_temp, ...)
      for (const auto* m : prune::pruning_methods())
        for (const auto& p : m->params) keys.push_back(p.name);
    if (std::find(keys.begin(), keys.end(), name) != keys.end()) return fmt::format("compression.{}.{}", section, name);
  }
  static const std::map<std::string, std::string> training = {
      {"learning_rate", "training.lr"}, {"lr", "training.lr"},           {"batch_size", "training.batch_size"},
      {"optimizer", "training.optimizer"}, {"weight_decay", "training.weight_decay"}, {"momentum", "training.momentum"}};
  auto it = training.find(name);
  if (it != training.end()) return it->second;
  return std::nullopt;
}

bool written_as_float(const YAML::Node& n) { return n.Scalar().find_first_of(".eE") != std::string::npos; }

StudySpec parse_general(const std::string& file, const YAML::Node& section) {
  MapReader r(file, section, "search", {"experiment_name", "sampler", "num_trials", "params", "objectives", "pruner"});
  StudySpec s;
  s.source = "search";
  s.experiment_name = r.get_string("experiment_name", s.experiment_name);
  if (s.experiment_name.empty() || s.experiment_name.find('/') != std::string::npos)
    r.fail("experiment_name", "must be a non-empty name without '/'");
  s.num_trials = r.get_int("num_trials", 10, 1, 1000000);
  std::tie(s.sampler, s.sampler_params) = typed(file, r, "sampler", "TPESampler", kSamplers, kOtherSamplers, "sampler");
  check_sampler_params(file, section, s);
  std::tie(s.pruner, s.pruner_params) = typed(file, r, "pruner", "", kPruners,
                                               {"HyperbandPruner", "PercentilePruner", "ThresholdPruner", "PatientPruner", "WilcoxonPruner"},
                                               "pruner");
  if (!s.pruner.empty()) {
    static const std::map<std::string, std::vector<std::string>> pruner_args = {
        {"NopPruner", {}},
        {"MedianPruner", {"n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials"}},
        {"SuccessiveHalvingPruner", {"min_resource", "reduction_factor", "min_early_stopping_rate"}}};
    const auto& allowed = pruner_args.at(s.pruner);
    for (const auto& [k, v] : s.pruner_params.items()) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      if (std::find(allowed.begin(), allowed.end(), k) == allowed.end())
        throw ConfigError(fmt::format("{}: pruner.params: {} has no argument '{}' (it takes {})", r.where("pruner"), s.pruner, k,
                                      list.empty() ? "none" : list));
      if (!v.is_number_integer() || v.get<int64_t>() < (k == "reduction_factor" ? 2 : k == "interval_steps" || k == "min_resource" ? 1 : 0))
        throw ConfigError(fmt::format("{}: pruner.params.{}: expected {} integer", r.where("pruner"), k,
                                      k == "reduction_factor" ? "an at least 2" : "a non-negative"));
    }
  }
  if (!r.has("params") || !r.node("params").IsMap() || r.node("params").size() == 0)
    r.fail("params", "expected a mapping of job paths (training.lr, compression.pruning_parameters.sparsity) to distributions");
  YAML::Node params = r.node("params");
  for (auto it = params.begin(); it != params.end(); ++it) {
    const std::string name = it->first.Scalar();
    s.params.push_back({name, parse_distribution(file, it->second, "search.params." + name), name, where(file, it->first)});
  }
  s.objectives = parse_objectives(file, r);
  return s;
}

StudySpec parse_pquant(const std::string& file, const YAML::Node& section, const std::string& section_name) {
  // Its keys were checked when the job was loaded (config/pquant.cpp); here: names and types.
  StudySpec s;
  s.source = section_name;
  if (section["experiment_name"]) s.experiment_name = section["experiment_name"].Scalar();
  if (section["num_trials"]) s.num_trials = yaml::as_int(file, section["num_trials"], section_name + ".num_trials");
  YAML::Node sampler = section["sampler"];
  if (sampler) {
    MapReader r(file, section, section_name,
                {"experiment_name", "model_name", "sampler", "num_trials", "hyperparameter_search"});
    std::tie(s.sampler, s.sampler_params) = typed(file, r, "sampler", "TPESampler", kSamplers, kOtherSamplers, "sampler");
    check_sampler_params(file, section, s);
  }
  YAML::Node search = section["hyperparameter_search"];
  auto add = [&](const YAML::Node& key, Distribution d, const std::string& kind) {
    const std::string name = key.Scalar();
    auto path = pquant_path(name);
    if (!path)
      throw ConfigError(fmt::format("{}: {}.hyperparameter_search.{}.{}: maps to no key of training_parameters, "
                                    "pruning_parameters, quantization_parameters or fitcompress_parameters, nor to the "
                                    "job's training (learning_rate, batch_size, optimizer, weight_decay, momentum); "
                                    "PQuantML would drop it silently",
                                    where(file, key), section_name, kind, name));
    s.params.push_back({name, std::move(d), *path, where(file, key)});
  };
  if (search && search["numerical"])
    for (auto it = search["numerical"].begin(); it != search["numerical"].end(); ++it) {
      YAML::Node list = it->second;
      const std::string what = section_name + ".hyperparameter_search.numerical." + it->first.Scalar();
      bool is_float = false;
      for (const auto& item : list) is_float = is_float || written_as_float(item);
      // PQuantML's typing rule: any float literal makes a float parameter, else an int one.
      if (is_float) {
        std::optional<double> step;
        if (list.size() == 3) step = yaml::as_double(file, list[2], what);
        add(it->first, Distribution::floating(yaml::as_double(file, list[0], what), yaml::as_double(file, list[1], what), step), "numerical");
      } else {
        add(it->first,
            Distribution::integer(yaml::as_int(file, list[0], what), yaml::as_int(file, list[1], what),
                                  list.size() == 3 ? yaml::as_int(file, list[2], what) : 1),
            "numerical");
      }
    }
  if (search && search["categorical"])
    for (auto it = search["categorical"].begin(); it != search["categorical"].end(); ++it) {
      std::vector<nlohmann::json> choices;  // PQuantML: strings only
      const YAML::Node list = it->second;
      for (const auto& item : list) choices.push_back(item.Scalar());
      add(it->first, Distribution::categorical(choices), "categorical");
    }
  if (s.params.empty())
    throw ConfigError(fmt::format("{}: {}.hyperparameter_search: no parameter to search (numerical or categorical)",
                                  where(file, section), section_name));
  if (s.num_trials <= 0)
    throw ConfigError(fmt::format("{}: {}.num_trials: is {} (PQuantML's default); give the number of trials to run",
                                  where(file, section["num_trials"] ? section["num_trials"] : section), section_name,
                                  s.num_trials));
  s.objectives = {{"eval_accuracy", true}};
  return s;
}

// ---- trial jobs ----
YAML::Node scalar_node(const nlohmann::json& v, Distribution::Kind kind) {
  if (v.is_null()) return YAML::Node(YAML::NodeType::Null);
  if (v.is_boolean()) return YAML::Node(v.get<bool>() ? "true" : "false");
  if (v.is_string()) return YAML::Node(v.get<std::string>());
  if (v.is_number_integer() || kind == Distribution::Kind::Int) return YAML::Node(fmt::format("{}", v.get<int64_t>()));
  return YAML::Node(fmt::format("{}", v.get<double>()));  // shortest text that reads back exactly
}

/// Sets `value` at the dotted `path` of the job's tree (creating mappings on the way; a key with
/// dots, such as a layer name, matches greedily; a number indexes a list). A `compression:` that
/// names a file is read into the tree first.
void set_path(YAML::Node root, const std::string& path, const YAML::Node& value, const std::string& base_dir) {
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    size_t dot = path.find('.', start);
    parts.push_back(path.substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  if (parts[0] == "compression" && root["compression"] && root["compression"].IsScalar()) {
    fs::path file = root["compression"].Scalar();
    if (file.is_relative()) file = fs::path(base_dir) / file;
    root["compression"] = yaml::YamlDoc::load_file(file.string()).root;
  }
  YAML::Node node = root;
  for (size_t i = 0; i < parts.size();) {
    const bool last_part = i + 1 == parts.size();
    if (node.IsSequence()) {
      size_t index = 0;
      try {
        index = std::stoul(parts[i]);
      } catch (const std::exception&) {
        throw ConfigError(fmt::format("'{}' indexes a list: expected a number, not '{}'", path, parts[i]));
      }
      if (index >= node.size()) throw ConfigError(fmt::format("'{}': the list has {} entries", path, node.size()));
      if (last_part) {
        node[index] = value;
        return;
      }
      node.reset(node[index]);
      ++i;
      continue;
    }
    if (!node.IsMap() && !node.IsNull() && node.IsDefined())
      throw ConfigError(fmt::format("'{}': '{}' is a value, not a section", path, parts[i - 1]));
    // The longest run of parts that is an existing key.
    size_t take = 1;
    if (node.IsMap())
      for (size_t n = parts.size() - i; n > 1; --n) {
        std::string key = parts[i];
        for (size_t k = 1; k < n; ++k) key += "." + parts[i + k];
        if (node[key]) {
          take = n;
          break;
        }
      }
    std::string key = parts[i];
    for (size_t k = 1; k < take; ++k) key += "." + parts[i + k];
    i += take;
    if (i == parts.size()) {
      node[key] = value;
      return;
    }
    if (!node[key]) node[key] = YAML::Node(YAML::NodeType::Map);
    YAML::Node child = node[key];
    node.reset(child);
  }
}

}  // namespace

std::string trial_job_text(const config::Job& job, const std::vector<Param>& params, const std::vector<nlohmann::json>& values,
                           const std::string& output, const std::string& name) {
  YAML::Node root = YAML::Clone(YAML::Load(job.text));
  for (size_t p = 0; p < params.size(); ++p)
    set_path(root, params[p].path, scalar_node(values.at(p), params[p].distribution.kind), job.base_dir);
  root.remove("search");
  root["name"] = name;
  root["output"] = output;
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

config::Job trial_job(const config::Job& job, const std::vector<Param>& params, const std::vector<nlohmann::json>& values,
                      const std::string& output, const std::string& name) {
  auto text = trial_job_text(job, params, values, output, name);
  return config::parse_job(text, job.file, job.base_dir, job.load_options);
}

StudySpec load_study_spec(const config::Job& job) {
  auto doc = yaml::YamlDoc::load_string(job.text, job.file);
  StudySpec spec;
  if (doc.root["search"]) {
    spec = parse_general(doc.file, doc.root["search"]);
  } else {
    std::optional<StudySpec> found;
    if (doc.root["compression"]) {
      auto config = config::load_job_compression(doc);
      for (const char* name : {"hpo_parameters", "finetuning_parameters", "fine_tuning_parameters"})
        if (config.root.IsMap() && config.root[name]) {
          found = parse_pquant(config.file, config.root[name], name);
          break;
        }
    }
    if (!found)
      throw ConfigError(fmt::format("{}: the job has nothing to search: give it a search: section (or hpo_parameters "
                                    "in its PQuantML config); see docs/search.md",
                                    job.file));
    spec = *found;
  }
  // Every parameter must land on a key the job takes, before any trial runs.
  for (const auto& p : spec.params) {
    const auto& d = p.distribution;
    // The low value of a range, every choice of a categorical.
    std::vector<nlohmann::json> probes = d.kind == Distribution::Kind::Categorical ? d.choices
                                                                                    : std::vector<nlohmann::json>{d.to_external(d.low)};
    for (const auto& probe : probes) {
      try {
        trial_job(job, {p}, {probe}, "probe", "probe");
      } catch (const ConfigError& e) {
        std::string msg = e.what();
        // The trial job's own position means nothing to the user: name the parameter instead.
        auto colon = msg.find(": ");
        if (msg.rfind(job.file, 0) == 0 && colon != std::string::npos) msg = msg.substr(colon + 2);
        throw ConfigError(fmt::format("{}: {}: {} = {} does not fit the job: {}", p.where,
                                      spec.source == "search" ? "search.params." + p.name : spec.source + "." + p.name, p.path,
                                      probe.dump(), msg));
      }
    }
  }
  return spec;
}

}  // namespace sparq::tune
