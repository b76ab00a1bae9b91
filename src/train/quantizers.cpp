#include "sparq/train/quantizers.h"

#include <torch/torch.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include "sparq/compress/compress.h"
#include "sparq/error.h"
#include "sparq/quant/integer.h"

namespace sparq::train {

namespace {

using IntegerQ = std::shared_ptr<quant::IntegerQuantizerImpl>;

/// One integer quantizer of the model: its module (node name), layer, target and quantizer.
struct IntegerTarget {
  std::string module;
  std::shared_ptr<layers::PQLayer> layer;
  std::string target;
  IntegerQ q;
};

/// Every integer quantizer, in node order.
std::vector<IntegerTarget> integer_quantizers(const models::Graph& graph) {
  std::vector<IntegerTarget> out;
  for (const auto& node : graph->nodes())
    if (auto pq = pq_layer(graph, node.name))
      for (const auto& [target, q] : pq->quantizers())
        if (auto n = quant::as_integer(q)) out.push_back({node.name, pq, target, n});
  return out;
}

/// NNI's name of a PQ layer's quantizer lane.
std::string nni_target(const std::string& target) {
  return target == "input" ? "_input_0" : target == "output" ? "_output_0" : target;
}

/// QATQuantizer: quantizes from optimizer step quant_start_step on (observing all along).
class QatStart : public Callback {
 public:
  QatStart(const models::Graph& graph, int64_t start) : quantizers_(integer_quantizers(graph)), start_(start) {}
  void on_step_begin(Trainer& trainer, const TrainContext& ctx) override {
    if (done_ || ctx.global_step < start_) return;
    for (auto& t : quantizers_) t.q->start();
    done_ = true;
    trainer.invalidate_step_graph();  // the quantizers' forward changes
  }

 private:
  std::vector<IntegerTarget> quantizers_;
  int64_t start_;
  bool done_ = false;
};

/// BNNQuantizer: after every optimizer step the quantized parameters are clamped to [-1, 1].
class BnnClamp : public Callback {
 public:
  explicit BnnClamp(const models::Graph& graph) {
    for (auto& t : integer_quantizers(graph))
      for (const auto& p : t.layer->named_parameters(/*recurse=*/false))
        if (p.key() == t.target) params_.push_back(p.value());
  }
  void on_step_end(Trainer&, const TrainContext&) override {
    torch::NoGradGuard no_grad;
    for (auto& p : params_) p.clamp_(-1, 1);
  }

