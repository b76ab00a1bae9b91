#include "sparq/plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "sparq/error.h"

namespace sparq {

layers::QuantTargets QuantPlan::targets(const std::string& name, const std::string& op) const {
  layers::QuantTargets t;
  t.enable_quantization = enabled;
  quant::QuantSpec in = data, out = data;
  bool weights = op == "Linear" || op == "Conv1d" || op == "Conv2d";
  bool batchnorm = op == "BatchNorm1d" || op == "BatchNorm2d";
  if (op == "ReLU") {
    // Unsigned with one more fractional bit, as PQuantML's replacement does.
    in.k = out.k = 0;
    in.f += 1, out.f += 1;
  } else if (op == "Tanh" || op == "Hardtanh" || op == "LeakyReLU" || op == "GELU") {
    in.k = out.k = 1;  // signed outputs (PQuantML clips tanh outputs to >= 0: a bug)
  } else if (op == "Sigmoid" || op == "Softmax") {
    in.k = 1, out.k = 0;  // signed logits in, probabilities out
  }
  bool qin = quantize_input, qout = quantize_output;
  quant::QuantSpec w = weight, b = weight;
  auto it = layers.find(name);
  if (it != layers.end()) {
    for (const auto& [target, o] : it->second.targets) {
      quant::QuantSpec* spec = target == "input" ? &in : target == "output" ? &out : target == "weight" ? &w : &b;
      if (o.k) spec->k = *o.k;
      if (o.i) spec->i = *o.i;
      if (o.f) spec->f = *o.f;
      if (o.quantize && target == "input") qin = *o.quantize;
      if (o.quantize && target == "output") qout = *o.quantize;
    }
  }
  if (hgq) {
    // Every target learns its widths, data lanes with the config's granularity too. Batch-norm
    // scale and shift get gamma as well (PQuantML passes them none: a quirk).
    for (auto* spec : {&in, &out, &w, &b}) spec->hgq = true, spec->hgq_gamma = hgq_gamma;
    in.granularity = out.granularity = weight.granularity;
  }
  if (qin) t.input = in;
  if (qout && !batchnorm) t.output = out;
  if (weights || batchnorm) t.weight = w, t.bias = b;
  return t;
}

}  // namespace sparq

namespace sparq {

bool QuantPlan::operator==(const QuantPlan& o) const {
  return enabled == o.enabled && weight == o.weight && data == o.data && quantize_input == o.quantize_input &&
         quantize_output == o.quantize_output && use_real_tanh == o.use_real_tanh &&
         use_relu_multiplier == o.use_relu_multiplier && hgq == o.hgq && hgq_gamma == o.hgq_gamma &&
         hgq_beta == o.hgq_beta && hgq_heterogeneous == o.hgq_heterogeneous && hgq_beta_schedule == o.hgq_beta_schedule &&
         layers == o.layers;
}

BetaSchedule QuantPlan::beta_schedule() const {
  if (!hgq_beta_schedule.empty()) return {hgq_beta_schedule};
  return {{BetaPoint{0, hgq_beta, BetaPoint::Interp::Constant}}};
}

double BetaSchedule::at(int64_t epoch) const {
  if (points.empty()) return 0.0;
  if (epoch <= points.front().epoch) return points.front().beta;
  for (size_t j = 0; j + 1 < points.size(); ++j) {
    const auto &a = points[j], &b = points[j + 1];
    if (epoch >= b.epoch) continue;
    double t = static_cast<double>(epoch - a.epoch) / static_cast<double>(b.epoch - a.epoch);
    switch (a.interp) {
      case BetaPoint::Interp::Constant: return a.beta;
      case BetaPoint::Interp::Linear: return a.beta + (b.beta - a.beta) * t;
      case BetaPoint::Interp::Log: return a.beta * std::pow(b.beta / a.beta, t);
    }
  }
  return points.back().beta;
}

const char* to_string(BetaPoint::Interp i) {
  switch (i) {
    case BetaPoint::Interp::Constant: return "constant";
    case BetaPoint::Interp::Linear: return "linear";
    case BetaPoint::Interp::Log: return "log";
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

bool PruningPlan::enabled_for(const std::string& name) const {
  return enable_pruning && std::find(disabled_layers.begin(), disabled_layers.end(), name) == disabled_layers.end();
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
  return quantization == o.quantization && pruning == o.pruning && schedule == o.schedule &&
         pruning_first == o.pruning_first && fitcompress == o.fitcompress && search == o.search;
}

}  // namespace sparq
