// ONNX import (see onnx_import.h). The nodes are read in their (topological) order; each becomes
// a node of the GraphSpec, an alias of its input (Identity, Dropout, zero Pad), a constant, or a
// "shape value" (Shape -> Gather -> Unsqueeze -> Concat, how torch.onnx.export writes
// x.view(x.size(0), -1) with a dynamic batch), which only a Reshape may consume. Patterns that
// torch writes for one module are folded back into it: MatMul + Add (a Linear), the erf form of
// GELU, Pad + AveragePool. Shapes are tracked per sample (without the batch axis), as the Graph
// keeps them.
#include "sparq/models/onnx_import.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <sstream>

#include "sparq/error.h"
#include "sparq/limits.h"

namespace sparq::models {

namespace {

constexpr int64_t kBatch = std::numeric_limits<int64_t>::min();  ///< the batch axis in a shape value

const char* kSupported =
    "Gemm, MatMul(+Add), Conv, BatchNormalization, Relu, LeakyRelu, Tanh, Sigmoid, Gelu (or its erf pattern), "
    "Softmax, Clip, AveragePool, MaxPool, GlobalAveragePool, Flatten, Reshape, Add, Concat, Identity, Dropout, "
    "Pad (zeros), Constant and the Shape/Gather/Unsqueeze/Concat shape arithmetic of a dynamic batch";

/// What an ONNX tensor name stands for.
struct Value {
  enum Kind { Data, Constant, Shape } kind = Data;
  std::string node;            ///< Data: the GraphSpec node ("input" for the graph input)
  std::vector<int64_t> shape;  ///< Data: sample shape; Shape: the values (kBatch for the batch size)
  torch::Tensor constant;      ///< Constant
};

torch::Tensor tensor_of(const onnx::TensorProto& t, const std::string& where) {
  if (t.data_location() == onnx::TensorProto::EXTERNAL)
    throw ModelError(fmt::format("{}: tensor '{}' is stored in an external file, which sparq does not read", where,
                                 t.name()));
  std::vector<int64_t> dims(t.dims().begin(), t.dims().end());
  int64_t n = 1;
  for (auto d : dims) {
    if (d < 0 || (d > 0 && n > (int64_t(1) << 40) / d))
      throw ModelError(fmt::format("{}: tensor '{}' has invalid dimensions [{}]", where, t.name(), fmt::join(dims, ", ")));
    n *= d;
  }
  auto from = [&](auto type_tag, torch::ScalarType scalar, const auto& field) {
    using T = decltype(type_tag);
    torch::Tensor out = torch::empty(dims, torch::TensorOptions().dtype(scalar));
    if (t.has_raw_data()) {
      if (static_cast<int64_t>(t.raw_data().size()) != n * static_cast<int64_t>(sizeof(T)))
        throw ModelError(fmt::format("{}: tensor '{}' holds {} bytes, its shape [{}] needs {}", where, t.name(),
                                     t.raw_data().size(), fmt::join(dims, ", "), n * sizeof(T)));
      std::memcpy(out.data_ptr(), t.raw_data().data(), t.raw_data().size());
    } else {
      if (field.size() != n)
        throw ModelError(fmt::format("{}: tensor '{}' holds {} values, its shape [{}] needs {}", where, t.name(),
                                     field.size(), fmt::join(dims, ", "), n));
      T* p = static_cast<T*>(out.data_ptr());
      for (int64_t e = 0; e < n; ++e) p[e] = static_cast<T>(field.Get(static_cast<int>(e)));
    }
    return out;
  };
  switch (t.data_type()) {
    case onnx::TensorProto::FLOAT: return from(float{}, torch::kFloat32, t.float_data());
    case onnx::TensorProto::DOUBLE: return from(double{}, torch::kFloat64, t.double_data()).to(torch::kFloat32);
    case onnx::TensorProto::INT64: return from(int64_t{}, torch::kInt64, t.int64_data());
    case onnx::TensorProto::INT32: return from(int32_t{}, torch::kInt32, t.int32_data()).to(torch::kInt64);
    default:
      throw ModelError(fmt::format("{}: tensor '{}' has data type {}, sparq reads float, double, int32 and int64",
                                   where, t.name(), onnx::TensorProto::DataType_Name(
                                                        static_cast<onnx::TensorProto::DataType>(t.data_type()))));
  }
}

class Importer {
 public:
  Importer(const onnx::ModelProto& model, std::string file) : model_(model), graph_(model.graph()), file_(std::move(file)) {
    for (const auto& op : model.opset_import())
      if (op.domain().empty() || op.domain() == "ai.onnx") opset_ = op.version();
    if (opset_ == 0) fail_file("declares no opset of the default ONNX domain");
    if (opset_ < 11) fail_file(fmt::format("uses opset {}; sparq imports opset 11 and later (re-export with opset_version=13)", opset_));
  }

  OnnxImport run() {
    for (const auto& init : graph_.initializer()) values_[init.name()] = constant(tensor_of(init, file_));
    read_input();
    for (int n = 0; n < graph_.node_size(); ++n)
      for (const auto& in : graph_.node(n).input()) consumers_[in].push_back(n);
    reserve_module_names();
    done_.assign(static_cast<size_t>(graph_.node_size()), false);
    for (int n = 0; n < graph_.node_size(); ++n)  // every converter names its node's first output
      if (graph_.node(n).output_size() == 0 || graph_.node(n).output(0).empty()) fail(n, "the node has no output");
    // Constants first: the patterns below look ahead at constants written after their use.
    // A file's constants that do not fit what a node does with them (a bias of the wrong length,
    // say) end in LibTorch's own error: that is the file's fault, said for its node.
    for (int n = 0; n < graph_.node_size(); ++n)
      if (graph_.node(n).op_type() == "Constant") guarded(n, [&] { constant_node(n), done_[n] = true; });
    for (int n = 0; n < graph_.node_size(); ++n)
      if (!done_[n]) guarded(n, [&] { convert(n); });
    read_output();
    result_.opset = opset_;
    result_.producer = model_.producer_name() + (model_.producer_version().empty() ? "" : " " + model_.producer_version());
    return std::move(result_);
  }

