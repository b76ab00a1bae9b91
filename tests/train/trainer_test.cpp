// The float Trainer: learning, determinism with a seed, resume equal to an uninterrupted run.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "sparq/compress/compress.h"
#include "sparq/error.h"
#include "sparq/train/trainer.h"
#include "test_util.h"

using namespace sparq;

namespace {

using test::blobs;

// An MLP with dropout, so that resume must also restore the generator state.
models::GraphSpec mlp_with_dropout() {
  return models::parse_model_yaml(R"(
input_shape: [8]
layers:
  - {name: fc1, op: Linear, out_features: 32}
  - {name: relu1, op: ReLU}
  - {name: drop, op: Dropout, p: 0.2}
  - {name: fc2, op: Linear, out_features: 3}
)", "mlp.yaml");
}

train::TrainOptions options(const std::string& optimizer, int64_t epochs) {
  train::TrainOptions o;
  o.optimizer = optimizer;
  o.lr = optimizer == "sgd" ? 0.05 : 0.01;
  if (optimizer == "sgd") o.momentum = 0.9, o.nesterov = true;
  if (optimizer != "adam") o.weight_decay = 1e-3;
  o.batch_size = 32;
  o.epochs = epochs;
  o.seed = 5;
  o.progress = train::Progress::None;
  return o;
}

std::vector<torch::Tensor> weights_after(const std::string& optimizer, int64_t epochs, const std::string& dir,
                                         const data::Dataset& train, bool resume = false) {
  train::seed_everything(5);
  models::Graph model(mlp_with_dropout());
  test::RunTrainer trainer(model, options(optimizer, epochs), dir);
  trainer.fit(train, blobs(64, 9), resume);
  std::vector<torch::Tensor> w;
  for (const auto& p : model->parameters()) w.push_back(p.detach().clone());
  return w;
}

bool same(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!a[i].equal(b[i])) return false;  // bit for bit
  return true;
}

}  // namespace

TEST(Trainer, LearnsASeparableProblem) {
  train::seed_everything(1);
  models::Graph model(models::zoo_spec("mlp", {8}, 3, {{16}}));
  auto o = options("adam", 8);
  test::RunTrainer trainer(model, o, "");
  auto history = trainer.fit(blobs(600, 1), blobs(300, 2));
  ASSERT_EQ(history.size(), 8u);
  EXPECT_LT(history.back().train_loss, history.front().train_loss);
  EXPECT_GT(history.back().eval.accuracy, 0.85);
  EXPECT_EQ(history.back().eval.samples, 300);
}

TEST(Trainer, SameSeedSameWeights) {
  auto train = blobs(200, 3);
  test::TempDir a("det_a"), b("det_b");
  EXPECT_TRUE(same(weights_after("adam", 2, a.path().string(), train), weights_after("adam", 2, b.path().string(), train)));
}

TEST(Trainer, ResumeEqualsAnUninterruptedRun) {
  auto train = blobs(200, 4);
  for (const char* optimizer : {"adam", "adamw", "sgd"}) {
    test::TempDir full("full"), split("split");
    auto straight = weights_after(optimizer, 2, full.path().string(), train);
    weights_after(optimizer, 1, split.path().string(), train);  // stop after epoch 1
    // The resumed run starts from a freshly initialised model with other weights: all state
    // must come from the checkpoint.
    torch::manual_seed(1234);
    auto resumed = weights_after(optimizer, 2, split.path().string(), train, /*resume=*/true);
    EXPECT_TRUE(same(straight, resumed)) << optimizer;
    std::ifstream metrics(split.file("metrics.jsonl"));
    std::string line;
    int lines = 0;
    while (std::getline(metrics, line)) {
      ++lines;
      EXPECT_NE(line.find("\"epoch\":" + std::to_string(lines)), std::string::npos) << line;
    }
    EXPECT_EQ(lines, 2) << optimizer;
  }
}

TEST(Trainer, MseRegression) {
  auto gen = at::detail::createCPUGenerator(7);
  auto x = at::normal(0.0, 1.0, {256, 4}, gen);
  auto y = x.matmul(torch::tensor({1.0f, -2.0f, 0.5f, 3.0f}));
  auto ds = data::make_dataset(x, y, data::Task::Regression, 0, "linear");
  train::seed_everything(0);
  models::Graph model(models::parse_model_yaml("input_shape: [4]\nlayers:\n  - {op: Linear, out_features: 1}\n", "lin"));
  auto o = options("adam", 30);
  o.loss = "mse";
  o.lr = 0.05;
  test::RunTrainer trainer(model, o, "");
  auto history = trainer.fit(ds, ds);
  EXPECT_LT(history.back().eval.loss, 0.01);
}

