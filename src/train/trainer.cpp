#include "sparq/train/trainer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>
#include <zlib.h>

#include <chrono>
#include <regex>
#include <set>
#include <sstream>

#include "sparq/compress/compress.h"
#include "sparq/error.h"
#include "sparq/io/files.h"
#include "train/builtin.h"
#include "train/fused_adam.h"
#include "train/fused_mlp.h"
#include "train/step_graph.h"

namespace sparq::train {

void seed_everything(uint64_t seed) { torch::manual_seed(seed); }

namespace {

template <typename Options>
std::vector<torch::optim::OptimizerParamGroup> param_groups(std::vector<std::vector<torch::Tensor>> groups,
                                                            const Options& options) {
  std::vector<torch::optim::OptimizerParamGroup> out;
  for (auto& params : groups) out.emplace_back(std::move(params), std::make_unique<Options>(options));
  return out;
}

}  // namespace

std::unique_ptr<torch::optim::Optimizer> make_optimizer(std::vector<std::vector<torch::Tensor>> groups,
                                                        const TrainOptions& o) {
  namespace optim = torch::optim;
  if (o.optimizer == "adam") {
    auto options = optim::AdamOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(o.weight_decay);
    return std::make_unique<optim::Adam>(param_groups(std::move(groups), options), options);
  }
  if (o.optimizer == "adamw") {
    auto options = optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(o.weight_decay);
    return std::make_unique<optim::AdamW>(param_groups(std::move(groups), options), options);
  }
  if (o.optimizer == "sgd") {
    if (o.nesterov && o.momentum <= 0) throw Error("optimizer sgd: nesterov needs a momentum > 0");
    auto options = optim::SGDOptions(o.lr).momentum(o.momentum).nesterov(o.nesterov).weight_decay(o.weight_decay);
    return std::make_unique<optim::SGD>(param_groups(std::move(groups), options), options);
  }
  throw Error(fmt::format("unknown optimizer '{}', expected adam, adamw or sgd", o.optimizer));
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(std::vector<torch::Tensor> parameters,
                                                        const TrainOptions& options) {
  return make_optimizer(std::vector<std::vector<torch::Tensor>>{std::move(parameters)}, options);
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

double EpochMetrics::value(const std::string& name) const {
  auto it = values.find(name);
  return it == values.end() ? 0.0 : it->second;
}

namespace {
double lr_of(const torch::optim::Optimizer& opt) {
  return opt.param_groups().empty() ? 0.0 : opt.param_groups()[0].options().get_lr();
}
}  // namespace

Trainer::Trainer(models::Graph model, TrainOptions options, std::optional<Schedule> schedule, std::vector<Event> events)
    : model_(std::move(model)), options_(std::move(options)),
      schedule_(schedule.value_or(Schedule::single_stage(options_.epochs))), events_(std::move(events)),
      device_(resolve_device(options_.device)) {
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
  if (options_.loss != "cross_entropy" && options_.loss != "mse")
    throw Error(fmt::format("unknown loss '{}', expected cross_entropy or mse", options_.loss));
  std::vector<WeightLayer> weight_layers;
  std::vector<std::shared_ptr<layers::PQLayer>> hgq_layers;
  std::vector<std::vector<torch::Tensor>> groups;
  for (const auto& node : model_->nodes()) {
    auto pq = pq_layer(model_, node.name);
    if (auto layer = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq)) weight_layers.push_back({node.name, layer});
    if (pq && pq->has_hgq()) hgq_layers.push_back(pq);
    if (node.module.is_empty()) continue;
    auto params = node.module.ptr()->parameters();
    if (params.empty()) continue;
    group_names_.push_back(node.name);
    groups.push_back(params);
  }
  if (!weight_layers.empty()) {
    builtin_.push_back(std::make_shared<StageHooks>(weight_layers));
    for (const auto& wl : weight_layers) prunes_ |= wl.layer->pruning() != nullptr;
    if (prunes_) terms_.push_back(std::make_shared<PruningLoss>(weight_layers));
  }
  builtin_.push_back(std::make_shared<EventFirer>(events_));
  if (!hgq_layers.empty()) {
    terms_.push_back(std::make_shared<HgqLoss>(hgq_layers, events_of(events_, Event::Kind::HgqBeta)));
  }
  model_->to(device_);
  optimizer_ = make_optimizer(std::move(groups), options_);
  if (options_.cuda_graph != "auto" && options_.cuda_graph != "on" && options_.cuda_graph != "off")
    throw Error(fmt::format("cuda_graph '{}' is not one of auto, on, off", options_.cuda_graph));
  if (options_.fused_mlp != "auto" && options_.fused_mlp != "on" && options_.fused_mlp != "off")
    throw Error(fmt::format("fused_mlp '{}' is not one of auto, on, off", options_.fused_mlp));
  if (options_.fused_mlp != "off") fused_mlp_ = std::make_unique<FusedMlp>(model_);
  if (FusedAdam::refusal(*optimizer_).empty() && options_.optimizer != "sgd")
    fused_adam_ = std::make_unique<FusedAdam>(*optimizer_);
  ctx_.total_epochs = schedule_.total_epochs();
  list_callbacks();
}

Trainer::~Trainer() = default;

void Trainer::add_callback(std::shared_ptr<Callback> callback) {
  callbacks_.push_back(std::move(callback));
  list_callbacks();
}

void Trainer::add_loss_term(std::shared_ptr<LossTerm> term) {
  terms_.push_back(std::move(term));
  list_callbacks();
}

void Trainer::add_parameters(const std::string& name, std::vector<torch::Tensor> parameters) {
  extra_parameters_.insert(extra_parameters_.end(), parameters.begin(), parameters.end());
  optimizer_->add_param_group(torch::optim::OptimizerParamGroup(std::move(parameters)));
  group_names_.push_back(name);
  if (fused_adam_) {  // over the new group's tensors too, the counts so far kept
    fused_adam_->sync_host();
    fused_adam_ = std::make_unique<FusedAdam>(*optimizer_);
  }
  invalidate_step_graph();
}

void Trainer::list_callbacks() {
  all_.clear();
  for (const auto& c : builtin_) all_.push_back(c.get());
  for (const auto& t : terms_) all_.push_back(t.get());
  for (const auto& c : callbacks_) all_.push_back(c.get());
}

std::vector<size_t> Trainer::matching_groups(const std::string& regex) const {
  std::vector<size_t> out;
  std::regex re(regex.empty() ? ".*" : regex);
  for (size_t g = 0; g < group_names_.size(); ++g)
    if (std::regex_match(group_names_[g], re)) out.push_back(g);
  return out;
}

void Trainer::set_lr(const std::string& regex, double lr) { set_lr(matching_groups(regex), lr); }

void Trainer::invalidate_step_graph() {
  if (graph_ && graph_->captured()) ++graph_drops_;
  graph_.reset();
}

void Trainer::set_weight_decay(const std::string& regex, double weight_decay) {
  set_weight_decay(matching_groups(regex), weight_decay);
}

namespace {
std::vector<size_t> groups_or_all(const std::vector<size_t>& groups, size_t count) {
  std::vector<size_t> out = groups;
  if (out.empty())
    for (size_t g = 0; g < count; ++g) out.push_back(g);
  for (auto g : out)
    if (g >= count)
      throw Error(fmt::format("optimizer parameter group {} does not exist: this model's optimizer has {} (one per "
                              "layer with parameters, in graph order)",
                              g, count));
  return out;
}
}  // namespace

void Trainer::set_lr(const std::vector<size_t>& groups, double lr) {
  for (auto g : groups_or_all(groups, optimizer_->param_groups().size()))
    optimizer_->param_groups()[g].options().set_lr(lr);
  invalidate_step_graph();
}

void Trainer::set_weight_decay(const std::vector<size_t>& groups, double weight_decay) {
  for (auto g : groups_or_all(groups, optimizer_->param_groups().size())) {
    auto& o = optimizer_->param_groups()[g].options();
    if (auto* adam = dynamic_cast<torch::optim::AdamOptions*>(&o)) adam->weight_decay(weight_decay);
    else if (auto* adamw = dynamic_cast<torch::optim::AdamWOptions*>(&o)) adamw->weight_decay(weight_decay);
    else if (auto* sgd = dynamic_cast<torch::optim::SGDOptions*>(&o)) sgd->weight_decay(weight_decay);
  }
  invalidate_step_graph();
}

double Trainer::lr(size_t group) const { return optimizer_->param_groups().at(group).options().get_lr(); }

double Trainer::weight_decay(size_t group) const {
  auto& o = optimizer_->param_groups().at(group).options();
  if (auto* adam = dynamic_cast<torch::optim::AdamOptions*>(&o)) return adam->weight_decay();
  if (auto* adamw = dynamic_cast<torch::optim::AdamWOptions*>(&o)) return adamw->weight_decay();
  if (auto* sgd = dynamic_cast<torch::optim::SGDOptions*>(&o)) return sgd->weight_decay();
  return 0;
}

void Trainer::set_trainable(const std::string& regex, bool trainable) {
  for (auto g : matching_groups(regex))
    for (auto& p : optimizer_->param_groups()[g].params()) p.requires_grad_(trainable);
  invalidate_step_graph();
}

void Trainer::set_quantization(bool enabled) {
  for (const auto& node : model_->nodes())
    if (auto pq = pq_layer(model_, node.name)) pq->set_quantization(enabled);
  invalidate_step_graph();
}

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
  const data::Dataset ds = ds_in.x.device() == device_ ? ds_in : ds_in.to(device_);
  model_->eval();
  int64_t bs = options_.eval_batch_size > 0 ? options_.eval_batch_size : options_.batch_size;
  data::Batches batches(ds, bs, /*shuffle=*/false);
  auto loss_sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat64).device(device_));
  auto correct = torch::zeros({}, torch::TensorOptions().dtype(torch::kInt64).device(device_));
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

