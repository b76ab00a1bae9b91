// NNI quantization config lists (spec nni-config §1.5 template Q, §3.1) and the job's quantizer
// section: targets and their integer specs, the quantizer classes, bad input; a QAT run quantizes
// from its start step and a PTQ run calibrates, both writing calibration.json, which a later run
// loads back.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "sparq/compress/compress.h"
#include "sparq/compress/resolve.h"
#include "sparq/config/dialect.h"
#include "sparq/config/nni.h"
#include "sparq/train/quantizers.h"
#include "test_util.h"

namespace sparq {
namespace {

Plan plan_of(const std::string& text) {
  auto doc = yaml::YamlDoc::load_string(text, "c.yaml");
  return config::load_plan(doc.file, doc.root);
}

std::string error_of(const std::string& text) {
  try {
    plan_of(text);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

models::GraphSpec linear_relu() {
  return models::parse_model_yaml("input_shape: [4]\nlayers:\n  - {name: fc, op: Linear, out_features: 3}\n"
                                  "  - {name: relu, op: ReLU}\n",
                                  "m.yaml");
}

const quant::IntegerSpec* integer(const Resolution& r, const std::string& module, const std::string& target) {
  const auto& t = r.find(module)->targets.at(target);
  return t.quantizer ? std::get_if<quant::IntegerSpec>(&*t.quantizer) : nullptr;
}

TEST(NniQuant, TemplateTargetsAndSettings) {
  models::Graph g(linear_relu());
  auto r = resolve(plan_of("- {op_types: [Linear, ReLU], quant_dtype: int8}\n"), g);
  for (const char* t : {"weight", "bias", kInput, kOutput}) {
    auto* s = integer(r, "fc", t);
    ASSERT_TRUE(s) << t;
    EXPECT_EQ(s->bits, 8);
    EXPECT_TRUE(s->is_signed && s->narrow && s->symmetric);  // scheme null: symmetric; int8: +-127
    EXPECT_EQ(s->channel_dim, -1);
    EXPECT_EQ(s->qmin(), -127);
  }
  EXPECT_TRUE(integer(r, "relu", kInput) && integer(r, "relu", kOutput));  // activations: the lanes
  EXPECT_TRUE(integer(r, "fc", kOutput)->output_lane);

  auto r2 = resolve(plan_of("- op_types: [Linear]\n  quant_dtype: int4\n  target_names: [_input_, weight, _output_]\n"
                            "  target_settings: {_input_: {quant_dtype: uint8, quant_scheme: affine}, weight: "
                            "{granularity: out_channel}}\n"),
                    g);
  EXPECT_EQ(integer(r2, "fc", "weight")->bits, 4);
  EXPECT_EQ(integer(r2, "fc", "weight")->channel_dim, 0);
  EXPECT_EQ(integer(r2, "fc", kInput)->bits, 8);
  EXPECT_FALSE(integer(r2, "fc", kInput)->is_signed);
  EXPECT_FALSE(integer(r2, "fc", kInput)->symmetric);
  EXPECT_EQ(integer(r2, "fc", kOutput)->bits, 4);
  EXPECT_EQ(integer(r2, "fc", "bias"), nullptr);  // not in target_names
}

TEST(NniQuant, QuantizerSectionSetsTheMethod) {
  auto p = plan_of("quantizer: {type: QATQuantizer, quant_start_step: 100}\nconfig_list:\n  - {op_types: [Linear], "
                   "quant_dtype: int8}\n");
  ASSERT_TRUE(p.quantizer);
  EXPECT_EQ(p.quantizer->integer("quant_start_step"), 100);
  EXPECT_EQ(std::get<quant::IntegerSpec>(*p.rules[0].targets.at("weight").quant->spec).method, quant::IntegerMethod::Qat);
  auto l = plan_of("quantizer: {type: LsqQuantizer}\nconfig_list: [{op_types: [Linear], quant_dtype: int8}]\n");
  EXPECT_EQ(std::get<quant::IntegerSpec>(*l.rules[0].targets.at("weight").quant->spec).method, quant::IntegerMethod::Lsq);
  // a v2 quantization list reads (through the corrected converter) as a v3 one
  auto v2 = plan_of("- {quant_types: [weight, input], quant_bits: 8, op_types: [Linear]}\n");
  EXPECT_EQ(v2.dialect, "nni-v2");
  EXPECT_TRUE(v2.rules[0].targets.at("weight").quant);
}

TEST(NniQuant, BadQuantizationConfigs) {
  const std::string q = "quantizer: {type: QATQuantizer}\nconfig_list:\n";
  std::vector<std::pair<std::string, std::string>> cases = {
      {"- {op_types: [Linear], quant_dtype: int0}\n", "config list entry 1.quant_dtype: 'int0' is not"},
      {"- {op_types: [Linear], quant_dtype: int33}\n", "'int33' is not int2..int32"},
      {"- {op_types: [Linear], quant_dtype: float8}\n", "'float8' is not"},
      {"- {op_types: [Linear], quant_dtype: int8, quant_scheme: per_tensor}\n", "'per_tensor' is not symmetric or affine"},
      {"- {op_types: [Linear], quant_scheme: affine}\n", "a quantization entry needs quant_dtype"},
      {"- {op_types: [Linear], quant_dtype: int8, granularity: per_channel}\n", "weight: per_channel is for inputs"},
      {"- {op_types: [Linear], quant_dtype: int8, sparse_ratio: 0.5}\n", "'sparse_ratio' is a pruning key"},
      {"- {op_types: [Linear], quant_dtype: int8, fuse_names: [[fc]]}\n", "a fusion names 2 or 3 modules"},
      {q + "  - {op_types: [Linear], quant_dtype: int8, target_settings: {weight: {quant_dtype: int8, foo: 1}}}\n",
       "unknown key 'foo'"},
      {"quantizer: {type: QATQuantizer, quant_start_step: -1}\nconfig_list: [{op_types: [Linear], quant_dtype: int8}]\n",
       "quant_start_step: -1 is out of range"},
      {"quantizer: {type: QatQuantizer}\nconfig_list: [{op_types: [Linear], quant_dtype: int8}]\n",
       "unknown quantizer 'QatQuantizer', did you mean 'QATQuantizer'?"},
      {"quantizer: {type: BNNQuantizer}\nconfig_list: [{op_types: [Linear], quant_dtype: int8, target_settings: {weight: "
       "{granularity: out_channel}}}]\n",
       "BNNQuantizer takes no granularity"},
      {"quantizer: {type: QATQuantizer}\nconfig_list: [{op_types: [Linear], sparse_ratio: 0.5}]\n",
       "has no quantization entry"},
  };
  for (const auto& [text, expected] : cases) {
    auto e = error_of(text);
    EXPECT_NE(e.find(expected), std::string::npos) << text << "-> " << e;
    EXPECT_NE(e.find("c.yaml:"), std::string::npos) << e;
  }
}

TEST(NniQuant, QatAndPtqRuns) {
  test::TempDir dir("nni_quant");
  auto job = [&](const std::string& name, const std::string& quantizer, const std::string& epochs) {
    return "model: mlp\ndata: {dataset: random, shape: [16], samples: 256}\ntraining: {batch_size: 64, epochs: " + epochs +
           ", progress: none}\noutput: " + dir.file(name) + "\ncompression:\n  quantizer: " + quantizer +
           "\n  config_list:\n    - {op_types: [Linear], quant_dtype: int8, target_names: [_input_, weight], "
           "target_settings: {weight: {granularity: out_channel}, _input_: {quant_dtype: uint8, quant_scheme: affine}}}\n";
  };
  test::write_file(dir.file("qat.yaml"), job("qat", "{type: QATQuantizer, quant_start_step: 6}", "3"));
  auto r = test::run_sparq("run " + dir.file("qat.yaml"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(dir.file("qat/calibration.json"));
  auto table = nlohmann::json::parse(in);
  ASSERT_TRUE(table.contains("fc1"));
  EXPECT_EQ(table["fc1"]["weight"]["quant_dtype"], "int8");
  EXPECT_EQ(table["fc1"]["weight"]["scale"].size(), 256u);  // per output channel of mlp's first layer
  EXPECT_EQ(table["fc1"]["_input_0"]["quant_dtype"], "uint8");
  EXPECT_GT(table["fc1"]["_input_0"]["tracked_max"].get<double>(), 0);

  test::write_file(dir.file("ptq.yaml"), job("ptq", "{type: PtqQuantizer, calibration_batches: 2}", "0"));
  auto p = test::run_sparq("run " + dir.file("ptq.yaml"));
  ASSERT_EQ(p.exit_code, 0) << p.output;
  std::ifstream pin(dir.file("ptq/calibration.json"));
  auto ptable = nlohmann::json::parse(pin);
  EXPECT_EQ(ptable["fc1"]["weight"]["method"], "ptq");
  EXPECT_LT(ptable["fc1"]["_input_0"]["tracked_min"].get<double>(), 0);  // random normal inputs: a range around 0

  // the table loaded back: no calibration pass, the same scales and zero points, written again
  test::write_file(dir.file("loaded.yaml"), job("loaded", "{type: PtqQuantizer, calibration: ptq}", "0"));
  auto l = test::run_sparq("run " + dir.file("loaded.yaml"));
  ASSERT_EQ(l.exit_code, 0) << l.output;
  std::ifstream lin(dir.file("loaded/calibration.json"));
  auto ltable = nlohmann::json::parse(lin);
  for (const char* module : {"fc1", "fc2", "fc3"})
    for (const char* target : {"weight", "_input_0"})
      for (const char* key : {"scale", "zero_point", "tracked_min", "tracked_max"})
        EXPECT_EQ(ltable[module][target][key], ptable[module][target][key]) << module << "." << target << "." << key;
  // a table of other formats, or a missing one, is an error before training
  std::string int4 = job("int4", "{type: PtqQuantizer, calibration: ptq}", "0");
  int4.replace(int4.find("quant_dtype: int8"), 17, "quant_dtype: int4");
  test::write_file(dir.file("int4.yaml"), int4);
  auto bad = test::run_sparq("run " + dir.file("int4.yaml"));
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("fc1.weight is int8 symmetric in the table, int4 symmetric in the config"), std::string::npos)
      << bad.output;
  test::write_file(dir.file("none.yaml"), job("none", "{type: PtqQuantizer, calibration: qat/nothing.json}", "0"));
  auto none = test::run_sparq("run " + dir.file("none.yaml"));
  EXPECT_EQ(none.exit_code, 2) << none.output;
  EXPECT_NE(none.output.find("is not a calibration.json"), std::string::npos) << none.output;

  test::write_file(dir.file("bare.yaml"), "model: mlp\ndata: {dataset: random, shape: [16], samples: 64}\ncompression:\n"
                                          "  config_list: [{op_types: [Linear], quant_dtype: int8}]\n");
  auto bare = test::run_sparq("run " + dir.file("bare.yaml"));
  EXPECT_EQ(bare.exit_code, 2);
  EXPECT_NE(bare.output.find("needs the quantizer that reads it"), std::string::npos) << bare.output;
}

/// The parameter holding node `name`'s output offset: a folded batch norm's shift, else the bias.
torch::Tensor offset_of(models::Graph& g, const std::string& name) {
  auto layer = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(g, name));
  return layer->bn_bias.defined() ? layer->bn_bias : layer->bias;
}

/// Per output channel of node `name`, the mean over the data of its float output with the offset
/// `float_bias` (its own quantizers off) minus its quantized output, on the same input (the
/// quantized model before it).
torch::Tensor mean_gap(models::Graph& g, const std::string& name, const torch::Tensor& x, const torch::Tensor& float_bias) {
  torch::NoGradGuard no_grad;
  const int index = g->index_of(name);
  auto layer = pq_layer(g, name);
  auto offset = offset_of(g, name);
  g->record_outputs({index});
  g->forward(x);
  auto quantized = g->recorded(index);
  auto bias = offset.clone();
  offset.copy_(float_bias);
  for (auto& [target, q] : layer->quantizers()) q->enabled = false;
  g->forward(x);
  auto exact = g->recorded(index);
  for (auto& [target, q] : layer->quantizers()) q->enabled = true;
  offset.copy_(bias);
  g->record_outputs({});
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < exact.dim(); ++d)
    if (d != 1) dims.push_back(d);
  return (exact - quantized).mean(dims);
}

TEST(NniQuant, PtqBiasCorrectionCentresEveryLayer) {
  // int3 weights on a Conv and two Linear layers, inputs with a mean far from 0: quantization
  // shifts each output channel's mean; bias correction takes the shift out, layer after layer.
  auto spec = models::parse_model_yaml("input_shape: [2, 6, 6]\nlayers:\n  - {name: conv, op: Conv2d, out_channels: 4, "
                                       "kernel_size: 3}\n  - {name: relu, op: ReLU}\n  - {name: flat, op: Flatten}\n"
                                       "  - {name: fc1, op: Linear, out_features: 8}\n  - {name: relu2, op: ReLU}\n"
                                       "  - {name: fc2, op: Linear, out_features: 3}\n",
                                       "m.yaml");
  torch::manual_seed(0);
  models::Graph g(spec);
  auto plan = plan_of("quantizer: {type: PtqQuantizer, calibration_batches: 4, is_bias_correction: true}\n"
                      "config_list: [{op_types: [Conv2d, Linear], quant_dtype: int3, target_names: [weight, _input_], "
                      "target_settings: {_input_: {quant_dtype: uint8, quant_scheme: affine}}}]\n");
  ASSERT_TRUE(plan.quantizer);
  EXPECT_TRUE(plan.quantizer->flag("is_bias_correction"));
  compress(g, plan);
  data::Dataset ds;
  ds.x = torch::randn({256, 2, 6, 6}) + 2;
  ds.y = torch::randint(3, {256});
  ds.num_classes = 3;
  const auto batches = train::calibration_batches(ds, 4, 64, torch::Device(torch::kCPU));
  train::calibrate(g, batches);
  const std::vector<std::string> names = {"conv", "fc1", "fc2"};
  std::map<std::string, torch::Tensor> float_bias;
  std::map<std::string, double> before;
  for (const auto& name : names) {
    float_bias[name] = offset_of(g, name).detach().clone();
    before[name] = mean_gap(g, name, ds.x, float_bias[name]).abs().max().item<double>();
    EXPECT_GT(before[name], 0.02) << name << " is shifted before";
  }
  train::correct_biases(g, batches);
  for (const auto& name : names) {
    const double after = mean_gap(g, name, ds.x, float_bias[name]).abs().max().item<double>();
    // the first layer exactly (its input and ranges are the same); later ones up to the
    // re-calibrated ranges of their inputs
    EXPECT_LT(after, name == "conv" ? 1e-5 : 0.05 * before[name]) << name << " after correction";
  }

  // A batch norm folded into the conv (fuse_names): the correction goes into its shift.
  auto folded_spec = models::parse_model_yaml(
      "input_shape: [2, 6, 6]\nlayers:\n  - {name: conv, op: Conv2d, out_channels: 4, kernel_size: 3}\n"
      "  - {name: bn, op: BatchNorm2d}\n  - {name: relu, op: ReLU}\n  - {name: flat, op: Flatten}\n"
      "  - {name: fc, op: Linear, out_features: 3}\n",
      "m.yaml");
  torch::manual_seed(0);
  models::Graph folded(folded_spec);
  {
    torch::NoGradGuard no_grad;  // batch-norm statistics far from the identity, so the fold scales
    auto bn = folded->node("bn").module.ptr()->named_buffers();
    bn["running_var"].fill_(4.0), bn["running_mean"].fill_(0.5);
  }
  compress(folded, plan_of("quantizer: {type: PtqQuantizer, calibration_batches: 4, is_bias_correction: true}\n"
                           "config_list: [{op_types: [Conv2d, Linear], quant_dtype: int3, target_names: [weight, _input_], "
                           "fuse_names: [[conv, bn]], target_settings: {_input_: {quant_dtype: uint8, quant_scheme: affine}}}]\n"));
  train::calibrate(folded, batches);
  auto shift = offset_of(folded, "conv").detach().clone();
  const double folded_before = mean_gap(folded, "conv", ds.x, shift).abs().max().item<double>();
  EXPECT_GT(folded_before, 0.02);
  train::correct_biases(folded, batches);
  EXPECT_LT(mean_gap(folded, "conv", ds.x, shift).abs().max().item<double>(), 1e-5);

  test::TempDir dir("bias_correction");
  test::write_file(dir.file("calibration.json"), "{}");
  auto e = error_of("quantizer: {type: PtqQuantizer, is_bias_correction: true, calibration: " + dir.file("calibration.json") +
                    "}\nconfig_list: [{op_types: [Linear], quant_dtype: int8}]\n");
  EXPECT_EQ(e.find("c.yaml:"), 0u) << e;
  EXPECT_NE(e.find("cannot be combined with a loaded calibration table"), std::string::npos) << e;
}

}  // namespace
}  // namespace sparq
