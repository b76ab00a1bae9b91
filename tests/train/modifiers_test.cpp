// The runtime of SparseML recipes: the time model (spec sparseml §1.8, §4.2 C), learning-rate
// tables (§2.4, §2.5), weight decay and trainable parameters, gradual pruning schedules, the
// worked example of §3.4, constant pruning of a loaded model's zeros, AC/DC's momentum reset,
// and the QAT fake-quant numbers (§2.12.5).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cfloat>

#include "sparq/compress/compress.h"
#include "sparq/config/dialect.h"
#include "sparq/quant/integer.h"
#include "sparq/train/modifiers.h"
#include "test_util.h"

namespace sparq::train {
namespace {

/// What a probe saw after each step.
struct StepRecord {
  double lr = 0, weight_decay = 0, fc1_sparsity = 0, fc2_sparsity = 0;
  bool fc1_trainable = true, quantized = false;
  bool fc1_momentum_zero = false;  ///< SGD's momentum buffer of fc1.weight is all zeros
  torch::Tensor fc1_weight;
};

class Probe : public Callback {
 public:
  void on_step_end(Trainer& t, const TrainContext&) override {
    StepRecord r;
    r.lr = t.lr(0);
    r.weight_decay = t.weight_decay(0);
    for (const char* name : {"fc1", "fc2"}) {
      double s = 0;
      if (auto pq = std::dynamic_pointer_cast<layers::PQWeightLayer>(t.model()->node(name).module.ptr())) {
        torch::NoGradGuard no_grad;
        auto w = pq->effective_weight();
        s = static_cast<double>((w == 0).sum().item<int64_t>()) / static_cast<double>(w.numel());
        if (std::string(name) == "fc1")
          for (const auto& [target, q] : pq->quantizers()) r.quantized = r.quantized || q->enabled;
      }
      (std::string(name) == "fc1" ? r.fc1_sparsity : r.fc2_sparsity) = s;
    }
    auto w = parameter_of(t.model(), "fc1", "weight");  // a PQ layer's or the float Linear's
    r.fc1_trainable = w.requires_grad();
    for (const auto& [key, state] : t.optimizer().state())  // whatever LibTorch keys the state by
      if (auto* sgd = dynamic_cast<torch::optim::SGDParamState*>(state.get()))
        if (sgd->momentum_buffer().defined() && sgd->momentum_buffer().sizes() == w.sizes())
          r.fc1_momentum_zero = sgd->momentum_buffer().eq(0).all().item<bool>();
    r.fc1_weight = w.detach().clone();
    steps.push_back(r);
  }
  std::vector<StepRecord> steps;
};

/// Trains blobs_mlp with `recipe` for its epochs at `spe` steps per epoch (one fixed batch per
/// step, SGD with lr 1e-4 as the spec's tables start from).
std::vector<StepRecord> run_recipe(const std::string& recipe, int64_t spe, models::Graph* keep = nullptr,
                                   const std::string& optimizer = "sgd", double lr = 1e-4, double momentum = 0) {
  auto doc = yaml::YamlDoc::load_string(recipe, "r.yaml");
  Plan plan = config::load_plan(doc.file, doc.root);
  seed_everything(0);
  models::Graph graph(test::blobs_mlp());
  if (keep && *keep) graph = *keep;
  auto resolution = resolve(plan, graph);
  compress(graph, resolution);
  TrainOptions o;
  o.optimizer = optimizer;
  o.lr = lr;
  o.momentum = momentum;
  o.batch_size = 8;
  Trainer t(graph, o, plan.schedule, plan.events);
  for (auto& m : make_modifiers(plan, resolution, graph)) t.add_callback(m);
  auto probe = std::make_shared<Probe>();
  t.add_callback(probe);
  auto data = test::blobs(8, 1);
  t.begin_training(spe);
  const int64_t epochs = plan.schedule ? plan.schedule->epochs : 1;
  for (int64_t e = 0; e < epochs; ++e) {
    t.begin_epoch(e);
    for (int64_t s = 0; s < spe; ++s) t.step(data.x, data.y);
  }
  t.end_training();
  if (keep) *keep = graph;
  return probe->steps;
}

TEST(ModifierClock, EpochsAndUpdateReadiness) {  // §4.2 C1, C2
  EXPECT_DOUBLE_EQ(epoch_at(250, 100), 2.5);
  EXPECT_DOUBLE_EQ(epoch_at(8, 3), 2 + 2.0 / 3);
  ModifierClock c;
  c.start = 10, c.end = 20, c.frequency = 1.0, c.periodic = true;
  EXPECT_FALSE(c.update_ready(9.99));
  EXPECT_TRUE(c.update_ready(10.0));
  c.mark(10.0, true, false);
  EXPECT_FALSE(c.update_ready(10.01));
  EXPECT_TRUE(c.update_ready(11.0));
  c.frequency = 0.01;
  EXPECT_TRUE(c.update_ready(10.01));
  ModifierClock first;  // start -1: the first update, whatever the epoch
  EXPECT_TRUE(first.start_pending(123.4));
}

TEST(RecipeRuntime, GradualPruningWithFractionalFrequency) {  // §4.2 C3: spe 3, updates at steps 3, 5, 7, 9
  auto steps = run_recipe(R"(
modifiers:
  - !GMPruningModifier {params: ['fc1.weight'], init_sparsity: 0.05, final_sparsity: 0.8, start_epoch: 1.0,
                        end_epoch: 3.0, update_frequency: 0.5}
  - !EpochRangeModifier {start_epoch: 0, end_epoch: 4}
)", 3);
  ASSERT_EQ(steps.size(), 12u);
  const double n = 16 * 8;
  auto zeros = [&](double s) { return std::nearbyint(s * n) / n; };
  std::vector<double> expected = {0, 0, 0, zeros(0.05), zeros(0.05), zeros(0.57778), zeros(0.57778), zeros(0.77222),
                                  zeros(0.77222), zeros(0.8), zeros(0.8), zeros(0.8)};
  for (size_t k = 0; k < steps.size(); ++k) EXPECT_NEAR(steps[k].fc1_sparsity, expected[k], 1e-9) << "step " << k;
  EXPECT_EQ(steps.back().fc2_sparsity, 0);
}

TEST(RecipeRuntime, SeedExampleSparsityAtEpochBoundaries) {  // seed 004: 0.05 -> 0.8 over epochs 0-5, every epoch
  auto steps = run_recipe(R"(
modifiers:
  - !GradualKSModifier {params: ['fc1.weight'], init_sparsity: 0.05, final_sparsity: 0.8, start_epoch: 0,
                        end_epoch: 5, update_frequency: 1}
  - !EpochRangeModifier {start_epoch: 0, end_epoch: 7}
)", 2);
  ASSERT_EQ(steps.size(), 14u);
  const double n = 16 * 8;
  for (int e = 0; e < 7; ++e) {
    double x = std::min(e, 5) / 5.0, s = 0.05 + (1 - std::pow(1 - x, 3)) * 0.75;
    EXPECT_NEAR(steps[2 * e].fc1_sparsity, std::nearbyint(s * n) / n, 1e-9) << "epoch " << e;      // set at the epoch's first step
    EXPECT_NEAR(steps[2 * e + 1].fc1_sparsity, steps[2 * e].fc1_sparsity, 1e-9) << "epoch " << e;  // and kept through it
  }
  EXPECT_NEAR(steps[0].fc1_sparsity, std::nearbyint(0.05 * n) / n, 1e-9);
  EXPECT_NEAR(steps[10].fc1_sparsity, std::nearbyint(0.8 * n) / n, 1e-9);  // by the start of epoch 5: 80%
}

TEST(RecipeRuntime, WorkedExampleOfTheSpec) {  // §3.4 with spe 10
  auto steps = run_recipe(test::read_text(test::fixture("sparseml/worked_example.yaml")), 10);
  ASSERT_EQ(steps.size(), 100u);
  for (int k = 0; k < 100; ++k) {
    double lr = k < 50 ? 0.01 : k < 80 ? 0.001 : 0.0001;
    EXPECT_NEAR(steps[k].lr, lr, 1e-12) << "step " << k;
  }
  const double n = 16 * 8;
  std::vector<double> cubic = {0.05, 0.416, 0.638, 0.752, 0.794, 0.8};
  for (int k = 0; k < 100; ++k) {
    double s = k < 10 ? 0 : cubic[std::min(5, k / 10 - 1)];
    EXPECT_NEAR(steps[k].fc1_sparsity, std::nearbyint(s * n) / n, 1e-9) << "step " << k;
  }
  EXPECT_FALSE(steps[69].quantized);
  EXPECT_TRUE(steps[70].quantized);     // QAT from the step after the update at E = 7
  EXPECT_NEAR(steps[99].fc1_sparsity, 0.8, 0.5 / n);  // pruned weights stay zero under QAT
}

TEST(RecipeRuntime, LearningRateTables) {  // §2.4 / §2.5 with spe 100, optimizer lr 1e-4
  auto per_epoch = [](const std::vector<StepRecord>& s, int e) { return s[static_cast<size_t>(e * 100 + 50)].lr; };
  auto all_steps_equal = [](const std::vector<StepRecord>& s, int e) {
    for (int k = e * 100; k < e * 100 + 100; ++k)
      if (std::fabs(s[k].lr - s[e * 100].lr) > 1e-7) return false;
    return true;
  };
  auto exp9 = run_recipe("modifiers:\n  - !LearningRateModifier {start_epoch: 0, lr_class: ExponentialLR, lr_kwargs: "
                         "{gamma: 0.9}, init_lr: 0.1}\n  - !EpochRangeModifier {start_epoch: 0, end_epoch: 5}\n", 100);
  std::vector<double> e9 = {0.1, 0.09, 0.081, 0.0729, 0.06561};
  for (int e = 0; e < 5; ++e) {
    EXPECT_NEAR(per_epoch(exp9, e), e9[e], 1e-7) << e;
    EXPECT_TRUE(all_steps_equal(exp9, e)) << e;
  }
  auto exp5 = run_recipe("modifiers:\n  - !LearningRateModifier {start_epoch: 5, end_epoch: 13, lr_class: ExponentialLR, "
                         "lr_kwargs: {gamma: 0.5}, init_lr: 0.1}\n  - !EpochRangeModifier {start_epoch: 0, end_epoch: 15}\n",
                         100);
  for (int e = 0; e < 15; ++e) {
    double expected = e < 5 ? 1e-4 : 0.1 * std::pow(0.5, std::min(e, 12) - 5);
    EXPECT_NEAR(per_epoch(exp5, e), expected, 1e-7) << e;
    EXPECT_TRUE(all_steps_equal(exp5, e)) << e;
  }
  auto step = run_recipe("modifiers:\n  - !LearningRateModifier {start_epoch: 5, end_epoch: 11, lr_class: StepLR, "
                         "lr_kwargs: {gamma: 0.5, step_size: 2}, init_lr: 0.01}\n  - !EpochRangeModifier {start_epoch: 0, "
                         "end_epoch: 13}\n",
                         100);
  std::vector<double> st = {1e-4, 1e-4, 1e-4, 1e-4, 1e-4, 0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025, 0.0025, 0.0025};
  for (int e = 0; e < 13; ++e) EXPECT_NEAR(per_epoch(step, e), st[e], 1e-7) << e;
  auto multi = run_recipe("modifiers:\n  - !LearningRateModifier {start_epoch: 3, end_epoch: 13, lr_class: MultiStepLR, "
                          "lr_kwargs: {gamma: 0.95, milestones: [5, 8]}, init_lr: 0.1}\n  - !EpochRangeModifier "
                          "{start_epoch: 0, end_epoch: 14}\n",
                          100);
  for (int e = 3; e < 14; ++e) EXPECT_NEAR(per_epoch(multi, e), e < 5 ? 0.1 : e < 8 ? 0.095 : 0.09025, 1e-7) << e;
  auto cosine = run_recipe("modifiers:\n  - !LearningRateModifier {start_epoch: 0, lr_class: CosineAnnealingWarmRestarts, "
                           "lr_kwargs: {lr_min: 0.001, cycle_epochs: 2}, init_lr: 0.1}\n  - !EpochRangeModifier "
                           "{start_epoch: 0, end_epoch: 4}\n",
                           100);
  for (int k : {1, 50, 100, 199, 200, 350}) {
    double tc = std::fmod(epoch_at(k, 100), 2.0);
    EXPECT_NEAR(cosine[k].lr, 0.001 + (0.1 - 0.001) * (1 + std::cos(M_PI * tc / 2)) / 2, 1e-9) << k;
  }
  auto linear = run_recipe("modifiers:\n  - !LearningRateFunctionModifier {lr_func: linear, init_lr: 0.1, final_lr: 0.001, "
                           "start_epoch: 0, end_epoch: 10}\n  - !EpochRangeModifier {start_epoch: 0, end_epoch: 12}\n",
                           100);
  EXPECT_NEAR(linear[250].lr, 0.07525, 1e-12);
  EXPECT_NEAR(linear[1000].lr, 0.001, 1e-12);
  EXPECT_NEAR(linear[1150].lr, 0.001, 1e-12);
  auto cos = run_recipe("modifiers:\n  - !LearningRateFunctionModifier {lr_func: cosine, init_lr: 0.1, final_lr: 0.001, "
                        "start_epoch: 5, end_epoch: 10}\n",
                        100);
  EXPECT_NEAR(cos[500].lr, 0.1, 1e-12);
  EXPECT_NEAR(cos[750].lr, 0.0505, 1e-12);
  EXPECT_NEAR(cos[999].lr, 0.001 + (0.1 - 0.001) * (1 + std::cos(M_PI * 4.99 / 5)) / 2, 1e-12);
  auto up = run_recipe("modifiers:\n  - !LearningRateFunctionModifier {lr_func: cosine, init_lr: 0.001, final_lr: 0.1, "
                       "start_epoch: 0, end_epoch: 10}\n",
                       100);
  EXPECT_NEAR(up[200].lr, 0.0104537, 1e-7);
  auto cyc = run_recipe("modifiers:\n  - !LearningRateFunctionModifier {lr_func: cyclic_linear, init_lr: 0.1, final_lr: "
                        "0.05, start_epoch: 0, end_epoch: 10, cycle_epochs: 2}\n",
                        100);
  EXPECT_NEAR(cyc[0].lr, 0.1, 1e-12);
  EXPECT_NEAR(cyc[100].lr, 0.0748744, 1e-7);
  EXPECT_NEAR(cyc[199].lr, 0.05, 1e-12);
  EXPECT_NEAR(cyc[200].lr, 0.1, 1e-12);
  auto set = run_recipe("modifiers:\n  - !SetLearningRateModifier {learning_rate: 0.03, start_epoch: 5}\n  - "
                        "!EpochRangeModifier {start_epoch: 0, end_epoch: 7}\n",
                        100);  // §4.2 C5
  EXPECT_NEAR(set[499].lr, 1e-4, 1e-12);
  EXPECT_NEAR(set[500].lr, 0.03, 1e-12);
  EXPECT_NEAR(set[699].lr, 0.03, 1e-12);
}

TEST(RecipeRuntime, WeightDecayAndTrainableParams) {
  auto wd = run_recipe("modifiers:\n  - !SetWeightDecayModifier {weight_decay: 0.999, start_epoch: 5.0}\n  - "
                       "!EpochRangeModifier {start_epoch: 0, end_epoch: 7}\n",
                       10);
  EXPECT_EQ(wd[49].weight_decay, 0);
  EXPECT_EQ(wd[50].weight_decay, 0.999);
  EXPECT_EQ(wd[69].weight_decay, 0.999);
  auto tr = run_recipe("modifiers:\n  - !TrainableParamsModifier {params: ['fc1.weight'], trainable: false, start_epoch: 2, "
                       "end_epoch: 4}\n  - !EpochRangeModifier {start_epoch: 0, end_epoch: 6}\n",
                       10, nullptr, "adam", 0.01);
  EXPECT_TRUE(tr[19].fc1_trainable);
  EXPECT_FALSE(tr[20].fc1_trainable);
  EXPECT_FALSE(tr[39].fc1_trainable);
  EXPECT_TRUE(tr[40].fc1_trainable);
  EXPECT_FALSE(tr[18].fc1_weight.equal(tr[19].fc1_weight));  // trains before
  EXPECT_TRUE(tr[20].fc1_weight.equal(tr[39].fc1_weight));   // frozen in between (Adam's momentum too)
  EXPECT_FALSE(tr[40].fc1_weight.equal(tr[41].fc1_weight));  // trains again
  auto from_start = run_recipe("modifiers:\n  - !TrainableParamsModifier {params: __ALL__, trainable: false}\n  - "
                               "!EpochRangeModifier {start_epoch: 0, end_epoch: 1}\n",
                               3);
  EXPECT_FALSE(from_start[0].fc1_trainable);
}

TEST(RecipeRuntime, ConstantPruningKeepsALoadedModelsZeros) {
  seed_everything(0);
  models::Graph graph(test::blobs_mlp());
  {
    torch::NoGradGuard no_grad;
    auto w = graph->node("fc1").module.ptr()->named_parameters(false)["weight"];
    w.masked_fill_(torch::rand_like(w) < 0.6, 0.0);
  }
  auto zeros_before = (graph->node("fc1").module.ptr()->named_parameters(false)["weight"] == 0).clone();
  auto steps = run_recipe("modifiers:\n  - !ConstantPruningModifier {params: ['re:fc1']}\n  - !EpochRangeModifier "
                          "{start_epoch: 0, end_epoch: 3}\n",
                          5, &graph, "adam", 0.05);
  auto w = std::dynamic_pointer_cast<layers::PQWeightLayer>(graph->node("fc1").module.ptr())->weight;
  EXPECT_TRUE((w.masked_select(zeros_before) == 0).all().item<bool>());  // baked into model weights at the end
  EXPECT_NEAR(steps.back().fc1_sparsity, zeros_before.to(torch::kFloat).mean().item<float>(), 1e-6);
  EXPECT_FALSE(steps.front().fc1_weight.equal(steps.back().fc1_weight));  // the rest trained
}

TEST(RecipeRuntime, StructuredGlobalAndLeaveDisabled) {
  auto filt = run_recipe("modifiers:\n  - !StructuredPruningModifier {params: ['fc1.weight'], init_sparsity: 0.25, "
                         "final_sparsity: 0.5, start_epoch: 0, end_epoch: 2, update_frequency: 1, mask_type: filter}\n"
                         "  - !EpochRangeModifier {start_epoch: 0, end_epoch: 3}\n",
                         4);
  EXPECT_NEAR(filt.back().fc1_sparsity, 0.5, 1e-9);
  auto glob = run_recipe("modifiers:\n  - !GlobalMagnitudePruningModifier {params: __ALL_PRUNABLE__, init_sparsity: 0.1, "
                         "final_sparsity: 0.7, start_epoch: 0, end_epoch: 2, update_frequency: 1}\n"
                         "  - !EpochRangeModifier {start_epoch: 0, end_epoch: 3}\n",
                         4);
  const double total = 128 + 48;
  double zeros = glob.back().fc1_sparsity * 128 + glob.back().fc2_sparsity * 48;
  EXPECT_NEAR(zeros / total, 0.7, 0.5 / total);
  auto off = run_recipe("modifiers:\n  - !MagnitudePruningModifier {params: ['fc1.weight'], init_sparsity: 0.5, "
                        "final_sparsity: 0.6, start_epoch: 0, end_epoch: 1, update_frequency: 1, leave_enabled: false}\n  - "
                        "!EpochRangeModifier {start_epoch: 0, end_epoch: 3}\n",
                        4, nullptr, "adam", 0.05);
  EXPECT_NEAR(off[3].fc1_sparsity, std::nearbyint(0.5 * 128) / 128, 1e-9);
  EXPECT_LT(off.back().fc1_sparsity, 0.3);  // after the end the pruned weights grow back from zero
}

TEST(RecipeRuntime, SetAndGradualParamsAndLayerPruning) {
  models::Graph graph{nullptr};
  std::string sixteen = "[0.5";
  for (int i = 1; i < 16; ++i) sixteen += ", 0.5";
  sixteen += "]";
  run_recipe("modifiers:\n  - !SetParamModifier {params: [fc1.bias], val: " + sixteen + ", start_epoch: 1}\n"
             "  - !GradualParamModifier {params: [fc2.bias], init_val: [0, 0, 0], final_val: [1, 2, 3], start_epoch: 0, "
             "end_epoch: 2, update_frequency: 1, inter_func: linear}\n"
             "  - !LayerPruningModifier {layers: [relu1], start_epoch: 1}\n"
             "  - !EpochRangeModifier {start_epoch: 0, end_epoch: 3}\n",
             2, &graph, "sgd", 0.0);  // lr 0: only the modifiers change the parameters
  EXPECT_TRUE(parameter_of(graph, "fc1", "bias").eq(0.5).all().item<bool>());
  EXPECT_TRUE(parameter_of(graph, "fc2", "bias").equal(torch::tensor({1.f, 2.f, 3.f})));
  EXPECT_TRUE(graph->node("relu1").skipped);
  auto x = torch::randn({4, 8});
  auto y = graph->forward(x);
  graph->set_skipped("relu1", false);
  EXPECT_FALSE(y.equal(graph->forward(x)));  // the ReLU was really passed by
}

TEST(RecipeRuntime, AcdcResetsMomentumOnEnteringADensePhase) {
  // Phases of one epoch over epochs 0-4, the last compressed; SGD with momentum 0.9, 3 steps per
  // epoch. Entering a dense phase from a compressed one zeroes the momentum (at that step's end).
  auto recipe = [](bool reset) {
    return std::string("modifiers:\n  - !ACDCPruningModifier {compression_sparsity: 0.5, start_epoch: 0, end_epoch: 4, "
                       "update_frequency: 1, params: [fc1.weight], momentum_buffer_reset: ") +
           (reset ? "true" : "false") + "}\n  - !EpochRangeModifier {start_epoch: 0, end_epoch: 4}\n";
  };
  auto on = run_recipe(recipe(true), 3, nullptr, "sgd", 0.1, 0.9);
  auto off = run_recipe(recipe(false), 3, nullptr, "sgd", 0.1, 0.9);
  ASSERT_EQ(on.size(), 12u);
  ASSERT_EQ(off.size(), 12u);
  int resets = 0;
  for (size_t i = 0; i < on.size(); ++i) {
    const bool dense = on[i].fc1_sparsity < 0.25, entered = i > 0 && dense && on[i - 1].fc1_sparsity > 0.25;
    EXPECT_EQ(on[i].fc1_momentum_zero, entered) << "step " << i;  // zeroed exactly there
    EXPECT_FALSE(off[i].fc1_momentum_zero) << "step " << i;
    resets += entered;
  }
  EXPECT_GE(resets, 1);
}

TEST(IntegerQuantizer, FakeQuantNumbersOfTheSpec) {  // §2.12.5
  quant::IntegerSpec u;
  u.is_signed = false;
  quant::IntegerQuantizer q(u, std::vector<int64_t>{}, true);
  q->train();
  q->forward(torch::tensor({-1.f, 3.f}));  // observed min -1, max 3
  auto [scale, zp] = q->qparams();
  EXPECT_NEAR(scale.item<float>(), 4.0 / 255, 1e-7);
  EXPECT_EQ(zp.item<float>(), 64);
  q->freeze();
  auto y = q->forward(torch::tensor({0.5f, 5.f, -2.f}));
  EXPECT_NEAR(y[0].item<float>(), 0.5019608, 1e-6);
  EXPECT_NEAR(y[1].item<float>(), 2.9960784, 1e-6);
  EXPECT_NEAR(y[2].item<float>(), -1.0039216, 1e-6);

  quant::IntegerSpec s;
  s.symmetric = true;
  quant::IntegerQuantizer w(s, std::vector<int64_t>{2}, false);
  w->train();
  auto x = torch::tensor({0.25f, -0.5f, 0.5f, 2.0f}, torch::requires_grad());
  w->forward(torch::tensor({0.5f, -0.25f}));
  w->freeze();
  auto yw = w->forward(x);
  EXPECT_NEAR(w->qparams().first.item<float>(), 0.5 / 127.5, 1e-8);
  EXPECT_NEAR(yw[0].item<float>(), 0.2509804, 1e-6);
  // the spec's -0.5019608 is exact arithmetic; in float32 the scale is 0.0039215689 > 1/255, so
  // -0.5 / scale = -127.49999 rounds to -127, as torch's kernel (x * (1 / scale) in float) does
  EXPECT_NEAR(yw[1].item<float>(), -0.4980392, 1e-6);
  EXPECT_NEAR(yw[2].item<float>(), 0.4980392, 1e-6);
  yw.sum().backward();  // straight through inside the range, zero where it clamps
  EXPECT_EQ(x.grad()[0].item<float>(), 1);
  EXPECT_EQ(x.grad()[3].item<float>(), 0);

  quant::IntegerQuantizer ema(u, std::vector<int64_t>{}, true);  // EMA: (-1, 3) then a batch (-2, 1) -> (-1.01, 2.98)
  ema->train();
  ema->forward(torch::tensor({-1.f, 3.f}));
  ema->forward(torch::tensor({-2.f, 1.f}));
  EXPECT_NEAR(ema->min_val.item<float>(), -1.01, 1e-6);
  EXPECT_NEAR(ema->max_val.item<float>(), 2.98, 1e-6);
  quant::IntegerSpec four;
  four.bits = 4, four.symmetric = true;
  EXPECT_EQ(four.qmin(), -8);
  EXPECT_EQ(four.qmax(), 7);
}

}  // namespace
}  // namespace sparq::train
