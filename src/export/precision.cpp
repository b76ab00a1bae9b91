#include "sparq/export/precision.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "sparq/compress/compress.h"
#include "sparq/error.h"
#include "sparq/io/files.h"

namespace sparq::exporting {

namespace {

nlohmann::json target_json(const quant::Quantizer& q) {
  const auto d = q->describe();
  if (d.kind == "integer") {
    const int bits = d.k.at(0) + d.i.at(0);
    const std::string type = fmt::format("{}int{}", d.k.at(0) ? "" : "u", bits);
    return {{"kind", d.kind},
            {"granularity", quant::to_string(d.granularity)},
            {"shape", d.shape},
            {"k", d.k},
            {"bits", bits},
            {"qmin", d.qmin},
            {"qmax", d.qmax},
            {"scale", d.scale},
            {"zero_point", d.zero_point},
            {"types", {{type, d.k.size()}}},
            {"zero_width", 0},
            {"mean_bits", bits}};
  }
  std::map<std::string, int64_t> types;
  int64_t zero_width = 0;
  double bits = 0;
  for (size_t e = 0; e < d.k.size(); ++e) {
    auto format = d.element(e);
    if (format.width() <= 0) {
      ++zero_width;
      continue;
    }
    bits += static_cast<double>(format.width());
    ++types[format.type_name()];
  }
  return {{"kind", d.kind},
          {"granularity", quant::to_string(d.granularity)},
          {"round", quant::to_string(d.round)},
          {"overflow", quant::to_string(d.overflow)},
          {"shape", d.shape},
          {"k", d.k},
          {"i", d.i},
          {"f", d.f},
          {"types", types},
          {"zero_width", zero_width},
          {"mean_bits", d.k.empty() ? 0.0 : bits / static_cast<double>(d.k.size())}};
}

}  // namespace

nlohmann::json precision_json(const models::Graph& graph) {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& node : graph->nodes()) {
    auto pq = pq_layer(graph, node.name);
    if (!pq) continue;
    nlohmann::json targets = nlohmann::json::object();
    for (const auto& [target, q] : pq->quantizers())
      if (q->enabled) targets[target] = target_json(q);
    if (!targets.empty()) layers.push_back({{"name", node.name}, {"op", node.op}, {"targets", targets}});
  }
  return {{"model", graph->name()}, {"layers", layers}};
}

void write_precision(const nlohmann::json& precision, const std::string& path) {
  io::write_file_atomic(path, precision.dump() + "\n");
}

std::string precision_table(const nlohmann::json& precision) {
  std::string text = fmt::format("{:<12} {:<8} {:<12} {:>8} {:>10} {:>9}  {}\n", "layer", "target", "granularity",
                                 "elements", "mean bits", "zero-width", "types (most used first)");
  for (const auto& layer : precision.at("layers")) {
    for (const auto& [target, t] : layer.at("targets").items()) {
      std::vector<std::pair<int64_t, std::string>> types;
      for (const auto& [type, count] : t.at("types").items()) types.emplace_back(count.get<int64_t>(), type);
      std::sort(types.rbegin(), types.rend());
      std::string list;
      for (size_t n = 0; n < types.size() && n < 3; ++n)
        list += fmt::format("{}{} x{}", n ? ", " : "", types[n].second, types[n].first);
      if (types.size() > 3) list += fmt::format(", ... ({} types)", types.size());
      int64_t elements = static_cast<int64_t>(t.at("k").size());
      text += fmt::format("{:<12} {:<8} {:<12} {:>8} {:>10.2f} {:>9}  {}\n", layer.at("name").get<std::string>(), target,
                          t.at("kind").get<std::string>() == "hgq" ? "hgq " + t.at("granularity").get<std::string>()
                                                                   : t.at("granularity").get<std::string>(),
                          elements, t.at("mean_bits").get<double>(), t.at("zero_width").get<int64_t>(), list);
    }
  }
  return text;
}

}  // namespace sparq::exporting
