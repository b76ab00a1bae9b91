// A PquantConfig lowered to the Plan: PQuantML's layer defaults and op formats as rules, in the
// order PQuantML applies them (defaults, then per-op formats, then layer_specific: later wins).
#include <fmt/format.h>

#include "sparq/config/dialect.h"
#include "sparq/config/pquant.h"
#include "sparq/yaml/reader.h"

namespace sparq::config {

namespace {

const std::vector<std::string> kWeightOps = {"Linear", "Conv1d", "Conv2d"};
const std::vector<std::string> kActivationOps = {"ReLU", "Tanh", "Hardtanh", "LeakyReLU", "GELU", "Sigmoid", "Softmax"};

QuantSetting quant(quant::QuantizerSpec spec, std::optional<bool> enabled = std::nullopt) {
  QuantSetting q;
  q.spec = std::move(spec);
  q.enabled = enabled;
  return q;
}

/// The op rule of PQuantML's activation replacements: data formats derived from the default.
Rule op_rule(std::vector<std::string> ops, quant::QuantizerSpec in, quant::QuantizerSpec out) {
  Rule r;
  r.select.op_types = std::move(ops);
  r.targets[kInput].quant = quant(std::move(in));
  r.targets[kOutput].quant = quant(std::move(out));
  return r;
}

quant::QuantizerSpec with_sign(quant::QuantizerSpec spec, int k, int extra_f = 0) {
  auto& s = *quant::fixed_part(spec);  // PQuantML specs are fixed-point
  s.k = k, s.f += extra_f;
  return spec;
}

void lower_quantization(const PquantQuantization& q, Plan& plan) {
  if (!q.enabled) {
    // Layers run in float, but weight, batch-norm and pooling layers still become PQ layers
    // (pruning lives in them); activations stay as they are.
    Rule r;
    r.select.exclude_op_types = kActivationOps;
    r.where = q.where;
    plan.rules.push_back(r);
    return;
  }
  auto spec_of = [&](quant::FixedSpec s) -> quant::QuantizerSpec {
    if (!q.hgq) return s;
    quant::HgqSpec h;
    static_cast<quant::FixedSpec&>(h) = s;
    // Every target learns its widths; batch-norm scale and shift get gamma too (PQuantML passes
    // them none: a quirk).
    h.gamma = q.hgq_gamma;
    return h;
  };
  quant::FixedSpec data = q.data;
  if (q.hgq) data.granularity = q.weight.granularity;  // data lanes with the config's granularity
  const auto weight = spec_of(q.weight), lane = spec_of(data);

  Rule defaults;
  defaults.where = q.where;
  defaults.targets["weight"].quant = quant(weight);
  defaults.targets["bias"].quant = quant(weight);
  defaults.targets[kInput].quant = quant(lane, q.quantize_input);
  defaults.targets[kOutput].quant = quant(lane, q.quantize_output);
  plan.rules.push_back(defaults);
  // ReLU: unsigned with one more fractional bit, as PQuantML's replacement does.
  Rule relu = op_rule({"ReLU"}, with_sign(lane, 0, 1), with_sign(lane, 0, 1));
  if (q.use_relu_multiplier && !q.hgq) relu.module.relu_multiplier = true;  // HGQ learns the scale in its bits
  plan.rules.push_back(relu);
  // Signed outputs (PQuantML clips tanh outputs to >= 0: a bug).
  plan.rules.push_back(op_rule({"Tanh", "Hardtanh", "LeakyReLU", "GELU"}, with_sign(lane, 1), with_sign(lane, 1)));
  plan.rules.push_back(op_rule({"Sigmoid", "Softmax"}, with_sign(lane, 1), with_sign(lane, 0)));  // probabilities out
  Rule tanh;
  tanh.select.op_types = {"Tanh"};
  tanh.module.function = q.use_real_tanh ? "tanh" : "hard_tanh";
  plan.rules.push_back(tanh);

  static const std::map<std::string, std::string> kTargets = {
      {"input", kInput}, {"output", kOutput}, {"weight", "weight"}, {"bias", "bias"}};
  for (const auto& [layer, o] : q.layers) {
    Rule r;
    r.select.names = {layer};
    r.where = o.where;
    r.origin = "layer_specific";
    r.names_must_exist = true;
    for (const auto& [target, t] : o.targets) {
      QuantSetting s;
      s.k = t.k, s.i = t.i, s.f = t.f, s.enabled = t.quantize;
      r.targets[kTargets.at(target)].quant = s;
    }
    plan.rules.push_back(r);
  }
  // HGQ's beta: a curve of events read per epoch.
  if (q.hgq) {
    std::vector<BetaPoint> points = q.hgq_beta_schedule;
    if (points.empty()) points.push_back({0, q.hgq_beta, Event::Interp::Constant});
    for (const auto& p : points) {
      Event e;
      e.kind = Event::Kind::HgqBeta;
      e.at_epoch = static_cast<double>(p.epoch);
      e.value = p.beta;
      e.interp = p.interp;
      e.where = q.where;
      plan.events.push_back(e);
    }
  }
}

void lower_pruning(const PquantPruning& p, bool pruning_first, Plan& plan) {
  Rule r;
  r.select.op_types = kWeightOps;
  r.where = p.where;
  PruneSetting s;
  s.method = p.spec;
  s.active = p.enable_pruning;
  r.targets["weight"].prune = s;
  r.module.pruning_first = pruning_first;
  plan.rules.push_back(r);
  for (size_t n = 0; n < p.disabled_layers.size(); ++n) {
    Rule off;
    off.select.names = {p.disabled_layers[n]};
    off.where = n < p.disabled_where.size() ? p.disabled_where[n] : p.where;
    off.origin = "disable_pruning_for_layers";
    off.names_must_exist = off.weights_only = true;
    PruneSetting disabled;
    disabled.active = false;
    off.targets["weight"].prune = disabled;
    plan.rules.push_back(off);
  }
}

}  // namespace

Plan lower_pquant(const PquantConfig& c) {
  Plan plan;
  plan.dialect = "pquantml";
  plan.precedence = Precedence::LaterWins;
  plan.schedule = c.schedule;
  plan.fitcompress = c.fitcompress;
  plan.search = c.search;
  if (c.quantization) lower_quantization(*c.quantization, plan);
  if (c.pruning) lower_pruning(*c.pruning, c.pruning_first, plan);
  return plan;
}

Plan parse_pquant(const std::string& file, const YAML::Node& root) { return lower_pquant(read_pquant(file, root)); }

namespace {
const std::vector<std::string> kSections = {"quantization_parameters", "pruning_parameters", "training_parameters",
                                            "fitcompress_parameters", "hpo_parameters", "finetuning_parameters",
                                            "fine_tuning_parameters"};
const bool registered = register_dialect({
    "pquantml",
    "PQuantML config",
    [](const YAML::Node& root) {
      if (!root.IsMap()) return false;
      for (auto it = root.begin(); it != root.end(); ++it)
        if (std::find(kSections.begin(), kSections.end(), it->first.Scalar()) != kSections.end()) return true;
      return root.size() == 0;  // `{}`: every section at its default
    },
    [](const std::string& file, const YAML::Node& root, const LoadOptions&) { return parse_pquant(file, root); },
});
}  // namespace

}  // namespace sparq::config
