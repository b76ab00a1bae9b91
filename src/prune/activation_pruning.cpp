// Activation pruning (spec §2.6): structured pruning of output neurons/filters whose outputs are
// positive in at most `threshold` of the cases, measured over windows of t_delta training batches.
#include <torch/torch.h>

#include "prune/methods_impl.h"

namespace sparq::prune {

namespace {

class ActivationPruning : public PruningMethod {
 public:
  ActivationPruning(const PruningSpec& spec, const std::vector<int64_t>& shape, LayerKind kind)
      : kind_(kind), threshold_(spec.number("threshold")), t_delta_(spec.integer("t_delta")),
        t_start_(spec.integer("t_start_collecting_batch")) {
    mask = register_buffer("mask", torch::ones(row_shape(shape)));
    mask_placeholder = register_buffer("mask_placeholder", torch::ones(row_shape(shape)));
    activations = register_buffer("activations", torch::zeros({shape[0]}));
    batches_collected = register_buffer("batches_collected", torch::zeros({}, torch::kInt32));
    t = register_buffer("t", torch::zeros({}, torch::kInt32));
  }

  torch::Tensor apply(const torch::Tensor& w) override {
    return stage_ == Stage::Pretraining ? w : mask * w;  // the bias stays, as in PQuantML
  }
  torch::Tensor hard_mask(const torch::Tensor& w) override { return mask.expand_as(w); }

  void collect_output(const torch::Tensor& y) override {
    if (!is_training() || stage_ != Stage::Training) return;
    sync_host();
    if (host_t_ < t_start_) return;
    torch::NoGradGuard no_grad;
    activations += (y > 0).to(activations.scalar_type()).mean(axes_but_features(y.dim(), kind_));
    batches_collected += 1;
    int32_t batches = ++host_batches_;
    if (batches < t_delta_) return;
    auto positive = activations / batches;
    mask_placeholder.copy_((positive > threshold_).to(mask.scalar_type()).view(mask.sizes()));
    activations.zero_();
    batches_collected.zero_();
    t.zero_();  // the next window waits t_start_collecting_batch epochs again
    host_batches_ = 0, host_t_ = 0;
  }

  void post_epoch(int64_t, int64_t) override {
    torch::NoGradGuard no_grad;
    sync_host();
    if (stage_ != Stage::Pretraining) t += 1, ++host_t_;
    mask.copy_(mask_placeholder);
  }

  /// The counters on the host, read from the buffers once (after a checkpoint load), so that the
  /// training step never waits for the device.
  void sync_host() {
    if (host_t_ >= 0) return;
    host_t_ = t.item<int32_t>(), host_batches_ = batches_collected.item<int32_t>();
  }

  torch::Tensor mask, mask_placeholder, activations, batches_collected, t;

 private:
  LayerKind kind_;
  double threshold_;
  int64_t t_delta_, t_start_;
  int32_t host_t_ = -1, host_batches_ = 0;  ///< -1: not read from the buffers yet
};

}  // namespace

namespace {
std::shared_ptr<PruningMethod> make_activation_pruning(const PruningSpec& spec, const std::vector<int64_t>& shape,
                                                       LayerKind kind) {
  return std::make_shared<ActivationPruning>(spec, shape, kind);
}

const bool registered = register_method({"activation_pruning", 6,
                                         {number("threshold", 0.3, 0.0, 1.0), integer("t_delta", 50, 1),
                      integer("t_start_collecting_batch", 50, 0)},
                                         [](const PruningSpec& spec, const std::vector<int64_t>& shape, LayerKind kind) {
                                           return make_activation_pruning(spec, shape, kind);
                                         },
                                         epoch_after_collection});

}  // namespace

}  // namespace sparq::prune
