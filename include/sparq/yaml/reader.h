// The YAML layer every config reader stands on: documents that remember their file name, and a
// checked reader for mappings whose every error is "file:line:column: what is wrong, what was
// expected" (unknown key -> nearest valid key; wrong type -> expected type; out of range -> range).
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

namespace sparq::yaml {

/// A parsed YAML document and the name used in its error messages.
struct YamlDoc {
  std::string file;
  YAML::Node root;

  static YamlDoc load_file(const std::string& path);
  static YamlDoc load_string(const std::string& text, const std::string& name = "<string>");
};

/// "file:line:column" (1-based) of a node.
std::string where(const std::string& file, const YAML::Node& node);

/// Whether a node carries an explicit tag (`!EpochRangeModifier`), not just YAML's defaults.
bool has_tag(const YAML::Node& node);

/// The candidate closest to `word` by edit distance ("" when there are no candidates).
std::string nearest(const std::string& word, const std::vector<std::string>& candidates);

/// Reads one YAML mapping with a fixed set of allowed keys.
class MapReader {
 public:
  /// Throws ConfigError if `node` is not a mapping or holds a key outside `allowed`.
  /// `what` names the mapping in messages ("training", "data.train").
  MapReader(std::string file, const YAML::Node& node, std::string what,
            std::vector<std::string> allowed);

  bool has(const std::string& key) const;
  /// The raw node (undefined node if absent).
  YAML::Node node(const std::string& key) const;
  /// "file:line:column" of the key's value, or of the mapping if the key is absent.
  std::string where(const std::string& key) const;
  const std::string& file() const { return file_; }

  std::string get_string(const std::string& key, const std::string& fallback) const;
  std::string require_string(const std::string& key) const;
  /// One of `choices`; the error lists them.
  std::string get_choice(const std::string& key, const std::string& fallback,
                         const std::vector<std::string>& choices) const;
  bool get_bool(const std::string& key, bool fallback) const;
  int64_t get_int(const std::string& key, int64_t fallback, int64_t min = INT64_MIN,
                  int64_t max = INT64_MAX) const;
  double get_double(const std::string& key, double fallback, double min = -1e308,
                    double max = 1e308) const;
  std::vector<int64_t> get_int_list(const std::string& key,
                                    const std::vector<int64_t>& fallback) const;

  /// Throws ConfigError "file:line:col: <what>.<key>: <message>".
  [[noreturn]] void fail(const std::string& key, const std::string& message) const;

 private:
  std::string file_;
  YAML::Node node_;
  std::string what_;
  std::vector<std::string> allowed_;
};

/// Scalar conversions with ConfigError on failure (used by MapReader and by list readers).
int64_t as_int(const std::string& file, const YAML::Node& node, const std::string& what);
double as_double(const std::string& file, const YAML::Node& node, const std::string& what);
bool as_bool(const std::string& file, const YAML::Node& node, const std::string& what);
std::string as_string(const std::string& file, const YAML::Node& node, const std::string& what);

}  // namespace sparq::yaml
