#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>
#include <map>

#include "sparq/error.h"
#include "sparq/train/modifiers.h"

namespace sparq::train {

namespace {
std::map<std::string, ModifierFactory>& factories() {
  static std::map<std::string, ModifierFactory> table;
  return table;
}
}  // namespace

double epoch_at(int64_t step, int64_t spe) {
  if (spe <= 0) return 0;
  return static_cast<double>(step / spe) + static_cast<double>(step % spe) / static_cast<double>(spe);
}

bool ModifierClock::update_ready(double e) const {
  if (start_pending(e) || end_pending(e)) return true;
  if (!periodic || !started || ended || !(e > start)) return false;
  return frequency <= 0 || (last_update >= 0 && e >= last_update + frequency);
}

void ModifierClock::mark(double e, bool was_start_pending, bool was_end_pending) {
  if (was_start_pending) started = true;
  if (was_end_pending) ended = true;
  last_update = e;
}

bool register_modifier(const std::string& type, ModifierFactory factory) {
  factories()[type] = std::move(factory);
  return true;
}

ModifierCallback::ModifierCallback(const Modifier& m, bool periodic) : m_(m) {
  clock_.start = m.start_epoch, clock_.end = m.end_epoch, clock_.frequency = m.update_frequency;
  clock_.periodic = periodic;
}

void ModifierCallback::on_train_begin(Trainer& t, const TrainContext& ctx) {
  initialize(t, epoch_at(ctx.global_step, ctx.steps_per_epoch));
}

void ModifierCallback::on_after_backward(Trainer& t, const TrainContext& ctx) {
  const double e = epoch_at(ctx.global_step, ctx.steps_per_epoch);
  if (clock_.update_ready(e)) {
    bool starting = clock_.start_pending(e);
    // a modifier that starts and reaches its end on the same step ends in that update
    bool ending = clock_.end_pending(e) || (starting && clock_.end >= 0 && e >= clock_.end);
    update(t, e, starting, ending);
    clock_.mark(e, starting, ending);
  }
  pre_step(t, e);
}

void ModifierCallback::on_step_end(Trainer& t, const TrainContext& ctx) {
  post_step(t, epoch_at(ctx.global_step, ctx.steps_per_epoch));
}

void ModifierCallback::on_train_end(Trainer& t, const TrainContext&) { finalize(t); }

void ModifierCallback::save(torch::serialize::OutputArchive& root) {
  torch::serialize::OutputArchive a;
  a.write("clock", torch::tensor({clock_.started ? 1.0 : 0.0, clock_.ended ? 1.0 : 0.0, clock_.last_update},
                                 torch::kFloat64));
  save_state(a);
  root.write(key_, a);
}

void ModifierCallback::load(torch::serialize::InputArchive& root) {
  torch::serialize::InputArchive a;
  if (!root.try_read(key_, a)) return;
  torch::Tensor c;
  a.read("clock", c);
  clock_.started = c[0].item<double>() != 0, clock_.ended = c[1].item<double>() != 0;
  clock_.last_update = c[2].item<double>();
  load_state(a);
}

std::vector<std::shared_ptr<Callback>> make_modifiers(const Plan& plan, const Resolution& resolution,
                                                      models::Graph& graph) {
  std::vector<std::shared_ptr<Callback>> out;
  std::shared_ptr<void> shared;
  for (size_t i = 0; i < plan.modifiers.size(); ++i) {
    const auto& m = plan.modifiers[i];
    auto it = factories().find(m.type);
    if (it == factories().end()) {
      if (m.type == "EpochRangeModifier") continue;  // it only sets the run's epochs
      throw Error(fmt::format("{}: modifier {} has no runtime registered", m.where, m.type));
    }
    static const ModifierTargets none;
    ModifierSetup setup{m, i < resolution.modifiers.size() ? resolution.modifiers[i] : none, graph, shared};
    auto cb = it->second(setup);
    cb->key_ = fmt::format("modifier_{}", i);
    out.push_back(cb);
  }
  return out;
}

torch::Tensor parameter_of(const models::Graph& graph, const std::string& node, const std::string& target) {
  const auto& n = graph->node(node);
  if (!n.module.is_empty())
    for (const auto& p : n.module.ptr()->named_parameters(/*recurse=*/false))
      if (p.key() == target) return p.value();
  throw Error(fmt::format("{} has no parameter '{}'", node, target));
}

}  // namespace sparq::train
