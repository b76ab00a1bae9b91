#include "sparq/export/precision.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "sparq/compress/compress.h"
#include "sparq/error.h"
#include "sparq/io/files.h"
#include "sparq/layers/pq_layers.h"

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

/// The smallest f with v * 2^f an integer (v a quantized weight: dyadic), 0 for v = 0.
int fraction_bits(double v) {
  if (v == 0 || !std::isfinite(v)) return 0;
  int f = -60;
  while (f < 200 && std::ldexp(v, f) != std::floor(std::ldexp(v, f))) ++f;
  while (f > -60 && std::ldexp(v, f - 1) == std::floor(std::ldexp(v, f - 1))) --f;
  return f;
}

/// Per input feature (dense: last axis) or channel (conv: axis 1), the value range and the largest
/// f of the input lane; a zero-width element holds only 0.
struct LaneRange {
  std::vector<double> lo, hi;
  std::vector<int> f;
  std::vector<bool> live;
};
LaneRange lane_range(const quant::QuantFormat& d, bool channel_axis, int64_t features) {
  LaneRange r{std::vector<double>(features, 0.0), std::vector<double>(features, 0.0), std::vector<int>(features, -1000),
              std::vector<bool>(features, false)};
  // Element e of the lane's widths sits at a position of [1, *sample] broadcast from d.shape.
  std::vector<int64_t> shape = d.shape;
  const size_t n = d.k.size();
  auto feature_of = [&](size_t e) -> int64_t {
    if (shape.empty() || n == 1) return -1;  // one format for every feature
    // the index along the feature axis of element e of a tensor of `shape`
    const size_t axis = channel_axis ? 1 : shape.size() - 1;
    int64_t stride = 1;
    for (size_t a = axis + 1; a < shape.size(); ++a) stride *= shape[a];
    int64_t idx = (static_cast<int64_t>(e) / stride) % shape[axis];
    return shape[axis] == 1 ? -1 : idx;
  };
  for (size_t e = 0; e < n; ++e) {
    auto fmt_e = d.element(e);
    const int64_t j = feature_of(e);
    for (int64_t c = (j < 0 ? 0 : j); c < (j < 0 ? features : j + 1); ++c) {
      if (fmt_e.width() <= 0) continue;  // holds 0
      const double lo = fmt_e.k ? fmt_e.min_value() : 0.0, hi = fmt_e.max_value();
      if (!r.live[c]) r.lo[c] = lo, r.hi[c] = hi, r.live[c] = true;
      else r.lo[c] = std::min(r.lo[c], lo), r.hi[c] = std::max(r.hi[c], hi);
      r.f[c] = std::max(r.f[c], fmt_e.f);
    }
  }
  return r;
}

}  // namespace

std::string Accumulator::type_name() const {
  return fmt::format("{}<{},{}>", is_signed ? "ap_fixed" : "ap_ufixed", width(), integer);
}

std::optional<Accumulator> accumulator_of(const models::Graph& graph, const std::string& name) {
  auto pq = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(graph, name));
  if (!pq) return std::nullopt;
  auto input_q = pq->quantizer("input");
  if (!input_q) return std::nullopt;
  const auto input = input_q->describe();
  if (input.kind == "integer") return std::nullopt;
  auto [weight, b] = pq->deployed_parameters();
  auto w = weight.to(torch::kFloat64).cpu().contiguous();
  const bool conv = w.dim() > 2;
  const int64_t out = w.size(0), per_out = w.numel() / out;
  const int64_t in_features = w.size(1);  // per group for a convolution
  auto* conv_layer = dynamic_cast<layers::PQConvImpl*>(pq.get());
  const int64_t groups = conv_layer ? conv_layer->options().groups() : 1;
  const int64_t channels = conv ? in_features * groups : in_features;
  auto range = lane_range(input, conv, channels);
  const int64_t taps = conv ? per_out / in_features : 1;
  const double* wp = w.data_ptr<double>();
  Accumulator acc;
  acc.min = INFINITY, acc.max = -INFINITY;
  int f = -1000;
  std::vector<double> bias(out, 0.0);
  if (b.defined()) {
    auto bd = b.to(torch::kFloat64).cpu().contiguous();
    for (int64_t o = 0; o < out; ++o) bias[o] = bd.data_ptr<double>()[o], f = std::max(f, fraction_bits(bias[o]));
  }
  for (int64_t o = 0; o < out; ++o) {
    double lo = bias[o], hi = bias[o];
    const int64_t group = o / (out / groups);
    for (int64_t j = 0; j < in_features; ++j) {
      const int64_t c = conv ? group * in_features + j : j;
      if (!range.live[c]) continue;  // a zero-width input: always 0
      // A lane's range always holds 0, so the zeros an edge position reads stay inside it.
      const double xl = range.lo[c], xh = range.hi[c];
      for (int64_t t = 0; t < taps; ++t) {
        const double v = wp[o * per_out + j * taps + t];
        if (v == 0) continue;  // pruned, or quantized to 0: no product in the firmware
        lo += std::min(v * xl, v * xh), hi += std::max(v * xl, v * xh);
        f = std::max(f, fraction_bits(v) + range.f[c]);
      }
    }
    acc.min = std::min(acc.min, lo), acc.max = std::max(acc.max, hi);
  }
  acc.fractional = std::max(f, 0);
  acc.is_signed = acc.min < 0;
  const double step = std::ldexp(1.0, -acc.fractional);
  auto fits = [&](int i) {
    if (acc.is_signed) return acc.min >= -std::ldexp(1.0, i - 1) && acc.max <= std::ldexp(1.0, i - 1) - step;
    return acc.max <= std::ldexp(1.0, i) - step;
  };
  int integer = 1 - acc.fractional;  // the fewest integer bits that hold [min, max] (W >= 1)
  while (!fits(integer)) ++integer;
  acc.integer = integer;
  return acc;
}

