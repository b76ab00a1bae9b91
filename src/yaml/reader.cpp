#include "sparq/yaml/reader.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include <yaml-cpp/eventhandler.h>

#include "sparq/error.h"
#include "sparq/io/files.h"

namespace sparq::yaml {

namespace {

std::string mark_string(const std::string& file, const YAML::Mark& mark) {
  if (mark.line < 0) return file;
  return fmt::format("{}:{}:{}", file, mark.line + 1, mark.column + 1);
}

std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null: return "null";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Scalar: return "'" + node.Scalar() + "'";
    default: return "nothing";
  }
}

[[noreturn]] void type_error(const std::string& file, const YAML::Node& node, const std::string& what,
                             const std::string& expected) {
  throw ConfigError(fmt::format("{}: {}: expected {}, got {}", where(file, node), what, expected,
                                describe(node)));
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t subst = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, subst});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

/// Where each document of a stream starts and whether it holds anything, read with yaml-cpp's
/// event parser. YAML::LoadAll of yaml-cpp 0.7 never ends on a stray ',' outside a flow
/// collection (each pass yields another empty document at the same place, taking memory without
/// bound): a document that starts where the previous one did is that case, and an error here.
class DocumentStarts : public YAML::EventHandler {
 public:
  struct Start {
    YAML::Mark mark;
    std::optional<YAML::Mark> content;  // where its first node is
  };
  explicit DocumentStarts(const std::string& text) : text_(text) {}
  std::vector<Start> starts;

  void OnDocumentStart(const YAML::Mark& mark) override {
    if (!starts.empty() && starts.back().mark.pos == mark.pos) {
      const char c = mark.pos >= 0 && static_cast<size_t>(mark.pos) < text_.size() ? text_[mark.pos] : '?';
      throw YAML::ParserException(mark, c == ',' ? "a ',' outside [...] or {...}" : fmt::format("unexpected '{}'", c));
    }
    starts.push_back({mark, std::nullopt});
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override { found(mark); }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t, const std::string&) override { found(mark); }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    found(mark);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    found(mark);
  }
  void OnMapEnd() override {}

 private:
  void found(const YAML::Mark& mark) {
    if (!starts.back().content) starts.back().content = mark;
  }
  const std::string& text_;
};

}  // namespace

YamlDoc YamlDoc::load_file(const std::string& path) {
  try {
    return load_string(io::read_file(path), path);
  } catch (const ConfigError&) {
    throw;
  } catch (const Error& e) {  // missing, a folder, unreadable: a config error naming the file
    throw ConfigError(e.what());
  }
}

YamlDoc YamlDoc::load_string(const std::string& text, const std::string& name) {
  try {
    // One document per file: a second one (after '---') would be ignored silently otherwise.
    std::istringstream stream(text);
    YAML::Parser parser(stream);
    DocumentStarts documents(text);
    while (parser.HandleNextDocument(documents)) {
      if (documents.starts.size() > 1 && documents.starts.back().content)
        throw ConfigError(fmt::format("{}: a second YAML document (after '---'); a job, config or model file holds one",
                                      mark_string(name, *documents.starts.back().content)));
    }
    return YamlDoc{name, YAML::Load(text)};
  } catch (const YAML::ParserException& e) {
    throw ConfigError(fmt::format("{}: invalid YAML: {}", mark_string(name, e.mark), e.msg));
  }
}

std::string where(const std::string& file, const YAML::Node& node) {
  if (!node.IsDefined()) return file;
  return mark_string(file, node.Mark());
}

bool has_tag(const YAML::Node& node) { return !node.Tag().empty() && node.Tag() != "?" && node.Tag() != "!"; }

std::string nearest(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = SIZE_MAX;
  for (const auto& c : candidates) {
    size_t d = edit_distance(word, c);
    if (d < best_distance) best_distance = d, best = c;
  }
  return best;
}

int64_t as_int(const std::string& file, const YAML::Node& node, const std::string& what) {
  if (!node.IsScalar()) type_error(file, node, what, "an integer");
  const std::string& s = node.Scalar();
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (!s.empty() && *end == '\0' && errno == 0) return v;
  // Lax coercion as the reference tools do: 2.0 and 1e3 are integers, 2.5 is not.
  double d = std::strtod(s.c_str(), &end);
  if (!s.empty() && *end == '\0' && std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e18)
    return static_cast<int64_t>(d);
  type_error(file, node, what, "an integer");
}

