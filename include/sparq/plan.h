// The dialect-neutral Plan: what every config dialect (PQuantML, NNI, SparseML) is parsed into.
// Plain data: ordered rules (which modules, what per target), the stage schedule, events at
// fractional epochs, and the search and FITCompress settings. Defaults belong to the dialect
// parsers; nothing downstream of config/ knows which dialect a setting came from.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "sparq/quant/format.h"

namespace sparq {

/// A value of a method parameter: null, bool, integer, number or text.
using ParamValue = std::variant<std::monostate, bool, int64_t, double, std::string>;
/// "null", "true", "3", "0.5", or the text.
std::string to_string(const ParamValue& v);

/// Which modules a rule applies to (NNI's selection): the modules named or matched by a regex
/// (every module when neither is given), of the op types when those are given, minus any module
/// an exclude entry matches. Regexes match the whole name. Op types are PyTorch names.
struct Selector {
  std::vector<std::string> names, name_regexes, op_types;
  std::vector<std::string> exclude_names, exclude_name_regexes, exclude_op_types;

  bool matches(const std::string& name, const std::string& op) const;
  bool operator==(const Selector& o) const;
};

/// What a rule says about one target's quantizer. `spec` replaces the spec in force; `k`, `i`,
/// `f` adjust it (PQuantML's layer_specific); `enabled` switches the target on or off (a spec
/// without `enabled` is on).
struct QuantSetting {
  std::optional<quant::QuantizerSpec> spec;
  std::optional<int> k, i, f;
  std::optional<bool> enabled;
  /// A setting that gives the target this spec.
  static QuantSetting of(quant::QuantizerSpec spec) {
    QuantSetting q;
    q.spec = std::move(spec);
    return q;
  }
  bool operator==(const QuantSetting& o) const {
    return spec == o.spec && k == o.k && i == o.i && f == o.f && enabled == o.enabled;
  }
};

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

/// How a pruner's metric is reduced into blocks (NNI's granularity, spec nni-config §1.8).
struct MaskGranularity {
  enum class Kind {
    Default,     ///< the pruner's own choice (out_channel for parameters; element-wise for Level)
    Element,     ///< null: one metric value per element
    OutChannel,  ///< one block per index of dim 0 (Linear row, Conv filter)
    InChannel,   ///< one block per index of dim 1 (Linear column, Conv input channel)
    PerChannel,  ///< inputs/outputs: one block per index of dim 1
    Block,       ///< `kernel`, padded to the tensor's rank (front with 1 or back with -1)
  };
  Kind kind = Kind::Default;
  std::vector<int64_t> kernel;  ///< Block: block size per dim; -1 = the whole dim
  bool pad_front = true;        ///< Block: pad the kernel at the front (NNI's default for lists)
  int64_t pad_value = 1;
  bool operator==(const MaskGranularity& o) const {
    return kind == o.kind && kernel == o.kernel && pad_front == o.pad_front && pad_value == o.pad_value;
  }
};

/// A target whose mask follows another target's mask along `dims` (bias follows weight rows).
struct MaskAlign {
  std::string module;  ///< empty: the same module
  std::string target = "weight";
  std::vector<int64_t> dims{0};
  bool operator==(const MaskAlign& o) const { return module == o.module && target == o.target && dims == o.dims; }
};

/// How a target's mask is made from the pruner's metric (NNI's pruning target settings, spec
/// nni-config §1.5, §2.1-2.7). Group ids keep their YAML type: "1" (int) and "'1'" (text) differ.
struct MaskSetting {
  std::optional<double> sparse_ratio, sparse_threshold, max_sparse_ratio, min_sparse_ratio;
  std::optional<std::string> global_group, dependency_group;
  std::optional<int64_t> internal_metric_block;
  MaskGranularity granularity;
  std::string apply_method = "mul";  ///< mul: target x mask; add: target + (0 kept, -1000 masked)
  std::optional<MaskAlign> align;
  /// Whether a rule makes a mask from the metric (a ratio or a threshold is set).
  bool active() const { return sparse_ratio || sparse_threshold; }
  bool operator==(const MaskSetting& o) const;
};

/// What a rule says about pruning one target. `method` (PQuantML: a weight's own method object)
/// replaces the one in force; `active` false keeps the method object (its hooks run, it joins
/// global budgets) but leaves the weight unpruned (PQuantML's disable_pruning_for_layers).
/// `mask`: the target's settings for the plan's model-wide pruner (NNI, SparseML).
struct PruneSetting {
  std::optional<PruningSpec> method;
  std::optional<bool> active;
  std::optional<MaskSetting> mask;
  bool operator==(const PruneSetting& o) const { return method == o.method && active == o.active && mask == o.mask; }
};

/// A rule's settings of one target.
struct TargetSetting {
  std::optional<QuantSetting> quant;
  std::optional<PruneSetting> prune;
  bool operator==(const TargetSetting& o) const { return quant == o.quant && prune == o.prune; }
};

/// Settings of the module itself (not of one target).
struct ModuleSetting {
  std::optional<std::string> function;       ///< activation function of the PQ layer (hard_tanh for Tanh, ...)
  std::optional<bool> relu_multiplier;       ///< learned power-of-two scale in front of a ReLU
  std::optional<bool> pruning_first;         ///< true: quantize(prune(W)); false: prune(quantize(W))
  /// Fusion for quantization (NNI's fuse_names): the BatchNorm (and ReLU) nodes after this
  /// Linear/Conv folded into it; `fuse_following`: the Conv-BN(-ReLU) chain found in the graph
  /// (SparseML's conv_bn_relus), folded only when QAT starts (before, the float model trains).
  std::vector<std::string> fuse_with;
  bool fuse_following = false;
  bool operator==(const ModuleSetting& o) const {
    return function == o.function && relu_multiplier == o.relu_multiplier && pruning_first == o.pruning_first &&
           fuse_with == o.fuse_with && fuse_following == o.fuse_following;
  }
};

/// Target names: "weight", "bias", "_input_0".."_input_N", "_output_0".."_output_N".
inline constexpr const char* kInput = "_input_0";
inline constexpr const char* kOutput = "_output_0";

/// One rule: the modules it selects and what it sets on them. A module a rule selects becomes a
/// PQ layer (when its op has one), even where the rule sets nothing on its targets.
struct Rule {
  Selector select;
  std::map<std::string, TargetSetting> targets;
  ModuleSetting module;
  std::string where;   ///< config position ("file:line:col"), for errors
  std::string origin;  ///< the config key it came from ("layer_specific", "config list entry 2"), for errors
  /// Names the rule must find in the model (layer_specific, disable_pruning_for_layers): an
  /// error names the nearest one otherwise. `weights_only`: the names must be weight layers.
  bool names_must_exist = false, weights_only = false;
  /// NNI: every target the rule sets must exist on each module it selects, and a selected module
  /// must have a pruning target (a ReLU cannot be pruned).
  bool targets_must_exist = false;
  bool operator==(const Rule& o) const {
    return select == o.select && targets == o.targets && module == o.module &&
           names_must_exist == o.names_must_exist && weights_only == o.weights_only &&
           targets_must_exist == o.targets_must_exist;
  }
};

/// How rules that select the same target combine.
enum class Precedence {
  LaterWins,  ///< PQuantML layer_specific, NNI v2: each later rule overrides (field by field)
  FirstWins,  ///< NNI v3: the first rule that sets a target decides it
};

/// What happens to the weights after each round of the training stage.
enum class Rewind {
  Never,              ///< post-round hooks after every round but the last
  EveryRound,         ///< restore the snapshot after every round (no post-round hooks)
  PostTrainingStage,  ///< post-round hooks between rounds, restore the snapshot after the last
};
const char* to_string(Rewind r);

/// The stage schedule: pretraining -> rounds x epochs (training) -> fine-tuning.
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

/// Something that happens at a point of training: at a fractional epoch (the step
/// round(at_epoch * steps per epoch)) or at a global step.
struct Event {
  enum class Kind {
    LearningRate,   ///< value: the learning rate of the selected groups
    WeightDecay,    ///< value: the weight decay of the selected groups
    Trainable,      ///< value 1 / 0: the selected groups' parameters train or are frozen
    Quantization,   ///< value 1 / 0: every quantizer on or off
    HgqBeta,        ///< value: HGQ's beta from this epoch on; `interp` shapes it to the next point
  };
  enum class Interp { Constant, Linear, Log };
  Kind kind = Kind::LearningRate;
  double at_epoch = 0;
  std::optional<int64_t> at_step;  ///< when set, the step (0-based global) instead of at_epoch
  double value = 0;
  Interp interp = Interp::Constant;
  std::string groups;              ///< parameter groups (node-name regex); empty: all
  std::string where;
  bool operator==(const Event& o) const {
    return kind == o.kind && at_epoch == o.at_epoch && at_step == o.at_step && value == o.value &&
           interp == o.interp && groups == o.groups;
  }
};
const char* to_string(Event::Kind k);
const char* to_string(Event::Interp i);

/// The events of one kind, in order of their epoch.
std::vector<Event> events_of(const std::vector<Event>& events, Event::Kind kind);

/// A piecewise curve read per epoch from the events of one kind (HGQ's beta: HGQ2's
/// PieceWiseSchedule): the first value before the first point, the last after the last; between
/// points constant, linear, or geometric (log).
double curve_at(const std::vector<Event>& points, double epoch);

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
  bool empty() const { return num_trials == 0 && numerical.empty() && categorical.empty(); }
  bool operator==(const SearchSpace& o) const;
};

