#include "sparq/models/graph.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "sparq/error.h"

namespace sparq::models {

namespace {

using AT = AttrType;

const std::vector<OpInfo>& op_table() {
  static const std::vector<OpInfo> table = {
      {"Linear", {{"in_features", AT::Int}, {"out_features", AT::Int, true}, {"bias", AT::Bool}}},
      {"Conv1d", {{"in_channels", AT::Int}, {"out_channels", AT::Int, true},
                  {"kernel_size", AT::IntOrList, true}, {"stride", AT::IntOrList},
                  {"padding", AT::IntOrList}, {"dilation", AT::IntOrList}, {"groups", AT::Int},
                  {"bias", AT::Bool}}},
      {"Conv2d", {{"in_channels", AT::Int}, {"out_channels", AT::Int, true},
                  {"kernel_size", AT::IntOrList, true}, {"stride", AT::IntOrList},
                  {"padding", AT::IntOrList}, {"dilation", AT::IntOrList}, {"groups", AT::Int},
                  {"bias", AT::Bool}}},
      {"AvgPool1d", {{"kernel_size", AT::IntOrList, true}, {"stride", AT::IntOrList},
                     {"padding", AT::IntOrList}}},
      {"AvgPool2d", {{"kernel_size", AT::IntOrList, true}, {"stride", AT::IntOrList},
                     {"padding", AT::IntOrList}}},
      {"MaxPool1d", {{"kernel_size", AT::IntOrList, true}, {"stride", AT::IntOrList},
                     {"padding", AT::IntOrList}}},
      {"MaxPool2d", {{"kernel_size", AT::IntOrList, true}, {"stride", AT::IntOrList},
                     {"padding", AT::IntOrList}}},
      {"BatchNorm1d", {{"num_features", AT::Int}, {"eps", AT::Double}, {"momentum", AT::Double}}},
      {"BatchNorm2d", {{"num_features", AT::Int}, {"eps", AT::Double}, {"momentum", AT::Double}}},
      {"ReLU", {}},
      {"Tanh", {}},
      {"Sigmoid", {}},
      {"GELU", {}},
      {"LeakyReLU", {{"negative_slope", AT::Double}}},
      {"Hardtanh", {{"min_val", AT::Double}, {"max_val", AT::Double}}},
      {"Softmax", {{"dim", AT::Int}}},
      {"Dropout", {{"p", AT::Double}}},
      {"Identity", {}},
      {"add", {}, true, 2, 64},
      {"concat", {{"dim", AT::Int}}, true, 2, 64},
      {"flatten", {}, true},
      {"reshape", {{"shape", AT::IntList, true}}, true},
  };
  return table;
}

// PQuantML/Keras spellings accepted for the PyTorch names.
const std::map<std::string, std::string>& aliases() {
  static const std::map<std::string, std::string> a = {
      {"Dense", "Linear"},        {"Conv1D", "Conv1d"},          {"Conv2D", "Conv2d"},
      {"AveragePooling1D", "AvgPool1d"}, {"AveragePooling2D", "AvgPool2d"},
      {"MaxPooling1D", "MaxPool1d"}, {"MaxPooling2D", "MaxPool2d"}, {"relu", "ReLU"},
      {"tanh", "Tanh"},           {"sigmoid", "Sigmoid"},        {"gelu", "GELU"},
      {"leaky_relu", "LeakyReLU"}, {"hard_tanh", "Hardtanh"},    {"softmax", "Softmax"},
      {"Add", "add"},             {"Concatenate", "concat"},     {"Flatten", "flatten"},
      {"Reshape", "reshape"}};
  return a;
}

std::string shape_str(const std::vector<int64_t>& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

class AttrReader {
 public:
  AttrReader(const NodeSpec& spec) : spec_(spec) {}
  bool has(const std::string& key) const { return spec_.attrs.count(key) > 0; }
  int64_t get_int(const std::string& key, int64_t fallback) const {
    auto it = spec_.attrs.find(key);
    if (it == spec_.attrs.end()) return fallback;
    if (auto v = std::get_if<int64_t>(&it->second)) return *v;
    fail(key, "expected an integer");
  }
  double get_double(const std::string& key, double fallback) const {
    auto it = spec_.attrs.find(key);
    if (it == spec_.attrs.end()) return fallback;
    if (auto v = std::get_if<double>(&it->second)) return *v;
    if (auto v = std::get_if<int64_t>(&it->second)) return static_cast<double>(*v);
    fail(key, "expected a number");
  }
  bool get_bool(const std::string& key, bool fallback) const {
    auto it = spec_.attrs.find(key);
    if (it == spec_.attrs.end()) return fallback;
    if (auto v = std::get_if<bool>(&it->second)) return *v;
    fail(key, "expected true or false");
  }
  /// An int or a list of `n` ints (one per spatial dimension).
  std::vector<int64_t> get_dims(const std::string& key, size_t n, int64_t fallback) const {
    auto it = spec_.attrs.find(key);
    if (it == spec_.attrs.end()) return std::vector<int64_t>(n, fallback);
    if (auto v = std::get_if<int64_t>(&it->second)) return std::vector<int64_t>(n, *v);
    if (auto v = std::get_if<std::vector<int64_t>>(&it->second)) {
      if (v->size() == n) return *v;
      fail(key, fmt::format("expected {} values, got {}", n, v->size()));
    }
    fail(key, "expected an integer or a list of integers");
  }
  [[noreturn]] void fail(const std::string& key, const std::string& msg) const {
    throw ModelError(fmt::format("{}node '{}' ({}): {}: {}", spec_.where.empty() ? "" : spec_.where + ": ",
                                 spec_.name, spec_.op, key, msg));
  }

 private:
  const NodeSpec& spec_;
};

template <size_t N>
torch::ExpandingArray<N> dims(const std::vector<int64_t>& v) {
  return torch::ExpandingArray<N>(v);
}

/// The module of a parameterised op, with sizes inferred from `in` (one input sample shape).
torch::nn::AnyModule make_module(const NodeSpec& spec, const std::string& op,
                                 const std::vector<int64_t>& in) {
  AttrReader a(spec);
  auto need_rank = [&](size_t rank, const char* layout) {
    if (in.size() != rank)
      throw ModelError(fmt::format("{}node '{}' ({}): expects input samples shaped {}, got {}",
                                   spec.where.empty() ? "" : spec.where + ": ", spec.name, op,
                                   layout, shape_str(in)));
  };
  auto inferred = [&](const char* key, int64_t actual) {
    int64_t v = a.get_int(key, actual);
    if (v != actual)
      a.fail(key, fmt::format("is {} but the input shape {} gives {}", v, shape_str(in), actual));
    return v;
  };
  namespace nn = torch::nn;
  if (op == "Linear") {
    if (in.empty()) need_rank(1, "[features]");
    int64_t fin = inferred("in_features", in.back());
    return nn::AnyModule(nn::Linear(
        nn::LinearOptions(fin, a.get_int("out_features", 0)).bias(a.get_bool("bias", true))));
  }
  if (op == "Conv1d" || op == "Conv2d") {
    size_t n = op == "Conv1d" ? 1 : 2;
    need_rank(n + 1, n == 1 ? "[channels, length]" : "[channels, height, width]");
    int64_t cin = inferred("in_channels", in[0]);
    int64_t cout = a.get_int("out_channels", 0);
    auto k = a.get_dims("kernel_size", n, 1), s = a.get_dims("stride", n, 1),
         p = a.get_dims("padding", n, 0), d = a.get_dims("dilation", n, 1);
    int64_t groups = a.get_int("groups", 1);
    bool bias = a.get_bool("bias", true);
    if (groups < 1 || cin % groups || cout % groups)
      a.fail("groups", fmt::format("{} must divide in_channels {} and out_channels {}", groups, cin, cout));
    if (n == 1)
      return nn::AnyModule(nn::Conv1d(nn::Conv1dOptions(cin, cout, dims<1>(k)).stride(dims<1>(s))
                                          .padding(dims<1>(p)).dilation(dims<1>(d)).groups(groups).bias(bias)));
    return nn::AnyModule(nn::Conv2d(nn::Conv2dOptions(cin, cout, dims<2>(k)).stride(dims<2>(s))
                                        .padding(dims<2>(p)).dilation(dims<2>(d)).groups(groups).bias(bias)));
  }
  if (op == "AvgPool1d" || op == "MaxPool1d" || op == "AvgPool2d" || op == "MaxPool2d") {
    size_t n = op.find("1d") != std::string::npos ? 1 : 2;
    need_rank(n + 1, n == 1 ? "[channels, length]" : "[channels, height, width]");
    auto k = a.get_dims("kernel_size", n, 1);
    auto s = a.has("stride") ? a.get_dims("stride", n, 1) : k;
    auto p = a.get_dims("padding", n, 0);
    if (op == "AvgPool1d")
      return nn::AnyModule(nn::AvgPool1d(nn::AvgPool1dOptions(dims<1>(k)).stride(dims<1>(s)).padding(dims<1>(p))));
    if (op == "MaxPool1d")
      return nn::AnyModule(nn::MaxPool1d(nn::MaxPool1dOptions(dims<1>(k)).stride(dims<1>(s)).padding(dims<1>(p))));
    if (op == "AvgPool2d")
      return nn::AnyModule(nn::AvgPool2d(nn::AvgPool2dOptions(dims<2>(k)).stride(dims<2>(s)).padding(dims<2>(p))));
    return nn::AnyModule(nn::MaxPool2d(nn::MaxPool2dOptions(dims<2>(k)).stride(dims<2>(s)).padding(dims<2>(p))));
  }
  if (op == "BatchNorm1d" || op == "BatchNorm2d") {
    if (op == "BatchNorm2d") need_rank(3, "[channels, height, width]");
    else if (in.size() != 1 && in.size() != 2) need_rank(1, "[features] or [channels, length]");
    int64_t c = inferred("num_features", in[0]);
    double eps = a.get_double("eps", 1e-5), momentum = a.get_double("momentum", 0.1);
    if (op == "BatchNorm1d")
      return nn::AnyModule(nn::BatchNorm1d(nn::BatchNorm1dOptions(c).eps(eps).momentum(momentum)));
    return nn::AnyModule(nn::BatchNorm2d(nn::BatchNorm2dOptions(c).eps(eps).momentum(momentum)));
  }
  if (op == "ReLU") return nn::AnyModule(nn::ReLU());
  if (op == "Tanh") return nn::AnyModule(nn::Tanh());
  if (op == "Sigmoid") return nn::AnyModule(nn::Sigmoid());
  if (op == "GELU") return nn::AnyModule(nn::GELU());
  if (op == "Identity") return nn::AnyModule(nn::Identity());
  if (op == "LeakyReLU")
    return nn::AnyModule(nn::LeakyReLU(nn::LeakyReLUOptions().negative_slope(a.get_double("negative_slope", 0.01))));
  if (op == "Hardtanh")
    return nn::AnyModule(nn::Hardtanh(nn::HardtanhOptions().min_val(a.get_double("min_val", -1.0))
                                          .max_val(a.get_double("max_val", 1.0))));
  if (op == "Softmax") {
    // dim counts the batch axis, as in PyTorch; default: the feature axis.
    return nn::AnyModule(nn::Softmax(nn::SoftmaxOptions(a.get_int("dim", 1))));
  }
  if (op == "Dropout") {
    double p = a.get_double("p", 0.5);
    if (p < 0 || p >= 1) a.fail("p", fmt::format("{} is out of range, expected 0 <= p < 1", p));
    return nn::AnyModule(nn::Dropout(nn::DropoutOptions(p)));
  }
  throw ModelError(fmt::format("node '{}': op '{}' has no module", spec.name, op));
}

/// Applies a built-in op to its input values.
torch::Tensor apply_builtin(const Node& node, const std::vector<torch::Tensor>& in) {
  const std::string& op = node.op;
  if (op == "add") {
    torch::Tensor sum = in[0];
    for (size_t i = 1; i < in.size(); ++i) sum = sum + in[i];
    return sum;
  }
  if (op == "concat") {
    auto it = node.attrs.find("dim");
    int64_t dim = it == node.attrs.end() ? 1 : std::get<int64_t>(it->second);
    return torch::cat(in, dim);
  }
  if (op == "flatten") return in[0].flatten(1);
  // reshape
  auto shape = std::get<std::vector<int64_t>>(node.attrs.at("shape"));
  shape.insert(shape.begin(), in[0].size(0));
  return in[0].reshape(shape);
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

}  // namespace

const OpInfo* find_op(const std::string& name) {
  auto alias = aliases().find(name);
  const std::string& canonical = alias == aliases().end() ? name : alias->second;
  for (const auto& op : op_table())
    if (op.name == canonical) return &op;
  return nullptr;
}

std::vector<std::string> op_names() {
  std::vector<std::string> names;
  for (const auto& op : op_table()) names.push_back(op.name);
  return names;
}

GraphImpl::GraphImpl(const GraphSpec& spec) : name_(spec.name), input_shape_(spec.input_shape) {
  if (spec.nodes.empty()) throw ModelError(fmt::format("model '{}' has no layers", spec.name));
  if (input_shape_.empty())
    throw ModelError(fmt::format("model '{}': the input shape is unknown", spec.name));
  torch::NoGradGuard no_grad;
  // Shapes are inferred by running each node once on a batch of two zero samples.
  std::vector<torch::Tensor> probe;
  auto batch_shape = input_shape_;
  batch_shape.insert(batch_shape.begin(), 2);
  torch::Tensor input_probe = torch::zeros(batch_shape);
  std::map<std::string, int> index;

  for (const auto& ns : spec.nodes) {
    std::string at = ns.where.empty() ? "" : ns.where + ": ";
    if (ns.name.empty() || ns.name == "input" || ns.name.front() == '.' || ns.name.back() == '.' ||
        ns.name.find("..") != std::string::npos)
      throw ModelError(fmt::format("{}node name '{}' is not valid (reserved or malformed)", at, ns.name));
    if (index.count(ns.name)) throw ModelError(fmt::format("{}node name '{}' is used twice", at, ns.name));
    const OpInfo* info = find_op(ns.op);
    if (!info)
      throw ModelError(fmt::format("{}node '{}': unknown op '{}' (known ops: {})", at, ns.name, ns.op,
                                   fmt::join(op_names(), ", ")));
    Node node;
    node.name = ns.name;
    node.op = info->name;
    node.attrs = ns.attrs;
    // Edges: named inputs, or the previous node (the graph input for the first node).
    std::vector<std::string> inputs = ns.inputs;
    if (inputs.empty()) inputs.push_back(nodes_.empty() ? "input" : nodes_.back().name);
    for (const auto& in : inputs) {
      if (in == "input") { node.inputs.push_back(-1); continue; }
      auto it = index.find(in);
      if (it == index.end())
        throw ModelError(fmt::format("{}node '{}': input '{}' is not an earlier node", at, ns.name, in));
      node.inputs.push_back(it->second);
    }
    int n_in = static_cast<int>(node.inputs.size());
    if (n_in < info->min_inputs || n_in > info->max_inputs)
      throw ModelError(fmt::format("{}node '{}' ({}): takes {} input(s), got {}", at, ns.name, node.op,
                                   info->min_inputs == info->max_inputs ? fmt::format("{}", info->min_inputs)
                                                                        : fmt::format("at least {}", info->min_inputs),
                                   n_in));
    std::vector<torch::Tensor> in_values;
    std::vector<std::vector<int64_t>> in_shapes;
    for (int i : node.inputs) {
      in_values.push_back(i < 0 ? input_probe : probe[i]);
      in_shapes.push_back(i < 0 ? input_shape_ : nodes_[i].out_shape);
    }
    if (node.op == "add")
      for (size_t i = 1; i < in_shapes.size(); ++i)
        if (in_shapes[i] != in_shapes[0])
          throw ModelError(fmt::format("{}node '{}' (add): input shapes differ: '{}' gives {}, '{}' gives {}",
                                       at, ns.name, inputs[0], shape_str(in_shapes[0]), inputs[i],
                                       shape_str(in_shapes[i])));
    if (node.op == "reshape") {
      auto shape = std::get<std::vector<int64_t>>(ns.attrs.at("shape"));
      int64_t want = 1, have = 1;
      for (auto d : shape) want *= d;
      for (auto d : in_shapes[0]) have *= d;
      if (want != have)
        throw ModelError(fmt::format("{}node '{}' (reshape): cannot reshape {} to {}", at, ns.name,
                                     shape_str(in_shapes[0]), shape_str(shape)));
    }
    if (!info->builtin) node.module = make_module(ns, node.op, in_shapes[0]);
    torch::Tensor out;
    try {
      if (node.module.is_empty()) {
        out = apply_builtin(node, in_values);
      } else {
        node.module.ptr()->eval();
        out = node.module.forward(in_values[0]);
        node.module.ptr()->train();
      }
    } catch (const c10::Error& e) {
      throw ModelError(fmt::format("{}node '{}' ({}): input {} does not fit: {}", at, ns.name, node.op,
                                   shape_str(in_shapes[0]), first_line(e.what_without_backtrace())));
    }
    node.out_shape = out.sizes().vec();
    node.out_shape.erase(node.out_shape.begin());
    for (auto d : node.out_shape)
      if (d <= 0)
        throw ModelError(fmt::format("{}node '{}' ({}): output shape {} is empty for input {}", at,
                                     ns.name, node.op, shape_str(node.out_shape), shape_str(in_shapes[0])));
    probe.push_back(out);
    index[ns.name] = static_cast<int>(nodes_.size());
    nodes_.push_back(std::move(node));
    register_node(nodes_.back());
  }
  output_ = spec.output.empty() ? static_cast<int>(nodes_.size()) - 1 : index_of(spec.output);
  last_use_.assign(nodes_.size(), -1);
  for (size_t n = 0; n < nodes_.size(); ++n)
    for (int i : nodes_[n].inputs)
      if (i >= 0) last_use_[i] = static_cast<int>(n);
}

void GraphImpl::register_node(Node& node) {
  if (node.module.is_empty()) return;
  // "layer1.0.conv1" lives as child "conv1" of container "0" of container "layer1", so parameter
  // names come out as in PyTorch: "layer1.0.conv1.weight".
  torch::nn::Module* parent = this;
  std::string rest = node.name;
  for (size_t dot; (dot = rest.find('.')) != std::string::npos; rest = rest.substr(dot + 1)) {
    std::string part = rest.substr(0, dot);
    auto children = parent->named_children();
    if (auto* child = children.find(part)) {
      parent = child->get();
    } else {
      parent = parent->register_module(part, std::make_shared<torch::nn::Module>()).get();
    }
  }
  if (parent->named_children().find(rest))
    throw ModelError(fmt::format("node '{}': name clashes with another node's container", node.name));
  parent->register_module(rest, node.module.ptr());
}

int GraphImpl::index_of(const std::string& name) const {
  for (size_t i = 0; i < nodes_.size(); ++i)
    if (nodes_[i].name == name) return static_cast<int>(i);
  throw ModelError(fmt::format("model '{}' has no node '{}'", name_, name));
}

void GraphImpl::replace(const std::string& name, torch::nn::AnyModule module, const std::string& op) {
  Node& node = nodes_[index_of(name)];
  if (node.module.is_empty())
    throw ModelError(fmt::format("node '{}' is a built-in op and cannot be replaced", name));
  torch::nn::Module* parent = this;
  std::string rest = name;
  for (size_t dot; (dot = rest.find('.')) != std::string::npos; rest = rest.substr(dot + 1))
    parent = parent->named_children()[rest.substr(0, dot)].get();
  parent->replace_module(rest, module.ptr());
  node.module = std::move(module);
  node.op = op;
}

torch::Tensor GraphImpl::forward(torch::Tensor x) {
  std::vector<torch::Tensor> values(nodes_.size());
  std::vector<torch::Tensor> in;
  for (size_t n = 0; n < nodes_.size(); ++n) {
    Node& node = nodes_[n];
    in.clear();
    for (int i : node.inputs) in.push_back(i < 0 ? x : values[i]);
    values[n] = node.module.is_empty() ? apply_builtin(node, in) : node.module.forward(in[0]);
    // Free intermediate values as soon as their last reader has run.
    for (int i : node.inputs)
      if (i >= 0 && last_use_[i] == static_cast<int>(n) && i != output_) values[i] = torch::Tensor();
  }
  return values[output_];
}

int64_t parameter_count(const Node& node) {
  if (node.module.is_empty()) return 0;
  int64_t count = 0;
  for (const auto& p : node.module.ptr()->parameters()) count += p.numel();
  return count;
}

}  // namespace sparq::models
