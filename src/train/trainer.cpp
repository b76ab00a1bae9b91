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
#include "sparq/prune/budget.h"
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

EpochSlot slot_of(const Schedule& s, int64_t g) {
  EpochSlot slot;
  if (g < s.pretraining_epochs) {
    slot.stage = prune::Stage::Pretraining, slot.epoch = g, slot.stage_epochs = s.pretraining_epochs;
    return slot;
  }
  g -= s.pretraining_epochs;
  if (g < s.rounds * s.epochs) {
    slot.stage = prune::Stage::Training, slot.round = g / s.epochs, slot.epoch = g % s.epochs;
    slot.stage_epochs = s.epochs;
    return slot;
  }
  slot.stage = prune::Stage::FineTuning, slot.epoch = g - s.rounds * s.epochs, slot.stage_epochs = s.fine_tuning_epochs;
  return slot;
}

namespace {

/// The stage every method is in once the hooks of boundary b ran (b = global epochs done).
prune::Stage stage_after_boundary(const Schedule& s, int64_t b) {
  if (b < s.pretraining_epochs) return prune::Stage::Pretraining;
  if (b < s.pretraining_epochs + s.rounds * s.epochs) return prune::Stage::Training;
  return prune::Stage::FineTuning;
}

std::string slot_text(const Schedule& s, const EpochSlot& slot) {
  if (slot.stage == prune::Stage::Training && s.rounds > 1)
    return fmt::format("training round {}/{} epoch {}/{}", slot.round + 1, s.rounds, slot.epoch + 1, slot.stage_epochs);
  return fmt::format("{} {}/{}", prune::to_string(slot.stage), slot.epoch + 1, slot.stage_epochs);
}

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
  nlohmann::json j = {{"epoch", m.epoch},           {"stage", prune::to_string(m.slot.stage)},
                      {"round", m.slot.round + 1},  {"stage_epoch", m.slot.epoch + 1},
                      {"train_loss", m.train_loss}, {"extra_loss", m.extra_loss},
                      {"hgq_loss", m.hgq_loss},     {"beta", m.beta},
                      {"eval_loss", m.eval.loss},   {"seconds", m.seconds},
                      {"samples_per_second", m.samples_per_second}, {"lr", m.lr}};
  j["train_accuracy"] = classification ? nlohmann::json(m.train_accuracy) : nlohmann::json(nullptr);
  j["eval_accuracy"] = classification ? nlohmann::json(m.eval.accuracy) : nlohmann::json(nullptr);
  if (!m.layer_costs.empty()) {
    auto cost_json = [](const layers::LayerCost& c) {
      double sparsity = c.weights ? 1.0 - static_cast<double>(c.nonzero) / c.weights : 0.0;
      return nlohmann::json{{"ebops", c.ebops},     {"weight_bits", c.weight_bits}, {"nonzero_weights", c.nonzero},
                            {"weights", c.weights}, {"sparsity", sparsity}};
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

Trainer::Trainer(models::Graph model, TrainOptions options, std::string run_dir, std::optional<Schedule> schedule)
    : model_(std::move(model)), options_(std::move(options)), run_dir_(std::move(run_dir)),
      schedule_(schedule.value_or(Schedule::single_stage(options_.epochs))) {
  if (options_.batch_size <= 0) throw Error(fmt::format("batch size {} must be positive", options_.batch_size));
  if (options_.epochs < 0) throw Error(fmt::format("epochs {} must be >= 0", options_.epochs));
  const Schedule& sc = schedule_;
  if (sc.pretraining_epochs < 0 || sc.epochs < 0 || sc.fine_tuning_epochs < 0 || sc.rounds < 1)
    throw Error(fmt::format("schedule: epochs must be >= 0 and rounds >= 1 (got pretraining {}, epochs {}, rounds {}, "
                            "fine-tuning {})",
                            sc.pretraining_epochs, sc.epochs, sc.rounds, sc.fine_tuning_epochs));
  if (sc.save_weights_epoch >= sc.epochs && sc.epochs > 0)
    throw Error(fmt::format("schedule: save_weights_epoch {} is not an epoch of the first round (0..{})",
                            sc.save_weights_epoch, sc.epochs - 1));
  for (const auto& node : model_->nodes()) {
    auto pq = pq_layer(model_, node.name);
    if (auto layer = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq)) weight_layers_.push_back({node.name, layer});
    if (pq && pq->has_hgq()) hgq_layers_.push_back(pq);
  }
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

void Trainer::rewind() {
  torch::NoGradGuard no_grad;
  for (auto& [name, layer] : weight_layers_) {
    auto it = snapshot_.find(name);
    if (it != snapshot_.end()) layer->weight.copy_(it->second);  // weights only, as PQuantML
  }
}

void Trainer::post_round_rule(int64_t round) {
  bool last = round == schedule_.rounds - 1;
  auto post_round = [&] {
    for (auto& wl : weight_layers_)
      if (wl.layer->pruning()) wl.layer->pruning()->post_round();
  };
  switch (schedule_.rewind) {
    case Rewind::EveryRound: rewind(); break;
    case Rewind::PostTrainingStage: last ? rewind() : post_round(); break;
    case Rewind::Never: if (!last) post_round(); break;
  }
}

void Trainer::run_boundary(int64_t b) {
  const Schedule& s = schedule_;
  const int64_t training_end = s.pretraining_epochs + s.rounds * s.epochs;
  if (b == s.pretraining_epochs) {
    for (auto& wl : weight_layers_)
      if (wl.layer->pruning()) wl.layer->pruning()->post_pretrain();
    apply_global_budget();
  }
  for (int64_t r = 0; r < s.rounds; ++r)
    if (b == s.pretraining_epochs + (r + 1) * s.epochs) post_round_rule(r);
  if (b == training_end) {
    for (auto& wl : weight_layers_)
      if (wl.layer->pruning()) wl.layer->pruning()->pre_finetune();
  }
  if (b == s.total_epochs()) {
    prune_weights();
    for (auto& layer : hgq_layers_)  // the learned widths become the final integer formats
      for (auto& [target, q] : layer->quantizers()) q->freeze();
  }
  if (s.save_weights_epoch >= 0 && s.save_weights_epoch < s.epochs && b == s.pretraining_epochs + s.save_weights_epoch) {
    torch::NoGradGuard no_grad;
    for (auto& wl : weight_layers_) snapshot_[wl.name] = wl.layer->weight.detach().clone();
  }
}

void Trainer::apply_global_budget() {
  // PDP and Wanda: one magnitude ranking over every weight layer, pruning-disabled ones included.
  std::optional<double> target;
  for (auto& wl : weight_layers_)
    if (wl.layer->pruning() && (target = wl.layer->pruning()->budget_target())) break;
  if (!target) return;
  std::vector<torch::Tensor> weights;
  for (auto& wl : weight_layers_) weights.push_back(wl.layer->weight);
  auto budgets = prune::layer_budgets(weights, *target);
  for (size_t l = 0; l < weight_layers_.size(); ++l)
    if (auto method = weight_layers_[l].layer->pruning()) method->set_budget(budgets[l]);
}

void Trainer::prune_weights() {
  // The end of the schedule: pruned weights become exact zeros in the parameters themselves.
  torch::NoGradGuard no_grad;
  for (auto& wl : weight_layers_) {
    auto method = wl.layer->pruning();
    if (method && wl.layer->enable_pruning) wl.layer->weight.mul_(method->hard_mask(wl.layer->weight));
  }
}

torch::Tensor Trainer::pruning_loss() {
  torch::Tensor total;
  for (auto& wl : weight_layers_) {
    auto method = wl.layer->pruning();
    if (!method || !wl.layer->enable_pruning || method->stage() != prune::Stage::Training) continue;
    auto term = method->loss();
    if (term.defined()) total = total.defined() ? total + term : term;
  }
  return total;
}

torch::Tensor Trainer::hgq_loss(double beta) {
  torch::Tensor total;
  for (auto& layer : hgq_layers_) {
    auto term = layer->hgq_loss(beta);
    if (term.defined()) total = total.defined() ? total + term : term;
  }
  return total;
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
                                       bool resume, int64_t stop_after) {
  auto device = resolve_device(options_.device);
  // The whole dataset lives on the training device: one copy here, none per batch.
  const data::Dataset train = train_in.x.device() == device ? train_in : train_in.to(device);
  const data::Dataset eval = eval_in.size() == 0 || eval_in.x.device() == device ? eval_in : eval_in.to(device);
  const bool classification = train.task == data::Task::Classification;
  const int64_t total = schedule_.total_epochs();

  fs::path dir(run_dir_), checkpoint = dir / "checkpoint.pt", metrics_path = dir / "metrics.jsonl";
  int64_t start = 0;
  if (!run_dir_.empty()) fs::create_directories(dir);
  if (resume) {
    if (run_dir_.empty() || !fs::exists(checkpoint))
      throw Error(fmt::format("--resume: no checkpoint at {}", checkpoint.string()));
    start = load_checkpoint(checkpoint.string());
    if (start > total)
      throw Error(fmt::format("--resume: the checkpoint has {} epochs done but the job asks for {}", start, total));
    truncate_metrics(metrics_path, start);
    // The checkpoint holds what the hooks up to `start` did; the stage itself is not state.
    for (auto& wl : weight_layers_)
      if (wl.layer->pruning()) wl.layer->pruning()->set_stage(stage_after_boundary(schedule_, start));
  } else {
    if (!run_dir_.empty()) std::ofstream(metrics_path, std::ios::trunc);
    run_boundary(0);
  }
  const int64_t end = stop_after > 0 ? std::min(total, stop_after) : total;

  std::vector<EpochMetrics> history;
  for (int64_t epoch = start; epoch < end; ++epoch) {
    const EpochSlot slot = slot_of(schedule_, epoch);
    model_->train();
    for (auto& wl : weight_layers_)
      if (wl.layer->pruning()) wl.layer->pruning()->pre_epoch(slot.epoch, slot.stage_epochs);
    data::Batches batches(train, options_.batch_size, /*shuffle=*/true, options_.seed, epoch);
    ProgressDisplay progress(options_.progress, fmt::format("epoch {}/{}", epoch + 1, total), batches.count(),
                             options_.batch_size);
    // Sums stay on the device; they are read once per epoch, so the step never waits for the host.
    auto loss_sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat64).device(device));
    auto extra_sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat64).device(device));
    auto hgq_sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat64).device(device));
    // HGQ's terms start with the main training stage, as PQuantML's post-pretrain switch.
    const bool hgq_on = !hgq_layers_.empty() && slot.stage != prune::Stage::Pretraining;
    const double beta = hgq_on ? options_.hgq_beta.at(epoch) : 0.0;
    auto correct = torch::zeros({}, torch::TensorOptions().dtype(torch::kInt64).device(device));
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t b = 0; b < batches.count(); ++b) {
      auto [x, y] = batches.get(b);
      model_->zero_grad(/*set_to_none=*/true);  // as PyTorch 2: parameters outside the graph stay untouched
      auto out = model_->forward(x);
      auto loss = loss_of(out, y);
      auto extra = pruning_loss();
      auto hgq = hgq_on ? hgq_loss(beta) : torch::Tensor();
      auto objective = extra.defined() ? loss + extra : loss;
      if (hgq.defined()) objective = objective + hgq;
      objective.backward();
      optimizer_->step();
      loss_sum += loss.detach().to(torch::kFloat64) * x.size(0);
      if (extra.defined()) extra_sum += extra.detach().to(torch::kFloat64);
      if (hgq.defined()) hgq_sum += hgq.detach().to(torch::kFloat64);
      if (classification) correct += (out.detach().argmax(1) == y).sum();
      progress.step(b + 1);
    }
    EpochMetrics m;
    m.epoch = epoch + 1;
    m.slot = slot;
    m.train_loss = loss_sum.item<double>() / train.size();
    m.extra_loss = extra_sum.item<double>() / std::max<int64_t>(batches.count(), 1);
    m.hgq_loss = hgq_sum.item<double>() / std::max<int64_t>(batches.count(), 1);
    m.beta = beta;
    m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    progress.finish();
    m.train_accuracy = static_cast<double>(correct.item<int64_t>()) / train.size();
    m.samples_per_second = train.size() / std::max(m.seconds, 1e-9);
    m.lr = lr_of(*optimizer_);
    if (eval.size() > 0) m.eval = evaluate(eval);
    for (auto& wl : weight_layers_) {
      auto method = wl.layer->pruning();
      if (!method) continue;
      method->post_epoch(slot.epoch, slot.stage_epochs);
      if (wl.layer->enable_pruning) method->update_mask(wl.layer->weight.detach());
    }
    auto cost = graph_cost(model_);
    m.layer_costs = cost.layers;
    m.cost = cost.total;
    m.sparsity = cost.total.weights ? 1.0 - static_cast<double>(cost.total.nonzero) / cost.total.weights : 0.0;
    if (!std::isfinite(m.train_loss) || !std::isfinite(m.extra_loss) || !std::isfinite(m.hgq_loss))
      throw Error(fmt::format("epoch {}: training loss is {} (diverged); lower the learning rate", m.epoch,
                              m.train_loss + m.extra_loss + m.hgq_loss));
    if (options_.progress != Progress::None) {
      std::string acc = classification ? fmt::format(" acc {:.2f}%", 100 * m.train_accuracy) : "";
      std::string eval_text = eval.size() == 0 ? "" : classification
          ? fmt::format("  eval loss {:.4f} acc {:.2f}%", m.eval.loss, 100 * m.eval.accuracy)
          : fmt::format("  eval loss {:.4f}", m.eval.loss);
      std::string cost_text = m.layer_costs.empty() ? "" : fmt::format("  EBOPs {:.4g}", m.cost.ebops);
      if (!weight_layers_.empty() && weight_layers_[0].layer->pruning())
        cost_text += fmt::format("  sparsity {:.1f}%", 100 * m.sparsity);
      std::string stage = total == schedule_.epochs ? "" : fmt::format(" [{}]", slot_text(schedule_, slot));
      fmt::print("epoch {}/{}{}  train loss {:.4f}{}{}{}  {:.1f} s  {:.0f} samples/s\n", m.epoch, total, stage,
                 m.train_loss, acc, eval_text, cost_text, m.seconds, m.samples_per_second);
      std::fflush(stdout);
    }
    run_boundary(epoch + 1);
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
  if (!snapshot_.empty()) {
    torch::serialize::OutputArchive snapshot;
    for (const auto& [name, w] : snapshot_) snapshot.write(name, w, /*is_buffer=*/true);
    root.write("rewind_snapshot", snapshot);
  }
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
    snapshot_.clear();
    torch::serialize::InputArchive snapshot;
    if (root.try_read("rewind_snapshot", snapshot))
      for (auto& wl : weight_layers_) {
        torch::Tensor w;
        if (snapshot.try_read(wl.name, w, /*is_buffer=*/true)) snapshot_[wl.name] = w.to(wl.layer->weight.device());
      }
    return epochs.item<int64_t>();
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    throw Error(fmt::format("{}: checkpoint does not fit this model and optimizer: {}", path,
                            msg.substr(0, msg.find('\n'))));
  }
}

}  // namespace sparq::train
