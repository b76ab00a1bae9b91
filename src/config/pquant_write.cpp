// A PquantConfig written back as a PQuantML config, and PQuantML's packaged per-method configs.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "sparq/config/pquant.h"
#include "sparq/yaml/reader.h"
#include "sparq/error.h"

namespace sparq::config {

using namespace sparq::yaml;

namespace {

// Numbers as the shortest text that reads back to the same double.
std::string num(double v) { return fmt::format("{}", v); }

void emit_value(YAML::Emitter& out, const ParamValue& v) {
  if (std::holds_alternative<std::monostate>(v)) out << YAML::Null;
  else if (auto b = std::get_if<bool>(&v)) out << *b;
  else if (auto i = std::get_if<int64_t>(&v)) out << *i;
  else if (auto d = std::get_if<double>(&v)) out << num(*d);
  else out << std::get<std::string>(v);
}

void emit_yaml_text(YAML::Emitter& out, const std::string& text) { out << YAML::Load(text); }

void emit_quantization(YAML::Emitter& out, const PquantQuantization& q) {
  out << YAML::Key << "quantization_parameters" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "default_weight_keep_negatives" << YAML::Value << q.weight.k;
  out << YAML::Key << "default_weight_integer_bits" << YAML::Value << q.weight.i;
  out << YAML::Key << "default_weight_fractional_bits" << YAML::Value << q.weight.f;
  out << YAML::Key << "default_data_keep_negatives" << YAML::Value << q.data.k;
  out << YAML::Key << "default_data_integer_bits" << YAML::Value << q.data.i;
  out << YAML::Key << "default_data_fractional_bits" << YAML::Value << q.data.f;
  out << YAML::Key << "quantize_input" << YAML::Value << q.quantize_input;
  out << YAML::Key << "quantize_output" << YAML::Value << q.quantize_output;
  out << YAML::Key << "granularity" << YAML::Value << quant::to_string(q.weight.granularity);
  out << YAML::Key << "dynamic_data_quantization" << YAML::Value << q.data.dynamic;
  out << YAML::Key << "enable_quantization" << YAML::Value << q.enabled;
  out << YAML::Key << "use_high_granularity_quantization" << YAML::Value << q.hgq;
  out << YAML::Key << "hgq_gamma" << YAML::Value << num(q.hgq_gamma);
  out << YAML::Key << "hgq_beta" << YAML::Value << num(q.hgq_beta);
  out << YAML::Key << "hgq_heterogeneous" << YAML::Value << q.hgq_heterogeneous;
  if (!q.hgq_beta_schedule.empty()) {
    out << YAML::Key << "hgq_beta_schedule" << YAML::Value << YAML::BeginSeq;
    for (const auto& p : q.hgq_beta_schedule)
      out << YAML::Flow << YAML::BeginSeq << p.epoch << num(p.beta) << to_string(p.interp) << YAML::EndSeq;
    out << YAML::EndSeq;
  }
  out << YAML::Key << "use_real_tanh" << YAML::Value << q.use_real_tanh;
  out << YAML::Key << "use_relu_multiplier" << YAML::Value << q.use_relu_multiplier;
  out << YAML::Key << "overflow_mode_parameters" << YAML::Value << quant::to_string(q.weight.overflow);
  out << YAML::Key << "overflow_mode_data" << YAML::Value << quant::to_string(q.data.overflow);
  out << YAML::Key << "round_mode" << YAML::Value << quant::to_string(q.weight.round);
  out << YAML::Key << "layer_specific" << YAML::Value;
  if (q.layers.empty()) out << YAML::Flow;
  out << YAML::BeginMap;
  for (const auto& [layer, o] : q.layers) {
    out << YAML::Key << layer << YAML::Value << YAML::BeginMap;
    for (const auto& [target, t] : o.targets) {
      out << YAML::Key << target << YAML::Value << YAML::Flow << YAML::BeginMap;
      if (t.quantize) out << YAML::Key << "quantize" << YAML::Value << *t.quantize;
      if (t.k) out << YAML::Key << "keep_negatives" << YAML::Value << *t.k;
      if (t.i) out << YAML::Key << "integer_bits" << YAML::Value << *t.i;
      if (t.f) out << YAML::Key << "fractional_bits" << YAML::Value << *t.f;
      out << YAML::EndMap;
    }
    out << YAML::EndMap;
  }
  out << YAML::EndMap << YAML::EndMap;
}

void emit_pruning(YAML::Emitter& out, const PquantPruning& p) {
  out << YAML::Key << "pruning_parameters" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "pruning_method" << YAML::Value << p.spec.method;
  out << YAML::Key << "enable_pruning" << YAML::Value << p.enable_pruning;
  out << YAML::Key << "disable_pruning_for_layers" << YAML::Value << YAML::Flow << p.disabled_layers;
  for (const auto& [key, value] : p.spec.params) {
    out << YAML::Key << key << YAML::Value;
    emit_value(out, value);
  }
  out << YAML::EndMap;
}

void emit_schedule(YAML::Emitter& out, const Schedule& s, bool pruning_first) {
  out << YAML::Key << "training_parameters" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "pretraining_epochs" << YAML::Value << s.pretraining_epochs;
  out << YAML::Key << "epochs" << YAML::Value << s.epochs;
  out << YAML::Key << "rounds" << YAML::Value << s.rounds;
  out << YAML::Key << "fine_tuning_epochs" << YAML::Value << s.fine_tuning_epochs;
  out << YAML::Key << "rewind" << YAML::Value << to_string(s.rewind);
  out << YAML::Key << "save_weights_epoch" << YAML::Value << s.save_weights_epoch;
  out << YAML::Key << "pruning_first" << YAML::Value << pruning_first;
  for (const auto& [key, text] : s.extra) {
    out << YAML::Key << key << YAML::Value;
    emit_yaml_text(out, text);
  }
  out << YAML::EndMap;
}

void emit_fitcompress(YAML::Emitter& out, const FitCompressPlan& f) {
  out << YAML::Key << "fitcompress_parameters" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "enable_fitcompress" << YAML::Value << f.enabled;
  out << YAML::Key << "optimize_quantization" << YAML::Value << f.optimize_quantization;
  out << YAML::Key << "quantization_schedule" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (double b : f.quantization_schedule) out << num(b);
  out << YAML::EndSeq;
  out << YAML::Key << "pruning_schedule" << YAML::Value << YAML::Flow << YAML::BeginMap;
  out << YAML::Key << "start" << YAML::Value << f.pruning_start << YAML::Key << "end" << YAML::Value
      << f.pruning_end << YAML::Key << "steps" << YAML::Value << f.pruning_steps << YAML::EndMap;
  out << YAML::Key << "compression_goal" << YAML::Value << num(f.compression_goal);
  out << YAML::Key << "optimize_pruning" << YAML::Value << f.optimize_pruning;
  out << YAML::Key << "greedy_astar" << YAML::Value << f.greedy_astar;
  out << YAML::Key << "approximate" << YAML::Value << f.approximate;
  out << YAML::Key << "f_lambda" << YAML::Value << num(f.f_lambda);
  out << YAML::EndMap;
}

void emit_search(YAML::Emitter& out, const SearchSpace& s) {
  out << YAML::Key << "hpo_parameters" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "experiment_name" << YAML::Value << s.experiment_name;
  out << YAML::Key << "model_name" << YAML::Value << s.model_name;
  out << YAML::Key << "num_trials" << YAML::Value << s.num_trials;
  out << YAML::Key << "sampler" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "type" << YAML::Value << s.sampler;
  out << YAML::Key << "params" << YAML::Value;
  if (s.sampler_params.empty()) out << YAML::Flow;
  out << YAML::BeginMap;
  for (const auto& [key, text] : s.sampler_params) {
    out << YAML::Key << key << YAML::Value;
    emit_yaml_text(out, text);
  }
  out << YAML::EndMap << YAML::EndMap;
  out << YAML::Key << "hyperparameter_search" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "numerical" << YAML::Value;
  if (s.numerical.empty()) out << YAML::Flow;
  out << YAML::BeginMap;
  for (const auto& [name, r] : s.numerical) {
    // Integer searches stay integers; float ones keep a decimal point so they read back as floats.
    const bool is_float = r.is_float;
    auto text = [is_float](double v) { return is_float && v == static_cast<int64_t>(v) ? fmt::format("{:.1f}", v) : num(v); };
    out << YAML::Key << name << YAML::Value << YAML::Flow << YAML::BeginSeq << text(r.low) << text(r.high);
    if (r.step) out << text(*r.step);
    out << YAML::EndSeq;
  }
  out << YAML::EndMap;
  out << YAML::Key << "categorical" << YAML::Value;
  if (s.categorical.empty()) out << YAML::Flow;
  out << YAML::BeginMap;
  for (const auto& [name, choices] : s.categorical) out << YAML::Key << name << YAML::Value << YAML::Flow << choices;
  out << YAML::EndMap << YAML::EndMap << YAML::EndMap;
}

struct Packaged {
  const char* file;  ///< config_<file>.yaml in PQuantML
  const char* method;
  int epochs, fine_tuning, pretraining, rounds, save_weights;
  const char* rewind;
  const char* pruning;  ///< the method's keys (flow YAML, without pruning_method)
  const char* fit;      ///< fitcompress: enable, schedule, pruning_schedule, goal, optimize_pruning, f_lambda
};

// Spec §1.7, file by file.
const Packaged kPackaged[] = {
    {"ap", "activation_pruning", 200, 0, 0, 1, -1, "never",
     "threshold: 0.2, threshold_decay: 0.0, t_delta: 100, t_start_collecting_batch: 100",
     "enable_fitcompress: false, quantization_schedule: [7., 4., 3., 2.], pruning_schedule: {start: 0, end: -3, "
     "steps: 40}, compression_goal: 0.10, optimize_pruning: false, f_lambda: 1"},
    {"autosparse", "autosparse", 100, 0, 0, 1, -1, "never",
     "threshold_decay: 0, alpha: 0.5, alpha_reset_epoch: 90, autotune_epochs: 10, backward_sparsity: false, "
     "threshold_init: -5.0, threshold_type: channelwise",
     "enable_fitcompress: false, quantization_schedule: [7., 4., 3., 2.], pruning_schedule: {start: 0, end: -3, "
     "steps: 40}, compression_goal: 0.10, optimize_pruning: false, f_lambda: 1"},
    {"cs", "cs", 85, 85, 0, 3, 2, "post-training-stage", "threshold_decay: 1e-09, threshold_init: 0., final_temp: 200",
     "enable_fitcompress: false, quantization_schedule: [7., 4., 3., 2., 1.], pruning_schedule: {start: 0, end: -3, "
     "steps: 40}, compression_goal: 0.10, optimize_pruning: false, f_lambda: 1"},
    {"dst", "dst", 160, 0, 0, 1, -1, "never",
     "threshold_decay: 0.0, alpha: 5.0e-06, max_pruning_pct: 0.99, threshold_init: 0.0, threshold_type: weightwise",
     "enable_fitcompress: false, quantization_schedule: [7., 4., 3., 2., 1.], pruning_schedule: {start: 0, end: -3, "
     "steps: 40}, compression_goal: 0.10, optimize_pruning: false, f_lambda: 1"},
    {"fitcompress", "fitcompress", 200, 0, 100, 1, -1, "never", "threshold_decay: 0.0, min_frac_bits: 2.",
     "enable_fitcompress: true, quantization_schedule: [7., 6., 5., 4., 3.], pruning_schedule: {start: 0, end: -2, "
     "steps: 40}, compression_goal: 0.007, optimize_pruning: true, f_lambda: 1"},
    {"mdmm", "mdmm", 200, 30, 0, 1, -1, "never",
     "constraint_type: Equality, target_value: 0.0, metric_type: UnstructuredSparsity, target_sparsity: 0.9, rf: 1, "
     "epsilon: 0.001, scale: 10.0, damping: 1.0, use_grad: false, l0_mode: coarse, constraint_lr: 0.001",
     "enable_fitcompress: false, quantization_schedule: [7., 4., 3., 2], pruning_schedule: {start: 0, end: -3, "
     "steps: 40}, compression_goal: 0.10, optimize_pruning: false, f_lambda: 1"},
    {"pdp", "pdp", 100, 20, 1, 1, -1, "never",
     "threshold_decay: 0.0, epsilon: 0.015, sparsity: 0.8, temperature: 1.0e-05, structured_pruning: false",
     "enable_fitcompress: false, quantization_schedule: [7., 4., 3., 2., 1.], pruning_schedule: {start: 0, end: -2, "
     "steps: 40}, compression_goal: 0.10, optimize_pruning: true, f_lambda: 1"},
    {"wanda", "wanda", 200, 0, 50, 1, -1, "never",
     "threshold_decay: 0.0, t_delta: 100, t_start_collecting_batch: 100, sparsity: 0.9, calculate_pruning_budget: "
     "true, M: null, N: null",
     "enable_fitcompress: false, quantization_schedule: [7., 4., 3., 2., 1.], pruning_schedule: {start: 0, end: -3, "
     "steps: 40}, compression_goal: 0.04, optimize_pruning: true, f_lambda: 0.5"},
};

}  // namespace

std::string write_pquant(const PquantConfig& plan) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  if (plan.schedule) emit_schedule(out, *plan.schedule, plan.pruning_first);
  PquantQuantization off;
  off.enabled = false;
  emit_quantization(out, plan.quantization ? *plan.quantization : off);
  if (plan.pruning) emit_pruning(out, *plan.pruning);
  emit_fitcompress(out, plan.fitcompress);
  emit_search(out, plan.search);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

std::vector<std::string> packaged_config_names() {
  std::vector<std::string> names;
  for (const auto& p : kPackaged) names.push_back(p.method);
  return names;
}

PquantConfig packaged_config(const std::string& method) {
  for (const auto& p : kPackaged) {
    if (method != p.method && method != p.file) continue;
    std::string text = fmt::format(R"(training_parameters:
  {{epochs: {}, fine_tuning_epochs: {}, pretraining_epochs: {}, pruning_first: true, rewind: {}, rounds: {},
    save_weights_epoch: {}}}
quantization_parameters:
  {{default_weight_keep_negatives: 1.0, default_weight_integer_bits: 0.0, default_weight_fractional_bits: 7.0,
    default_data_keep_negatives: 0.0, default_data_integer_bits: 0.0, default_data_fractional_bits: 7.0,
    dynamic_data_quantization: false, granularity: per_tensor, quantize_input: true, quantize_output: false,
    enable_quantization: true, hgq_beta: 1e-5, hgq_gamma: 0.0003, hgq_heterogeneous: True, layer_specific: {{}},
    use_high_granularity_quantization: false, use_real_tanh: false, use_relu_multiplier: false,
    overflow_mode_parameters: SAT, overflow_mode_data: SAT, round_mode: RND}}
pruning_parameters: {{disable_pruning_for_layers: [], enable_pruning: true, pruning_method: {}, {}}}
fitcompress_parameters: {{optimize_quantization: true, greedy_astar: true, approximate: true, {}}}
hpo_parameters:
  {{experiment_name: experiment_name, model_name: jet_tagger, num_trials: 1, sampler: {{type: RandomSampler}},
    hyperparameter_search: {{numerical: {{}}, categorical: {{}}}}}}
)",
                                   p.epochs, p.fine_tuning, p.pretraining, p.rewind, p.rounds, p.save_weights,
                                   p.method, p.pruning, p.fit);
    auto doc = YamlDoc::load_string(text, fmt::format("<packaged config_{}.yaml>", p.file));
    return read_pquant(doc.file, doc.root);
  }
  throw ConfigError(fmt::format("no packaged config for '{}', expected one of {} (or ap)", method,
                                fmt::join(packaged_config_names(), ", ")));
}

}  // namespace sparq::config
