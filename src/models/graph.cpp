#include "sparq/models/graph.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "sparq/error.h"
#include "sparq/limits.h"

namespace sparq::models {

namespace {

std::map<std::string, OpInfo>& registry() {
  static std::map<std::string, OpInfo> ops;
  return ops;
}

std::map<std::string, std::string>& alias_table() {
  static std::map<std::string, std::string> aliases;
  return aliases;
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

const Attr* find_attr(const std::map<std::string, Attr>& attrs, const std::string& key) {
  auto it = attrs.find(key);
  return it == attrs.end() ? nullptr : &it->second;
}

}  // namespace

std::string shape_str(const std::vector<int64_t>& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

bool register_op(OpInfo info) {
  for (const auto& alias : info.aliases) alias_table()[alias] = info.name;
  std::string name = info.name;
  registry()[name] = std::move(info);
  return true;
}

const OpInfo* find_op(const std::string& name) {
  auto alias = alias_table().find(name);
  auto it = registry().find(alias == alias_table().end() ? name : alias->second);
  return it == registry().end() ? nullptr : &it->second;
}

std::vector<std::string> op_names() {
  std::vector<std::string> names;
  for (const auto& [name, info] : registry()) names.push_back(name);
  return names;
}

// ---- AttrReader ----

namespace {
/// Float32 weight, its gradient and two optimizer states (Adam's moments).
constexpr int64_t kTrainingBytesPerParameter = 4 * sizeof(float);
}  // namespace

bool AttrReader::has(const std::string& key) const { return spec_.attrs.count(key) > 0; }

int64_t AttrReader::get_int(const std::string& key, int64_t fallback) const {
  const Attr* a = find_attr(spec_.attrs, key);
  if (!a) return fallback;
  if (auto v = std::get_if<int64_t>(a)) return *v;
  fail(key, "expected an integer");
}

double AttrReader::get_double(const std::string& key, double fallback) const {
  const Attr* a = find_attr(spec_.attrs, key);
  if (!a) return fallback;
  if (auto v = std::get_if<double>(a)) return *v;
  if (auto v = std::get_if<int64_t>(a)) return static_cast<double>(*v);
  fail(key, "expected a number");
}

bool AttrReader::get_bool(const std::string& key, bool fallback) const {
  const Attr* a = find_attr(spec_.attrs, key);
  if (!a) return fallback;
  if (auto v = std::get_if<bool>(a)) return *v;
  fail(key, "expected true or false");
}

std::vector<int64_t> AttrReader::get_dims(const std::string& key, size_t n, int64_t fallback) const {
  const Attr* a = find_attr(spec_.attrs, key);
  if (!a) return std::vector<int64_t>(n, fallback);
  if (auto v = std::get_if<int64_t>(a)) return std::vector<int64_t>(n, *v);
  if (auto v = std::get_if<std::vector<int64_t>>(a)) {
    if (v->size() == n) return *v;
    fail(key, fmt::format("expected {} values, got {}", n, v->size()));
  }
  fail(key, "expected an integer or a list of integers");
}

void AttrReader::need_rank(const std::vector<int64_t>& in, size_t rank, const char* layout) const {
  if (in.size() != rank)
    throw ModelError(fmt::format("{}node '{}' ({}): expects input samples shaped {}, got {}",
                                 spec_.where.empty() ? "" : spec_.where + ": ", spec_.name, spec_.op, layout,
                                 shape_str(in)));
}

int64_t AttrReader::inferred(const std::string& key, int64_t actual, const std::vector<int64_t>& in) const {
  int64_t v = get_int(key, actual);
  if (v != actual) fail(key, fmt::format("is {} but the input shape {} gives {}", v, shape_str(in), actual));
  return v;
}

int64_t AttrReader::get_size(const std::string& key) const {
  int64_t v = get_int(key, 0);
  if (v < 1) fail(key, fmt::format("{} must be >= 1", v));
  return v;
}

void AttrReader::check_parameter(const std::string& name, const std::vector<int64_t>& shape) const {
  check_memory(tensor_bytes(shape, kTrainingBytesPerParameter),
               fmt::format("{}: training its {} of shape {} (weight, gradient, two optimizer states)", node_text(), name,
                           shape_str(shape)));
}

void AttrReader::check_output(const std::vector<int64_t>& out, const std::vector<int64_t>& in) const {
  if (out.empty()) return;
  std::vector<int64_t> probe = out;
  probe.insert(probe.begin(), 2);  // the shape probe's batch of two
  check_memory(tensor_bytes(probe, sizeof(float)),
               fmt::format("{}: its output {} for input {}", node_text(), shape_str(out), shape_str(in)));
}

std::string AttrReader::node_text() const {
  return fmt::format("{}node '{}' ({})", spec_.where.empty() ? "" : spec_.where + ": ", spec_.name, spec_.op);
}

void AttrReader::fail(const std::string& key, const std::string& msg) const {
  throw ModelError(fmt::format("{}: {}: {}", node_text(), key, msg));
}

std::vector<int64_t> check_window(const AttrReader& a, const std::vector<int64_t>& in, int64_t out_channels,
                                  const std::vector<int64_t>& kernel, const std::vector<int64_t>& stride,
                                  const std::vector<int64_t>& padding, const std::vector<int64_t>& dilation) {
  auto at_least = [&](const char* key, const std::vector<int64_t>& v, int64_t min) {
    for (auto x : v)
      if (x < min) a.fail(key, fmt::format("{} must be >= {}", x, min));
  };
  at_least("kernel_size", kernel, 1), at_least("stride", stride, 1), at_least("dilation", dilation, 1);
  at_least("padding", padding, 0);
  std::vector<int64_t> out = {out_channels};
  for (size_t i = 0; i < kernel.size() && i + 1 < in.size(); ++i) {
    auto padded = checked_multiply(padding[i], 2), span = checked_multiply(dilation[i], kernel[i] - 1);
    if (!padded || *padded > INT64_MAX - in[i + 1]) a.fail("padding", fmt::format("{} is too large", padding[i]));
    if (!span) a.fail("dilation", fmt::format("{} times kernel_size {} overflows", dilation[i], kernel[i]));
    int64_t length = in[i + 1] + *padded;
    if (length <= *span) return {};  // too short for the window: LibTorch's own message says so
    out.push_back((length - *span - 1) / stride[i] + 1);
  }
  return out;
}

int64_t int_attr(const Node& node, const std::string& key, int64_t fallback) {
  const Attr* a = find_attr(node.attrs, key);
  if (auto v = a ? std::get_if<int64_t>(a) : nullptr) return *v;
  return fallback;
}

double number_attr(const Node& node, const std::string& key, double fallback) {
  const Attr* a = find_attr(node.attrs, key);
  if (!a) return fallback;
  if (auto v = std::get_if<double>(a)) return *v;
  if (auto v = std::get_if<int64_t>(a)) return static_cast<double>(*v);
  return fallback;
}

std::vector<int64_t> dims_attr(const Node& node, const std::string& key, size_t n, int64_t fallback) {
  const Attr* a = find_attr(node.attrs, key);
  if (!a) return std::vector<int64_t>(n, fallback);
  if (auto v = std::get_if<int64_t>(a)) return std::vector<int64_t>(n, *v);
  return std::get<std::vector<int64_t>>(*a);
}

GraphImpl::GraphImpl(const GraphSpec& spec) : name_(spec.name), input_shape_(spec.input_shape) {
  if (spec.nodes.empty()) throw ModelError(fmt::format("model '{}' has no layers", spec.name));
  if (input_shape_.empty())
    throw ModelError(fmt::format("model '{}': the input shape is unknown", spec.name));
  for (auto d : input_shape_)
    if (d < 1) throw ModelError(fmt::format("model '{}': input shape {} has a dimension below 1", spec.name, shape_str(input_shape_)));
  check_memory(tensor_bytes(input_shape_, 2 * sizeof(float)),
               fmt::format("model '{}': a probe batch of input shape {}", spec.name, shape_str(input_shape_)));
  torch::NoGradGuard no_grad;
  // Shapes are inferred by running each node once on a batch of two zero samples.
  std::vector<torch::Tensor> probe;
  auto batch_shape = input_shape_;
  batch_shape.insert(batch_shape.begin(), 2);
  torch::Tensor input_probe = torch::zeros(batch_shape);
  std::map<std::string, int> index;
  int64_t parameters = 0;

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
    node.op = node.source_op = info->name;
    node.info = info;
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
    if (info->check_inputs) info->check_inputs(ns, in_shapes);
    if (!info->builtin()) {
      node.module = info->build(ns, in_shapes[0]);
      for (const auto& p : node.module.ptr()->parameters()) parameters += p.numel();
      check_memory(checked_multiply(parameters, kTrainingBytesPerParameter),
                   fmt::format("{}model '{}': training its {} parameters up to node '{}' (weight, gradient, two optimizer states)",
                               at, spec.name, parameters, ns.name));
    }
    torch::Tensor out;
    try {
      if (node.module.is_empty()) {
        out = info->apply(node, in_values);
      } else {
        node.module.ptr()->eval();
        out = node.module.forward(in_values[0]);
        node.module.ptr()->train();
      }
    } catch (const c10::Error& e) {
      std::string what = first_line(e.what_without_backtrace());
      if (what.find("can't allocate memory") != std::string::npos || what.find("overflow") != std::string::npos)
        throw ResourceError(fmt::format("{}node '{}' ({}): its output for input {} needs more memory than this machine has",
                                        at, ns.name, node.op, shape_str(in_shapes[0])));
      throw ModelError(fmt::format("{}node '{}' ({}): input {} does not fit: {}", at, ns.name, node.op,
                                   shape_str(in_shapes[0]), what));
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
    values[n] = node.skipped ? in[0] : node.module.is_empty() ? node.info->apply(node, in) : node.module.forward(in[0]);
    if (!record_.empty() && record_[n]) recorded_[n] = values[n];
    // Free intermediate values as soon as their last reader has run.
    for (int i : node.inputs)
      if (i >= 0 && last_use_[i] == static_cast<int>(n) && i != output_) values[i] = torch::Tensor();
  }
  return values[output_];
}

void GraphImpl::set_skipped(const std::string& name, bool skipped) {
  Node& node = nodes_[index_of(name)];
  auto in = node.inputs.empty() || node.inputs[0] < 0 ? input_shape_ : nodes_[node.inputs[0]].out_shape;
  if (skipped && in != node.out_shape)
    throw ModelError(fmt::format("node '{}' cannot be skipped: its input and output shapes differ", name));
  node.skipped = skipped;
}

void GraphImpl::record_outputs(const std::vector<int>& nodes) {
  record_.assign(nodes.empty() ? 0 : nodes_.size(), 0);
  recorded_.assign(nodes_.size(), torch::Tensor());
  for (int n : nodes) record_.at(n) = 1;
}

int64_t parameter_count(const Node& node) {
  if (node.module.is_empty()) return 0;
  int64_t count = 0;
  for (const auto& p : node.module.ptr()->parameters()) count += p.numel();
  return count;
}

}  // namespace sparq::models
