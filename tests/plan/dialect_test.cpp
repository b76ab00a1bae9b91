// load_plan picks the dialect from the document's shape; a recognised dialect that cannot be read
// yet is named in one line, not answered with a PQuantML key error.
#include <gtest/gtest.h>

#include "sparq/config/dialect.h"
#include "sparq/error.h"
#include "sparq/yaml/reader.h"
#include "test_util.h"

using namespace sparq;

namespace {
std::string error_of(const std::string& text) {
  return test::error_of<ConfigError>([&] {
    auto doc = yaml::YamlDoc::load_string(text, "c.yaml");
    config::load_plan(doc.file, doc.root);
  });
}
Plan plan_of(const std::string& text) {
  auto doc = yaml::YamlDoc::load_string(text, "c.yaml");
  return config::load_plan(doc.file, doc.root);
}
}  // namespace

TEST(Dialects, DetectedFromTheDocumentShape) {
  EXPECT_EQ(plan_of("pruning_parameters: {pruning_method: pdp}\n").dialect, "pquantml");
  EXPECT_EQ(plan_of("{}\n").dialect, "pquantml");
  EXPECT_EQ(plan_of("- op_types: [Linear]\n  sparse_ratio: 0.5\n").dialect, "nni-v3");
  EXPECT_EQ(plan_of("- op_types: [Linear]\n  sparsity: 0.5\n").dialect, "nni-v2");
  EXPECT_EQ(plan_of("pruner: {type: L1NormPruner}\nconfig_list: [{op_types: [Linear], sparse_ratio: 0.5}]\n").dialect,
            "nni-v3");
  EXPECT_EQ(plan_of("version: 1.1.0\nmodifiers:\n  - !EpochRangeModifier {start_epoch: 0, end_epoch: 10}\n").dialect,
            "sparseml");
  EXPECT_EQ(plan_of("!SetLearningRateModifier {learning_rate: 0.1}\n").dialect, "sparseml");
  EXPECT_EQ(plan_of("training_modifiers:\n  - !EpochRangeModifier {start_epoch: 0, end_epoch: 3}\n").dialect, "sparseml");
  EXPECT_NE(error_of("stuff:\n  - !EpochRangeModifier {start_epoch: 0, end_epoch: 3}\n").find("invalid modifier location"),
            std::string::npos);
  // A mapping of unknown sections is read as PQuantML, whose reader names the nearest section.
  EXPECT_NE(error_of("quantisation_parameters: {}\n").find("did you mean 'quantization_parameters'"), std::string::npos);
  EXPECT_NE(error_of("7\n").find("not a config sparq knows"), std::string::npos);
}

TEST(Plans, EventsOfAKindAreSortedAndTheCurveIsRead) {
  Plan plan;
  for (auto [epoch, value] : {std::pair{8.0, 6e-6}, std::pair{0.0, 1e-6}, std::pair{4.0, 2e-6}}) {
    Event e;
    e.kind = Event::Kind::HgqBeta, e.at_epoch = epoch, e.value = value;
    e.interp = epoch == 4.0 ? Event::Interp::Linear : Event::Interp::Constant;
    plan.events.push_back(e);
  }
  Event lr;
  lr.kind = Event::Kind::LearningRate, lr.at_epoch = 1, lr.value = 0.1;
  plan.events.push_back(lr);
  auto beta = plan.events_of(Event::Kind::HgqBeta);
  ASSERT_EQ(beta.size(), 3u);
  EXPECT_EQ(beta[0].at_epoch, 0.0);
  EXPECT_EQ(beta[2].at_epoch, 8.0);
  EXPECT_DOUBLE_EQ(curve_at(beta, 2), 1e-6);  // constant up to the next point
  EXPECT_DOUBLE_EQ(curve_at(beta, 6), 4e-6);  // linear from 2e-6 at 4 to 6e-6 at 8
  EXPECT_DOUBLE_EQ(curve_at(beta, 9), 6e-6);
  // A lowered PQuantML config keeps every section.
  auto pq = plan_of("training_parameters: {epochs: 3}\nquantization_parameters: {use_hgq: true, hgq_beta: 2.0e-5}\n");
  ASSERT_TRUE(pq.schedule);
  EXPECT_EQ(pq.schedule->epochs, 3);
  ASSERT_EQ(pq.events.size(), 1u);
  EXPECT_EQ(pq.events[0].value, 2e-5);
  EXPECT_EQ(pq, plan_of("training_parameters: {epochs: 3}\nquantization_parameters: {use_hgq: true, hgq_beta: 2.0e-5}\n"));
}
