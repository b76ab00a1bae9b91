// SparseML recipes -> Plan (spec sparseml §1-2). The document is walked as YAML nodes (so every
// error keeps its file:line:col): modifier groups and stages are found, each scope's variables
// are evaluated (eval() by repeated passes, caller overrides first), and every tagged modifier is
// read with its scope's variables substituted into its fields.
#include "sparq/config/sparseml.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <optional>
#include <set>

#include "recipe_eval.h"
#include "sparq/config/dialect.h"
#include "sparq/error.h"
#include "sparq/models/op.h"
#include "sparq/yaml/reader.h"

namespace sparq::config {

using sparseml::Number;

namespace {

[[noreturn]] void fail_at(const std::string& file, const YAML::Node& node, const std::string& message) {
  throw ConfigError(fmt::format("{}: {}", yaml::where(file, node), message));
}

bool contains_modifiers(const std::string& key) { return key.find("modifiers") != std::string::npos; }

/// The modifier class a tag names ("!pytorch.GMPruningModifier" -> "GMPruningModifier").
std::string tag_name(const YAML::Node& n) {
  std::string t = n.Tag();
  if (!t.empty() && t[0] == '!') t.erase(0, 1);
  if (t.rfind("pytorch.", 0) == 0) t.erase(0, 8);
  return t;
}
bool tagged(const YAML::Node& n) { return yaml::has_tag(n) && n.Tag() != "!"; }

/// `eval(E)` -> E.
std::optional<std::string> eval_expr(const YAML::Node& n) {
  if (!n.IsScalar()) return std::nullopt;
  const std::string& s = n.Scalar();
  if (s.size() < 6 || s.compare(0, 5, "eval(") != 0 || s.back() != ')') return std::nullopt;
  return s.substr(5, s.size() - 6);
}

std::string trim(std::string s) {
  auto sp = [](unsigned char c) { return std::isspace(c); };
  while (!s.empty() && sp(s.back())) s.pop_back();
  size_t b = 0;
  while (b < s.size() && sp(s[b])) ++b;
  return s.substr(b);
}

/// A number written as text: "5" (int), "0.5", "1e-7", ".5" (floats); nullopt otherwise.
std::optional<Number> parse_number(const std::string& s) {
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  double d = std::strtod(s.c_str(), &end);
  if (*end != '\0' || std::isnan(d) || std::isinf(d)) return std::nullopt;
  bool is_int = s.find_first_not_of("+-0123456789") == std::string::npos;
  return Number{d, is_int};
}

/// A YAML value that is a numeric variable: a plain (unquoted) number or boolean (True = 1).
std::optional<Number> numeric_variable(const YAML::Node& n) {
  if (!n.IsScalar() || n.Tag() == "!") return std::nullopt;
  std::string s = n.Scalar();
  std::string low = s;
  std::transform(low.begin(), low.end(), low.begin(), ::tolower);
  if (low == "true" || low == "yes" || low == "on") return Number{1, true};
  if (low == "false" || low == "no" || low == "off") return Number{0, true};
  return parse_number(s);
}

std::string number_text(const Number& v) {
  if (v.is_int) return fmt::format("{}", static_cast<int64_t>(v.value));
  return fmt::format("{}", v.value);  // shortest text that reads back to the same double
}

/// One scope's variables (the top level, the globals of a staged recipe, or one stage).
struct Scope {
  std::map<std::string, Number> numeric;
  std::map<std::string, YAML::Node> other;  ///< non-numeric, verbatim
};

/// A variable entry of a scope as written.
struct Variable {
  std::string name;
  YAML::Node node;
  std::optional<std::string> override_text;
};

/// Evaluates a scope (spec §1.4): numbers, verbatim values, and eval() by repeated passes.
Scope evaluate_scope(const std::string& file, const std::vector<Variable>& vars, const Scope* globals) {
  Scope out;
  struct Pending {
    const Variable* var;
    std::string expr;
  };
  std::vector<Pending> pending;
  for (const auto& v : vars) {
    if (v.override_text) {
      if (auto n = parse_number(*v.override_text)) out.numeric[v.name] = Number{n->value, false};
      else out.other[v.name] = YAML::Node(*v.override_text);
      continue;
    }
    if (auto e = eval_expr(v.node)) pending.push_back({&v, trim(*e)});
    else if (auto n = numeric_variable(v.node)) out.numeric[v.name] = *n;
    else out.other[v.name] = v.node;
  }
  for (bool progress = true; progress && !pending.empty();) {
    progress = false;
    for (auto it = pending.begin(); it != pending.end();) {
      const auto& p = *it;
      std::optional<Number> value;
      auto fail_non_numeric = [&](const YAML::Node& n) {
        fail_at(file, p.var->node,
                fmt::format("{}: eval({}) names a variable that is not a number ({}); a variable can alias only "
                            "numbers (modifier fields can take any variable)",
                            p.var->name, p.expr, n.IsSequence() ? "a list" : n.IsMap() ? "a mapping" : "a string"));
      };
      if (auto o = out.other.find(p.expr); o != out.other.end()) fail_non_numeric(o->second);
      if (globals) {  // a stage variable that names a global takes the global (SparseML's rule)
        if (auto g = globals->numeric.find(p.expr); g != globals->numeric.end()) value = g->second;
        else if (auto o = globals->other.find(p.expr); o != globals->other.end()) fail_non_numeric(o->second);
      }
      if (!value) {
        try {
          value = sparseml::evaluate(p.expr, out.numeric);
        } catch (const sparseml::UnknownVariable&) {
          ++it;
          continue;  // not yet: a later pass may define it
        } catch (const std::invalid_argument& e) {
          fail_at(file, p.var->node, fmt::format("{}: eval({}): {}", p.var->name, p.expr, e.what()));
        }
      }
      out.numeric[p.var->name] = *value;
      it = pending.erase(it);
      progress = true;
    }
  }
  if (!pending.empty()) {
    const auto& p = pending.front();
    std::string missing;
    try {
      sparseml::evaluate(p.expr, out.numeric);
    } catch (const std::exception& e) {
      missing = e.what();
    }
    fail_at(file, p.var->node,
            fmt::format("{}: eval({}) cannot be evaluated: {} (not defined, or a cycle of variables)", p.var->name,
                        p.expr, missing));
  }
  return out;
}

/// A tagged modifier found in the document, with the scope of its variables.
struct Found {
  YAML::Node node;
  std::string stage;
  const Scope* scope;
};

// ---- reading one modifier ----

/// Reads one tagged modifier's fields, eval() substituted from its scope.
class ModReader {
 public:
  ModReader(std::string file, YAML::Node node, std::string tag, const Scope& scope, std::vector<std::string> allowed)
      : file_(std::move(file)), node_(std::move(node)), tag_(std::move(tag)), scope_(scope), allowed_(std::move(allowed)) {
    if (node_.IsNull() || (node_.IsScalar() && node_.Scalar().empty())) return;  // a tag with no body
    if (!node_.IsMap()) fail_at(file_, node_, fmt::format("!{}: expected a mapping of its fields", tag_));
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      std::string key = it->first.Scalar();
      if (key == "log_types") continue;  // dropped, as SparseML does (2020/21 recipes carry it)
      if (std::find(allowed_.begin(), allowed_.end(), key) == allowed_.end()) {
        std::string near = yaml::nearest(key, allowed_);
        fail_at(file_, it->first,
                fmt::format("!{}: unknown field '{}'{}; its fields are: {}", tag_, key,
                            near.empty() ? "" : fmt::format(" (did you mean '{}'?)", near), fmt::join(allowed_, ", ")));
      }
    }
  }