 private:
  static Value constant(torch::Tensor t) {
    Value v;
    v.kind = Value::Constant;
    v.constant = std::move(t);
    return v;
  }

  // ---- errors ----
  [[noreturn]] void fail_file(const std::string& msg) const { throw ModelError(fmt::format("{}: {}", file_, msg)); }
  template <class F>
  void guarded(int n, F&& step) {
    try {
      step();
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {  // c10::Error, or LibTorch's std::runtime_error
      std::string msg = e.what();
      fail(n, "its tensors do not fit: " + msg.substr(0, msg.find('\n')));
    }
  }
  [[noreturn]] void fail(int n, const std::string& msg) const {
    const auto& node = graph_.node(n);
    throw ModelError(fmt::format("{}: node '{}' ({}, opset {}): {}", file_, node.name().empty() ? std::to_string(n) : node.name(),
                                 node.op_type(), opset_, msg));
  }

  // ---- the graph's input and output ----
  void read_input() {
    std::set<std::string> inits;
    for (const auto& init : graph_.initializer()) inits.insert(init.name());
    const onnx::ValueInfoProto* input = nullptr;
    for (const auto& in : graph_.input()) {
      if (inits.count(in.name())) continue;
      if (input) fail_file(fmt::format("has several inputs ('{}', '{}'); sparq models take one", input->name(), in.name()));
      input = &in;
    }
    if (!input) fail_file("has no input");
    if (!input->type().has_tensor_type() || input->type().tensor_type().elem_type() != onnx::TensorProto::FLOAT)
      fail_file(fmt::format("input '{}' is not a float tensor", input->name()));
    const auto& shape = input->type().tensor_type().shape();
    if (shape.dim_size() < 2)
      fail_file(fmt::format("input '{}' has rank {}; sparq expects [batch, features...]", input->name(), shape.dim_size()));
    for (int d = 1; d < shape.dim_size(); ++d) {
      const auto& dim = shape.dim(d);
      if (!dim.has_dim_value() || dim.dim_value() <= 0)
        fail_file(fmt::format("input '{}': dimension {} is dynamic ('{}'); only the batch axis may be (dynamic "
                              "shapes where static are needed: export with a fixed sample shape)",
                              input->name(), d, dim.has_dim_param() ? dim.dim_param() : "?"));
      result_.spec.input_shape.push_back(dim.dim_value());
    }
    if (shape.dim(0).has_dim_value()) static_batch_ = shape.dim(0).dim_value();
    Value v;
    v.node = "input";
    v.shape = result_.spec.input_shape;
    values_[input->name()] = v;
    result_.spec.name = std::filesystem::path(file_).stem().string();
  }

  void read_output() {
    if (graph_.output_size() != 1) fail_file(fmt::format("has {} outputs; sparq models have one", graph_.output_size()));
    const auto& name = graph_.output(0).name();
    auto it = values_.find(name);
    if (it == values_.end() || it->second.kind != Value::Data || it->second.node == "input")
      fail_file(fmt::format("output '{}' is not computed from the input by the nodes", name));
    if (result_.spec.nodes.empty()) fail_file("has no layers");
    result_.spec.output = it->second.node == result_.spec.nodes.back().name ? "" : it->second.node;
  }

  // ---- names ----
  /// "fc1" from the initializer "fc1.weight"; "" for torch's generated names ("onnx::Conv_35").
  static std::string module_of_initializer(const std::string& name) {
    const std::string suffix = ".weight";
    if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) return "";
    if (name.find("::") != std::string::npos) return "";
    return name.substr(0, name.size() - suffix.size());
  }
  /// The module path of torch's scoped node names: "/layer1/layer1.0/conv1/Conv" -> "layer1.0.conv1".
  static std::string scope_of(const std::string& node_name) {
    std::vector<std::string> parts;
    std::stringstream ss(node_name);
    for (std::string part; std::getline(ss, part, '/');)
      if (!part.empty()) parts.push_back(part);
    if (parts.size() < 2) return "";
    parts.pop_back();  // the op itself: "Conv", "Relu_1"
    std::string path;
    for (const auto& p : parts) {
      if (!path.empty() && p.compare(0, path.size() + 1, path + ".") == 0) path = p;  // torch repeats the parent
      else path = path.empty() ? p : path + "." + p;
    }
    return path;
  }
  static bool valid_name(const std::string& s) {
    if (s.empty() || s == "input" || s.front() == '.' || s.back() == '.' || s.find("..") != std::string::npos) return false;
    for (char c : s)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.')) return false;
    return true;
  }
  /// Weight layers keep their PyTorch names: find them first, so generated names avoid them.
  void reserve_module_names() {
    for (int n = 0; n < graph_.node_size(); ++n) {
      static const std::set<std::string> never_nodes = {"Constant", "Pad", "Identity", "Dropout", "Shape",
                                                        "Gather", "Unsqueeze", "Squeeze", "Cast"};
      if (!never_nodes.count(graph_.node(n).op_type())) ++scope_count_[scope_of(graph_.node(n).name())];
      std::string name = weight_layer_name(n);
      if (!name.empty() && used_.insert(name).second) preferred_[n] = name;
    }
  }
  std::string weight_layer_name(int n) const {
    const auto& node = graph_.node(n);
    const std::string& op = node.op_type();
    if (op != "Gemm" && op != "MatMul" && op != "Conv" && op != "BatchNormalization") return "";
    if (node.input_size() < 2) return "";
    std::string name = module_of_initializer(node.input(1));
    if (name.empty()) name = scope_of(node.name());
    return valid_name(name) ? name : "";
  }
  /// A node's name: its PyTorch module's when the scope names a module of its own (a pooling
  /// module "pool1"), else "<scope>.<kind>" ("layer1.0.relu") or "<kind>", made unique.
  std::string name_for(int n, const std::string& kind) {
    auto it = preferred_.find(n);
    if (it != preferred_.end()) return it->second;
    std::string scope = scope_of(graph_.node(n).name());
    if (!valid_name(scope)) scope.clear();
    auto is_container = [&](const std::string& s) {
      auto next = used_.lower_bound(s + ".");
      return next != used_.end() && next->compare(0, s.size() + 1, s + ".") == 0;
    };
    if (!scope.empty() && scope_count_[scope] == 1 && !used_.count(scope) && !is_container(scope)) {
      used_.insert(scope);
      return scope;
    }
    std::string base = scope.empty() ? kind : scope + "." + kind;
    std::string name = base;
    for (int i = 1; used_.count(name) || is_container(name); ++i) name = fmt::format("{}_{}", base, i);
    used_.insert(name);
    return name;
  }

