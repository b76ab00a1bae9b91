#include "sparq/prune/methods.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>

#include "prune/methods_impl.h"
#include "sparq/error.h"

namespace sparq::prune {

ParamInfo flag(std::string name, bool fallback) { return {std::move(name), ParamKind::Bool, fallback, -1e308, 1e308, {}}; }
ParamInfo integer(std::string name, int64_t fallback, double min, double max) {
  return {std::move(name), ParamKind::Int, fallback, min, max, {}};
}
ParamInfo number(std::string name, double fallback, double min, double max) {
  return {std::move(name), ParamKind::Float, fallback, min, max, {}};
}
ParamInfo choice(std::string name, std::string fallback, std::vector<std::string> choices) {
  return {std::move(name), ParamKind::Choice, std::move(fallback), -1e308, 1e308, std::move(choices)};
}
ParamInfo optional_int(std::string name, double min) {
  return {std::move(name), ParamKind::OptionalInt, std::monostate{}, min, 1e308, {}};
}

namespace {
std::map<std::string, MethodInfo>& registry() {
  static std::map<std::string, MethodInfo> methods;
  return methods;
}
}  // namespace

bool register_method(MethodInfo info) {
  info.params.insert(info.params.begin(), number("threshold_decay", 0.0, 0.0));
  std::string name = info.name;
  registry()[name] = std::move(info);
  return true;
}

const char* to_string(Stage stage) {
  switch (stage) {
    case Stage::Pretraining: return "pretraining";
    case Stage::Training: return "training";
    case Stage::FineTuning: return "fine-tuning";
  }
  return "?";
}

std::vector<const MethodInfo*> pruning_methods() {
  std::vector<const MethodInfo*> out;
  for (const auto& [name, m] : registry()) out.push_back(&m);
  std::stable_sort(out.begin(), out.end(), [](const MethodInfo* a, const MethodInfo* b) { return a->order < b->order; });
  return out;
}

const MethodInfo* find_method(const std::string& name) {
  auto it = registry().find(name);
  return it == registry().end() ? nullptr : &it->second;
}

std::vector<std::string> implemented_names() {
  std::vector<std::string> names;
  for (const auto* m : pruning_methods())
    if (m->implemented()) names.push_back(m->name);
  return names;
}

std::vector<std::string> method_names() {
  std::vector<std::string> names;
  for (const auto* m : pruning_methods()) names.push_back(m->name);
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

int64_t epoch_after_collection(const PruningSpec& spec, int64_t steps) {
  steps = std::max<int64_t>(steps, 1);
  return spec.integer("t_start_collecting_batch") + (spec.integer("t_delta") + steps - 1) / steps;
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
  if (m->implemented()) return m->factory(spec, weight_shape, kind);
  throw ConfigError(fmt::format("pruning method '{}' is not implemented in this version of sparq (implemented: {}); "
                                "`sparq inspect` shows its plan",
                                spec.method, fmt::join(implemented_names(), ", ")));
}

}  // namespace sparq::prune
