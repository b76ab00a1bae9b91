#include "sparq/prune/methods.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "prune/methods_impl.h"
#include "sparq/error.h"

namespace sparq::prune {

namespace {

ParamInfo flag(std::string name, bool fallback) { return {std::move(name), ParamKind::Bool, fallback, -1e308, 1e308, {}}; }
ParamInfo integer(std::string name, int64_t fallback, double min, double max = 1e308) {
  return {std::move(name), ParamKind::Int, fallback, min, max, {}};
}
ParamInfo number(std::string name, double fallback, double min = -1e308, double max = 1e308) {
  return {std::move(name), ParamKind::Float, fallback, min, max, {}};
}
ParamInfo choice(std::string name, std::string fallback, std::vector<std::string> choices) {
  return {std::move(name), ParamKind::Choice, std::move(fallback), -1e308, 1e308, std::move(choices)};
}
ParamInfo optional_int(std::string name, double min) {
  return {std::move(name), ParamKind::OptionalInt, std::monostate{}, min, 1e308, {}};
}

MethodInfo method(std::string name, std::vector<ParamInfo> params, bool implemented) {
  params.insert(params.begin(), number("threshold_decay", 0.0, 0.0));
  return {std::move(name), std::move(params), implemented};
}

const std::vector<std::string> kThresholdTypes = {"channelwise", "layerwise", "weightwise"};

}  // namespace

const char* to_string(Stage stage) {
  switch (stage) {
    case Stage::Pretraining: return "pretraining";
    case Stage::Training: return "training";
    case Stage::FineTuning: return "fine-tuning";
  }
  return "?";
}

const std::vector<MethodInfo>& pruning_methods() {
  static const std::vector<MethodInfo> methods = {
      method("cs", {integer("final_temp", 200, 1), number("threshold_init", 0.0)}, true),
      method("dst",
             {number("alpha", 5e-6, 0.0), number("max_pruning_pct", 0.99, 0.0, 1.0), number("threshold_init", 0.0),
              choice("threshold_type", "channelwise", kThresholdTypes)},
             true),
      method("pdp",
             {number("epsilon", 0.015, 0.0), number("sparsity", 0.8, 0.0, 1.0), number("temperature", 1e-5, 1e-30),
              flag("structured_pruning", false)},
             true),
      method("wanda",
             {optional_int("M", 1), optional_int("N", 0), number("sparsity", 0.9, 0.0, 1.0),
              integer("t_delta", 100, 1), integer("t_start_collecting_batch", 100, 0),
              flag("calculate_pruning_budget", true)},
             true),
      method("autosparse",
             {number("alpha", 0.5, 0.0), integer("alpha_reset_epoch", 90, 0), integer("autotune_epochs", 10, 0),
              flag("backward_sparsity", false), number("threshold_init", -5.0),
              choice("threshold_type", "channelwise", kThresholdTypes)},
             true),
      method("activation_pruning",
             {number("threshold", 0.3, 0.0, 1.0), integer("t_delta", 50, 1), integer("t_start_collecting_batch", 50, 0)},
             true),
      method("mdmm",
             {choice("constraint_type", "Equality", {"Equality", "LessThanOrEqual", "GreaterThanOrEqual"}),
              number("target_value", 0.0), choice("metric_type", "UnstructuredSparsity",
                                                  {"UnstructuredSparsity", "StructuredSparsity"}),
              number("target_sparsity", 0.9, 0.0, 1.0), integer("rf", 1, 1), number("epsilon", 1e-3, 0.0),
              number("scale", 10.0, 0.0), number("damping", 1.0, 0.0), flag("use_grad", false),
              choice("l0_mode", "coarse", {"coarse", "smooth"}), choice("scale_mode", "mean", {"mean", "sum"}),
              number("constraint_lr", 1e-3, 0.0)},
             true),
      method("fitcompress", {number("min_frac_bits", 2.0, 0.0)}, false),
  };
  return methods;
}

const MethodInfo* find_method(const std::string& name) {
  for (const auto& m : pruning_methods())
    if (m.name == name) return &m;
  return nullptr;
}

std::vector<std::string> implemented_names() {
  std::vector<std::string> names;
  for (const auto& m : pruning_methods())
    if (m.implemented) names.push_back(m.name);
  return names;
}

std::vector<std::string> method_names() {
  std::vector<std::string> names;
  for (const auto& m : pruning_methods()) names.push_back(m.name);
  return names;
}

PruningSpec default_spec(const std::string& name) {
  const MethodInfo* m = find_method(name);
  if (!m) throw ConfigError(fmt::format("unknown pruning method '{}', expected one of {}", name,
                                        fmt::join(method_names(), ", ")));
  PruningSpec spec;
  spec.method = name;
  for (const auto& p : m->params) spec.params[p.name] = p.fallback;
  return spec;
}

std::vector<int64_t> row_shape(const std::vector<int64_t>& shape) {
  std::vector<int64_t> rows(shape.size(), 1);
  rows[0] = shape[0];
  return rows;
}

std::vector<int64_t> axes_but_features(int64_t dims, LayerKind kind) {
  int64_t feature_axis = kind == LayerKind::Linear ? dims - 1 : 1;
  std::vector<int64_t> axes;
  for (int64_t d = 0; d < dims; ++d)
    if (d != feature_axis) axes.push_back(d);
  return axes;
}

std::shared_ptr<PruningMethod> make_method(const PruningSpec& spec, const std::vector<int64_t>& weight_shape,
                                           LayerKind kind) {
  const MethodInfo* m = find_method(spec.method);
  if (!m) throw ConfigError(fmt::format("unknown pruning method '{}'", spec.method));
  if (spec.method == "cs") return make_cs(spec, weight_shape);
  if (spec.method == "pdp") return make_pdp(spec, weight_shape, kind);
  if (spec.method == "wanda") return make_wanda(spec, weight_shape, kind);
  if (spec.method == "activation_pruning") return make_activation_pruning(spec, weight_shape, kind);
  if (spec.method == "dst") return make_dst(spec, weight_shape);
  if (spec.method == "autosparse") return make_autosparse(spec, weight_shape);
  if (spec.method == "mdmm") return make_mdmm(spec, weight_shape);
  throw ConfigError(fmt::format("pruning method '{}' is not implemented in this version of sparq (implemented: {}); "
                                "`sparq inspect` shows its plan",
                                spec.method, fmt::join(implemented_names(), ", ")));
}

}  // namespace sparq::prune
