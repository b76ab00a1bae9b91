// FITCompress inside a run: the empirical Fisher of a Graph (spec §3.2) and the callback that runs
// the search at the end of pretraining and applies its result (§3.8).
#include <fmt/format.h>
#include <torch/torch.h>

#include <map>

#include "sparq/compress/compress.h"
#include "sparq/error.h"
#include "sparq/fit/fitcompress.h"

namespace sparq::fit {

namespace {
std::shared_ptr<layers::PQWeightLayer> weight_layer(const models::Graph& model, const std::string& name) {
  auto layer = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(model, name));
  if (!layer) throw Error(fmt::format("FITCompress: node '{}' is not a compressed Linear or Conv layer", name));
  return layer;
}

std::shared_ptr<quant::FixedPointQuantizerImpl> weight_quantizer(const layers::PQWeightLayer& layer) {
  for (const auto& [target, q] : layer.quantizers())
    if (target == "weight") return quant::as_fixed_point(q);
  return nullptr;
}
}  // namespace

std::vector<torch::Tensor> empirical_fisher(train::Trainer& trainer, const std::vector<std::string>& layer_names,
                                            const data::Dataset& data, int64_t batch_size, int64_t batches) {
  auto& model = trainer.model();
  if (batch_size < 1 || data.size() < batch_size)
    throw Error(fmt::format("FITCompress: the Fisher estimate needs batches of {} samples; the training data has {}",
                            batch_size, data.size()));
  std::vector<torch::Tensor> weights, sums;
  std::vector<bool> trainable;
  for (const auto& name : layer_names) {
    auto w = weight_layer(model, name)->weight;
    trainable.push_back(w.requires_grad());
    w.requires_grad_(true);
    weights.push_back(w);
    sums.push_back(torch::zeros_like(w, w.options().requires_grad(false)));
  }
  const bool was_training = model->is_training();
  model->eval();
  const auto device = trainer.device();
  int64_t at = 0;
  for (int64_t t = 0; t < batches; ++t) {
    if (at + batch_size > data.size()) at = 0;  // a smaller last batch is skipped
    auto x = data.x.slice(0, at, at + batch_size).to(device), y = data.y.slice(0, at, at + batch_size).to(device);
    at += batch_size;
    auto loss = trainer.loss_of(model->forward(x), y);
    auto grads = torch::autograd::grad({loss}, weights, {}, /*retain_graph=*/false, /*create_graph=*/false,
                                       /*allow_unused=*/true);
    torch::NoGradGuard no_grad;
    for (size_t l = 0; l < grads.size(); ++l) {
      if (!grads[l].defined())
        throw Error(fmt::format("FITCompress: layer '{}' gets no gradient from the loss (is it used by the model's output?)",
                                layer_names[l]));
      sums[l].add_(grads[l].square(), static_cast<double>(batch_size));
    }
  }
  model->train(was_training);
  std::vector<torch::Tensor> fisher;
  for (size_t l = 0; l < sums.size(); ++l) {
    weights[l].requires_grad_(trainable[l]);
    fisher.push_back((sums[l] / static_cast<double>(batches)).cpu());
  }
  return fisher;
}

namespace {

class FitCompressCallback : public train::Callback {
 public:
  FitCompressCallback(FitCompressPlan plan, const data::Dataset& train, std::function<void(const SearchResult&)> report)
      : plan_(std::move(plan)), train_(train), report_(std::move(report)) {}

  void on_train_begin(train::Trainer& t, const train::TrainContext& ctx) override {
    if (!done_ && !ctx.resumed && ctx.start_epoch == t.schedule().pretraining_epochs) run(t);
  }
  void on_epoch_report(train::Trainer& t, const train::TrainContext&, const train::EpochMetrics& m) override {
    if (!done_ && m.epoch == t.schedule().pretraining_epochs) run(t);
  }
  void save(torch::serialize::OutputArchive& root) override {
    root.write("fitcompress_done", torch::tensor(static_cast<int64_t>(done_)));
  }
  void load(torch::serialize::InputArchive& root) override {
    torch::Tensor done;
    if (root.try_read("fitcompress_done", done)) done_ = done.item<int64_t>() != 0;
  }

