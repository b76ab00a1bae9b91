// ONNX import: the PyTorch-exported fixtures (tests/fixtures/onnx/make_fixtures.py) become Graphs
// whose float outputs equal PyTorch's, with PyTorch's module names; bad files are one-line errors.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>
#include <torch/torch.h>

#include <fstream>

#include "sparq/data/dataset.h"
#include "sparq/error.h"
#include "sparq/models/onnx_import.h"
#include "test_util.h"

using namespace sparq;
using namespace sparq::models;
using sparq::test::error_of;
using sparq::test::fixture;

namespace {

Graph imported(const std::string& name, OnnxImport* out = nullptr) {
  auto model = import_onnx(fixture("onnx/" + name + ".onnx"));
  Graph g(model.spec);
  load_state(g, model.state, name);
  g->eval();
  if (out) *out = model;
  return g;
}

double max_error_against_pytorch(const std::string& name) {
  Graph g = imported(name);
  auto x = data::read_npy(fixture("onnx/" + name + "_x.npy"));
  auto y = data::read_npy(fixture("onnx/" + name + "_y.npy"));
  torch::NoGradGuard no_grad;
  auto out = g->forward(x);
  EXPECT_EQ(out.sizes(), y.sizes()) << name;
  return (out - y).abs().max().item<double>();
}

std::vector<std::string> node_names(const Graph& g) {
  std::vector<std::string> names;
  for (const auto& n : g->nodes()) names.push_back(n.name + ":" + n.op);
  return names;
}

}  // namespace

TEST(OnnxImport, OutputsEqualPyTorchForEveryFixture) {
  for (const char* name : {"mlp", "lenet", "resnet_block", "conv1d"}) EXPECT_LE(max_error_against_pytorch(name), 1e-5) << name;
}

TEST(OnnxImport, MlpKeepsModuleNamesAndFoldsPatterns) {
  OnnxImport model;
  Graph g = imported("mlp", &model);
  EXPECT_EQ(model.opset, 13);
  // Gemm -> Linear, MatMul without bias -> Linear (its weight name is generated: the scope names
  // it), the erf pattern -> one GELU, the eval-mode dropout is gone.
  EXPECT_EQ(node_names(g), (std::vector<std::string>{"fc1:Linear", "bn1:BatchNorm1d", "leaky_relu:LeakyReLU", "fc2:Linear",
                                                     "tanh:Tanh", "fc3:Linear", "gelu:GELU", "sigmoid:Sigmoid",
                                                     "out:Linear"}));
  EXPECT_FALSE(g->named_parameters().find("fc3.bias"));
  EXPECT_NEAR(number_attr(g->node("leaky_relu"), "negative_slope", 0), 0.05, 1e-7);
  EXPECT_NEAR(number_attr(g->node("bn1"), "momentum", 0), 0.1, 1e-7);  // ONNX's 0.9 weighs the old statistics
  EXPECT_EQ(g->named_parameters()["fc1.weight"].sizes().vec(), (std::vector<int64_t>{32, 16}));
}

