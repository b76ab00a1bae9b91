// Config dialects: each registers how to recognise its documents and how to read them into a
// Plan. load_plan() picks the dialect from the document's shape.
#pragma once

#include <yaml-cpp/yaml.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "sparq/plan.h"
#include "sparq/yaml/reader.h"

namespace sparq::config {

/// What the caller adds to a config: SparseML recipe variables (`--recipe-var name=value`).
struct LoadOptions {
  std::map<std::string, std::string> recipe_variables;
};

struct Dialect {
  std::string name;         ///< "pquantml", "nni", "sparseml"
  std::string description;  ///< "PQuantML config", "NNI config list", ...
  /// Whether a document has this dialect's shape.
  std::function<bool(const YAML::Node& root)> detect;
  /// Reads it; empty while the dialect is recognised but not supported yet.
  std::function<Plan(const std::string& file, const YAML::Node& root, const LoadOptions& options)> parse;
};

/// Registers a dialect (called once, by the file that defines it); returns true.
bool register_dialect(Dialect dialect);
const std::vector<Dialect>& dialects();

/// The Plan of a config document in any registered dialect. Throws ConfigError naming the
/// dialect it recognised when that dialect cannot be read yet, or listing the shapes it knows.
Plan load_plan(const std::string& file, const YAML::Node& root, const LoadOptions& options = {});
/// load_plan of a config file (.yaml, .yml, .json, or a SparseML .md recipe).
Plan load_plan(const std::string& path, const LoadOptions& options = {});
/// A config file read as YAML (JSON is YAML; a .md file's YAML front matter, its line numbers
/// kept); throws ConfigError for other file types and a .md file without front matter.
yaml::YamlDoc load_config_file(const std::string& path);

}  // namespace sparq::config
