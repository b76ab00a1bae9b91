// SparseML recipes through the sparq program: seed 004's recipe unchanged (sparsity per epoch in
// metrics.jsonl on the cubic curve, 80% at its end), a recipe's timeline in `sparq inspect`,
// --recipe-var, starting from an earlier run's weights with ConstantPruning, and bad recipes.
#include <gtest/gtest.h>

#include <filesystem>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "sparq/prune/mask_creators.h"
#include "test_util.h"

using sparq::test::run_sparq;
using sparq::test::TempDir;
using sparq::test::write_file;

namespace {

std::string source(const std::string& path) { return std::string(SPARQ_SOURCE_DIR) + "/" + path; }

}  // namespace

TEST(SparsemlCli, SeedRecipeRunsUnchangedOnTheCubicCurve) {
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "dataset-fashion-mnist not installed";
  TempDir dir("sml_seed");
  write_file(dir.file("job.yaml"), "model: lenet\ndata: {dataset: fashion_mnist, train_limit: 512, test_limit: 256}\n"
                                   "training: {batch_size: 256, progress: none}\noutput: " + dir.file("run") +
                                       "\ncompression: " + source("examples/sparseml/seed_gradual_ks.yaml") + "\n");
  auto r = run_sparq("run " + dir.file("job.yaml"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("recipe: 2 modifier(s)"), std::string::npos) << r.output;
  auto m = sparq::test::metrics_of(dir.file("run"));
  ASSERT_EQ(m.size(), 25u);  // the recipe's EpochRangeModifier
  for (size_t e = 0; e < m.size(); ++e) {
    double expected = e < 5 ? 0 : sparq::prune::interpolate_sparsity(static_cast<double>(e), 5, 20, 0.05, 0.8, "cubic");
    EXPECT_NEAR(m[e]["sparsity"].get<double>(), expected, 2e-3) << "epoch " << e + 1;
  }
  EXPECT_NEAR(m[20]["sparsity"].get<double>(), 0.8, 0.005);  // end_epoch 20: the first step of the 21st epoch
  EXPECT_NEAR(m[24]["sparsity"].get<double>(), 0.8, 0.005);

  // a second job starts from these weights and keeps their zeros with ConstantPruning
  write_file(dir.file("keep.yaml"), "modifiers:\n  - !ConstantKSModifier {params: __ALL__}\n"
                                    "  - !EpochRangeModifier {start_epoch: 0, end_epoch: 2}\n");
  write_file(dir.file("job2.yaml"), "model: {zoo: lenet, weights: " + dir.file("run") +
                                        "}\ndata: {dataset: fashion_mnist, train_limit: 512, test_limit: 256}\n"
                                        "training: {batch_size: 256, progress: none, lr: 0.01}\noutput: " +
                                        dir.file("run2") + "\ncompression: keep.yaml\n");
  auto r2 = run_sparq("run " + dir.file("job2.yaml"));
  ASSERT_EQ(r2.exit_code, 0) << r2.output;
  auto m2 = sparq::test::metrics_of(dir.file("run2"));
  ASSERT_EQ(m2.size(), 2u);
  EXPECT_NEAR(m2.back()["sparsity"].get<double>(), m.back()["sparsity"].get<double>(), 1e-4);
}

TEST(SparsemlCli, InspectPrintsTheTimeline) {
  auto r = run_sparq("inspect " + source("examples/sparseml/prune_qat.md") + " --model lenet --steps-per-epoch 10");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("GMPruningModifier  epochs [1, 6)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("6 update(s) (sparsity after it) at epochs: 1: 0.05"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("6: 0.8"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("QuantizationModifier  from epoch 7"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("7: 0.0002"), std::string::npos) << r.output;  // the lr at epoch 7's first step
  auto longer = run_sparq("inspect " + source("examples/sparseml/prune_qat.md") +
                          " --model lenet --steps-per-epoch 10 --recipe-var num_epochs=12");
  ASSERT_EQ(longer.exit_code, 0) << longer.output;
  EXPECT_NE(longer.output.find("GMPruningModifier  epochs [1, 8)"), std::string::npos) << longer.output;
  auto json = run_sparq("inspect " + source("examples/sparseml/prune_qat.md") + " --model lenet --steps-per-epoch 10 --json");
  ASSERT_EQ(json.exit_code, 0) << json.output;
  auto j = nlohmann::json::parse(json.output);
  const auto& mods = j.at("recipe").at("modifiers");
  ASSERT_EQ(mods[0].at("type"), "GMPruningModifier");
  EXPECT_EQ(mods[0].at("updates").size(), 6u);
  EXPECT_NEAR(mods[0].at("updates")[5].at("sparsity").get<double>(), 0.8, 1e-3);
  EXPECT_EQ(mods[0].at("params").size(), 4u);  // lenet's conv1, conv2, fc1, fc2 weights
}

TEST(SparsemlCli, BadRecipesExitWith2AndOneLine) {
  TempDir dir("sml_bad");
  const std::pair<const char*, const char*> cases[] = {
      {"modifiers:\n  - !GMPruningModifier {params: ['re:nothing.*'], init_sparsity: 0.05, final_sparsity: 0.5, "
       "start_epoch: 0, end_epoch: 2, update_frequency: 1}\n",
       "r.yaml:2:5: !GMPruningModifier: params: 're:nothing.*' matches no parameter of model 'lenet'"},
      {"modifiers:\n  - !TrainableParamsModifier {params: [fc9.weight], trainable: false}\n",
       "params: 'fc9.weight' matches no parameter of model 'lenet' (did you mean"},
      {"modifiers:\n  - !SetParamModifier {params: [fc2.bias], val: [1, 2]}\n", "the value has shape [2], but fc2.bias"},
      {"modifiers:\n  - !LayerPruningModifier {layers: [conv1]}\n", "cannot be skipped"},
      {"modifiers:\n  - !GMPruningModifier {params: __ALL__, init_sparsity: 0.05, final_sparsity: 0.4, start_epoch: 0, "
       "end_epoch: 2, update_frequency: 1, mask_type: '2:4'}\n",
       "the sparsity 0.05 must be 0 or 0.5"},
  };
  for (const auto& [text, expected] : cases) {
    write_file(dir.file("r.yaml"), text);
    auto r = run_sparq("inspect " + dir.file("r.yaml") + " --model lenet");
    EXPECT_EQ(r.exit_code, 2) << text << r.output;
    EXPECT_NE(r.output.find(expected), std::string::npos) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
  write_file(dir.file("job.yaml"), "model: lenet\ndata: {dataset: random, shape: [1, 28, 28], samples: 64}\n"
                                   "training: {epochs: 3}\ncompression: {modifiers: [!EpochRangeModifier {start_epoch: 0, "
                                   "end_epoch: 2}]}\n");
  auto r = run_sparq("run " + dir.file("job.yaml"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("training.epochs: the recipe's modifiers give the epochs (2"), std::string::npos) << r.output;
  auto var = run_sparq("run " + dir.file("job.yaml") + " --recipe-var x");
  EXPECT_EQ(var.exit_code, 2);
  EXPECT_NE(var.output.find("--recipe-var 'x': expected name=value"), std::string::npos) << var.output;
}

TEST(SparsemlCli, ResumedRecipeRunEqualsAnUninterruptedOne) {
  TempDir dir("sml_resume");
  write_file(dir.file("r.yaml"), R"(
modifiers:
  - !EpochRangeModifier {start_epoch: 0, end_epoch: 6}
  - !LearningRateModifier {start_epoch: 1, lr_class: StepLR, lr_kwargs: {gamma: 0.5, step_size: 1.5}, init_lr: 0.01}
  - !GMPruningModifier {params: __ALL_PRUNABLE__, init_sparsity: 0.1, final_sparsity: 0.7, start_epoch: 1,
                        end_epoch: 4, update_frequency: 0.5}
  - !MovementPruningModifier {params: [fc1.weight], init_sparsity: 0.1, final_sparsity: 0.3, start_epoch: 2,
                              end_epoch: 5, update_frequency: 1}
  - !ConstantPruningModifier {params: __ALL_PRUNABLE__, start_epoch: 4}
  - !QuantizationModifier {start_epoch: 2.5, disable_quantization_observer_epoch: 5}
  - !SparsificationLoggingModifier {start_epoch: 1}
)");
  auto job = [&](const std::string& out) {
    return "model: lenet\ndata: {dataset: random, shape: [1, 28, 28], samples: 64}\ntraining: {batch_size: 16, "
           "progress: none}\noutput: " + out + "\ncompression: r.yaml\n";
  };
  write_file(dir.file("a.yaml"), job(dir.file("a")));
  write_file(dir.file("b.yaml"), job(dir.file("b")));
  ASSERT_EQ(run_sparq("run " + dir.file("a.yaml")).exit_code, 0);
  auto first = run_sparq("run " + dir.file("b.yaml") + " --stop-after 3");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  auto second = run_sparq("run " + dir.file("b.yaml") + " --resume");
  ASSERT_EQ(second.exit_code, 0) << second.output;
  auto a = sparq::test::metrics_of(dir.file("a")), b = sparq::test::metrics_of(dir.file("b"));
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 6u);
  for (size_t e = 0; e < a.size(); ++e) {
    EXPECT_EQ(a[e]["train_loss"], b[e]["train_loss"]) << "epoch " << e + 1;
    EXPECT_EQ(a[e]["sparsity"], b[e]["sparsity"]) << "epoch " << e + 1;
    EXPECT_EQ(a[e]["lr"], b[e]["lr"]) << "epoch " << e + 1;
  }
  EXPECT_GT(a.back()["sparsity"].get<double>(), 0.6);
  EXPECT_FALSE(a[0].contains("sparsity.fc1"));  // the logging modifier starts at epoch 1
  EXPECT_GE(a.back()["sparsity.fc2"].get<double>(), 0.7 - 1e-9);  // and int8 may round more weights to 0
  EXPECT_NEAR(a.back()["sparsity.model"].get<double>(), a.back()["sparsity"].get<double>(), 1e-9);
}
