// The dialect registry and load_plan's detection. SparseML recipes are recognised here already,
// so their users get a plain "not supported yet" instead of a PQuantML key error; its parser
// registers the same name when it arrives. (NNI: config/nni.cpp; PQuantML: config/pquant_lower.cpp.)
#include "sparq/config/dialect.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>

#include "sparq/error.h"
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
    if (key == "version" || key == "modifiers" ||
        (key.size() > 9 && key.compare(key.size() - 9, 9, "modifiers") == 0) || yaml::has_tag(it->second))
      return true;
    if (it->second.IsMap())  // a staged recipe: stage_name: {..._modifiers: [...]}
      for (auto inner = it->second.begin(); inner != it->second.end(); ++inner)
        if (inner->first.Scalar().find("modifiers") != std::string::npos) return true;
  }
  return false;
}

const bool registered = register_dialect({"sparseml", "SparseML recipe", is_sparseml, nullptr});

}  // namespace

bool register_dialect(Dialect dialect) {
  table().push_back(std::move(dialect));
  return true;
}

const std::vector<Dialect>& dialects() { return table(); }

Plan load_plan(const std::string& file, const YAML::Node& root) {
  for (const auto& d : dialects()) {
    if (!d.detect(root)) continue;
    if (!d.parse)
      throw ConfigError(fmt::format("{}: this is a {}: not supported yet by this version of sparq (supported: PQuantML "
                                    "configs)",
                                    yaml::where(file, root), d.description));
    return d.parse(file, root);
  }
  std::vector<std::string> known;
  for (const auto& d : dialects()) known.push_back(d.description);
  // An empty document or a mapping of unknown sections: PQuantML's reader says what it expected
  // (and the nearest section name).
  if (!root.IsDefined() || root.IsNull() || root.IsMap())
    for (const auto& d : dialects())
      if (d.name == "pquantml") return d.parse(file, root);
  throw ConfigError(fmt::format("{}: not a config sparq knows; expected one of: {}", yaml::where(file, root),
                                fmt::join(known, ", ")));
}

yaml::YamlDoc load_config_file(const std::string& path) {
  auto ext = std::filesystem::path(path).extension().string();
  if (ext != ".yaml" && ext != ".yml" && ext != ".json")
    throw ConfigError(fmt::format("{}: unsupported config file type '{}', expected .yaml, .yml or .json", path, ext));
  return yaml::YamlDoc::load_file(path);  // JSON is YAML
}

Plan load_plan(const std::string& path) {
  auto doc = load_config_file(path);
  return load_plan(doc.file, doc.root);
}

}  // namespace sparq::config
