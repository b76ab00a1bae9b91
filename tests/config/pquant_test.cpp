// The PQuantML dialect: every section as seeds 000 and 001 spell them, the packaged configs and
// their round trip through YAML, and a corpus of bad configs that must each fail with the key and
// its position.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "sparq/compress/compress.h"
#include "sparq/config/pquant.h"
#include "sparq/prune/methods.h"
#include "sparq/compress/resolve.h"
#include "sparq/yaml/reader.h"
#include "sparq/error.h"
#include "test_util.h"

using namespace sparq;

namespace {
config::PquantConfig parse(const std::string& text) {
  auto doc = yaml::YamlDoc::load_string(text, "c.yaml");
  return config::read_pquant(doc.file, doc.root);
}
std::string error_of(const std::string& text) {
  return test::error_of<ConfigError>([&] { parse(text); });
}
models::Graph lenet() { return models::Graph(models::zoo_spec("lenet", {1, 28, 28}, 10, {})); }
}  // namespace

TEST(PQuantConfig, Seed001QuantizationParameters) {
  auto plan = parse(R"(
quantization_parameters:
  default_data_keep_negatives: 1
  default_data_integer_bits: 3
  default_data_fractional_bits: 4.0
  default_weight_keep_negatives: 1.0
  default_weight_integer_bits: 0
  default_weight_fractional_bits: 7
  quantize_input: true
  quantize_output: true
  enable_quantization: true
  hgq_gamma: 0.0
  hgq_beta: 1e-5
  layer_specific:
    fc1:
      input: {quantize: false}
      weight: {integer_bits: 1, fractional_bits: 5}
  use_hgq: false
  use_real_tanh: true
  overflow_mode_data: WRAP
  overflow_mode_parameters: SAT_SYM
  round_mode: RND_CONV
  use_relu_multiplier: false
  granularity: per_channel
)");
  ASSERT_TRUE(plan.quantization);
  const auto& q = *plan.quantization;
  EXPECT_EQ(q.data.k, 1);
  EXPECT_EQ(q.data.i, 3);
  EXPECT_EQ(q.data.f, 4);
  EXPECT_EQ(q.data.overflow, quant::OverflowMode::WRAP);
  EXPECT_EQ(q.weight.overflow, quant::OverflowMode::SAT_SYM);
  EXPECT_EQ(q.weight.round, quant::RoundMode::RND_CONV);
  EXPECT_EQ(q.weight.granularity, quant::Granularity::PerChannel);
  EXPECT_TRUE(q.quantize_output);
  EXPECT_TRUE(q.use_real_tanh);
  // What the rules resolve to on a model: fc1 with its override, relu1 with PQuantML's ReLU format.
  auto g = lenet();
  auto r = resolve(config::lower_pquant(plan), g);
  const auto& fc1 = r.find("fc1")->targets;
  EXPECT_FALSE(fc1.at(kInput).quantizer);  // quantize: false
  ASSERT_TRUE(fc1.at("weight").quantizer);
  EXPECT_EQ(quant::fixed_part(*fc1.at("weight").quantizer)->i, 1);
  EXPECT_EQ(quant::fixed_part(*fc1.at("weight").quantizer)->f, 5);
  EXPECT_EQ(quant::fixed_part(*fc1.at("bias").quantizer)->f, 7);  // the override is the weight's only
  EXPECT_TRUE(fc1.at(kOutput).quantizer);
  const auto& relu = *quant::fixed_part(*r.find("relu1")->targets.at(kInput).quantizer);
  EXPECT_EQ(relu.k, 0);  // unsigned, one more fractional bit
  EXPECT_EQ(relu.f, 5);
  EXPECT_EQ(r.find("relu1")->module.function, std::nullopt);
  EXPECT_EQ(quant::fixed_part(*r.find("fc2")->targets.at("weight").quantizer)->f, 7);
}