  bool has(const std::string& key) const { return node_.IsMap() && node_[key].IsDefined(); }
  bool is_null(const std::string& key) const { return has(key) && value(key).IsNull(); }
  std::string where(const std::string& key) const { return yaml::where(file_, has(key) ? node_[key] : node_); }
  [[noreturn]] void fail(const std::string& key, const std::string& message) const {
    throw ConfigError(fmt::format("{}: {}.{}: {}", where(key), tag_, key, message));
  }
  [[noreturn]] void fail_missing(const std::string& key) const {
    throw ConfigError(fmt::format("{}: !{}: the field '{}' is required", yaml::where(file_, node_), tag_, key));
  }
  const std::string& tag() const { return tag_; }

  /// The field's value with eval() substituted (recursively into lists and mappings).
  YAML::Node value(const std::string& key) const { return subst(node_[key], key); }

  double number(const std::string& key) const {
    if (!has(key)) fail_missing(key);
    return to_number(value(key), key);
  }
  double number(const std::string& key, double fallback) const { return has(key) ? number(key) : fallback; }
  std::optional<double> optional_number(const std::string& key) const {
    if (!has(key) || is_null(key)) return std::nullopt;
    return number(key);
  }
  /// SparseML's bool conversion: strings are true unless they contain 'f', 'F' or '0'.
  bool flag(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    YAML::Node v = value(key);
    if (!v.IsScalar()) fail(key, "expected true or false");
    std::string s = v.Scalar();
    std::string low = s;
    std::transform(low.begin(), low.end(), low.begin(), ::tolower);
    if (low == "true" || low == "yes" || low == "on") return true;
    if (low == "false" || low == "no" || low == "off") return false;
    return s.find_first_of("fF0") == std::string::npos;
  }
  std::string text(const std::string& key, const std::string& fallback) const {
    if (!has(key) || is_null(key)) return fallback;
    YAML::Node v = value(key);
    if (!v.IsScalar()) fail(key, "expected a string");
    return v.Scalar();
  }
  std::string text(const std::string& key) const {
    if (!has(key)) fail_missing(key);
    return text(key, "");
  }
  std::vector<double> numbers(const std::string& key) const {
    YAML::Node v = value(key);
    if (!v.IsSequence()) fail(key, "expected a list of numbers");
    std::vector<double> out;
    for (const auto& e : v) out.push_back(to_number(e, key));
    return out;
  }
  std::vector<int64_t> indices(const std::string& key) const {
    if (!has(key) || is_null(key)) return {};
    YAML::Node v = value(key);
    if (!v.IsSequence()) fail(key, "expected a list of optimizer parameter-group indices, or null for all");
    std::vector<int64_t> out;
    for (const auto& e : v) {
      double d = to_number(e, key);
      if (d < 0 || d != std::floor(d)) fail(key, fmt::format("{} is not a parameter-group index (0, 1, ...)", d));
      out.push_back(static_cast<int64_t>(d));
    }
    return out;
  }
  /// A (possibly nested) list of numbers, flattened, and its shape.
  std::vector<double> tensor(const std::string& key, std::vector<int64_t>& shape) const {
    if (!has(key)) fail_missing(key);
    std::vector<double> out;
    shape.clear();
    std::function<void(const YAML::Node&, size_t)> walk = [&](const YAML::Node& n, size_t depth) {
      if (n.IsSequence()) {
        if (shape.size() <= depth) shape.push_back(static_cast<int64_t>(n.size()));
        else if (shape[depth] != static_cast<int64_t>(n.size())) fail(key, "the nested lists are ragged (not a tensor)");
        for (const auto& e : n) walk(e, depth + 1);
      } else {
        if (depth != shape.size()) fail(key, "the nested lists are ragged (not a tensor)");
        out.push_back(to_number(n, key));
      }
    };
    walk(value(key), 0);
    return out;
  }

  /// `params`: __ALL__ / __ALL_PRUNABLE__ (case-insensitive as a bare string), or a (nested) list
  /// of exact names and "re:" patterns.
  ParamSelection params(const std::string& key, bool allow_prunable = true) const {
    ParamSelection p;
    YAML::Node v = value(key);
    auto token_of = [&](std::string s, bool bare) {
      if (bare) std::transform(s.begin(), s.end(), s.begin(), ::toupper);
      if (s == "__ALL__") return ParamSelection::Token::All;
      if (s == "__ALL_PRUNABLE__") {
        if (!allow_prunable) fail(key, "__ALL_PRUNABLE__ is not supported by this modifier; use __ALL__ or names");
        return ParamSelection::Token::AllPrunable;
      }
      return ParamSelection::Token::None;
    };
    if (v.IsScalar()) {
      p.token = token_of(v.Scalar(), true);
      if (p.token == ParamSelection::Token::None)
        fail(key, fmt::format("'{}' is neither __ALL__, __ALL_PRUNABLE__ nor a list; write names and 're:' "
                              "patterns as a list: ['{}']",
                              v.Scalar(), v.Scalar()));
      return p;
    }
    if (!v.IsSequence() && !v.IsNull()) fail(key, "expected __ALL__, __ALL_PRUNABLE__ or a list of names and 're:' patterns");
    std::function<void(const YAML::Node&)> walk = [&](const YAML::Node& n) {
      for (const auto& e : n) {
        if (e.IsSequence()) {
          walk(e);
          continue;
        }
        if (!e.IsScalar()) fail(key, "list entries must be names or 're:' patterns");
        auto t = token_of(e.Scalar(), false);
        if (t != ParamSelection::Token::None) p.token = t;
        else p.names.push_back(e.Scalar());
      }
    };
    if (v.IsSequence()) walk(v);
    if (p.token != ParamSelection::Token::None) p.names.clear();
    return p;
  }