void Trainer::begin_training(int64_t steps_per_epoch, int64_t start_epoch, bool resumed) {
  ctx_.steps_per_epoch = steps_per_epoch;
  ctx_.start_epoch = ctx_.epoch_index = start_epoch;
  ctx_.global_step = start_epoch * steps_per_epoch;
  ctx_.epoch = static_cast<double>(start_epoch);
  ctx_.resumed = resumed;
  ctx_.total_epochs = schedule_.total_epochs();
  for (auto* c : all_) c->on_train_begin(*this, ctx_);
}

void Trainer::begin_epoch(int64_t epoch_index) {
  ctx_.epoch_index = epoch_index;
  ctx_.step_in_epoch = 0;
  ctx_.epoch = static_cast<double>(epoch_index);
  ctx_.global_step = epoch_index * ctx_.steps_per_epoch;
  ctx_.slot = slot_of(schedule_, std::min(epoch_index, std::max<int64_t>(schedule_.total_epochs() - 1, 0)));
  model_->train();
  // Zeroed in place: a captured step adds to these very tensors.
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64).device(device_);
  auto zero = [](torch::Tensor& t, const torch::TensorOptions& o) { t.defined() ? void(t.zero_()) : void(t = torch::zeros({}, o)); };
  zero(loss_sum_, f64);
  zero(correct_, torch::TensorOptions().dtype(torch::kInt64).device(device_));
  term_sums_.resize(terms_.size());
  for (auto& s : term_sums_) zero(s, f64);
  epoch_samples_ = epoch_steps_ = 0;
  if (ctx_.slot.stage != last_stage_) invalidate_step_graph();  // stage changes switch terms and methods
  graph_drops_ = 0;
  last_stage_ = ctx_.slot.stage;
  for (auto* c : all_) c->on_epoch_begin(*this, ctx_);
}

