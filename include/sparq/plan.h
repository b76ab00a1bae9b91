// The dialect-neutral Plan: what every config dialect (PQuantML, NNI, SparseML) is parsed into.
// Nothing downstream of config/ knows which dialect a setting came from.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "sparq/layers/pq_layers.h"
#include "sparq/quant/quantizer.h"

namespace sparq {

/// A per-layer override of one target's format ("input", "weight", "bias", "output").
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

/// One point of a piecewise beta schedule; `interp` shapes the segment to the next point.
struct BetaPoint {
  enum class Interp { Constant, Linear, Log };
  int64_t epoch = 0;  ///< 0-based global epoch
  double beta = 0;
  Interp interp = Interp::Constant;
  bool operator==(const BetaPoint& o) const { return epoch == o.epoch && beta == o.beta && interp == o.interp; }
};
const char* to_string(BetaPoint::Interp i);

/// HGQ's beta per epoch (HGQ2's PieceWiseSchedule): the first value before the first point, the
/// last after the last; between points constant, linear, or geometric (log).
struct BetaSchedule {
  std::vector<BetaPoint> points;  ///< increasing epochs
  double at(int64_t epoch) const;
  bool operator==(const BetaSchedule& o) const { return points == o.points; }
};

/// How layers are quantized: global defaults for data lanes and parameters, per-layer overrides.
struct QuantPlan {
  bool enabled = true;               ///< false: PQ layers run in float (pruning still applies)
  quant::QuantSpec weight{1, 0, 7};  ///< weights and biases
  quant::QuantSpec data{0, 0, 7};    ///< inputs, outputs, activations
  bool quantize_input = true, quantize_output = false;
  bool use_real_tanh = false;        ///< Tanh stays tanh; otherwise the hardware-friendly hard tanh
  bool use_relu_multiplier = false;  ///< learned power-of-two scale in front of each ReLU
  bool hgq = false;                  ///< trainable bit widths (High Granularity Quantization)
  double hgq_gamma = 3e-4, hgq_beta = 1e-5;  ///< bit-width L1 and EBOPs loss coefficients
  bool hgq_heterogeneous = true;
  std::vector<BetaPoint> hgq_beta_schedule;  ///< sparq extension; empty: hgq_beta every epoch
  std::map<std::string, LayerOverride> layers;  ///< by node name
  std::string where;                 ///< config position of the section, for errors

  /// The quantizers of node `name` whose op is `op` (PyTorch name: Linear, Conv2d, ReLU, ...),
  /// defaults and op rules first, then the node's overrides.
  layers::QuantTargets targets(const std::string& name, const std::string& op) const;
  /// hgq_beta_schedule, or hgq_beta constant.
  BetaSchedule beta_schedule() const;
  bool operator==(const QuantPlan& o) const;
};

/// A value of a method parameter: null, bool, integer, number or text.
using ParamValue = std::variant<std::monostate, bool, int64_t, double, std::string>;

/// A pruning method and all of its parameters (defaults filled in; see prune/methods.h).
struct PruningSpec {
  std::string method;  ///< cs, dst, pdp, wanda, autosparse, activation_pruning, mdmm, fitcompress
  std::map<std::string, ParamValue> params;

  double number(const std::string& key) const;   ///< a float (or integer) parameter
  int64_t integer(const std::string& key) const;
  bool flag(const std::string& key) const;
  std::string text(const std::string& key) const;
  bool is_null(const std::string& key) const;
  bool operator==(const PruningSpec& o) const { return method == o.method && params == o.params; }
};

/// Which weight layers are pruned, and how.
struct PruningPlan {
  PruningSpec spec;
  bool enable_pruning = true;               ///< default of every weight layer
  std::vector<std::string> disabled_layers; ///< node names whose pruning is off
  std::string where;                        ///< config position, for errors
  std::vector<std::string> disabled_where;  ///< config position of each disabled layer name

  /// Whether weight layer `name` prunes (its method object exists either way: hooks still run).
  bool enabled_for(const std::string& name) const;
  bool operator==(const PruningPlan& o) const {
    return spec == o.spec && enable_pruning == o.enable_pruning && disabled_layers == o.disabled_layers;
  }
};

/// What happens to the weights after each round of the training stage.
enum class Rewind {
  Never,              ///< post-round hooks after every round but the last
  EveryRound,         ///< restore the snapshot after every round (no post-round hooks)
  PostTrainingStage,  ///< post-round hooks between rounds, restore the snapshot after the last
};
const char* to_string(Rewind r);

/// The training schedule: pretraining -> rounds x epochs (training) -> fine-tuning.
struct Schedule {
  int64_t pretraining_epochs = 50;
  int64_t epochs = 200;          ///< per round
  int64_t rounds = 1;
  int64_t fine_tuning_epochs = 0;
  int64_t save_weights_epoch = -1;  ///< round-0 epoch whose start weights are kept for rewinding
  Rewind rewind = Rewind::Never;
  std::map<std::string, std::string> extra;  ///< user keys of the dialect, as YAML text

  int64_t total_epochs() const { return pretraining_epochs + rounds * epochs + fine_tuning_epochs; }
  /// One training stage of `epochs` epochs (what a config without a schedule means).
  static Schedule single_stage(int64_t epochs);
  bool operator==(const Schedule& o) const;
};

/// FITCompress: Fisher-trace guided search over per-layer bit widths and pruning levels.
struct FitCompressPlan {
  bool enabled = false;
  bool optimize_quantization = true;
  std::vector<double> quantization_schedule{7, 4, 3, 2};
  int64_t pruning_start = 0, pruning_end = -3, pruning_steps = 40;  ///< 1 - logspace(start, end, steps)
  double compression_goal = 0.10;
  bool optimize_pruning = false, greedy_astar = true, approximate = true;
  double f_lambda = 1;
  bool operator==(const FitCompressPlan& o) const;
};

/// A hyper-parameter study: sampler, trials and the search space.
struct SearchSpace {
  struct Range {
    double low = 0, high = 0;
    std::optional<double> step;
    bool is_float = false;  ///< any of low/high/step written as a float
    bool operator==(const Range& o) const {
      return low == o.low && high == o.high && step == o.step && is_float == o.is_float;
    }
  };
  std::string experiment_name = "experiment_1", model_name = "example_model";
  std::string sampler = "TPESampler";
  std::map<std::string, std::string> sampler_params;  ///< as YAML text
  int64_t num_trials = 0;
  std::map<std::string, Range> numerical;
  std::map<std::string, std::vector<std::string>> categorical;
  bool operator==(const SearchSpace& o) const;
};

struct Plan {
  std::optional<QuantPlan> quantization;  ///< absent: float model
  std::optional<PruningPlan> pruning;     ///< absent: no pruning
  std::optional<Schedule> schedule;       ///< absent: the job's epochs as one training stage
  bool pruning_first = false;             ///< true: quantize(prune(W)); false: prune(quantize(W))
  FitCompressPlan fitcompress;
  SearchSpace search;
  bool operator==(const Plan& o) const;
  bool operator!=(const Plan& o) const { return !(*this == o); }
};

}  // namespace sparq
