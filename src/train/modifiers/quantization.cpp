// QuantizationModifier (spec sparseml §2.12): the recipe's rules gave the Linear and Conv layers
// integer quantizers (weights int8 symmetric, inputs uint8 affine); they are off until the start
// (on before the first step when training starts inside the range), the observers stop at
// disable_quantization_observer_epoch, and batch norms use their running statistics from
// freeze_bn_stats_epoch on.
#include <torch/nn/modules/batchnorm.h>
#include <torch/torch.h>

#include "sparq/compress/compress.h"
#include "sparq/quant/integer.h"
#include "sparq/train/modifiers.h"

namespace sparq::train {

namespace {

class Quantization : public ModifierCallback {
 public:
  explicit Quantization(const Modifier& m) : ModifierCallback(m, false) {}

  void initialize(Trainer& t, double e) override {
    for (const auto& node : t.model()->nodes()) {
      if (auto pq = pq_layer(t.model(), node.name)) {
        bool has_integer = false;
        for (const auto& [target, q] : pq->quantizers()) has_integer = has_integer || quant::as_integer(q);
        if (has_integer) layers_.push_back(pq);
      }
      if (node.op.find("BatchNorm") != std::string::npos) batchnorms_.push_back(node.module.ptr());
    }
    set(clock_.started && !clock_.ended);
    if (clock_.started) fuse(t, /*copy_statistics=*/false);  // resumed: the checkpoint holds the folded values
    if (clock_.start_pending(e)) {  // SparseML applies QAT at initialize when its start has come
      fuse(t, true);
      set(true);
      clock_.mark(e, true, false);
    }
    observers_off_ = m_.disable_observer_epoch && e >= *m_.disable_observer_epoch;
    bn_frozen_ = m_.freeze_bn_epoch && e >= *m_.freeze_bn_epoch;
    if (observers_off_) freeze_observers();
  }
  void update(Trainer& t, double, bool starting, bool) override {
    if (starting) fuse(t, true), set(true);
  }
  void pre_step(Trainer& t, double e) override {
    if (!clock_.started) return;
    if (!observers_off_ && m_.disable_observer_epoch && e >= *m_.disable_observer_epoch) {
      observers_off_ = true;
      freeze_observers();
    }
    if (!bn_frozen_ && m_.freeze_bn_epoch && e >= *m_.freeze_bn_epoch) {
      bn_frozen_ = true;
      freeze_batchnorms();
    }
  }
  void on_epoch_begin(Trainer& t, const TrainContext&) override {
    if (bn_frozen_) freeze_batchnorms();  // the Trainer set the model to training mode
  }

 private:
  void set(bool on) {
    for (auto& pq : layers_) pq->set_quantization(on);
  }
  /// The deferred Conv-BN(-ReLU) folding (conv_bn_relus) starts with QAT.
  void fuse(Trainer& t, bool copy_statistics) {
    for (const auto& node : t.model()->nodes()) activate_fusion(t.model(), node.name, copy_statistics);
  }
  void freeze_observers() {
    for (auto& pq : layers_)
      for (auto [target, q] : pq->quantizers()) q->freeze();  // a copy of the holder: freeze() changes it
  }
  void freeze_batchnorms() {
    for (auto& bn : batchnorms_) bn->eval();
  }
  std::vector<std::shared_ptr<layers::PQLayer>> layers_;
  std::vector<std::shared_ptr<torch::nn::Module>> batchnorms_;
  bool observers_off_ = false, bn_frozen_ = false;
};

/// LayerPruningModifier: the layers are skipped (an identity of their input) from the start
/// until the end.
class LayerPruning : public ModifierCallback {
 public:
  LayerPruning(const Modifier& m, std::vector<std::string> layers) : ModifierCallback(m, false), layers_(std::move(layers)) {}
  void initialize(Trainer& t, double e) override {
    if (clock_.start_pending(e)) {
      set(t, true);
      clock_.mark(e, true, false);
    } else if (clock_.started && !clock_.ended) {
      set(t, true);
    }
  }
  void update(Trainer& t, double, bool starting, bool ending) override {
    if (starting) set(t, true);
    if (ending && m_.end_epoch >= 0) set(t, false);
  }

 private:
  void set(Trainer& t, bool skipped) {
    for (const auto& l : layers_) t.model()->set_skipped(l, skipped);
  }
  std::vector<std::string> layers_;
};

const bool registered =
    register_modifier("QuantizationModifier", [](ModifierSetup& s) { return std::make_shared<Quantization>(s.modifier); }) &&
    register_modifier("LayerPruningModifier",
                      [](ModifierSetup& s) { return std::make_shared<LayerPruning>(s.modifier, s.targets.layers); });

}  // namespace

}  // namespace sparq::train
