// The PQuantML config dialect (seeds 000/001, spec pquantml-*.md §1). Reading is two steps: the
// five sections are read into a PquantConfig (the config as written, so it can be written back
// with every field), which is then lowered to the dialect-neutral Plan: PQuantML's defaults and
// its ReLU/Tanh/Sigmoid formats, layer_specific overrides and disable_pruning_for_layers become
// rules, its stages the schedule, the HGQ beta curve events.
#pragma once

#include <yaml-cpp/yaml.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "sparq/plan.h"

namespace sparq::config {

/// A layer_specific override of one target's format ("input", "weight", "bias", "output").
struct TargetOverride {
  std::optional<int> k, i, f;
  std::optional<bool> quantize;  ///< data targets: switch the lane on or off
  bool operator==(const TargetOverride& o) const {
    return k == o.k && i == o.i && f == o.f && quantize == o.quantize;
  }
};

/// Overrides of one layer, by target; `where` is the config position for errors.
struct LayerOverride {
  std::map<std::string, TargetOverride> targets;
  std::string where;
  bool operator==(const LayerOverride& o) const { return targets == o.targets; }
};

/// One point of hgq_beta_schedule; `interp` shapes the segment to the next point.
struct BetaPoint {
  int64_t epoch = 0;  ///< 0-based global epoch
  double beta = 0;
  Event::Interp interp = Event::Interp::Constant;
  bool operator==(const BetaPoint& o) const { return epoch == o.epoch && beta == o.beta && interp == o.interp; }
};

/// quantization_parameters as written.
struct PquantQuantization {
  bool enabled = true;               ///< false: PQ layers run in float (pruning still applies)
  quant::FixedSpec weight{1, 0, 7};  ///< weights and biases
  quant::FixedSpec data{0, 0, 7};    ///< inputs, outputs, activations
  bool quantize_input = true, quantize_output = false;
  bool use_real_tanh = false;        ///< Tanh stays tanh; otherwise the hardware-friendly hard tanh
  bool use_relu_multiplier = false;  ///< learned power-of-two scale in front of each ReLU
  bool hgq = false;                  ///< trainable bit widths (High Granularity Quantization)
  double hgq_gamma = 3e-4, hgq_beta = 1e-5;  ///< bit-width L1 and EBOPs loss coefficients
  bool hgq_heterogeneous = true;
  std::vector<BetaPoint> hgq_beta_schedule;  ///< sparq extension; empty: hgq_beta every epoch
  std::map<std::string, LayerOverride> layers;  ///< by node name
  std::string where;                 ///< config position of the section, for errors
  bool operator==(const PquantQuantization& o) const;
};

/// pruning_parameters as written (every parameter of the method, defaults filled in).
struct PquantPruning {
  PruningSpec spec;
  bool enable_pruning = true;               ///< default of every weight layer
  std::vector<std::string> disabled_layers; ///< node names whose pruning is off
  std::string where;                        ///< config position, for errors
  std::vector<std::string> disabled_where;  ///< config position of each disabled layer name
  bool operator==(const PquantPruning& o) const {
    return spec == o.spec && enable_pruning == o.enable_pruning && disabled_layers == o.disabled_layers;
  }
};

/// A PQuantML config as written: its five sections.
struct PquantConfig {
  std::optional<PquantQuantization> quantization;  ///< absent: float model
  std::optional<PquantPruning> pruning;            ///< absent: no pruning
  std::optional<Schedule> schedule;                ///< training_parameters; absent: the job's epochs
  bool pruning_first = false;                      ///< true: quantize(prune(W)); false: prune(quantize(W))
  FitCompressPlan fitcompress;
  SearchSpace search;
  bool operator==(const PquantConfig& o) const;
  bool operator!=(const PquantConfig& o) const { return !(*this == o); }
};

/// Reads a PQuantML config mapping (`file` names it in errors).
PquantConfig read_pquant(const std::string& file, const YAML::Node& root);
/// Reads a PQuantML config file (.yaml/.yml/.json) as written.
PquantConfig load_pquant(const std::string& path);
/// The Plan of a PQuantML config.
Plan lower_pquant(const PquantConfig& config);
/// read_pquant, then lower_pquant.
Plan parse_pquant(const std::string& file, const YAML::Node& root);

/// The config with every field written out; read_pquant reads it back to an equal config.
std::string write_pquant(const PquantConfig& config);

/// PQuantML's packaged config for `method` (spec §1.7): cs, dst, pdp, wanda, autosparse,
/// activation_pruning (also "ap"), mdmm, fitcompress. Throws ConfigError for other names.
PquantConfig packaged_config(const std::string& method);
std::vector<std::string> packaged_config_names();

/// One key of the dialect, for the reader's allowed keys and the docs' table.
struct KeyDoc {
  std::string section, key, fallback, meaning, sparq;
};
/// Every key of every section except the pruning methods' own parameters (from their registry).
const std::vector<KeyDoc>& pquant_keys();
/// The keys of one section, in the table's order.
std::vector<std::string> pquant_section_keys(const std::string& section);
/// The table of every key, the methods' parameters included, as docs/pquantml-config.md holds it.
std::string pquant_keys_markdown();

/// Prints "sparq: warning: <message>" on stderr (config keys accepted but without effect).
void warn(const std::string& message);

}  // namespace sparq::config
