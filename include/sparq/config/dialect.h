// Config dialects: each registers how to recognise its documents and how to read them into a
// Plan. load_plan() picks the dialect from the document's shape.
#pragma once

#include <yaml-cpp/yaml.h>

#include <functional>
#include <string>
#include <vector>

#include "sparq/plan.h"
#include "sparq/yaml/reader.h"

namespace sparq::config {

struct Dialect {
  std::string name;         ///< "pquantml", "nni", "sparseml"
  std::string description;  ///< "PQuantML config", "NNI config list", ...
  /// Whether a document has this dialect's shape.
  std::function<bool(const YAML::Node& root)> detect;
  /// Reads it; empty while the dialect is recognised but not supported yet.
  std::function<Plan(const std::string& file, const YAML::Node& root)> parse;
};

/// Registers a dialect (called once, by the file that defines it); returns true.
bool register_dialect(Dialect dialect);
const std::vector<Dialect>& dialects();

/// The Plan of a config document in any registered dialect. Throws ConfigError naming the
/// dialect it recognised when that dialect cannot be read yet, or listing the shapes it knows.
Plan load_plan(const std::string& file, const YAML::Node& root);
/// load_plan of a config file (.yaml, .yml or .json).
Plan load_plan(const std::string& path);
/// A config file read as YAML (JSON is YAML); throws ConfigError for other file types.
yaml::YamlDoc load_config_file(const std::string& path);

}  // namespace sparq::config
