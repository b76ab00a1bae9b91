// AutoSparse (Kundu et al., 2023; spec §2.5): learnable soft threshold sign(W) relu(|W| - sigmoid(T))
// whose backward leaks alpha into pruned weights; alpha anneals to 0 over each stage.
#include <torch/torch.h>

#include <cmath>

#include "prune/methods_impl.h"

namespace sparq::prune {

namespace {

/// max(z, 0) forward; derivative 1 where z > 0, alpha elsewhere, and 0 below the median of z when
/// `backward_sparsity`.
struct LeakyShrink : public torch::autograd::Function<LeakyShrink> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& z, double alpha,
                               bool backward_sparsity) {
    ctx->save_for_backward({z});
    ctx->saved_data["alpha"] = alpha;
    ctx->saved_data["sparse"] = backward_sparsity;
    return torch::relu(z);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad) {
    auto z = ctx->get_saved_variables()[0];
    double alpha = ctx->saved_data["alpha"].toDouble();
    auto d = torch::where(z > 0, torch::ones_like(z), torch::full_like(z, alpha));
    if (ctx->saved_data["sparse"].toBool()) {
      int64_t k = std::max<int64_t>(static_cast<int64_t>(0.5 * z.numel()), 1);
      auto kth = std::get<0>(z.flatten().topk(k)).min();
      d = torch::where(z < kth, torch::zeros_like(d), d);
    }
    return {grad[0] * d, torch::Tensor(), torch::Tensor()};
  }
};

class AutoSparse : public PruningMethod {
 public:
  AutoSparse(const PruningSpec& spec, const std::vector<int64_t>& shape)
      : alpha0_(spec.number("alpha")), reset_epoch_(spec.integer("alpha_reset_epoch")),
        backward_sparsity_(spec.flag("backward_sparsity")) {
    threshold = register_parameter("threshold", torch::full(threshold_shape(spec.text("threshold_type"), shape),
                                                            spec.number("threshold_init")));
    mask = register_buffer("mask", torch::ones(shape));
    alpha = register_buffer("alpha", torch::full({}, alpha0_));
  }

  torch::Tensor apply(const torch::Tensor& w) override {
    if (stage_ == Stage::Pretraining) return w;
    if (stage_ == Stage::FineTuning) return mask * w;  // no shrinkage, as PQuantML
    auto rows = w.reshape({w.size(0), -1});
    auto z = rows.abs() - torch::sigmoid(threshold);
    {
      torch::NoGradGuard no_grad;
      mask.copy_((z > 0).to(mask.scalar_type()).reshape(w.sizes()));
    }
    if (host_alpha_ < 0) host_alpha_ = alpha.item<double>();  // once, or after a checkpoint load
    return (torch::sign(rows) * LeakyShrink::apply(z, host_alpha_, backward_sparsity_)).reshape(w.sizes());
  }

  torch::Tensor hard_mask(const torch::Tensor&) override { return mask; }

  void post_epoch(int64_t e, int64_t epochs) override {
    double x = static_cast<double>(e) / std::max<int64_t>(epochs, 1);
    double cosine = (1 + std::cos(M_PI * x)) / 2, logistic = 1 - 1 / (1 + std::exp(6 - 12 * x));
    torch::NoGradGuard no_grad;
    host_alpha_ = e >= reset_epoch_ ? 0.0 : alpha0_ * std::max(cosine, logistic);
    alpha.fill_(host_alpha_);
  }

  torch::Tensor threshold, mask, alpha;

 private:
  double alpha0_;
  int64_t reset_epoch_;
  bool backward_sparsity_;
  double host_alpha_ = -1;  ///< alpha on the host (the step never reads the device); -1: unread
};

}  // namespace

namespace {
std::shared_ptr<PruningMethod> make_autosparse(const PruningSpec& spec, const std::vector<int64_t>& shape) {
  return std::make_shared<AutoSparse>(spec, shape);
}

const bool registered = register_method({"autosparse", 5,
                                         {number("alpha", 0.5, 0.0), integer("alpha_reset_epoch", 90, 0), integer("autotune_epochs", 10, 0),
                      flag("backward_sparsity", false), number("threshold_init", -5.0),
                      choice("threshold_type", "channelwise", {"channelwise", "layerwise", "weightwise"})},
                                         [](const PruningSpec& spec, const std::vector<int64_t>& shape, LayerKind kind) {
                                           return make_autosparse(spec, shape);
                                         },
                                         nullptr});  // prunes from the first training epoch

}  // namespace

}  // namespace sparq::prune