  // ---- inputs and attributes ----
  const Value& value(int n, int i) const {
    const auto& node = graph_.node(n);
    if (i >= node.input_size() || node.input(i).empty()) fail(n, fmt::format("input {} is missing", i));
    auto it = values_.find(node.input(i));
    if (it == values_.end()) fail(n, fmt::format("input '{}' is not defined before the node", node.input(i)));
    return it->second;
  }
  bool has_input(int n, int i) const { return i < graph_.node(n).input_size() && !graph_.node(n).input(i).empty(); }
  const Value& data(int n, int i) const {
    const auto& v = value(n, i);
    if (v.kind != Value::Data)
      fail(n, fmt::format("input '{}' must be computed from the model's input, it is a {}", graph_.node(n).input(i),
                          v.kind == Value::Constant ? "constant" : "shape value"));
    return v;
  }
  const torch::Tensor& constant_input(int n, int i) const {
    const auto& v = value(n, i);
    if (v.kind != Value::Constant)
      fail(n, fmt::format("input '{}' must be a constant (an initializer), sparq cannot import computed weights",
                          graph_.node(n).input(i)));
    return v.constant;
  }
  const onnx::AttributeProto* attr(int n, const std::string& name) const {
    for (const auto& a : graph_.node(n).attribute())
      if (a.name() == name) return &a;
    return nullptr;
  }
  int64_t int_attr(int n, const std::string& name, int64_t fallback) const {
    auto a = attr(n, name);
    return a ? a->i() : fallback;
  }
  double float_attr(int n, const std::string& name, double fallback) const {
    auto a = attr(n, name);
    return a ? a->f() : fallback;
  }
  std::string string_attr(int n, const std::string& name, const std::string& fallback) const {
    auto a = attr(n, name);
    return a ? a->s() : fallback;
  }
  std::optional<std::vector<int64_t>> ints_attr(int n, const std::string& name) const {
    auto a = attr(n, name);
    if (!a) return std::nullopt;
    return std::vector<int64_t>(a->ints().begin(), a->ints().end());
  }
  /// Only these attributes may be present (others change the meaning: refuse them by name).
  void allow_attrs(int n, std::initializer_list<const char*> names) const {
    for (const auto& a : graph_.node(n).attribute()) {
      bool ok = false;
      for (const char* name : names) ok = ok || a.name() == name;
      if (!ok) fail(n, fmt::format("attribute '{}' is not supported", a.name()));
    }
  }
  /// ONNX axis of a tensor of rank `rank` (with batch) to its non-negative form.
  int64_t axis_of(int n, int64_t axis, size_t rank) const {
    int64_t r = static_cast<int64_t>(rank);
    if (axis < -r || axis >= r) fail(n, fmt::format("axis {} is out of range for rank {}", axis, r));
    return axis < 0 ? axis + r : axis;
  }
  static double scalar_of(const torch::Tensor& t) { return t.numel() == 1 ? t.to(torch::kDouble).item<double>() : NAN; }
  /// The single node reading tensor `name` (-1 when none or several, or it is a graph output).
  int sole_consumer(const std::string& name) const {
    for (const auto& o : graph_.output())
      if (o.name() == name) return -1;
    auto it = consumers_.find(name);
    if (it == consumers_.end() || it->second.size() != 1) return -1;
    return it->second[0];
  }

  // ---- producing GraphSpec nodes ----
  Value& add_node(int n, const std::string& kind, const std::string& op, std::vector<std::string> inputs,
                  std::map<std::string, Attr> attrs, std::vector<int64_t> out_shape, const std::string& output) {
    NodeSpec ns;
    ns.name = name_for(n, kind);
    ns.op = op;
    ns.inputs = std::move(inputs);
    ns.attrs = std::move(attrs);
    ns.where = fmt::format("{}: node '{}'", file_, graph_.node(n).name());
    for (auto d : out_shape)
      if (d <= 0) fail(n, fmt::format("output shape [{}] is empty", fmt::join(out_shape, ", ")));
    Value v;
    v.node = ns.name;
    v.shape = std::move(out_shape);
    result_.spec.nodes.push_back(std::move(ns));
    return values_[output] = v;
  }
  void alias(int n, const Value& v) { values_[graph_.node(n).output(0)] = v; }
  void param(const std::string& node, const std::string& key, const torch::Tensor& t) {
    result_.state[node + "." + key] = t.to(torch::kFloat32).contiguous();
  }

  // ---- the ops ----
  void convert(int n) {
    const auto& node = graph_.node(n);
    const std::string& op = node.op_type();
    if (!node.domain().empty() && node.domain() != "ai.onnx")
      fail(n, fmt::format("op of domain '{}' is not supported; sparq imports float models of the default domain ({})",
                          node.domain(), kSupported));
    if (op == "Gemm") return gemm(n);
    if (op == "MatMul") return matmul(n);
    if (op == "Conv") return conv(n);
    if (op == "BatchNormalization") return batch_norm(n);
    if (op == "Relu" || op == "Tanh" || op == "Sigmoid") return activation(n);
    if (op == "LeakyRelu") return leaky_relu(n);
    if (op == "Gelu") return gelu_op(n);
    if (op == "Softmax") return softmax(n);
    if (op == "Clip") return clip(n);
    if (op == "AveragePool" || op == "MaxPool") return pool(n, {});
    if (op == "GlobalAveragePool") return global_pool(n);
    if (op == "Flatten") return flatten(n);
    if (op == "Reshape") return reshape(n);
    if (op == "Add") return add(n);
    if (op == "Concat") return concat(n);
    if (op == "Identity" || op == "Dropout") return pass_through(n);
    if (op == "Pad") return pad(n);
    if (op == "Constant") return constant_node(n);
    if (op == "Div" && gelu_pattern(n)) return;
    if (op == "Shape" || op == "Gather" || op == "Unsqueeze" || op == "Squeeze" || op == "Cast") return shape_op(n);
    fail(n, fmt::format("unsupported op; sparq imports {}", kSupported));
  }

