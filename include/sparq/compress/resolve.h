// Resolution: a Plan's rules applied to a Graph give one table, module x target -> settings,
// with the dialect's precedence. compress() builds the PQ layers from it; `sparq inspect --json`
// prints it.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "sparq/models/graph.h"
#include "sparq/plan.h"

namespace sparq {

struct ResolvedTarget {
  std::optional<quant::QuantizerSpec> quantizer;  ///< unset: the target stays in float
  std::optional<PruningSpec> pruning;             ///< weights: the method object of the layer
  bool pruning_active = false;                    ///< false: the method runs but the weight is not pruned
  std::optional<MaskSetting> mask;                ///< the settings of the plan's model-wide pruner
};

struct ResolvedModule {
  std::string name, op;  ///< op: the source op (PyTorch name)
  bool selected = false; ///< some rule selects it: it becomes a PQ layer when its op has one
  std::map<std::string, ResolvedTarget> targets;  ///< every target the op has
  ModuleSetting module;
  std::string where;     ///< config position of the last rule that set a target, for errors
};

/// What one of the plan's modifiers acts on in the graph (spec sparseml §3.5): its parameters as
/// (node, target) pairs in graph order, each one's final sparsity for pruning modifiers, or the
/// nodes of LayerPruningModifier.
struct ModifierTargets {
  std::vector<std::pair<std::string, std::string>> params;
  std::vector<double> final_sparsity;
  std::vector<std::string> layers;
};

struct Resolution {
  std::string dialect;
  std::vector<ResolvedModule> modules;  ///< every node of the graph, in order
  std::vector<ModifierTargets> modifiers;  ///< one per plan modifier, in the plan's order
  /// Settings that do not take effect: a later rule's target that an earlier rule set (first
  /// wins), a rule that selects nothing, a name the model lacks.
  std::vector<std::string> warnings;
  const ResolvedModule* find(const std::string& name) const;
};

/// Applies the plan's rules to the graph's nodes. Throws ConfigError where a rule names a module
/// the graph lacks (with the nearest name) or a setting does not fit its target.
Resolution resolve(const Plan& plan, const models::Graph& graph);

/// The targets of one modifier. Throws ConfigError (at the modifier's position) for a name or
/// pattern that matches no parameter (strictly for pruning modifiers, per params_strict
/// otherwise), a regex that does not compile, and a pruned parameter that no PQ layer can mask.
ModifierTargets match_modifier(const Modifier& modifier, const models::Graph& graph);

/// Gives the weight targets of every channel-dependency set of the graph (residual adds) one
/// dependency group ("auto:<first layer>"); resolve() calls it for plans that ask for it.
void set_dependency_groups(Resolution& resolution, const models::Graph& graph);

/// The resolution and the plan's schedule as JSON (docs/inspect-json.md).
nlohmann::json resolution_json(const Resolution& resolution, const Plan& plan);
nlohmann::json quantizer_json(const quant::QuantizerSpec& spec);
/// A target's mask settings as JSON (docs/inspect-json.md), the NNI keys.
nlohmann::json mask_json(const MaskSetting& mask);
/// "default", "element", "out_channel", "in_channel", "per_channel", "[2, 2]".
std::string to_string(const MaskGranularity& g);

}  // namespace sparq