TEST(PQuantConfig, DefaultsAndSeed000Overflow) {
  auto plan = parse("quantization_parameters:\n  overflow: WRAP\n");
  const auto& q = *plan.quantization;
  EXPECT_EQ(q.weight.overflow, quant::OverflowMode::WRAP);
  EXPECT_EQ(q.data.overflow, quant::OverflowMode::WRAP);
  EXPECT_EQ(q.weight.k, 1);
  EXPECT_EQ(q.weight.f, 7);
  EXPECT_EQ(q.data.k, 0);
  EXPECT_TRUE(q.quantize_input);
  EXPECT_FALSE(q.quantize_output);
  EXPECT_TRUE(parse("{}").quantization);  // a missing section is built from defaults
}


namespace {

// Seed 000/001 "Pruning methods" tables, each method with the seed's defaults.
const std::vector<std::pair<std::string, std::string>> kSeedMethods = {
    {"cs", "final_temp: 200, threshold_init: 0"},
    {"dst", "alpha: 5.0e-06, max_pruning_pct: 0.99, threshold_init: 0.0, threshold_type: \"channelwise\""},
    {"pdp", "epsilon: 0.015, sparsity: 0.8, temperature: 1.0e-05, structured_pruning: false"},
    {"wanda", "M: null, N: null, sparsity: 0.9, t_delta: 100, t_start_collecting_batch: 100, "
              "calculate_pruning_budget: true"},
    {"autosparse", "alpha: 0.5, alpha_reset_epoch: 90, autotune_epochs: 10, backward_sparsity: false, "
                   "threshold_init: -5.0, threshold_type: \"channelwise\""},
    {"activation_pruning", "threshold: 0.3, t_delta: 50, t_start_collecting_batch: 50"},
    {"mdmm", "constraint_type: \"Equality\", target_value: 0.0, metric_type: \"UnstructuredSparsity\", "
             "target_sparsity: 0.9, rf: 1, epsilon: 1.0e-03, scale: 10.0, damping: 1.0, use_grad: false, "
             "l0_mode: \"coarse\", scale_mode: \"mean\""},
};

/// A config built from every table of seed 000 (`overflow`, a "finetuning" section with a sampler
/// name) or seed 001 (the split overflow modes), with the seeds' defaults.
std::string seed_config(int seed, const std::string& method, const std::string& fields) {
  std::string block;  // "a: 1, b: 2" as lines of the pruning section
  for (size_t start = 0; start < fields.size();) {
    size_t end = std::min(fields.find(", ", start), fields.size());
    block += "  " + fields.substr(start, end - start) + "\n";
    start = end + 2;
  }
  std::string overflow = seed == 0 ? "  overflow: \"SAT\"\n"
                                   : "  overflow_mode_data: \"SAT\"\n  overflow_mode_parameters: \"SAT\"\n";
  std::string search = seed == 0 ? "finetuning_parameters:\n  sampler: GridSampler\n"
                                 : "hpo_parameters:\n  sampler: {type: \"TPESampler\", params: {seed: 3}}\n";
  return fmt::format(R"(training_parameters:
  epochs: 200
  fine_tuning_epochs: 0
  pretraining_epochs: 50
  rewind: "never"
  rounds: 1
  save_weights_epoch: -1
  learning_rate: 0.001
quantization_parameters:
  default_data_keep_negatives: 0
  default_data_integer_bits: 0
  default_data_fractional_bits: 0
  default_weight_keep_negatives: 0
  default_weight_integer_bits: 0
  default_weight_fractional_bits: 0
  quantize_input: true
  quantize_output: true
  enable_quantization: true
  hgq_gamma: 0.0
  hgq_beta: 0.0
  layer_specific: {{}}
  use_hgq: false
  use_real_tanh: false
{}  round_mode: "RND"
  use_relu_multiplier: true
{}  experiment_name: "experiment_1"
  model_name: "resnet18"
  num_trials: 0
  hyperparameter_search: {{numerical: {{lr: [0.0001, 0.01], width: [8, 64, 8]}}, categorical: {{opt: [adam, sgd]}}}}
pruning_parameters:
  pruning_method: {}
  disable_pruning_for_layers: []
  enable_pruning: true
  threshold_decay: 0.0
{}fitcompress_parameters:
  enable_fitcompress: false
  optimize_quantization: true
  quantization_schedule: [7., 4., 3., 2.]
  pruning_schedule: {{start: 0, end: -3, steps: 40}}
  compression_goal: 0.10
  optimize_pruning: false
  greedy_astar: true
  approximate: true
  f_lambda: 1
)",
                     overflow, search, method, block);
}

}  // namespace