  void linear(int n, const Value& x, torch::Tensor weight, torch::Tensor bias, const std::string& output) {
    if (x.shape.empty()) fail(n, "the input has no feature axis");
    int64_t in = x.shape.back(), out = weight.size(0);
    if (weight.size(1) != in)
      fail(n, fmt::format("weight [{}] does not fit inputs of {} features", fmt::join(weight.sizes(), ", "), in));
    auto shape = x.shape;
    shape.back() = out;
    auto& v = add_node(n, "linear", "Linear", {x.node}, {{"out_features", out}, {"bias", bias.defined()}}, shape, output);
    param(v.node, "weight", weight);
    if (bias.defined()) param(v.node, "bias", bias.reshape({out}));
  }

  void gemm(int n) {
    allow_attrs(n, {"alpha", "beta", "transA", "transB"});
    const auto& x = data(n, 0);
    if (x.shape.size() != 1) fail(n, fmt::format("Gemm needs [batch, features] inputs, got a sample of [{}]", fmt::join(x.shape, ", ")));
    if (int_attr(n, "transA", 0) != 0) fail(n, "transA=1 is not supported");
    double alpha = float_attr(n, "alpha", 1.0), beta = float_attr(n, "beta", 1.0);
    torch::Tensor w = constant_input(n, 1);
    if (w.dim() != 2) fail(n, "the weight B must be a matrix");
    w = (int_attr(n, "transB", 0) ? w : w.t()).to(torch::kFloat32) * static_cast<float>(alpha);
    torch::Tensor b;
    if (has_input(n, 2)) {
      b = constant_input(n, 2).to(torch::kFloat32) * static_cast<float>(beta);
      if (b.numel() != w.size(0) && b.numel() != 1)
        fail(n, fmt::format("bias C has {} values for {} outputs", b.numel(), w.size(0)));
      b = b.expand({w.size(0)}).reshape({w.size(0)});
    }
    linear(n, x, w, b, graph_.node(n).output(0));
  }

  void matmul(int n) {
    allow_attrs(n, {});
    const auto& x = data(n, 0);
    torch::Tensor w = constant_input(n, 1);
    if (w.dim() != 2) fail(n, "MatMul needs a constant matrix as its second input (a Linear's weight)");
    // A following Add of a constant vector is the Linear's bias.
    std::string output = graph_.node(n).output(0);
    torch::Tensor b;
    int next = sole_consumer(output);
    if (next >= 0 && graph_.node(next).op_type() == "Add") {
      const auto& add_node = graph_.node(next);
      int other = add_node.input(0) == output ? 1 : 0;
      auto it = values_.find(add_node.input(other));
      if (it != values_.end() && it->second.kind == Value::Constant && it->second.constant.numel() == w.size(1)) {
        b = it->second.constant.reshape({w.size(1)}).to(torch::kFloat32);
        output = add_node.output(0);
        done_[next] = true;
      }
    }
    linear(n, x, w.t().to(torch::kFloat32), b, output);
  }

  /// Symmetric pads [b1, b2, ..., e1, e2, ...] -> per-axis padding; asymmetric pads are refused.
  std::vector<int64_t> symmetric_pads(int n, const std::vector<int64_t>& pads, size_t dims) const {
    if (pads.empty()) return std::vector<int64_t>(dims, 0);
    if (pads.size() != 2 * dims) fail(n, fmt::format("pads has {} values, expected {}", pads.size(), 2 * dims));
    std::vector<int64_t> p(dims);
    for (size_t d = 0; d < dims; ++d) {
      if (pads[d] != pads[d + dims] || pads[d] < 0)
        fail(n, fmt::format("pads [{}] are asymmetric or negative; sparq's layers pad both sides equally", fmt::join(pads, ", ")));
      p[d] = pads[d];
    }
    return p;
  }
  void check_auto_pad(int n) const {
    std::string auto_pad = string_attr(n, "auto_pad", "NOTSET");
    if (auto_pad != "NOTSET" && auto_pad != "VALID")
      fail(n, fmt::format("auto_pad '{}' is not supported (export with explicit pads)", auto_pad));
  }
  /// The output length of a conv/pool window over `in` (kernel k, stride s, padding p, dilation
  /// d), all checked first: the file's values, before any arithmetic on them.
  int64_t window_out(int n, int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) const {
    constexpr int64_t kLargest = int64_t{1} << 31;
    if (k < 1 || s < 1 || d < 1 || p < 0 || k > kLargest || s > kLargest || d > kLargest || p > kLargest)
      fail(n, fmt::format("window kernel {}, stride {}, padding {}, dilation {}: kernel, stride and dilation must be "
                          "at least 1 and padding at least 0",
                          k, s, p, d));
    int64_t out = (in + 2 * p - d * (k - 1) - 1) / s + 1;
    if (out < 1)
      fail(n, fmt::format("input length {} is shorter than the window (kernel {}, dilation {}, padding {})", in, k, d, p));
    return out;
  }

