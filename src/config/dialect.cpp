// The dialect registry and load_plan's detection; SparseML's detector (its reader is
// config/sparseml/recipe.cpp; NNI: config/nni.cpp; PQuantML: config/pquant_lower.cpp).
#include "sparq/config/dialect.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "sparq/config/sparseml.h"
#include "sparq/error.h"
#include "sparq/io/files.h"
#include "sparq/yaml/reader.h"

namespace sparq::config {

namespace {

std::vector<Dialect>& table() {
  static std::vector<Dialect> dialects;
  return dialects;
}

/// SparseML: a mapping with version/modifiers (or any *modifiers key, or stages), or a tagged
/// modifier, or a list of tagged modifiers.
bool is_sparseml(const YAML::Node& root) {
  if (yaml::has_tag(root)) return true;
  if (root.IsSequence()) return root.size() > 0 && yaml::has_tag(root[0]);
  if (!root.IsMap()) return false;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string key = it->first.Scalar();
    if (key == "version" || key.find("modifiers") != std::string::npos || yaml::has_tag(it->second)) return true;
    if (it->second.IsSequence() && it->second.size() > 0 && yaml::has_tag(it->second[0]))
      return true;  // a modifier list under the wrong key: the recipe reader says so
    if (it->second.IsMap())  // a staged recipe: stage_name: {..._modifiers: [...]}
      for (auto inner = it->second.begin(); inner != it->second.end(); ++inner)
        if (inner->first.Scalar().find("modifiers") != std::string::npos) return true;
  }
  return false;
}

const bool registered = register_dialect({"sparseml", "SparseML recipe", is_sparseml,
                                          [](const std::string& file, const YAML::Node& root, const LoadOptions& o) {
                                            return read_recipe(file, root, o.recipe_variables);
                                          }});

}  // namespace

bool register_dialect(Dialect dialect) {
  table().push_back(std::move(dialect));
  return true;
}

const std::vector<Dialect>& dialects() { return table(); }

Plan load_plan(const std::string& file, const YAML::Node& root, const LoadOptions& options) {
  for (const auto& d : dialects()) {
    if (!d.detect(root)) continue;
    if (!options.recipe_variables.empty() && d.name != "sparseml")
      throw ConfigError(fmt::format("{}: --recipe-var {}: recipe variables belong to SparseML recipes, and this is a {}",
                                    file, options.recipe_variables.begin()->first, d.description));
    try {
      return d.parse(file, root, options);
    } catch (const YAML::Exception& e) {  // a node of an unexpected kind that a reader did not check
      std::string at = e.mark.is_null() ? file : fmt::format("{}:{}:{}", file, e.mark.line + 1, e.mark.column + 1);
      throw ConfigError(fmt::format("{}: a value of an unexpected kind in this {} ({})", at, d.description, e.msg));
    }
  }
  std::vector<std::string> known;
  for (const auto& d : dialects()) known.push_back(d.description);
  if (!root.IsDefined() || root.IsNull())
    throw ConfigError(fmt::format("{}: the config is empty; expected one of: {}", file, fmt::join(known, ", ")));
  // A mapping of unknown sections: PQuantML's reader says what it expected (and the nearest
  // section name).
  if (root.IsMap())
    for (const auto& d : dialects())
      if (d.name == "pquantml") return d.parse(file, root, options);
  throw ConfigError(fmt::format("{}: not a config sparq knows; expected one of: {}", yaml::where(file, root),
                                fmt::join(known, ", ")));
}

/// A markdown recipe's YAML front matter (the first block between lines "---" or "+++" and
/// "---"), with every other line blanked so positions stay those of the file.
yaml::YamlDoc front_matter(const std::string& path) {
  std::ifstream in = io::open_file(path);
  std::string line, text;
  int state = 0;  // 0 before, 1 inside, 2 after
  while (std::getline(in, line)) {
    std::string bare = line;
    while (!bare.empty() && (bare.back() == '\r' || bare.back() == ' ')) bare.pop_back();
    if (state == 0 && (bare == "---" || bare == "+++")) state = 1, line.clear();
    else if (state == 1 && (bare == "---" || bare == "+++")) state = 2, line.clear();
    else if (state != 1) line.clear();
    text += line + "\n";
  }
  if (state != 2)
    throw ConfigError(fmt::format("{}: a markdown recipe needs YAML front matter: the recipe between a line '---' and "
                                  "the next '---'",
                                  path));
  return yaml::YamlDoc::load_string(text, path);
}

yaml::YamlDoc load_config_file(const std::string& path) {
  auto ext = std::filesystem::path(path).extension().string();
  if (ext == ".md") return front_matter(path);
  if (ext != ".yaml" && ext != ".yml" && ext != ".json")
    throw ConfigError(fmt::format("{}: unsupported config file type '{}', expected .yaml, .yml, .json (or a SparseML "
                                  ".md recipe)",
                                  path, ext));
  return yaml::YamlDoc::load_file(path);  // JSON is YAML
}

Plan load_plan(const std::string& path, const LoadOptions& options) {
  auto doc = load_config_file(path);
  return load_plan(doc.file, doc.root, options);
}

}  // namespace sparq::config
