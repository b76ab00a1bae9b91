// The PQuantML dialect: five sections read into a PquantConfig (pquant_lower.cpp makes the Plan).
#include "sparq/config/pquant.h"

#include "sparq/config/dialect.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstdio>

#include "sparq/yaml/reader.h"
#include "params.h"
#include "sparq/error.h"
#include "sparq/limits.h"
#include "sparq/prune/methods.h"

namespace sparq::config {

using namespace sparq::yaml;

namespace {

const std::vector<std::string> kModes = {"TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_INF", "RND_MIN_INF", "RND_CONV"};
const std::vector<std::string> kOverflows = {"SAT", "SAT_SYM", "WRAP", "WRAP_SM"};
const std::vector<std::string> kSamplers = {"GridSampler",  "RandomSampler",  "TPESampler",
                                            "CmaEsSampler", "GPSampler",      "NSGAIISampler",
                                            "NSGAIIISampler", "QMCSampler",   "BruteForceSampler"};
// The fine-tuning/HPO section: the spec's name first, then the seeds' "finetuning" spellings.
const std::vector<std::string> kSearchSections = {"hpo_parameters", "finetuning_parameters",
                                                  "fine_tuning_parameters"};
const std::vector<std::string>& schedule_keys() {
  static const std::vector<std::string> keys = pquant_section_keys("training_parameters");
  return keys;
}

int bits(const MapReader& r, const std::string& key, int fallback, int min, int max) {
  return static_cast<int>(r.get_int(key, fallback, min, max));
}

/// A flow-style YAML text of a node (kept for user keys and sampler arguments).
std::string yaml_text(const YAML::Node& node) {
  YAML::Emitter out;
  out << YAML::Flow << node;
  return out.c_str();
}

/// A section given as `key:` with nothing after it is a mistake, not "all defaults".
void reject_empty(const MapReader& r, const std::string& key) {
  YAML::Node n = r.node(key);
  if (n.IsDefined() && n.IsNull())
    r.fail(key, "is empty; give its keys as a mapping or remove the line");
}

/// hgq_beta_schedule (a sparq extension): [[epoch, beta, constant|linear|log], ...].
std::vector<BetaPoint> parse_beta_schedule(const std::string& file, const YAML::Node& node) {
  const std::string what = "quantization_parameters.hgq_beta_schedule";
  if (!node.IsSequence() || node.size() == 0)
    throw ConfigError(fmt::format("{}: {}: expected a list of [epoch, beta, constant|linear|log] points", where(file, node),
                                  what));
  std::vector<BetaPoint> points;
  for (size_t j = 0; j < node.size(); ++j) {
    const YAML::Node& item = node[j];
    std::string at = fmt::format("{}[{}]", what, j);
    if (!item.IsSequence() || item.size() < 2 || item.size() > 3)
      throw ConfigError(fmt::format("{}: {}: expected [epoch, beta] or [epoch, beta, constant|linear|log]",
                                    where(file, item), at));
    BetaPoint p;
    p.epoch = as_int(file, item[0], at + ".epoch");
    p.beta = as_double(file, item[1], at + ".beta");
    if (p.epoch < 0 || (!points.empty() && p.epoch <= points.back().epoch))
      throw ConfigError(fmt::format("{}: {}: epoch {} must be >= 0 and after the previous point's", where(file, item[0]),
                                    at, p.epoch));
    if (p.beta < 0) throw ConfigError(fmt::format("{}: {}: beta {} must be >= 0", where(file, item[1]), at, p.beta));
    if (item.size() == 3) {
      std::string interp = as_string(file, item[2], at + ".interp");
      if (interp == "linear") p.interp = Event::Interp::Linear;
      else if (interp == "log") p.interp = Event::Interp::Log;
      else if (interp != "constant")
        throw ConfigError(fmt::format("{}: {}: unknown interpolation '{}', expected constant, linear or log",
                                      where(file, item[2]), at, interp));
    }
    if (!points.empty() && points.back().interp == Event::Interp::Log && (points.back().beta <= 0 || p.beta <= 0))
      throw ConfigError(fmt::format("{}: {}: a log segment needs beta > 0 at both ends", where(file, item), at));
    points.push_back(p);
  }
  return points;
}

LayerOverride parse_layer(const std::string& file, const YAML::Node& node, const std::string& layer) {
  LayerOverride o;
  o.where = where(file, node);
  std::string what = "quantization_parameters.layer_specific." + layer;
  if (node.IsMap())
    for (const char* old_key : {"integer_bits", "fractional_bits", "keep_negatives"})
      if (node[old_key])
        throw ConfigError(fmt::format("{}: {}: '{}' directly under the layer is PQuantML's obsolete shape; put it "
                                      "under one of the sections input, weight, bias, output",
                                      where(file, node[old_key]), what, old_key));
  MapReader sections(file, node, what, {"input", "weight", "bias", "output"});
  for (const char* target : {"input", "weight", "bias", "output"}) {
    reject_empty(sections, target);
    if (!sections.has(target)) continue;
    bool data = std::string(target) == "input" || std::string(target) == "output";
    std::vector<std::string> keys = {"keep_negatives", "integer_bits", "fractional_bits"};
    if (data) keys.push_back("quantize");
    MapReader r(file, sections.node(target), what + "." + target, keys);
    TargetOverride t;
    if (r.has("keep_negatives")) t.k = bits(r, "keep_negatives", 0, 0, 1);
    if (r.has("integer_bits")) t.i = bits(r, "integer_bits", 0, -32, 32);
    if (r.has("fractional_bits")) t.f = bits(r, "fractional_bits", 0, -32, 32);
    if (r.has("quantize")) t.quantize = r.get_bool("quantize", true);
    o.targets[target] = t;
  }
  return o;
}

PquantQuantization parse_quantization(const std::string& file, const YAML::Node& node) {
  MapReader r(file, node, "quantization_parameters", pquant_section_keys("quantization_parameters"));
  PquantQuantization q;
  q.where = where(file, node);
  q.weight.k = bits(r, "default_weight_keep_negatives", 1, 0, 1);
  q.weight.i = bits(r, "default_weight_integer_bits", 0, -32, 32);
  q.weight.f = bits(r, "default_weight_fractional_bits", 7, -32, 32);
  q.data.k = bits(r, "default_data_keep_negatives", 0, 0, 1);
  q.data.i = bits(r, "default_data_integer_bits", 0, -32, 32);
  q.data.f = bits(r, "default_data_fractional_bits", 7, -32, 32);
  q.quantize_input = r.get_bool("quantize_input", true);
  q.quantize_output = r.get_bool("quantize_output", false);
  q.weight.granularity = quant::parse_granularity(
      r.get_choice("granularity", "per_tensor", {"per_tensor", "per_channel", "per_weight"}));
  q.data.dynamic = r.get_bool("dynamic_data_quantization", false);
  q.enabled = r.get_bool("enable_quantization", true);
  q.hgq_gamma = r.get_double("hgq_gamma", 3e-4, 0.0);
  q.hgq_beta = r.get_double("hgq_beta", 1e-5, 0.0);
  q.hgq_heterogeneous = r.get_bool("hgq_heterogeneous", true);
  // Seed 000/001 call the switch use_hgq; PQuantML's code use_high_granularity_quantization.
  if (r.has("use_hgq") && r.has("use_high_granularity_quantization"))
    r.fail("use_hgq", "give either use_hgq or use_high_granularity_quantization (the same switch), not both");
  q.hgq = r.get_bool("use_hgq", r.get_bool("use_high_granularity_quantization", false));
  if (r.has("hgq_beta_schedule")) q.hgq_beta_schedule = parse_beta_schedule(file, r.node("hgq_beta_schedule"));
  q.use_real_tanh = r.get_bool("use_real_tanh", false);
  // Seed 000 spells one `overflow` for everything; seed 001 splits it by data and parameters.
  std::string both = r.get_choice("overflow", "SAT", kOverflows);
  q.weight.overflow = quant::parse_overflow_mode(r.get_choice("overflow_mode_parameters", both, kOverflows));
  q.data.overflow = quant::parse_overflow_mode(r.get_choice("overflow_mode_data", both, kOverflows));
  q.weight.round = q.data.round = quant::parse_round_mode(r.get_choice("round_mode", "RND", kModes));
  q.use_relu_multiplier = r.get_bool("use_relu_multiplier", false);
  if (r.has("use_symmetric_quantization")) {
    r.get_bool("use_symmetric_quantization", false);
    warn(fmt::format("{}: quantization_parameters.use_symmetric_quantization has no effect (PQuantML ignores it "
                     "too); use overflow_mode_parameters: SAT_SYM for a symmetric range",
                     r.where("use_symmetric_quantization")));
  }
  reject_empty(r, "layer_specific");
  if (r.has("layer_specific")) {
    YAML::Node layers = r.node("layer_specific");
    if (!layers.IsMap()) r.fail("layer_specific", "expected a mapping from layer names to sections");
    for (auto it = layers.begin(); it != layers.end(); ++it)
      q.layers[it->first.Scalar()] = parse_layer(file, it->second, it->first.Scalar());
  }
  return q;
}

PquantPruning parse_pruning(const std::string& file, const YAML::Node& node) {
  if (!node.IsMap())
    throw ConfigError(fmt::format("{}: pruning_parameters: expected a mapping, got {}", where(file, node),
                                  node.IsSequence() ? "a list" : "'" + node.Scalar() + "'"));
  // PQuantML: a pruning section without pruning_method means cs.
  std::string method = "cs";
  if (node["pruning_method"]) {
    method = as_string(file, node["pruning_method"], "pruning_parameters.pruning_method");
    if (!prune::find_method(method)) {
      auto names = prune::method_names();
      throw ConfigError(fmt::format("{}: pruning_parameters.pruning_method: unknown method '{}', did you mean "
                                    "'{}'? (methods: {})",
                                    where(file, node["pruning_method"]), method, nearest(method, names),
                                    fmt::join(names, ", ")));
    }
  }
  const prune::MethodInfo& info = *prune::find_method(method);
  std::vector<std::string> keys = pquant_section_keys("pruning_parameters");
  for (const auto& p : info.params) keys.push_back(p.name);
  MapReader r(file, node, "pruning_parameters (method " + method + ")", keys);
  PquantPruning plan;
  plan.where = r.where("disable_pruning_for_layers");
  plan.enable_pruning = r.get_bool("enable_pruning", true);
  if (r.has("disable_pruning_for_layers")) {
    YAML::Node list = r.node("disable_pruning_for_layers");
    if (!list.IsSequence()) r.fail("disable_pruning_for_layers", "expected a list of layer names");
    for (const auto& item : list) {
      plan.disabled_layers.push_back(as_string(file, item, "pruning_parameters.disable_pruning_for_layers"));
      plan.disabled_where.push_back(where(file, item));
    }
  }
  plan.spec.method = method;
  plan.spec.params = read_params(r, info.params);
  if (method == "wanda" && r.has("N") != r.has("M"))
    r.fail(r.has("N") ? "N" : "M", "N:M pruning needs both N (pruned per group) and M (group size)");
  if (method == "wanda" && r.has("N") && plan.spec.integer("N") >= plan.spec.integer("M"))
    r.fail("N", fmt::format("{} must be less than M = {} (N weights of every group of M are pruned)",
                            plan.spec.integer("N"), plan.spec.integer("M")));
  return plan;
}

Rewind parse_rewind(const MapReader& r) {
  std::string s = r.get_string("rewind", "never");
  std::string norm = s;
  std::replace(norm.begin(), norm.end(), '_', '-');
  if (norm == "never") return Rewind::Never;
  if (norm == "every-round") return Rewind::EveryRound;
  // "posttraining-stage" is how PQuantML's docs spell it (its code then silently never rewinds).
  if (norm == "post-training-stage" || norm == "posttraining-stage") return Rewind::PostTrainingStage;
  if (norm == "post-ticket-search") {
    warn(fmt::format("{}: training_parameters.rewind: '{}' (from PQuantML's notebooks) means 'never', as in "
                     "PQuantML; write post-training-stage to rewind after the last round",
                     r.where("rewind"), s));
    return Rewind::Never;
  }
  r.fail("rewind", fmt::format("'{}' is not one of never, every-round, post-training-stage", s));
}

Schedule parse_schedule(const std::string& file, const YAML::Node& node, bool& pruning_first) {
  if (!node.IsMap()) MapReader(file, node, "training_parameters", {});  // throws "expected a mapping"
  // Any key is allowed here (PQuantML keeps user keys); known keys are checked, the rest kept.
  std::vector<std::string> keys = schedule_keys();
  for (auto it = node.begin(); it != node.end(); ++it)
    if (std::find(keys.begin(), keys.end(), it->first.Scalar()) == keys.end()) keys.push_back(it->first.Scalar());
  MapReader r(file, node, "training_parameters", keys);
  Schedule s;
  s.epochs = r.get_int("epochs", 200, 0, kMaxEpochs);
  s.fine_tuning_epochs = r.get_int("fine_tuning_epochs", 0, 0, kMaxEpochs);
  s.pretraining_epochs = r.get_int("pretraining_epochs", 50, 0, kMaxEpochs);
  s.rounds = r.get_int("rounds", 1, 1, kMaxEpochs);
  s.rewind = parse_rewind(r);
  s.save_weights_epoch = r.get_int("save_weights_epoch", -1, -1);
  if (s.save_weights_epoch >= s.epochs)
    r.fail("save_weights_epoch", fmt::format("{} is out of range, expected -1 (never) or 0..{} (an epoch of the "
                                             "first round)",
                                             s.save_weights_epoch, s.epochs - 1));
  if (s.rewind != Rewind::Never && s.save_weights_epoch < 0)
    warn(fmt::format("{}: training_parameters.rewind is {} but save_weights_epoch is -1: there is no snapshot, so "
                     "nothing is rewound",
                     r.where("rewind"), to_string(s.rewind)));
  pruning_first = r.get_bool("pruning_first", false);
  for (auto it = node.begin(); it != node.end(); ++it) {
    std::string key = it->first.Scalar();
    if (std::find(schedule_keys().begin(), schedule_keys().end(), key) != schedule_keys().end()) continue;
    std::string close = nearest(key, schedule_keys());
    if (close.size() > 3 && close.rfind(key.substr(0, 3), 0) == 0 && key.size() + 2 >= close.size() &&
        close.size() + 2 >= key.size())
      warn(fmt::format("{}: training_parameters.{} is kept as a user key; did you mean '{}'?",
                       where(file, it->first), key, close));
    s.extra[key] = yaml_text(it->second);
  }
  return s;
}

FitCompressPlan parse_fitcompress(const std::string& file, const YAML::Node& node) {
  MapReader r(file, node, "fitcompress_parameters", pquant_section_keys("fitcompress_parameters"));
  FitCompressPlan f;
  f.enabled = r.get_bool("enable_fitcompress", false);
  f.optimize_quantization = r.get_bool("optimize_quantization", true);
  if (r.has("quantization_schedule")) {
    YAML::Node list = r.node("quantization_schedule");
    if (!list.IsSequence() || list.size() == 0)
      r.fail("quantization_schedule", "expected a non-empty list of bit widths, e.g. [7, 4, 3, 2]");
    f.quantization_schedule.clear();
    for (const auto& item : list) {
      double b = as_double(file, item, "fitcompress_parameters.quantization_schedule");
      if (b < 1 || b > 32)
        throw ConfigError(fmt::format("{}: fitcompress_parameters.quantization_schedule: {} is out of range, "
                                      "expected 1..32 bits",
                                      where(file, item), b));
      f.quantization_schedule.push_back(b);
    }
  }
  reject_empty(r, "pruning_schedule");
  if (r.has("pruning_schedule")) {
    MapReader p(file, r.node("pruning_schedule"), "fitcompress_parameters.pruning_schedule",
                {"start", "end", "steps"});
    f.pruning_start = p.get_int("start", 0, -30, 0);
    f.pruning_end = p.get_int("end", -3, -30, 0);
    f.pruning_steps = p.get_int("steps", 40, 2, 100000);
    // Levels 1 - 10^x rise from 1 - 10^start to 1 - 10^end: start must lie above end.
    if (f.pruning_end >= f.pruning_start)
      p.fail(p.has("end") ? "end" : "start",
             fmt::format("end {} must be below start {}: the pruning levels are 1 - 10^x for x from start down to end",
                         f.pruning_end, f.pruning_start));
  }
  f.compression_goal = r.get_double("compression_goal", 0.10, 0.0, 1.0);
  if (f.compression_goal <= 0 || f.compression_goal >= 1)
    r.fail("compression_goal", fmt::format("{} is out of range: the goal is a fraction of the float model's bits, "
                                           "strictly between 0 and 1",
                                           f.compression_goal));
  f.optimize_pruning = r.get_bool("optimize_pruning", false);
  f.greedy_astar = r.get_bool("greedy_astar", true);
  f.approximate = r.get_bool("approximate", true);
  f.f_lambda = r.get_double("f_lambda", 1.0, 0.0);
  return f;
}

/// What FITCompress needs from the other sections: fixed-point weights to set, the mask holder.
void check_fitcompress(const std::string& file, const YAML::Node& node, const PquantConfig& plan) {
  const FitCompressPlan& f = plan.fitcompress;
  if (!f.enabled) return;
  MapReader r(file, node, "fitcompress_parameters", pquant_section_keys("fitcompress_parameters"));
  const char* key = r.has("enable_fitcompress") ? "enable_fitcompress" : "optimize_quantization";
  if (!f.optimize_quantization && !f.optimize_pruning)
    r.fail(key, "FITCompress needs optimize_quantization or optimize_pruning (or both) to search anything");
  if (f.optimize_quantization && plan.quantization && plan.quantization->hgq)
    r.fail(key, "FITCompress sets fixed weight formats per layer; HGQ learns them (use_hgq): turn one of them off");
  if (f.optimize_quantization && (!plan.quantization || !plan.quantization->enabled))
    r.fail(key, "FITCompress sets the weight formats of quantized layers, but quantization_parameters.enable_quantization is false");
  if (f.optimize_pruning && (!plan.pruning || plan.pruning->spec.method != "fitcompress"))
    r.fail(key, fmt::format("FITCompress's pruning masks need pruning_parameters.pruning_method: fitcompress (the mask "
                            "holder){}",
                            plan.pruning ? fmt::format("; {} would replace them", plan.pruning->spec.method) : ""));
}

bool written_as_float(const YAML::Node& n) {
  const std::string& s = n.Scalar();
  return s.find_first_of(".eE") != std::string::npos;
}

SearchSpace parse_search(const std::string& file, const YAML::Node& node, const std::string& section) {
  MapReader r(file, node, section, pquant_section_keys("hpo_parameters"));
  SearchSpace s;
  s.experiment_name = r.get_string("experiment_name", "experiment_1");
  s.model_name = r.get_string("model_name", "example_model");
  s.num_trials = r.get_int("num_trials", 0, 0);
  reject_empty(r, "sampler");
  if (r.has("sampler")) {
    YAML::Node sampler = r.node("sampler");
    // Seeds 000/001 write `sampler: GridSampler`; PQuantML's code a mapping {type, params}.
    if (sampler.IsScalar()) {
      s.sampler = r.get_choice("sampler", "TPESampler", kSamplers);
    } else {
      MapReader sr(file, sampler, section + ".sampler", {"type", "params"});
      s.sampler = sr.get_choice("type", "TPESampler", kSamplers);
      reject_empty(sr, "params");
      if (sr.has("params")) {
        YAML::Node params = sr.node("params");
        if (!params.IsMap()) sr.fail("params", "expected a mapping of the sampler's arguments");
        for (auto it = params.begin(); it != params.end(); ++it)
          s.sampler_params[it->first.Scalar()] = yaml_text(it->second);
      }
    }
  }
  reject_empty(r, "hyperparameter_search");
  if (r.has("hyperparameter_search")) {
    std::string what = section + ".hyperparameter_search";
    MapReader h(file, r.node("hyperparameter_search"), what, {"numerical", "categorical"});
    if (h.has("numerical")) {
      YAML::Node num = h.node("numerical");
      if (!num.IsMap()) h.fail("numerical", "expected a mapping from names to [low, high] or [low, high, step]");
      for (auto it = num.begin(); it != num.end(); ++it) {
        std::string name = it->first.Scalar(), w = what + ".numerical." + name;
        YAML::Node list = it->second;
        if (!list.IsSequence() || list.size() < 2 || list.size() > 3)
          throw ConfigError(fmt::format("{}: {}: expected [low, high] or [low, high, step]", where(file, list), w));
        SearchSpace::Range range;
        range.low = as_double(file, list[0], w);
        range.high = as_double(file, list[1], w);
        if (list.size() == 3) range.step = as_double(file, list[2], w);
        for (const auto& item : list) range.is_float = range.is_float || written_as_float(item);
        if (range.low > range.high)
          throw ConfigError(fmt::format("{}: {}: low {} is above high {}", where(file, list), w, range.low, range.high));
        if (range.step && *range.step <= 0)
          throw ConfigError(fmt::format("{}: {}: step {} must be positive", where(file, list[2]), w, *range.step));
        s.numerical[name] = range;
      }
    }
    if (h.has("categorical")) {
      YAML::Node cat = h.node("categorical");
      if (!cat.IsMap()) h.fail("categorical", "expected a mapping from names to lists of choices");
      for (auto it = cat.begin(); it != cat.end(); ++it) {
        std::string name = it->first.Scalar(), w = what + ".categorical." + name;
        if (!it->second.IsSequence() || it->second.size() == 0)
          throw ConfigError(fmt::format("{}: {}: expected a non-empty list of choices", where(file, it->second), w));
        const YAML::Node choices = it->second;  // a range-for over it->second would outlive the iterator's proxy
        for (const auto& item : choices) s.categorical[name].push_back(as_string(file, item, w));
      }
    }
  }
  return s;
}

}  // namespace

void warn(const std::string& message) { std::fprintf(stderr, "sparq: warning: %s\n", message.c_str()); }

PquantConfig read_pquant(const std::string& file, const YAML::Node& root) {
  if (!root.IsDefined() || root.IsNull())
    throw ConfigError(fmt::format("{}: the config is empty; expected a mapping with quantization_parameters, "
                                  "pruning_parameters, training_parameters, fitcompress_parameters or hpo_parameters",
                                  file));
  std::vector<std::string> sections = {"quantization_parameters", "pruning_parameters", "training_parameters",
                                       "fitcompress_parameters"};
  sections.insert(sections.end(), kSearchSections.begin(), kSearchSections.end());
  MapReader r(file, root, "PQuantML config", sections);
  for (const auto& s : sections) reject_empty(r, s);
  PquantConfig plan;
  // A missing section means its defaults, as in PQuantML; except pruning and the schedule, which
  // sparq leaves off (no pruning; the job's epochs) rather than switching on cs for 250 epochs.
  plan.quantization = parse_quantization(file, r.has("quantization_parameters") ? r.node("quantization_parameters")
                                                                                 : YAML::Node(YAML::NodeType::Map));
  if (r.has("pruning_parameters")) plan.pruning = parse_pruning(file, r.node("pruning_parameters"));
  if (r.has("training_parameters"))
    plan.schedule = parse_schedule(file, r.node("training_parameters"), plan.pruning_first);
  if (r.has("fitcompress_parameters")) {
    plan.fitcompress = parse_fitcompress(file, r.node("fitcompress_parameters"));
    check_fitcompress(file, r.node("fitcompress_parameters"), plan);
  }
  std::string search_section;
  for (const auto& s : kSearchSections) {
    if (!r.has(s)) continue;
    if (!search_section.empty())
      r.fail(s, fmt::format("the search section is already given as {}; keep one of them", search_section));
    search_section = s;
  }
  if (!search_section.empty()) plan.search = parse_search(file, r.node(search_section), search_section);
  return plan;
}

PquantConfig load_pquant(const std::string& path) {
  auto doc = load_config_file(path);
  return read_pquant(doc.file, doc.root);
}

bool PquantQuantization::operator==(const PquantQuantization& o) const {
  return enabled == o.enabled && weight == o.weight && data == o.data && quantize_input == o.quantize_input &&
         quantize_output == o.quantize_output && use_real_tanh == o.use_real_tanh &&
         use_relu_multiplier == o.use_relu_multiplier && hgq == o.hgq && hgq_gamma == o.hgq_gamma &&
         hgq_beta == o.hgq_beta && hgq_heterogeneous == o.hgq_heterogeneous && hgq_beta_schedule == o.hgq_beta_schedule &&
         layers == o.layers;
}

bool PquantConfig::operator==(const PquantConfig& o) const {
  return quantization == o.quantization && pruning == o.pruning && schedule == o.schedule &&
         pruning_first == o.pruning_first && fitcompress == o.fitcompress && search == o.search;
}

}  // namespace sparq::config
