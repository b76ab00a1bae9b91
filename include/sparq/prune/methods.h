// The registry of pruning methods: each method's file registers its name, its parameters (type,
// default, allowed range or values) and a factory. Config dialects validate against it; the
// method objects read their parameters from the resulting PruningSpec. Defaults are PQuantML's
// code defaults (spec §1.4). Adding a method is one file in src/prune/ and its test.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sparq/plan.h"
#include "sparq/prune/pruning_method.h"

namespace sparq::prune {

enum class ParamKind { Bool, Int, Float, Choice, OptionalInt };

struct ParamInfo {
  std::string name;
  ParamKind kind;
  ParamValue fallback;
  double min = -1e308, max = 1e308;  ///< Int, Float, OptionalInt (inclusive)
  std::vector<std::string> choices;  ///< Choice
};

ParamInfo flag(std::string name, bool fallback);
ParamInfo integer(std::string name, int64_t fallback, double min, double max = 1e308);
ParamInfo number(std::string name, double fallback, double min = -1e308, double max = 1e308);
ParamInfo choice(std::string name, std::string fallback, std::vector<std::string> choices);
ParamInfo optional_int(std::string name, double min);

/// The kind of weight layer a method object is built for.
enum class LayerKind { Linear, Conv };

using MethodFactory =
    std::function<std::shared_ptr<PruningMethod>(const PruningSpec& spec, const std::vector<int64_t>& weight_shape,
                                                 LayerKind kind)>;

struct MethodInfo {
  std::string name;
  int order = 0;                  ///< position in PQuantML's documentation (listings follow it)
  std::vector<ParamInfo> params;  ///< including the shared `threshold_decay`
  MethodFactory factory;          ///< empty: parsed and shown, but `sparq run` refuses it
  /// The training-stage epoch (1-based) at whose end the method first prunes, for `steps` batches
  /// per epoch; empty: the first (the method acts from the start of the training stage).
  std::function<int64_t(const PruningSpec& spec, int64_t steps)> first_pruning_epoch;
  bool implemented() const { return static_cast<bool>(factory); }
};

/// Registers a method (called once, by its file); adds the shared `threshold_decay` parameter.
bool register_method(MethodInfo info);
/// Every method, in the order PQuantML documents them.
std::vector<const MethodInfo*> pruning_methods();
/// The method called `name`, or nullptr.
const MethodInfo* find_method(const std::string& name);
std::vector<std::string> method_names();
/// The methods `sparq run` can train with.
std::vector<std::string> implemented_names();
/// A spec of `method` with every parameter at its default.
PruningSpec default_spec(const std::string& method);

/// A method object for one weight layer of shape `weight_shape`. Throws ConfigError for a method
/// that is not implemented yet.
std::shared_ptr<PruningMethod> make_method(const PruningSpec& spec, const std::vector<int64_t>& weight_shape,
                                           LayerKind kind);

}  // namespace sparq::prune
