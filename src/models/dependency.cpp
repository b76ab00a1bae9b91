#include "sparq/models/dependency.h"

#include <algorithm>
#include <functional>
#include <map>
#include <numeric>
#include <set>

namespace sparq::models {

namespace {

bool joins_channels(const Node& n) {
  if (n.source_op == "add") return true;
  if (n.source_op != "concat") return false;
  auto it = n.attrs.find("dim");
  return it != n.attrs.end() && std::holds_alternative<int64_t>(it->second) && std::get<int64_t>(it->second) != 1;
}

/// The weight layers nearest upstream of node `i` (itself when it is one).
void upstream_layers(const Graph& g, int i, std::set<int>& out) {
  if (i < 0) return;  // the graph input
  const auto& n = g->nodes()[i];
  if (n.info && n.info->prunable) {
    out.insert(i);
    return;
  }
  if (joins_channels(n)) {
    for (int in : n.inputs) upstream_layers(g, in, out);
    return;
  }
  if (n.inputs.size() != 1) return;
  int in = n.inputs[0];
  const auto& in_shape = in < 0 ? g->input_shape() : g->nodes()[in].out_shape;
  // A node that changes the channel count (flatten, reshape) breaks the dependency.
  if (in_shape.empty() || n.out_shape.empty() || in_shape[0] != n.out_shape[0] || in_shape.size() != n.out_shape.size())
    return;
  upstream_layers(g, in, out);
}

}  // namespace

std::vector<std::vector<std::string>> channel_dependency_sets(const Graph& graph) {
  const auto& nodes = graph->nodes();
  std::vector<int> parent(nodes.size());
  std::iota(parent.begin(), parent.end(), 0);
  std::function<int(int)> root = [&](int x) { return parent[x] == x ? x : parent[x] = root(parent[x]); };
  std::set<int> members;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (!joins_channels(nodes[i])) continue;
    std::set<int> layers;
    for (int in : nodes[i].inputs) upstream_layers(graph, in, layers);
    if (layers.size() < 2) continue;
    for (int l : layers) parent[root(l)] = root(*layers.begin()), members.insert(l);
  }
  std::map<int, std::vector<std::string>> sets;
  for (int m : members) sets[root(m)].push_back(nodes[m].name);
  std::vector<std::vector<std::string>> out;
  for (auto& [r, names] : sets) out.push_back(std::move(names));
  std::sort(out.begin(), out.end(), [&](const auto& a, const auto& b) { return graph->index_of(a[0]) < graph->index_of(b[0]); });
  return out;
}

}  // namespace sparq::models
