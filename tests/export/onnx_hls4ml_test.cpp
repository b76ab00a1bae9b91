// The hls4ml hand-off: model_hls4ml.onnx is what qonnx's preparation would give hls4ml (node and
// tensor names, shapes of every tensor, channels-last layout ops, one per-tensor Quant per
// weight), it computes what sparq computes (run by an independent QONNX reader,
// scripts/qonnx_run.py, on Debian's python3-onnx and numpy), and hls4ml.yaml lists every node
// with the precisions of precision.json and the accumulators.
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <onnx/onnx_pb.h>
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "sparq/compress/compress.h"
#include "sparq/export/hls4ml.h"
#include "sparq/export/precision.h"
#include "sparq/layers/pq_layers.h"
#include "test_util.h"

using namespace sparq;
using sparq::test::error_of;

namespace {

/// conv -> relu -> avg pool -> conv + residual -> max pool -> flatten -> dense -> relu -> dense:
/// no batch norm (hls4ml scales those with its own types), every op channels-last must move.
models::Graph conv_net(const std::string& quantization) {
  torch::manual_seed(5);
  models::Graph g(models::parse_model_yaml(R"(
input_shape: [2, 8, 6]
layers:
  - {name: conv1, op: Conv2d, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: relu1, op: ReLU}
  - {name: pool1, op: AvgPool2d, kernel_size: 2}
  - {name: conv2, op: Conv2d, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: res, op: add, inputs: [conv2, pool1]}
  - {name: pool2, op: MaxPool2d, kernel_size: 2}
  - {name: flatten, op: flatten}
  - {name: fc1, op: Linear, out_features: 12}
  - {name: relu2, op: ReLU}
  - {name: fc2, op: Linear, out_features: 3}
)", "net.yaml"));
  compress(g, test::pquant_plan("quantization_parameters: {" + quantization + "}"));
  g->eval();
  return g;
}

const char* kFixed =
    "default_weight_integer_bits: 0, default_weight_fractional_bits: 5, default_data_keep_negatives: 1, "
    "default_data_integer_bits: 2, default_data_fractional_bits: 4, quantize_output: true, round_mode: {}";

bool have_python_onnx() { return std::system("/usr/bin/python3 -c 'import onnx, numpy' > /dev/null 2>&1") == 0; }

/// The QONNX reader's output for `x` (float64, as the file computes it).
torch::Tensor run_qonnx(const std::string& model, const torch::Tensor& x, const test::TempDir& dir) {
  auto xf = x.contiguous().to(torch::kFloat32);
  {
    std::ofstream out(dir.file("x.f32"), std::ios::binary);
    out.write(static_cast<const char*>(xf.data_ptr()), xf.numel() * 4);
  }
  std::string cmd = fmt::format("/usr/bin/python3 {}/scripts/qonnx_run.py {} {} {} {} 2>&1", SPARQ_SOURCE_DIR, model,
                                dir.file("x.f32"), dir.file("y.f64"), x.size(0));
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream in(dir.file("y.f64"), std::ios::binary | std::ios::ate);
  const auto bytes = static_cast<int64_t>(in.tellg());
  auto y = torch::empty({bytes / 8}, torch::kFloat64);
  in.seekg(0);
  in.read(static_cast<char*>(y.data_ptr()), bytes);
  return y.reshape({x.size(0), -1});
}

onnx::ModelProto load(const std::string& path) {
  onnx::ModelProto m;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(m.ParseFromIstream(&in));
  return m;
}

/// precision.json's ap type as hls4ml's config spells it: ap_fixed<8,2,AP_RND_CONV,AP_SAT> -> fixed<8,2,RND_CONV,SAT>.
std::string hls(std::string ap) {
  if (ap.rfind("ap_", 0) == 0) ap = ap.substr(3);
  for (size_t at; (at = ap.find("AP_")) != std::string::npos;) ap.erase(at, 3);
  return ap;
}

/// Origin (`fc1`, `fc1.input`) -> node; a layer's own node is its MatMul or Conv (its bias Add
/// has the same origin).
std::map<std::string, std::string> nodes_by_origin(const exporting::Hls4mlExport& out) {
  std::map<std::string, std::string> node_of;
  for (const auto& [node, origin] : out.origin)
    if (!node_of.count(origin) || node.rfind("MatMul", 0) == 0 || node.rfind("Conv", 0) == 0) node_of[origin] = node;
  return node_of;
}

}  // namespace

TEST(Hls4mlExport, FileIsWhatQonnxPreparationGivesHls4ml) {
  auto g = conv_net(fmt::format(kFixed, "RND_CONV"));
  g->forward(torch::rand({2, 2, 8, 6}));
  test::TempDir dir("hls4ml_file");
  auto out = exporting::export_hls4ml(g, dir.path().string(), {});
  auto m = load(out.onnx_path);
  const auto& graph = m.graph();
  EXPECT_EQ(graph.input(0).name(), "global_in");
  EXPECT_EQ(graph.output(0).name(), "global_out");
  std::set<std::string> shaped{"global_in", "global_out"};
  for (const auto& vi : graph.value_info()) {
    shaped.insert(vi.name());
    for (const auto& d : vi.type().tensor_type().shape().dim()) EXPECT_GT(d.dim_value(), 0) << vi.name();
  }
  std::map<std::string, int> count;
  std::map<std::string, const onnx::NodeProto*> by_name;
  int channels_last = 0, transposes = 0;
  for (const auto& n : graph.node()) {
    by_name[n.name()] = &n;
    // qonnx's GiveUniqueNodeNames: <op>_<n>, numbered per op type in graph order.
    EXPECT_EQ(n.name(), fmt::format("{}_{}", n.op_type(), count[n.op_type()]++));
    EXPECT_NE(n.op_type(), "Gemm");
    EXPECT_NE(n.op_type(), "Identity");  // hls4ml's output layer must be a real node
    // Every tensor has a shape (hls4ml looks each input up in value_info), names readable.
    for (const auto& i : n.input()) EXPECT_TRUE(shaped.count(i)) << n.name() << " input " << i;
    for (int o = 0; o < n.output_size(); ++o)
      if (n.output(o) != "global_out") {
        EXPECT_EQ(n.output(o), fmt::format("{}_out{}", n.name(), o));
      }
    bool layout = n.op_type() == "Conv" || n.op_type() == "MaxPool" || n.op_type() == "AveragePool";
    if (layout) {
      EXPECT_EQ(n.domain(), "qonnx.custom_op.channels_last") << n.name();
    }
    channels_last += layout;
    transposes += n.op_type() == "Transpose";
    if (n.op_type() == "Quant") {
      EXPECT_EQ(n.domain(), "qonnx.custom_op.general");
      // One bit width and one power-of-two scale per Quant (hls4ml's QuantToActivation).
      for (int j = 1; j < 4; ++j) {
        const onnx::TensorProto* t = nullptr;
        for (const auto& init : graph.initializer())
          if (init.name() == n.input(j)) t = &init;
        ASSERT_NE(t, nullptr) << n.name();
        EXPECT_EQ(t->dims_size(), 0) << n.name() << " input " << j;
      }
    }
  }
  EXPECT_EQ(channels_last, 4);  // conv1, pool1, conv2, pool2
  EXPECT_EQ(transposes, 1);     // the input's; the flatten's is absorbed into fc1's weights
  // Every weight feeds its layer through one Quant of an initializer (FuseQuantWithConstant).
  for (const auto& n : graph.node()) {
    if (n.op_type() != "MatMul" && n.op_type() != "Conv") continue;
    bool from_quant = false;
    for (const auto& p : graph.node())
      if (p.op_type() == "Quant" && p.output(0) == n.input(1)) from_quant = p.input(0).rfind("_param0") != std::string::npos;
    EXPECT_TRUE(from_quant) << n.name();
  }
  // The convolution weights are OHWI: conv2's is [4, 3, 3, 4] (out, kernel height, width, in).
  const auto& conv2 = *by_name.at("Conv_1");
  std::string weight;
  for (const auto& p : graph.node())
    if (p.output(0) == conv2.input(1)) weight = p.input(0);
  bool found = false;
  for (const auto& init : graph.initializer())
    if (init.name() == weight) {
      found = true;
      EXPECT_EQ(std::vector<int64_t>(init.dims().begin(), init.dims().end()), (std::vector<int64_t>{4, 3, 3, 4}));
    }
  EXPECT_TRUE(found) << weight;
  SPARQ_REQUIRE_CLIENT(have_python_onnx(), "python3-onnx");
  EXPECT_EQ(std::system(fmt::format("/usr/bin/python3 -c \"import onnx; onnx.checker.check_model(onnx.load('{}'))\"",
                                    out.onnx_path)
                            .c_str()),
            0);
}

TEST(Hls4mlExport, ComputesWhatSparqComputesBitForBit) {
  SPARQ_REQUIRE_CLIENT(have_python_onnx(), "python3-onnx");
  test::TempDir dir("hls4ml_exact");
  auto x = torch::round(torch::rand({64, 2, 8, 6}) * 40 - 8) / 16;  // beyond the range: saturation too
  for (const char* round : {"RND_CONV", "TRN"}) {
    auto g = conv_net(fmt::format(kFixed, round));
    torch::Tensor ours;
    {
      torch::NoGradGuard no_grad;
      ours = g->forward(x).to(torch::kFloat64);
    }
    auto out = exporting::export_hls4ml(g, dir.path().string(), {});
    auto theirs = run_qonnx(out.onnx_path, x, dir);
    ASSERT_EQ(theirs.sizes(), ours.sizes());
    EXPECT_EQ((theirs != ours).sum().item<int64_t>(), 0) << round << ": largest difference " << (theirs - ours).abs().max().item<double>();
    EXPECT_TRUE(torch::equal(torch::round(ours * 16) / 16, ours)) << round;  // quantized logits, not a float pass
    EXPECT_TRUE(out.notes.empty()) << out.notes[0];
    EXPECT_TRUE(out.exact);
  }
}

TEST(Hls4mlExport, ConfigListsEveryNodeWithThePrecisionsOfPrecisionJson) {
  auto g = conv_net(fmt::format(kFixed, "RND_CONV"));
  g->forward(torch::rand({2, 2, 8, 6}));
  exporting::Hls4mlOptions options;
  options.project_name = "tagger", options.reuse_factor = 4, options.strategy = "Resource", options.io_type = "io_stream";
  test::TempDir dir("hls4ml_config");
  auto out = exporting::export_hls4ml(g, dir.path().string(), options);
  auto config = YAML::LoadFile(out.config_path);
  EXPECT_EQ(config["OnnxModel"].as<std::string>(), "model_hls4ml.onnx");
  EXPECT_EQ(config["ProjectName"].as<std::string>(), "tagger");
  EXPECT_EQ(config["IOType"].as<std::string>(), "io_stream");
  EXPECT_EQ(config["Backend"].as<std::string>(), "Vitis");
  EXPECT_EQ(config["HLSConfig"]["Model"]["ReuseFactor"].as<int>(), 4);
  EXPECT_EQ(config["HLSConfig"]["Model"]["Strategy"].as<std::string>(), "Resource");
  auto names = config["HLSConfig"]["LayerName"];
  // Every node of the file, and the input, is listed.
  auto m = load(out.onnx_path);
  std::set<std::string> listed, nodes{"global_in"};
  for (const auto& kv : names) listed.insert(kv.first.as<std::string>());
  for (const auto& n : m.graph().node()) nodes.insert(n.name());
  EXPECT_EQ(listed, nodes);
  // Each lane's Quant, each weight and bias, each accumulator: the types precision.json lists.
  auto precision = exporting::precision_json(g);
  auto node_of = nodes_by_origin(out);
  int checked = 0;
  for (const auto& layer : precision["layers"]) {
    const std::string name = layer["name"];
    for (const auto& [target, t] : layer["targets"].items()) {
      ASSERT_EQ(t["types"].size(), 1u) << name << " " << target;
      const std::string type = hls(t["types"].begin().key());
      const bool parameter = target == "weight" || target == "bias";
      const std::string node = node_of.at(name + "." + target + (parameter ? ".quant" : ""));
      EXPECT_EQ(names[node]["Precision"]["result"].as<std::string>(), type) << node << " " << name << "." << target;
      if (parameter) {
        auto entry = names[node_of.at(name)]["Precision"];
        EXPECT_EQ(entry[target].as<std::string>(), type) << name;
      }
      ++checked;
    }
    if (layer.contains("accumulator")) {
      auto entry = names[node_of.at(name)];
      const std::string acc = hls(layer["accumulator"]["type"]);
      EXPECT_EQ(entry["Precision"]["accum"].as<std::string>(), acc) << name;
      EXPECT_EQ(entry["Precision"]["result"].as<std::string>(), acc) << name;
      EXPECT_EQ(entry["ReuseFactor"].as<int>(), 4);
      EXPECT_EQ(entry["Strategy"].as<std::string>(), "Resource");
      ++checked;
    }
  }
  EXPECT_EQ(checked, 4 * 4 + 3 * 2 + 4);  // conv1, conv2, fc1, fc2: 4 lanes and an accumulator; relu1, relu2, pool1: 2
  // The input port takes the first Quant's type (feeding it rounds and saturates the same way);
  // the 2x2 average pool's result two more fractional bits than its input (the mean is exact).
  EXPECT_EQ(names["global_in"]["Precision"]["result"].as<std::string>(),
            names[node_of.at("conv1.input")]["Precision"]["result"].as<std::string>());
  EXPECT_EQ(names[node_of.at("pool1.input")]["Precision"]["result"].as<std::string>(), "fixed<7,3,RND_CONV,SAT>");
  EXPECT_EQ(names["AveragePool_0"]["Precision"]["result"].as<std::string>(), "fixed<9,3>");
}

TEST(Hls4mlExport, PerWeightHgqWeightsBecomeTheCoveringTypeAndStayExact) {
  SPARQ_REQUIRE_CLIENT(have_python_onnx(), "python3-onnx");
  torch::manual_seed(0);
  models::Graph g(models::zoo_spec("jet_tagger", {16}, 5));
  compress(g, test::pquant_plan("quantization_parameters: {use_hgq: true, granularity: per_weight, round_mode: RND_CONV}"));
  {
    torch::NoGradGuard no_grad;  // learned-looking widths: f in -1..5, i in -2..2 per weight
    auto w = quant::as_fixed_point(pq_layer(g, "fc1")->quantizer("weight"));
    w->f.copy_(torch::randint(-1, 6, w->f.sizes()).to(w->f.dtype()));
    w->i.copy_(torch::randint(-2, 3, w->i.sizes()).to(w->i.dtype()));
  }
  g->eval();
  auto x = torch::round(torch::randn({128, 16}) * 64) / 64;
  torch::Tensor ours;
  {
    torch::NoGradGuard no_grad;
    ours = g->forward(x).to(torch::kFloat64);
  }
  test::TempDir dir("hls4ml_hgq");
  auto out = exporting::export_hls4ml(g, dir.path().string(), {});
  auto theirs = run_qonnx(out.onnx_path, x, dir);
  EXPECT_EQ((theirs != ours).sum().item<int64_t>(), 0) << (theirs - ours).abs().max().item<double>();
  // fc1's weight type covers every element's format: the largest f and the largest i + k.
  auto precision = exporting::precision_json(g);
  nlohmann::json fc1;
  for (const auto& l : precision["layers"])
    if (l["name"] == "fc1") fc1 = l["targets"]["weight"];
  int f_max = -100, top = -100;
  for (size_t e = 0; e < fc1["f"].size(); ++e) {
    int k = fc1["k"][e], i = fc1["i"][e], f = fc1["f"][e];
    if (k + i + f <= 0) continue;
    f_max = std::max(f_max, f), top = std::max(top, i);
  }
  auto node_of = nodes_by_origin(out);
  auto config = YAML::LoadFile(out.config_path);
  EXPECT_EQ(config["HLSConfig"]["LayerName"][node_of.at("fc1")]["Precision"]["weight"].as<std::string>(),
            fmt::format("fixed<{},{},RND_CONV,SAT>", 1 + top + f_max, 1 + top));
  EXPECT_TRUE(out.exact);
  ASSERT_FALSE(out.notes.empty());
  EXPECT_NE(out.notes[0].find("fc1.weight.quant: 1024 formats per element, written as the covering"), std::string::npos) << out.notes[0];
}

TEST(Hls4mlExport, RefusesWhatHls4mlCannotComputeExactly) {
  test::TempDir dir("hls4ml_refuse");
  auto rnd = conv_net(fmt::format(kFixed, "RND"));
  auto msg = error_of<Error>([&] { exporting::export_hls4ml(rnd, dir.path().string(), {}); });
  EXPECT_NE(msg.find("conv1.input: rounding mode RND has no QONNX equivalent"), std::string::npos) << msg;
  auto down = conv_net(fmt::format(kFixed, "TRN_ZERO"));
  msg = error_of<Error>([&] { exporting::export_hls4ml(down, dir.path().string(), {}); });
  EXPECT_NE(msg.find("export --format hls4ml: conv1.input: rounding DOWN (TRN_ZERO): hls4ml maps only ROUND (RND_CONV) and "
                     "FLOOR (TRN)"),
            std::string::npos)
      << msg;
  EXPECT_FALSE(std::filesystem::exists(dir.file("model_hls4ml.onnx")));
  exporting::Hls4mlOptions bad;
  bad.strategy = "Fast";
  msg = error_of<ConfigError>([&] { exporting::check_hls4ml_options(bad); });
  EXPECT_EQ(msg, "export --format hls4ml: --strategy 'Fast' is not one of Latency, Resource");
}

TEST(Hls4mlExport, JobAndCommandLineWriteTheHandOff) {
  test::TempDir dir("hls4ml_cli");
  test::write_file(dir.file("job.yaml"), fmt::format(R"(
name: jet-tagger v2
model: mlp
data: {{dataset: random, shape: [16], samples: 64, num_classes: 5}}
training: {{epochs: 1, batch_size: 16}}
compression:
  quantization_parameters: {{default_data_keep_negatives: 1, round_mode: RND_CONV}}
export: [hls4ml]
output: {}
)", dir.file("r")));
  auto run = test::run_sparq("run " + dir.file("job.yaml"));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  auto config = YAML::LoadFile(dir.file("r/hls4ml.yaml"));
  EXPECT_EQ(config["ProjectName"].as<std::string>(), "jet_tagger_v2");  // the job's name as a C identifier
  EXPECT_EQ(config["HLSConfig"]["Model"]["ReuseFactor"].as<int>(), 1);
  auto again = test::run_sparq(fmt::format("export {} --format hls4ml --reuse-factor 2 --backend Vivado --project-name tagger",
                                           dir.file("r")));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("exported " + dir.file("r/hls4ml.yaml")), std::string::npos) << again.output;
  config = YAML::LoadFile(dir.file("r/hls4ml.yaml"));
  EXPECT_EQ(config["ProjectName"].as<std::string>(), "tagger");
  EXPECT_EQ(config["Backend"].as<std::string>(), "Vivado");
  EXPECT_EQ(config["HLSConfig"]["LayerName"]["MatMul_0"]["ReuseFactor"].as<int>(), 2);
  // `sparq verify` runs the hand-off too (in QONNX's semantics) against sparq's evaluation.
  SPARQ_REQUIRE_CLIENT(have_python_onnx(), "python3-onnx");
  auto verify = test::run_sparq("verify " + dir.file("r"));
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  EXPECT_TRUE(std::regex_search(verify.output, std::regex("hls4ml hand-off \\(model_hls4ml.onnx, [0-9]+ nodes, QONNX "
                                                          "semantics\\): 0 of [0-9]+ logits differ from sparq's evaluation "
                                                          "\\(bit for bit equal\\)")))
      << verify.output;
}