 private:
  double to_number(const YAML::Node& n, const std::string& key) const {
    if (n.IsScalar())
      if (auto v = parse_number(n.Scalar())) return v->value;  // numeric strings too ("1e-7" in PyYAML)
    fail(key, fmt::format("expected a number, got {}", n.IsScalar() ? "'" + n.Scalar() + "'" : "a list or mapping"));
  }
  YAML::Node subst(const YAML::Node& n, const std::string& key) const {
    if (auto e = eval_expr(n)) {
      std::string expr = trim(*e);
      if (auto o = scope_.other.find(expr); o != scope_.other.end()) return o->second;
      try {
        return YAML::Node(number_text(sparseml::evaluate(expr, scope_.numeric)));
      } catch (const std::exception& ex) {
        fail(key, fmt::format("eval({}): {}", expr, ex.what()));
      }
    }
    if (n.IsSequence()) {
      YAML::Node out(YAML::NodeType::Sequence);
      bool changed = false;
      for (const auto& e : n) {
        YAML::Node s = subst(e, key);
        changed = changed || !(s == e);
        out.push_back(s);
      }
      return changed ? out : n;
    }
    if (n.IsMap()) {
      YAML::Node out(YAML::NodeType::Map);
      bool changed = false;
      for (auto it = n.begin(); it != n.end(); ++it) {
        YAML::Node s = subst(it->second, key);
        changed = changed || !(s == it->second);
        out[it->first.Scalar()] = s;
      }
      return changed ? out : n;
    }
    return n;
  }