TEST(PQuantConfig, EveryTableOfSeeds000And001Parses) {
  for (int seed : {0, 1}) {
    for (const auto& [method, fields] : kSeedMethods) {
      std::string text = seed_config(seed, method, fields);
      SCOPED_TRACE(fmt::format("seed {:03d} method {}", seed, method));
      auto plan = parse(text);
      ASSERT_TRUE(plan.pruning);
      EXPECT_EQ(plan.pruning->spec.method, method);
      EXPECT_EQ(plan.pruning->spec, prune::default_spec(method));  // the seeds' defaults are sparq's defaults
      ASSERT_TRUE(plan.schedule);
      EXPECT_EQ(plan.schedule->pretraining_epochs, 50);
      EXPECT_EQ(plan.schedule->epochs, 200);
      EXPECT_EQ(plan.schedule->extra.at("learning_rate"), "0.001");
      EXPECT_EQ(plan.quantization->data.f, 0);
      EXPECT_TRUE(plan.quantization->use_relu_multiplier);
      EXPECT_EQ(plan.search.sampler, seed == 0 ? "GridSampler" : "TPESampler");
      EXPECT_EQ(plan.search.model_name, "resnet18");
      EXPECT_TRUE(plan.search.numerical.at("lr").is_float);
      EXPECT_FALSE(plan.search.numerical.at("width").is_float);
      EXPECT_EQ(*plan.search.numerical.at("width").step, 8);
      EXPECT_EQ(plan.search.categorical.at("opt"), (std::vector<std::string>{"adam", "sgd"}));
      EXPECT_EQ(plan.fitcompress.quantization_schedule, (std::vector<double>{7, 4, 3, 2}));
      EXPECT_EQ(parse(config::write_pquant(plan)), plan);
    }
  }
}

TEST(PQuantConfig, PackagedConfigsHaveSpecValuesAndRoundTrip) {
  for (const auto& name : config::packaged_config_names()) {
    SCOPED_TRACE(name);
    auto plan = config::packaged_config(name);
    std::string text = config::write_pquant(plan);
    EXPECT_EQ(parse(text), plan);
    EXPECT_EQ(config::write_pquant(parse(text)), text);  // printing is stable too
    EXPECT_TRUE(plan.pruning_first);
    EXPECT_EQ(plan.search.sampler, "RandomSampler");
    EXPECT_EQ(plan.search.num_trials, 1);
    EXPECT_EQ(plan.quantization->hgq_beta, 1e-5);
  }
  auto ap = config::packaged_config("ap");  // file name alias
  EXPECT_EQ(ap.pruning->spec.method, "activation_pruning");
  EXPECT_EQ(ap.pruning->spec.number("threshold"), 0.2);       // not the code default 0.3
  EXPECT_EQ(ap.pruning->spec.integer("t_delta"), 100);
  auto cs = config::packaged_config("cs");
  EXPECT_EQ(cs.schedule->rounds, 3);
  EXPECT_EQ(cs.schedule->rewind, Rewind::PostTrainingStage);
  EXPECT_EQ(cs.schedule->save_weights_epoch, 2);
  EXPECT_EQ(cs.schedule->fine_tuning_epochs, 85);
  EXPECT_EQ(cs.pruning->spec.number("threshold_decay"), 1e-9);
  EXPECT_EQ(config::packaged_config("dst").pruning->spec.text("threshold_type"), "weightwise");
  auto wanda = config::packaged_config("wanda");
  EXPECT_TRUE(wanda.pruning->spec.is_null("N"));
  EXPECT_EQ(wanda.fitcompress.f_lambda, 0.5);
  EXPECT_EQ(wanda.fitcompress.compression_goal, 0.04);
  EXPECT_EQ(wanda.schedule->pretraining_epochs, 50);
  auto fit = config::packaged_config("fitcompress");
  EXPECT_TRUE(fit.fitcompress.enabled);
  EXPECT_EQ(fit.fitcompress.quantization_schedule, (std::vector<double>{7, 6, 5, 4, 3}));
  EXPECT_EQ(fit.fitcompress.pruning_end, -2);
  EXPECT_EQ(config::packaged_config("pdp").schedule->pretraining_epochs, 1);
  EXPECT_EQ(config::packaged_config("mdmm").pruning->spec.text("scale_mode"), "mean");
  EXPECT_EQ(parse("{}"), parse("quantization_parameters: {}\n"));  // all defaults
  EXPECT_THROW(config::packaged_config("magnitude"), ConfigError);
}

