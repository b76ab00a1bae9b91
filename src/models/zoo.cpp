// The built-in models, described as GraphSpecs so they go through the same builder, checks and
// naming as model YAML files.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "sparq/error.h"
#include "sparq/models/graph.h"

namespace sparq::models {

namespace {

NodeSpec node(std::string name, std::string op, std::map<std::string, Attr> attrs = {},
              std::vector<std::string> inputs = {}) {
  return NodeSpec{std::move(name), std::move(op), std::move(inputs), std::move(attrs), ""};
}

/// Dense layers fc1..fcN with activations act1..act(N-1) between them.
void add_dense_stack(GraphSpec& g, const std::vector<int64_t>& input_shape,
                     const std::vector<int64_t>& hidden, int64_t outputs, const std::string& activation,
                     int first_index = 1, const std::string& act_prefix = "relu") {
  if (input_shape.size() > 1) g.nodes.push_back(node("flatten", "flatten"));
  int i = first_index;
  for (int64_t width : hidden) {
    if (width <= 0) throw ModelError(fmt::format("dense width {} must be positive", width));
    g.nodes.push_back(node(fmt::format("fc{}", i), "Linear", {{"out_features", width}}));
    g.nodes.push_back(node(fmt::format("{}{}", act_prefix, i), activation));
    ++i;
  }
  g.nodes.push_back(node(fmt::format("fc{}", i), "Linear", {{"out_features", outputs}}));
}

GraphSpec mlp(const std::vector<int64_t>& in, int64_t classes, const ZooOptions& o) {
  GraphSpec g{"mlp", in, {}, ""};
  add_dense_stack(g, in, o.widths.empty() ? std::vector<int64_t>{256, 128} : o.widths, classes,
                  o.activation);
  return g;
}

// The hls4ml jet-tagging benchmark network: 16 inputs, 64-32-32 ReLU, 5 classes.
GraphSpec jet_tagger(const std::vector<int64_t>& in, int64_t classes, const ZooOptions& o) {
  GraphSpec g{"jet_tagger", in, {}, ""};
  add_dense_stack(g, in, {64, 32, 32}, classes, o.activation);
  return g;
}

// conv-BN-ReLU-avgpool twice, then a dense head (the peers' benchmark CNN with the defaults).
GraphSpec lenet(const std::vector<int64_t>& in, int64_t classes, const ZooOptions& o) {
  if (in.size() != 3) throw ModelError(fmt::format("lenet expects image samples [channels, height, width], got rank {}", in.size()));
  GraphSpec g{"lenet", in, {}, ""};
  auto channels = o.widths.empty() ? std::vector<int64_t>{8, 16} : o.widths;
  int i = 1;
  for (int64_t c : channels) {
    g.nodes.push_back(node(fmt::format("conv{}", i), "Conv2d",
                           {{"out_channels", c}, {"kernel_size", int64_t{3}}, {"padding", int64_t{1}}}));
    g.nodes.push_back(node(fmt::format("bn{}", i), "BatchNorm2d"));
    g.nodes.push_back(node(fmt::format("relu{}", i), o.activation));
    g.nodes.push_back(node(fmt::format("pool{}", i), "AvgPool2d", {{"kernel_size", int64_t{2}}}));
    ++i;
  }
  g.nodes.push_back(node("flatten", "flatten"));
  g.nodes.push_back(node("fc1", "Linear", {{"out_features", o.hidden}}));
  g.nodes.push_back(node(fmt::format("relu{}", i), o.activation));
  g.nodes.push_back(node("fc2", "Linear", {{"out_features", classes}}));
  return g;
}

// A small ResNet for 28x28 / 32x32 images: stem, stages of basic blocks (stride 2 from the second
// stage on, 1x1 conv + BN shortcut where the shape changes), global average pool, dense head.
// Names follow torchvision: layer1.0.conv1, layer2.0.downsample.0, ...
GraphSpec resnet(const std::vector<int64_t>& in, int64_t classes, const ZooOptions& o) {
  if (in.size() != 3) throw ModelError(fmt::format("resnet expects image samples [channels, height, width], got rank {}", in.size()));
  GraphSpec g{"resnet", in, {}, ""};
  auto widths = o.widths.empty() ? std::vector<int64_t>{16, 32, 64} : o.widths;
  auto conv3 = [](int64_t c, int64_t stride) {
    return std::map<std::string, Attr>{{"out_channels", c}, {"kernel_size", int64_t{3}},
                                       {"stride", stride}, {"padding", int64_t{1}}, {"bias", false}};
  };
  g.nodes.push_back(node("conv1", "Conv2d", conv3(widths[0], 1)));
  g.nodes.push_back(node("bn1", "BatchNorm2d"));
  g.nodes.push_back(node("relu", o.activation));
  std::string prev = "relu";
  int64_t channels = widths[0], size_h = in[1], size_w = in[2];
  for (size_t s = 0; s < widths.size(); ++s) {
    for (int64_t b = 0; b < o.blocks; ++b) {
      std::string p = fmt::format("layer{}.{}.", s + 1, b);
      int64_t stride = (s > 0 && b == 0) ? 2 : 1;
      g.nodes.push_back(node(p + "conv1", "Conv2d", conv3(widths[s], stride), {prev}));
      g.nodes.push_back(node(p + "bn1", "BatchNorm2d"));
      g.nodes.push_back(node(p + "relu1", o.activation));
      g.nodes.push_back(node(p + "conv2", "Conv2d", conv3(widths[s], 1)));
      g.nodes.push_back(node(p + "bn2", "BatchNorm2d"));
      std::string shortcut = prev;
      if (stride != 1 || channels != widths[s]) {
        g.nodes.push_back(node(p + "downsample.0", "Conv2d",
                               {{"out_channels", widths[s]}, {"kernel_size", int64_t{1}},
                                {"stride", stride}, {"bias", false}},
                               {prev}));
        g.nodes.push_back(node(p + "downsample.1", "BatchNorm2d"));
        shortcut = p + "downsample.1";
      }
      g.nodes.push_back(node(p + "add", "add", {}, {p + "bn2", shortcut}));
      g.nodes.push_back(node(p + "relu2", o.activation));
      prev = p + "relu2";
      channels = widths[s];
      if (stride == 2) size_h = (size_h + 1) / 2, size_w = (size_w + 1) / 2;
    }
  }
  g.nodes.push_back(node("avgpool", "AvgPool2d", {{"kernel_size", std::vector<int64_t>{size_h, size_w}}}));
  g.nodes.push_back(node("flatten", "flatten"));
  g.nodes.push_back(node("fc", "Linear", {{"out_features", classes}}));
  return g;
}

}  // namespace

std::vector<std::string> zoo_names() { return {"mlp", "jet_tagger", "lenet", "resnet"}; }

GraphSpec zoo_spec(const std::string& name, const std::vector<int64_t>& input_shape,
                   int64_t num_classes, const ZooOptions& options) {
  if (num_classes <= 0) throw ModelError(fmt::format("model '{}': number of outputs {} must be positive", name, num_classes));
  if (name == "mlp") return mlp(input_shape, num_classes, options);
  if (name == "jet_tagger") return jet_tagger(input_shape, num_classes, options);
  if (name == "lenet") return lenet(input_shape, num_classes, options);
  if (name == "resnet") return resnet(input_shape, num_classes, options);
  throw ModelError(fmt::format("unknown zoo model '{}' (zoo: {})", name, fmt::join(zoo_names(), ", ")));
}

}  // namespace sparq::models
