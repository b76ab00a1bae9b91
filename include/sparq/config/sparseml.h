// SparseML recipes (spec sparseml §1-2): the grammar (modifier lists under any *modifiers key,
// single tagged modifiers, staged recipes), variables and eval() expressions with caller
// overrides, and every modifier's fields, read into Plan::modifiers (plus the rules that give
// QuantizationModifier's layers their integer quantizers). Errors are "file:line:col: Tag.key: why".
#pragma once

#include <yaml-cpp/yaml.h>

#include <map>
#include <string>
#include <vector>

#include "sparq/plan.h"

namespace sparq::config {

/// Recipe variables set by the caller (`--recipe-var name=value`), applied before eval().
using RecipeVariables = std::map<std::string, std::string>;

/// The Plan of a recipe document. Throws ConfigError.
Plan read_recipe(const std::string& file, const YAML::Node& root, const RecipeVariables& variables = {});

/// "name=value" (also "name:value", and several separated by commas) into `into`; throws
/// ConfigError for a malformed item.
void parse_recipe_variable(const std::string& text, RecipeVariables& into);

/// The modifier types sparq runs, sorted (legacy aliases included).
std::vector<std::string> recipe_modifier_types();

}  // namespace sparq::config