TEST(PQuantConfig, RichPlanRoundTrips) {
  auto plan = parse(R"(
training_parameters: {epochs: 4, rounds: 2, rewind: posttraining-stage, save_weights_epoch: 0, pruning_first: true,
                      milestones: [30, 80], lr_schedule: cosine, nested: {a: 1}}
quantization_parameters:
  granularity: per_channel
  overflow_mode_data: WRAP
  round_mode: RND_CONV
  layer_specific:
    layer1.0.conv1: {input: {quantize: false}, weight: {integer_bits: 2, fractional_bits: 3}, bias: {keep_negatives: 1}}
    relu1: {output: {quantize: true, keep_negatives: 0, integer_bits: 0, fractional_bits: 4}}
pruning_parameters: {pruning_method: wanda, N: 2, M: 4, disable_pruning_for_layers: [fc2, "layer1.0.conv1"], enable_pruning: true}
hpo_parameters:
  sampler: {type: NSGAIISampler, params: {seed: 7, population_size: 20}}
  hyperparameter_search: {numerical: {lr: [1e-5, 1e-3], bits: [2, 8, 1], t: [1.0, 5]}, categorical: {opt: [adam, sgd]}}
)");
  EXPECT_EQ(plan.schedule->rewind, Rewind::PostTrainingStage);  // the docs' spelling
  EXPECT_TRUE(plan.pruning_first);
  EXPECT_EQ(plan.pruning->spec.integer("N"), 2);
  EXPECT_TRUE(plan.search.numerical.at("t").is_float);
  EXPECT_FALSE(plan.search.numerical.at("bits").is_float);
  std::string text = config::write_pquant(plan);
  auto back = parse(text);
  EXPECT_EQ(back, plan) << text;
  EXPECT_EQ(back.schedule->extra.at("milestones"), "[30, 80]");
  EXPECT_EQ(back.search.sampler_params.at("population_size"), "20");
}

