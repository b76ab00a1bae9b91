// DST, dynamic sparse training (Liu et al., ICLR 2020; spec §2.2): trainable thresholds per
// layer, output row or weight; a binary step with a long-tailed surrogate derivative; the loss
// alpha * sum(exp(-T)) pushes thresholds up.
#include <torch/torch.h>

#include "prune/methods_impl.h"

namespace sparq::prune {

namespace {

/// 1[z > 0] forward; derivative 2 - 4|z| for |z| <= 0.4, 0.4 up to |z| = 1, 0 beyond.
struct SurrogateStep : public torch::autograd::Function<SurrogateStep> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& z) {
    ctx->save_for_backward({z});
    return (z > 0).to(z.scalar_type());
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad) {
    auto a = ctx->get_saved_variables()[0].abs();
    auto d = torch::where(a <= 0.4, 2 - 4 * a, torch::where(a <= 1.0, torch::full_like(a, 0.4), torch::zeros_like(a)));
    return {grad[0] * d};
  }
};

class DynamicSparseTraining : public PruningMethod {
 public:
  DynamicSparseTraining(const PruningSpec& spec, const std::vector<int64_t>& shape)
      : alpha_(spec.number("alpha")), max_pruned_(spec.number("max_pruning_pct")) {
    // PQuantML ignores threshold_init (always 0); sparq starts from it.
    threshold = register_parameter("threshold", torch::full(threshold_shape(spec.text("threshold_type"), shape),
                                                            spec.number("threshold_init")));
    mask = register_buffer("mask", torch::ones(shape));
  }

  torch::Tensor apply(const torch::Tensor& w) override {
    if (stage_ != Stage::Training) return w * mask;
    auto rows = w.reshape({w.size(0), -1});
    auto m = SurrogateStep::apply(rows.abs() - threshold);
    {
      // Nearly all pruned: start over from threshold 0. Decided on the device (no host read in the
      // step); the mask is then recomputed, which without a reset gives the same mask.
      torch::NoGradGuard no_grad;
      auto reset = 1.0 - m.sum().to(torch::kFloat64) / static_cast<double>(m.numel()) >= max_pruned_;
      threshold.masked_fill_(reset, 0.0);
    }
    m = SurrogateStep::apply(rows.abs() - threshold);
    m = m.reshape(w.sizes());
    {
      torch::NoGradGuard no_grad;
      mask.copy_(m);
    }
    return w * m;
  }

  torch::Tensor loss() override { return alpha_ * torch::exp(-threshold).sum(); }
  torch::Tensor hard_mask(const torch::Tensor&) override { return mask; }

  torch::Tensor threshold, mask;

 private:
  double alpha_, max_pruned_;
};

}  // namespace

std::vector<int64_t> threshold_shape(const std::string& type, const std::vector<int64_t>& shape) {
  int64_t fan_in = 1;
  for (size_t d = 1; d < shape.size(); ++d) fan_in *= shape[d];
  if (type == "layerwise") return {1, 1};
  if (type == "channelwise") return {shape[0], 1};
  return {shape[0], fan_in};  // weightwise
}

namespace {
std::shared_ptr<PruningMethod> make_dst(const PruningSpec& spec, const std::vector<int64_t>& shape) {
  return std::make_shared<DynamicSparseTraining>(spec, shape);
}

const bool registered = register_method({"dst", 2,
                                         {number("alpha", 5e-6, 0.0), number("max_pruning_pct", 0.99, 0.0, 1.0), number("threshold_init", 0.0),
                      choice("threshold_type", "channelwise", {"channelwise", "layerwise", "weightwise"})},
                                         [](const PruningSpec& spec, const std::vector<int64_t>& shape, LayerKind kind) {
                                           return make_dst(spec, shape);
                                         },
                                         nullptr});  // prunes from the first training epoch

}  // namespace

}  // namespace sparq::prune