  void conv(int n) {
    allow_attrs(n, {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"});
    check_auto_pad(n);
    const auto& x = data(n, 0);
    torch::Tensor w = constant_input(n, 1).to(torch::kFloat32);
    size_t dims = static_cast<size_t>(w.dim()) - 2;
    if (dims != 1 && dims != 2) fail(n, fmt::format("{}-D convolutions are not supported (1-D and 2-D are)", dims));
    if (x.shape.size() != dims + 1)
      fail(n, fmt::format("input sample [{}] does not fit a {}-D convolution", fmt::join(x.shape, ", "), dims));
    int64_t groups = int_attr(n, "group", 1);
    std::vector<int64_t> kernel(w.sizes().begin() + 2, w.sizes().end());
    if (auto k = ints_attr(n, "kernel_shape"); k && *k != kernel)
      fail(n, fmt::format("kernel_shape [{}] differs from the weight's [{}]", fmt::join(*k, ", "), fmt::join(kernel, ", ")));
    auto strides = ints_attr(n, "strides").value_or(std::vector<int64_t>(dims, 1));
    auto dilations = ints_attr(n, "dilations").value_or(std::vector<int64_t>(dims, 1));
    auto pads = symmetric_pads(n, ints_attr(n, "pads").value_or(std::vector<int64_t>{}), dims);
    if (strides.size() != dims || dilations.size() != dims) fail(n, "strides/dilations do not have one value per axis");
    if (groups < 1 || x.shape[0] != w.size(1) * groups)
      fail(n, fmt::format("weight [{}] with group {} does not fit {} input channels", fmt::join(w.sizes(), ", "), groups,
                          x.shape[0]));
    std::vector<int64_t> shape{w.size(0)};
    for (size_t d = 0; d < dims; ++d) shape.push_back(window_out(n, x.shape[d + 1], kernel[d], strides[d], pads[d], dilations[d]));
    bool has_bias = has_input(n, 2);
    auto& v = add_node(n, "conv", fmt::format("Conv{}d", dims), {x.node},
                       {{"out_channels", w.size(0)}, {"kernel_size", kernel}, {"stride", strides}, {"padding", pads},
                        {"dilation", dilations}, {"groups", groups}, {"bias", has_bias}},
                       shape, graph_.node(n).output(0));
    param(v.node, "weight", w);
    if (has_bias) param(v.node, "bias", constant_input(n, 2).reshape({w.size(0)}));
  }

  void batch_norm(int n) {
    allow_attrs(n, {"epsilon", "momentum", "spatial", "training_mode"});
    if (int_attr(n, "training_mode", 0) != 0) fail(n, "training_mode=1 is not supported (export the model in eval mode)");
    if (graph_.node(n).output_size() > 1) fail(n, "the running statistics outputs are not supported (export in eval mode)");
    const auto& x = data(n, 0);
    if (x.shape.empty() || x.shape.size() > 3) fail(n, fmt::format("input sample [{}] does not fit a batch norm", fmt::join(x.shape, ", ")));
    int64_t c = x.shape[0];
    std::vector<torch::Tensor> p;
    for (int i = 1; i <= 4; ++i) {
      p.push_back(constant_input(n, i).to(torch::kFloat32).reshape({-1}));
      if (p.back().numel() != c) fail(n, fmt::format("input {} has {} values for {} channels", i, p.back().numel(), c));
    }
    // ONNX's momentum weighs the old statistics (torch writes 1 - its momentum).
    double momentum = 1.0 - float_attr(n, "momentum", 0.9);
    const char* op = x.shape.size() == 3 ? "BatchNorm2d" : "BatchNorm1d";
    auto& v = add_node(n, "bn", op, {x.node}, {{"eps", float_attr(n, "epsilon", 1e-5)}, {"momentum", momentum}}, x.shape,
                       graph_.node(n).output(0));
    param(v.node, "weight", p[0]);
    param(v.node, "bias", p[1]);
    param(v.node, "running_mean", p[2]);
    param(v.node, "running_var", p[3]);
  }

  void activation(int n) {
    allow_attrs(n, {});
    const auto& op = graph_.node(n).op_type();
    const auto& x = data(n, 0);
    std::string kind = op == "Relu" ? "relu" : op == "Tanh" ? "tanh" : "sigmoid";
    std::string ours = op == "Relu" ? "ReLU" : op;
    add_node(n, kind, ours, {x.node}, {}, x.shape, graph_.node(n).output(0));
  }
  void leaky_relu(int n) {
    allow_attrs(n, {"alpha"});
    const auto& x = data(n, 0);
    add_node(n, "leaky_relu", "LeakyReLU", {x.node}, {{"negative_slope", float_attr(n, "alpha", 0.01)}}, x.shape,
             graph_.node(n).output(0));
  }
  void gelu_op(int n) {
    allow_attrs(n, {"approximate"});
    if (string_attr(n, "approximate", "none") != "none") fail(n, "approximate='tanh' is not supported");
    const auto& x = data(n, 0);
    add_node(n, "gelu", "GELU", {x.node}, {}, x.shape, graph_.node(n).output(0));
  }
  void softmax(int n) {
    allow_attrs(n, {"axis"});
    const auto& x = data(n, 0);
    size_t rank = x.shape.size() + 1;
    int64_t axis = axis_of(n, int_attr(n, "axis", opset_ >= 13 ? -1 : 1), rank);
    if (axis == 0) fail(n, "a softmax over the batch axis is not supported");
    // Before opset 13 Softmax flattens the axes from `axis` on: the same only over the last axis.
    if (opset_ < 13 && axis != static_cast<int64_t>(rank) - 1)
      fail(n, fmt::format("axis {} before opset 13 normalises over several axes; only the last axis is supported", axis));
    add_node(n, "softmax", "Softmax", {x.node}, {{"dim", axis}}, x.shape, graph_.node(n).output(0));
  }
  void clip(int n) {
    const auto& x = data(n, 0);
    double lo = -INFINITY, hi = INFINITY;
    if (opset_ < 11) {
      allow_attrs(n, {"min", "max"});
      lo = float_attr(n, "min", lo), hi = float_attr(n, "max", hi);
    } else {
      allow_attrs(n, {});
      if (has_input(n, 1)) lo = scalar_of(constant_input(n, 1));
      if (has_input(n, 2)) hi = scalar_of(constant_input(n, 2));
    }
    if (std::isnan(lo) || std::isnan(hi) || lo > hi) fail(n, "min and max must be scalar constants with min <= max");
    if (lo == 0 && std::isinf(hi)) {
      add_node(n, "relu", "ReLU", {x.node}, {}, x.shape, graph_.node(n).output(0));
      return;
    }
    if (std::isinf(lo) || std::isinf(hi)) fail(n, "a one-sided Clip other than ReLU is not supported");
    add_node(n, "hardtanh", "Hardtanh", {x.node}, {{"min_val", lo}, {"max_val", hi}}, x.shape, graph_.node(n).output(0));
  }

  /// `extra_pads`: a Pad of zeros folded in from before an AveragePool.
  void pool(int n, std::vector<int64_t> extra_pads, const Value* input = nullptr) {
    bool max = graph_.node(n).op_type() == "MaxPool";
    if (max) allow_attrs(n, {"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order", "strides"});
    else allow_attrs(n, {"auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads", "strides"});
    check_auto_pad(n);
    if (graph_.node(n).output_size() > 1) fail(n, "the Indices output is not supported");
    const auto& x = input ? *input : data(n, 0);
    auto kernel = ints_attr(n, "kernel_shape").value_or(std::vector<int64_t>{});
    size_t dims = kernel.size();
    if (dims != 1 && dims != 2) fail(n, "only 1-D and 2-D pooling is supported");
    if (x.shape.size() != dims + 1) fail(n, fmt::format("input sample [{}] does not fit a {}-D pooling", fmt::join(x.shape, ", "), dims));
    if (int_attr(n, "ceil_mode", 0) != 0) fail(n, "ceil_mode=1 is not supported");
    if (auto d = ints_attr(n, "dilations"))
      for (auto v : *d)
        if (v != 1) fail(n, "dilated pooling is not supported");
    auto strides = ints_attr(n, "strides").value_or(std::vector<int64_t>(dims, 1));
    auto pads = symmetric_pads(n, ints_attr(n, "pads").value_or(std::vector<int64_t>{}), dims);
    bool padded = false;
    for (size_t d = 0; d < dims; ++d) {
      if (!extra_pads.empty()) pads[d] += extra_pads[d];
      padded = padded || pads[d] > 0;
    }
    // sparq's average pooling counts the padding (torch's default count_include_pad=True).
    if (!max && padded && extra_pads.empty() && int_attr(n, "count_include_pad", 0) == 0)
      fail(n, "average pooling with padding that is not counted (count_include_pad=0) is not supported");
    for (size_t d = 0; d < dims; ++d)
      if (2 * pads[d] > kernel[d]) fail(n, "padding larger than half the kernel is not supported");
    std::vector<int64_t> shape{x.shape[0]};
    for (size_t d = 0; d < dims; ++d) shape.push_back(window_out(n, x.shape[d + 1], kernel[d], strides[d], pads[d], 1));
    std::string op = fmt::format("{}Pool{}d", max ? "Max" : "Avg", dims);
    add_node(n, max ? "maxpool" : "avgpool", op, {x.node}, {{"kernel_size", kernel}, {"stride", strides}, {"padding", pads}},
             shape, graph_.node(n).output(0));
  }
  void global_pool(int n) {
    allow_attrs(n, {});
    const auto& x = data(n, 0);
    if (x.shape.size() != 2 && x.shape.size() != 3) fail(n, "only 1-D and 2-D global pooling is supported");
    std::vector<int64_t> kernel(x.shape.begin() + 1, x.shape.end());
    std::vector<int64_t> shape{x.shape[0]};
    shape.resize(x.shape.size(), 1);
    add_node(n, "avgpool", fmt::format("AvgPool{}d", kernel.size()), {x.node}, {{"kernel_size", kernel}}, shape,
             graph_.node(n).output(0));
  }
  void pad(int n) {
    allow_attrs(n, {"mode", "pads", "value"});
    if (string_attr(n, "mode", "constant") != "constant") fail(n, "only constant padding is supported");
    const auto& x = data(n, 0);
    std::vector<int64_t> pads;
    if (auto p = ints_attr(n, "pads")) pads = *p;
    else if (has_input(n, 1)) {
      auto t = constant_input(n, 1).to(torch::kInt64);
      pads.assign(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
    }
    double fill = has_input(n, 2) ? scalar_of(constant_input(n, 2)) : float_attr(n, "value", 0.0);
    if (has_input(n, 3)) fail(n, "the axes input is not supported");
    size_t rank = x.shape.size() + 1;
    if (pads.size() != 2 * rank) fail(n, fmt::format("pads has {} values for rank {}", pads.size(), rank));
    bool zero = std::all_of(pads.begin(), pads.end(), [](int64_t p) { return p == 0; });
    if (zero) return alias(n, x);
    // torch writes AvgPool2d(padding=p) at opset 11 as Pad + AveragePool: fold the pad back in.
    int next = sole_consumer(graph_.node(n).output(0));
    if (fill != 0 || next < 0 || graph_.node(next).op_type() != "AveragePool" || pads[0] || pads[1] || pads[rank] ||
        pads[rank + 1])
      fail(n, "a non-zero Pad is supported only before an AveragePool (zeros, spatial axes)");
    std::vector<int64_t> spatial;
    for (size_t d = 2; d < rank; ++d) {
      if (pads[d] != pads[d + rank]) fail(n, "asymmetric padding is not supported");
      spatial.push_back(pads[d]);
    }
    done_[next] = true;
    pool(next, spatial, &x);
  }

  /// The elements of a sample of `shape` (checked: a file's shapes may multiply past int64).
  int64_t elements(int n, const std::vector<int64_t>& shape) {
    auto count = checked_product(shape);
    if (!count) fail(n, fmt::format("shape [{}] has more elements than a 64-bit count holds", fmt::join(shape, ", ")));
    return *count;
  }
  int64_t grow(int n, int64_t count, int64_t d) {
    auto next = checked_multiply(count, d);
    if (!next) fail(n, "the shape has more elements than a 64-bit count holds");
    return *next;
  }
  void flatten(int n) {
    allow_attrs(n, {"axis"});
    const auto& x = data(n, 0);
    size_t rank = x.shape.size() + 1;
    int64_t axis = int_attr(n, "axis", 1);
    if (axis < 0) axis += static_cast<int64_t>(rank);
    if (axis != 1) fail(n, fmt::format("axis {} is not supported (only 1: keep the batch axis)", axis));
    int64_t size = elements(n, x.shape);
    if (x.shape.size() == 1) return alias(n, x);
    add_node(n, "flatten", "flatten", {x.node}, {}, {size}, graph_.node(n).output(0));
  }
  void reshape(int n) {
    allow_attrs(n, {"allowzero"});
    const auto& x = data(n, 0);
    const auto& s = value(n, 1);
    std::vector<int64_t> target;
    if (s.kind == Value::Shape) target = s.shape;
    else if (s.kind == Value::Constant) {
      auto t = s.constant.to(torch::kInt64).reshape({-1});
      target.assign(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
    } else fail(n, "the shape must be a constant or computed from shapes (dynamic shapes where static are needed)");
    if (target.empty()) fail(n, "a reshape to a scalar is not supported");
    int64_t size = elements(n, x.shape);
    // The first axis must stay the batch axis.
    bool batch_first = target[0] == kBatch || target[0] == 0 || (static_batch_ > 0 && target[0] == static_batch_);
    std::vector<int64_t> rest(target.begin() + 1, target.end());
    if (!batch_first && target[0] == -1) {
      int64_t known = 1;
      for (auto d : rest) known = d > 0 ? grow(n, known, d) : 0;
      batch_first = known == size;
    }
    if (!batch_first)
      fail(n, fmt::format("reshape to [{}] does not keep the batch axis first", fmt::join(target, ", ")));
    int64_t known = 1, infer = -1;
    for (size_t d = 0; d < rest.size(); ++d) {
      if (rest[d] == kBatch) fail(n, "the batch size may only be the first axis");
      if (rest[d] == 0) {
        if (d + 1 >= x.shape.size() + 1) fail(n, "a 0 in the shape copies an axis the input does not have");
        rest[d] = x.shape[d];
      }
      if (rest[d] == -1) {
        if (infer >= 0) fail(n, "the shape has several -1");
        infer = static_cast<int64_t>(d);
      } else if (rest[d] < 0) fail(n, fmt::format("shape value {} is invalid", rest[d]));
      else known = grow(n, known, rest[d]);
    }
    if (infer >= 0) {
      if (known == 0 || size % known) fail(n, fmt::format("cannot reshape [{}] to [{}]", fmt::join(x.shape, ", "), fmt::join(rest, ", ")));
      rest[infer] = size / known;
      known = size;
    }
    if (known != size) fail(n, fmt::format("cannot reshape [{}] to [{}]", fmt::join(x.shape, ", "), fmt::join(rest, ", ")));
    if (rest == x.shape) return alias(n, x);
    if (rest.size() == 1) add_node(n, "flatten", "flatten", {x.node}, {}, rest, graph_.node(n).output(0));
    else add_node(n, "reshape", "reshape", {x.node}, {{"shape", rest}}, rest, graph_.node(n).output(0));
  }
  void add(int n) {
    allow_attrs(n, {});
    const auto& a = value(n, 0);
    const auto& b = value(n, 1);
    if (a.kind != Value::Data || b.kind != Value::Data)
      fail(n, "adding a constant is supported only as the bias of a MatMul (a Linear)");
    if (a.shape != b.shape)
      fail(n, fmt::format("input shapes differ ([{}] and [{}]); broadcasting adds are not supported",
                          fmt::join(a.shape, ", "), fmt::join(b.shape, ", ")));
    add_node(n, "add", "add", {a.node, b.node}, {}, a.shape, graph_.node(n).output(0));
  }
  void concat(int n) {
    allow_attrs(n, {"axis"});
    const auto& node = graph_.node(n);
    if (!attr(n, "axis")) fail(n, "axis is required");
    bool shapes = true;
    for (int i = 0; i < node.input_size(); ++i) shapes = shapes && value(n, i).kind != Value::Data;
    if (shapes) return concat_shapes(n);
    const auto& first = data(n, 0);
    size_t rank = first.shape.size() + 1;
    int64_t axis = axis_of(n, int_attr(n, "axis", 1), rank);
    if (axis == 0) fail(n, "concatenation along the batch axis is not supported");
    std::vector<std::string> inputs;
    auto shape = first.shape;
    shape[axis - 1] = 0;
    for (int i = 0; i < node.input_size(); ++i) {
      const auto& v = data(n, i);
      auto s = v.shape;
      if (s.size() != shape.size()) fail(n, "inputs of different rank");
      for (size_t d = 0; d < s.size(); ++d)
        if (static_cast<int64_t>(d) != axis - 1 && s[d] != shape[d]) fail(n, "input shapes differ off the concatenation axis");
      shape[axis - 1] += s[axis - 1];
      inputs.push_back(v.node);
    }
    if (inputs.size() == 1) return alias(n, first);
    add_node(n, "concat", "concat", inputs, {{"dim", axis}}, shape, node.output(0));
  }
  void pass_through(int n) {
    const auto& node = graph_.node(n);
    if (node.op_type() == "Dropout" && node.output_size() > 1 && !node.output(1).empty())
      fail(n, "the mask output is not supported (export the model in eval mode)");
    alias(n, value(n, 0));
  }
  void constant_node(int n) {
    auto a = attr(n, "value");
    if (!a || !a->has_t()) fail(n, "only 'value' tensor constants are supported");
    values_[graph_.node(n).output(0)] = constant(tensor_of(a->t(), file_));
  }

  // ---- shape arithmetic of a dynamic batch ----
  std::vector<int64_t> shape_values(int n, int i) const {
    const auto& v = value(n, i);
    if (v.kind == Value::Shape) return v.shape;
    if (v.kind == Value::Constant) {
      auto t = v.constant.to(torch::kInt64).reshape({-1});
      return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
    }
    fail(n, "expects a shape or a constant");
  }
  void set_shape(int n, std::vector<int64_t> s) {
    Value v;
    v.kind = Value::Shape;
    v.shape = std::move(s);
    values_[graph_.node(n).output(0)] = v;
  }
  void concat_shapes(int n) {
    std::vector<int64_t> out;
    for (int i = 0; i < graph_.node(n).input_size(); ++i) {
      auto s = shape_values(n, i);
      out.insert(out.end(), s.begin(), s.end());
    }
    set_shape(n, out);
  }
  void shape_op(int n) {
    const auto& op = graph_.node(n).op_type();
    if (op == "Shape") {
      const auto& x = data(n, 0);
      std::vector<int64_t> s{static_batch_ > 0 ? static_batch_ : kBatch};
      s.insert(s.end(), x.shape.begin(), x.shape.end());
      int64_t r = static_cast<int64_t>(s.size());
      int64_t start = int_attr(n, "start", 0), end = int_attr(n, "end", r);
      start = std::clamp(start < 0 ? start + r : start, int64_t(0), r);
      end = std::clamp(end < 0 ? end + r : end, int64_t(0), r);
      return set_shape(n, std::vector<int64_t>(s.begin() + start, s.begin() + std::max(start, end)));
    }
    if (value(n, 0).kind == Value::Data)
      fail(n, "is supported only on shape values (the dynamic-batch pattern of view/reshape)");
    auto s = shape_values(n, 0);
    if (op == "Cast") return set_shape(n, s);
    if (op == "Gather") {
      if (int_attr(n, "axis", 0) != 0) fail(n, "only axis 0 is supported on shape values");
      std::vector<int64_t> out;
      for (auto i : shape_values(n, 1)) {
        int64_t r = static_cast<int64_t>(s.size());
        if (i < -r || i >= r) fail(n, fmt::format("index {} is out of range", i));
        out.push_back(s[i < 0 ? i + r : i]);
      }
      return set_shape(n, out);
    }
    // Unsqueeze/Squeeze of a scalar or 1-D shape value: the values stay the same.
    return set_shape(n, s);
  }

  /// x / sqrt(2) -> Erf -> + 1 -> * x -> * 0.5 (either order of the products): GELU.
  bool gelu_pattern(int n) {
    const auto& node = graph_.node(n);
    auto it = values_.find(node.input(0));
    auto d = values_.find(node.input(1));
    if (it == values_.end() || it->second.kind != Value::Data || d == values_.end() || d->second.kind != Value::Constant)
      return false;
    if (std::abs(scalar_of(d->second.constant) - std::sqrt(2.0)) > 1e-4) return false;
    const std::string& x = node.input(0);
    auto is_const = [&](const std::string& name, double want) {
      auto c = values_.find(name);
      return c != values_.end() && c->second.kind == Value::Constant && std::abs(scalar_of(c->second.constant) - want) < 1e-6;
    };
    auto other = [](const onnx::NodeProto& p, const std::string& in) { return p.input(0) == in ? p.input(1) : p.input(0); };
    int erf = sole_consumer(node.output(0));
    if (erf < 0 || graph_.node(erf).op_type() != "Erf") return false;
    int plus = sole_consumer(graph_.node(erf).output(0));
    if (plus < 0 || graph_.node(plus).op_type() != "Add" || !is_const(other(graph_.node(plus), graph_.node(erf).output(0)), 1.0))
      return false;
    int m1 = sole_consumer(graph_.node(plus).output(0));
    if (m1 < 0 || graph_.node(m1).op_type() != "Mul") return false;
    std::string a = other(graph_.node(m1), graph_.node(plus).output(0));
    int m2 = sole_consumer(graph_.node(m1).output(0));
    if (m2 < 0 || graph_.node(m2).op_type() != "Mul") return false;
    std::string b = other(graph_.node(m2), graph_.node(m1).output(0));
    if (!((a == x && is_const(b, 0.5)) || (b == x && is_const(a, 0.5)))) return false;
    for (int k : {erf, plus, m1, m2}) done_[k] = true;
    add_node(n, "gelu", "GELU", {it->second.node}, {}, it->second.shape, graph_.node(m2).output(0));
    return true;
  }

  const onnx::ModelProto& model_;
  const onnx::GraphProto& graph_;
  std::string file_;
  int64_t opset_ = 0;
  int64_t static_batch_ = 0;  ///< the input's batch size when the file fixes it
  std::map<std::string, Value> values_;
  std::map<std::string, std::vector<int>> consumers_;
  std::map<int, std::string> preferred_;
  std::map<std::string, int> scope_count_;
  std::set<std::string> used_;
  std::vector<bool> done_;
  OnnxImport result_;
};

}  // namespace

OnnxImport import_onnx(const std::string& path) {
  namespace fs = std::filesystem;
  if (!fs::is_regular_file(path)) throw ModelError(fmt::format("{}: not an ONNX file (it does not exist or is not a file)", path));
  std::ifstream in(path, std::ios::binary);
  onnx::ModelProto model;
  if (!in || !model.ParseFromIstream(&in))
    throw ModelError(fmt::format("{}: not a valid ONNX file (the protobuf does not parse: truncated or not ONNX)", path));
  if (!model.has_graph() || model.graph().node_size() == 0)
    throw ModelError(fmt::format("{}: not a valid ONNX file (it holds no graph)", path));
  int64_t opset = 0;
  for (const auto& op : model.opset_import())
    if (op.domain().empty() || op.domain() == "ai.onnx") opset = op.version();
  // Debian's onnx checker knows opsets up to 17; later files are read without it.
  if (opset <= 17) {
    try {
      onnx::checker::check_model(model);
    } catch (const std::exception& e) {
      std::string msg = e.what();
      throw ModelError(fmt::format("{}: not a valid ONNX model: {}", path, msg.substr(0, msg.find('\n'))));
    }
  }
  return Importer(model, path).run();
}

void load_state(Graph& graph, const std::map<std::string, torch::Tensor>& state, const std::string& what) {
  torch::NoGradGuard no_grad;
  auto params = graph->named_parameters();
  auto buffers = graph->named_buffers();
  for (const auto& [name, value] : state) {
    torch::Tensor* target = params.find(name);
    if (!target) target = buffers.find(name);
    if (!target) throw ModelError(fmt::format("{}: the model has no parameter '{}'", what, name));
    if (target->sizes() != value.sizes())
      throw ModelError(fmt::format("{}: '{}' has shape [{}], the model's is [{}]", what, name, fmt::join(value.sizes(), ", "),
                                   fmt::join(target->sizes(), ", ")));
    target->copy_(value);
  }
}

}  // namespace sparq::models
