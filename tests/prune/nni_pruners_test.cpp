// The NNI pruners in training: the schedules of spec nni-config §2.8 and the Movement example of
// §7.2 step by step, every pruner reaching its ratio in a run, and resumed runs equal to
// uninterrupted ones.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nni_test_util.h"

namespace sparq {
namespace {

/// Linear 10x10 with weight 1..100 and lr 0 (the weights stay): sparsity of its weight mask after
/// each of 8 optimizer steps under `section`'s pruner.
std::vector<double> sparsity_per_step(const std::string& pruner) {
  auto spec = models::parse_model_yaml("input_shape: [10]\nlayers:\n  - {name: fc, op: Linear, out_features: 10}\n", "m.yaml");
  auto s = test::nni_setup(spec, {{"fc", {torch::arange(1, 101, torch::kFloat32).view({10, 10}), torch::zeros({10})}}},
                           "pruner: " + pruner + "\nconfig_list:\n  - {op_names: [fc], sparse_ratio: 0.8}", false);
  train::TrainOptions o;
  o.optimizer = "sgd";
  o.lr = 0.0;
  o.epochs = 1;
  train::Trainer trainer(s.graph, o);
  trainer.add_loss_term(s.pruner);
  trainer.begin_training(8);
  trainer.begin_epoch(0);
  auto gen = at::detail::createCPUGenerator(3);
  std::vector<double> out;
  for (int step = 0; step < 8; ++step) {
    trainer.step(at::normal(0.0, 1.0, {4, 10}, gen), at::randint(10, {4}, gen, torch::kInt64));
    auto mask = pq_layer(s.graph, "fc")->mask("weight")->mask;
    out.push_back(1.0 - mask.mean().item<double>());
  }
  return out;
}

void expect_near(const std::vector<double>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6) << "after step " << i + 1;
}

TEST(NniPruners, LinearAndAgpSchedulesRaiseTheGoalEveryInterval) {
  expect_near(sparsity_per_step("{type: LinearPruner, interval_steps: 2, total_times: 4, pruner: {type: LevelPruner}}"),
              {0, .2, .2, .4, .4, .6, .6, .8});
  // AGP k=1: 0.8 x 0.578125 = 0.4625 -> floor(46.25) = 46 weights
  expect_near(sparsity_per_step("{type: AGPPruner, interval_steps: 2, total_times: 4, pruner: {type: LevelPruner}}"),
              {0, .46, .46, .70, .70, .78, .78, .80});
}

TEST(NniPruners, MovementRampsFromWarmupToCooldown) {
  expect_near(sparsity_per_step("{type: MovementPruner, warmup_step: 2, cooldown_begin_step: 6}"),
              {0, 0, .4, .7, .7, .8, .8, .8});
}

TEST(NniPruners, TaylorMasksOnceAfterItsTrainingSteps) {
  auto s = sparsity_per_step("{type: TaylorPruner, training_steps: 3}");
  expect_near(s, {0, 0, .8, .8, .8, .8, .8, .8});
}

TEST(NniPruners, ScheduleLongerThanTrainingIsAnErrorBeforeTheFirstStep) {
  EXPECT_NE(test::error_of<ConfigError>([] { sparsity_per_step("{type: TaylorPruner, training_steps: 9}"); })
                .find("pruner TaylorPruner: its schedule needs 9 optimizer step(s) from start_epoch 0, but training has 8"),
            std::string::npos);
}

/// blobs_mlp trained 3 epochs with `pruner` on fc1 at ratio 0.5 (out_channel rows by default).
test::NniSetup train_blobs(const std::string& pruner, const std::string& dir = "", int64_t stop_after = -1,
                           bool resume = false) {
  torch::manual_seed(0);  // the same initial weights in every run
  auto s = test::nni_setup(test::blobs_mlp(), {},
                           "pruner: " + pruner + "\nconfig_list:\n  - {op_types: [Linear], exclude_op_names: [fc2], "
                           "sparse_ratio: 0.5}",
                           false);
  train::TrainOptions o;
  o.epochs = 3;
  o.batch_size = 32;
  o.lr = 1e-2;
  test::RunTrainer trainer(s.graph, o, dir);
  trainer->add_loss_term(s.pruner);
  auto history = trainer.fit(test::blobs(256, 1), test::blobs(64, 2), resume, stop_after);
  EXPECT_TRUE(std::isfinite(history.back().train_loss));
  return s;
}

TEST(NniPruners, EveryPrunerReachesItsRatioInARun) {
  // 256 samples / 32 = 8 steps per epoch, 24 in all.
  for (const std::string pruner :
       {"{type: LevelPruner}", "{type: L1NormPruner}", "{type: L2NormPruner}", "{type: FPGMPruner}",
        "{type: SlimPruner, training_steps: 10}", "{type: TaylorPruner, training_steps: 10}",
        "{type: MovementPruner, warmup_step: 4, cooldown_begin_step: 16}",
        "{type: LinearPruner, interval_steps: 4, total_times: 5, pruner: {type: L1NormPruner}}",
        "{type: AGPPruner, interval_steps: 4, total_times: 5, pruner: {type: TaylorPruner, training_steps: 20}}",
        "{type: L1NormPruner, start_epoch: 1}"}) {
    SCOPED_TRACE(pruner);
    auto s = train_blobs(pruner);
    auto weight = s.mask("fc1", "weight");
    EXPECT_EQ(std::count(weight.begin(), weight.end(), 0.f), 64);  // 8 x 8 weights: half of fc1
    auto layer = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(s.graph, "fc1"));
    auto effective = layer->effective_weight().detach();
    EXPECT_EQ((effective == 0).sum().item<int64_t>(), 64);
    if (pruner != "{type: LevelPruner}") {  // structured: whole rows, and the bias follows them
      auto rows = s.rows("fc1");
      EXPECT_EQ(std::count(rows.begin(), rows.end(), 0.f), 8);
      EXPECT_EQ(s.mask("fc1", "bias"), rows);
    }
    EXPECT_EQ(s.mask("fc2", "weight"), std::vector<float>{});
  }
}

