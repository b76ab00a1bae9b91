// NNI config lists: v3 entries -> Plan rules (spec nni-config §1), v2 lists -> v3 (§6.3), and the
// job section that names the pruner. Every error is "file:line:col: what, where, expected".
#include "sparq/config/nni.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <regex>

#include "params.h"
#include "sparq/config/dialect.h"
#include "sparq/error.h"
#include "sparq/models/graph.h"
#include "sparq/models/op.h"
#include "sparq/prune/mask_pruner.h"
#include "sparq/yaml/reader.h"

namespace sparq::config {

using namespace sparq::yaml;
namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kSelectors = {"op_names",         "op_names_re",         "op_types",
                                             "exclude_op_names", "exclude_op_names_re", "exclude_op_types"};
const std::vector<std::string> kWeightKeys = {"sparse_ratio",        "sparse_threshold",      "max_sparse_ratio",
                                              "min_sparse_ratio",    "global_group_id",       "dependency_group_id",
                                              "internal_metric_block", "granularity",          "apply_method"};
const std::vector<std::string> kBiasKeys = {"align", "apply_method"};
const std::vector<std::string> kQuantKeys = {"quant_dtype", "quant_scheme", "fuse_names"};
const std::vector<std::string> kDistilKeys = {"lambda", "link"};
const std::vector<std::string> kV2Keys = {"exclude",     "sparsity",   "sparsity_per_layer", "total_sparsity",
                                          "max_sparsity_per_layer", "op_partial_names", "quant_types", "quant_bits",
                                          "quant_start_step"};
/// The pruners a LinearPruner/AGPPruner can schedule (spec §2.8).
const std::vector<std::string> kSchedulable = {"LevelPruner", "L1NormPruner", "L2NormPruner",
                                               "FPGMPruner",  "SlimPruner",   "TaylorPruner"};

bool contains(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }

std::vector<std::string> all_prune_keys() {
  auto keys = kWeightKeys;
  keys.push_back("align");
  return keys;
}

[[noreturn]] void fail(const std::string& file, const YAML::Node& node, const std::string& message) {
  throw ConfigError(fmt::format("{}: {}", where(file, node), message));
}

std::vector<std::string> string_list(const std::string& file, const YAML::Node& node, const std::string& what) {
  if (!node.IsSequence())
    fail(file, node, fmt::format("{}: expected a list of strings (write [{}] for one)", what,
                                 node.IsScalar() ? node.Scalar() : "..."));
  std::vector<std::string> out;
  for (const auto& item : node) out.push_back(as_string(file, item, what));
  return out;
}

bool plain_int(const YAML::Node& n) {
  if (!n.IsScalar() || n.Tag() == "!") return false;
  const auto& s = n.Scalar();
  return !s.empty() && s.find_first_not_of("+-0123456789") == std::string::npos;
}

/// A Python `re.match` pattern as a whole-name std::regex; an error names what does not compile.
std::string start_anchored(const std::string& file, const YAML::Node& node, const std::string& pattern,
                           const std::string& what) {
  std::string full = "(?:" + pattern + ").*";
  try {
    std::regex check(full);
  } catch (const std::regex_error& e) {
    fail(file, node, fmt::format("{}: regex '{}' does not compile ({}); sparq uses ECMAScript regexes, so "
                                 "Python-only syntax such as (?P<name>...) or look-behind is not available",
                                 what, pattern, e.what()));
  }
  return full;
}

/// The registered op names of a list of op types (aliases resolved; an unknown one is an error).
std::vector<std::string> op_types_of(const std::string& file, const YAML::Node& node, const std::string& what) {
  std::vector<std::string> out;
  const auto names = string_list(file, node, what);
  for (size_t i = 0; i < names.size(); ++i) {
    const auto& name = names[i];
    const auto* op = models::find_op(name);
    if (!op)
      fail(file, node[i], fmt::format("{}: unknown op type '{}', did you mean '{}'? (types: {})", what, name,
                                      nearest(name, models::op_names()), fmt::join(models::op_names(), ", ")));
    out.push_back(op->name);
  }
  return out;
}

std::string group_id(const std::string& file, const YAML::Node& n, const std::string& what) {
  if (!n.IsScalar()) fail(file, n, fmt::format("{}: expected an integer or a string id", what));
  return plain_int(n) ? n.Scalar() : "'" + n.Scalar() + "'";
}

MaskGranularity granularity_of(const std::string& file, const YAML::Node& n, const std::string& what) {
  MaskGranularity g;
  using Kind = MaskGranularity::Kind;
  if (n.IsNull()) return g.kind = Kind::Element, g;
  if (n.IsScalar()) {
    static const std::map<std::string, Kind> names = {{"default", Kind::Default},
                                                      {"out_channel", Kind::OutChannel},
                                                      {"in_channel", Kind::InChannel},
                                                      {"per_channel", Kind::PerChannel}};
    auto it = names.find(n.Scalar());
    if (it == names.end())
      fail(file, n, fmt::format("{}: '{}' is not one of default, in_channel, out_channel, per_channel, null or a "
                                "block size list such as [2, 2]",
                                what, n.Scalar()));
    g.kind = it->second;
    return g;
  }
  if (!n.IsSequence() || n.size() == 0)
    fail(file, n, fmt::format("{}: expected default, in_channel, out_channel, per_channel, null or a list", what));
  g.kind = Kind::Block;
  YAML::Node kernel = n;
  if (n[0].IsSequence()) {  // the nested form [[K...], mode, value]
    kernel = n[0];
    if (n.size() > 3) fail(file, n, fmt::format("{}: the nested form is [[block sizes], front|back, pad value]", what));
    if (n.size() > 1) {
      auto mode = as_string(file, n[1], what);
      if (mode != "front" && mode != "back") fail(file, n[1], fmt::format("{}: padding mode '{}' is not front or back", what, mode));
      g.pad_front = mode == "front";
      g.pad_value = g.pad_front ? 1 : -1;
    }
    if (n.size() > 2) g.pad_value = as_int(file, n[2], what);
  }
  for (const auto& k : kernel) {
    int64_t v = as_int(file, k, what);
    if (v != -1 && v < 1) fail(file, k, fmt::format("{}: block size {} must be positive (or -1: the whole dim)", what, v));
    g.kernel.push_back(v);
  }
  return g;
}

double ratio_of(const std::string& file, const YAML::Node& n, const std::string& what, double lo, double hi,
                bool lo_open, bool hi_open) {
  double v = as_double(file, n, what);
  if ((lo_open ? v <= lo : v < lo) || (hi_open ? v >= hi : v > hi))
    fail(file, n, fmt::format("{}: {} is outside {}{}, {}{}", what, v, lo_open ? "(" : "[", lo, hi, hi_open ? ")" : "]"));
  return v;
}

/// One key of a pruning setting applied onto `s` (null resets it).
void apply_key(const std::string& file, const std::string& key, const YAML::Node& n, const std::string& what,
               MaskSetting& s) {
  const std::string w = what + "." + key;
  const bool null = n.IsNull();
  if (key == "sparse_ratio") {
    if (plain_int(n))
      fail(file, n, fmt::format("{}: write the ratio as a float ({}.0): NNI's schema rejects the integer {}", w,
                                n.Scalar(), n.Scalar()));
    s.sparse_ratio = null ? std::nullopt : std::optional<double>(ratio_of(file, n, w, 0, 1, false, false));
  } else if (key == "sparse_threshold") {
    s.sparse_threshold = null ? std::nullopt : std::optional<double>(as_double(file, n, w));
  } else if (key == "max_sparse_ratio") {
    s.max_sparse_ratio = null ? std::nullopt : std::optional<double>(ratio_of(file, n, w, 0, 1, true, false));
  } else if (key == "min_sparse_ratio") {
    s.min_sparse_ratio = null ? std::nullopt : std::optional<double>(ratio_of(file, n, w, 0, 1, false, true));
  } else if (key == "global_group_id") {
    s.global_group = null ? std::nullopt : std::optional<std::string>(group_id(file, n, w));
  } else if (key == "dependency_group_id") {
    s.dependency_group = null ? std::nullopt : std::optional<std::string>(group_id(file, n, w));
  } else if (key == "internal_metric_block") {
    if (null) s.internal_metric_block.reset();
    else {
      int64_t b = as_int(file, n, w);
      if (b < 1) fail(file, n, fmt::format("{}: {} must be at least 1", w, b));
      s.internal_metric_block = b;
    }
  } else if (key == "granularity") {
    s.granularity = granularity_of(file, n, w);
  } else if (key == "apply_method") {
    auto m = as_string(file, n, w);
    if (m != "mul" && m != "add" && m != "bypass")
      fail(file, n, fmt::format("{}: '{}' is not one of mul, add, bypass", w, m));
    s.apply_method = m;
  } else if (key == "align") {
    if (null) return s.align.reset();
    MapReader r(file, n, w, {"module_name", "target_name", "dims"});
    for (const char* k : {"target_name", "dims"})  // module_name: absent or null = this module
      if (!r.has(k)) fail(file, n, fmt::format("{}: needs target_name and dims (and module_name, null or absent: this module)", w));
    MaskAlign a;
    if (r.has("module_name") && !r.node("module_name").IsNull()) a.module = as_string(file, r.node("module_name"), w + ".module_name");
    a.target = r.require_string("target_name");
    if (!r.node("dims").IsSequence()) r.fail("dims", "expected a list of dims, such as [0]");
    a.dims = r.get_int_list("dims", {});
    s.align = a;
  }
}

/// Keys of a setting mapping (top level or a target_settings entry): every pruning key, checked;
/// quantization/distillation keys are refused with the reason.
void check_setting_key(const std::string& file, const YAML::Node& key, const std::string& what,
                       const std::vector<std::string>& allowed) {
  const auto& k = key.Scalar();
  if (contains(allowed, k)) return;
  if (contains(kQuantKeys, k))
    fail(file, key, fmt::format("{}: '{}' is an NNI quantization key: a quantization entry needs quant_dtype "
                                "(int8, uint8, ...; null for int8) at its top level",
                                what, k));
  if (contains(kDistilKeys, k))
    fail(file, key, fmt::format("{}: '{}' is an NNI distillation key: distillation entries go in the distiller's "
                                "own list (compression.distiller.config_list, or the job's distillation.config_list)",
                                what, k));
  if (contains(kV2Keys, k))
    fail(file, key, fmt::format("{}: '{}' is an NNI v2 key; this list has v3 keys, so write it as v3 (sparsity -> "
                                "sparse_ratio, exclude -> exclude_op_names/exclude_op_types) or all entries as v2",
                                what, k));
  fail(file, key, fmt::format("{}: unknown key '{}', did you mean '{}'?", what, k, nearest(k, allowed)));
}

void check_exclusive(const std::string& file, const YAML::Node& map, const std::string& what) {
  if (map["sparse_ratio"] && map["sparse_threshold"] && !map["sparse_ratio"].IsNull() && !map["sparse_threshold"].IsNull())
    fail(file, map["sparse_threshold"],
         fmt::format("{}: sparse_ratio and sparse_threshold exclude each other (one decides the mask)", what));
}

/// A target name of a pruning entry: weight, bias, or the module's first input/output (`_input_`
/// and `_input_0` are the same); returns it normalised.
std::string check_target(const std::string& file, const YAML::Node& node, const std::string& name,
                         const std::string& what) {
  if (name == "weight" || name == "bias") return name;
  if (name == "_input_" || name == "_input_0") return kInput;
  if (name == "_output_" || name == "_output_0") return kOutput;
  if (name.rfind("_input_", 0) == 0 || name.rfind("_output_", 0) == 0)
    fail(file, node, fmt::format("{}: target '{}': sparq's ops have one data input and one output; write _input_ / "
                                 "_input_0 or _output_ / _output_0 (inputs by argument name are not supported)",
                                 what, name));
  fail(file, node, fmt::format("{}: unknown target '{}' (pruning targets: weight, bias, _input_, _output_)", what, name));
}

/// The rule's module selection (op_names, op_names_re, op_types and their excludes).
void read_selector(const std::string& file, const YAML::Node& entry, const std::string& origin, Rule& rule) {
  if (!entry["op_types"] && !entry["op_names"] && !entry["op_names_re"])
    fail(file, entry, fmt::format("{}: needs at least one of op_types, op_names, op_names_re to select modules", origin));
  rule.where = where(file, entry);
  rule.origin = origin;
  auto list = [&](const char* key) { return string_list(file, entry[key], origin + "." + key); };
  if (entry["op_names"]) rule.select.names = list("op_names");
  if (entry["exclude_op_names"]) rule.select.exclude_names = list("exclude_op_names");
  for (const char* key : {"op_names_re", "exclude_op_names_re"}) {
    if (!entry[key]) continue;
    auto& out = std::string(key) == "op_names_re" ? rule.select.name_regexes : rule.select.exclude_name_regexes;
    auto patterns = list(key);
    for (size_t i = 0; i < patterns.size(); ++i)
      out.push_back(start_anchored(file, entry[key][i], patterns[i], origin + "." + key));
  }
  if (entry["op_types"]) rule.select.op_types = op_types_of(file, entry["op_types"], origin + ".op_types");
  if (entry["exclude_op_types"])
    rule.select.exclude_op_types = op_types_of(file, entry["exclude_op_types"], origin + ".exclude_op_types");
}

/// Every `target_settings` entry of a list entry: its normalised target, its name in messages and
/// its settings mapping (checked to be one).
void for_each_target_setting(const std::string& file, const YAML::Node& entry, const std::string& origin,
                             const std::function<void(const std::string& target, const std::string& what,
                                                      const YAML::Node& settings)>& visit) {
  YAML::Node ts = entry["target_settings"];
  if (!ts) return;
  if (!ts.IsMap()) fail(file, ts, fmt::format("{}.target_settings: expected a mapping target -> settings", origin));
  for (auto it = ts.begin(); it != ts.end(); ++it) {
    const std::string written = as_string(file, it->first, origin + ".target_settings");
    const std::string what = origin + ".target_settings." + written;
    const std::string target = check_target(file, it->first, written, origin + ".target_settings");
    if (!it->second.IsMap()) fail(file, it->second, fmt::format("{}: expected a mapping of settings", what));
    visit(target, what, it->second);
  }
}

/// A quantization entry's settings of one target (spec §1.5 template Q, §3.1, §3.5).
struct QuantTarget {
  std::optional<std::string> dtype, scheme;
  std::string granularity = "default";
};

void apply_quant_key(const std::string& file, const std::string& key, const YAML::Node& v, const std::string& what,
                     QuantTarget& t) {
  if (key == "quant_dtype") {
    if (v.IsNull()) return t.dtype.reset();
    std::string d = as_string(file, v, what + ".quant_dtype");
    bool sign = d.rfind("int", 0) == 0, unsign = d.rfind("uint", 0) == 0;
    std::string digits = d.substr(unsign ? 4 : sign ? 3 : 0);
    int bits = digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 2 ? 0
                                                                                                         : std::stoi(digits);
    if ((!sign && !unsign) || bits < (unsign ? 1 : 2) || bits > 32)
      fail(file, v, fmt::format("{}.quant_dtype: '{}' is not int2..int32 or uint1..uint32", what, d));
    t.dtype = d;
  } else if (key == "quant_scheme") {
    if (v.IsNull()) return t.scheme.reset();
    std::string s = as_string(file, v, what + ".quant_scheme");
    if (s != "symmetric" && s != "affine")
      fail(file, v, fmt::format("{}.quant_scheme: '{}' is not symmetric or affine (or null)", what, s));
    t.scheme = s;
  } else if (key == "granularity") {
    if (v.IsNull()) return void(t.granularity = "default");
    if (!v.IsScalar())
      fail(file, v, fmt::format("{}.granularity: block granularities are not supported for quantization yet; use "
                                "default, out_channel, in_channel or per_channel",
                                what));
    std::string g = v.Scalar();
    if (g != "default" && g != "out_channel" && g != "in_channel" && g != "per_channel")
      fail(file, v, fmt::format("{}.granularity: '{}' is not default, out_channel, in_channel or per_channel", what, g));
    t.granularity = g;
  } else if (key == "apply_method") {
    std::string m = as_string(file, v, what + ".apply_method");
    if (m != "bypass" && m != "clamp_round" && m != "qat_clamp_round")
      fail(file, v, fmt::format("{}.apply_method: '{}' is not bypass, clamp_round or qat_clamp_round", what, m));
  }
}

/// The integer spec of a quantization target (the quantizer's method is set by the job section).
quant::IntegerSpec integer_spec(const QuantTarget& t, const std::string& target) {
  quant::IntegerSpec s;
  std::string d = t.dtype.value_or("int8");  // null: int8 (spec §3.1)
  s.is_signed = d[0] == 'i';
  s.bits = std::stoi(d.substr(s.is_signed ? 3 : 4));
  s.narrow = s.is_signed;  // NNI's int<b>: +-(2^(b-1) - 1)
  s.symmetric = t.scheme.value_or("symmetric") == "symmetric";
  s.channel_dim = t.granularity == "out_channel" ? 0 : t.granularity == "in_channel" || t.granularity == "per_channel" ? 1 : -1;
  s.method = quant::IntegerMethod::Qat;
  s.output_lane = target == kOutput;
  return s;
}

const std::vector<std::string> kQuantTargetKeys = {"quant_dtype", "quant_scheme", "granularity", "apply_method"};

/// A quantization entry (it has quant_dtype): template Q on every target the selected ops have
/// (weight, bias, _input_0, _output_0; activations: the lanes), shorthand keys on all of them,
/// target_settings merged over them.
Rule quant_rule_of(const std::string& file, const YAML::Node& entry, const std::string& origin) {
  std::vector<std::string> allowed = kSelectors;
  for (const char* k : {"target_names", "target_settings", "quant_dtype", "quant_scheme", "granularity", "apply_method",
                        "fuse_names"})
    allowed.push_back(k);  // fuse_names: the fusion rules plan_of_v3 adds
  for (auto it = entry.begin(); it != entry.end(); ++it) {
    const auto& k = it->first.Scalar();
    if (contains(allowed, k)) continue;
    if (contains(kWeightKeys, k) || k == "align")
      fail(file, it->first, fmt::format("{}: '{}' is a pruning key; this entry quantizes (it has quant_dtype): give "
                                        "pruning in its own entry",
                                        origin, k));
    check_setting_key(file, it->first, origin, allowed);
  }
  Rule rule;
  read_selector(file, entry, origin, rule);
  std::map<std::string, QuantTarget> settings;
  std::vector<std::string> order = {"weight", "bias", kInput, kOutput};
  for (const auto& t : order) settings[t] = QuantTarget{};
  for (auto it = entry.begin(); it != entry.end(); ++it)
    if (contains(kQuantTargetKeys, it->first.Scalar()))
      for (auto& [t, s] : settings) apply_quant_key(file, it->first.Scalar(), it->second, origin, s);
  for_each_target_setting(file, entry, origin, [&](const std::string& target, const std::string& what, const YAML::Node& map) {
    for (auto s = map.begin(); s != map.end(); ++s) {
      check_setting_key(file, s->first, what, kQuantTargetKeys);
      apply_quant_key(file, s->first.Scalar(), s->second, what, settings[target]);
    }
  });
  if (YAML::Node tn = entry["target_names"]) {
    auto names = string_list(file, tn, origin + ".target_names");
    order.clear();
    for (size_t i = 0; i < names.size(); ++i) order.push_back(check_target(file, tn[i], names[i], origin + ".target_names"));
  }
  for (const auto& target : order) {
    const auto& t = settings[target];
    bool param = target == "weight" || target == "bias";
    if (param && t.granularity == "per_channel")
      fail(file, entry, fmt::format("{}: {}: per_channel is for inputs and outputs; use out_channel or in_channel for "
                                    "parameters",
                                    origin, target));
    if (!param && (t.granularity == "out_channel" || t.granularity == "in_channel"))
      fail(file, entry, fmt::format("{}: {}: {} is for parameters; use per_channel for inputs and outputs", origin,
                                    target, t.granularity));
    rule.targets[target].quant = QuantSetting::of(integer_spec(t, target));
  }
  return rule;  // targets an op lacks (a ReLU's weight) are left out by resolve
}

Rule rule_of(const std::string& file, const YAML::Node& entry, const std::string& origin) {
  if (!entry.IsMap()) fail(file, entry, fmt::format("{}: expected a mapping (op_names/op_types/... and settings)", origin));
  if (entry["quant_dtype"]) return quant_rule_of(file, entry, origin);
  std::vector<std::string> allowed = kSelectors;
  allowed.push_back("target_names");
  allowed.push_back("target_settings");
  for (const auto& k : all_prune_keys()) allowed.push_back(k);
  for (auto it = entry.begin(); it != entry.end(); ++it) check_setting_key(file, it->first, origin, allowed);
  check_exclusive(file, entry, origin);
  Rule rule;
  read_selector(file, entry, origin, rule);
  rule.targets_must_exist = true;
  // The pruning template (spec §1.5), shorthand keys pushed into the targets whose template has
  // them, then target_settings merged shallowly.
  std::map<std::string, MaskSetting> settings;
  settings["weight"] = MaskSetting{};
  MaskSetting bias;
  bias.granularity.kind = MaskGranularity::Kind::Element;
  bias.align = MaskAlign{};
  settings["bias"] = bias;
  std::vector<std::string> order = {"weight", "bias"};
  for (auto it = entry.begin(); it != entry.end(); ++it) {
    const auto& key = it->first.Scalar();
    if (contains(kWeightKeys, key)) apply_key(file, key, it->second, origin, settings["weight"]);
    if (contains(kBiasKeys, key)) apply_key(file, key, it->second, origin, settings["bias"]);
  }
  for_each_target_setting(file, entry, origin, [&](const std::string& target, const std::string& what, const YAML::Node& map) {
    for (auto s = map.begin(); s != map.end(); ++s) check_setting_key(file, s->first, what, all_prune_keys());
    check_exclusive(file, map, what);
    for (auto s = map.begin(); s != map.end(); ++s) apply_key(file, s->first.Scalar(), s->second, what, settings[target]);
  });
  if (YAML::Node tn = entry["target_names"]) {
    auto names = string_list(file, tn, origin + ".target_names");
    order.clear();
    for (size_t i = 0; i < names.size(); ++i) {
      order.push_back(check_target(file, tn[i], names[i], origin + ".target_names"));
      if (!settings.count(order.back()))
        fail(file, tn[i], fmt::format("{}.target_names: '{}' has no settings in this entry (the pruning template "
                                      "covers weight and bias; give the others in target_settings)",
                                      origin, names[i]));
    }
  }
  for (const auto& target : order) {
    PruneSetting p;
    p.mask = settings[target];
    rule.targets[target].prune = p;
  }
  return rule;
}

Plan plan_of_v3(const std::string& file, const YAML::Node& list, const std::vector<std::string>& origins,
                const std::string& dialect) {
  Plan plan;
  plan.dialect = dialect;
  plan.precedence = Precedence::FirstWins;
  for (size_t i = 0; i < list.size(); ++i) {
    plan.rules.push_back(rule_of(file, list[i], origins[i]));
    // fuse_names: [[lead, follower...], ...] (spec §3.7), one rule per lead
    if (!list[i].IsMap() || !list[i]["fuse_names"]) continue;
    YAML::Node fuse = list[i]["fuse_names"];
    const std::string what = origins[i] + ".fuse_names";
    if (!fuse.IsSequence()) fail(file, fuse, what + ": expected a list of [lead, follower(s)] name lists");
    for (const auto& group : fuse) {
      auto names = string_list(file, group, what);
      if (names.size() < 2 || names.size() > 3)
        fail(file, group, fmt::format("{}: a fusion names 2 or 3 modules (Linear/Conv, BatchNorm, ReLU), got {}", what,
                                      names.size()));
      Rule r;
      r.select.names = {names[0]};
      r.module.fuse_with.assign(names.begin() + 1, names.end());
      r.where = where(file, group), r.origin = what;
      r.names_must_exist = true;
      plan.rules.push_back(r);
    }
  }
  return plan;
}

// ---- v2 ----

std::string regex_escape(const std::string& s) {
  static const std::string special = R"(\^$.|?*+()[]{}-/)";
  std::string out;
  for (char c : s) {
    if (special.find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out;
}

YAML::Node strings(const std::vector<std::string>& v) {
  YAML::Node n(YAML::NodeType::Sequence);
  for (const auto& s : v) n.push_back(s);
  return n;
}

/// A v2 value that is either one for all quantization types or a mapping per type.
std::string per_type(const std::string& file, const YAML::Node& n, const std::string& type, const std::string& what,
                     const std::string& fallback) {
  if (!n) return fallback;
  if (n.IsMap()) return n[type] ? as_string(file, n[type], what + "." + type) : fallback;
  return as_string(file, n, what);
}

}  // namespace

bool is_nni_v2(const YAML::Node& list) {
  if (!list.IsSequence()) return false;
  for (const auto& entry : list)
    if (entry.IsMap())
      for (const auto& k : kV2Keys)
        if (entry[k]) return true;
  return false;
}

YAML::Node nni_v2_to_v3(const std::string& file, const YAML::Node& list, std::vector<std::string>* notes) {
  const std::vector<std::string> allowed = {"op_types",        "op_names",          "op_partial_names",
                                            "exclude",         "sparsity",          "sparsity_per_layer",
                                            "total_sparsity",  "max_sparsity_per_layer", "quant_types",
                                            "quant_bits",      "quant_dtype",       "quant_scheme",
                                            "quant_start_step"};
  struct V2 {
    YAML::Node node;
    bool exclude = false;
    std::vector<std::string> types, names, partial;
  };
  std::vector<V2> entries;
  std::optional<int64_t> start_step;
  for (size_t i = 0; i < list.size(); ++i) {
    const YAML::Node& e = list[i];
    const std::string origin = fmt::format("config list entry {} (NNI v2)", i + 1);
    if (!e.IsMap()) fail(file, e, origin + ": expected a mapping");
    for (auto it = e.begin(); it != e.end(); ++it) {
      const auto& k = it->first.Scalar();
      if (contains(allowed, k)) continue;
      if (contains(kSelectors, k) || contains(all_prune_keys(), k) || k == "target_names" || k == "target_settings")
        fail(file, it->first, fmt::format("{}: '{}' is an NNI v3 key in a list with v2 keys (sparsity, exclude, "
                                          "...); write every entry in one form",
                                          origin, k));
      fail(file, it->first, fmt::format("{}: unknown key '{}', did you mean '{}'?", origin, k, nearest(k, allowed)));
    }
    V2 v;
    v.node = e;
    if (!e["op_types"] && !e["op_names"] && !e["op_partial_names"])
      fail(file, e, origin + ": needs at least one of op_types, op_names, op_partial_names");
    if (e["op_types"]) {
      for (const auto& t : string_list(file, e["op_types"], origin + ".op_types")) {
        if (t == "default") v.types.insert(v.types.end(), {"Linear", "Conv1d", "Conv2d"});
        else v.types.push_back(t);
      }
    }
    if (e["op_names"]) v.names = string_list(file, e["op_names"], origin + ".op_names");
    if (e["op_partial_names"]) v.partial = string_list(file, e["op_partial_names"], origin + ".op_partial_names");
    v.exclude = e["exclude"] && as_bool(file, e["exclude"], origin + ".exclude");
    if (e["exclude"] && !v.exclude) fail(file, e["exclude"], origin + ".exclude: only 'exclude: true' has a meaning");
    const bool quant = e["quant_types"] || e["quant_bits"];
    int sparsity_keys = (e["sparsity"] ? 1 : 0) + (e["sparsity_per_layer"] ? 1 : 0) + (e["total_sparsity"] ? 1 : 0);
    if (e["sparsity"] && e["sparsity_per_layer"])
      fail(file, e["sparsity_per_layer"], origin + ": sparsity and sparsity_per_layer mean the same; keep one");
    if (v.exclude && (sparsity_keys || quant))
      fail(file, e["exclude"], origin + ": exclude and a sparsity/quantization setting exclude each other");
    if (!v.exclude && !sparsity_keys && !quant)
      fail(file, e, origin + ": needs sparsity, sparsity_per_layer, total_sparsity (pruning), quant_types and "
                             "quant_bits (quantization) or exclude: true");
    if (quant && (!e["quant_types"] || !e["quant_bits"]))
      fail(file, e, origin + ": quantization needs both quant_types and quant_bits");
    for (const char* k : {"sparsity", "sparsity_per_layer", "total_sparsity"})
      if (e[k]) ratio_of(file, e[k], origin + "." + k, 0, 1, false, true);
    if (e["max_sparsity_per_layer"]) ratio_of(file, e["max_sparsity_per_layer"], origin + ".max_sparsity_per_layer", 0, 1, true, false);
    if (e["quant_start_step"]) {
      int64_t s = as_int(file, e["quant_start_step"], origin + ".quant_start_step");
      if (s < 0) fail(file, e["quant_start_step"], origin + ".quant_start_step: must be >= 0");
      if (start_step && *start_step != s && notes)
        notes->push_back(fmt::format("entries disagree on quant_start_step ({} and {}); the quantizer takes the "
                                     "smaller",
                                     *start_step, s));
      start_step = std::min(start_step.value_or(s), s);
    }
    entries.push_back(std::move(v));
  }
  if (start_step && notes)
    notes->push_back(fmt::format("quant_start_step {} is an argument of the quantizer in v3: compression: "
                                 "{{quantizer: {{type: QATQuantizer, quant_start_step: {}}}, config_list: ...}}",
                                 *start_step, *start_step));
  // v2: the last matching entry decides and an exclude entry only overrides the entries before it;
  // v3: the first wins. So: reversed, each entry excluding what later exclude entries match.
  YAML::Node out(YAML::NodeType::Sequence);
  for (size_t i = entries.size(); i-- > 0;) {
    const auto& v = entries[i];
    if (v.exclude) continue;
    const YAML::Node& e = v.node;
    YAML::Node d(YAML::NodeType::Map);
    if (!v.types.empty()) d["op_types"] = strings(v.types);
    if (!v.names.empty()) d["op_names"] = strings(v.names);
    std::vector<std::string> re;
    for (const auto& p : v.partial) re.push_back(".*" + regex_escape(p) + ".*");
    if (!re.empty()) d["op_names_re"] = strings(re);
    std::vector<std::string> ex_names, ex_types, ex_re;
    for (size_t j = i + 1; j < entries.size(); ++j) {
      const auto& x = entries[j];
      if (!x.exclude) continue;
      if (!x.types.empty() && (!x.names.empty() || !x.partial.empty()) && notes)
        notes->push_back(fmt::format("config list entry {} excludes modules that match both its op_types and its "
                                     "names; v3 excludes either (the union)",
                                     j + 1));
      ex_names.insert(ex_names.end(), x.names.begin(), x.names.end());
      ex_types.insert(ex_types.end(), x.types.begin(), x.types.end());
      for (const auto& p : x.partial) ex_re.push_back(".*" + regex_escape(p) + ".*");
    }
    if (!ex_names.empty()) d["exclude_op_names"] = strings(ex_names);
    if (!ex_re.empty()) d["exclude_op_names_re"] = strings(ex_re);
    if (!ex_types.empty()) d["exclude_op_types"] = strings(ex_types);
    auto as_float = [](double x) {
      std::string s = fmt::format("{}", x);
      if (s.find_first_of(".e") == std::string::npos) s += ".0";
      return s;
    };
    const std::string origin = fmt::format("config list entry {} (NNI v2)", i + 1);
    for (const char* k : {"sparsity", "sparsity_per_layer"})
      if (e[k]) d["sparse_ratio"] = as_float(as_double(file, e[k], origin));
    if (e["total_sparsity"]) {
      d["sparse_ratio"] = as_float(as_double(file, e["total_sparsity"], origin));
      d["global_group_id"] = fmt::format("total_sparsity_{}", i + 1);
      d["max_sparse_ratio"] = e["max_sparsity_per_layer"]
                                  ? as_float(as_double(file, e["max_sparsity_per_layer"], origin))
                                  : std::string("0.99");  // v2's implicit cap in global mode
    } else if (e["max_sparsity_per_layer"]) {
      d["max_sparse_ratio"] = as_float(as_double(file, e["max_sparsity_per_layer"], origin));
    }
    if (e["quant_types"]) {
      std::vector<std::string> types = e["quant_types"].IsScalar()
                                           ? std::vector<std::string>{e["quant_types"].Scalar()}
                                           : string_list(file, e["quant_types"], origin + ".quant_types");
      YAML::Node names(YAML::NodeType::Sequence), settings(YAML::NodeType::Map);
      std::string first_dtype;
      for (const char* type : {"input", "weight", "output"}) {
        if (!contains(types, type)) continue;
        std::string target = std::string(type) == "input" ? "_input_" : std::string(type) == "weight" ? "weight" : "_output_";
        std::string bits_text = per_type(file, e["quant_bits"], type, origin + ".quant_bits", "");
        if (bits_text.empty()) fail(file, e["quant_bits"], fmt::format("{}.quant_bits: no bits for '{}'", origin, type));
        int64_t bits = as_int(file, e["quant_bits"].IsMap() ? e["quant_bits"][type] : e["quant_bits"], origin + ".quant_bits");
        if (bits < 1 || bits > 31) fail(file, e["quant_bits"], fmt::format("{}.quant_bits: {} is outside 1..31", origin, bits));
        std::string dtype = per_type(file, e["quant_dtype"], type, origin + ".quant_dtype", "uint");
        if (dtype != "int" && dtype != "uint")
          fail(file, e["quant_dtype"], fmt::format("{}.quant_dtype: '{}' is not int or uint", origin, dtype));
        std::string scheme = per_type(file, e["quant_scheme"], type, origin + ".quant_scheme", "per_tensor_affine");
        static const std::vector<std::string> schemes = {"per_tensor_affine", "per_tensor_symmetric",
                                                         "per_channel_affine", "per_channel_symmetric"};
        if (!contains(schemes, scheme))
          fail(file, e["quant_scheme"], fmt::format("{}.quant_scheme: '{}' is not one of {}", origin, scheme,
                                                    fmt::join(schemes, ", ")));
        YAML::Node s(YAML::NodeType::Map);
        s["quant_dtype"] = fmt::format("{}{}", dtype, bits);
        s["quant_scheme"] = scheme.find("affine") != std::string::npos ? "affine" : "symmetric";
        s["granularity"] = scheme.rfind("per_channel", 0) == 0 ? (target == "weight" ? "out_channel" : "per_channel")
                                                               : "default";
        if (first_dtype.empty()) first_dtype = s["quant_dtype"].as<std::string>();
        names.push_back(target);
        settings[target] = s;
      }
      for (const auto& t : types)
        if (t != "input" && t != "weight" && t != "output")
          fail(file, e["quant_types"], fmt::format("{}.quant_types: '{}' is not input, weight or output", origin, t));
      d["quant_dtype"] = first_dtype;
      d["target_names"] = names;
      d["target_settings"] = settings;
    }
    out.push_back(d);
  }
  return out;
}

Plan read_nni_list(const std::string& file, const YAML::Node& list) {
  if (!list.IsSequence()) fail(file, list, "an NNI config list is a list of mappings");
  if (is_nni_v2(list)) {
    std::vector<std::string> notes;
    YAML::Node v3 = nni_v2_to_v3(file, list, &notes);
    // Positions and names in errors refer to the v2 entries the v3 ones came from.
    std::vector<std::string> origins;
    std::vector<size_t> source;
    for (size_t i = list.size(); i-- > 0;)
      if (!list[i]["exclude"]) source.push_back(i);
    for (size_t j = 0; j < v3.size(); ++j) origins.push_back(fmt::format("config list entry {} (NNI v2)", source[j] + 1));
    Plan plan = plan_of_v3(file, v3, origins, "nni-v2");
    for (size_t j = 0; j < plan.rules.size(); ++j) plan.rules[j].where = where(file, list[source[j]]);
    return plan;
  }
  std::vector<std::string> origins;
  for (size_t i = 0; i < list.size(); ++i) origins.push_back(fmt::format("config list entry {}", i + 1));
  return plan_of_v3(file, list, origins, "nni-v3");
}

namespace {

PruningSpec read_pruner(const std::string& file, const YAML::Node& node, const std::string& what, bool inner) {
  if (!node.IsMap()) fail(file, node, fmt::format("{}: expected a mapping {{type: L1NormPruner, ...}}", what));
  if (!node["type"]) fail(file, node, fmt::format("{}: needs type (pruners: {})", what, fmt::join(prune::pruner_names(), ", ")));
  const std::string type = as_string(file, node["type"], what + ".type");
  const auto* info = prune::find_pruner(type);
  if (!info)
    fail(file, node["type"], fmt::format("{}.type: unknown pruner '{}', did you mean '{}'? (pruners: {})", what, type,
                                         nearest(type, prune::pruner_names()), fmt::join(prune::pruner_names(), ", ")));
  if (inner && !contains(kSchedulable, type))
    fail(file, node["type"], fmt::format("{}.type: {} cannot be scheduled by LinearPruner/AGPPruner (they schedule: "
                                         "{})",
                                         what, type, fmt::join(kSchedulable, ", ")));
  std::vector<std::string> keys = {"type"};
  for (const auto& p : info->params)
    if (!(inner && p.name == "start_epoch")) keys.push_back(p.name);
  if (info->wraps_pruner) keys.push_back("pruner");
  MapReader r(file, node, what + " (" + type + ")", keys);
  PruningSpec spec{type, read_params(r, info->params)};
  if (info->wraps_pruner) {
    if (!r.has("pruner"))
      r.fail("pruner", fmt::format("{} schedules another pruner: pruner: {{type: L1NormPruner}}", type));
    auto in = read_pruner(file, r.node("pruner"), what + ".pruner", true);
    spec.params["pruner"] = in.method;
    for (const auto& [k, v] : in.params)
      if (k != "start_epoch") spec.params["pruner." + k] = v;
  }
  return spec;
}

}  // namespace

namespace {

/// NNI's quantizer classes and the IntegerMethod each one gives every quantization target.
const std::vector<std::pair<std::string, quant::IntegerMethod>> kQuantizers = {
    {"QATQuantizer", quant::IntegerMethod::Qat},         {"PtqQuantizer", quant::IntegerMethod::Ptq},
    {"LsqQuantizer", quant::IntegerMethod::Lsq},         {"LsqPlusQuantizer", quant::IntegerMethod::LsqPlus},
    {"DoReFaQuantizer", quant::IntegerMethod::Dorefa},   {"BNNQuantizer", quant::IntegerMethod::Bnn},
};

/// `quantizer: {type: QATQuantizer, quant_start_step: 100}`: the plan's quantizer and the method of
/// every quantization target.
void set_quantizer(const std::string& file, const YAML::Node& node, Plan& plan) {
  const std::string what = "compression.quantizer";
  if (!node.IsMap() || !node["type"]) fail(file, node, what + ": expected a mapping {type: QATQuantizer, ...}");
  const std::string type = as_string(file, node["type"], what + ".type");
  std::vector<std::string> names;
  for (const auto& [n, m] : kQuantizers) names.push_back(n);
  auto it = std::find_if(kQuantizers.begin(), kQuantizers.end(), [&](const auto& q) { return q.first == type; });
  if (it == kQuantizers.end())
    fail(file, node["type"], fmt::format("{}.type: unknown quantizer '{}', did you mean '{}'? (quantizers: {})", what,
                                         type, nearest(type, names), fmt::join(names, ", ")));
  std::vector<std::string> keys = {"type", "calibration"};
  if (type == "QATQuantizer") keys.push_back("quant_start_step");
  if (type == "PtqQuantizer") keys.push_back("calibration_batches"), keys.push_back("is_bias_correction");
  MapReader r(file, node, what + " (" + type + ")", keys);
  PruningSpec spec;
  spec.method = type;
  if (r.has("calibration")) {  // a calibration.json written by an earlier run, loaded back
    auto path = (fs::path(file).parent_path() / r.require_string("calibration")).lexically_normal();
    if (fs::is_directory(path)) path /= "calibration.json";
    if (!fs::is_regular_file(path)) r.fail("calibration", fmt::format("'{}' is not a calibration.json (or a run folder holding one)", path.string()));
    spec.params["calibration"] = path.string();
  }
  if (type == "QATQuantizer") spec.params["quant_start_step"] = r.get_int("quant_start_step", 0, 0);
  if (type == "PtqQuantizer") {
    spec.params["calibration_batches"] = r.get_int("calibration_batches", 32, 1);
    if (r.get_bool("is_bias_correction", false)) {
      if (r.has("calibration"))
        r.fail("is_bias_correction", "bias correction needs a calibration pass; it cannot be combined with a loaded calibration table");
      spec.params["is_bias_correction"] = true;
    }
  }
  bool any = false;
  for (auto& rule : plan.rules)
    for (auto& [target, t] : rule.targets) {
      if (!t.quant || !t.quant->spec) continue;
      auto* n = std::get_if<quant::IntegerSpec>(&*t.quant->spec);
      if (!n) continue;
      any = true;
      n->method = it->second;
      if ((type == "DoReFaQuantizer" || type == "BNNQuantizer") && n->channel_dim >= 0)
        throw ConfigError(fmt::format("{}: {}: {} takes no granularity (one scale per tensor); remove granularity",
                                      rule.where, rule.origin, type));
    }
  if (!any) fail(file, node, fmt::format("{}: the config list has no quantization entry (one with quant_dtype)", what));
  plan.quantizer = spec;
}

/// One entry of a distiller's config list (spec §4): selection, `_output_0` only, lambda, link,
/// apply_method; null values take NNI's defaults.
DistillRule distill_rule_of(const std::string& file, const YAML::Node& entry, const std::string& origin) {
  if (!entry.IsMap()) fail(file, entry, origin + ": expected a mapping (op_names/op_types, lambda, link, apply_method)");
  std::vector<std::string> allowed = kSelectors;
  for (const char* k : {"target_names", "lambda", "link", "apply_method"}) allowed.push_back(k);
  MapReader r(file, entry, origin, allowed);
  Rule selection;
  read_selector(file, entry, origin, selection);
  DistillRule d;
  d.select = selection.select, d.where = selection.where, d.origin = origin;
  if (YAML::Node tn = entry["target_names"])
    for (const auto& name : string_list(file, tn, origin + ".target_names"))
      if (name != "_output_" && name != "_output_0")
        fail(file, tn, fmt::format("{}.target_names: '{}': distillation pulls module outputs together; the only "
                                   "target is _output_0",
                                   origin, name));
  auto present = [&](const char* key) { return entry[key] && !entry[key].IsNull(); };
  // NNI's schema allows an integer lambda (and then crashes); sparq takes any number >= 0.
  if (present("lambda")) d.lambda = r.get_double("lambda", 1.0, 0.0);
  if (present("apply_method")) d.method = r.get_choice("apply_method", "mse", {"mse", "kl"});
  if (present("link")) {
    YAML::Node link = entry["link"];
    if (link.IsScalar()) {  // a name, or 'auto' for the student's own
      if (link.Scalar() != "auto") d.links = {link.Scalar()};
    } else {
      d.links = string_list(file, link, origin + ".link");
      if (d.links.empty()) r.fail("link", "an empty list links to no teacher module; leave it out (or 'auto') for the student's own name");
    }
  }
  return d;
}

}  // namespace

Distillation read_distillation(const std::string& file, const YAML::Node& node, const std::string& what,
                               const std::string& base_dir) {
  MapReader r(file, node, what, {"type", "teacher", "origin_loss_lambda", "config_list"});
  Distillation d;
  d.where = where(file, node);
  d.type = r.get_choice("type", d.type, {"DynamicLayerwiseDistiller", "Adaptive1dLayerwiseDistiller"});
  d.origin_loss_lambda = r.get_double("origin_loss_lambda", 1.0, 0.0);
  const fs::path base = base_dir.empty() ? fs::path(file).parent_path() : fs::path(base_dir);
  auto relative = [&](const std::string& p) { return fs::path(p).is_absolute() ? p : (base / p).lexically_normal().string(); };
  if (!r.has("teacher"))
    r.fail("teacher", "is required: a run folder of the teacher, or {model: ZOO-NAME-or-MODEL.yaml, weights: model.pt}");
  YAML::Node teacher = r.node("teacher");
  if (teacher.IsScalar()) {
    d.teacher_run = relative(teacher.Scalar());
    for (const char* f : {"model.yaml", "model.pt"})
      if (!fs::is_regular_file(fs::path(d.teacher_run) / f))
        r.fail("teacher", fmt::format("'{}' is not a run folder: it has no {} (a teacher is a run sparq trained, or "
                                      "{{model: ..., weights: ...}})",
                                      d.teacher_run, f));
  } else {
    MapReader t(file, teacher, what + ".teacher", {"model", "weights"});
    d.teacher_model = t.require_string("model");
    const auto zoo = models::zoo_names();
    if (std::find(zoo.begin(), zoo.end(), d.teacher_model) == zoo.end()) {
      d.teacher_model = relative(d.teacher_model);
      if (!fs::is_regular_file(d.teacher_model))
        t.fail("model", fmt::format("'{}' is neither a zoo model ({}) nor a model YAML file", d.teacher_model,
                                    fmt::join(zoo, ", ")));
    }
    d.teacher_weights = relative(t.require_string("weights"));
    if (!fs::exists(d.teacher_weights)) t.fail("weights", fmt::format("'{}' does not exist", d.teacher_weights));
  }
  if (!r.has("config_list")) r.fail("config_list", "is required: the student modules to distil (op_names, link, lambda, apply_method)");
  YAML::Node list = r.node("config_list");
  std::string list_file = file;
  if (list.IsScalar()) {
    auto path = relative(list.Scalar());
    if (!fs::exists(path)) r.fail("config_list", fmt::format("file '{}' does not exist", path));
    auto doc = load_config_file(path);
    list_file = doc.file, list = doc.root;
  }
  if (!list.IsSequence() || list.size() == 0)
    fail(list_file, list, what + ".config_list: expected a non-empty list of mappings");
  for (size_t i = 0; i < list.size(); ++i) {
    d.rules.push_back(distill_rule_of(list_file, list[i], fmt::format("{}.config_list[{}]", what, i)));
    if (d.type == "Adaptive1dLayerwiseDistiller" && d.rules.back().links.size() > 1)
      fail(list_file, list[i]["link"], fmt::format("{}.config_list[{}].link: Adaptive1dLayerwiseDistiller takes exactly "
                                                   "one teacher module per target (DynamicLayerwiseDistiller takes several)",
                                                   what, i));
  }
  return d;
}

Plan read_nni_section(const std::string& file, const YAML::Node& section) {
  MapReader r(file, section, "compression", {"pruner", "config_list", "dependency_groups", "speedup", "quantizer", "distiller"});
  if (!r.has("config_list")) {
    if (r.has("distiller") && !r.has("pruner") && !r.has("quantizer")) {  // distillation alone: a float student
      Plan plan;
      plan.dialect = "nni-v3";
      plan.distillation = read_distillation(file, r.node("distiller"), "compression.distiller");
      return plan;
    }
    r.fail("config_list", "is required: the NNI config list (a file or an inline list)");
  }
  YAML::Node list = r.node("config_list");
  std::string list_file = file;
  if (list.IsScalar()) {
    auto path = (fs::path(file).parent_path() / list.Scalar()).string();
    if (!fs::exists(path)) r.fail("config_list", fmt::format("file '{}' does not exist", path));
    auto doc = load_config_file(path);
    list_file = doc.file, list = doc.root;
  }
  if (!list.IsSequence()) fail(list_file, list, "config_list: expected a list of mappings (an NNI config list)");
  Plan plan = read_nni_list(list_file, list);
  if (r.has("pruner")) plan.pruner = read_pruner(file, r.node("pruner"), "compression.pruner", false);
  if (r.has("quantizer")) set_quantizer(file, r.node("quantizer"), plan);
  plan.auto_dependency_groups = r.get_choice("dependency_groups", "none", {"none", "auto"}) == "auto";
  plan.speedup = r.get_bool("speedup", false);
  if (r.has("distiller")) plan.distillation = read_distillation(file, r.node("distiller"), "compression.distiller");
  return plan;
}

namespace {

bool is_nni_list(const YAML::Node& root) {
  if (!root.IsSequence() || root.size() == 0) return false;
  for (const auto& item : root)
    if (!item.IsMap() || has_tag(item)) return false;
  return true;
}

/// A bare config list, or the job form {pruner: ..., config_list: ...}.
bool is_nni(const YAML::Node& root) {
  return is_nni_list(root) || (root.IsMap() && (root["config_list"] || root["pruner"] || root["distiller"]));
}

Plan read_nni(const std::string& file, const YAML::Node& root, const LoadOptions&) {
  return root.IsMap() ? read_nni_section(file, root) : read_nni_list(file, root);
}

const bool registered = register_dialect({"nni", "NNI config list", is_nni, read_nni});

}  // namespace

}  // namespace sparq::config
