// MDMM, the modified differential method of multipliers (Platt & Barr, NIPS 1987; spec §2.7): a
// sparsity metric g(W) held to a target by a per-layer Lagrange multiplier with damping. No mask
// in training; fine-tuning masks weights at |W| <= epsilon on every call.
#include <torch/torch.h>

#include "prune/methods_impl.h"

namespace sparq::prune {

namespace {

/// Identity forward, negated gradient: a descent optimizer then performs ascent on lambda.
struct GradientReversal : public torch::autograd::Function<GradientReversal> {
  static torch::Tensor forward(torch::autograd::AutogradContext*, const torch::Tensor& x) { return x.clone(); }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext*, torch::autograd::tensor_list g) {
    return {-g[0]};
  }
};

class MDMM : public PruningMethod {
 public:
  MDMM(const PruningSpec& spec, const std::vector<int64_t>& shape)
      : constraint_(spec.text("constraint_type")), target_(spec.number("target_value")),
        structured_(spec.text("metric_type") == "StructuredSparsity"), target_sparsity_(spec.number("target_sparsity")),
        rf_(spec.integer("rf")), epsilon_(spec.number("epsilon")), use_grad_(spec.flag("use_grad")),
        smooth_(spec.text("l0_mode") == "smooth"), mean_(spec.text("scale_mode") == "mean") {
    mask = register_buffer("mask", torch::ones(shape));
    scale = register_buffer("scale", torch::full({}, spec.number("scale")));
    damping = register_buffer("damping", torch::full({}, spec.number("damping")));
    constraint_lr = register_buffer("constraint_lr", torch::full({}, spec.number("constraint_lr")));
    if (use_grad_) {
      lmbda = register_parameter("lmbda", torch::ones({}));
    } else {
      lmbda = register_buffer("lmbda", torch::ones({}));
      prev_infs = register_buffer("prev_infs", torch::zeros({}));
    }
  }

  torch::Tensor apply(const torch::Tensor& w) override {
    auto kept = (w.abs() > epsilon_).to(w.scalar_type());
    if (stage_ == Stage::Training) {
      torch::NoGradGuard no_grad;
      mask.copy_(kept);
    }
    auto p = penalty(w);  // every stage: lambda moves in any train-mode forward, as in PQuantML
    last_penalty_ = stage_ == Stage::Training ? p : torch::Tensor();
    return stage_ == Stage::FineTuning ? w * kept : w;
  }

  torch::Tensor loss() override { return last_penalty_; }
  torch::Tensor hard_mask(const torch::Tensor&) override { return mask; }

  void pre_finetune() override {
    PruningMethod::pre_finetune();
    last_penalty_ = torch::Tensor();
    torch::NoGradGuard no_grad;  // the constraint is switched off
    constraint_lr.zero_();
    scale.zero_();
    lmbda.zero_();
  }

  /// g(W): the constrained metric.
  torch::Tensor metric(const torch::Tensor& w) const {
    if (structured_) {
      auto rows = w.reshape({w.size(0), -1});
      int64_t pad = (rf_ - rows.size(1) % rf_) % rf_;
      if (pad) rows = torch::constant_pad_nd(rows, {0, pad});
      auto norms = rows.reshape({rows.size(0), -1, rf_}).norm(2, -1);
      return (norms <= epsilon_).to(w.scalar_type()).mean();
    }
    auto flat = w.flatten();
    auto l0 = smooth_ ? torch::exp(-100 * flat.pow(2)).mean() : (flat.abs() <= epsilon_).to(w.scalar_type()).mean();
    auto g = (target_sparsity_ * target_sparsity_ - l0.pow(2)) * flat.abs().sum();
    return mean_ ? g / flat.numel() : g;
  }

  /// The infeasibility h >= 0 of the constraint g (=, <=, >=) target.
  torch::Tensor infeasibility(const torch::Tensor& w) const {
    auto g = metric(w);
    if (constraint_ == "Equality") return (g - target_).abs();
    if (constraint_ == "LessThanOrEqual") return torch::relu(g - target_);
    return torch::relu(target_ - g);
  }

  torch::Tensor mask, scale, damping, constraint_lr, lmbda, prev_infs;

 private:
  torch::Tensor penalty(const torch::Tensor& w) {
    auto h = infeasibility(w);
    torch::Tensor lam;
    if (use_grad_) {
      lam = GradientReversal::apply(lmbda);
    } else {
      torch::NoGradGuard no_grad;
      auto delta = constraint_lr * scale * prev_infs;  // the previous call's infeasibility
      lam = lmbda + delta;
      if (is_training()) {
        lmbda.add_(delta);
        prev_infs.copy_(h.detach());
      }
    }
    return scale * (lam * h + damping * h.pow(2) / 2);
  }

  std::string constraint_;
  double target_;
  bool structured_;
  double target_sparsity_;
  int64_t rf_;
  double epsilon_;
  bool use_grad_, smooth_, mean_;
  torch::Tensor last_penalty_;
};

}  // namespace

namespace {
std::shared_ptr<PruningMethod> make_mdmm(const PruningSpec& spec, const std::vector<int64_t>& shape) {
  return std::make_shared<MDMM>(spec, shape);
}

const bool registered = register_method({"mdmm", 7,
                                         {choice("constraint_type", "Equality", {"Equality", "LessThanOrEqual", "GreaterThanOrEqual"}),
                      number("target_value", 0.0),
                      choice("metric_type", "UnstructuredSparsity", {"UnstructuredSparsity", "StructuredSparsity"}),
                      number("target_sparsity", 0.9, 0.0, 1.0), integer("rf", 1, 1), number("epsilon", 1e-3, 0.0),
                      number("scale", 10.0, 0.0), number("damping", 1.0, 0.0), flag("use_grad", false),
                      choice("l0_mode", "coarse", {"coarse", "smooth"}), choice("scale_mode", "mean", {"mean", "sum"}),
                      number("constraint_lr", 1e-3, 0.0)},
                                         [](const PruningSpec& spec, const std::vector<int64_t>& shape, LayerKind kind) {
                                           return make_mdmm(spec, shape);
                                         },
                                         nullptr});  // prunes from the first training epoch

}  // namespace

}  // namespace sparq::prune
