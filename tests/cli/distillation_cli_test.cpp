// Distillation through the sparq program: a float run becomes the teacher of a smaller student
// that NNI also prunes (the job's distillation: section next to compression:), the NNI spelling
// compression.distiller, and bad distiller settings ending in one line with exit 2.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"

using sparq::test::run_sparq;
using sparq::test::TempDir;
using sparq::test::write_file;

namespace {

const char* kData = "data: {dataset: random, shape: [16], samples: 256, num_classes: 5}\n"
                    "training: {epochs: 2, batch_size: 32, lr: 0.01, threads: 1, progress: none}\n";

}  // namespace

TEST(DistillationCli, AFloatRunTeachesAPrunedStudent) {
  TempDir dir("distill_cli");
  write_file(dir.file("teacher.yaml"), std::string("model: {zoo: mlp, widths: [32]}\n") + kData + "output: " +
                                           dir.file("teacher") + "\n");
  auto t = run_sparq("run " + dir.file("teacher.yaml"));
  ASSERT_EQ(t.exit_code, 0) << t.output;
  ASSERT_TRUE(std::filesystem::exists(dir.file("teacher/model.yaml")));

  write_file(dir.file("student.yaml"),
             std::string("model: {zoo: mlp, widths: [8]}\n") + kData + "output: " + dir.file("student") +
                 "\ncompression:\n  pruner: {type: L1NormPruner}\n  config_list: [{op_names: [fc1], sparse_ratio: 0.5}]\n"
                 "distillation:\n  teacher: teacher\n  config_list:\n    - {op_names: [fc2], apply_method: kl, lambda: 2}\n");
  auto s = run_sparq("run " + dir.file("student.yaml"));
  ASSERT_EQ(s.exit_code, 0) << s.output;
  EXPECT_NE(s.output.find("distillation: DynamicLayerwiseDistiller"), std::string::npos) << s.output;
  auto m = sparq::test::metrics_of(dir.file("student"));
  ASSERT_EQ(m.size(), 2u);
  ASSERT_TRUE(m[0].contains("distill_loss")) << m[0].dump();
  EXPECT_GT(m[0]["distill_loss"].get<double>(), 0.0);
  EXPECT_NEAR(m[1]["sparsity"].get<double>(), 0.5, 1e-9);  // of the compressed layer, fc1

  // the same through NNI's own spelling: compression.distiller
  write_file(dir.file("nni.yaml"), std::string("model: {zoo: mlp, widths: [8]}\n") + kData + "output: " +
                                       dir.file("nni") +
                                       "\ncompression:\n  distiller:\n    teacher: teacher\n    type: "
                                       "DynamicLayerwiseDistiller\n    config_list: [{op_names: [fc2], link: fc2}]\n");
  auto n = run_sparq("run " + dir.file("nni.yaml"));
  ASSERT_EQ(n.exit_code, 0) << n.output;
  EXPECT_TRUE(sparq::test::metrics_of(dir.file("nni"))[0].contains("distill_loss"));

  // a compressed student run is no teacher
  write_file(dir.file("second.yaml"), std::string("model: {zoo: mlp, widths: [8]}\n") + kData + "output: " +
                                          dir.file("second") +
                                          "\ndistillation: {teacher: student, config_list: [{op_names: [fc2]}]}\n");
  auto c = run_sparq("run " + dir.file("second.yaml"));
  EXPECT_EQ(c.exit_code, 2) << c.output;
  EXPECT_NE(c.output.find("compressed run"), std::string::npos) << c.output;
}

TEST(DistillationCli, BadDistillersExitWith2AndOneLine) {
  TempDir dir("distill_cli_bad");
  write_file(dir.file("teacher.yaml"), std::string("model: {zoo: mlp, widths: [32]}\n") + kData + "output: " +
                                           dir.file("teacher") + "\n");
  ASSERT_EQ(run_sparq("run " + dir.file("teacher.yaml")).exit_code, 0);
  struct Case {
    std::string distillation, expect;
  };
  const std::vector<Case> cases = {
      {"{teacher: teacher, config_list: [{op_names: [fc2], link: fc9}]}", "'fc9' names no module of the teacher"},
      {"{teacher: teacher, config_list: [{op_names: [fc1]}]}", "student 'fc1' gives [8] per sample, teacher 'fc1' gives [32]"},
      {"{teacher: teacher, config_list: [{op_names: [fc2], lambda: -1}]}", "lambda"},
      {"{teacher: teacher, config_list: [{op_names: [fc2], apply_method: cosine}]}", "apply_method"},
      {"{teacher: missing, config_list: [{op_names: [fc2]}]}", "is not a run folder"},
      {"{teacher: teacher, type: Distiller, config_list: [{op_names: [fc2]}]}", "type"},
      {"{teacher: {model: mlp, weights: teacher}, config_list: [{op_names: [fc2]}]}", "does not fit model"},
  };
  for (const auto& c : cases) {
    write_file(dir.file("s.yaml"), std::string("model: {zoo: mlp, widths: [8]}\n") + kData + "output: " +
                                       dir.file("s") + "\ndistillation: " + c.distillation + "\n");
    auto r = run_sparq("run " + dir.file("s.yaml"));
    EXPECT_EQ(r.exit_code, 2) << c.distillation << "\n" << r.output;
    // one error line on stderr (errors found once the data and the student exist come after
    // the data and model lines on stdout)
    auto at = r.output.find("sparq: error: ");
    ASSERT_NE(at, std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("sparq: error: ", at + 1), std::string::npos) << r.output;
    auto line = r.output.substr(at, r.output.find('\n', at) - at);
    EXPECT_NE(line.find(c.expect), std::string::npos) << r.output;
    EXPECT_NE(line.find("s.yaml:"), std::string::npos) << r.output;
  }
}