  std::string file_;
  YAML::Node node_;
  std::string tag_;
  const Scope& scope_;
  std::vector<std::string> allowed_;
};

// ---- the modifier types ----

const std::vector<std::string> kGradualKeys = {"init_sparsity", "final_sparsity", "start_epoch", "end_epoch",
                                               "update_frequency", "params", "leave_enabled", "inter_func",
                                               "mask_type"};
const std::vector<std::string> kQuantShared = {"start_epoch",
                                               "end_epoch",
                                               "model_fuse_fn_name",
                                               "model_fuse_fn_kwargs",
                                               "disable_quantization_observer_epoch",
                                               "freeze_bn_stats_epoch",
                                               "num_calibration_steps"};
const std::vector<std::string> kQuantNew = {"scheme", "scheme_overrides", "ignore", "strict"};
const std::vector<std::string> kQuantLegacy = {"submodules",
                                               "quantize_embeddings",
                                               "reduce_range",
                                               "quantize_linear_activations",
                                               "quantize_conv_activations",
                                               "quantize_embedding_activations",
                                               "activation_bits",
                                               "weight_bits",
                                               "exclude_batchnorm",
                                               "exclude_module_types",
                                               "custom_quantizable_module_types",
                                               "activation_qconfig_kwargs",
                                               "weight_qconfig_kwargs",
                                               "tensorrt"};

std::vector<std::string> plus(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

/// The fields each type accepts (besides log_types, which is dropped).
const std::map<std::string, std::vector<std::string>>& type_keys() {
  static const std::map<std::string, std::vector<std::string>> keys = {
      {"EpochRangeModifier", {"start_epoch", "end_epoch"}},
      {"SetLearningRateModifier", {"learning_rate", "param_groups", "start_epoch", "end_epoch", "constant_logging"}},
      {"LearningRateModifier",
       {"lr_class", "lr_kwargs", "init_lr", "start_epoch", "end_epoch", "update_frequency", "constant_logging"}},
      {"LearningRateFunctionModifier",
       {"lr_func", "init_lr", "final_lr", "start_epoch", "end_epoch", "cycle_epochs", "param_groups", "update_frequency"}},
      {"SetWeightDecayModifier", {"weight_decay", "start_epoch", "param_groups", "end_epoch", "constant_logging"}},
      {"TrainableParamsModifier", {"params", "trainable", "params_strict", "start_epoch", "end_epoch"}},
      {"SetParamModifier", {"params", "val", "params_strict", "start_epoch", "end_epoch"}},
      {"GradualParamModifier",
       {"params", "init_val", "final_val", "start_epoch", "end_epoch", "update_frequency", "inter_func", "params_strict"}},
      {"SparsificationLoggingModifier", {"start_epoch", "end_epoch", "update_frequency"}},
      {"GMPruningModifier", plus(kGradualKeys, {"global_sparsity", "phased", "score_type"})},
      {"GradualKSModifier", kGradualKeys},
      {"MagnitudePruningModifier", kGradualKeys},
      {"GlobalMagnitudePruningModifier", kGradualKeys},
      {"MovementPruningModifier", kGradualKeys},
      {"StructuredPruningModifier", plus(kGradualKeys, {"param_groups"})},
      {"ConstantPruningModifier", {"params", "start_epoch", "end_epoch", "update_frequency"}},
      {"ConstantKSModifier", {"params", "start_epoch", "end_epoch", "update_frequency"}},
      {"ACDCPruningModifier",
       {"compression_sparsity", "start_epoch", "end_epoch", "update_frequency", "params", "global_sparsity",
        "leave_enabled", "momentum_buffer_reset", "mask_type"}},
      {"LayerPruningModifier", {"layers", "start_epoch", "end_epoch", "update_frequency"}},
      {"QuantizationModifier", plus(plus(kQuantShared, kQuantNew), kQuantLegacy)},
  };
  return keys;
}

/// SparseML modifiers sparq knows but does not run (refused by name).
const std::map<std::string, std::string>& not_supported() {
  static const std::map<std::string, std::string> m = {
      {"MFACPruningModifier", "second-order (M-FAC) pruning"},
      {"OBSPruningModifier", "optimal brain surgeon (oBERT) pruning"},
      {"RigLPruningModifier", "RigL sparse training"},
      {"TopKASTPruningModifier", "Top-KAST sparse training"},
      {"PowerpropagationModifier", "powerpropagation"},
      {"LayerThinningModifier", "layer thinning"},
      {"DistillationModifier", "distillation (comes with the distillation work)"},
      {"PerLayerDistillationModifier", "per-layer distillation (comes with the distillation work)"},
  };
  return m;
}

const std::set<std::string> kPruning = {"GMPruningModifier",        "MagnitudePruningModifier",
                                        "GlobalMagnitudePruningModifier", "MovementPruningModifier",
                                        "StructuredPruningModifier", "ConstantPruningModifier",
                                        "ACDCPruningModifier"};

/// Start/end checks: starts are -1 or >= 0; `comparator` as SparseML's end_comparator:
/// -1 end may be -1 or >= start; 0 end >= start; 1 end > start.
void check_window(const ModReader& r, const Modifier& m, int comparator) {
  if (m.start_epoch < -1 || (m.start_epoch > -1 && m.start_epoch < 0))
    r.fail("start_epoch", fmt::format("{} is not an epoch: use -1 (from the first step) or a value >= 0", m.start_epoch));
  if (m.end_epoch < -1 || (m.end_epoch > -1 && m.end_epoch < 0))
    r.fail("end_epoch", fmt::format("{} is not an epoch: use -1 (never ends) or a value >= 0", m.end_epoch));
  if (comparator == -1 && m.end_epoch != -1 && m.end_epoch < m.start_epoch)
    r.fail("end_epoch", fmt::format("{} is before start_epoch {}", m.end_epoch, m.start_epoch));
  if (comparator == 1 && !(m.end_epoch > m.start_epoch))
    r.fail("end_epoch", fmt::format("{} must be after start_epoch {}", m.end_epoch, m.start_epoch));
}

void check_frequency(const ModReader& r, const Modifier& m) {
  if (m.update_frequency < -1)
    r.fail("update_frequency", fmt::format("{} is out of range: epochs between updates, or -1 for every step",
                                           m.update_frequency));
}

std::string inter_func(const ModReader& r) {
  std::string f = r.text("inter_func", "cubic");
  if (f != "linear" && f != "cubic" && f != "inverse_cubic")
    r.fail("inter_func", fmt::format("unknown interpolation '{}', expected linear, cubic or inverse_cubic", f));
  return f;
}

MaskType mask_type(const ModReader& r, bool structured_only) {
  MaskType t;
  if (!r.has("mask_type")) {
    if (structured_only) t.kind = MaskType::Kind::Filter;
    return t;
  }
  YAML::Node v = r.value("mask_type");
  std::vector<int64_t> block;
  std::string s;
  if (v.IsSequence()) {
    for (const auto& e : v) block.push_back(yaml::as_int("", e, "mask_type"));
  } else if (v.IsScalar()) {
    s = v.Scalar();
    if (s.size() > 2 && (s.front() == '[' || s.front() == '(') && (s.back() == ']' || s.back() == ')')) {
      std::string inner = s.substr(1, s.size() - 2);
      size_t pos = 0;
      while (pos <= inner.size()) {
        size_t comma = inner.find(',', pos);
        std::string part = trim(inner.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
        auto n = parse_number(part);
        if (!n || !n->is_int) r.fail("mask_type", fmt::format("'{}' is not a block shape like [1, 4]", s));
        block.push_back(static_cast<int64_t>(n->value));
        if (comma == std::string::npos) break;
        pos = comma + 1;
      }
    }
  } else {
    r.fail("mask_type", "expected unstructured, block4, [a, b], N:M, tensorrt, filter or channel");
  }
  if (!block.empty()) {
    while (block.size() > 2 && block.back() == 1) block.pop_back();
    if (block.size() != 2)
      r.fail("mask_type", "a block shape has two sizes [out, in] (extra trailing sizes must be 1)");
    for (auto b : block)
      if (b < -1 || b == 0) r.fail("mask_type", fmt::format("block size {} must be positive or -1 (the whole dim)", b));
    t.kind = MaskType::Kind::Block, t.a = block[0], t.b = block[1];
  } else if (s == "unstructured") {
  } else if (s == "block4" || s == "block") {
    t.kind = MaskType::Kind::Block, t.a = 1, t.b = 4, t.four_block = true;
  } else if (s == "filter") {
    t.kind = MaskType::Kind::Filter;
  } else if (s == "channel") {
    t.kind = MaskType::Kind::Channel;
  } else if (s == "tensorrt") {
    t.kind = MaskType::Kind::NM, t.n = 2, t.m = 4;
  } else if (auto colon = s.find(':'); colon != std::string::npos) {
    auto n = parse_number(s.substr(0, colon)), m = parse_number(s.substr(colon + 1));
    if (!n || !m || !n->is_int || !m->is_int || n->value < 1 || m->value <= n->value)
      r.fail("mask_type", fmt::format("'{}' is not an N:M pattern with 1 <= N < M", s));
    t.kind = MaskType::Kind::NM, t.n = static_cast<int64_t>(n->value), t.m = static_cast<int64_t>(m->value);
  } else {
    r.fail("mask_type", fmt::format("unknown mask type '{}', expected unstructured, block4, [a, b], N:M, tensorrt, "
                                    "filter or channel",
                                    s));
  }
  if (structured_only && t.kind != MaskType::Kind::Filter && t.kind != MaskType::Kind::Channel)
    r.fail("mask_type", "StructuredPruningModifier prunes whole filters or channels: use filter or channel");
  return t;
}

void read_sparsities(const ModReader& r, Modifier& m) {
  YAML::Node init = r.value("init_sparsity");
  if (!r.has("init_sparsity")) r.fail_missing("init_sparsity");
  if (init.IsScalar() && init.Scalar() == "__FROM_PARAM__") {
    if (r.tag() == "GradualKSModifier") r.fail("init_sparsity", "__FROM_PARAM__ is not a field value of the legacy GradualKSModifier");
    m.init_from_param = true;
  } else {
    m.init_sparsity = r.number("init_sparsity");
    if (m.init_sparsity < 0 || m.init_sparsity > 1)
      r.fail("init_sparsity", fmt::format("{} is out of range, expected 0..1 or __FROM_PARAM__", m.init_sparsity));
  }
  if (!r.has("final_sparsity")) r.fail_missing("final_sparsity");
  YAML::Node fin = r.value("final_sparsity");
  auto check_final = [&](double s) {
    if (!(s > 0 && s < 1)) r.fail("final_sparsity", fmt::format("{} is out of range: a sparsity strictly between 0 and 1", s));
  };
  if (fin.IsMap()) {
    for (auto it = fin.begin(); it != fin.end(); ++it) {
      auto s = parse_number(it->first.Scalar());
      if (!s) r.fail("final_sparsity", fmt::format("key '{}' is not a sparsity", it->first.Scalar()));
      check_final(s->value);
      ParamSelection p;
      const YAML::Node names = it->second;  // a range-for over it->second would outlive the iterator's proxy
      if (names.IsScalar()) p.names.push_back(names.Scalar());
      else
        for (const auto& e : names) p.names.push_back(yaml::as_string(r.where("final_sparsity"), e, "final_sparsity"));
      m.final_sparsity_map.emplace_back(s->value, p);
    }
    if (m.params.token != ParamSelection::Token::None || !m.params.names.empty())
      r.fail("params", "give the targets either in params or in the final_sparsity mapping, not both");
  } else {
    m.final_sparsity = r.number("final_sparsity");
    check_final(m.final_sparsity);
    if (m.params.token == ParamSelection::Token::None && m.params.names.empty())
      m.params.token = ParamSelection::Token::AllPrunable;  // SparseML's default for empty params
  }
}

void read_lr_kwargs(const ModReader& r, Modifier& m) {
  if (!r.has("lr_kwargs")) r.fail_missing("lr_kwargs");
  YAML::Node kw = r.value("lr_kwargs");
  if (!kw.IsMap()) r.fail("lr_kwargs", "expected a mapping of the scheduler's arguments");
  static const std::map<std::string, std::vector<std::string>> needs = {
      {"StepLR", {"gamma", "step_size"}},
      {"ExponentialLR", {"gamma"}},
      {"MultiStepLR", {"gamma", "milestones"}},
      {"CosineAnnealingWarmRestarts", {"lr_min", "cycle_epochs"}},
  };
  auto it = needs.find(m.lr_class);
  if (it == needs.end())
    r.fail("lr_class", fmt::format("unknown lr_class '{}', expected StepLR, MultiStepLR, ExponentialLR or "
                                   "CosineAnnealingWarmRestarts",
                                   m.lr_class));
  for (auto k = kw.begin(); k != kw.end(); ++k) {
    std::string key = k->first.Scalar();
    if (std::find(it->second.begin(), it->second.end(), key) == it->second.end())
      r.fail("lr_kwargs", fmt::format("'{}' is not an argument of {} here (it takes {})", key, m.lr_class,
                                      fmt::join(it->second, ", ")));
  }
  for (const auto& key : it->second)
    if (!kw[key]) r.fail("lr_kwargs", fmt::format("{} needs '{}'", m.lr_class, key));
  auto num = [&](const std::string& key) {
    YAML::Node v = kw[key];
    auto n = v.IsScalar() ? parse_number(v.Scalar()) : std::nullopt;
    if (!n) r.fail("lr_kwargs", fmt::format("{}: expected a number", key));
    return n->value;
  };
  if (m.lr_class == "ExponentialLR") m.lr_class = "StepLR", m.step_size = 1.0;  // SparseML's rewrite
  if (kw["gamma"]) {
    m.gamma = num("gamma");
    if (!(m.gamma > 0)) r.fail("lr_kwargs", fmt::format("gamma {} must be positive", m.gamma));
  }
  if (kw["step_size"]) {
    m.step_size = num("step_size");
    if (!(m.step_size > 0)) r.fail("lr_kwargs", fmt::format("step_size {} must be a positive number of epochs", m.step_size));
  }
  if (kw["milestones"]) {
    if (!kw["milestones"].IsSequence()) r.fail("lr_kwargs", "milestones: expected a list of epochs");
    for (const auto& e : kw["milestones"]) {
      auto n = e.IsScalar() ? parse_number(e.Scalar()) : std::nullopt;
      if (!n) r.fail("lr_kwargs", "milestones: expected a list of epochs");
      if (!(n->value > std::max(0.0, m.start_epoch)) || (m.end_epoch >= 0 && !(n->value < m.end_epoch)))
        r.fail("lr_kwargs", fmt::format("milestone {} must lie after start_epoch {}{}", n->value, m.start_epoch,
                                        m.end_epoch >= 0 ? fmt::format(" and before end_epoch {}", m.end_epoch) : ""));
      m.milestones.push_back(n->value);
    }
  }
  if (kw["lr_min"]) m.lr_min = num("lr_min");
  if (kw["cycle_epochs"]) {
    m.cycle_epochs = num("cycle_epochs");
    if (!(m.cycle_epochs >= 1) || m.cycle_epochs != std::floor(m.cycle_epochs))
      r.fail("lr_kwargs", fmt::format("cycle_epochs {} must be a positive whole number of epochs (torch's T_0)", m.cycle_epochs));
  }
}

void check_lr(const ModReader& r, const std::string& key, double v, bool allow_zero) {
  if (!(allow_zero ? v >= 0 : v > 0) || v > 1)
    r.fail(key, fmt::format("{} is out of range, expected {}", v, allow_zero ? "0..1" : "a learning rate in (0, 1]"));
}

void read_quantization(const ModReader& r, Modifier& m) {
  bool legacy = false;
  for (const auto& k : kQuantLegacy) legacy = legacy || r.has(k);
  for (const auto& k : kQuantNew)
    if (legacy && r.has(k))
      r.fail(k, "mixes the current QuantizationModifier fields with the legacy ones (submodules, weight_bits, ...)");
  if (r.has("end_epoch") && r.number("end_epoch") != -1) r.fail("end_epoch", "QAT cannot be turned off: end_epoch must be -1");
  m.end_epoch = -1;
  for (auto [key, slot] : {std::pair{"disable_quantization_observer_epoch", &m.disable_observer_epoch},
                           std::pair{"freeze_bn_stats_epoch", &m.freeze_bn_epoch}}) {
    *slot = r.optional_number(key);
    if (*slot && **slot < std::max(0.0, m.start_epoch))
      r.fail(key, fmt::format("{} is before start_epoch {}", **slot, m.start_epoch));
  }
  std::string fuse = r.text("model_fuse_fn_name", "conv_bn_relus");
  std::string low = fuse;
  std::transform(low.begin(), low.end(), low.begin(), ::tolower);
  if (low == "none" || low == "conv_bn_relus") m.fuse = "conv_bn_relus";
  else if (low == "no_fuse") m.fuse = "no_fuse";
  else r.fail("model_fuse_fn_name", fmt::format("'{}': a C++ model has no Python method to call; use conv_bn_relus or no_fuse", fuse));
  if (r.has("model_fuse_fn_kwargs") && !r.is_null("model_fuse_fn_kwargs"))
    r.fail("model_fuse_fn_kwargs", "applies to a model method sparq cannot call");
  if (auto steps = r.optional_number("num_calibration_steps"); steps && *steps > 0)
    r.fail("num_calibration_steps", "calibration batches need a calibration loader, which a recipe run does not have; "
                                    "the observers learn from the training batches");
  auto names = [&](const std::string& key) {
    std::vector<std::string> out;
    if (!r.has(key) || r.is_null(key)) return out;
    YAML::Node v = r.value(key);
    if (!v.IsSequence()) r.fail(key, "expected a list of module names");
    for (const auto& e : v) out.push_back(yaml::as_string(r.where(key), e, key));
    return out;
  };
  if (legacy) {
    m.submodules = names("submodules");
    m.weight_bits = static_cast<int64_t>(r.number("weight_bits", 8));
    m.activation_bits = static_cast<int64_t>(r.number("activation_bits", 8));
    m.quantize_linear_activations = r.flag("quantize_linear_activations", true);
    m.quantize_conv_activations = r.flag("quantize_conv_activations", true);
    m.symmetric_activations = r.flag("tensorrt", false);
    if (m.symmetric_activations && !r.has("model_fuse_fn_name")) m.fuse = "no_fuse";
    if (r.flag("reduce_range", false)) r.fail("reduce_range", "is not supported yet (full-range integers only)");
    if (!r.flag("exclude_batchnorm", true)) r.fail("exclude_batchnorm", "batch-norm layers are not fake-quantized by sparq");
    for (const char* key : {"exclude_module_types", "custom_quantizable_module_types", "activation_qconfig_kwargs",
                            "weight_qconfig_kwargs"})
      if (r.has(key) && !r.is_null(key)) r.fail(key, "is not supported yet; remove it (Linear and Conv layers are quantized)");
    for (auto [key, bits] : {std::pair{"weight_bits", m.weight_bits}, std::pair{"activation_bits", m.activation_bits}})
      if (bits < 2 || bits > 16) r.fail(key, fmt::format("{} is out of range, expected 2..16", bits));
  } else {
    m.ignore = names("ignore");
    if (r.has("scheme_overrides") && !r.is_null("scheme_overrides"))
      r.fail("scheme_overrides", "is not supported yet; use ignore to leave modules in float");
    std::string scheme = "default";
    if (r.has("scheme") && !r.is_null("scheme")) {
      YAML::Node s = r.value("scheme");
      if (s.IsScalar()) scheme = s.Scalar();
      else r.fail("scheme", "a scheme mapping is not supported yet; use default, deepsparse or tensorrt");
    }
    if (scheme == "tensorrt") m.symmetric_activations = true, m.fuse = "no_fuse";
    else if (scheme != "default" && scheme != "deepsparse")
      r.fail("scheme", fmt::format("unknown scheme '{}', expected default, deepsparse or tensorrt", scheme));
    m.quantize_linear_activations = m.quantize_conv_activations = false;  // the new scheme has no output quantizers
  }
}

Modifier read_modifier(const std::string& file, const Found& found) {
  const std::string written = tag_name(found.node);
  if (auto ns = not_supported().find(written); ns != not_supported().end())
    fail_at(file, found.node,
            fmt::format("!{} ({}) is a SparseML modifier this version of sparq does not run; the ones it runs: {}",
                        written, ns->second, fmt::join(recipe_modifier_types(), ", ")));
  auto keys = type_keys().find(written);
  if (keys == type_keys().end()) {
    auto types = recipe_modifier_types();
    std::string near = yaml::nearest(written, types);
    fail_at(file, found.node,
            fmt::format("unknown modifier tag !{}{}; known: {}", written,
                        near.empty() ? "" : fmt::format(" (did you mean !{}?)", near), fmt::join(types, ", ")));
  }
  ModReader r(file, found.node, written, *found.scope, keys->second);
  Modifier m;
  m.tag = written;
  m.type = written == "GradualKSModifier" ? "GMPruningModifier" : written == "ConstantKSModifier" ? "ConstantPruningModifier" : written;
  m.stage = found.stage;
  m.where = yaml::where(file, found.node);
  const std::string& t = m.type;
  auto required = [&](const char* key) {
    if (!r.has(key)) r.fail_missing(key);
  };
  // Defaults of start/end per type (SparseML's constructors), then the fields.
  bool needs_start = t == "EpochRangeModifier" || t == "LearningRateModifier" || t == "LearningRateFunctionModifier" ||
                     t == "SparsificationLoggingModifier" || t == "GradualParamModifier" || t == "ACDCPruningModifier" ||
                     (kPruning.count(t) && t != "ConstantPruningModifier");
  bool needs_end = t == "EpochRangeModifier" || t == "LearningRateFunctionModifier" || t == "GradualParamModifier" ||
                   t == "ACDCPruningModifier" || (kPruning.count(t) && t != "ConstantPruningModifier");
  if (needs_start) required("start_epoch");
  if (needs_end) required("end_epoch");
  m.start_epoch = r.number("start_epoch", t == "SetParamModifier" ? 0.0 : -1.0);
  m.end_epoch = r.number("end_epoch", -1.0);
  // end_epoch ignored (forced -1) by the one-shot setters
  if (t == "SetLearningRateModifier" || t == "SetWeightDecayModifier" || t == "SetParamModifier") m.end_epoch = -1;

  if (t == "EpochRangeModifier") {
    check_window(r, m, -1);
  } else if (t == "SetLearningRateModifier") {
    m.learning_rate = r.number("learning_rate");
    check_lr(r, "learning_rate", m.learning_rate, false);
    m.param_groups = r.indices("param_groups");
    check_window(r, m, -1);
  } else if (t == "LearningRateModifier") {
    m.lr_class = r.text("lr_class");
    if (r.has("update_frequency") && r.number("update_frequency") != -1)
      r.fail("update_frequency", "must be -1: the schedule updates every step");
    check_window(r, m, -1);
    read_lr_kwargs(r, m);
    if (r.has("init_lr") && !r.is_null("init_lr")) {
      m.init_lr = r.number("init_lr");
      m.init_lr_set = true;
      check_lr(r, "init_lr", m.init_lr, false);
    }
  } else if (t == "LearningRateFunctionModifier") {
    m.lr_func = r.text("lr_func");
    if (m.lr_func != "linear" && m.lr_func != "cosine" && m.lr_func != "cyclic_linear")
      r.fail("lr_func", fmt::format("unknown lr_func '{}', expected linear, cosine or cyclic_linear", m.lr_func));
    m.init_lr = r.number("init_lr");
    m.final_lr = r.number("final_lr");
    check_lr(r, "init_lr", m.init_lr, true);
    check_lr(r, "final_lr", m.final_lr, true);
    m.cycle_epochs = r.number("cycle_epochs", 1.0);
    if (!(m.cycle_epochs > 0)) r.fail("cycle_epochs", fmt::format("{} must be positive", m.cycle_epochs));
    m.param_groups = r.indices("param_groups");
    check_window(r, m, 1);
  } else if (t == "SetWeightDecayModifier") {
    m.weight_decay = r.number("weight_decay");
    if (m.weight_decay < 0) r.fail("weight_decay", fmt::format("{} must be >= 0", m.weight_decay));
    m.param_groups = r.indices("param_groups");
    check_window(r, m, -1);
  } else if (t == "TrainableParamsModifier") {
    required("params");
    m.params = r.params("params", /*allow_prunable=*/false);
    required("trainable");
    m.trainable = r.flag("trainable", true);
    m.params.strict = r.flag("params_strict", true);
    check_window(r, m, -1);
  } else if (t == "SetParamModifier") {
    required("params");
    m.params = r.params("params");
    m.val = r.tensor("val", m.val_shape);
    m.params.strict = r.flag("params_strict", true);
    check_window(r, m, -1);
  } else if (t == "GradualParamModifier") {
    required("params");
    m.params = r.params("params");
    std::vector<int64_t> final_shape;
    m.init_val = r.tensor("init_val", m.val_shape);
    m.final_val = r.tensor("final_val", final_shape);
    if (final_shape != m.val_shape) r.fail("final_val", "must have the shape of init_val");
    m.update_frequency = r.number("update_frequency", -1);
    m.inter_func = inter_func(r);
    m.params.strict = r.flag("params_strict", true);
    check_frequency(r, m);
    check_window(r, m, 1);
  } else if (t == "SparsificationLoggingModifier") {
    m.update_frequency = r.number("update_frequency", 1.0);
    check_frequency(r, m);
    check_window(r, m, -1);
  } else if (t == "ConstantPruningModifier") {
    required("params");
    m.params = r.params("params");
    m.leave_enabled = false;
    check_window(r, m, -1);
  } else if (t == "LayerPruningModifier") {
    required("layers");
    YAML::Node v = r.value("layers");
    if (v.IsScalar()) m.layers.push_back(v.Scalar());
    else if (v.IsSequence())
      for (const auto& e : v) m.layers.push_back(yaml::as_string(r.where("layers"), e, "layers"));
    else r.fail("layers", "expected __ALL__, __ALL_PRUNABLE__ or a list of module names");
    check_window(r, m, -1);
  } else if (t == "QuantizationModifier") {
    check_window(r, m, -1);
    read_quantization(r, m);
  } else if (t == "ACDCPruningModifier") {
    m.final_sparsity = r.number("compression_sparsity");
    if (!(m.final_sparsity > 0 && m.final_sparsity < 1))
      r.fail("compression_sparsity", fmt::format("{} is out of range: a sparsity strictly between 0 and 1", m.final_sparsity));
    required("update_frequency");
    m.update_frequency = r.number("update_frequency");
    for (auto [key, v] : {std::pair{"start_epoch", m.start_epoch}, std::pair{"end_epoch", m.end_epoch},
                          std::pair{"update_frequency", m.update_frequency}})
      if (v != std::floor(v) || v < 0) r.fail(key, fmt::format("{} must be a whole number of epochs >= 0", v));
    if (m.update_frequency < 1) r.fail("update_frequency", "the phase length must be at least 1 epoch");
    m.params = r.has("params") ? r.params("params") : ParamSelection{ParamSelection::Token::AllPrunable, {}, true};
    m.global_sparsity = r.flag("global_sparsity", true);
    m.leave_enabled = r.flag("leave_enabled", true);
    m.momentum_buffer_reset = r.flag("momentum_buffer_reset", true);
    m.mask_type = mask_type(r, false);
    check_window(r, m, 1);
  } else {  // the gradual pruning family
    required("update_frequency");
    m.update_frequency = r.number("update_frequency");
    check_frequency(r, m);
    if (t != "StructuredPruningModifier") required("params");
    if (r.has("params")) m.params = r.params("params");
    read_sparsities(r, m);
    m.leave_enabled = r.flag("leave_enabled", true);
    m.inter_func = inter_func(r);
    m.mask_type = mask_type(r, t == "StructuredPruningModifier");
    m.global_sparsity = t == "GlobalMagnitudePruningModifier" || r.flag("global_sparsity", false);
    if (r.flag("phased", false)) r.fail("phased", "phased pruning is not supported (SparseML removed it too)");
    if (r.text("score_type", "magnitude") != "magnitude")
      r.fail("score_type", "only magnitude scores; use MovementPruningModifier for movement scores");
    if (t == "StructuredPruningModifier" && r.has("param_groups") && !r.is_null("param_groups")) {
      YAML::Node g = r.value("param_groups");
      if (!g.IsSequence()) r.fail("param_groups", "expected a list of lists of parameter names");
      for (const auto& group : g) {
        if (!group.IsSequence()) r.fail("param_groups", "expected a list of lists of parameter names");
        std::vector<std::string> names;
        for (const auto& e : group) names.push_back(yaml::as_string(r.where("param_groups"), e, "param_groups"));
        m.param_name_groups.push_back(names);
      }
    }
    if (m.global_sparsity && (m.mask_type.kind == MaskType::Kind::Filter || m.mask_type.kind == MaskType::Kind::Channel))
      r.fail("global_sparsity", "structured (filter/channel) masks cannot be global");
    // sparq requires an end after the start (SparseML's HEAD also takes -1)
    if (!(m.end_epoch > m.start_epoch))
      r.fail("end_epoch", fmt::format("{} must be after start_epoch {}", m.end_epoch, m.start_epoch));
    check_window(r, m, 1);
  }
  return m;
}

// ---- the document's shape ----

struct Stage {
  std::string name;
  YAML::Node node;
  std::vector<Variable> vars;
  Scope scope;
};

void gather_group(const std::string& file, const std::string& key, const YAML::Node& value, const std::string& stage,
                  const Scope* scope, std::vector<Found>& out) {
  if (value.IsSequence()) {
    for (const auto& e : value) {
      if (!tagged(e))
        fail_at(file, e, fmt::format("{}: every entry of a modifier list is a tagged modifier (- !GMPruningModifier "
                                     "{{...}}); this one has no tag",
                                     key));
      out.push_back({e, stage, scope});
    }
  } else if (tagged(value)) {
    out.push_back({value, stage, scope});
  }
}

bool holds_tagged(const YAML::Node& list) {
  if (!list.IsSequence()) return false;
  for (const auto& e : list)
    if (tagged(e)) return true;
  return false;
}

/// A scope's variables: every key that is not a modifier group (metadata is carried, not a variable).
std::vector<Variable> variables_of(const YAML::Node& map, const std::function<bool(const std::string&, const YAML::Node&)>& is_group) {
  std::vector<Variable> vars;
  for (auto it = map.begin(); it != map.end(); ++it) {
    std::string key = it->first.Scalar();
    if (key == "__metadata__" || is_group(key, it->second)) continue;
    vars.push_back({key, it->second, std::nullopt});
  }
  return vars;
}

bool is_group_entry(const std::string& key, const YAML::Node& value) {
  return (contains_modifiers(key) && value.IsSequence()) || tagged(value);
}

Plan parse(const std::string& file, const YAML::Node& root, const RecipeVariables& overrides) {
  std::vector<Found> found;
  Scope top;  // the non-staged recipe's variables, or the staged recipe's globals
  std::vector<Stage> stages;
  std::set<std::string> used_overrides;
  auto apply_overrides = [&](std::vector<Variable>& vars) {
    for (auto& v : vars)
      if (auto o = overrides.find(v.name); o != overrides.end()) {
        v.override_text = o->second;
        used_overrides.insert(v.name);
      }
  };
  if (tagged(root)) {
    found.push_back({root, "", &top});
  } else if (root.IsSequence()) {
    gather_group(file, "the recipe", root, "", &top, found);
  } else if (root.IsMap()) {
    bool staged = true;
    for (auto it = root.begin(); it != root.end(); ++it)
      if (contains_modifiers(it->first.Scalar()) || tagged(it->second)) staged = false;
    if (!staged) {
      for (auto it = root.begin(); it != root.end(); ++it) {
        std::string key = it->first.Scalar();
        if (!is_group_entry(key, it->second) && holds_tagged(it->second))
          fail_at(file, it->first,
                  fmt::format("invalid modifier location '{}': modifier lists go under a key that contains 'modifiers' "
                              "(modifiers, training_modifiers, pruning_modifiers, ...)",
                              key));
      }
      auto vars = variables_of(root, is_group_entry);
      apply_overrides(vars);
      top = evaluate_scope(file, vars, nullptr);
      for (auto it = root.begin(); it != root.end(); ++it)
        if (is_group_entry(it->first.Scalar(), it->second)) gather_group(file, it->first.Scalar(), it->second, "", &top, found);
    } else {
      auto is_stage = [](const std::string&, const YAML::Node& value) {
        if (!value.IsMap()) return false;
        for (auto it = value.begin(); it != value.end(); ++it)
          if (contains_modifiers(it->first.Scalar())) return true;
        return false;
      };
      for (auto it = root.begin(); it != root.end(); ++it) {
        std::string key = it->first.Scalar();
        if (holds_tagged(it->second))
          fail_at(file, it->first,
                  fmt::format("invalid modifier location '{}': modifier lists go under a key that contains 'modifiers' "
                              "(modifiers, training_modifiers, pruning_modifiers, ...)",
                              key));
        if (is_stage(key, it->second)) stages.push_back({key, it->second, {}, {}});
      }
      auto globals = variables_of(root, is_stage);
      apply_overrides(globals);
      top = evaluate_scope(file, globals, nullptr);
      for (auto& s : stages) {
        s.vars = variables_of(s.node, is_group_entry);
        apply_overrides(s.vars);
      }
      for (auto& s : stages) {
        Scope own = evaluate_scope(file, s.vars, &top);
        // modifiers see the stage's variables over the globals
        s.scope = top;
        for (auto& [k, v] : own.numeric) s.scope.other.erase(k), s.scope.numeric[k] = v;
        for (auto& [k, v] : own.other) s.scope.numeric.erase(k), s.scope.other[k] = v;
      }
      for (auto& s : stages)
        for (auto it = s.node.begin(); it != s.node.end(); ++it) {
          std::string key = it->first.Scalar();
          if (!is_group_entry(key, it->second) && holds_tagged(it->second))
            fail_at(file, it->first,
                    fmt::format("invalid modifier location '{}.{}': modifier lists go under a key that contains "
                                "'modifiers'",
                                s.name, key));
          if (is_group_entry(key, it->second)) gather_group(file, s.name + "." + key, it->second, s.name, &s.scope, found);
        }
    }
  } else {
    fail_at(file, root, "a SparseML recipe is a mapping with a 'modifiers' list (or a list of tagged modifiers)");
  }
  for (const auto& [name, value] : overrides)
    if (!used_overrides.count(name))
      throw ConfigError(fmt::format("{}: --recipe-var {}: the recipe has no variable '{}' to override", file, name, name));
  if (found.empty())
    fail_at(file, root, "no modifiers found: a recipe lists them under 'modifiers' (or any key containing 'modifiers')");

  Plan plan;
  plan.dialect = "sparseml";
  for (const auto& f : found) plan.modifiers.push_back(read_modifier(file, f));
  plan.modifiers = ordered(std::move(plan.modifiers));
  int64_t epochs = max_epochs(plan.modifiers);
  if (epochs > 0) plan.schedule = Schedule::single_stage(epochs);

  // QuantizationModifier: integer quantizers on the Linear and Conv layers (off until its start).
  int quant_modifiers = 0;
  for (const auto& m : plan.modifiers) {
    if (m.type != "QuantizationModifier") continue;
    if (++quant_modifiers > 1) throw ConfigError(fmt::format("{}: a recipe has one QuantizationModifier; this is a second", m.where));
    Rule rule;
    rule.where = m.where;
    rule.origin = "QuantizationModifier";
    rule.select.op_types = {"Linear", "Conv1d", "Conv2d"};
    auto component = [](const std::string& name) {  // the module and everything under it
      std::string e;
      for (char c : name) {
        if (std::string("\\^$.|?*+()[]{}").find(c) != std::string::npos) e += '\\';
        e += c;
      }
      return e + "(\\..*)?";
    };
    for (const auto& s : m.submodules) rule.select.name_regexes.push_back(component(s));
    for (const auto& ig : m.ignore) {
      if (models::find_op(ig)) rule.select.exclude_op_types.push_back(ig);
      else rule.select.exclude_name_regexes.push_back(component(ig));
    }
    rule.names_must_exist = !m.submodules.empty();
    quant::IntegerSpec w;
    w.bits = static_cast<int>(m.weight_bits), w.is_signed = true, w.symmetric = true;
    quant::IntegerSpec a;
    a.bits = static_cast<int>(m.activation_bits), a.is_signed = m.symmetric_activations, a.symmetric = m.symmetric_activations;
    rule.targets["weight"].quant = QuantSetting::of(w);
    rule.targets[kInput].quant = QuantSetting::of(a);
    if (m.quantize_linear_activations || m.quantize_conv_activations) rule.targets[kOutput].quant = QuantSetting::of(a);
    rule.module.pruning_first = true;  // masks zero the weights before the observer sees them, as in SparseML
    rule.module.fuse_following = m.fuse == "conv_bn_relus";  // Conv-BN(-ReLU) folded at QAT's start
    plan.rules.push_back(rule);
  }
  return plan;
}

}  // namespace

Plan read_recipe(const std::string& file, const YAML::Node& root, const RecipeVariables& variables) {
  return parse(file, root, variables);
}

void parse_recipe_variable(const std::string& text, RecipeVariables& into) {
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    std::string item = trim(text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
    size_t eq = item.find_first_of("=:");
    if (eq == std::string::npos || eq == 0)
      throw ConfigError(fmt::format("--recipe-var '{}': expected name=value", item));
    std::string name = trim(item.substr(0, eq)), value = trim(item.substr(eq + 1));
    if (name.find_first_of("{}!=") != std::string::npos)
      throw ConfigError(fmt::format("--recipe-var '{}': a variable name cannot contain {{, }}, ! or =", item));
    into[name] = value;
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
}

std::vector<std::string> recipe_modifier_types() {
  std::vector<std::string> out;
  for (const auto& [name, keys] : type_keys()) out.push_back(name);
  return out;
}

}  // namespace sparq::config
