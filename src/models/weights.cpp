// load_weights: a model.pt written by torch::save(graph) is nested archives (one per child
// module, as the graph registers "layer1.0.conv1"); each float parameter and buffer is found by
// walking its dotted name.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <filesystem>
#include <set>

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

/// Every tensor of an archive, by dotted name.
void list_tensors(torch::serialize::InputArchive& archive, const std::string& prefix, std::vector<std::string>& out) {
  for (const auto& key : archive.keys()) {
    torch::Tensor t;
    torch::serialize::InputArchive child;
    if (archive.try_read(key, t) || archive.try_read(key, t, /*is_buffer=*/true)) out.push_back(prefix + key);
    else if (archive.try_read(key, child)) list_tensors(child, prefix + key + ".", out);
  }
}

}  // namespace

void load_weights(Graph& graph, const std::string& path_in, const std::string& what, bool exact) {
  namespace fs = std::filesystem;
  std::string path = fs::is_directory(path_in) ? (fs::path(path_in) / "model.pt").string() : path_in;
  if (!fs::is_regular_file(path))
    throw ConfigError(fmt::format("{}: '{}' is not a model.pt file (or a run folder holding one)", what, path));
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    throw ConfigError(fmt::format("{}: {}: not a model file sparq can read ({})", what, path, msg.substr(0, msg.find('\n'))));
  } catch (const std::exception& e) {  // LibTorch's TorchScript reader also throws std::runtime_error
    std::string msg = e.what();
    throw ConfigError(fmt::format("{}: {}: not a model file sparq can read ({})", what, path, msg.substr(0, msg.find('\n'))));
  }
  torch::NoGradGuard no_grad;
  auto load = [&](const std::string& name, torch::Tensor& target, bool is_buffer) {
    torch::Tensor stored;
    if (!read_nested(archive, name, stored, is_buffer))
      throw ConfigError(fmt::format("{}: {} does not fit model '{}': it has no '{}'", what, path, graph->name(), name));
    if (stored.sizes() != target.sizes())
      throw ConfigError(fmt::format("{}: {} does not fit model '{}': '{}' has shape [{}], the model [{}]", what, path,
                                    graph->name(), name, fmt::join(stored.sizes(), ", "), fmt::join(target.sizes(), ", ")));
    target.copy_(stored.to(target.options()));
  };
  std::set<std::string> known;
  for (auto& p : graph->named_parameters()) load(p.key(), p.value(), false), known.insert(p.key());
  for (auto& b : graph->named_buffers()) load(b.key(), b.value(), true), known.insert(b.key());
  if (!exact) return;
  std::vector<std::string> stored;
  list_tensors(archive, "", stored);
  for (const auto& name : stored)
    if (!known.count(name))
      throw ConfigError(fmt::format("{}: {} holds compression state the float model '{}' lacks ('{}'): it is a "
                                    "compressed run's model; this needs a float one",
                                    what, path, graph->name(), name));
}

}  // namespace sparq::models
