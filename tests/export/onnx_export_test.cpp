// ONNX export: the files pass Debian's onnx checker (python3-onnx) and ONNX Runtime (npm
// onnxruntime-node) computes what sparq's evaluation computes: exactly, on a model whose float
// sums are exact, for every rounding and overflow mode; QONNX Quant nodes carry the formats.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <fstream>

#include "sparq/compress/compress.h"
#include "sparq/config/job.h"
#include "sparq/run/run_job.h"
#include "sparq/data/dataset.h"
#include "sparq/export/onnx_export.h"
#include "sparq/export/precision.h"
#include "sparq/quant/integer.h"
#include "test_util.h"

using namespace sparq;
using sparq::test::error_of;

namespace {

/// 16 -> 32 -> ReLU -> 32 -> ReLU -> 5, every weight, bias and lane quantized to 8 bits, inputs
/// on a 2^-4 grid: every product and sum is exact in float32, whatever the order of the sums.
models::Graph exact_mlp(const std::string& round, const std::string& overflow) {
  torch::manual_seed(3);
  auto spec = models::parse_model_yaml(R"(
input_shape: [16]
layers:
  - {name: fc1, op: Linear, out_features: 32}
  - {name: relu1, op: ReLU}
  - {name: fc2, op: Linear, out_features: 32}
  - {name: relu2, op: ReLU}
  - {name: fc3, op: Linear, out_features: 5}
)", "m.yaml");
  models::Graph g(spec);
  compress(g, test::pquant_plan(fmt::format(R"(
quantization_parameters:
  default_weight_keep_negatives: 1
  default_weight_integer_bits: 0
  default_weight_fractional_bits: 7
  default_data_keep_negatives: 1
  default_data_integer_bits: 3
  default_data_fractional_bits: 4
  quantize_input: true
  quantize_output: true
  round_mode: {}
  overflow_mode_data: {}
)", round, overflow)));
  g->eval();
  return g;
}

torch::Tensor grid_inputs(int64_t n) {
  auto gen = at::detail::createCPUGenerator(11);
  // Values beyond the data range (|x| up to 12 > 8) exercise saturation and wrap-around; a 2^-5
  // grid with a 2^-4 format makes half of them ties.
  return torch::round(at::normal(0.0, 4.0, {n, 16}, gen) * 32) / 32;
}

/// Whether the real clients are required (scripts/setup.sh sets SPARQ_REQUIRE_CLIENTS=1): then a
/// missing one fails the test instead of skipping it.
bool clients_required() { return std::getenv("SPARQ_REQUIRE_CLIENTS") != nullptr; }
std::string node_modules() { return SPARQ_NODE_MODULES; }
bool have_ort() { return std::filesystem::exists(node_modules() + "/onnxruntime-node"); }

/// ONNX Runtime's output for `x`.
torch::Tensor run_ort(const std::string& model, const torch::Tensor& x, const test::TempDir& dir) {
  data::write_npy(dir.file("x.npy"), x);
  std::string cmd = fmt::format("NODE_PATH={} node {}/scripts/ort_run.js {} {} {} 2>&1", node_modules(), SPARQ_SOURCE_DIR,
                                model, dir.file("x.npy"), dir.file("y.npy"));
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  return data::read_npy(dir.file("y.npy"));
}

int python_check(const std::string& model) {
  std::string cmd = fmt::format("/usr/bin/python3 -c \"import onnx; onnx.checker.check_model(onnx.load('{}'))\" 2>&1", model);
  return std::system(cmd.c_str());
}

#define REQUIRE_ORT() SPARQ_REQUIRE_CLIENT(have_ort(), "onnxruntime-node in " << node_modules())

onnx::ModelProto load(const std::string& path) {
  onnx::ModelProto m;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(m.ParseFromIstream(&in));
  return m;
}

}  // namespace

TEST(OnnxExport, StandardOnnxRunsBitExactInOnnxRuntimeForEveryMode) {
  REQUIRE_ORT();
  test::TempDir dir("onnx_export");
  auto x = grid_inputs(512);
  for (const char* round : {"TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_INF", "RND_MIN_INF", "RND_CONV"})
    for (const char* overflow : {"SAT", "SAT_SYM", "WRAP"}) {
      auto g = exact_mlp(round, overflow);
      torch::Tensor ours;
      {
        torch::NoGradGuard no_grad;
        ours = g->forward(x);
      }
      auto path = dir.file(fmt::format("m_{}_{}.onnx", round, overflow));
      auto written = exporting::export_onnx(g, path, exporting::OnnxFlavor::Standard);
      EXPECT_EQ(written.quantizers, 3 * 4 + 2 * 2);  // dense: input, weight, bias, output; ReLU: input, output
      auto theirs = run_ort(path, x, dir);
      ASSERT_EQ(theirs.sizes(), ours.sizes());
      EXPECT_TRUE(torch::equal(theirs, ours)) << round << " " << overflow << ": largest difference "
                                              << (theirs - ours).abs().max().item<double>();
      // The logits are on the output grid: the model really quantizes (not a float pass).
      EXPECT_TRUE(torch::equal(torch::round(ours * 16) / 16, ours)) << round;
    }
  EXPECT_EQ(python_check(dir.file("m_RND_SAT.onnx")), 0);
}

TEST(OnnxExport, QonnxQuantNodesCarryTheFixedPointFormats) {
  test::TempDir dir("onnx_qonnx");
  auto g = exact_mlp("RND_CONV", "SAT_SYM");
  auto path = dir.file("q.onnx");
  exporting::export_onnx(g, path, exporting::OnnxFlavor::Qonnx);
  auto m = load(path);
  int quants = 0, matmuls = 0, gemms = 0, unsigned_lanes = 0;
  for (const auto& n : m.graph().node()) {
    matmuls += n.op_type() == "MatMul";
    gemms += n.op_type() == "Gemm";
    if (n.op_type() != "Quant") continue;
    ++quants;
    EXPECT_EQ(n.domain(), "qonnx.custom_op.general");
    std::map<std::string, onnx::AttributeProto> a;
    for (const auto& attr : n.attribute()) a[attr.name()] = attr;
    EXPECT_EQ(a["rounding_mode"].s(), "ROUND");
    // SAT_SYM data lanes are narrow when signed (the ReLUs' outputs are unsigned); parameters
    // saturate (overflow_mode_parameters: SAT).
    bool parameter = n.name().find(".weight") != std::string::npos || n.name().find(".bias") != std::string::npos;
    EXPECT_EQ(a["narrow"].i(), !parameter && a["signed"].i() == 1) << n.name();
    unsigned_lanes += a["signed"].i() == 0;
  }
  EXPECT_EQ(unsigned_lanes, 4);  // the ReLUs quantize their inputs and outputs unsigned
  EXPECT_EQ(quants, 16);
  EXPECT_EQ(matmuls, 3);
  EXPECT_EQ(gemms, 0);
  // The data lanes: scale 2^-4, 8 bits (ap_fixed<8,4>); weights: 2^-7, 8 bits (ap_fixed<8,1>).
  std::map<std::string, const onnx::TensorProto*> inits;
  for (const auto& t : m.graph().initializer()) inits[t.name()] = &t;
  auto value = [&](const std::string& name) {
    float v;
    std::memcpy(&v, inits.at(name)->raw_data().data(), 4);
    return v;
  };
  EXPECT_EQ(value("fc1.input.scale"), 1.0f / 16);
  EXPECT_EQ(value("fc1.input.bitwidth"), 8.0f);
  EXPECT_EQ(value("fc1.weight.quant.scale"), 1.0f / 128);
  EXPECT_EQ(value("fc1.weight.quant.bitwidth"), 8.0f);
  if (!have_ort() && !clients_required()) return;
  EXPECT_EQ(python_check(path), 0);
}

TEST(OnnxExport, ModesWithoutAQonnxEquivalentAreRefusedByName) {
  test::TempDir dir("onnx_refuse");
  auto g = exact_mlp("RND", "SAT");
  auto msg = error_of<Error>([&] { exporting::export_onnx(g, dir.file("q.onnx"), exporting::OnnxFlavor::Qonnx); });
  EXPECT_NE(msg.find("fc1.input: rounding mode RND has no QONNX equivalent"), std::string::npos) << msg;
  auto wrap = exact_mlp("TRN", "WRAP");
  msg = error_of<Error>([&] { exporting::export_onnx(wrap, dir.file("q.onnx"), exporting::OnnxFlavor::Qonnx); });
  EXPECT_NE(msg.find("overflow mode WRAP cannot be written as a QONNX Quant"), std::string::npos) << msg;
  EXPECT_FALSE(std::filesystem::exists(dir.file("q.onnx")));  // nothing half-written
}

TEST(OnnxExport, PyTorchModelTrainsWithItsModuleNamesAndExportsBack) {
  // The generated LeNet variant (MaxPool, AvgPool, a BatchNorm folded by torch, view(-1)) is not a
  // zoo model; the PQuantML config names its PyTorch modules.
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "dataset-fashion-mnist not installed";
  test::TempDir dir("onnx_e2e");
  test::write_file(dir.file("job.yaml"), fmt::format(R"(
name: onnx_lenet
model: {{onnx: {}}}
data: {{dataset: fashion_mnist, train_limit: 1024, test_limit: 512}}
training: {{epochs: 1, batch_size: 128, lr: 0.002}}
output: {}
export: [onnx, qonnx]
compression:
  pruning_parameters: {{disable_pruning_for_layers: [fc2], pruning_method: pdp, sparsity: 0.5, epsilon: 0.015}}
  quantization_parameters:
    round_mode: RND_CONV
    default_data_integer_bits: 3
    default_data_fractional_bits: 4
    layer_specific:
      conv1: {{weight: {{integer_bits: 0, fractional_bits: 3}}}}
      fc1: {{weight: {{integer_bits: 0, fractional_bits: 5}}}}
)", test::fixture("onnx/lenet.onnx"), dir.file("run")));
  auto job = config::load_job(dir.file("job.yaml"));
  RunObserver quiet;
  auto result = run_job(job, quiet);
  EXPECT_EQ(result.exported.size(), 2u);
  // The config's names reached the layers: conv1's weights are on the 2^-3 grid, fc1's on 2^-5.
  auto precision = result.precision.value();
  std::map<std::string, nlohmann::json> layers;
  for (const auto& l : precision["layers"]) layers[l["name"]] = l;
  EXPECT_EQ(layers.at("conv1")["targets"]["weight"]["f"][0], 3);
  EXPECT_EQ(layers.at("fc1")["targets"]["weight"]["f"][0], 5);
  EXPECT_EQ(layers.at("conv2")["targets"]["weight"]["f"][0], 7);  // the default
  // The QONNX file's weight Quant nodes give the ap_fixed types precision.json lists.
  auto q = load(dir.file("run/model_qonnx.onnx"));
  std::map<std::string, float> inits;
  for (const auto& t : q.graph().initializer())
    if (t.raw_data().size() == 4) std::memcpy(&inits[t.name()], t.raw_data().data(), 4);
  for (const char* layer : {"conv1", "conv2", "fc1", "fc2"}) {
    int width = static_cast<int>(inits.at(std::string(layer) + ".weight.quant.bitwidth"));
    int f = static_cast<int>(-std::log2(inits.at(std::string(layer) + ".weight.quant.scale")));
    auto types = layers.at(layer)["targets"]["weight"]["types"];
    ASSERT_EQ(types.size(), 1u) << layer;
    EXPECT_EQ(types.begin().key(), fmt::format("ap_fixed<{},{},AP_RND_CONV,AP_SAT>", width, width - f)) << layer;
  }
  REQUIRE_ORT();
  EXPECT_EQ(python_check(dir.file("run/model.onnx")), 0);
  EXPECT_EQ(python_check(dir.file("run/model_qonnx.onnx")), 0);
  auto test_split = data::load_data(job.data).test;
  auto x = test_split.x.slice(0, 0, 256);
  torch::Tensor ours;
  {
    torch::NoGradGuard no_grad;
    result.model->eval();
    ours = result.model->forward(x);
  }
  auto theirs = run_ort(dir.file("run/model.onnx"), x, dir);
  // Float sums in another order: the logits may differ by an LSB of the output format (2^-4 here,
  // the last Dense has an output quantizer) but no prediction changes.
  EXPECT_LE((theirs - ours).abs().max().item<double>(), 1.0 / 16);
  EXPECT_TRUE(torch::equal(theirs.argmax(1), ours.argmax(1)));
}

TEST(OnnxExport, QonnxKeepsPerWeightHgqFormatsOfPrecisionJson) {
  torch::manual_seed(0);
  models::Graph g(models::zoo_spec("jet_tagger", {16}, 5));
  compress(g, test::pquant_plan("quantization_parameters: {use_hgq: true, granularity: per_weight, round_mode: RND_CONV}"));
  {
    torch::NoGradGuard no_grad;  // learned-looking widths: f in -1..6, i in -2..3 per weight
    auto w = quant::as_fixed_point(pq_layer(g, "fc1")->quantizers()[1].second);
    w->f.copy_(torch::randint(-1, 7, w->f.sizes()).to(w->f.dtype()));
    w->i.copy_(torch::randint(-2, 4, w->i.sizes()).to(w->i.dtype()));
  }
  g->forward(torch::randn({8, 16}));  // the layers see their input shapes
  auto precision = exporting::precision_json(g);
  test::TempDir dir("onnx_hgq");
  exporting::export_onnx(g, dir.file("q.onnx"), exporting::OnnxFlavor::Qonnx);
  auto m = load(dir.file("q.onnx"));
  std::map<std::string, const onnx::TensorProto*> inits;
  for (const auto& t : m.graph().initializer()) inits[t.name()] = &t;
  auto floats = [&](const std::string& name) {
    const auto* t = inits.at(name);
    std::vector<float> v(t->raw_data().size() / 4);
    std::memcpy(v.data(), t->raw_data().data(), t->raw_data().size());
    return v;
  };
  const auto& w = precision["layers"][0]["targets"]["weight"];
  ASSERT_EQ(precision["layers"][0]["name"], "fc1");
  auto scale = floats("fc1.weight.quant.scale"), bits = floats("fc1.weight.quant.bitwidth");
  ASSERT_EQ(scale.size(), w["f"].size());
  ASSERT_EQ(bits.size(), w["f"].size());
  std::map<std::string, int> types;  // the ap_fixed types the Quant node's elements make
  int zero = 0;
  for (size_t e = 0; e < scale.size(); ++e) {
    const int f = w["f"][e].get<int>(), i = w["i"][e].get<int>(), k = w["k"][e].get<int>();
    EXPECT_EQ(scale[e], std::ldexp(1.0f, -f)) << e;
    int width = static_cast<int>(bits[e]);
    if (k + i + f <= 0) ++zero;
    else ++types[fmt::format("ap_fixed<{},{},AP_RND_CONV,AP_SAT>", width, width - f)];
    if (k + i + f > 0) {
      EXPECT_EQ(width, k + std::max(i, -f) + f) << e;
    }
  }
  EXPECT_EQ(zero, w["zero_width"].get<int>());
  for (const auto& [type, count] : w["types"].items()) EXPECT_EQ(types[type], count.get<int>()) << type;
  EXPECT_EQ(types.size(), w["types"].size());
}
