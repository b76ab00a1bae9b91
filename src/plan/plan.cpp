#include "sparq/plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "sparq/error.h"

namespace sparq {

bool Selector::operator==(const Selector& o) const {
  return names == o.names && name_regexes == o.name_regexes && op_types == o.op_types &&
         exclude_names == o.exclude_names && exclude_name_regexes == o.exclude_name_regexes &&
         exclude_op_types == o.exclude_op_types;
}

std::vector<PruningSpec> Plan::pruning_methods(bool active_only) const {
  std::vector<PruningSpec> out;
  for (const auto& rule : rules)
    for (const auto& [target, t] : rule.targets) {
      if (!t.prune || !t.prune->method || (active_only && !t.prune->active.value_or(true))) continue;
      const auto& spec = *t.prune->method;
      if (std::none_of(out.begin(), out.end(), [&](const PruningSpec& s) { return s.method == spec.method; }))
        out.push_back(spec);
    }
  return out;
}

bool Plan::uses_masks() const {
  for (const auto& rule : rules)
    for (const auto& [target, t] : rule.targets)
      if (t.prune && t.prune->mask) return true;
  return false;
}

std::vector<Event> events_of(const std::vector<Event>& events, Event::Kind kind) {
  std::vector<Event> out;
  for (const auto& e : events)
    if (e.kind == kind) out.push_back(e);
  std::stable_sort(out.begin(), out.end(), [](const Event& a, const Event& b) { return a.at_epoch < b.at_epoch; });
  return out;
}

double curve_at(const std::vector<Event>& points, double epoch) {
  if (points.empty()) return 0.0;
  if (epoch <= points.front().at_epoch) return points.front().value;
  for (size_t j = 0; j + 1 < points.size(); ++j) {
    const auto &a = points[j], &b = points[j + 1];
    if (epoch >= b.at_epoch) continue;
    double t = (epoch - a.at_epoch) / (b.at_epoch - a.at_epoch);
    switch (a.interp) {
      case Event::Interp::Constant: return a.value;
      case Event::Interp::Linear: return a.value + (b.value - a.value) * t;
      case Event::Interp::Log: return a.value * std::pow(b.value / a.value, t);
    }
  }
  return points.back().value;
}

const char* to_string(Event::Interp i) {
  switch (i) {
    case Event::Interp::Constant: return "constant";
    case Event::Interp::Linear: return "linear";
    case Event::Interp::Log: return "log";
  }
  return "?";
}

const char* to_string(Event::Kind k) {
  switch (k) {
    case Event::Kind::LearningRate: return "lr";
    case Event::Kind::WeightDecay: return "weight_decay";
    case Event::Kind::Trainable: return "trainable";
    case Event::Kind::Quantization: return "quantization";
    case Event::Kind::HgqBeta: return "hgq_beta";
  }
  return "?";
}

namespace {
[[noreturn]] void param_error(const PruningSpec& s, const std::string& key, const char* expected) {
  throw Error(fmt::format("pruning method {}: parameter '{}' is missing or not {}", s.method, key, expected));
}
const ParamValue& param(const PruningSpec& s, const std::string& key) {
  auto it = s.params.find(key);
  if (it == s.params.end()) param_error(s, key, "set");
  return it->second;
}
}  // namespace

std::string to_string(const ParamValue& v) {
  if (std::holds_alternative<std::monostate>(v)) return "null";
  if (auto b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  if (auto i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (auto d = std::get_if<double>(&v)) return fmt::format("{}", *d);
  return std::get<std::string>(v);
}

double PruningSpec::number(const std::string& key) const {
  const auto& v = param(*this, key);
  if (auto d = std::get_if<double>(&v)) return *d;
  if (auto i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
  param_error(*this, key, "a number");
}

int64_t PruningSpec::integer(const std::string& key) const {
  if (auto i = std::get_if<int64_t>(&param(*this, key))) return *i;
  param_error(*this, key, "an integer");
}

bool PruningSpec::flag(const std::string& key) const {
  if (auto b = std::get_if<bool>(&param(*this, key))) return *b;
  param_error(*this, key, "true or false");
}

std::string PruningSpec::text(const std::string& key) const {
  if (auto s = std::get_if<std::string>(&param(*this, key))) return *s;
  param_error(*this, key, "a string");
}

bool PruningSpec::is_null(const std::string& key) const {
  return std::holds_alternative<std::monostate>(param(*this, key));
}

const char* to_string(Rewind r) {
  switch (r) {
    case Rewind::Never: return "never";
    case Rewind::EveryRound: return "every-round";
    case Rewind::PostTrainingStage: return "post-training-stage";
  }
  return "?";
}

Schedule Schedule::single_stage(int64_t epochs) {
  Schedule s;
  s.pretraining_epochs = 0;
  s.epochs = epochs;
  return s;
}

bool Schedule::operator==(const Schedule& o) const {
  return pretraining_epochs == o.pretraining_epochs && epochs == o.epochs && rounds == o.rounds &&
         fine_tuning_epochs == o.fine_tuning_epochs && save_weights_epoch == o.save_weights_epoch &&
         rewind == o.rewind && extra == o.extra;
}

bool FitCompressPlan::operator==(const FitCompressPlan& o) const {
  return enabled == o.enabled && optimize_quantization == o.optimize_quantization &&
         quantization_schedule == o.quantization_schedule && pruning_start == o.pruning_start &&
         pruning_end == o.pruning_end && pruning_steps == o.pruning_steps && compression_goal == o.compression_goal &&
         optimize_pruning == o.optimize_pruning && greedy_astar == o.greedy_astar && approximate == o.approximate &&
         f_lambda == o.f_lambda;
}

bool SearchSpace::operator==(const SearchSpace& o) const {
  return experiment_name == o.experiment_name && model_name == o.model_name && sampler == o.sampler &&
         sampler_params == o.sampler_params && num_trials == o.num_trials && numerical == o.numerical &&
         categorical == o.categorical;
}

bool Plan::operator==(const Plan& o) const {
  return dialect == o.dialect && rules == o.rules && precedence == o.precedence && schedule == o.schedule &&
         events == o.events && modifiers == o.modifiers && pruner == o.pruner && quantizer == o.quantizer &&
         auto_dependency_groups == o.auto_dependency_groups && speedup == o.speedup && fitcompress == o.fitcompress && search == o.search &&
         distillation == o.distillation;
}

std::string to_string(const MaskType& t) {
  switch (t.kind) {
    case MaskType::Kind::Unstructured: return "unstructured";
    case MaskType::Kind::Block: return t.four_block ? "block4" : fmt::format("[{}, {}]", t.a, t.b);
    case MaskType::Kind::NM: return fmt::format("{}:{}", t.n, t.m);
    case MaskType::Kind::Filter: return "filter";
    case MaskType::Kind::Channel: return "channel";
  }
  return "?";
}

namespace {
auto modifier_fields(const Modifier& m) {
  return std::tie(m.type, m.tag, m.stage, m.start_epoch, m.end_epoch, m.update_frequency, m.params, m.init_sparsity,
                  m.init_from_param, m.final_sparsity, m.final_sparsity_map, m.inter_func, m.leave_enabled,
                  m.global_sparsity, m.momentum_buffer_reset, m.mask_type, m.param_name_groups, m.layers, m.lr_class,
                  m.lr_func, m.learning_rate, m.init_lr, m.final_lr, m.gamma, m.step_size, m.lr_min, m.cycle_epochs,
                  m.init_lr_set, m.milestones, m.param_groups, m.weight_decay, m.trainable, m.val, m.init_val,
                  m.final_val, m.val_shape, m.disable_observer_epoch, m.freeze_bn_epoch, m.submodules, m.ignore,
                  m.weight_bits, m.activation_bits, m.symmetric_activations,
                  m.quantize_linear_activations, m.quantize_conv_activations, m.fuse);
}
}  // namespace

bool Modifier::operator==(const Modifier& o) const { return modifier_fields(*this) == modifier_fields(o); }

int64_t max_epochs(const std::vector<Modifier>& modifiers) {
  double out = -1;
  for (const auto& m : modifiers) {
    if (m.start_epoch > -1) out = std::max(out, std::ceil(m.start_epoch));
    if (m.end_epoch > -1) out = std::max(out, std::ceil(m.end_epoch));
  }
  return static_cast<int64_t>(out);
}

int64_t min_epochs(const std::vector<Modifier>& modifiers) {
  double out = -1;
  for (const auto& m : modifiers)
    if (m.start_epoch > -1) out = out < 0 ? std::floor(m.start_epoch) : std::min(out, std::floor(m.start_epoch));
  return static_cast<int64_t>(out);
}

std::vector<Modifier> ordered(std::vector<Modifier> modifiers) {
  auto end_key = [](const Modifier& m) { return m.end_epoch == -1 ? HUGE_VAL : m.end_epoch; };
  std::stable_sort(modifiers.begin(), modifiers.end(), [&](const Modifier& a, const Modifier& b) {
    if (end_key(a) != end_key(b)) return end_key(a) < end_key(b);
    if (a.start_epoch != b.start_epoch) return a.start_epoch < b.start_epoch;
    return a.type < b.type;
  });
  return modifiers;
}

bool MaskSetting::operator==(const MaskSetting& o) const {
  return sparse_ratio == o.sparse_ratio && sparse_threshold == o.sparse_threshold &&
         max_sparse_ratio == o.max_sparse_ratio && min_sparse_ratio == o.min_sparse_ratio &&
         global_group == o.global_group && dependency_group == o.dependency_group &&
         internal_metric_block == o.internal_metric_block && granularity == o.granularity &&
         apply_method == o.apply_method && align == o.align;
}

}  // namespace sparq
