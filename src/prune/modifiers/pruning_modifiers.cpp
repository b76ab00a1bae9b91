// SparseML's pruning modifiers (spec sparseml §2.8-2.11): gradual magnitude pruning (the
// GMPruning family and the legacy GradualKS, Structured with parameter groups, Movement), ACDC
// phases, and ConstantPruning keeping a loaded model's zeros. Each owns one mask per parameter in
// the run's ParamMasks; an update computes the target sparsity for its epoch, the scores, and
// new masks.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <cmath>
#include <sstream>
#include <string>
#include <type_traits>

#include "sparq/error.h"
#include "sparq/prune/mask_creators.h"
#include "sparq/prune/param_masks.h"
#include "sparq/train/modifiers.h"

namespace sparq::prune {

namespace {

/// LibTorch's key of a parameter's optimizer state: its TensorImpl address as text (1.x, what
/// c10::guts::to_string wrote) or the address itself (2.x).
template <typename Key>
Key optimizer_state_key(const torch::Tensor& p) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream text;
    text << p.unsafeGetTensorImpl();
    return text.str();
  } else {
    return p.unsafeGetTensorImpl();
  }
}

using train::ModifierCallback;
using train::ModifierSetup;
using train::Trainer;

std::shared_ptr<ParamMasks> masks_of(ModifierSetup& s) {
  if (!s.shared_masks) s.shared_masks = std::make_shared<ParamMasks>(s.graph);
  return std::static_pointer_cast<ParamMasks>(s.shared_masks);
}

class PruningModifier : public ModifierCallback {
 public:
  PruningModifier(ModifierSetup& s, bool periodic) : ModifierCallback(s.modifier, periodic), board_(masks_of(s)) {
    owner_ = board_->owner();
    for (size_t i = 0; i < s.targets.params.size(); ++i) {
      const auto& [node, target] = s.targets.params[i];
      entries_.push_back(&board_->entry(node, target));
      final_.push_back(i < s.targets.final_sparsity.size() ? s.targets.final_sparsity[i] : m_.final_sparsity);
    }
    init_.assign(entries_.size(), m_.init_sparsity);
  }

  void finalize(Trainer&) override { board_->bake(); }

 protected:
  void install(const std::vector<torch::Tensor>& masks) {
    for (size_t i = 0; i < entries_.size(); ++i) board_->set(owner_, *entries_[i], masks[i]);
  }
  void disable() {
    for (auto* e : entries_) board_->remove(owner_, *e);
  }
  /// Magnitude scores of the weights as the layers use them.
  virtual torch::Tensor score(size_t i) { return board_->masked(*entries_[i]).abs(); }

  /// Masks for per-target sparsities (global: one target for all).
  std::vector<torch::Tensor> masks_for(const std::vector<double>& sparsity) {
    std::vector<torch::Tensor> scores;
    for (size_t i = 0; i < entries_.size(); ++i) scores.push_back(score(i));
    try {
      if (m_.global_sparsity) {
        for (double s : sparsity)
          if (s != sparsity.front())
            throw Error("global_sparsity needs one sparsity for all targets (the final_sparsity mapping gives several)");
        return global_masks(scores, sparsity.front(), m_.mask_type);
      }
      std::vector<torch::Tensor> out(entries_.size());
      std::vector<bool> done(entries_.size(), false);
      for (const auto& group : m_.param_name_groups) {  // pruned on the same indices
        std::vector<size_t> members;
        for (const auto& name : group)
          for (size_t i = 0; i < entries_.size(); ++i)
            if (entries_[i]->what() == name) members.push_back(i);
        if (members.empty()) continue;
        std::vector<torch::Tensor> member_scores;
        for (auto i : members) member_scores.push_back(scores[i]);
        auto shared = shared_masks(member_scores, sparsity[members.front()], m_.mask_type);
        for (size_t j = 0; j < members.size(); ++j) out[members[j]] = shared[j], done[members[j]] = true;
      }
      for (size_t i = 0; i < entries_.size(); ++i)
        if (!done[i]) out[i] = sparsity_mask(scores[i], sparsity[i], m_.mask_type);
      return out;
    } catch (const ConfigError&) {
      throw;
    } catch (const Error& e) {
      throw ConfigError(fmt::format("{}: !{}: {}", m_.where, m_.tag, e.what()));
    }
  }

  void save_state(torch::serialize::OutputArchive& a) override {
    for (size_t i = 0; i < entries_.size(); ++i) {
      auto it = entries_[i]->parts.find(owner_);
      if (it != entries_[i]->parts.end()) a.write(fmt::format("mask_{}", i), it->second);
    }
    a.write("init", torch::tensor(init_, torch::kFloat64));
  }
  void load_state(torch::serialize::InputArchive& a) override {
    for (size_t i = 0; i < entries_.size(); ++i) {
      torch::Tensor m;
      if (a.try_read(fmt::format("mask_{}", i), m)) board_->restore(owner_, *entries_[i], m);
    }
    torch::Tensor init;
    a.read("init", init);
    for (size_t i = 0; i < init_.size(); ++i) init_[i] = init[static_cast<int64_t>(i)].item<double>();
  }

  std::shared_ptr<ParamMasks> board_;
  int owner_ = 0;
  std::vector<ParamMasks::Entry*> entries_;
  std::vector<double> init_, final_;
};

/// GMPruning, Magnitude, GlobalMagnitude, Structured, GradualKS (legacy) and Movement.
class GradualPruning : public PruningModifier {
 public:
  GradualPruning(ModifierSetup& s, bool movement) : PruningModifier(s, true), movement_(movement) {
    if (movement_)
      for (auto* e : entries_) scores_.push_back(torch::zeros_like(e->param));
  }