nlohmann::json precision_json(const models::Graph& graph) {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& node : graph->nodes()) {
    auto pq = pq_layer(graph, node.name);
    if (!pq) continue;
    nlohmann::json targets = nlohmann::json::object();
    for (const auto& [target, q] : pq->quantizers())
      if (q->enabled) targets[target] = target_json(q);
    if (targets.empty()) continue;
    nlohmann::json layer = {{"name", node.name}, {"op", node.op}, {"targets", targets}};
    if (auto acc = accumulator_of(graph, node.name))
      layer["accumulator"] = {{"type", acc->type_name()}, {"width", acc->width()},   {"integer", acc->integer},
                              {"fractional", acc->fractional}, {"signed", acc->is_signed}, {"min", acc->min},
                              {"max", acc->max}};
    layers.push_back(layer);
  }
  return {{"model", graph->name()}, {"layers", layers}};
}

void write_precision(const nlohmann::json& precision, const std::string& path) {
  io::write_file_atomic(path, precision.dump() + "\n");
}

std::string most_used_types(const nlohmann::json& target, size_t shown) {
  std::vector<std::pair<int64_t, std::string>> types;
  if (target.contains("types") && target["types"].is_object())
    for (const auto& [type, count] : target["types"].items())
      if (count.is_number_integer()) types.emplace_back(count.get<int64_t>(), type);
  std::sort(types.rbegin(), types.rend());
  std::string list;
  for (size_t n = 0; n < types.size() && n < shown; ++n) list += fmt::format("{}{} x{}", n ? ", " : "", types[n].second, types[n].first);
  if (types.size() > shown) list += fmt::format(", ... ({} types)", types.size());
  return list;
}

std::string precision_table(const nlohmann::json& precision) {
  std::string text = fmt::format("{:<12} {:<8} {:<12} {:>8} {:>10} {:>9}  {}\n", "layer", "target", "granularity",
                                 "elements", "mean bits", "zero-width", "types (most used first)");
  for (const auto& layer : precision.at("layers")) {
    for (const auto& [target, t] : layer.at("targets").items()) {
      const std::string list = most_used_types(t, 3);
      int64_t elements = static_cast<int64_t>(t.at("k").size());
      text += fmt::format("{:<12} {:<8} {:<12} {:>8} {:>10.2f} {:>9}  {}\n", layer.at("name").get<std::string>(), target,
                          t.at("kind").get<std::string>() == "hgq" ? "hgq " + t.at("granularity").get<std::string>()
                                                                   : t.at("granularity").get<std::string>(),
                          elements, t.at("mean_bits").get<double>(), t.at("zero_width").get<int64_t>(), list);
    }
    if (layer.contains("accumulator")) {  // what no sum can overflow (accumulator_of)
      const auto& a = layer["accumulator"];
      text += fmt::format("{:<12} {:<8} {:<12} {:>8} {:>10} {:>9}  {} (sums in [{:.6g}, {:.6g}])\n", layer.at("name").get<std::string>(),
                          "accum", "per layer", "", a.at("width").get<int>(), "", a.at("type").get<std::string>(),
                          a.at("min").get<double>(), a.at("max").get<double>());
    }
  }
  return text;
}

}  // namespace sparq::exporting
