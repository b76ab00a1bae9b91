// SetWeightDecayModifier, TrainableParamsModifier, SetParamModifier, GradualParamModifier and
// SparsificationLoggingModifier (spec sparseml §2.6, §2.7, §2.14).
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <cmath>

#include "sparq/error.h"
#include "sparq/prune/mask_creators.h"
#include "sparq/train/modifiers.h"

namespace sparq::train {

namespace {

class SetWeightDecay : public ModifierCallback {
 public:
  explicit SetWeightDecay(const Modifier& m) : ModifierCallback(m, false) {}
  void update(Trainer& t, double, bool starting, bool) override {
    if (starting) t.set_weight_decay(std::vector<size_t>{m_.param_groups.begin(), m_.param_groups.end()}, m_.weight_decay);
  }
};

std::vector<torch::Tensor> parameters(const ModifierSetup& s) {
  std::vector<torch::Tensor> out;
  for (const auto& [node, target] : s.targets.params) out.push_back(parameter_of(s.graph, node, target));
  return out;
}

/// Freezes or unfreezes parameters from its start (also before the first step when training
/// starts inside its range) and restores their flags at its end.
class TrainableParams : public ModifierCallback {
 public:
  TrainableParams(const Modifier& m, std::vector<torch::Tensor> params) : ModifierCallback(m, false), params_(std::move(params)) {}
  void initialize(Trainer& t, double epoch) override {
    if (clock_.start_pending(epoch)) {
      apply();
      clock_.mark(epoch, true, false);
    } else if (clock_.started && !clock_.ended) {  // resumed inside the range
      apply();
    }
  }
  void update(Trainer& t, double, bool starting, bool ending) override {
    if (starting) apply();
    if (ending && m_.end_epoch >= 0)
      for (size_t i = 0; i < params_.size(); ++i) params_[i].requires_grad_(was_[i]);
  }

 private:
  void apply() {
    was_.clear();
    for (auto& p : params_) {
      was_.push_back(p.requires_grad());
      p.requires_grad_(m_.trainable);
      if (!m_.trainable) p.mutable_grad() = torch::Tensor();  // the optimizer skips it
    }
  }
  std::vector<torch::Tensor> params_;
  std::vector<bool> was_;
};

torch::Tensor value_tensor(const std::vector<double>& v, const std::vector<int64_t>& shape, const torch::Tensor& like) {
  return torch::tensor(v, torch::kFloat64).reshape(shape).to(like.options());
}

void check_shapes(const Modifier& m, const ModifierSetup& s, const std::vector<torch::Tensor>& params) {
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].sizes().vec() != m.val_shape)
      throw ConfigError(fmt::format("{}: !{}: the value has shape [{}], but {}.{} has shape [{}]", m.where, m.tag,
                                    fmt::join(m.val_shape, ", "), s.targets.params[i].first, s.targets.params[i].second,
                                    fmt::join(params[i].sizes(), ", ")));
}

class SetParam : public ModifierCallback {
 public:
  SetParam(const Modifier& m, std::vector<torch::Tensor> params) : ModifierCallback(m, false), params_(std::move(params)) {}
  void update(Trainer& t, double, bool starting, bool) override {
    if (!starting) return;
    torch::NoGradGuard no_grad;
    for (auto& p : params_) p.copy_(value_tensor(m_.val, m_.val_shape, p));
  }

 private:
  std::vector<torch::Tensor> params_;
};

class GradualParam : public ModifierCallback {
 public:
  GradualParam(const Modifier& m, std::vector<torch::Tensor> params) : ModifierCallback(m, true), params_(std::move(params)) {}
  void update(Trainer& t, double e, bool, bool) override {
    torch::NoGradGuard no_grad;
    double y = prune::interpolate_sparsity(e, m_.start_epoch, m_.end_epoch, 0.0, 1.0, m_.inter_func);  // the same curve
    for (auto& p : params_) {
      auto a = value_tensor(m_.init_val, m_.val_shape, p), b = value_tensor(m_.final_val, m_.val_shape, p);
      p.copy_(a + (b - a) * y);
    }
  }

 private:
  std::vector<torch::Tensor> params_;
};

/// Writes the sparsity of every weight layer to metrics.jsonl ("sparsity.<node>") at the epochs
/// it covers, and the fraction over them ("sparsity.model").
class SparsificationLogging : public ModifierCallback {
 public:
  explicit SparsificationLogging(const Modifier& m) : ModifierCallback(m, true) {}
  void on_epoch_end(Trainer& t, const TrainContext& ctx, EpochMetrics& metrics) override {
    double e = static_cast<double>(ctx.epoch_index);
    if (e < std::max(0.0, m_.start_epoch) || (m_.end_epoch >= 0 && e >= m_.end_epoch)) return;
    if (m_.update_frequency > 0 && std::fmod(e - std::max(0.0, m_.start_epoch), m_.update_frequency) != 0) return;
    double zeros = 0, total = 0;
    torch::NoGradGuard no_grad;
    for (const auto& node : t.model()->nodes()) {
      if (!node.info || !node.info->prunable) continue;
      auto pq = std::dynamic_pointer_cast<layers::PQWeightLayer>(node.module.ptr());
      auto w = pq ? pq->effective_weight() : parameter_of(t.model(), node.name, "weight");
      double z = static_cast<double>((w == 0).sum().item<int64_t>()), n = static_cast<double>(w.numel());
      metrics.values["sparsity." + node.name] = z / n;
      zeros += z, total += n;
    }
    if (total > 0) metrics.values["sparsity.model"] = zeros / total;
  }
};

const bool registered =
    register_modifier("SetWeightDecayModifier",
                      [](ModifierSetup& s) { return std::make_shared<SetWeightDecay>(s.modifier); }) &&
    register_modifier("TrainableParamsModifier",
                      [](ModifierSetup& s) { return std::make_shared<TrainableParams>(s.modifier, parameters(s)); }) &&
    register_modifier("SetParamModifier",
                      [](ModifierSetup& s) {
                        auto p = parameters(s);
                        check_shapes(s.modifier, s, p);
                        return std::make_shared<SetParam>(s.modifier, p);
                      }) &&
    register_modifier("GradualParamModifier",
                      [](ModifierSetup& s) {
                        auto p = parameters(s);
                        check_shapes(s.modifier, s, p);
                        return std::make_shared<GradualParam>(s.modifier, p);
                      }) &&
    register_modifier("SparsificationLoggingModifier",
                      [](ModifierSetup& s) { return std::make_shared<SparsificationLogging>(s.modifier); });

}  // namespace

}  // namespace sparq::train
