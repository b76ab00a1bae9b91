// `sparq verify RUN` and the integer reference from the command line: a layer whose exact sums
// need more bits than float32 holds is found (exit 3, the node named); an exact run verifies.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "test_util.h"

using namespace sparq::test;

TEST(VerifyCli, TheIntegerReferenceFindsSumsThatFloat32Rounds) {
  TempDir dir("verify_cli");
  // 20-bit weights times 16-bit inputs over 512 features: about 45 bits per sum.
  auto job = [&](int weight_f, const std::string& out) {
    return fmt::format(R"(model: {{zoo: mlp, widths: [8]}}
data: {{dataset: random, shape: [512], samples: 256, num_classes: 3, normalize: standardize}}
training: {{epochs: 1, batch_size: 64, progress: none}}
output: {}
compression:
  quantization_parameters: {{default_weight_integer_bits: 0, default_weight_fractional_bits: {},
                            default_data_keep_negatives: 1, default_data_integer_bits: 3, default_data_fractional_bits: 12}}
)",
                       out, weight_f);
  };
  write_file(dir.file("wide.yaml"), job(19, dir.file("wide")));
  ASSERT_EQ(run_sparq("run " + dir.file("wide.yaml")).exit_code, 0);
  auto r = run_sparq("verify " + dir.file("wide"));
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("first differing node: fc1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("MISMATCH"), std::string::npos) << r.output;
  // 4-bit weights: the sums fit float32's 24 bits, every logit equal.
  write_file(dir.file("narrow.yaml"), job(3, dir.file("narrow")));
  ASSERT_EQ(run_sparq("run " + dir.file("narrow.yaml")).exit_code, 0);
  r = run_sparq("verify " + dir.file("narrow"));
  EXPECT_NE(r.output.find("integer reference: 0 of 192 logits differ"), std::string::npos) << r.output;
}