StepResult Trainer::step(const torch::Tensor& x, const torch::Tensor& y) {
  if (ctx_.steps_per_epoch > 0)
    ctx_.epoch = ctx_.epoch_index + static_cast<double>(ctx_.step_in_epoch) / static_cast<double>(ctx_.steps_per_epoch);
  for (auto* c : all_) c->on_step_begin(*this, ctx_);
  auto graphed = graph_step(x, y);
  StepResult result = graphed ? *graphed : device_step(x, y);
  epoch_samples_ += x.size(0);
  ++epoch_steps_;
  for (auto* c : all_) c->on_step_end(*this, ctx_);
  ++ctx_.global_step;
  ++ctx_.step_in_epoch;
  return result;
}

std::string Trainer::graph_blocker() const {
  if (!StepGraph::supported()) return "this build has no CUDA graphs";
  if (prunes_) return "pruning methods decide on the host during steps";
  if (!fused_adam_ && options_.optimizer != "sgd") return "optimizer: " + FusedAdam::refusal(*optimizer_);
  for (auto* c : all_)
    if (auto why = c->graph_blocker(); !why.empty()) return why;
  return {};
}

std::optional<StepResult> Trainer::graph_step(const torch::Tensor& x, const torch::Tensor& y) {
  if (!device_.is_cuda() || options_.cuda_graph == "off") return std::nullopt;
  if (graph_ && graph_->captured()) {
    if (!graph_->x.sizes().equals(x.sizes()) || !graph_->y.sizes().equals(y.sizes()))
      return std::nullopt;  // a short last batch: launched
    graph_->x.copy_(x), graph_->y.copy_(y);
    graph_->replay();
    return graph_->result;
  }
  if (graph_note_.rfind("captured", 0) != 0 && !graph_note_.empty()) return std::nullopt;  // declined before
  if (auto why = graph_blocker(); !why.empty()) {
    if (options_.cuda_graph == "on") throw Error(fmt::format("training.cuda_graph: on, but the step cannot be captured: {}", why));
    graph_note_ = "launched: " + why;
    return std::nullopt;
  }
  if (ctx_.steps_per_epoch > 0 && x.size(0) < options_.batch_size) return std::nullopt;  // capture full batches
  if (graph_drops_ > 2 && options_.cuda_graph == "auto") {  // each capture costs a launched step: not worth it
    graph_note_ = fmt::format("launched: the step changed {} times in epoch {} (events at steps)", graph_drops_,
                              ctx_.epoch_index + 1);
    return std::nullopt;
  }
  graph_ = std::make_unique<StepGraph>();
  graph_->x = x.clone(), graph_->y = y.clone();
  auto warm = graph_->capture([&] { return device_step(graph_->x, graph_->y); });
  if (graph_->captured()) {
    graph_note_ = "captured";
    return warm;
  }
  const std::string why = graph_->failure();
  graph_.reset();
  if (options_.cuda_graph == "on") throw Error(fmt::format("training.cuda_graph: on, but capturing the step failed: {}", why));
  graph_note_ = "launched: capturing the step failed: " + why;
  return warm;
}

