// The pruning methods sparq knows, and the parameters of each: name, type, default, allowed range
// or values. Config dialects validate against this table; the method objects read their
// parameters from the resulting PruningSpec. Defaults are PQuantML's code defaults (spec §1.4).
#pragma once

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

struct MethodInfo {
  std::string name;
  std::vector<ParamInfo> params;  ///< including the shared `threshold_decay`
  bool implemented;               ///< false: parsed and shown, but `sparq run` refuses it
};

/// Every method, in the order PQuantML documents them.
const std::vector<MethodInfo>& pruning_methods();
/// The method called `name`, or nullptr.
const MethodInfo* find_method(const std::string& name);
std::vector<std::string> method_names();
/// The methods `sparq run` can train with.
std::vector<std::string> implemented_names();
/// A spec of `method` with every parameter at its default.
PruningSpec default_spec(const std::string& method);

/// The kind of weight layer a method object is built for.
enum class LayerKind { Linear, Conv };

/// A method object for one weight layer of shape `weight_shape`. Throws ConfigError for a method
/// that is not implemented yet.
std::shared_ptr<PruningMethod> make_method(const PruningSpec& spec, const std::vector<int64_t>& weight_shape,
                                           LayerKind kind);

}  // namespace sparq::prune