 private:
  void run(train::Trainer& t) {
    done_ = true;
    auto& model = t.model();
    std::vector<SearchLayer> layers;
    std::vector<std::string> names;
    std::vector<std::shared_ptr<layers::PQWeightLayer>> pq;
    for (const auto& node : model->nodes()) {
      auto layer = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(model, node.name));
      if (!layer) continue;
      if (plan_.optimize_quantization) {
        auto q = weight_quantizer(*layer);
        if (!q)
          throw Error(fmt::format("FITCompress sets weight formats, but layer '{}' has no fixed-point weight quantizer "
                                  "(enable quantization, or set optimize_quantization: false)",
                                  node.name));
        if (q->trains_widths())
          throw Error(fmt::format("FITCompress sets weight formats, but layer '{}' learns its widths (HGQ); use "
                                  "fixed-point weights or optimize_quantization: false",
                                  node.name));
      }
      layers.push_back({node.name, layer->weight.detach().cpu(), layer->pruning() != nullptr});
      names.push_back(node.name);
      pq.push_back(layer);
    }
    // The model's whole state by value: the search loads its candidates into the weights.
    std::map<std::string, torch::Tensor> saved;
    for (const auto& item : model->named_parameters()) saved[item.key()] = item.value().detach().clone();
    for (const auto& item : model->named_buffers()) saved["buffer:" + item.key()] = item.value().detach().clone();
    auto estimate = [&] {
      torch::AutoGradMode grad(true);  // the search itself runs without gradients
      return empirical_fisher(t, names, train_, t.options().batch_size);
    };
    FisherFn fisher = [&](const std::vector<torch::Tensor>& theta) {
      {
        torch::NoGradGuard no_grad;
        for (size_t l = 0; l < pq.size(); ++l) pq[l]->weight.copy_(theta[l]);
      }
      return estimate();
    };
    auto result = search(layers, estimate(), fisher, SearchOptions{plan_});
    result.fisher_evaluations += 1;
    {
      torch::NoGradGuard no_grad;
      for (const auto& item : model->named_parameters()) item.value().copy_(saved.at(item.key()));
      for (const auto& item : model->named_buffers()) item.value().copy_(saved.at("buffer:" + item.key()));
    }
    apply(pq, result);
    if (report_) report_(result);
  }

  void apply(const std::vector<std::shared_ptr<layers::PQWeightLayer>>& pq, const SearchResult& result) {
    torch::NoGradGuard no_grad;
    for (size_t l = 0; l < pq.size(); ++l) {
      const auto& choice = result.layers[l];
      if (plan_.optimize_quantization) weight_quantizer(*pq[l])->set_widths(choice.int_bits, choice.frac_bits);
      if (plan_.optimize_pruning && pq[l]->pruning()) {
        auto buffers = pq[l]->pruning()->named_buffers(/*recurse=*/false);
        if (!buffers.contains("mask"))
          throw Error(fmt::format("FITCompress: layer '{}' has no mask to hold the search's pruning (use "
                                  "pruning_method: fitcompress)",
                                  choice.name));
        auto mask = buffers["mask"];
        mask.copy_(result.masks[l].to(mask.device()).view(mask.sizes()));
        pq[l]->enable_pruning = true;
      }
    }
  }

  FitCompressPlan plan_;
  const data::Dataset& train_;
  std::function<void(const SearchResult&)> report_;
  bool done_ = false;
};

}  // namespace

std::shared_ptr<train::Callback> fitcompress_callback(const FitCompressPlan& plan, const data::Dataset& train,
                                                      std::function<void(const SearchResult&)> report) {
  return std::make_shared<FitCompressCallback>(plan, train, std::move(report));
}

}  // namespace sparq::fit