torch::Tensor Trainer::train_forward(const torch::Tensor& x) {
  if (!fused_mlp_ || (options_.fused_mlp == "auto" && !x.is_cuda())) return model_->forward(x);
  const bool on = options_.fused_mlp == "on";
  // The structure first (no tensor work), then the weights themselves.
  std::string why = fused_mlp_->refusal(x, /*allow_cpu=*/on);
  if (why.empty())
    if (auto out = fused_mlp_->forward(x, &why); out.defined()) {
      fused_note_ = "fused MLP kernels";
      return out;
    }
  if (on) throw Error(fmt::format("training.fused_mlp: on, but the model cannot run fused: {}", why));
  fused_note_ = "layers' own ops: " + why;
  return model_->forward(x);
}

StepResult Trainer::device_step(const torch::Tensor& x, const torch::Tensor& y) {
  model_->zero_grad(/*set_to_none=*/true);  // as PyTorch 2: parameters outside the graph stay untouched
  for (auto& p : extra_parameters_) p.mutable_grad() = torch::Tensor();
  batch_input_ = x;
  auto out = train_forward(x);
  auto loss = loss_of(out, y);
  auto objective = task_loss_weight_ == 1.0 ? loss : loss * task_loss_weight_;
  std::vector<torch::Tensor> terms(terms_.size());
  for (size_t t = 0; t < terms_.size(); ++t) {
    terms[t] = terms_[t]->compute(*this, ctx_);
    if (terms[t].defined()) objective = objective + terms[t];
  }
  if (objective.requires_grad()) objective.backward();  // else every parameter is frozen: nothing trains
  for (auto* c : all_) c->on_after_backward(*this, ctx_);
  if (fused_adam_) fused_adam_->step();
  else optimizer_->step();
  loss_sum_ += loss.detach().to(torch::kFloat64) * x.size(0);
  for (size_t t = 0; t < terms.size(); ++t)
    if (terms[t].defined()) term_sums_[t] += terms[t].detach().to(torch::kFloat64);
  auto output = out.detach();
  if (y.scalar_type() == torch::kInt64) correct_ += (output.argmax(1) == y).sum();
  batch_input_ = torch::Tensor();
  return {loss.detach(), output};
}