TEST(OnnxImport, ResidualBlockNamesFollowPyTorchScopes) {
  Graph g = imported("resnet_block");
  auto names = node_names(g);
  // BatchNorm2d was folded into the convolutions by torch's export; the block's functional ops
  // are named inside their module's scope.
  EXPECT_EQ(names, (std::vector<std::string>{"stem:Conv2d", "relu:ReLU", "layer1.0.conv1:Conv2d", "layer1.0.relu:ReLU",
                                             "layer1.0.conv2:Conv2d", "layer1.0.add:add", "layer1.0.relu_1:ReLU",
                                             "down:Conv2d", "relu_1:ReLU", "dil:Conv2d", "relu_2:ReLU", "pool:AvgPool2d",
                                             "flatten:flatten", "fc:Linear"}));
  EXPECT_EQ(int_attr(g->node("down"), "groups", 0), 4);
  EXPECT_EQ(dims_attr(g->node("dil"), "dilation", 2, 0), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(g->node("pool").out_shape, (std::vector<int64_t>{16, 1, 1}));
  EXPECT_TRUE(g->named_parameters().find("layer1.0.conv1.weight"));
}

TEST(OnnxImport, LenetReadsTheDynamicBatchViewAndPadBeforeAveragePool) {
  Graph g = imported("lenet");
  // Shape -> Gather -> Unsqueeze -> Concat -> Reshape (x.view(x.size(0), -1)) is a flatten; the
  // opset-11 Pad + AveragePool is one AvgPool2d.
  EXPECT_EQ(node_names(g), (std::vector<std::string>{"conv1:Conv2d", "relu:ReLU", "pool1:MaxPool2d", "conv2:Conv2d",
                                                     "relu_1:ReLU", "pool2:AvgPool2d", "flatten:flatten", "fc1:Linear",
                                                     "relu_2:ReLU", "fc2:Linear"}));
  EXPECT_EQ(g->node("pool2").out_shape, (std::vector<int64_t>{16, 5, 5}));
}

namespace {

/// A one-node model around `op` (input [batch, 4], output y), written to `path`.
void write_model(const std::string& path, const std::function<void(onnx::ModelProto&)>& edit) {
  onnx::ModelProto m;
  m.set_ir_version(7);
  auto* opset = m.add_opset_import();
  opset->set_domain("");
  opset->set_version(13);
  auto* g = m.mutable_graph();
  g->set_name("g");
  auto* in = g->add_input();
  in->set_name("x");
  auto* t = in->mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  t->mutable_shape()->add_dim()->set_dim_param("batch");
  t->mutable_shape()->add_dim()->set_dim_value(4);
  auto* out = g->add_output();
  out->set_name("y");
  *out->mutable_type() = in->type();
  auto* node = g->add_node();
  node->set_name("/act/Relu");
  node->set_op_type("Relu");
  node->add_input("x");
  node->add_output("y");
  edit(m);
  std::ofstream f(path, std::ios::binary);
  m.SerializeToOstream(&f);
}

}  // namespace

TEST(OnnxImport, BadFilesAreOneLineErrorsNamingNodeOpAndOpset) {
  test::TempDir dir("onnx_bad");
  auto msg = [&](const std::string& path) {
    auto m = error_of<ModelError>([&] { import_onnx(path); });
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    return m;
  };
  write_model(dir.file("ok.onnx"), [](onnx::ModelProto&) {});
  EXPECT_EQ(msg(dir.file("ok.onnx")), "");

  write_model(dir.file("unsupported.onnx"), [](onnx::ModelProto& m) { m.mutable_graph()->mutable_node(0)->set_op_type("Elu"); });
  EXPECT_NE(msg(dir.file("unsupported.onnx")).find("node '/act/Relu' (Elu, opset 13): unsupported op"), std::string::npos);

  write_model(dir.file("dynamic.onnx"), [](onnx::ModelProto& m) {
    m.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(1)->set_dim_param("n");
  });
  EXPECT_NE(msg(dir.file("dynamic.onnx")).find("dimension 1 is dynamic ('n')"), std::string::npos);

  write_model(dir.file("old.onnx"), [](onnx::ModelProto& m) { m.mutable_opset_import(0)->set_version(9); });
  EXPECT_NE(msg(dir.file("old.onnx")).find("uses opset 9"), std::string::npos);

  // Garbage and a truncated copy of a real export.
  test::write_file(dir.file("garbage.onnx"), "this is not a protobuf at all \x01\x02\xff");
  EXPECT_NE(msg(dir.file("garbage.onnx")).find("not a valid ONNX"), std::string::npos);
  std::string real = test::read_text(fixture("onnx/lenet.onnx"));
  test::write_file(dir.file("truncated.onnx"), real.substr(0, real.size() / 2));
  EXPECT_NE(msg(dir.file("truncated.onnx")).find("not a valid ONNX"), std::string::npos);
  EXPECT_NE(msg(dir.file("missing.onnx")).find("does not exist"), std::string::npos);
}

TEST(OnnxImport, FreshPyTorchExportsOfTheGeneratorImportToTheSameOutputs) {
  // The committed fixtures come from tests/fixtures/onnx/make_fixtures.py: run it again with
  // Debian's python3-torch and import what it writes now.
  SPARQ_REQUIRE_CLIENT(std::system("/usr/bin/python3 -c 'import torch, onnx' >/dev/null 2>&1") == 0,
                       "python3-torch / python3-onnx");
  test::TempDir dir("onnx_regen");
  std::string cmd = "/usr/bin/python3 " + std::string(SPARQ_TEST_DATA) + "/onnx/make_fixtures.py " + dir.path().string() +
                    " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  for (const char* name : {"mlp", "lenet", "resnet_block", "conv1d"}) {
    auto model = import_onnx(dir.file(std::string(name) + ".onnx"));
    Graph g(model.spec);
    load_state(g, model.state, name);
    g->eval();
    torch::NoGradGuard no_grad;
    auto out = g->forward(data::read_npy(dir.file(std::string(name) + "_x.npy")));
    EXPECT_LE((out - data::read_npy(dir.file(std::string(name) + "_y.npy"))).abs().max().item<double>(), 1e-5) << name;
  }
}
