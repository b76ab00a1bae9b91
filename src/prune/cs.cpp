// Continuous Sparsification (Savarese et al., NeurIPS 2020; spec §2.1): a sigmoid gate per weight
// whose temperature beta grows within a round; gates re-open between rounds.
#include <torch/torch.h>

#include <cmath>

#include "prune/methods_impl.h"

namespace sparq::prune {

namespace {

class ContinuousSparsification : public PruningMethod {
 public:
  ContinuousSparsification(const PruningSpec& spec, const std::vector<int64_t>& shape)
      : final_temp_(spec.number("final_temp")), decay_(spec.number("threshold_decay")) {
    double s0 = spec.number("threshold_init");
    s = register_parameter("s", torch::full(shape, s0));
    s_init = register_buffer("s_init", torch::full(shape, s0));
    scaling = register_buffer("scaling", torch::full(shape, 1.0 / (1.0 / (1.0 + std::exp(-s0)))));
    beta = register_buffer("beta", torch::ones({}));
    mask = register_buffer("mask", torch::ones(shape));
  }

  torch::Tensor apply(const torch::Tensor& w) override {
    if (stage_ != Stage::Training) return mask * w;
    auto m = gate();
    {
      torch::NoGradGuard no_grad;
      mask.copy_(m);
    }
    return m * w;
  }

  torch::Tensor loss() override {
    if (decay_ == 0) return {};
    return decay_ * gate().abs().sum();
  }

  torch::Tensor hard_mask(const torch::Tensor&) override { return (s > 0).to(s.scalar_type()); }

  void post_epoch(int64_t, int64_t epochs) override {
    double gamma = epochs > 1 ? std::pow(final_temp_, 1.0 / (epochs - 1)) : final_temp_;
    torch::NoGradGuard no_grad;
    beta.mul_(gamma);
  }

  void post_round() override {
    torch::NoGradGuard no_grad;
    s.copy_(torch::min(beta * s, s_init));  // open gates go back to s0; closed ones stay closed
    beta.fill_(1.0);
  }

  void pre_finetune() override {
    PruningMethod::pre_finetune();
    torch::NoGradGuard no_grad;
    mask.copy_(hard_mask(s));
  }

  torch::Tensor s, s_init, scaling, beta, mask;

 private:
  torch::Tensor gate() { return torch::sigmoid(beta * s) * scaling; }
  double final_temp_, decay_;
};

}  // namespace

namespace {
std::shared_ptr<PruningMethod> make_cs(const PruningSpec& spec, const std::vector<int64_t>& shape) {
  return std::make_shared<ContinuousSparsification>(spec, shape);
}

const bool registered = register_method({"cs", 1,
                                         {integer("final_temp", 200, 1), number("threshold_init", 0.0)},
                                         [](const PruningSpec& spec, const std::vector<int64_t>& shape, LayerKind kind) {
                                           return make_cs(spec, shape);
                                         },
                                         nullptr});  // prunes from the first training epoch

}  // namespace

}  // namespace sparq::prune
