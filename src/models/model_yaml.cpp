// Model YAML: a Graph described as a list of layers (see docs/model-yaml.md).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "sparq/yaml/reader.h"
#include "sparq/error.h"
#include "sparq/models/graph.h"

namespace sparq::models {

namespace {

GraphSpec parse(const yaml::YamlDoc& doc, const std::vector<int64_t>& input_shape) {
  using yaml::MapReader;
  MapReader top(doc.file, doc.root, "model", {"name", "input_shape", "layers", "output"});
  GraphSpec g;
  g.name = top.get_string("name", "model");
  g.input_shape = top.get_int_list("input_shape", input_shape);
  for (auto d : g.input_shape)
    if (d <= 0) top.fail("input_shape", fmt::format("dimension {} must be positive", d));
  g.output = top.get_string("output", "");
  if (!top.has("layers")) top.fail("layers", "is required: a list of layers");
  YAML::Node layers = top.node("layers");
  if (!layers.IsSequence() || layers.size() == 0)
    top.fail("layers", "expected a non-empty list of layers");
  for (size_t i = 0; i < layers.size(); ++i) {
    const YAML::Node& item = layers[i];
    std::string what = fmt::format("layers[{}]", i);
    if (!item.IsMap() || !item["op"])
      throw ConfigError(fmt::format("{}: {}: expected a mapping with an 'op' key", yaml::where(doc.file, item), what));
    std::string op_name = yaml::as_string(doc.file, item["op"], what + ".op");
    const OpInfo* op = find_op(op_name);
    if (!op)
      throw ConfigError(fmt::format("{}: {}.op: unknown op '{}', did you mean '{}'? (known ops: {})",
                                    yaml::where(doc.file, item["op"]), what, op_name,
                                    yaml::nearest(op_name, op_names()), fmt::join(op_names(), ", ")));
    std::vector<std::string> keys = {"name", "op", "inputs"};
    for (const auto& a : op->attrs) keys.push_back(a.name);
    MapReader layer(doc.file, item, what + " (" + op->name + ")", keys);
    NodeSpec n;
    n.name = layer.get_string("name", std::to_string(i));
    n.op = op->name;
    n.where = yaml::where(doc.file, item);
    if (layer.has("inputs")) {
      YAML::Node inputs = layer.node("inputs");
      if (inputs.IsScalar()) n.inputs.push_back(inputs.Scalar());
      else if (inputs.IsSequence())
        for (const auto& in : inputs) n.inputs.push_back(yaml::as_string(doc.file, in, what + ".inputs"));
      else layer.fail("inputs", "expected a node name or a list of node names");
    }
    for (const auto& a : op->attrs) {
      if (!layer.has(a.name)) {
        if (a.required) layer.fail(a.name, "is required");
        continue;
      }
      YAML::Node v = layer.node(a.name);
      std::string key = what + "." + a.name;
      switch (a.type) {
        case AttrType::Int: n.attrs[a.name] = yaml::as_int(doc.file, v, key); break;
        case AttrType::Double: n.attrs[a.name] = yaml::as_double(doc.file, v, key); break;
        case AttrType::Bool: n.attrs[a.name] = yaml::as_bool(doc.file, v, key); break;
        case AttrType::IntOrList:
          if (v.IsScalar()) { n.attrs[a.name] = yaml::as_int(doc.file, v, key); break; }
          [[fallthrough]];
        case AttrType::IntList:
          n.attrs[a.name] = layer.get_int_list(a.name, {});
          break;
      }
    }
    g.nodes.push_back(std::move(n));
  }
  if (!g.output.empty() &&
      std::none_of(g.nodes.begin(), g.nodes.end(), [&](const NodeSpec& n) { return n.name == g.output; }))
    top.fail("output", fmt::format("no node is named '{}'", g.output));
  return g;
}

}  // namespace

GraphSpec load_model_yaml(const std::string& path, const std::vector<int64_t>& input_shape) {
  return parse(yaml::YamlDoc::load_file(path), input_shape);
}

GraphSpec parse_model_yaml(const std::string& text, const std::string& name,
                           const std::vector<int64_t>& input_shape) {
  return parse(yaml::YamlDoc::load_string(text, name), input_shape);
}

std::string model_yaml_text(const GraphSpec& spec) {
  YAML::Emitter out;
  out.SetDoublePrecision(17);  // attributes round-trip exactly
  out << YAML::BeginMap << YAML::Key << "name" << YAML::Value << spec.name;
  out << YAML::Key << "input_shape" << YAML::Value << YAML::Flow << spec.input_shape;
  if (!spec.output.empty()) out << YAML::Key << "output" << YAML::Value << spec.output;
  out << YAML::Key << "layers" << YAML::Value << YAML::BeginSeq;
  for (const auto& n : spec.nodes) {
    out << YAML::Flow << YAML::BeginMap << YAML::Key << "name" << YAML::Value << n.name << YAML::Key << "op"
        << YAML::Value << n.op;
    if (!n.inputs.empty()) out << YAML::Key << "inputs" << YAML::Value << YAML::Flow << n.inputs;
    for (const auto& [key, value] : n.attrs) {
      out << YAML::Key << key << YAML::Value;
      std::visit([&](const auto& v) { out << v; }, value);
    }
    out << YAML::EndMap;
  }
  out << YAML::EndSeq << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace sparq::models
