#include "sparq/train/trainer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "sparq/compress/compress.h"
#include "sparq/error.h"
#include "train/progress.h"

namespace sparq::train {

namespace fs = std::filesystem;

void seed_everything(uint64_t seed) { torch::manual_seed(seed); }

std::unique_ptr<torch::optim::Optimizer> make_optimizer(std::vector<torch::Tensor> parameters,
                                                        const TrainOptions& o) {
  namespace optim = torch::optim;
  if (o.optimizer == "adam")
    return std::make_unique<optim::Adam>(
        parameters, optim::AdamOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(o.weight_decay));
  if (o.optimizer == "adamw")
    return std::make_unique<optim::AdamW>(
        parameters, optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(o.weight_decay));
  if (o.optimizer == "sgd") {
    if (o.nesterov && o.momentum <= 0)
      throw Error("optimizer sgd: nesterov needs a momentum > 0");
    return std::make_unique<optim::SGD>(
        parameters, optim::SGDOptions(o.lr).momentum(o.momentum).nesterov(o.nesterov).weight_decay(o.weight_decay));
  }
  throw Error(fmt::format("unknown optimizer '{}', expected adam, adamw or sgd", o.optimizer));
}

namespace {

torch::Device resolve_device(const std::string& name) {
  if (name == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  torch::Device device(torch::kCPU);
  try {
    device = torch::Device(name);
  } catch (const c10::Error&) {
    throw Error(fmt::format("unknown device '{}', expected auto, cpu, cuda or cuda:N", name));
  }
  if (device.is_cuda() && !torch::cuda::is_available())
    throw Error(fmt::format("device '{}' requested but this build or machine has no CUDA", name));
  if (device.is_cuda() && device.has_index() && device.index() >= static_cast<int>(torch::cuda::device_count()))
    throw Error(fmt::format("device '{}' requested but only {} CUDA device(s) exist", name, torch::cuda::device_count()));
  return device;
}

double lr_of(const torch::optim::Optimizer& opt) {
  return opt.param_groups().empty() ? 0.0 : opt.param_groups()[0].options().get_lr();
}

nlohmann::json to_json(const EpochMetrics& m, bool classification) {
  nlohmann::json j = {{"epoch", m.epoch},           {"train_loss", m.train_loss},
                      {"eval_loss", m.eval.loss},   {"seconds", m.seconds},
                      {"samples_per_second", m.samples_per_second}, {"lr", m.lr}};
  j["train_accuracy"] = classification ? nlohmann::json(m.train_accuracy) : nlohmann::json(nullptr);
  j["eval_accuracy"] = classification ? nlohmann::json(m.eval.accuracy) : nlohmann::json(nullptr);
  if (!m.layer_costs.empty()) {
    auto cost_json = [](const layers::LayerCost& c) {
      return nlohmann::json{{"ebops", c.ebops}, {"weight_bits", c.weight_bits}, {"nonzero_weights", c.nonzero},
                            {"weights", c.weights}};
    };
    j.update(cost_json(m.cost));
    nlohmann::json per_layer;
    for (const auto& [name, c] : m.layer_costs) per_layer[name] = cost_json(c);
    j["layers"] = per_layer;
  }
  return j;
}

/// Keeps the metrics lines of the first `epochs` epochs (a resumed run rewrites the rest).
void truncate_metrics(const fs::path& path, int64_t epochs) {
  std::ifstream in(path);
  std::vector<std::string> keep;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("epoch", int64_t{0}) <= epochs) keep.push_back(line);
  }
  in.close();
  std::ofstream out(path, std::ios::trunc);
  for (const auto& line : keep) out << line << '\n';
}

}  // namespace

void Trainer::load_weights(torch::serialize::InputArchive& weights, const std::string& path) {
  torch::NoGradGuard no_grad;
  auto keys = weights.keys();
  std::set<std::string> unused(keys.begin(), keys.end());
  auto load = [&](const std::string& name, torch::Tensor& target, bool is_buffer) {
    torch::Tensor stored;
    if (!weights.try_read(name, stored, is_buffer))
      throw Error(fmt::format("{}: checkpoint does not fit this model: it has no '{}'", path, name));
    if (stored.sizes() != target.sizes())
      throw Error(fmt::format("{}: checkpoint does not fit this model: '{}' has shape [{}], the model [{}]",
                              path, name, fmt::join(stored.sizes(), ", "), fmt::join(target.sizes(), ", ")));
    target.copy_(stored);
    unused.erase(name);
  };
  for (auto& p : model_->named_parameters()) load(p.key(), p.value(), false);
  for (auto& b : model_->named_buffers()) load(b.key(), b.value(), true);
  if (!unused.empty())
    throw Error(fmt::format("{}: checkpoint does not fit this model: the model has no '{}'", path, *unused.begin()));
}

