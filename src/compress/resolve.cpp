#include "sparq/compress/resolve.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "sparq/error.h"
#include "sparq/models/dependency.h"
#include "sparq/yaml/reader.h"

namespace sparq {

namespace {

bool any_match(const std::vector<std::string>& patterns, const std::string& name) {
  for (const auto& p : patterns)
    if (std::regex_match(name, std::regex(p))) return true;
  return false;
}

bool contains(const std::vector<std::string>& list, const std::string& s) {
  return std::find(list.begin(), list.end(), s) != list.end();
}

/// Field-wise merge of a rule's quant setting into the one in force (later wins).
void merge(QuantSetting& into, const QuantSetting& s, Precedence precedence) {
  if (precedence == Precedence::FirstWins && (into.spec || into.enabled)) return;
  if (s.spec) into.spec = s.spec, into.k.reset(), into.i.reset(), into.f.reset();
  if (s.k) into.k = s.k;
  if (s.i) into.i = s.i;
  if (s.f) into.f = s.f;
  if (s.enabled) into.enabled = s.enabled;
}

/// Returns false when the setting is ignored (first wins and the target is set already).
bool merge(PruneSetting& into, const PruneSetting& s, Precedence precedence) {
  if (precedence == Precedence::FirstWins && (into.method || into.mask)) return false;
  if (s.method) into.method = s.method;
  if (s.active) into.active = s.active;
  if (s.mask) into.mask = s.mask;
  return true;
}

void merge(ModuleSetting& into, const ModuleSetting& s) {
  if (s.function) into.function = s.function;
  if (s.relu_multiplier) into.relu_multiplier = s.relu_multiplier;
  if (s.pruning_first) into.pruning_first = s.pruning_first;
  if (!s.fuse_with.empty()) into.fuse_with = s.fuse_with;
  if (s.fuse_following) into.fuse_following = true;
}

/// Checks the names a rule selects by against the graph: names_must_exist (PQuantML's
/// layer_specific, disable_pruning_for_layers) makes a missing one an error, targets_must_exist
/// (NNI) a warning; a rule that selects nothing is a warning too.
void check_names(const Rule& rule, const models::Graph& graph, std::vector<std::string>& warnings) {
  if (!rule.names_must_exist && !rule.targets_must_exist) return;
  std::vector<std::string> names, weight_layers;
  for (const auto& n : graph->nodes()) {
    names.push_back(n.name);
    if (n.info && n.info->prunable) weight_layers.push_back(n.name);
  }
  const auto& pool = rule.weights_only ? weight_layers : names;
  std::string at = rule.where.empty() ? "" : rule.where + ": ";
  for (const auto& name : rule.select.names) {
    if (contains(pool, name)) continue;
    if (!rule.names_must_exist) {
      warnings.push_back(fmt::format("{}{}: selects '{}' by name, which model '{}' does not have (ignored; did you "
                                     "mean '{}'?)",
                                     at, rule.origin, name, graph->name(), yaml::nearest(name, pool)));
      continue;
    }
    if (rule.weights_only)
      throw ConfigError(fmt::format("{}{} names '{}', which is not a weight layer (Linear, Conv1d, Conv2d) of model "
                                    "'{}'; did you mean '{}'?",
                                    at, rule.origin, name, graph->name(), yaml::nearest(name, pool)));
    throw ConfigError(fmt::format("{}{}: {} names no layer of model '{}', did you mean '{}'?", at, name, rule.origin,
                                  graph->name(), yaml::nearest(name, pool)));
  }
  if (rule.targets_must_exist &&
      std::none_of(graph->nodes().begin(), graph->nodes().end(),
                   [&](const models::Node& n) { return rule.select.matches(n.name, n.source_op); }))
    warnings.push_back(fmt::format("{}{} selects no module of model '{}'", at, rule.origin, graph->name()));
}

}  // namespace

bool Selector::matches(const std::string& name, const std::string& op) const {
  bool by_name = (names.empty() && name_regexes.empty()) || contains(names, name) || any_match(name_regexes, name);
  bool included = by_name && (op_types.empty() || contains(op_types, op));
  return included && !contains(exclude_names, name) && !contains(exclude_op_types, op) &&
         !any_match(exclude_name_regexes, name);
}

const ResolvedModule* Resolution::find(const std::string& name) const {
  for (const auto& m : modules)
    if (m.name == name) return &m;
  return nullptr;
}

Resolution resolve(const Plan& plan, const models::Graph& graph) {
  Resolution r;
  r.dialect = plan.dialect;
  for (const auto& rule : plan.rules) check_names(rule, graph, r.warnings);
  std::set<std::string> modifier_nodes;  // nodes a modifier's parameters live on: they become PQ layers
  for (const auto& m : plan.modifiers) {
    r.modifiers.push_back(match_modifier(m, graph));
    if (m.prunes())
      for (const auto& [node, target] : r.modifiers.back().params) modifier_nodes.insert(node);
  }
  for (const auto& node : graph->nodes()) {
    ResolvedModule m;
    m.name = node.name;
    m.op = node.source_op;
    std::map<std::string, QuantSetting> quant;
    std::map<std::string, PruneSetting> prune;
    const auto& targets = node.info ? node.info->targets : std::vector<std::string>{};
    if (modifier_nodes.count(node.name)) m.selected = true;
    for (const auto& rule : plan.rules) {
      if (!rule.select.matches(node.name, node.source_op)) continue;
      m.selected = true;
      if (!rule.where.empty() && !rule.targets.empty()) m.where = rule.where;
      merge(m.module, rule.module);
      std::string at = rule.where.empty() ? "" : rule.where + ": ";
      for (const auto& [target, setting] : rule.targets) {
        if (!contains(targets, target)) {
          if (!rule.targets_must_exist) continue;  // a rule for every op sets what each op has
          if (targets.empty() || !contains(targets, "weight"))
            throw ConfigError(fmt::format("{}{} selects '{}', a {}, which has no parameters to prune (pruning "
                                          "targets: Linear, Conv1d/2d, BatchNorm1d/2d); exclude it or narrow the "
                                          "selection",
                                          at, rule.origin, node.name, node.source_op));
          throw ConfigError(fmt::format("{}{}: target '{}' does not exist on '{}' ({}); its targets: {}", at,
                                        rule.origin, target, node.name, node.source_op, fmt::join(targets, ", ")));
        }
        if (setting.quant) merge(quant[target], *setting.quant, plan.precedence);
        if (setting.prune && !merge(prune[target], *setting.prune, plan.precedence))
          r.warnings.push_back(fmt::format("{}{} sets {}.{} again: an earlier rule configured it, and in this "
                                           "dialect the first one wins, so this one is ignored there",
                                           at, rule.origin, node.name, target));
      }
    }
    for (const auto& target : targets) {
      ResolvedTarget t;
      auto q = quant.find(target);
      if (q != quant.end() && q->second.spec && q->second.enabled.value_or(true)) {
        quant::QuantizerSpec spec = *q->second.spec;
        if (auto fixed = quant::fixed_part(spec)) {
          if (q->second.k) fixed->k = *q->second.k;
          if (q->second.i) fixed->i = *q->second.i;
          if (q->second.f) fixed->f = *q->second.f;
        }
        t.quantizer = spec;
      }
      auto p = prune.find(target);
      if (p != prune.end() && p->second.method) {
        t.pruning = p->second.method;
        t.pruning_active = p->second.active.value_or(true);
      }
      if (p != prune.end() && p->second.mask) t.mask = p->second.mask;
      m.targets[target] = t;
    }
    r.modules.push_back(std::move(m));
  }
  if (plan.auto_dependency_groups) set_dependency_groups(r, graph);
  return r;
}

void set_dependency_groups(Resolution& r, const models::Graph& graph) {
  for (const auto& set : models::channel_dependency_sets(graph)) {
    const std::string id = "auto:" + set.front();
    for (auto& m : r.modules) {
      if (std::find(set.begin(), set.end(), m.name) == set.end()) continue;
      auto it = m.targets.find("weight");
      if (it == m.targets.end() || !it->second.mask || !it->second.mask->active()) continue;
      it->second.mask->dependency_group = id;  // overrides a configured id, as NNI's detection does
    }
  }
}

nlohmann::json quantizer_json(const quant::QuantizerSpec& spec) {
  if (auto n = std::get_if<quant::IntegerSpec>(&spec))
    return {{"kind", "integer"},         {"bits", n->bits},
            {"signed", n->is_signed},    {"symmetric", n->symmetric},
            {"reduce_range", n->reduce_range}, {"qmin", n->qmin()},
            {"qmax", n->qmax()},         {"channel_dim", n->channel_dim},
            {"method", quant::to_string(n->method)}, {"averaging_constant", n->averaging_constant}};
  const auto& s = *quant::fixed_part(spec);
  nlohmann::json j = {{"kind", quant::kind_of(spec)},
                      {"bits", s.k + s.i + s.f},
                      {"signed", s.k > 0},
                      {"k", s.k},
                      {"i", s.i},
                      {"f", s.f},
                      {"type", s.format().type_name()},
                      {"round", quant::to_string(s.round)},
                      {"overflow", quant::to_string(s.overflow)},
                      {"granularity", quant::to_string(s.granularity)},
                      {"dynamic", s.dynamic}};
  if (auto h = std::get_if<quant::HgqSpec>(&spec)) j["gamma"] = h->gamma;
  return j;
}

namespace {

nlohmann::json param_json(const ParamValue& v) {
  if (std::holds_alternative<std::monostate>(v)) return nullptr;
  if (auto b = std::get_if<bool>(&v)) return *b;
  if (auto i = std::get_if<int64_t>(&v)) return *i;
  if (auto d = std::get_if<double>(&v)) return *d;
  return std::get<std::string>(v);
}

nlohmann::json pruning_json(const PruningSpec& spec, bool active) {
  nlohmann::json params = nlohmann::json::object();
  for (const auto& [k, v] : spec.params) params[k] = param_json(v);
  nlohmann::json ratio = nullptr;
  if (spec.params.count("sparsity")) ratio = param_json(spec.params.at("sparsity"));
  else if (spec.params.count("target_sparsity")) ratio = param_json(spec.params.at("target_sparsity"));
  bool structured = spec.params.count("structured_pruning") && spec.flag("structured_pruning");
  bool nm = spec.params.count("N") && !spec.is_null("N");
  return {{"method", spec.method},
          {"active", active},
          {"sparse_ratio", ratio},
          {"granularity", structured ? "channel" : nm ? "n:m" : "element"},
          {"params", params}};
}

}  // namespace

std::string to_string(const MaskGranularity& g) {
  using Kind = MaskGranularity::Kind;
  switch (g.kind) {
    case Kind::Default: return "default";
    case Kind::Element: return "element";
    case Kind::OutChannel: return "out_channel";
    case Kind::InChannel: return "in_channel";
    case Kind::PerChannel: return "per_channel";
    case Kind::Block: return fmt::format("[{}]", fmt::join(g.kernel, ", "));
  }
  return "?";
}

nlohmann::json mask_json(const MaskSetting& m) {
  auto opt = [](const auto& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
  nlohmann::json j = {{"sparse_ratio", opt(m.sparse_ratio)},
                      {"sparse_threshold", opt(m.sparse_threshold)},
                      {"max_sparse_ratio", opt(m.max_sparse_ratio)},
                      {"min_sparse_ratio", opt(m.min_sparse_ratio)},
                      {"global_group_id", opt(m.global_group)},
                      {"dependency_group_id", opt(m.dependency_group)},
                      {"internal_metric_block", opt(m.internal_metric_block)},
                      {"granularity", to_string(m.granularity)},
                      {"apply_method", m.apply_method},
                      {"align", nullptr}};
  if (m.align)
    j["align"] = {{"module_name", m.align->module.empty() ? nlohmann::json(nullptr) : nlohmann::json(m.align->module)},
                  {"target_name", m.align->target},
                  {"dims", m.align->dims}};
  return j;
}

nlohmann::json resolution_json(const Resolution& r, const Plan& plan) {
  nlohmann::json modules = nlohmann::json::object();
  for (const auto& m : r.modules) {
    nlohmann::json targets = nlohmann::json::object();
    for (const auto& [name, t] : m.targets) {
      nlohmann::json pruning = t.pruning ? pruning_json(*t.pruning, t.pruning_active) : nlohmann::json(nullptr);
      if (t.mask) {
        auto settings = mask_json(*t.mask);
        pruning = {{"method", plan.pruner ? nlohmann::json(plan.pruner->method) : nlohmann::json(nullptr)},
                   {"active", t.mask->active() || t.mask->align.has_value()},
                   {"sparse_ratio", settings["sparse_ratio"]},
                   {"granularity", settings["granularity"]},
                   {"settings", settings}};
      }
      targets[name] = {{"quantizer", t.quantizer ? quantizer_json(*t.quantizer) : nlohmann::json(nullptr)},
                       {"pruning", pruning}};
    }
    nlohmann::json module = {{"op", m.op}, {"selected", m.selected}, {"targets", targets}};
    if (m.module.function) module["function"] = *m.module.function;
    if (m.module.relu_multiplier) module["relu_multiplier"] = *m.module.relu_multiplier;
    if (m.module.pruning_first) module["pruning_first"] = *m.module.pruning_first;
    modules[m.name] = module;
  }
  nlohmann::json stages = nlohmann::json::array();
  if (plan.schedule) {
    const auto& s = *plan.schedule;
    if (s.pretraining_epochs) stages.push_back({{"stage", "pretraining"}, {"epochs", s.pretraining_epochs}});
    stages.push_back({{"stage", "training"}, {"epochs", s.epochs}, {"rounds", s.rounds},
                      {"rewind", to_string(s.rewind)}, {"save_weights_epoch", s.save_weights_epoch}});
    if (s.fine_tuning_epochs) stages.push_back({{"stage", "fine-tuning"}, {"epochs", s.fine_tuning_epochs}});
  }
  nlohmann::json events = nlohmann::json::array();
  for (const auto& e : plan.events) {
    nlohmann::json j = {{"kind", to_string(e.kind)}, {"value", e.value}};
    if (e.at_step) j["at_step"] = *e.at_step;
    else j["at_epoch"] = e.at_epoch;
    if (e.kind == Event::Kind::HgqBeta) j["interp"] = to_string(e.interp);
    if (!e.groups.empty()) j["groups"] = e.groups;
    events.push_back(j);
  }
  auto class_json = [](const std::optional<PruningSpec>& spec) -> nlohmann::json {
    if (!spec) return nullptr;
    nlohmann::json params = nlohmann::json::object();
    for (const auto& [k, v] : spec->params) params[k] = param_json(v);
    return {{"type", spec->method}, {"params", params}};
  };
  return {{"dialect", r.dialect.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.dialect)},
          {"pruner", class_json(plan.pruner)},
          {"quantizer", class_json(plan.quantizer)},
          {"warnings", r.warnings},
          {"modules", modules},
          {"schedule", {{"stages", stages}, {"events", events}}}};
}

}  // namespace sparq