TEST(NniPruners, SlimTrainsItsFactorsThenFreezesThem) {
  auto s = train_blobs("{type: SlimPruner, training_steps: 10, regular_scale: 0.01}");
  auto factor = pq_layer(s.graph, "fc1")->mask("weight")->factor;
  ASSERT_TRUE(factor.defined());
  EXPECT_EQ(factor.sizes(), (std::vector<int64_t>{16, 1}));  // one per row
  EXPECT_GT((factor - 1).abs().max().item<float>(), 1e-3);  // trained away from 1
  EXPECT_FALSE(factor.requires_grad());                      // frozen after its steps
}

TEST(NniPruners, ResumedRunsEqualUninterruptedOnes) {
  for (const std::string pruner : {"{type: TaylorPruner, training_steps: 12}",
                                   "{type: MovementPruner, warmup_step: 4, cooldown_begin_step: 20}",
                                   "{type: SlimPruner, training_steps: 12}"}) {
    SCOPED_TRACE(pruner);
    test::TempDir a("nni_a"), b("nni_b");
    auto straight = train_blobs(pruner, a.path().string());
    train_blobs(pruner, b.path().string(), /*stop_after=*/1);
    auto resumed = train_blobs(pruner, b.path().string(), -1, /*resume=*/true);
    auto pa = straight.graph->named_parameters(), pb = resumed.graph->named_parameters();
    for (const auto& p : pa) EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();
    auto ba = straight.graph->named_buffers(), bb = resumed.graph->named_buffers();
    for (const auto& p : ba) EXPECT_TRUE(torch::equal(p.value(), bb[p.key()])) << p.key();
  }
}

}  // namespace
}  // namespace sparq