Trainer::Trainer(models::Graph model, TrainOptions options, std::string run_dir)
    : model_(std::move(model)), options_(std::move(options)), run_dir_(std::move(run_dir)) {
  if (options_.batch_size <= 0) throw Error(fmt::format("batch size {} must be positive", options_.batch_size));
  if (options_.epochs < 0) throw Error(fmt::format("epochs {} must be >= 0", options_.epochs));
  if (options_.loss != "cross_entropy" && options_.loss != "mse")
    throw Error(fmt::format("unknown loss '{}', expected cross_entropy or mse", options_.loss));
  model_->to(resolve_device(options_.device));
  optimizer_ = make_optimizer(model_->parameters(), options_);
}

Trainer::~Trainer() = default;

torch::Tensor Trainer::loss_of(const torch::Tensor& output, const torch::Tensor& target) const {
  if (options_.loss == "cross_entropy") {
    if (target.scalar_type() != torch::kInt64)
      throw Error("loss cross_entropy needs class labels; use loss: mse for regression targets");
    return torch::nn::functional::cross_entropy(output, target);
  }
  if (target.scalar_type() == torch::kInt64)  // classification trained with MSE: one-hot targets
    return torch::mse_loss(output, torch::one_hot(target, output.size(1)).to(output.scalar_type()));
  return torch::mse_loss(output, target.view(output.sizes()));
}

EvalResult Trainer::evaluate(const data::Dataset& ds_in) {
  torch::NoGradGuard no_grad;
  auto device = resolve_device(options_.device);
  const data::Dataset ds = ds_in.x.device() == device ? ds_in : ds_in.to(device);
  model_->eval();
  int64_t bs = options_.eval_batch_size > 0 ? options_.eval_batch_size : options_.batch_size;
  data::Batches batches(ds, bs, /*shuffle=*/false);
  auto loss_sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat64).device(device));
  auto correct = torch::zeros({}, torch::TensorOptions().dtype(torch::kInt64).device(device));
  for (int64_t b = 0; b < batches.count(); ++b) {
    auto [x, y] = batches.get(b);
    auto out = model_->forward(x);
    loss_sum += loss_of(out, y).to(torch::kFloat64) * x.size(0);
    if (ds.task == data::Task::Classification) correct += (out.argmax(1) == y).sum();
  }
  EvalResult r;
  r.samples = ds.size();
  r.loss = loss_sum.item<double>() / std::max<int64_t>(r.samples, 1);
  r.accuracy = static_cast<double>(correct.item<int64_t>()) / std::max<int64_t>(r.samples, 1);
  return r;
}