double as_double(const std::string& file, const YAML::Node& node, const std::string& what) {
  if (!node.IsScalar()) type_error(file, node, what, "a number");
  std::string s = node.Scalar();
  if (s == ".inf" || s == "+.inf") return INFINITY;
  if (s == "-.inf") return -INFINITY;
  char* end = nullptr;
  double d = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || std::isnan(d) || s == "inf" || s == "nan")
    type_error(file, node, what, "a number");
  return d;
}

bool as_bool(const std::string& file, const YAML::Node& node, const std::string& what) {
  if (node.IsScalar()) {
    std::string s = node.Scalar();
    std::transform(s.begin(), s.end(), s.begin(), ::tolower);
    if (s == "true" || s == "yes" || s == "on") return true;
    if (s == "false" || s == "no" || s == "off") return false;
  }
  type_error(file, node, what, "true or false");
}

std::string as_string(const std::string& file, const YAML::Node& node, const std::string& what) {
  if (!node.IsScalar()) type_error(file, node, what, "a string");
  return node.Scalar();
}

MapReader::MapReader(std::string file, const YAML::Node& node, std::string what,
                     std::vector<std::string> allowed)
    : file_(std::move(file)), node_(node), what_(std::move(what)), allowed_(std::move(allowed)) {
  if (!node_.IsMap()) type_error(file_, node_, what_, "a mapping");
  std::map<std::string, YAML::Node> seen;
  for (auto it = node_.begin(); it != node_.end(); ++it) {
    std::string key = it->first.Scalar();
    auto [first, fresh] = seen.emplace(key, it->first);
    if (!fresh)
      throw ConfigError(fmt::format("{}: {}: key '{}' appears twice (first at {})", yaml::where(file_, it->first),
                                    what_, key, yaml::where(file_, first->second)));
    if (std::find(allowed_.begin(), allowed_.end(), key) != allowed_.end()) continue;
    throw ConfigError(fmt::format("{}: {}: unknown key '{}', did you mean '{}'? (valid keys: {})",
                                  yaml::where(file_, it->first), what_, key,
                                  nearest(key, allowed_), fmt::join(allowed_, ", ")));
  }
}

bool MapReader::has(const std::string& key) const {
  return node_[key].IsDefined() && !node_[key].IsNull();
}

YAML::Node MapReader::node(const std::string& key) const { return node_[key]; }

std::string MapReader::where(const std::string& key) const {
  return yaml::where(file_, has(key) ? node_[key] : node_);
}

void MapReader::fail(const std::string& key, const std::string& message) const {
  throw ConfigError(fmt::format("{}: {}.{}: {}", where(key), what_, key, message));
}

std::string MapReader::get_string(const std::string& key, const std::string& fallback) const {
  return has(key) ? as_string(file_, node_[key], what_ + "." + key) : fallback;
}

std::string MapReader::require_string(const std::string& key) const {
  if (!has(key)) fail(key, "is required");
  return get_string(key, "");
}

std::string MapReader::get_choice(const std::string& key, const std::string& fallback,
                                  const std::vector<std::string>& choices) const {
  std::string v = get_string(key, fallback);
  if (std::find(choices.begin(), choices.end(), v) == choices.end())
    fail(key, fmt::format("'{}' is not one of {}", v, fmt::join(choices, ", ")));
  return v;
}

bool MapReader::get_bool(const std::string& key, bool fallback) const {
  return has(key) ? as_bool(file_, node_[key], what_ + "." + key) : fallback;
}

int64_t MapReader::get_int(const std::string& key, int64_t fallback, int64_t min,
                           int64_t max) const {
  if (!has(key)) return fallback;
  int64_t v = as_int(file_, node_[key], what_ + "." + key);
  if (v < min || v > max) {
    if (max == INT64_MAX) fail(key, fmt::format("{} is out of range, expected >= {}", v, min));
    fail(key, fmt::format("{} is out of range, expected {}..{}", v, min, max));
  }
  return v;
}

double MapReader::get_double(const std::string& key, double fallback, double min,
                             double max) const {
  if (!has(key)) return fallback;
  double v = as_double(file_, node_[key], what_ + "." + key);
  if (v < min || v > max) {
    if (max >= 1e308) fail(key, fmt::format("{} is out of range, expected >= {}", v, min));
    fail(key, fmt::format("{} is out of range, expected {}..{}", v, min, max));
  }
  return v;
}

std::vector<int64_t> MapReader::get_int_list(const std::string& key,
                                             const std::vector<int64_t>& fallback) const {
  if (!has(key)) return fallback;
  YAML::Node list = node_[key];
  if (!list.IsSequence()) type_error(file_, list, what_ + "." + key, "a list of integers");
  std::vector<int64_t> out;
  for (const auto& item : list) out.push_back(as_int(file_, item, what_ + "." + key));
  return out;
}

}  // namespace sparq::yaml