EpochMetrics Trainer::end_epoch(const data::Dataset& eval, double seconds) {
  EpochMetrics m;
  m.epoch = ctx_.epoch_index + 1;
  m.slot = ctx_.slot;
  const double samples = static_cast<double>(std::max<int64_t>(epoch_samples_, 1));
  m.train_loss = loss_sum_.item<double>() / samples;
  for (size_t t = 0; t < terms_.size(); ++t)
    m.values[terms_[t]->name()] = term_sums_[t].item<double>() / std::max<int64_t>(epoch_steps_, 1);
  m.seconds = seconds;
  m.train_accuracy = static_cast<double>(correct_.item<int64_t>()) / samples;
  m.samples_per_second = static_cast<double>(epoch_samples_) / std::max(m.seconds, 1e-9);
  m.lr = lr_of(*optimizer_);
  if (eval.size() > 0) m.eval = evaluate(eval);
  for (auto* c : all_) c->on_epoch_end(*this, ctx_, m);
  auto cost = graph_cost(model_);
  m.layer_costs = cost.layers;
  m.cost = cost.total;
  m.sparsity = cost.total.weights ? 1.0 - static_cast<double>(cost.total.nonzero) / cost.total.weights : 0.0;
  double terms = 0;
  for (const auto& term : terms_) terms += m.value(term->name());
  if (!std::isfinite(m.train_loss) || !std::isfinite(terms))
    throw Error(fmt::format("epoch {}: training loss is {} (diverged); lower the learning rate", m.epoch,
                            m.train_loss + terms));
  for (auto* c : all_) c->on_epoch_report(*this, ctx_, m);
  return m;
}

void Trainer::end_training() {
  for (auto* c : all_) c->on_train_end(*this, ctx_);
}

std::vector<EpochMetrics> Trainer::fit(const data::Dataset& train_in, const data::Dataset& eval_in, const FitOptions& fit) {
  // The whole dataset lives on the training device: one copy here, none per batch.
  const data::Dataset train = train_in.x.device() == device_ ? train_in : train_in.to(device_);
  const data::Dataset eval = eval_in.size() == 0 || eval_in.x.device() == device_ ? eval_in : eval_in.to(device_);
  const int64_t total = schedule_.total_epochs();
  int64_t start = 0;
  if (!fit.resume_from.empty()) {
    start = load_checkpoint(fit.resume_from);
    if (start > total)
      throw Error(fmt::format("--resume: the checkpoint has {} epochs done but the job asks for {}", start, total));
  }
  const int64_t end = fit.stop_after > 0 ? std::min(total, fit.stop_after) : total;
  const int64_t steps = (train.size() + options_.batch_size - 1) / options_.batch_size;
  begin_training(steps, start, !fit.resume_from.empty());
  std::vector<EpochMetrics> history;
  for (int64_t epoch = start; epoch < end; ++epoch) {
    begin_epoch(epoch);
    data::Batches batches(train, options_.batch_size, /*shuffle=*/true, options_.seed, epoch);
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t b = 0; b < batches.count(); ++b) {
      auto [x, y] = batches.get(b);
      step(x, y);
    }
    // A GPU's steps are queued: the epoch ends when the device is done, not when the host is.
    if (device_.is_cuda()) torch::cuda::synchronize();
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    history.push_back(end_epoch(eval, seconds));
  }
  ctx_.epoch_index = std::max(start, end);
  ctx_.epoch = static_cast<double>(ctx_.epoch_index);
  end_training();
  return history;
}

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

