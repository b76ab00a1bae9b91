// The fused MLP (train/fused_mlp.h) against the layers' own ops, its oracle: the CPU twin of the
// kernels everywhere, the CUDA kernels on a GPU (scripts/gpu_build.sh test).
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "sparq/compress/compress.h"
#include "sparq/error.h"
#include "sparq/train/trainer.h"
#include "test_util.h"
#include "train/fused_mlp.h"

using namespace sparq;

namespace {

const char* kFixed8 =
    "quantization_parameters: {default_weight_integer_bits: 1, default_weight_fractional_bits: 6, "
    "default_data_keep_negatives: 1, default_data_integer_bits: 3, default_data_fractional_bits: 4}";
const char* kHgq =  // the jet tagger example's quantizers: HGQ widths per weight and per feature
    "quantization_parameters: {use_high_granularity_quantization: true, granularity: per_weight, hgq_gamma: 1.0e-4,"
    " default_weight_integer_bits: 1, default_weight_fractional_bits: 6, default_data_keep_negatives: 1,"
    " default_data_integer_bits: 3, default_data_fractional_bits: 4}";
const char* kHgqPerTensor =  // one width per lane, SAT_SYM, the output quantizers on, a bias-free layer
    "quantization_parameters: {use_high_granularity_quantization: true, granularity: per_tensor, hgq_gamma: 1.0e-4,"
    " default_weight_integer_bits: 1, default_weight_fractional_bits: 6, default_data_keep_negatives: 1,"
    " default_data_integer_bits: 2, default_data_fractional_bits: 3, overflow: SAT_SYM,"
    " quantize_output: true}";

struct Config {
  std::string name, text;
};
std::vector<Config> configs() {
  return {{"float", ""}, {"fixed8", kFixed8}, {"hgq per weight", kHgq}, {"hgq per tensor", kHgqPerTensor}};
}

/// The jet tagger (16-64-32-32-5), or with `odd` an MLP of widths no multiple of 4 (10-13-7-3:
/// the kernels' partial blocks), quantized as `config` says, in training mode on `device`.
models::Graph jet_model(const std::string& config, const std::string& device, bool odd = false) {
  torch::manual_seed(5);
  models::Graph model(odd ? models::zoo_spec("mlp", {10}, 3, {.widths = {13, 7}})
                          : models::zoo_spec("jet_tagger", {16}, 5));
  if (!config.empty()) {
    Plan plan = test::pquant_plan(config);
    compress(model, plan);
  }
  model->to(torch::Device(device));
  model->train();
  return model;
}

struct Pass {
  torch::Tensor out;
  std::map<std::string, torch::Tensor> grads;
};

/// Output and every parameter's gradient of a cross-entropy step on (x, y).
template <typename Forward>
Pass pass(models::Graph& model, const torch::Tensor& x, const torch::Tensor& y, Forward&& forward) {
  model->zero_grad(/*set_to_none=*/true);
  Pass p;
  p.out = forward(x);
  torch::nn::functional::cross_entropy(p.out, y).backward();
  for (const auto& item : model->named_parameters())
    if (item.value().grad().defined()) p.grads[item.key()] = item.value().grad().detach().cpu().clone();
  p.out = p.out.detach().cpu();
  return p;
}

/// x spread wide enough that the quantizers saturate and the ReLUs cut; 150 rows: two full
/// tiles and a part.
std::pair<torch::Tensor, torch::Tensor> batch(const std::string& device, int64_t rows = 150, int64_t features = 16,
                                               int64_t classes = 5) {
  auto gen = at::detail::createCPUGenerator(11);
  auto x = at::normal(0.0, 2.5, {rows, features}, gen);
  auto y = at::randint(classes, {rows}, gen, torch::kInt64);
  return {x.to(torch::Device(device)), y.to(torch::Device(device))};
}

/// The fused pass equals the layers' ops: the output bit for bit where the arithmetic is exact
/// (quantized inputs and weights: every product and sum fits float32), else within 1e-5; every
/// gradient within 1e-4 of the largest of its tensor (the sums' order differs).
void expect_fused_equals_layers(const std::string& device) {
  for (const auto& c : configs())
    for (bool odd : {false, true}) {
      SCOPED_TRACE(c.name + (odd ? ", odd widths" : ""));
      auto model = jet_model(c.text, device, odd);
      auto [x, y] = odd ? batch(device, 150, 10, 3) : batch(device);
      train::FusedMlp fused(model);
      ASSERT_EQ(fused.refusal(x, /*allow_cpu=*/true), "");
      auto layers = pass(model, x, y, [&](const torch::Tensor& v) { return model->forward(v); });
      auto mine = pass(model, x, y, [&](const torch::Tensor& v) { return fused.forward(v); });
      if (c.text.empty()) {
        EXPECT_TRUE(torch::allclose(mine.out, layers.out, 1e-5, 1e-5));
      } else {
        EXPECT_TRUE(torch::equal(mine.out, layers.out)) << (mine.out - layers.out).abs().max().item<float>();
      }
      ASSERT_EQ(mine.grads.size(), layers.grads.size());
      int trained_widths = 0;
      for (const auto& [name, g] : layers.grads) {
        ASSERT_TRUE(mine.grads.count(name)) << name;
        const double scale = std::max(g.abs().max().item<double>(), 1e-6);
        const double diff = (mine.grads[name] - g).abs().max().item<double>();
        EXPECT_LE(diff, 1e-4 * scale) << name << ": largest gradient " << scale;
        trained_widths += name.find("quantizer") != std::string::npos;
      }
      if (c.name.rfind("hgq", 0) == 0) {
        EXPECT_GE(trained_widths, odd ? 2 * 11 : 2 * 15) << "every HGQ lane's i and f";
      }
      EXPECT_GE(layers.grads.size(), odd ? 6u : 8u);  // a weight and a bias per layer
    }
}

}  // namespace

