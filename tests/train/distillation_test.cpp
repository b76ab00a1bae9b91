// Distillation (spec nni-config §4): the mse and kl values of the spec's hand examples, the
// distiller config grammar and its errors, a student trained against a teacher (lambda 0 equals
// plain training; the teacher's weights stay put; Adaptive1d's adapter trains), the run folder's
// model.yaml round trip, and a teacher that is a compressed run refused.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "sparq/compress/compress.h"
#include "sparq/config/job.h"
#include "sparq/config/nni.h"
#include "sparq/train/distillation.h"
#include "test_util.h"

namespace sparq::train {
namespace {

using test::error_of;

TEST(Distillation, LossesMatchTheSpecsHandExamples) {
  auto s = torch::tensor({1.f, 2.f, 3.f, 0.f, 0.f, 0.f}).view({2, 3});
  auto t = torch::tensor({3.f, 2.f, 1.f, 1.f, 0.f, -1.f}).view({2, 3});
  EXPECT_NEAR(distill_loss(s, t, "mse").item<double>(), 1.6666667, 1e-6);
  EXPECT_NEAR(distill_loss(s, t, "kl").item<double>(), 0.7971554, 1e-6);
  EXPECT_NEAR(distill_loss(s.slice(0, 0, 1), t.slice(0, 0, 1), "kl").item<double>(), 1.2806269, 1e-6);
  auto s3 = torch::ones({2, 2, 3});
  auto t3 = torch::zeros({2, 2, 3});
  t3.select(2, 0).fill_(1);
  EXPECT_NEAR(distill_loss(s3, t3, "kl").item<double>(), 0.2413356, 1e-6);  // divides by dim 0 (2), not 4 rows
}

/// A distiller section parsed from text; teacher paths are checked, so the test gives a real one.
Distillation parse(const std::string& text, const std::string& base) {
  auto doc = yaml::YamlDoc::load_string(text, "d.yaml");
  return config::read_distillation(doc.file, doc.root, "distillation", base);
}

/// Writes a float blobs_mlp run folder (model.yaml + model.pt) into `dir`.
void write_teacher(const std::string& dir, const models::GraphSpec& spec) {
  std::filesystem::create_directories(dir);
  seed_everything(1);
  models::Graph g(spec);
  test::write_file(dir + "/model.yaml", models::model_yaml_text(spec));
  torch::save(g, dir + "/model.pt");
}

TEST(Distillation, ConfigDefaultsAndLinks) {
  test::TempDir dir("distill_cfg");
  write_teacher(dir.file("teacher"), test::blobs_mlp());
  auto d = parse("teacher: teacher\nconfig_list:\n  - {op_names: [fc2], lambda: 1, apply_method: kl}\n"
                 "  - {op_types: [Linear], link: auto}\n  - {op_names: [relu1], link: [fc1, relu1], lambda: null}\n",
                 dir.path().string());
  EXPECT_EQ(d.type, "DynamicLayerwiseDistiller");
  EXPECT_EQ(d.teacher_run, dir.file("teacher"));
  EXPECT_DOUBLE_EQ(d.origin_loss_lambda, 1.0);
  ASSERT_EQ(d.rules.size(), 3u);
  EXPECT_DOUBLE_EQ(d.rules[0].lambda, 1.0);  // an integer lambda is a number (NNI crashes on it)
  EXPECT_EQ(d.rules[0].method, "kl");
  EXPECT_TRUE(d.rules[1].links.empty());    // auto: the student's own name
  EXPECT_EQ(d.rules[1].method, "mse");
  EXPECT_EQ(d.rules[2].links, (std::vector<std::string>{"fc1", "relu1"}));

  models::Graph student(test::blobs_mlp()), teacher(test::blobs_mlp());
  auto pairs = distill_pairs(d, student, teacher);
  ASSERT_EQ(pairs.size(), 3u);  // fc1 (entry 1), relu1 (entry 2), fc2 (entry 0: first wins over entry 1)
  EXPECT_EQ(pairs[0].student, 0);
  EXPECT_EQ(pairs[0].teachers, std::vector<int>{0});
  EXPECT_EQ(pairs[1].teachers, (std::vector<int>{0, 1}));
  EXPECT_EQ(pairs[2].student, 2);
  EXPECT_EQ(pairs[2].method, "kl");
}

TEST(Distillation, BadConfigsNameTheKeyAndPlace) {
  test::TempDir dir("distill_bad");
  write_teacher(dir.file("teacher"), test::blobs_mlp());
  const std::string base = dir.path().string();
  auto err = [&](const std::string& text) { return error_of<ConfigError>([&] { parse(text, base); }); };
  EXPECT_NE(err("teacher: teacher\nconfig_list: [{op_names: [fc2], lambda: -0.5}]\n").find("d.yaml:2:"),
            std::string::npos);
  EXPECT_NE(err("teacher: teacher\nconfig_list: [{op_names: [fc2], lambda: -0.5}]\n").find("lambda"), std::string::npos);
  EXPECT_NE(err("teacher: teacher\nconfig_list: [{op_names: [fc2], apply_method: l1}]\n").find("apply_method"),
            std::string::npos);
  EXPECT_NE(err("teacher: teacher\nconfig_list: [{op_names: [fc2], target_names: [_input_0]}]\n").find("_output_0"),
            std::string::npos);
  EXPECT_NE(err("teacher: nowhere\nconfig_list: [{op_names: [fc2]}]\n").find("is not a run folder"), std::string::npos);
  EXPECT_NE(err("teacher: teacher\nconfig_list: []\n").find("non-empty"), std::string::npos);
  EXPECT_NE(err("teacher: teacher\nconfig_list: [{lambda: 1}]\n").find("op_types, op_names"), std::string::npos);
  EXPECT_NE(err("teacher: teacher\ntype: Adaptive1dLayerwiseDistiller\nconfig_list: [{op_names: [fc2], link: [fc1, fc2]}]\n")
                .find("exactly one"),
            std::string::npos);
  EXPECT_NE(err("teacher: {model: lenet}\nconfig_list: [{op_names: [fc2]}]\n").find("weights"), std::string::npos);
  EXPECT_NE(err("teacher: teacher\nconfig_list: [{op_names: [fc2]}]\norigin_loss_lambda: -1\n").find("origin_loss_lambda"),
            std::string::npos);

  models::Graph student(test::blobs_mlp()), teacher(test::blobs_mlp());
  auto pairs_err = [&](const std::string& text, const models::Graph& t) {
    return error_of<ConfigError>([&] { distill_pairs(parse(text, base), student, t); });
  };
  auto missing = pairs_err("teacher: teacher\nconfig_list: [{op_names: [fc2], link: fc9}]\n", teacher);
  EXPECT_NE(missing.find("d.yaml:2:"), std::string::npos) << missing;
  EXPECT_NE(missing.find("'fc9' names no module of the teacher"), std::string::npos) << missing;
  EXPECT_NE(missing.find("nearest 'fc"), std::string::npos) << missing;
  EXPECT_NE(pairs_err("teacher: teacher\nconfig_list: [{op_names: [fc7]}]\n", teacher).find("selects no module"),
            std::string::npos);
  auto wide = models::parse_model_yaml("input_shape: [8]\nlayers:\n  - {name: fc1, op: Linear, out_features: 32}\n"
                                       "  - {name: relu1, op: ReLU}\n  - {name: fc2, op: Linear, out_features: 3}\n",
                                       "w.yaml");
  models::Graph wide_teacher(wide);
  auto shapes = pairs_err("teacher: teacher\nconfig_list: [{op_names: [fc1]}]\n", wide_teacher);
  EXPECT_NE(shapes.find("student 'fc1' gives [16] per sample, teacher 'fc1' gives [32]"), std::string::npos) << shapes;
  // Adaptive1d maps the differing last axis
  EXPECT_EQ(pairs_err("teacher: teacher\ntype: Adaptive1dLayerwiseDistiller\nconfig_list: [{op_names: [fc1]}]\n",
                      wide_teacher),
            "");
}

TEST(Distillation, ModelYamlOfARunRebuildsTheSameGraph) {
  for (const char* zoo : {"lenet", "resnet"}) {
    auto spec = models::zoo_spec(zoo, {1, 28, 28}, 10);
    auto text = models::model_yaml_text(spec);
    auto back = models::parse_model_yaml(text, "model.yaml");
    seed_everything(3);
    models::Graph a(spec);
    seed_everything(3);
    models::Graph b(back);
    ASSERT_EQ(a->nodes().size(), b->nodes().size()) << text;
    for (size_t i = 0; i < a->nodes().size(); ++i) {
      EXPECT_EQ(a->nodes()[i].name, b->nodes()[i].name);
      EXPECT_EQ(a->nodes()[i].out_shape, b->nodes()[i].out_shape);
    }
    a->eval(), b->eval();
    auto x = torch::randn({4, 1, 28, 28});
    EXPECT_TRUE(torch::equal(a->forward(x), b->forward(x))) << zoo;
  }
}

/// Trains an 8 -> 4 -> 3 student on blobs for 3 epochs, distilled from `teacher` when given.
std::vector<EpochMetrics> train_student(const std::optional<Distillation>& d, const models::Graph& teacher,
                                        models::Graph* out = nullptr, Trainer** trainer_out = nullptr) {
  auto spec = models::parse_model_yaml("input_shape: [8]\nlayers:\n  - {name: fc1, op: Linear, out_features: 4}\n"
                                       "  - {name: relu1, op: ReLU}\n  - {name: fc2, op: Linear, out_features: 3}\n",
                                       "student.yaml");
  seed_everything(0);
  models::Graph student(spec);
  TrainOptions o;
  o.epochs = 3, o.batch_size = 32, o.lr = 0.01, o.progress = Progress::None;
  Trainer trainer(student, o);
  if (d) trainer.add_loss_term(make_distiller(*d, trainer, teacher));
  auto data = test::blobs(256, 5);
  auto history = trainer.fit(data, data);
  if (out) *out = student;
  return history;
}

TEST(Distillation, StudentLearnsFromAFrozenTeacher) {
  test::TempDir dir("distill_train");
  // a trained teacher
  seed_everything(0);
  models::Graph teacher(test::blobs_mlp());
  {
    TrainOptions o;
    o.epochs = 5, o.batch_size = 32, o.lr = 0.01, o.progress = Progress::None;
    Trainer t(teacher, o);
    t.fit(test::blobs(256, 5), test::blobs(64, 6));
  }
  auto before = teacher->named_parameters()["fc1.weight"].clone();

  Distillation d;
  d.teacher_run = dir.path().string();
  DistillRule r;
  r.select.names = {"fc2"};
  r.method = "kl";
  d.rules = {r};
  auto distilled = train_student(d, teacher);
  ASSERT_EQ(distilled.size(), 3u);
  ASSERT_TRUE(distilled[0].values.count("distill_loss"));
  EXPECT_GT(distilled[0].values.at("distill_loss"), 0.0);
  EXPECT_LT(distilled[2].values.at("distill_loss"), distilled[0].values.at("distill_loss"));
  EXPECT_TRUE(torch::equal(teacher->named_parameters()["fc1.weight"], before));  // the teacher does not train

  // lambda 0: the term is there but pulls nothing, so training equals the student alone
  d.rules[0].lambda = 0;
  models::Graph a{nullptr}, b{nullptr};
  auto zero = train_student(d, teacher, &a);
  auto alone = train_student(std::nullopt, teacher, &b);
  EXPECT_DOUBLE_EQ(zero.back().train_loss, alone.back().train_loss);
  EXPECT_TRUE(torch::equal(a->named_parameters()["fc1.weight"], b->named_parameters()["fc1.weight"]));

  // origin_loss_lambda 0: only the teacher teaches; the task loss is still reported
  d.rules[0].lambda = 1, d.origin_loss_lambda = 0;
  auto only = train_student(d, teacher);
  EXPECT_NE(only.back().train_loss, alone.back().train_loss);
  EXPECT_GT(only.back().train_loss, 0.0);
}

TEST(Distillation, Adaptive1dTrainsAnAdapterForADifferentWidth) {
  seed_everything(0);
  models::Graph teacher(test::blobs_mlp());  // fc1 gives 16, the student's fc1 gives 4
  Distillation d;
  d.type = "Adaptive1dLayerwiseDistiller";
  DistillRule r;
  r.select.names = {"fc1"};
  d.rules = {r};
  auto spec = models::parse_model_yaml("input_shape: [8]\nlayers:\n  - {name: fc1, op: Linear, out_features: 4}\n"
                                       "  - {name: relu1, op: ReLU}\n  - {name: fc2, op: Linear, out_features: 3}\n",
                                       "student.yaml");
  models::Graph student(spec);
  TrainOptions o;
  o.epochs = 2, o.batch_size = 32, o.lr = 0.01, o.progress = Progress::None;
  Trainer trainer(student, o);
  const size_t groups = trainer.optimizer().param_groups().size();
  trainer.add_loss_term(make_distiller(d, trainer, teacher));
  ASSERT_EQ(trainer.optimizer().param_groups().size(), groups + 1);
  EXPECT_EQ(trainer.group_names().back(), "distiller.adapters");
  auto adapter = trainer.optimizer().param_groups().back().params()[0];
  EXPECT_EQ(adapter.sizes(), (std::vector<int64_t>{16, 4}));
  auto start = adapter.clone();
  auto data = test::blobs(128, 5);
  auto h = trainer.fit(data, data);
  EXPECT_FALSE(torch::equal(adapter, start));  // the adapter is trained
  EXPECT_LT(h.back().values.at("distill_loss"), h.front().values.at("distill_loss"));
}

TEST(Distillation, ResumedAdaptiveRunEqualsAnUninterruptedOne) {
  test::TempDir dir("distill_resume");
  auto spec = models::parse_model_yaml("input_shape: [8]\nlayers:\n  - {name: fc1, op: Linear, out_features: 4}\n"
                                       "  - {name: relu1, op: ReLU}\n  - {name: fc2, op: Linear, out_features: 3}\n",
                                       "student.yaml");
  Distillation d;
  d.type = "Adaptive1dLayerwiseDistiller";
  DistillRule r;
  r.select.names = {"fc1"};
  d.rules = {r};
  auto data = test::blobs(128, 5);
  auto run = [&](const std::string& folder, bool resume, int64_t stop_after) {
    seed_everything(0);
    models::Graph teacher(test::blobs_mlp());
    models::Graph student(spec);
    TrainOptions o;
    o.epochs = 3, o.batch_size = 32, o.lr = 0.01, o.progress = Progress::None;
    test::RunTrainer t(student, o, dir.file(folder));
    (*t).add_loss_term(make_distiller(d, *t, teacher));
    t.fit(data, data, resume, stop_after);
    return std::make_pair(student->named_parameters()["fc1.weight"].clone(),
                          (*t).optimizer().param_groups().back().params()[0].clone());
  };
  auto whole = run("whole", false, -1);
  run("parts", false, 1);
  auto resumed = run("parts", true, -1);
  EXPECT_TRUE(torch::equal(whole.first, resumed.first));
  EXPECT_TRUE(torch::equal(whole.second, resumed.second));  // the adapter came back from the checkpoint
}

TEST(Distillation, ACompressedRunIsNoTeacher) {
  test::TempDir dir("distill_compressed");
  auto plan = test::pquant_plan("quantization_parameters: {default_weight_keep_negatives: 1, default_weight_integer_bits: 0,"
                                " default_weight_fractional_bits: 7}\n");
  models::Graph g(test::blobs_mlp());
  compress(g, resolve(plan, g));
  test::write_file(dir.file("model.yaml"), models::model_yaml_text(test::blobs_mlp()));
  torch::save(g, dir.file("model.pt"));
  Distillation d;
  d.teacher_run = dir.path().string();
  auto e = error_of<ConfigError>([&] { config::load_teacher(d, {8}, 3); });
  EXPECT_NE(e.find("distillation.teacher"), std::string::npos) << e;
  EXPECT_NE(e.find("compressed run"), std::string::npos) << e;
  // its float twin loads
  models::Graph f(test::blobs_mlp());
  torch::save(f, dir.file("model.pt"));
  EXPECT_EQ(error_of<ConfigError>([&] { config::load_teacher(d, {8}, 3); }), "");
  EXPECT_NE(error_of<ConfigError>([&] { config::load_teacher(d, {4}, 3); }).find("the data has [4]"), std::string::npos);
}

}  // namespace
}  // namespace sparq::train
