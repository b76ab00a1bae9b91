// load_weights: a model.pt written by torch::save(graph) is nested archives (one per child
// module, as the graph registers "layer1.0.conv1"); each float parameter and buffer is found by
// walking its dotted name.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <filesystem>

#include "sparq/error.h"
#include "sparq/models/graph.h"

namespace sparq::models {

namespace {

bool read_nested(torch::serialize::InputArchive& root, const std::string& name, torch::Tensor& out, bool is_buffer) {
  auto dot = name.find('.');
  if (dot == std::string::npos) return root.try_read(name, out, is_buffer);
  torch::serialize::InputArchive child;
  if (!root.try_read(name.substr(0, dot), child)) return false;
  return read_nested(child, name.substr(dot + 1), out, is_buffer);
}

}  // namespace

void load_weights(Graph& graph, const std::string& path_in) {
  namespace fs = std::filesystem;
  std::string path = fs::is_directory(path_in) ? (fs::path(path_in) / "model.pt").string() : path_in;
  if (!fs::is_regular_file(path))
    throw ConfigError(fmt::format("model.weights: '{}' is not a model.pt file (or a run folder holding one)", path));
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    throw ConfigError(fmt::format("model.weights: {}: not a model file sparq can read ({})", path, msg.substr(0, msg.find('\n'))));
  }
  torch::NoGradGuard no_grad;
  auto load = [&](const std::string& name, torch::Tensor& target, bool is_buffer) {
    torch::Tensor stored;
    if (!read_nested(archive, name, stored, is_buffer))
      throw ConfigError(fmt::format("model.weights: {} does not fit model '{}': it has no '{}'", path, graph->name(), name));
    if (stored.sizes() != target.sizes())
      throw ConfigError(fmt::format("model.weights: {} does not fit model '{}': '{}' has shape [{}], the model [{}]", path,
                                    graph->name(), name, fmt::join(stored.sizes(), ", "), fmt::join(target.sizes(), ", ")));
    target.copy_(stored.to(target.options()));
  };
  for (auto& p : graph->named_parameters()) load(p.key(), p.value(), false);
  for (auto& b : graph->named_buffers()) load(b.key(), b.value(), true);
}

}  // namespace sparq::models