TEST(FusedMlp, CpuTwinEqualsTheLayersOps) { expect_fused_equals_layers("cpu"); }

TEST(FusedMlpCuda, KernelsEqualTheLayersOps) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  expect_fused_equals_layers("cuda");
}

TEST(FusedMlp, RefusesWhatItCannotRunAndSaysWhy) {
  auto x = torch::zeros({4, 16});
  {
    models::Graph lenet(models::zoo_spec("lenet", {1, 28, 28}, 10));
    EXPECT_NE(train::FusedMlp(lenet).refusal(torch::zeros({4, 1, 28, 28}), true).find("dimensions"), std::string::npos);
    const auto why = train::FusedMlp(lenet).refusal(torch::zeros({4, 100}), true);
    EXPECT_NE(why.find("Conv2d"), std::string::npos) << why;
  }
  auto model = jet_model("", "cpu");
  EXPECT_EQ(train::FusedMlp(model).refusal(x, /*allow_cpu=*/true), "");
  EXPECT_EQ(train::FusedMlp(model).refusal(x, /*allow_cpu=*/false), "not on a GPU");
  EXPECT_EQ(train::FusedMlp(model).refusal(x.to(torch::kFloat64), true), "inputs are not float32");
  auto pruned = jet_model("pruning_parameters: {pruning_method: pdp, sparsity: 0.5}", "cpu");
  EXPECT_NE(train::FusedMlp(pruned).refusal(x, true).find("has a pruning method"), std::string::npos);
  auto wide = models::Graph(models::parse_model_yaml(
      "input_shape: [16]\nlayers:\n  - {name: fc1, op: Linear, out_features: 200}\n  - {name: fc2, op: Linear, out_features: 5}\n",
      "wide.yaml"));
  EXPECT_NE(train::FusedMlp(wide).refusal(x, true).find("200 outputs"), std::string::npos);
  auto tanh = models::Graph(models::parse_model_yaml(
      "input_shape: [16]\nlayers:\n  - {name: fc1, op: Linear, out_features: 8}\n  - {name: act, op: Tanh}\n"
      "  - {name: fc2, op: Linear, out_features: 5}\n",
      "tanh.yaml"));
  EXPECT_NE(train::FusedMlp(tanh).refusal(x, true).find("node 'act' (Tanh)"), std::string::npos);
}

