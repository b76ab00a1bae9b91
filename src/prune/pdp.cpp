// PDP, parameter-free differentiable pruning (Cho et al., NeurIPS 2023; spec §2.3): a nearly
// binary soft mask sigma((w^2 - t^2)/tau) around the magnitude threshold t of the current target
// sparsity r, which ramps up linearly each round to the layer's share of the global budget.
#include <torch/torch.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "prune/methods_impl.h"

namespace sparq::prune {

namespace {

class PDP : public PruningMethod {
 public:
  PDP(const PruningSpec& spec, const std::vector<int64_t>& shape, LayerKind kind)
      : target_(spec.number("sparsity")), epsilon_(spec.number("epsilon")), tau_(spec.number("temperature")),
        structured_(spec.flag("structured_pruning")) {
    (void)kind;  // rows of a linear weight and filters of a conv weight are both dim 0
    mask = register_buffer("mask", torch::ones(structured_ ? row_shape(shape) : shape));
    r = register_buffer("r", torch::full({}, target_, torch::kFloat32));
    init_r = register_buffer("init_r", torch::full({}, target_, torch::kFloat32));
  }

  torch::Tensor apply(const torch::Tensor& w) override {
    if (stage_ != Stage::Training) return mask * w;
    return soft_mask(w, current_r()) * w;
  }

  torch::Tensor hard_mask(const torch::Tensor& w) override {
    return (mask >= 0.5).to(w.scalar_type()).expand_as(w);
  }

  void pre_epoch(int64_t e, int64_t) override {
    torch::NoGradGuard no_grad;
    float ramp = static_cast<float>(std::min(1.0, epsilon_ * (e + 1)));
    r.fill_(ramp * init_r.item<float>());
    host_r_ = static_cast<double>(r.item<float>());
  }

  void update_mask(const torch::Tensor& raw) override {
    if (stage_ != Stage::Training) return;
    torch::NoGradGuard no_grad;
    mask.copy_(soft_mask(raw, current_r()));
  }

  void pre_finetune() override {
    PruningMethod::pre_finetune();
    torch::NoGradGuard no_grad;
    mask.copy_((mask >= 0.5).to(mask.scalar_type()));
  }

  std::optional<double> budget_target() const override { return target_; }
  void set_budget(double layer_sparsity) override {
    torch::NoGradGuard no_grad;
    init_r.fill_(static_cast<float>(layer_sparsity));
    host_r_ = -1;
  }

  torch::Tensor mask, r, init_r;

 private:
  double current_r() {
    if (host_r_ < 0) host_r_ = static_cast<double>(r.item<float>());  // after a checkpoint load
    return host_r_;
  }

  /// M(W; r): magnitudes (or row norms) against the midpoint between the smallest kept and the
  /// largest pruned one. Differentiable through the two values that define the threshold.
  torch::Tensor soft_mask(const torch::Tensor& w, double rate) {
    auto values = structured_ ? w.flatten(1).norm(2, 1).view(mask.sizes()) : w.abs();
    int64_t n = values.numel();
    // PQuantML still prunes the smallest weight at r = 0 and fails below two elements: prune nothing.
    if (n < 2 || rate <= 0) return torch::ones_like(values);
    int64_t i = static_cast<int64_t>((1.0 - rate) * n) - 1;
    int64_t l = std::clamp<int64_t>(i, 0, n - 2);
    auto [kept, pruned] = order_statistics(values, l);
    auto t = (kept + pruned) / 2;
    return torch::sigmoid((values.pow(2) - t.pow(2)) / tau_);
  }

  /// The l-th and (l+1)-th largest of `values` (0-based), as elements of it (the gradient reaches
  /// the weights they come from). On the CPU by selection (O(n); sorting fc1's 50k weights each
  /// step was the whole cost of PDP there), elsewhere by sorting.
  static std::pair<torch::Tensor, torch::Tensor> order_statistics(const torch::Tensor& values, int64_t l) {
    auto flat = values.flatten();
    if (!flat.is_cpu() || flat.scalar_type() != torch::kFloat32) {
      auto sorted = std::get<0>(flat.sort(/*dim=*/0, /*descending=*/true));
      return {sorted[l], sorted[l + 1]};
    }
    auto host = flat.detach().contiguous();
    const float* v = host.data_ptr<float>();
    const int64_t n = host.numel();
    std::vector<int64_t> order(static_cast<size_t>(n));
    for (int64_t e = 0; e < n; ++e) order[static_cast<size_t>(e)] = e;
    // Descending by value, ties by index: the selection is deterministic.
    auto before = [v](int64_t a, int64_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); };
    std::nth_element(order.begin(), order.begin() + l, order.end(), before);
    const int64_t kept = order[static_cast<size_t>(l)];
    const int64_t pruned = *std::min_element(order.begin() + l + 1, order.end(), before);
    return {flat[kept], flat[pruned]};
  }

  double target_, epsilon_, tau_;
  bool structured_;
  double host_r_ = -1;
};

}  // namespace

namespace {
std::shared_ptr<PruningMethod> make_pdp(const PruningSpec& spec, const std::vector<int64_t>& shape, LayerKind kind) {
  return std::make_shared<PDP>(spec, shape, kind);
}

const bool registered = register_method({"pdp", 3,
                                         {number("epsilon", 0.015, 0.0), number("sparsity", 0.8, 0.0, 1.0), number("temperature", 1e-5, 1e-30),
                      flag("structured_pruning", false)},
                                         [](const PruningSpec& spec, const std::vector<int64_t>& shape, LayerKind kind) {
                                           return make_pdp(spec, shape, kind);
                                         },
                                         nullptr});  // prunes from the first training epoch

}  // namespace

}  // namespace sparq::prune
