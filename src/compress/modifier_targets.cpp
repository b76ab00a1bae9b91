// match_modifier: a modifier's `params` (exact names, "re:" patterns matched from the start of
// the name, __ALL__, __ALL_PRUNABLE__) and `layers` on a graph's parameters (spec sparseml §3.5).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <regex>

#include "sparq/compress/resolve.h"
#include "sparq/error.h"
#include "sparq/yaml/reader.h"

namespace sparq {

namespace {

struct Candidate {
  std::string full, node, target;
  bool prunable;   ///< the weight of a Linear / Conv layer
  bool maskable;   ///< a parameter a PQ layer holds (weight layers, batch norm)
};

std::vector<Candidate> candidates(const models::Graph& graph) {
  std::vector<Candidate> out;
  for (const auto& n : graph->nodes()) {
    if (n.module.is_empty()) continue;
    for (const auto& p : n.module.ptr()->named_parameters(/*recurse=*/false)) {
      bool weight_layer = n.info && n.info->prunable;
      bool pq = n.info && std::find(n.info->targets.begin(), n.info->targets.end(), p.key()) != n.info->targets.end();
      out.push_back({n.name + "." + p.key(), n.name, p.key(), weight_layer && p.key() == "weight", pq});
    }
  }
  return out;
}

/// Whether `entry` (an exact name or "re:pattern") selects `name`.
bool selects(const std::string& entry, const std::regex* re, const std::string& name) {
  if (!re) return entry == name;
  std::smatch m;
  return std::regex_search(name, m, *re, std::regex_constants::match_continuous);  // Python's re.match
}

}  // namespace

ModifierTargets match_modifier(const Modifier& mod, const models::Graph& graph) {
  ModifierTargets out;
  const bool pruning = mod.prunes();
  const auto all = candidates(graph);
  auto fail = [&](const std::string& message) { throw ConfigError(fmt::format("{}: !{}: {}", mod.where, mod.tag, message)); };

  if (mod.type == "LayerPruningModifier") {
    std::vector<std::string> names, weight_layers;
    for (const auto& n : graph->nodes()) {
      names.push_back(n.name);
      if (n.info && n.info->prunable) weight_layers.push_back(n.name);
    }
    for (const auto& l : mod.layers) {
      if (l == "__ALL__" || l == "__ALL_PRUNABLE__") {
        out.layers = weight_layers;
        continue;
      }
      if (std::find(names.begin(), names.end(), l) == names.end())
        fail(fmt::format("layers: '{}' is not a module of model '{}' (did you mean '{}'?)", l, graph->name(),
                         yaml::nearest(l, names)));
      out.layers.push_back(l);
    }
    for (const auto& l : out.layers) {
      const auto& node = graph->node(l);
      auto in_shape = node.inputs.empty() || node.inputs[0] < 0 ? graph->input_shape() : graph->nodes()[node.inputs[0]].out_shape;
      if (in_shape != node.out_shape)
        fail(fmt::format("layers: '{}' changes the shape [{}] -> [{}], so it cannot be skipped (an identity needs equal "
                         "input and output shapes)",
                         l, fmt::join(in_shape, ", "), fmt::join(node.out_shape, ", ")));
    }
    return out;
  }
  const bool uses_params = pruning || mod.type == "TrainableParamsModifier" || mod.type == "SetParamModifier" ||
                           mod.type == "GradualParamModifier";
  if (mod.type == "QuantizationModifier") {
    for (const auto& s : mod.submodules)
      if (std::none_of(graph->nodes().begin(), graph->nodes().end(), [&](const models::Node& n) {
            return n.name == s || n.name.rfind(s + ".", 0) == 0;
          }))
        fail(fmt::format("submodules: '{}' is not a module of model '{}'", s, graph->name()));
    return out;
  }

  if (!uses_params) return out;
  // (selection, sparsity) pairs: params with the modifier's final sparsity, or the mapping form
  std::vector<std::pair<ParamSelection, double>> selections;
  if (!mod.final_sparsity_map.empty()) {
    for (const auto& [s, sel] : mod.final_sparsity_map) selections.emplace_back(sel, s);
  } else {
    selections.emplace_back(mod.params, mod.final_sparsity);
  }
  bool any_selection = false;
  for (const auto& [sel, sparsity] : selections) {
    if (sel.token == ParamSelection::Token::None && sel.names.empty()) continue;
    any_selection = true;
    auto add = [&, sparsity = sparsity](const Candidate& c) {
      for (const auto& [node, target] : out.params)
        if (node == c.node && target == c.target) return;  // matched twice: the first sparsity stays
      if (pruning && !c.maskable)
        fail(fmt::format("params: '{}' cannot be pruned: it is not a parameter of a Linear, Conv or BatchNorm layer",
                         c.full));
      out.params.emplace_back(c.node, c.target);
      out.final_sparsity.push_back(sparsity);
    };
    if (sel.token != ParamSelection::Token::None) {
      // __ALL_PRUNABLE__, and __ALL__ for pruning (the prunable weights, as the issue decides): the
      // weights of Linear and Conv layers; __ALL__ elsewhere: every parameter
      bool prunable_only = pruning || sel.token == ParamSelection::Token::AllPrunable;
      for (const auto& c : all)
        if (!prunable_only || c.prunable) add(c);
      continue;
    }
    for (const auto& entry : sel.names) {
      std::optional<std::regex> re;
      if (entry.rfind("re:", 0) == 0) {
        try {
          re.emplace(entry.substr(3));
        } catch (const std::regex_error& e) {
          fail(fmt::format("params: regex '{}' does not compile ({}); sparq uses ECMAScript regexes", entry.substr(3),
                           e.what()));
        }
      }
      bool matched = false;
      for (const auto& c : all)
        if (selects(entry, re ? &*re : nullptr, c.full)) matched = true, add(c);
      if (!matched && (pruning || sel.strict)) {
        std::vector<std::string> names;
        for (const auto& c : all) names.push_back(c.full);
        fail(fmt::format("params: '{}' matches no parameter of model '{}'{}", entry, graph->name(),
                         re ? "" : fmt::format(" (did you mean '{}'?)", yaml::nearest(entry, names))));
      }
    }
  }
  if (!any_selection) fail("params: no parameters given");
  if (out.params.empty()) fail(fmt::format("params: could not find any parameters matching them in model '{}'", graph->name()));
  return out;
}

}  // namespace sparq