TEST(FusedMlp, OptionIsCheckedAndOnRefusesAModelItCannotRun) {
  train::TrainOptions o;
  o.progress = train::Progress::None;
  o.epochs = 1;
  o.fused_mlp = "sometimes";
  models::Graph model(test::blobs_mlp());
  EXPECT_THROW(train::Trainer(model, o), Error);
  o.fused_mlp = "on";
  models::Graph lenet(models::zoo_spec("lenet", {1, 28, 28}, 10));
  train::Trainer trainer(lenet, o);
  auto images = data::make_dataset(torch::rand({8, 1, 28, 28}), torch::zeros({8}, torch::kInt64),
                                   data::Task::Classification, 10, "images");
  auto why = test::error_of<Error>([&] { trainer.fit(images, images); });
  EXPECT_NE(why.find("training.fused_mlp: on, but the model cannot run fused: inputs of 4 dimensions"), std::string::npos) << why;
}

namespace {

struct RunResult {
  std::vector<train::EpochMetrics> history;
  std::vector<torch::Tensor> params;
  std::string note;
};

RunResult train_jet(const std::string& config, const std::string& fused, const std::string& device) {
  train::seed_everything(3);
  models::Graph model(models::zoo_spec("jet_tagger", {16}, 5));
  Plan plan = config.empty() ? Plan{} : test::pquant_plan(config);
  if (!config.empty()) compress(model, plan);
  train::TrainOptions o;
  o.lr = 0.01, o.batch_size = 100, o.seed = 3, o.device = device, o.fused_mlp = fused;
  o.progress = train::Progress::None;
  train::Trainer trainer(model, o, plan.schedule, plan.events);
  auto gen = at::detail::createCPUGenerator(4);
  auto y = at::randint(5, {430}, gen, torch::kInt64);
  auto x = at::normal(0.0, 1.0, {430, 16}, gen) + y.unsqueeze(1).to(torch::kFloat32);
  auto ds = data::make_dataset(x, y, data::Task::Classification, 5, "jets");
  RunResult r;
  r.history = trainer.fit(ds, ds);
  for (const auto& p : model->parameters()) r.params.push_back(p.detach().cpu());
  r.note = trainer.fused_mlp_note();
  return r;
}

/// A run in the fused kernels equals the layers' run: per-epoch losses, EBOPs and the weights.
void expect_fused_run_equals_layers_run(const std::string& device, const std::string& fused) {
  const std::string hgq = std::string(kHgq) + "\ntraining_parameters: {pretraining_epochs: 1, epochs: 2, fine_tuning_epochs: 0}";
  for (const auto& config : {std::string(kFixed8), hgq}) {
    SCOPED_TRACE(config);
    auto layers = train_jet(config, "off", device), mine = train_jet(config, fused, device);
    EXPECT_EQ(layers.note, "");
    EXPECT_EQ(mine.note, "fused MLP kernels");
    test::expect_epochs_near(layers.history, mine.history);
    for (const auto& m : mine.history) EXPECT_GT(m.cost.ebops, 0) << "the layers know their input shapes";
    for (size_t p = 0; p < layers.params.size(); ++p)
      EXPECT_TRUE(torch::allclose(layers.params[p], mine.params[p], 1e-3, 1e-4)) << "parameter " << p;
    EXPECT_LT(layers.history.back().train_loss, layers.history.front().train_loss);  // it trained
  }
}

}  // namespace

TEST(FusedMlp, TrainerRunOnTheCpuTwinEqualsTheLayersRun) { expect_fused_run_equals_layers_run("cpu", "on"); }

TEST(FusedMlpCuda, AutoRunEqualsTheLayersRun) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  expect_fused_run_equals_layers_run("cuda", "auto");
}