namespace {
struct BadConfig {
  const char* text;
  const char* where;  ///< "c.yaml:L:C" or "c.yaml" the message starts with
  const char* says;   ///< the key (and what is wrong) the message must name
};

// Unknown keys at every level, wrong types, bad enums, out-of-range numbers, lists where mappings
// belong, empty files and YAML syntax errors.
const BadConfig kBadConfigs[] = {
    {"quantisation_parameters: {}\n", "c.yaml:1:1", "unknown key 'quantisation_parameters', did you mean 'quantization_parameters'"},
    {"quantization_parameters:\n  round_mod: RND\n", "c.yaml:2:3", "unknown key 'round_mod', did you mean 'round_mode'"},
    {"pruning_parameters:\n  pruning_method: cs\n  sparsity: 0.5\n", "c.yaml:3:3", "(method cs): unknown key 'sparsity'"},
    {"training_parameters:\n  rewind: sometimes\n", "c.yaml:2:11", "rewind: 'sometimes' is not one of never, every-round, post-training-stage"},
    {"fitcompress_parameters:\n  enable_fitcompres: true\n", "c.yaml:2:3", "unknown key 'enable_fitcompres', did you mean 'enable_fitcompress'"},
    {"hpo_parameters:\n  num_trial: 3\n", "c.yaml:2:3", "unknown key 'num_trial', did you mean 'num_trials'"},
    {"hpo_parameters:\n  sampler: {type: TPESampler, seed: 3}\n", "c.yaml:2:31", "sampler: unknown key 'seed', did you mean"},
    {"quantization_parameters:\n  layer_specific:\n    fc1:\n      wieght: {integer_bits: 1}\n", "c.yaml:4:7", "layer_specific.fc1: unknown key 'wieght', did you mean 'weight'"},
    {"quantization_parameters:\n  layer_specific:\n    fc1:\n      weight: {integer_bit: 3}\n", "c.yaml:4:16", "fc1.weight: unknown key 'integer_bit', did you mean 'integer_bits'"},
    {"quantization_parameters:\n  layer_specific:\n    fc1:\n      weight: {quantize: true}\n", "c.yaml:4:16", "fc1.weight: unknown key 'quantize'"},
    {"fitcompress_parameters:\n  pruning_schedule: {start: 0, stop: -3}\n", "c.yaml:2:32", "pruning_schedule: unknown key 'stop', did you mean 'steps'"},
    {"hpo_parameters:\n  hyperparameter_search: {numeric: {}}\n", "c.yaml:2:27", "unknown key 'numeric', did you mean 'numerical'"},
    {"training_parameters:\n  epochs: many\n", "c.yaml:2:11", "training_parameters.epochs: expected an integer, got 'many'"},
    {"training_parameters:\n  epochs: 2.5\n", "c.yaml:2:11", "training_parameters.epochs: expected an integer, got '2.5'"},
    {"quantization_parameters:\n  quantize_input: maybe\n", "c.yaml:2:19", "quantize_input: expected true or false, got 'maybe'"},
    {"quantization_parameters:\n  hgq_beta: [1]\n", "c.yaml:2:13", "hgq_beta: expected a number, got a list"},
    {"pruning_parameters:\n  pruning_method: pdp\n  sparsity: high\n", "c.yaml:3:13", "sparsity: expected a number, got 'high'"},
    {"pruning_parameters:\n  disable_pruning_for_layers: fc1\n", "c.yaml:2:31", "disable_pruning_for_layers: expected a list of layer names"},
    {"pruning_parameters:\n  enable_pruning: 1.5\n", "c.yaml:2:19", "enable_pruning: expected true or false"},
    {"fitcompress_parameters:\n  quantization_schedule: 7\n", "c.yaml:2:26", "quantization_schedule: expected a non-empty list of bit widths"},
    {"hpo_parameters:\n  num_trials: ten\n", "c.yaml:2:15", "num_trials: expected an integer"},
    {"quantization_parameters: [1, 2]\n", "c.yaml:1:26", "quantization_parameters: expected a mapping, got a list"},
    {"pruning_parameters: [pdp]\n", "c.yaml:1:21", "pruning_parameters: expected a mapping, got a list"},
    {"quantization_parameters:\n  layer_specific: [fc1]\n", "c.yaml:2:19", "layer_specific: expected a mapping from layer names"},
    {"quantization_parameters:\n  layer_specific:\n    fc1: [weight]\n", "c.yaml:3:10", "layer_specific.fc1: expected a mapping, got a list"},
    {"hpo_parameters:\n  hyperparameter_search:\n    numerical: {lr: 0.1}\n", "c.yaml:3:21", "numerical.lr: expected [low, high] or [low, high, step]"},
    {"training_parameters: 5\n", "c.yaml:1:22", "training_parameters: expected a mapping, got '5'"},
    {"quantization_parameters:\n  round_mode: ROUND\n", "c.yaml:2:15", "round_mode: 'ROUND' is not one of TRN, TRN_ZERO, RND"},
    {"quantization_parameters:\n  overflow_mode_data: SATURATE\n", "c.yaml:2:23", "overflow_mode_data: 'SATURATE' is not one of SAT, SAT_SYM, WRAP, WRAP_SM"},
    {"quantization_parameters:\n  overflow: CLIP\n", "c.yaml:2:13", "overflow: 'CLIP' is not one of"},
    {"quantization_parameters:\n  granularity: per_layer\n", "c.yaml:2:16", "granularity: 'per_layer' is not one of per_tensor, per_channel, per_weight"},
    {"pruning_parameters:\n  pruning_method: magnitude\n", "c.yaml:2:19", "pruning_method: unknown method 'magnitude'"},
    {"pruning_parameters:\n  pruning_method: dst\n  threshold_type: rowwise\n", "c.yaml:3:19", "threshold_type: 'rowwise' is not one of channelwise, layerwise, weightwise"},
    {"pruning_parameters:\n  pruning_method: mdmm\n  constraint_type: Equal\n", "c.yaml:3:20", "constraint_type: 'Equal' is not one of Equality, LessThanOrEqual, GreaterThanOrEqual"},
    {"pruning_parameters:\n  pruning_method: mdmm\n  l0_mode: fine\n", "c.yaml:3:12", "l0_mode: 'fine' is not one of coarse, smooth"},
    {"hpo_parameters:\n  sampler: Random\n", "c.yaml:2:12", "sampler: 'Random' is not one of GridSampler"},
    {"quantization_parameters:\n  default_weight_keep_negatives: 2\n", "c.yaml:2:34", "default_weight_keep_negatives: 2 is out of range, expected 0..1"},
    {"quantization_parameters:\n  default_data_integer_bits: 40\n", "c.yaml:2:30", "default_data_integer_bits: 40 is out of range, expected -32..32"},
    {"pruning_parameters:\n  pruning_method: pdp\n  sparsity: 1.5\n", "c.yaml:3:13", "sparsity: 1.5 is out of range, expected 0..1"},
    {"pruning_parameters:\n  pruning_method: wanda\n  t_delta: 0\n", "c.yaml:3:12", "t_delta: 0 is out of range, expected >= 1"},
    {"training_parameters:\n  rounds: 0\n", "c.yaml:2:11", "rounds: 0 is out of range, expected 1..100000000"},
    {"training_parameters:\n  epochs: -1\n", "c.yaml:2:11", "epochs: -1 is out of range, expected 0..100000000"},
    {"training_parameters:\n  epochs: 3\n  save_weights_epoch: 5\n", "c.yaml:3:23", "save_weights_epoch: 5 is out of range, expected -1 (never) or 0..2"},
    {"pruning_parameters:\n  pruning_method: activation_pruning\n  threshold: -0.1\n", "c.yaml:3:14", "threshold: -0.1 is out of range, expected 0..1"},
    {"fitcompress_parameters:\n  compression_goal: 2\n", "c.yaml:2:21", "compression_goal: 2 is out of range, expected 0..1"},
    {"fitcompress_parameters:\n  quantization_schedule: [7, 0]\n", "c.yaml:2:30", "quantization_schedule: 0 is out of range, expected 1..32 bits"},
    {"quantization_parameters:\n  hgq_gamma: -1\n", "c.yaml:2:14", "hgq_gamma: -1 is out of range, expected >= 0"},
    {"pruning_parameters:\n  pruning_method: wanda\n  N: 2\n", "c.yaml:3:6", "N: N:M pruning needs both N (pruned per group) and M (group size)"},
    {"pruning_parameters:\n  pruning_method: wanda\n  N: 4\n  M: 4\n", "c.yaml:3:6", "N: 4 must be less than M = 4"},
    {"hpo_parameters:\n  hyperparameter_search:\n    numerical: {lr: [1.0, 0.1]}\n", "c.yaml:3:21", "numerical.lr: low 1 is above high 0.1"},
    {"", "c.yaml: the config is empty", "quantization_parameters"},
    {"quantization_parameters:\n  round_mode: [RND\n", "c.yaml:3:1", "invalid YAML"},
    {"pruning_parameters:\n", "c.yaml:1:1", "pruning_parameters: is empty; give its keys as a mapping or remove the line"},
    {"hpo_parameters: {}\nfinetuning_parameters: {}\n", "c.yaml:2:24", "finetuning_parameters: the search section is already given as hpo_parameters"},
    {"quantization_parameters:\n  use_hgq: false\n  use_high_granularity_quantization: false\n", "c.yaml:2:12", "use_hgq: give either use_hgq or use_high_granularity_quantization"},
    {"quantization_parameters:\n  layer_specific:\n    layer3.0.conv1: {integer_bits: 4, fractional_bits: 6}\n", "c.yaml:3:36", "'integer_bits' directly under the layer is PQuantML's obsolete shape"},
    {"quantization_parameters:\n  round_mode: RND\n  round_mode: TRN\n", "c.yaml:3:3", "key 'round_mode' appears twice (first at c.yaml:2:3)"},
    {"pruning_parameters:\n  pruning_method: [pdp]\n", "c.yaml:2:19", "pruning_method: expected a string, got a list"},
};
}  // namespace

