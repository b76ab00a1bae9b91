// The PQuantML config dialect (seeds 000/001, spec pquantml-*.md §1): parsed into a Plan.
// Today: quantization_parameters; the other sections come with the staged trainer and pruning.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>

#include "sparq/plan.h"

namespace sparq::config {

/// Reads a PQuantML config mapping (`file` names it in errors).
Plan parse_pquant(const std::string& file, const YAML::Node& root);
/// Reads a PQuantML config file (.yaml/.yml).
Plan load_pquant(const std::string& path);

/// Prints "sparq: warning: <message>" on stderr (config keys accepted but without effect).
void warn(const std::string& message);

}  // namespace sparq::config
