#include "train/builtin.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>

#include "sparq/error.h"
#include "sparq/prune/budget.h"

namespace sparq::train {

// ---- StageHooks ----

namespace {
/// The stage every method is in once the hooks of boundary b ran (b = global epochs done).
prune::Stage stage_after_boundary(const Schedule& s, int64_t b) {
  if (b < s.pretraining_epochs) return prune::Stage::Pretraining;
  if (b < s.pretraining_epochs + s.rounds * s.epochs) return prune::Stage::Training;
  return prune::Stage::FineTuning;
}
}  // namespace

void StageHooks::on_train_begin(Trainer& t, const TrainContext& ctx) {
  if (!ctx.resumed) {
    boundary(t.schedule(), ctx.start_epoch);
    return;
  }
  // The checkpoint holds what the hooks up to its epoch did; the stage itself is not state.
  if (done_boundary_ < 0) done_boundary_ = ctx.start_epoch;  // a checkpoint from before the count was saved
  for (auto& wl : layers_)
    if (wl.layer->pruning()) wl.layer->pruning()->set_stage(stage_after_boundary(t.schedule(), done_boundary_));
}

void StageHooks::on_epoch_begin(Trainer& t, const TrainContext& ctx) {
  for (auto& wl : layers_)
    if (wl.layer->pruning()) wl.layer->pruning()->pre_epoch(ctx.slot.epoch, ctx.slot.stage_epochs);
}

void StageHooks::on_epoch_end(Trainer& t, const TrainContext& ctx, EpochMetrics&) {
  for (auto& wl : layers_) {
    auto method = wl.layer->pruning();
    if (!method) continue;
    method->post_epoch(ctx.slot.epoch, ctx.slot.stage_epochs);
    if (wl.layer->enable_pruning) method->update_mask(wl.layer->weight.detach());
  }
}

void StageHooks::on_epoch_report(Trainer& t, const TrainContext& ctx, const EpochMetrics& m) {
  // Between epochs, once the epoch's numbers are measured and before a checkpoint keeps them.
  boundary(t.schedule(), m.epoch);
}

void StageHooks::boundary(const Schedule& s, int64_t b) {
  if (b <= done_boundary_) return;  // a resumed run: these hooks already ran
  done_boundary_ = b;
  const int64_t training_end = s.pretraining_epochs + s.rounds * s.epochs;
  if (b == s.pretraining_epochs) {
    for (auto& wl : layers_)
      if (wl.layer->pruning()) wl.layer->pruning()->post_pretrain();
    apply_global_budget();
  }
  for (int64_t r = 0; r < s.rounds; ++r)
    if (b == s.pretraining_epochs + (r + 1) * s.epochs) post_round_rule(s, r);
  if (b == training_end)
    for (auto& wl : layers_)
      if (wl.layer->pruning()) wl.layer->pruning()->pre_finetune();
  if (b == s.total_epochs()) prune_weights();
  if (s.save_weights_epoch >= 0 && s.save_weights_epoch < s.epochs && b == s.pretraining_epochs + s.save_weights_epoch) {
    torch::NoGradGuard no_grad;
    for (auto& wl : layers_) snapshot_[wl.name] = wl.layer->weight.detach().clone();
  }
}

void StageHooks::rewind() {
  torch::NoGradGuard no_grad;
  for (auto& [name, layer] : layers_) {
    auto it = snapshot_.find(name);
    if (it != snapshot_.end()) layer->weight.copy_(it->second);  // weights only, as PQuantML
  }
}

void StageHooks::post_round_rule(const Schedule& s, int64_t round) {
  bool last = round == s.rounds - 1;
  auto post_round = [&] {
    for (auto& wl : layers_)
      if (wl.layer->pruning()) wl.layer->pruning()->post_round();
  };
  switch (s.rewind) {
    case Rewind::EveryRound: rewind(); break;
    case Rewind::PostTrainingStage: last ? rewind() : post_round(); break;
    case Rewind::Never: if (!last) post_round(); break;
  }
}

void StageHooks::apply_global_budget() {
  // PDP and Wanda: one magnitude ranking over every weight layer, pruning-disabled ones included.
  std::optional<double> target;
  for (auto& wl : layers_)
    if (wl.layer->pruning() && (target = wl.layer->pruning()->budget_target())) break;
  if (!target) return;
  std::vector<torch::Tensor> weights;
  for (auto& wl : layers_) weights.push_back(wl.layer->weight);
  auto budgets = prune::layer_budgets(weights, *target);
  for (size_t l = 0; l < layers_.size(); ++l)
    if (auto method = layers_[l].layer->pruning()) method->set_budget(budgets[l]);
}

void StageHooks::prune_weights() {
  // The end of the schedule: pruned weights become exact zeros in the parameters themselves.
  torch::NoGradGuard no_grad;
  for (auto& wl : layers_) {
    auto method = wl.layer->pruning();
    if (method && wl.layer->enable_pruning) wl.layer->weight.mul_(method->hard_mask(wl.layer->weight));
  }
}

void StageHooks::save(torch::serialize::OutputArchive& root) {
  root.write("stage_boundary_done", torch::tensor(done_boundary_));
  if (snapshot_.empty()) return;
  torch::serialize::OutputArchive snapshot;
  for (const auto& [name, w] : snapshot_) snapshot.write(name, w, /*is_buffer=*/true);
  root.write("rewind_snapshot", snapshot);
}

void StageHooks::load(torch::serialize::InputArchive& root) {
  torch::Tensor done;
  if (root.try_read("stage_boundary_done", done)) done_boundary_ = done.item<int64_t>();
  snapshot_.clear();
  torch::serialize::InputArchive snapshot;
  if (root.try_read("rewind_snapshot", snapshot))
    for (auto& wl : layers_) {
      torch::Tensor w;
      if (snapshot.try_read(wl.name, w, /*is_buffer=*/true)) snapshot_[wl.name] = w.to(wl.layer->weight.device());
    }
}

// ---- PruningLoss ----

torch::Tensor PruningLoss::compute(Trainer&, const TrainContext&) {
  torch::Tensor total;
  for (auto& wl : layers_) {
    auto method = wl.layer->pruning();
    if (!method || !wl.layer->enable_pruning || method->stage() != prune::Stage::Training) continue;
    auto term = method->loss();
    if (term.defined()) total = total.defined() ? total + term : term;
  }
  return total;
}

// ---- HgqLoss ----

void HgqLoss::on_epoch_begin(Trainer& t, const TrainContext& ctx) {
  // HGQ's terms start with the main training stage, as PQuantML's post-pretrain switch (a stage
  // change: the Trainer captures its step again).
  active_ = ctx.slot.stage != prune::Stage::Pretraining;
  beta_ = active_ ? curve_at(beta_curve_, static_cast<double>(ctx.epoch_index)) : 0.0;
  // On the device, filled in place: a captured step reads the epoch's beta.
  if (!beta_tensor_.defined()) beta_tensor_ = torch::zeros({}, torch::TensorOptions().device(t.device()));
  beta_tensor_.fill_(beta_);
}

torch::Tensor HgqLoss::compute(Trainer&, const TrainContext&) {
  if (!active_) return {};
  torch::Tensor total;
  for (auto& layer : layers_) {
    auto term = layer->hgq_loss(beta_tensor_);
    if (term.defined()) total = total.defined() ? total + term : term;
  }
  return total;
}

void HgqLoss::on_epoch_report(Trainer& t, const TrainContext& ctx, const EpochMetrics& m) {
  if (m.epoch != ctx.total_epochs) return;
  for (auto& layer : layers_)  // the learned widths become the final integer formats
    for (auto& [target, q] : layer->quantizers()) q->freeze();
}

// ---- EventFirer ----

void EventFirer::on_train_begin(Trainer& t, const TrainContext& ctx) {
  due_.clear();
  for (size_t e = 0; e < events_.size(); ++e) {
    const auto& ev = events_[e];
    if (ev.kind == Event::Kind::HgqBeta) continue;
    int64_t step = ev.at_step ? *ev.at_step : std::llround(ev.at_epoch * static_cast<double>(ctx.steps_per_epoch));
    due_.emplace_back(step, e);
  }
  std::stable_sort(due_.begin(), due_.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  // A resumed run replays what fired before its first step, in order: the state it set is not saved.
  next_ = 0;
  while (next_ < due_.size() && due_[next_].first < ctx.global_step) fire(t, events_[due_[next_++].second]);
}

void EventFirer::on_step_begin(Trainer& t, const TrainContext& ctx) {
  while (next_ < due_.size() && due_[next_].first <= ctx.global_step) fire(t, events_[due_[next_++].second]);
}

void EventFirer::fire(Trainer& t, const Event& e) {
  switch (e.kind) {
    case Event::Kind::LearningRate: t.set_lr(e.groups, e.value); break;
    case Event::Kind::WeightDecay: t.set_weight_decay(e.groups, e.value); break;
    case Event::Kind::Trainable: t.set_trainable(e.groups, e.value != 0); break;
    case Event::Kind::Quantization: t.set_quantization(e.value != 0); break;
    case Event::Kind::HgqBeta: break;
  }
}

}  // namespace sparq::train