namespace {

// A checkpoint ends in a trailer "sparq-crc32:" + 8 hex digits of the CRC-32 of the archive before
// it, so a damaged file is found before resuming from it (a flipped byte in a tensor would
// otherwise load without complaint).
constexpr const char* kChecksumTag = "sparq-crc32:";
constexpr size_t kTrailer = 12 + 8;

std::string crc_hex(const std::string& bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  for (size_t at = 0; at < bytes.size();) {  // zlib takes at most 4 GiB a call
    uInt n = static_cast<uInt>(std::min<size_t>(bytes.size() - at, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(bytes.data() + at), n);
    at += n;
  }
  return fmt::format("{:08x}", static_cast<uint32_t>(crc));
}

std::string with_checksum(std::string archive) {
  std::string tail = kChecksumTag + crc_hex(archive);
  return archive + tail;
}

}  // namespace

/// The archive of a checkpoint file, its checksum checked (files written before checksums: as they are).
std::string read_checkpoint_archive(const std::string& path) {
  std::string bytes = io::read_file(path);
  if (bytes.size() < kTrailer || bytes.compare(bytes.size() - kTrailer, 12, kChecksumTag) != 0) {
    // No trailer: a checkpoint of an earlier version ends in the zip directory's last record
    // (torch writes no zip comment); anything else was cut short or appended to.
    if (bytes.size() >= 22 && bytes.compare(bytes.size() - 22, 4, "PK\x05\x06") == 0) return bytes;
    throw Error(fmt::format("{}: the checkpoint is damaged (it ends neither in its checksum nor in an archive's end: "
                            "it was cut short or written to after it was saved); resume from a good copy or start again",
                            path));
  }
  std::string stored = bytes.substr(bytes.size() - 8);
  bytes.resize(bytes.size() - kTrailer);
  if (crc_hex(bytes) != stored)
    throw Error(fmt::format("{}: the checkpoint is damaged (its checksum does not match: the file changed after it was "
                            "written); resume from a good copy or start again",
                            path));
  return bytes;
}

void Trainer::save_checkpoint(const std::string& path, int64_t epochs_done) {
  torch::serialize::OutputArchive root, weights, optim;
  // Flat, fully-qualified names ("layer1.0.conv1.weight"), so loading can check each one.
  for (const auto& p : model_->named_parameters()) weights.write(p.key(), p.value());
  for (const auto& b : model_->named_buffers()) weights.write(b.key(), b.value(), /*is_buffer=*/true);
  if (fused_adam_) fused_adam_->sync_host();
  optimizer_->save(optim);
  root.write("model", weights);
  root.write("optimizer", optim);
  root.write("epochs_done", torch::tensor(epochs_done));
  root.write("cpu_rng_state", at::detail::getDefaultCPUGenerator().get_state());
  // The groups' learning rates and weight decays as schedules left them (LibTorch's optimizer
  // archive does not keep them).
  std::vector<double> rates, decays;
  for (size_t g = 0; g < optimizer_->param_groups().size(); ++g) rates.push_back(lr(g)), decays.push_back(weight_decay(g));
  root.write("group_lr", torch::tensor(rates, torch::kFloat64));
  root.write("group_weight_decay", torch::tensor(decays, torch::kFloat64));
  for (auto* c : all_) c->save(root);
  // Whole, then renamed over the old one: a full disk or an interrupted save leaves the previous
  // checkpoint as it was (and is an error, not an abort).
  std::ostringstream bytes;
  root.save_to(bytes);
  io::write_file_atomic(path, with_checksum(bytes.str()));
}

int64_t Trainer::load_checkpoint(const std::string& path) {
  const std::string bytes = read_checkpoint_archive(path);
  try {
    torch::serialize::InputArchive root, weights, optim;
    root.load_from(bytes.data(), bytes.size());
    root.read("model", weights);
    root.read("optimizer", optim);
    load_weights(weights, path);
    optimizer_->load(optim);
    if (fused_adam_) fused_adam_->sync_device();
    invalidate_step_graph();
    torch::Tensor epochs, rng;
    root.read("epochs_done", epochs);
    root.read("cpu_rng_state", rng);
    auto gen = at::detail::getDefaultCPUGenerator();
    gen.set_state(rng);
    torch::Tensor rates, decays;
    if (root.try_read("group_lr", rates) && root.try_read("group_weight_decay", decays) &&
        rates.numel() == static_cast<int64_t>(optimizer_->param_groups().size()))
      for (size_t g = 0; g < optimizer_->param_groups().size(); ++g) {
        set_lr(std::vector<size_t>{g}, rates[static_cast<int64_t>(g)].item<double>());
        set_weight_decay(std::vector<size_t>{g}, decays[static_cast<int64_t>(g)].item<double>());
      }
    for (auto* c : all_) c->load(root);
    return epochs.item<int64_t>();
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    throw Error(fmt::format("{}: checkpoint does not fit this model and optimizer: {}", path,
                            msg.substr(0, msg.find('\n'))));
  } catch (const std::exception& e) {  // LibTorch's TorchScript reader of the archive's records
    std::string msg = e.what();
    throw Error(fmt::format("{}: not a checkpoint sparq can read: {}", path, msg.substr(0, msg.find('\n'))));
  }
}

}  // namespace sparq::train