 private:
  std::vector<torch::Tensor> params_;
};

}  // namespace

std::shared_ptr<Callback> make_quantizer_runtime(const PruningSpec& quantizer, const models::Graph& graph) {
  if (quantizer.method == "QATQuantizer") return std::make_shared<QatStart>(graph, quantizer.integer("quant_start_step"));
  if (quantizer.method == "BNNQuantizer") return std::make_shared<BnnClamp>(graph);
  return nullptr;
}

std::vector<torch::Tensor> calibration_batches(const data::Dataset& data, int64_t batches, int64_t batch_size,
                                               const torch::Device& device) {
  const data::Dataset ds = data.x.device() == device ? data : data.to(device);
  data::Batches it(ds, batch_size, /*shuffle=*/false);
  std::vector<torch::Tensor> inputs;
  for (int64_t b = 0; b < std::min(batches, it.count()); ++b) inputs.push_back(std::get<0>(it.get(b)));
  return inputs;
}

void calibrate(models::Graph& graph, const std::vector<torch::Tensor>& batches) {
  torch::NoGradGuard no_grad;
  graph->eval();
  for (const auto& x : batches) graph->forward(x);
  for (auto& t : integer_quantizers(graph)) t.q->start();
}

void correct_biases(models::Graph& graph, const std::vector<torch::Tensor>& batches) {
  torch::NoGradGuard no_grad;
  graph->eval();
  const auto targets = integer_quantizers(graph);
  const auto& nodes = graph->nodes();
  for (int index = 0; index < static_cast<int>(nodes.size()); ++index) {
    auto layer = pq_layer(graph, nodes[index].name);
    if (!layer) continue;
    // The output's offset: a folded batch norm's shift (the layer's own bias is scaled by γ/σ
    // there), else the bias.
    auto weighted = std::dynamic_pointer_cast<layers::PQWeightLayer>(layer);
    torch::Tensor bias = !weighted                      ? torch::Tensor()
                         : weighted->bn_bias.defined() ? weighted->bn_bias
                                                       : weighted->bias;
    std::vector<IntegerQ> own;
    for (const auto& t : targets)
      if (t.layer == layer) own.push_back(t.q);
    if (!bias.defined() || own.empty()) continue;
    // The layer's output with its quantizers on and off, on the same (quantized) input: the mean
    // difference per output channel (dim 1, Linear and Conv alike) goes into the bias.
    graph->record_outputs({index});
    torch::Tensor sum;
    int64_t count = 0;
    for (const auto& x : batches) {
      graph->forward(x);
      auto quantized = graph->recorded(index);
      for (auto& q : own) q->enabled = false;
      graph->forward(x);
      auto exact = graph->recorded(index);
      for (auto& q : own) q->enabled = true;
      if (exact.dim() < 2 || exact.size(1) != bias.numel()) break;  // not a [batch, channels, ...] output
      std::vector<int64_t> dims;
      for (int64_t d = 0; d < exact.dim(); ++d)
        if (d != 1) dims.push_back(d);
      auto part = (exact - quantized).to(torch::kDouble).sum(dims);
      sum = sum.defined() ? sum + part : part;
      count += exact.numel() / exact.size(1);
    }
    if (sum.defined()) bias.add_((sum / static_cast<double>(count)).to(bias.dtype()));
  }
  graph->record_outputs({});
  // The corrected model's ranges (biases and every later activation moved): calibrated afresh.
  for (const auto& t : targets) t.q->restart_calibration();
  calibrate(graph, batches);
}

void load_calibration(models::Graph& graph, const std::string& path) {
  nlohmann::json table;
  try {
    std::ifstream in(path);
    table = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(fmt::format("compression.quantizer.calibration: {}: not a calibration table ({})", path, e.what()));
  }
  torch::NoGradGuard no_grad;
  auto values = [&](const nlohmann::json& v, const torch::Tensor& like, const std::string& what) {
    std::vector<double> flat = v.is_array() ? v.get<std::vector<double>>() : std::vector<double>{v.get<double>()};
    if (static_cast<int64_t>(flat.size()) != like.numel())
      throw ConfigError(fmt::format("compression.quantizer.calibration: {}: {} has {} value(s), the model's quantizer {}",
                                    path, what, flat.size(), like.numel()));
    return torch::tensor(flat, torch::kDouble).to(like.dtype()).view(like.sizes());
  };
  for (auto& [module, layer, target, q] : integer_quantizers(graph)) {
    const std::string name = nni_target(target), what = module + "." + name;
    if (!table.contains(module) || !table[module].contains(name))
      throw ConfigError(fmt::format("compression.quantizer.calibration: {} has no entry for {} (the table must come "
                                    "from a run of the same model and config list)",
                                    path, what));
    const auto& e = table[module][name];
    const auto& spec = q->spec();
    try {
      const std::string dtype = (spec.is_signed ? "int" : "uint") + std::to_string(spec.bits);
      const std::string scheme = spec.symmetric ? "symmetric" : "affine";
      if (e.at("quant_dtype") != dtype || e.at("quant_scheme") != scheme)
        throw ConfigError(fmt::format("compression.quantizer.calibration: {}: {} is {} {} in the table, {} {} in the config",
                                      path, what, e.at("quant_dtype").get<std::string>(),
                                      e.at("quant_scheme").get<std::string>(), dtype, scheme));
      q->min_val.copy_(values(e.at("tracked_min"), q->min_val, what + ".tracked_min"));
      q->max_val.copy_(values(e.at("tracked_max"), q->max_val, what + ".tracked_max"));
      if (q->scale.defined()) q->scale.copy_(values(e.at("scale"), q->scale, what + ".scale"));
      if (q->zero_point.defined()) q->zero_point.copy_(values(e.at("zero_point"), q->zero_point, what + ".zero_point"));
      q->observed.fill_(1);
      q->start();
      q->freeze();  // the table's ranges stay
    } catch (const nlohmann::json::exception& ex) {
      throw ConfigError(fmt::format("compression.quantizer.calibration: {}: {}: {}", path, what, ex.what()));
    }
  }
}

void finish_quantizer(const PruningSpec& quantizer, models::Graph& graph, const data::Dataset& data,
                      int64_t batch_size, const torch::Device& device) {
  if (quantizer.params.count("calibration")) return;  // the loaded table decides
  if (quantizer.method != "PtqQuantizer") return;
  const auto batches = calibration_batches(data, quantizer.integer("calibration_batches"), batch_size, device);
  calibrate(graph, batches);
  if (quantizer.params.count("is_bias_correction") && quantizer.flag("is_bias_correction"))
    correct_biases(graph, batches);
}

nlohmann::json calibration_json(const models::Graph& graph) {
  nlohmann::json out = nlohmann::json::object();
  for (auto& [module, layer, target, q] : integer_quantizers(graph)) {
    const auto& spec = q->spec();
    auto [scale, zp] = q->qparams();
    auto list = [](const torch::Tensor& t) {
      auto flat = t.reshape({-1}).to(torch::kDouble).cpu();
      std::vector<double> v(flat.data_ptr<double>(), flat.data_ptr<double>() + flat.numel());
      return v.size() == 1 ? nlohmann::json(v[0]) : nlohmann::json(v);
    };
    const std::string name = nni_target(target);
    out[module][name] = {{"scale", list(scale)},
                           {"zero_point", list(zp)},
                           {"quant_dtype", (spec.is_signed ? "int" : "uint") + std::to_string(spec.bits)},
                           {"quant_scheme", spec.symmetric ? "symmetric" : "affine"},
                           {"quant_bits", spec.bits},
                           {"method", quant::to_string(spec.method)},
                           {"tracked_min", list(q->min_val)},
                           {"tracked_max", list(q->max_val)}};
  }
  return out;
}

}  // namespace sparq::train