/// The parameters a modifier acts on (SparseML's `params`, spec sparseml §2.8.1, §3.5): exact
/// full names ("conv1.weight") and "re:" patterns matched from the start of the name, or a token.
struct ParamSelection {
  enum class Token {
    None,         ///< the names
    All,          ///< __ALL__: every parameter (pruning modifiers: the prunable weights)
    AllPrunable,  ///< __ALL_PRUNABLE__: the weights of Linear and Conv layers
  };
  Token token = Token::None;
  std::vector<std::string> names;
  bool strict = true;  ///< every name or pattern must match a parameter
  bool operator==(const ParamSelection& o) const { return token == o.token && names == o.names && strict == o.strict; }
};

/// How a pruning modifier groups weights into masks (SparseML's mask_type, spec §2.8.3).
struct MaskType {
  enum class Kind {
    Unstructured,  ///< exactly round(sparsity x numel) elements
    Block,         ///< [a, b] blocks of the (out, in) index; block4 is [1, 4] padded along inputs
    NM,            ///< N of every M consecutive inputs kept
    Filter,        ///< whole output rows / filters (L2 group scores)
    Channel,       ///< whole input columns / channels
  };
  Kind kind = Kind::Unstructured;
  int64_t a = 1, b = 1;   ///< Block
  bool four_block = false;  ///< Block from "block4"/"block": pads the input dim to a multiple of 4
  int64_t n = 0, m = 0;   ///< NM
  bool operator==(const MaskType& o) const {
    return kind == o.kind && a == o.a && b == o.b && four_block == o.four_block && n == o.n && m == o.m;
  }
};
/// "unstructured", "[1, 4]", "block4", "2:4", "filter", "channel".
std::string to_string(const MaskType& t);

