// Graph: a torch::nn::Module holding named nodes in topological order and their input edges.
// Every model (zoo, model YAML, C++) is a Graph, so layer replacement, export and per-layer
// reports work on any of them: forward() dispatches through the registered nodes, so a replaced
// node is really used.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "sparq/models/op.h"

namespace sparq::models {

/// One node as described by a model YAML file or the zoo.
struct NodeSpec {
  std::string name;                 ///< fully-qualified PyTorch-style name: "fc1", "layer1.0.conv1"
  std::string op;                   ///< "Linear", "Conv2d", "ReLU", "add", "flatten", ...
  std::vector<std::string> inputs;  ///< empty: the previous node (the graph input for the first)
  std::map<std::string, Attr> attrs;
  std::string where;                ///< "file:line:column" of the description, for errors
};

struct GraphSpec {
  std::string name;
  std::vector<int64_t> input_shape;  ///< one sample, without the batch dimension
  std::vector<NodeSpec> nodes;
  std::string output;                ///< empty: the last node
};

/// A node of a built graph.
struct Node {
  std::string name;
  std::string op;                   ///< the module's class: "Linear", "PQDense", ... ("add" for built-ins)
  std::string source_op;            ///< the op the model described ("Linear" for a PQDense too)
  const OpInfo* info = nullptr;     ///< the registered op of source_op
  std::vector<int> inputs;          ///< node indices; -1 is the graph input
  torch::nn::AnyModule module;      ///< empty for built-in ops
  std::map<std::string, Attr> attrs;
  std::vector<int64_t> out_shape;   ///< one sample, without the batch dimension
  bool skipped = false;             ///< forward passes its first input through (SparseML's layer pruning)
};

class GraphImpl : public torch::nn::Module {
 public:
  /// Builds the nodes of `spec`, inferring what the input shapes determine (in_features,
  /// in_channels, num_features). Throws ModelError naming the node on any shape or edge error.
  explicit GraphImpl(const GraphSpec& spec);

  torch::Tensor forward(torch::Tensor x);

  const std::string& name() const { return name_; }
  const std::vector<int64_t>& input_shape() const { return input_shape_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  /// Index of node `name`; throws ModelError if there is none.
  int index_of(const std::string& name) const;
  const Node& node(const std::string& name) const { return nodes_[index_of(name)]; }
  /// Index of the node whose value forward() returns.
  int output_index() const { return output_; }
  /// Puts `module` in place of node `name`, keeping its edges and source op (used by compression);
  /// `op` is the new module's class name.
  void replace(const std::string& name, torch::nn::AnyModule module, const std::string& op);
  /// Makes node `name` an identity of its first input (true) or itself again (false); its input
  /// and output shapes must be equal.
  void set_skipped(const std::string& name, bool skipped);
  /// Keeps the outputs of these nodes from every forward (a distiller reads them); {} stops it.
  void record_outputs(const std::vector<int>& nodes);
  /// Whether record_outputs keeps any node's output.
  bool recording() const { return !record_.empty(); }
  /// The output of node `index` in the latest forward (undefined when it is not recorded).
  const torch::Tensor& recorded(int index) const { return recorded_.at(index); }

 private:
  void register_node(Node& node);
  std::string name_;
  std::vector<int64_t> input_shape_;
  std::vector<Node> nodes_;
  int output_ = -1;
  std::vector<int> last_use_;  ///< per node: the last node that reads its value
  std::vector<char> record_;   ///< per node: keep its output (empty: none)
  std::vector<torch::Tensor> recorded_;
};
TORCH_MODULE(Graph);

/// Number of parameters (elements) of the module of one node (0 for built-in ops).
int64_t parameter_count(const Node& node);

/// Copies parameters and buffers into `graph` from a model.pt that sparq wrote (a file, or a run
/// folder holding one): every float parameter and buffer of the graph must be there with its
/// shape; extra entries (quantizers, masks of a compressed run) are ignored, or with `exact` an
/// error. `what` names the setting in errors ("model.weights"). Throws ConfigError.
void load_weights(Graph& graph, const std::string& path, const std::string& what = "model.weights", bool exact = false);

/// The model YAML text of a spec (parse_model_yaml of it builds the same Graph): what a run folder
/// keeps as model.yaml, so its model.pt can be rebuilt without the job.
std::string model_yaml_text(const GraphSpec& spec);

// ---- model YAML ----

/// Parses a model YAML file (see docs/model-yaml.md). `input_shape` is used when the file gives
/// none. Errors: ConfigError with file:line:column.
GraphSpec load_model_yaml(const std::string& path, const std::vector<int64_t>& input_shape = {});
GraphSpec parse_model_yaml(const std::string& text, const std::string& name,
                           const std::vector<int64_t>& input_shape = {});

// ---- zoo ----

/// Options of the zoo models; each model reads the fields that apply to it.
struct ZooOptions {
  std::vector<int64_t> widths;  ///< mlp: hidden widths; lenet: conv channels; resnet: stage widths
  int64_t hidden = 64;          ///< lenet: width of the dense hidden layer
  int64_t blocks = 1;           ///< resnet: basic blocks per stage
  std::string activation = "ReLU";
};
/// Names of the zoo models.
std::vector<std::string> zoo_names();
/// The zoo model `name` for samples of `input_shape` and `num_classes` outputs.
GraphSpec zoo_spec(const std::string& name, const std::vector<int64_t>& input_shape,
                   int64_t num_classes, const ZooOptions& options = {});

}  // namespace sparq::models
