// The op registry: every op a Graph node can be (Linear, Conv2d, ReLU, add, ...) registers one
// OpInfo from its own file under src/ops/: its attributes, how to build the float module, its PQ
// replacement and the targets a Plan may set on it. Graph building, compress() and resolution
// read the registry; adding an op is one file there.
#pragma once

#include <torch/nn/modules/container/any.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "sparq/layers/targets.h"

namespace sparq::models {

/// A node attribute: integer, number, flag, text or integer list (kernel sizes, shapes).
using Attr = std::variant<int64_t, double, bool, std::string, std::vector<int64_t>>;

struct NodeSpec;
struct Node;

/// The kinds of attribute an op accepts.
enum class AttrType { Int, Double, Bool, IntOrList, IntList };
struct AttrInfo {
  std::string name;
  AttrType type;
  bool required = false;
};

struct OpInfo {
  std::string name;                  ///< canonical PyTorch name
  std::vector<std::string> aliases;  ///< PQuantML/Keras spellings ("Dense", "Conv2D", "relu")
  std::vector<AttrInfo> attrs;
  int min_inputs = 1, max_inputs = 1;
  /// Values leave at the fixed-point grid they came in on (shape ops, max pooling): such a node
  /// in float does not leave the hardware's number format.
  bool keeps_grid = false;
  /// A weight layer that pruning methods act on (Linear, Conv1d, Conv2d).
  bool prunable = false;
  /// Float module of a node with one input of sample shape `in` (throws ModelError). Empty for
  /// built-in tensor ops, which `apply` computes instead.
  std::function<torch::nn::AnyModule(const NodeSpec& spec, const std::vector<int64_t>& in)> build;
  std::function<torch::Tensor(const Node& node, const std::vector<torch::Tensor>& in)> apply;
  /// Built-ins: checks the input sample shapes (throws ModelError).
  std::function<void(const NodeSpec& spec, const std::vector<std::vector<int64_t>>& in)> check_inputs;
  /// What a Plan may set on this op: "weight", "bias", "_input_0", "_output_0".
  std::vector<std::string> targets;
  /// The PQ layer that replaces a built node, and its class name; empty when the op has none.
  std::function<torch::nn::AnyModule(const Node& node, const layers::PQSettings& settings)> pq;
  std::string pq_class;
  bool builtin() const { return !build; }
};

/// Registers an op (called once by the file that defines it); returns true.
bool register_op(OpInfo info);
/// The op of `name` (canonical name or alias such as "Dense"), or nullptr.
const OpInfo* find_op(const std::string& name);
/// Canonical names of every op, sorted, for error messages.
std::vector<std::string> op_names();

/// Typed reads of a node's attributes, with ModelError naming the node and key.
class AttrReader {
 public:
  explicit AttrReader(const NodeSpec& spec) : spec_(spec) {}
  bool has(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_double(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  /// An int or a list of `n` ints (one per spatial dimension).
  std::vector<int64_t> get_dims(const std::string& key, size_t n, int64_t fallback) const;
  /// Throws unless the sample shape has `rank` axes (`layout` names them in the message).
  void need_rank(const std::vector<int64_t>& in, size_t rank, const char* layout) const;
  /// The attribute `key` when given (it must equal `actual`, what the input shape implies), else actual.
  int64_t inferred(const std::string& key, int64_t actual, const std::vector<int64_t>& in) const;
  /// A layer size (`out_features`, `out_channels`): required, 1 or more.
  int64_t get_size(const std::string& key) const;
  /// Throws (naming the node) when a parameter of `shape` overflows or needs more float32 memory
  /// than the machine has: checked before the module is built.
  void check_parameter(const std::string& name, const std::vector<int64_t>& shape) const;
  [[noreturn]] void fail(const std::string& key, const std::string& msg) const;
  /// Throws ResourceError (naming the node) when the probe batch of an output of sample shape
  /// `out` does not fit in memory (a huge padding grows it without bound); nothing for `out` empty.
  void check_output(const std::vector<int64_t>& out, const std::vector<int64_t>& in) const;
  /// "FILE:LINE: node 'NAME' (OP)": where a message about this node starts.
  std::string node_text() const;

 private:
  const NodeSpec& spec_;
};

/// Kernel sizes, strides and dilations >= 1, paddings >= 0 (throws ModelError naming the key);
/// returns the output sample shape [out_channels, lengths...] of the window over `in`
/// ([channels, spatial...]), empty when the input is shorter than the window.
std::vector<int64_t> check_window(const AttrReader& a, const std::vector<int64_t>& in, int64_t out_channels,
                                  const std::vector<int64_t>& kernel, const std::vector<int64_t>& stride,
                                  const std::vector<int64_t>& padding, const std::vector<int64_t>& dilation);

/// A node's attribute read back after building (as compress() reads kernel sizes and slopes).
int64_t int_attr(const Node& node, const std::string& key, int64_t fallback);
double number_attr(const Node& node, const std::string& key, double fallback);
std::vector<int64_t> dims_attr(const Node& node, const std::string& key, size_t n, int64_t fallback);

std::string shape_str(const std::vector<int64_t>& s);

}  // namespace sparq::models