/// A scheduled training modifier (SparseML's recipe modifiers, spec sparseml §2): what it does,
/// its time window in fractional epochs (start reached at the first step whose epoch is >= start;
/// -1: from the first step / never ends), and the fields of its type. The runtime of every type
/// is in src/train/modifiers/.
struct Modifier {
  std::string type;   ///< canonical class name: "GMPruningModifier", "LearningRateModifier", ...
  std::string tag;    ///< as the recipe wrote it ("GradualKSModifier")
  std::string stage;  ///< the stage of a staged recipe ("" otherwise)
  std::string where;  ///< "file:line:col" of the tag
  double start_epoch = -1, end_epoch = -1, update_frequency = -1;
  ParamSelection params;

  // Pruning (GMPruning family, Constant, Structured, Movement, ACDC, Layer).
  double init_sparsity = 0;
  bool init_from_param = false;  ///< init_sparsity: __FROM_PARAM__
  double final_sparsity = 0;     ///< also ACDC's compression_sparsity
  std::vector<std::pair<double, ParamSelection>> final_sparsity_map;  ///< {sparsity: [names]} form
  std::string inter_func = "cubic";  ///< linear | cubic | inverse_cubic
  bool leave_enabled = true, global_sparsity = false, momentum_buffer_reset = true;
  MaskType mask_type;
  std::vector<std::vector<std::string>> param_name_groups;  ///< Structured: pruned on the same indices
  std::vector<std::string> layers;                           ///< LayerPruning: module names

  // Learning rate and optimizer (param_groups: indices into the optimizer's groups; empty: all).
  std::string lr_class;   ///< StepLR | MultiStepLR | CosineAnnealingWarmRestarts (ExponentialLR -> StepLR)
  std::string lr_func;    ///< linear | cosine | cyclic_linear
  double learning_rate = 0, init_lr = 0, final_lr = 0, gamma = 0, step_size = 0, lr_min = 0, cycle_epochs = 1;
  bool init_lr_set = false;  ///< LearningRateModifier without init_lr: the optimizer's lr at its start
  std::vector<double> milestones;
  std::vector<int64_t> param_groups;
  double weight_decay = 0;

  // Parameters (TrainableParams, SetParam, GradualParam).
  bool trainable = true;
  std::vector<double> val, init_val, final_val;  ///< flattened, row-major
  std::vector<int64_t> val_shape;

  // Quantization (QuantizationModifier).
  std::optional<double> disable_observer_epoch, freeze_bn_epoch;
  std::vector<std::string> submodules, ignore;  ///< module names (legacy) / name prefixes or op types
  int64_t weight_bits = 8, activation_bits = 8;
  bool symmetric_activations = false;           ///< tensorrt
  bool quantize_linear_activations = true, quantize_conv_activations = true;
  std::string fuse = "conv_bn_relus";           ///< conv_bn_relus | no_fuse