TEST(Trainer, RejectsMismatchedCheckpointsAndBadOptions) {
  test::TempDir dir("ckpt");
  weights_after("adam", 1, dir.path().string(), blobs(64, 1));
  models::Graph other(models::zoo_spec("mlp", {8}, 3, {{5}}));
  test::RunTrainer trainer(other, options("adam", 2), dir.path().string());
  try {
    trainer.fit(blobs(64, 1), blobs(8, 1), true);
    FAIL() << "a checkpoint of another model was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("checkpoint does not fit this model"), std::string::npos) << e.what();
  }
  test::TempDir empty("empty");
  test::RunTrainer fresh(other, options("adam", 2), empty.path().string());
  EXPECT_THROW(fresh.fit(blobs(64, 1), blobs(8, 1), true), Error);
  auto bad = options("adam", 1);
  bad.device = "tpu";
  EXPECT_THROW(test::RunTrainer(other, bad, ""), Error);
}

TEST(Trainer, ResumeOfAQuantizedModelEqualsAnUninterruptedRun) {
  // Quantizer state (per-channel bits re-split while training) must come back from the checkpoint.
  auto train = blobs(200, 6);
  auto run = [&](int64_t epochs, const std::string& dir, bool resume) {
    train::seed_everything(5);
    models::Graph model(mlp_with_dropout());
    compress(model, test::pquant_plan("quantization_parameters: {granularity: per_channel, default_data_keep_negatives: 1, "
                                      "default_data_integer_bits: 3, default_data_fractional_bits: 4}"));
    test::RunTrainer trainer(model, options("adam", epochs), dir);
    trainer.fit(train, blobs(64, 9), resume);
    std::vector<torch::Tensor> state;
    for (const auto& p : model->parameters()) state.push_back(p.detach().clone());
    for (const auto& b : model->buffers()) state.push_back(b.detach().clone());
    return state;
  };
  test::TempDir full("qfull"), split("qsplit");
  auto straight = run(2, full.path().string(), false);
  run(1, split.path().string(), false);
  auto resumed = run(2, split.path().string(), true);
  EXPECT_TRUE(same(straight, resumed));
}

TEST(Trainer, CudaRunReachesTheCpuAccuracy) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto accuracy = [](const std::string& device) {
    train::seed_everything(1);
    models::Graph model(models::zoo_spec("mlp", {8}, 3, {{16}}));
    auto o = options("adam", 8);
    o.device = device;
    test::RunTrainer trainer(model, o, "");
    return trainer.fit(blobs(600, 1), blobs(300, 2)).back().eval.accuracy;
  };
  double cpu = accuracy("cpu"), gpu = accuracy("cuda");
  EXPECT_GT(gpu, 0.85);
  EXPECT_NEAR(gpu, cpu, 0.03);
}

TEST(Trainer, CheckpointRestoresLearnedBitWidths) {
  // HGQ widths are trained state: a model loaded from the checkpoint must compute with them, not
  // with the initial widths it was built with (a missing restore leaves f at its initial 7).
  auto train = blobs(200, 6);
  test::TempDir dir("hgq_restore");
  auto build = [] {
    train::seed_everything(5);
    models::Graph model(mlp_with_dropout());
    compress(model, test::pquant_plan("quantization_parameters: {use_hgq: true, granularity: per_weight, hgq_beta: 1.0e-3, hgq_gamma: 0.01}"));
    return model;
  };
  auto widths = [](const models::Graph& m) {
    return quant::as_fixed_point(pq_layer(m, "fc1")->quantizers()[1].second)->f.detach().clone();
  };
  auto model = build();
  auto initial = widths(model);
  auto o = options("adam", 2);
  o.lr = 0.05;
  test::RunTrainer trainer(model, o, dir.path().string());
  trainer.fit(train, blobs(64, 9));
  auto learned = widths(model);
  ASSERT_FALSE(learned.equal(initial)) << "the widths did not move, so this test could not fail";
  auto fresh = build();
  ASSERT_TRUE(widths(fresh).equal(initial));
  test::RunTrainer reloaded(fresh, o, "");
  EXPECT_EQ(reloaded->load_checkpoint(dir.file("checkpoint.pt")), 2);
  EXPECT_TRUE(widths(fresh).equal(learned));
  fresh->eval(), model->eval();
  auto x = blobs(16, 3).x;
  EXPECT_TRUE(fresh->forward(x).equal(model->forward(x)));
}
