// The PQuantML config dialect (seeds 000/001, spec pquantml-*.md §1): all five sections parsed into
// a Plan; a Plan written back in the dialect; PQuantML's packaged configs per pruning method.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

#include "sparq/plan.h"

namespace sparq::config {

/// Reads a PQuantML config mapping (`file` names it in errors).
Plan parse_pquant(const std::string& file, const YAML::Node& root);
/// Reads a PQuantML config file (.yaml/.yml).
Plan load_pquant(const std::string& path);

/// The Plan as a PQuantML config with every field written out; parse_pquant reads it back to an
/// equal Plan.
std::string write_pquant(const Plan& plan);

/// PQuantML's packaged config for `method` (spec §1.7): cs, dst, pdp, wanda, autosparse,
/// activation_pruning (also "ap"), mdmm, fitcompress. Throws ConfigError for other names.
Plan packaged_config(const std::string& method);
std::vector<std::string> packaged_config_names();

/// Prints "sparq: warning: <message>" on stderr (config keys accepted but without effect).
void warn(const std::string& message);

}  // namespace sparq::config