  /// Whether it prunes with masks on parameters (the pruning modifiers but LayerPruning).
  bool prunes() const { return type.find("Pruning") != std::string::npos && type != "LayerPruningModifier"; }
  bool operator==(const Modifier& o) const;
};

/// The epochs a list of modifiers spans (SparseML's manager range, spec §1.8.6): max over
/// ceil(start) (start > -1) and ceil(end) (end > -1), -1 when none; min over floor(start).
int64_t max_epochs(const std::vector<Modifier>& modifiers);
int64_t min_epochs(const std::vector<Modifier>& modifiers);
/// The modifiers in the order they act each step: by end (-1 last), then start, then type, then
/// recipe order.
std::vector<Modifier> ordered(std::vector<Modifier> modifiers);

/// One distillation entry (NNI's distiller config list, spec nni-config §4): the student modules
/// it selects have their output (`_output_0`) pulled toward the linked teacher modules' outputs.
struct DistillRule {
  Selector select;
  std::vector<std::string> links;  ///< teacher module names; empty: the student module's own name ('auto')
  double lambda = 1.0;
  std::string method = "mse";      ///< mse | kl (temperature 2, batchmean, times 4)
  std::string where, origin;       ///< config position and key, for errors
  bool operator==(const DistillRule& o) const {
    return select == o.select && links == o.links && lambda == o.lambda && method == o.method;
  }
};

/// Knowledge distillation from a float teacher, next to any compression of the student.
struct Distillation {
  /// DynamicLayerwiseDistiller: each target takes the least loss over its links;
  /// Adaptive1dLayerwiseDistiller: one link each, a trained Linear maps a differing last dimension.
  std::string type = "DynamicLayerwiseDistiller";
  std::string teacher_run;      ///< a run folder (model.yaml + model.pt), or
  std::string teacher_model;    ///< a zoo name or a model YAML file, with
  std::string teacher_weights;  ///< its model.pt (or run folder)
  double origin_loss_lambda = 1.0;  ///< weight of the task loss
  std::vector<DistillRule> rules;
  std::string where;
  bool operator==(const Distillation& o) const {
    return type == o.type && teacher_run == o.teacher_run && teacher_model == o.teacher_model &&
           teacher_weights == o.teacher_weights && origin_loss_lambda == o.origin_loss_lambda && rules == o.rules;
  }
};

struct Plan {
  std::string dialect;              ///< "pquantml", "nni-v3", "nni-v2", "sparseml"; "" for a hand-made plan
  std::vector<Rule> rules;          ///< in config order
  Precedence precedence = Precedence::LaterWins;
  std::optional<Schedule> schedule; ///< absent: the job's epochs as one training stage
  std::vector<Event> events;        ///< in any order; fired by step
  /// Scheduled modifiers (SparseML recipes), in the order they act.
  std::vector<Modifier> modifiers;
  /// The model-wide pruner the targets' mask settings are for (NNI's pruner classes, chosen in
  /// the job: L1NormPruner, AGPPruner, ...), with its arguments.
  std::optional<PruningSpec> pruner;
  /// NNI's quantizer class for the targets' integer quantizers (QATQuantizer, PtqQuantizer, ...):
  /// `method` is the class, `params` its arguments (quant_start_step, calibration_batches).
  std::optional<PruningSpec> quantizer;
  /// Weight layers whose outputs meet in a residual add share one mask (NNI's
  /// auto_set_denpendency_group_ids): their targets' dependency groups are set from the graph.
  bool auto_dependency_groups = false;
  /// After training, rebuild the model without the channels pruning made zero (model_speedup.pt).
  bool speedup = false;
  FitCompressPlan fitcompress;
  SearchSpace search;
  /// A teacher and the student outputs it teaches (NNI's distillers; a job's `distillation:`).
  std::optional<Distillation> distillation;

  /// Whether the plan compresses anything (a float run otherwise).
  bool compresses() const { return !rules.empty() || !modifiers.empty(); }
  /// Whether some rule gives a target mask settings (for the model-wide pruner).
  bool uses_masks() const;
  std::vector<Event> events_of(Event::Kind kind) const { return sparq::events_of(events, kind); }
  /// The pruning method of every rule that sets one, once per method name, in rule order;
  /// `active_only`: leave out rules that switch pruning off.
  std::vector<PruningSpec> pruning_methods(bool active_only = false) const;
  bool operator==(const Plan& o) const;
  bool operator!=(const Plan& o) const { return !(*this == o); }
};

}  // namespace sparq
