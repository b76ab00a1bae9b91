// SetLearningRateModifier, LearningRateModifier (StepLR, MultiStepLR, ExponentialLR as StepLR of
// one epoch, CosineAnnealingWarmRestarts) and LearningRateFunctionModifier (linear, cosine,
// cyclic_linear), spec sparseml §2.3-2.5. Step and multi-step schedules multiply the current
// learning rate at their boundaries, as torch's chainable schedulers do.
#include <torch/torch.h>

#include <cfloat>
#include <cmath>

#include "sparq/train/modifiers.h"

namespace sparq::train {

namespace {

std::vector<size_t> groups(const Modifier& m) { return {m.param_groups.begin(), m.param_groups.end()}; }

class SetLearningRate : public ModifierCallback {
 public:
  explicit SetLearningRate(const Modifier& m) : ModifierCallback(m, false) {}
  void update(Trainer& t, double epoch, bool starting, bool) override {
    if (starting && (m_.start_epoch < 0 || m_.start_epoch - epoch < DBL_EPSILON)) t.set_lr(groups(m_), m_.learning_rate);
  }
};

class LearningRateSchedule : public ModifierCallback {
 public:
  explicit LearningRateSchedule(const Modifier& m) : ModifierCallback(m, true) { clock_.frequency = -1; }

  void update(Trainer& t, double e, bool, bool) override {
    const int64_t spe = t.context().steps_per_epoch;
    if (!created_) {
      base_ = m_.init_lr_set ? m_.init_lr : t.lr(0);
      t.set_lr(std::vector<size_t>{}, base_);
    }
    if (e <= DBL_EPSILON) {  // the first step of training: no schedule step before the first optimizer step
      --counter_;
      return;
    }
    if (m_.end_epoch >= 0 && std::fabs(m_.end_epoch - e) <= DBL_EPSILON) return;  // frozen at the end
    const double start = std::max(0.0, m_.start_epoch);
    if (m_.lr_class == "CosineAnnealingWarmRestarts") {
      created_ = true;
      double tc = std::fmod(e - start, m_.cycle_epochs);
      t.set_lr(std::vector<size_t>{}, m_.lr_min + (base_ - m_.lr_min) * (1 + std::cos(M_PI * tc / m_.cycle_epochs)) / 2);
      return;
    }
    if (!created_) {
      created_ = true;
      counter_ += std::llround(e * static_cast<double>(spe));
    }
    if (!sized_) {  // the schedule in steps (again after a resume: spe is the run's)
      sized_ = true;
      step_size_ = std::llround(m_.step_size * static_cast<double>(spe));
      for (double ms : m_.milestones) milestone_steps_.push_back(std::llround((ms - start) * static_cast<double>(spe)));
    }
    double until = (m_.end_epoch >= 0 && e > m_.end_epoch) ? m_.end_epoch : e;
    int64_t target = std::llround(until * static_cast<double>(spe));
    for (; counter_ < target; ++counter_) scheduler_step(t);
  }

 private:
  /// torch's scheduler.step(): its epoch counter advances; at a boundary the lr is multiplied.
  void scheduler_step(Trainer& t) {
    ++sched_epoch_;
    double factor = 1;
    if (m_.lr_class == "StepLR") {
      if (step_size_ > 0 && sched_epoch_ % step_size_ == 0) factor = m_.gamma;
    } else {
      for (auto s : milestone_steps_)
        if (s == sched_epoch_) factor *= m_.gamma;
    }
    if (factor == 1) return;
    auto& groups = t.optimizer().param_groups();
    for (size_t g = 0; g < groups.size(); ++g) t.set_lr(std::vector<size_t>{g}, t.lr(g) * factor);
  }
  void save_state(torch::serialize::OutputArchive& a) override {
    a.write("state", torch::tensor({created_ ? 1.0 : 0.0, base_, static_cast<double>(counter_),
                                    static_cast<double>(sched_epoch_)},
                                   torch::kFloat64));
  }
  void load_state(torch::serialize::InputArchive& a) override {
    torch::Tensor s;
    a.read("state", s);
    created_ = s[0].item<double>() != 0, base_ = s[1].item<double>();
    counter_ = static_cast<int64_t>(s[2].item<double>()), sched_epoch_ = static_cast<int64_t>(s[3].item<double>());
  }

  bool created_ = false, sized_ = false;
  double base_ = 0;
  int64_t counter_ = 0, sched_epoch_ = 0, step_size_ = 0;
  std::vector<int64_t> milestone_steps_;
};

class LearningRateFunction : public ModifierCallback {
 public:
  explicit LearningRateFunction(const Modifier& m) : ModifierCallback(m, true) { clock_.frequency = -1; }
  void update(Trainer& t, double e, bool, bool) override {
    t.set_lr(groups(m_), value(e, t.context().steps_per_epoch));
  }
  /// f(E) of spec §2.5 (E past the end: f(end)).
  double value(double e, int64_t spe) const {
    const double init = m_.init_lr, fin = m_.final_lr;
    e = std::min(e, m_.end_epoch);
    if (m_.lr_func == "cyclic_linear") {
      const double s = static_cast<double>(spe);
      double cycle = m_.cycle_epochs * s, total = (m_.end_epoch - m_.start_epoch) * s, c = (e - m_.start_epoch) * s;
      if (c > std::floor(total / cycle) * cycle) cycle = std::fmod(total, cycle);
      double a = std::fmod(c, cycle);
      return init - (a / (cycle - 1)) * (init - fin);
    }
    const double s0 = m_.start_epoch > 0 ? m_.start_epoch : 0;
    const double x = (e - s0) / (m_.end_epoch - s0);
    if (m_.lr_func == "linear") return init + x * (fin - init);
    if (fin < init) return fin + (init - fin) * (1 + std::cos(M_PI * x)) / 2;
    return init + (fin - init) * (1 + std::cos(M_PI * x + M_PI)) / 2;
  }
};

const bool registered =
    register_modifier("SetLearningRateModifier",
                      [](ModifierSetup& s) { return std::make_shared<SetLearningRate>(s.modifier); }) &&
    register_modifier("LearningRateModifier",
                      [](ModifierSetup& s) { return std::make_shared<LearningRateSchedule>(s.modifier); }) &&
    register_modifier("LearningRateFunctionModifier",
                      [](ModifierSetup& s) { return std::make_shared<LearningRateFunction>(s.modifier); });

}  // namespace

}  // namespace sparq::train