std::vector<EpochMetrics> Trainer::fit(const data::Dataset& train_in, const data::Dataset& eval_in,
                                       bool resume) {
  auto device = resolve_device(options_.device);
  // The whole dataset lives on the training device: one copy here, none per batch.
  const data::Dataset train = train_in.x.device() == device ? train_in : train_in.to(device);
  const data::Dataset eval = eval_in.size() == 0 || eval_in.x.device() == device ? eval_in : eval_in.to(device);
  const bool classification = train.task == data::Task::Classification;

  fs::path dir(run_dir_), checkpoint = dir / "checkpoint.pt", metrics_path = dir / "metrics.jsonl";
  int64_t start = 0;
  if (!run_dir_.empty()) fs::create_directories(dir);
  if (resume) {
    if (run_dir_.empty() || !fs::exists(checkpoint))
      throw Error(fmt::format("--resume: no checkpoint at {}", checkpoint.string()));
    start = load_checkpoint(checkpoint.string());
    if (start > options_.epochs)
      throw Error(fmt::format("--resume: the checkpoint has {} epochs done but the job asks for {}",
                              start, options_.epochs));
    truncate_metrics(metrics_path, start);
  } else if (!run_dir_.empty()) {
    std::ofstream(metrics_path, std::ios::trunc);
  }

  std::vector<EpochMetrics> history;
  for (int64_t epoch = start; epoch < options_.epochs; ++epoch) {
    model_->train();
    data::Batches batches(train, options_.batch_size, /*shuffle=*/true, options_.seed, epoch);
    ProgressDisplay progress(options_.progress, fmt::format("epoch {}/{}", epoch + 1, options_.epochs),
                             batches.count(), options_.batch_size);
    // Sums stay on the device; they are read once per epoch, so the step never waits for the host.
    auto loss_sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat64).device(device));
    auto correct = torch::zeros({}, torch::TensorOptions().dtype(torch::kInt64).device(device));
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t b = 0; b < batches.count(); ++b) {
      auto [x, y] = batches.get(b);
      optimizer_->zero_grad();
      auto out = model_->forward(x);
      auto loss = loss_of(out, y);
      loss.backward();
      optimizer_->step();
      loss_sum += loss.detach().to(torch::kFloat64) * x.size(0);
      if (classification) correct += (out.detach().argmax(1) == y).sum();
      progress.step(b + 1);
    }
    EpochMetrics m;
    m.epoch = epoch + 1;
    m.train_loss = loss_sum.item<double>() / train.size();
    m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    progress.finish();
    m.train_accuracy = static_cast<double>(correct.item<int64_t>()) / train.size();
    m.samples_per_second = train.size() / std::max(m.seconds, 1e-9);
    m.lr = lr_of(*optimizer_);
    if (eval.size() > 0) m.eval = evaluate(eval);
    auto cost = graph_cost(model_);
    m.layer_costs = cost.layers;
    m.cost = cost.total;
    if (!std::isfinite(m.train_loss))
      throw Error(fmt::format("epoch {}: training loss is {} (diverged); lower the learning rate",
                              m.epoch, m.train_loss));
    if (options_.progress != Progress::None) {
      std::string acc = classification ? fmt::format(" acc {:.2f}%", 100 * m.train_accuracy) : "";
      std::string eval_text = eval.size() == 0 ? "" : classification
          ? fmt::format("  eval loss {:.4f} acc {:.2f}%", m.eval.loss, 100 * m.eval.accuracy)
          : fmt::format("  eval loss {:.4f}", m.eval.loss);
      std::string cost_text = m.layer_costs.empty() ? "" : fmt::format("  EBOPs {:.4g}", m.cost.ebops);
      fmt::print("epoch {}/{}  train loss {:.4f}{}{}{}  {:.1f} s  {:.0f} samples/s\n", m.epoch, options_.epochs,
                 m.train_loss, acc, eval_text, cost_text, m.seconds, m.samples_per_second);
      std::fflush(stdout);
    }
    if (!run_dir_.empty()) {
      std::ofstream(metrics_path, std::ios::app) << to_json(m, classification).dump() << '\n';
      save_checkpoint(checkpoint.string(), epoch + 1);
    }
    history.push_back(m);
  }
  return history;
}

void Trainer::save_checkpoint(const std::string& path, int64_t epochs_done) {
  torch::serialize::OutputArchive root, weights, optim;
  // Flat, fully-qualified names ("layer1.0.conv1.weight"), so loading can check each one.
  for (const auto& p : model_->named_parameters()) weights.write(p.key(), p.value());
  for (const auto& b : model_->named_buffers()) weights.write(b.key(), b.value(), /*is_buffer=*/true);
  optimizer_->save(optim);
  root.write("model", weights);
  root.write("optimizer", optim);
  root.write("epochs_done", torch::tensor(epochs_done));
  root.write("cpu_rng_state", at::detail::getDefaultCPUGenerator().get_state());
  // Write then rename, so an interrupted save never leaves a broken checkpoint behind.
  std::string tmp = path + ".tmp";
  root.save_to(tmp);
  fs::rename(tmp, path);
}

int64_t Trainer::load_checkpoint(const std::string& path) {
  try {
    torch::serialize::InputArchive root, weights, optim;
    root.load_from(path);
    root.read("model", weights);
    root.read("optimizer", optim);
    load_weights(weights, path);
    optimizer_->load(optim);
    torch::Tensor epochs, rng;
    root.read("epochs_done", epochs);
    root.read("cpu_rng_state", rng);
    auto gen = at::detail::getDefaultCPUGenerator();
    gen.set_state(rng);
    return epochs.item<int64_t>();
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    throw Error(fmt::format("{}: checkpoint does not fit this model and optimizer: {}", path,
                            msg.substr(0, msg.find('\n'))));
  }
}

}  // namespace sparq::train
