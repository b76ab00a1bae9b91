// Conv/Linear + BatchNorm (+ ReLU) fusion for quantization (spec nni-config §3.7): the fused
// model's float outputs equal the unfused one's, the folded batch norm keeps training its
// statistics, NNI's fuse_names and SparseML's conv_bn_relus select it, and bad fusions are errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "sparq/compress/compress.h"
#include "sparq/config/dialect.h"
#include "test_util.h"

namespace sparq {
namespace {

models::Graph lenet_with_statistics() {
  torch::manual_seed(3);
  models::Graph g(models::zoo_spec("lenet", {1, 28, 28}, 10));
  torch::NoGradGuard no_grad;
  for (const char* bn : {"bn1", "bn2"}) {
    auto m = g->node(bn).module.ptr();
    auto p = m->named_parameters(false);
    auto b = m->named_buffers(false);
    p["weight"].uniform_(0.5, 1.5);
    p["bias"].uniform_(-0.5, 0.5);
    b["running_mean"].uniform_(-0.3, 0.3);
    b["running_var"].uniform_(0.5, 2.0);
  }
  return g;
}

Rule fuse_rule(const std::string& lead, std::vector<std::string> followers, bool auto_chain = false) {
  Rule r;
  r.select.names = {lead};
  r.module.fuse_with = std::move(followers);
  r.module.fuse_following = auto_chain;
  return r;
}

TEST(Fusion, FusedFloatOutputsEqualTheUnfusedOnes) {
  auto g = lenet_with_statistics();
  g->eval();
  auto x = torch::rand({8, 1, 28, 28});
  auto before = g->forward(x);
  Plan plan;
  plan.rules = {fuse_rule("conv1", {"bn1", "relu1"}), fuse_rule("conv2", {}, /*auto_chain=*/true)};
  compress(g, plan);
  activate_fusion(g, "conv2", /*copy_statistics=*/true);
  g->eval();
  EXPECT_TRUE(g->node("bn1").skipped && g->node("relu1").skipped);
  EXPECT_TRUE(g->node("bn2").skipped && g->node("relu2").skipped);  // found in the graph
  auto conv1 = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(g, "conv1"));
  ASSERT_TRUE(conv1 && conv1->folds_batchnorm() && conv1->fused_relu);
  auto after = g->forward(x);
  EXPECT_LE((after - before).abs().max().item<float>(), 1e-5);

  g->train();  // training: the folded statistics follow the float conv output
  auto mean = conv1->bn_mean.clone();
  g->forward(x);
  EXPECT_FALSE(conv1->bn_mean.equal(mean));
}

TEST(Fusion, NniFuseNamesAndSparsemlDefault) {
  auto g = lenet_with_statistics();
  auto doc = yaml::YamlDoc::load_string(
      "- {op_types: [Conv2d], quant_dtype: int8, target_names: [weight], fuse_names: [[conv1, bn1, relu1]]}\n", "c.yaml");
  compress(g, config::load_plan(doc.file, doc.root));
  EXPECT_TRUE(std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(g, "conv1"))->folds_batchnorm());
  EXPECT_FALSE(std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(g, "conv2"))->folds_batchnorm());

  // the deferred chain (ModuleSetting::fuse_following): folded when activate_fusion turns it on
  auto s = lenet_with_statistics();
  Plan deferred;
  deferred.rules = {fuse_rule("conv2", {}, /*auto_chain=*/true)};
  compress(s, deferred);
  auto conv2 = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(s, "conv2"));
  EXPECT_TRUE(conv2->folds_batchnorm());
  EXPECT_FALSE(conv2->fold_active);
  EXPECT_FALSE(s->node("bn2").skipped);
  {
    torch::NoGradGuard no_grad;  // the batch norm trained on: its values are folded at activation
    s->node("bn2").module.ptr()->named_buffers(false)["running_mean"].fill_(0.25);
  }
  activate_fusion(s, "conv2", /*copy_statistics=*/true);
  EXPECT_TRUE(conv2->fold_active && s->node("bn2").skipped && s->node("relu2").skipped);
  EXPECT_TRUE(conv2->bn_mean.eq(0.25).all().item<bool>());
  auto q = lenet_with_statistics();  // SparseML's default conv_bn_relus: folded when QAT starts
  auto recipe = yaml::YamlDoc::load_string("modifiers:\n  - !QuantizationModifier {start_epoch: 0}\n", "r.yaml");
  compress(q, config::load_plan(recipe.file, recipe.root));
  auto qconv = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(q, "conv1"));
  EXPECT_TRUE(qconv->folds_batchnorm() && !qconv->fold_active);
  auto n = lenet_with_statistics();
  auto no_fuse = yaml::YamlDoc::load_string(
      "modifiers:\n  - !QuantizationModifier {start_epoch: 0, model_fuse_fn_name: no_fuse}\n", "r.yaml");
  compress(n, config::load_plan(no_fuse.file, no_fuse.root));
  EXPECT_FALSE(std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(n, "conv2"))->folds_batchnorm());
}

TEST(Fusion, BadFusionsAreErrors) {
  auto error = [](std::vector<Rule> rules) {
    auto g = lenet_with_statistics();
    Plan plan;
    plan.rules = std::move(rules);
    try {
      compress(g, plan);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error({fuse_rule("conv1", {"relu1"})}).find("'relu1' must be the only reader of 'conv1'"), std::string::npos);
  EXPECT_NE(error({fuse_rule("conv1", {"bn9"})}).find("'bn9' is not a module"), std::string::npos);
  EXPECT_NE(error({fuse_rule("conv1", {"bn1", "relu1", "pool1"})}).find("cannot be fused"), std::string::npos);
  Rule relu;
  relu.select.names = {"relu1"};
  relu.targets[kInput].quant = QuantSetting::of(quant::IntegerSpec{});
  EXPECT_NE(error({relu, fuse_rule("conv1", {"bn1", "relu1"})}).find("configured for quantization itself"),
            std::string::npos);
}

}  // namespace
}  // namespace sparq
