// The ONNX paths through the sparq program: a job's `model: {onnx: FILE}` and `export:`, `sparq
// inspect --model FILE.onnx`, and their bad inputs (exit 2, one line).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "test_util.h"

using namespace sparq::test;

namespace {
std::string job_text(const std::string& model, const std::string& output, const std::string& extra) {
  return fmt::format("model: {{onnx: {}}}\ndata: {{dataset: random, shape: [1, 28, 28], samples: 64, num_classes: 10}}\n"
                     "training: {{epochs: 1, batch_size: 32}}\noutput: {}\n{}",
                     model, output, extra);
}
}  // namespace

TEST(OnnxCli, RunExportsAndBadInputsExitTwo) {
  TempDir dir("onnx_cli");
  write_file(dir.file("ok.yaml"), job_text(fixture("onnx/lenet.onnx"), dir.file("run"), "export: onnx\n"));
  auto ok = run_sparq("run " + dir.file("ok.yaml"));
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("exported " + dir.file("run/model.onnx")), std::string::npos) << ok.output;
  EXPECT_TRUE(std::filesystem::exists(dir.file("run/model.onnx")));
  EXPECT_NE(read_text(dir.file("run/model.yaml")).find("name: conv1"), std::string::npos);

  write_file(dir.file("garbage.onnx"), "not onnx");
  struct Case { std::string job, expect; };
  for (const auto& c : {
           Case{job_text(dir.file("garbage.onnx"), dir.file("r1"), ""), "garbage.onnx: not a valid ONNX file"},
           Case{job_text(dir.file("missing.onnx"), dir.file("r2"), ""), "ONNX file"},
           Case{job_text(fixture("onnx/mlp.onnx"), dir.file("r3"), ""), "the model takes samples of [16], the data's are [1, 28, 28]"},
           Case{job_text(fixture("onnx/lenet.onnx"), dir.file("r4"), "export: [onnx, tflite]\n"), "export: unknown format 'tflite'"},
           // PQuantML's default rounding (RND) has no QONNX mode: refused after training, model.pt kept.
           Case{job_text(fixture("onnx/lenet.onnx"), dir.file("r5"),
                         "export: qonnx\ncompression: {quantization_parameters: {default_data_fractional_bits: 4}}\n"),
                "rounding mode RND has no QONNX equivalent"},
       }) {
    write_file(dir.file("bad.yaml"), c.job);
    auto r = run_sparq("run " + dir.file("bad.yaml"));
    EXPECT_EQ(r.exit_code, 2) << r.output;
    auto at = r.output.find("sparq: error: ");
    ASSERT_NE(at, std::string::npos) << r.output;
    // One line says it all.
    EXPECT_NE(r.output.substr(at, r.output.find('\n', at) - at).find(c.expect), std::string::npos) << r.output;
  }
  EXPECT_TRUE(std::filesystem::exists(dir.file("r5/model.pt")));
  EXPECT_FALSE(std::filesystem::exists(dir.file("r5/model_qonnx.onnx")));
}

TEST(OnnxCli, InspectReadsOnnxModelsByTheirPyTorchNames) {
  TempDir dir("onnx_inspect");
  write_file(dir.file("c.yaml"), "quantization_parameters:\n  layer_specific:\n    layer1.0.conv1: {weight: {fractional_bits: 3}}\n");
  auto r = run_sparq("inspect " + dir.file("c.yaml") + " --model " + fixture("onnx/resnet_block.onnx"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("layer1.0.conv1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("ap_fixed<4,1"), std::string::npos) << r.output;
}

TEST(OnnxCli, ExportAndVerifyRebuildAFinishedRun) {
  TempDir dir("onnx_verify");
  // `sparq export` rebuilds the finished run from its folder (job.yaml, run.json, model.pt);
  // `sparq verify` runs the file in ONNX Runtime against sparq's evaluation.
  write_file(dir.file("job.yaml"), fmt::format(R"(
model: {{onnx: {}}}
data: {{dataset: random, shape: [16], samples: 256, num_classes: 5, normalize: standardize}}
training: {{epochs: 2, batch_size: 64}}
output: {}
compression:
  quantization_parameters: {{round_mode: RND_CONV, quantize_output: true, default_data_keep_negatives: 1,
                            default_data_integer_bits: 3, default_data_fractional_bits: 4}}
)", fixture("onnx/mlp.onnx"), dir.file("run")));
  auto run = run_sparq("run " + dir.file("job.yaml"));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("run/model.onnx")));  // no export: key
  auto exported = run_sparq("export " + dir.file("run") + " --format onnx --format qonnx");
  EXPECT_EQ(exported.exit_code, 0) << exported.output;
  EXPECT_TRUE(std::filesystem::exists(dir.file("run/model.onnx")));
  EXPECT_TRUE(std::filesystem::exists(dir.file("run/model_qonnx.onnx")));
  // The integer reference runs without any tool: every logit of the 64 test samples equal.
  auto verify = run_sparq("verify " + dir.file("run"));
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  EXPECT_NE(verify.output.find("integer reference: 0 of 320 logits differ from sparq's evaluation (bit for bit equal)"),
            std::string::npos)
      << verify.output;
  SPARQ_REQUIRE_CLIENT(std::filesystem::exists(std::string(SPARQ_NODE_MODULES) + "/onnxruntime-node"),
                       "onnxruntime-node in " << SPARQ_NODE_MODULES);
  EXPECT_NE(verify.output.find("predictions that differ: 0"), std::string::npos) << verify.output;
  EXPECT_NE(verify.output.find("LSB of ap_fixed<8,4,AP_RND_CONV,AP_SAT>"), std::string::npos) << verify.output;
  EXPECT_NE(verify.output.find("verified"), std::string::npos) << verify.output;

  // Bad input: not a run folder, an unknown format.
  auto missing = run_sparq("export " + dir.file("nothing"));
  EXPECT_EQ(missing.exit_code, 2) << missing.output;
  EXPECT_NE(missing.output.find("not a finished run folder"), std::string::npos) << missing.output;
  auto format = run_sparq("export " + dir.file("run") + " --format tflite");
  EXPECT_EQ(format.exit_code, 2) << format.output;
}