TEST(PQuantConfig, BadConfigCorpus) {
  EXPECT_GE(std::size(kBadConfigs), 40u);
  for (const auto& bad : kBadConfigs) {
    SCOPED_TRACE(bad.text);
    std::string message = error_of(bad.text);
    EXPECT_EQ(message.rfind(bad.where, 0), 0u) << message;
    EXPECT_NE(message.find(bad.says), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;  // one line
  }
}

TEST(PQuantConfig, LayerNamesAreCheckedAgainstTheModel) {
  auto model_error = [&](const std::string& text) {
    return test::error_of<ConfigError>([&] {
      auto g = lenet();
      resolve(test::pquant_plan(text), g);
    });
  };
  EXPECT_EQ(model_error("quantization_parameters:\n  layer_specific:\n    fc9: {weight: {integer_bits: 1}}\n"),
            "c.yaml:3:10: fc9: layer_specific names no layer of model 'lenet', did you mean 'fc1'?");
  EXPECT_EQ(model_error("pruning_parameters: {pruning_method: pdp, disable_pruning_for_layers: [relu1]}\n"),
            "c.yaml:1:72: disable_pruning_for_layers names 'relu1', which is not a weight layer (Linear, "
            "Conv1d, Conv2d) of model 'lenet'; did you mean 'conv1'?");
  EXPECT_EQ(model_error("pruning_parameters: {pruning_method: pdp, disable_pruning_for_layers: [fc1, conv2]}\n"), "");
  // A format that parses but cannot be built (seed 000's all-zero defaults): the layer is named.
  auto g = lenet();
  std::string message = test::error_of<ConfigError>([&] {
    compress(g, test::pquant_plan("quantization_parameters:\n  default_weight_keep_negatives: 0\n  default_weight_fractional_bits: 0\n"));
  });
  EXPECT_EQ(message.rfind("c.yaml:2:3: layer conv1 (Conv2d): fixed-point format (k=0, i=0, f=0): width", 0), 0u) << message;
  // HGQ with dynamic data quantization (which re-splits fixed widths) is refused with the layer named.
  auto g2 = lenet();
  message = test::error_of<ConfigError>([&] {
    compress(g2, test::pquant_plan("quantization_parameters:\n  use_hgq: true\n  dynamic_data_quantization: true\n"));
  });
  EXPECT_NE(message.find("layer conv1 (Conv2d): an HGQ quantizer learns its widths"), std::string::npos) << message;
}

TEST(PQuantConfig, HgqBuildsTrainableWidthsOfKnownShape) {
  auto g = lenet();
  compress(g, test::pquant_plan("quantization_parameters:\n  use_hgq: true\n  granularity: per_weight\n  hgq_gamma: 0.001\n"));
  // conv1's input lane: one width per input pixel; conv1's weight: one per weight; all trainable
  // before any forward pass.
  auto conv1 = pq_layer(g, "conv1");
  auto qs = conv1->quantizers();
  EXPECT_EQ(qs[0].first, "input");
  auto input = quant::as_fixed_point(qs[0].second), weight = quant::as_fixed_point(qs[1].second);
  EXPECT_EQ(input->f.sizes().vec(), (std::vector<int64_t>{1, 1, 28, 28}));
  EXPECT_EQ(weight->f.sizes().vec(), (std::vector<int64_t>{8, 1, 3, 3}));
  EXPECT_TRUE(weight->f.requires_grad());
  EXPECT_EQ(weight->gamma(), 0.001);
  EXPECT_STREQ(weight->kind(), "hgq");
  // Batch-norm scale and shift get gamma too (PQuantML gives them none).
  EXPECT_EQ(quant::as_fixed_point(pq_layer(g, "bn1")->quantizers()[1].second)->gamma(), 0.001);
  // Every granularity runs the whole model, in training and evaluation.
  for (const char* granularity : {"per_tensor", "per_channel", "per_weight"}) {
    auto m = lenet();
    compress(m, test::pquant_plan(std::string("quantization_parameters:\n  use_hgq: true\n  granularity: ") + granularity + "\n"));
    EXPECT_EQ(m->forward(torch::rand({2, 1, 28, 28})).sizes().vec(), (std::vector<int64_t>{2, 10})) << granularity;
    m->eval();
    EXPECT_EQ(m->forward(torch::rand({2, 1, 28, 28})).sizes().vec(), (std::vector<int64_t>{2, 10})) << granularity;
  }
}

TEST(PQuantConfig, HgqBetaSchedule) {
  auto plan = parse("quantization_parameters:\n  use_hgq: true\n  hgq_beta_schedule: [[0, 1.0e-6, log], [10, 1.0e-4], [12, 2.0e-4, linear]]\n");
  auto beta = config::lower_pquant(plan).events_of(Event::Kind::HgqBeta);  // the Plan's curve of events
  ASSERT_EQ(beta.size(), 3u);
  EXPECT_NEAR(curve_at(beta, 5), 1e-5, 1e-12);  // geometric middle of 1e-6 and 1e-4
  EXPECT_DOUBLE_EQ(curve_at(beta, 11), 1e-4);   // [10, 1e-4] is constant up to the next point
  EXPECT_EQ(parse(config::write_pquant(plan)), plan);  // round trip
  auto constant = test::pquant_plan("quantization_parameters:\n  use_hgq: true\n  hgq_beta: 3.0e-6\n");
  EXPECT_DOUBLE_EQ(curve_at(constant.events_of(Event::Kind::HgqBeta), 7), 3e-6);
  EXPECT_TRUE(test::pquant_plan("quantization_parameters:\n  hgq_beta: 3.0e-6\n").events.empty());  // no HGQ, no curve
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"[[0, 1.0e-6], [0, 1.0e-5]]", "c.yaml:2:37: quantization_parameters.hgq_beta_schedule[1]: epoch 0 must be >= 0 and after"},
      {"[[0, 1.0e-6, cubic]]", "c.yaml:2:35: quantization_parameters.hgq_beta_schedule[0]: unknown interpolation 'cubic'"},
      {"[[0, 0.0, log], [5, 1.0e-5]]", "c.yaml:2:38: quantization_parameters.hgq_beta_schedule[1]: a log segment needs beta > 0"},
      {"[[0, -1.0]]", "c.yaml:2:27: quantization_parameters.hgq_beta_schedule[0]: beta -1 must be >= 0"},
      {"[]", "c.yaml:2:22: quantization_parameters.hgq_beta_schedule: expected a list of [epoch, beta"},
      {"[[0]]", "c.yaml:2:23: quantization_parameters.hgq_beta_schedule[0]: expected [epoch, beta]"},
  };
  for (const auto& item : bad) {
    const std::string& value = item.first;
    auto message = test::error_of<ConfigError>([&] { parse("quantization_parameters:\n  hgq_beta_schedule: " + value + "\n"); });
    EXPECT_EQ(message.rfind(item.second, 0), 0u) << value << " -> " << message;
  }
}