  void initialize(Trainer& t, double epoch) override {
    if (m_.init_from_param && !clock_.started)  // each parameter's sparsity when training starts
      for (size_t i = 0; i < entries_.size(); ++i) {
        auto w = board_->masked(*entries_[i]);
        init_[i] = static_cast<double>((w == 0).sum().item<int64_t>()) / static_cast<double>(std::max<int64_t>(w.numel(), 1));
      }
  }

  void update(Trainer& t, double e, bool starting, bool ending) override {
    std::vector<double> s(entries_.size());
    for (size_t i = 0; i < s.size(); ++i)
      s[i] = interpolate_sparsity(e, m_.start_epoch, m_.end_epoch, init_[i], final_[i], m_.inter_func);
    applied_ = s;
    install(masks_for(s));
    if (ending && !m_.leave_enabled) disable();
  }

  /// Movement: the running sum of -0.01 grad x w over every optimizer step (a step whose
  /// gradient holds a NaN is skipped).
  void pre_step(Trainer& t, double) override {
    if (!movement_) return;
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < entries_.size(); ++i) {
      const auto& g = entries_[i]->param.grad();
      if (!g.defined() || g.isnan().any().item<bool>()) continue;
      scores_[i].add_(g * entries_[i]->param, -0.01);
    }
  }

  const std::vector<double>& applied() const { return applied_; }

 protected:
  torch::Tensor score(size_t i) override {
    if (!movement_) return PruningModifier::score(i);
    // pruned elements score below every live one, as their weights are zero in SparseML
    auto alive = entries_[i]->mask->mask;
    auto low = scores_[i].min() - 1;
    return torch::where(alive > 0, scores_[i], low);
  }
  void save_state(torch::serialize::OutputArchive& a) override {
    PruningModifier::save_state(a);
    for (size_t i = 0; i < scores_.size(); ++i) a.write(fmt::format("score_{}", i), scores_[i]);
  }
  void load_state(torch::serialize::InputArchive& a) override {
    PruningModifier::load_state(a);
    for (size_t i = 0; i < scores_.size(); ++i) a.read(fmt::format("score_{}", i), scores_[i]);
  }

 private:
  bool movement_;
  std::vector<torch::Tensor> scores_;
  std::vector<double> applied_;
};

/// ACDC: dense and compressed phases of `update_frequency` epochs; the last phase before the end
/// is compressed; entering a dense phase after a compressed one zeroes SGD's momentum buffers.
class AcdcPruning : public PruningModifier {
 public:
  explicit AcdcPruning(ModifierSetup& s) : PruningModifier(s, true) {}

  bool compressed_at(double e) const {
    int64_t phase = static_cast<int64_t>(std::floor((e - m_.start_epoch) / m_.update_frequency));
    return !(phase % 2 == 0 && e < m_.end_epoch - m_.update_frequency);
  }
  void update(Trainer& t, double e, bool, bool ending) override {
    bool compressed = compressed_at(e);
    std::vector<double> s(entries_.size(), compressed ? m_.final_sparsity : 0.0);
    install(masks_for(s));
    if (!compressed && was_compressed_ && m_.momentum_buffer_reset) reset_momentum_ = true;
    was_compressed_ = compressed;
    if (ending && !m_.leave_enabled) disable();
  }
  void post_step(Trainer& t, double) override {
    using StateKey = std::decay_t<decltype(t.optimizer().state())>::key_type;
    if (!reset_momentum_) return;
    reset_momentum_ = false;
    torch::NoGradGuard no_grad;
    for (auto* e : entries_) {
      auto it = t.optimizer().state().find(optimizer_state_key<StateKey>(e->param));
      if (it == t.optimizer().state().end()) continue;
      if (auto* sgd = dynamic_cast<torch::optim::SGDParamState*>(it->second.get()))
        if (sgd->momentum_buffer().defined()) sgd->momentum_buffer().zero_();
    }
  }

 private:
  bool was_compressed_ = false, reset_momentum_ = false;
};

/// ConstantPruning: from its start, the zeros the weights have stay zero (until its end).
class ConstantPruning : public PruningModifier {
 public:
  explicit ConstantPruning(ModifierSetup& s) : PruningModifier(s, true) { clock_.frequency = -1; }
  void update(Trainer& t, double, bool starting, bool ending) override {
    // "currently non-zero" is only recomputed when some mask of the parameter changed: between
    // changes the weights' zeros are the masks' own (documented in docs/sparseml.md)
    for (size_t i = 0; i < entries_.size(); ++i) {
      auto* e = entries_[i];
      if (!starting && seen_.size() == entries_.size() && seen_[i] == e->version) continue;
      board_->set(owner_, *e, (board_->masked(*e) != 0).to(e->param.dtype()));
    }
    seen_.clear();
    for (auto* e : entries_) seen_.push_back(e->version);
    if (ending) disable();
  }

 private:
  std::vector<int64_t> seen_;
};

const bool registered = [] {
  for (const char* type : {"GMPruningModifier", "MagnitudePruningModifier", "GlobalMagnitudePruningModifier",
                           "StructuredPruningModifier"})
    train::register_modifier(type, [](ModifierSetup& s) { return std::make_shared<GradualPruning>(s, false); });
  train::register_modifier("MovementPruningModifier",
                           [](ModifierSetup& s) { return std::make_shared<GradualPruning>(s, true); });
  train::register_modifier("ACDCPruningModifier", [](ModifierSetup& s) { return std::make_shared<AcdcPruning>(s); });
  train::register_modifier("ConstantPruningModifier",
                           [](ModifierSetup& s) { return std::make_shared<ConstantPruning>(s); });
  return true;
}();

}  // namespace

}  // namespace sparq::prune
