// Wanda (Sun et al., ICLR 2024; spec §2.4): one-shot pruning by |W| times the L2 norm of each
// input feature over t_delta training batches, layer-wide (linear), per filter (conv) or N:M.
#include <fmt/format.h>
#include <torch/torch.h>

#include "prune/methods_impl.h"
#include "sparq/error.h"

namespace sparq::prune {

namespace {

class Wanda : public PruningMethod {
 public:
  Wanda(const PruningSpec& spec, const std::vector<int64_t>& shape, LayerKind kind)
      : kind_(kind), t_delta_(spec.integer("t_delta")), t_start_(spec.integer("t_start_collecting_batch")),
        use_budget_(spec.flag("calculate_pruning_budget")), target_(spec.number("sparsity")) {
    if (!spec.is_null("N")) n_ = spec.integer("N"), m_ = spec.integer("M");
    mask = register_buffer("mask", torch::ones(shape));
    inputs_sq_sum = register_buffer("inputs_sq_sum", torch::zeros({shape[1]}));
    batches_collected = register_buffer("batches_collected", torch::zeros({}, torch::kInt32));
    t = register_buffer("t", torch::zeros({}, torch::kInt32));
    done = register_buffer("done", torch::zeros({}, torch::kBool));
    sparsity = register_buffer("sparsity", torch::full({}, target_, torch::kFloat64));
  }

  torch::Tensor apply(const torch::Tensor& w) override {
    install_pending();
    return mask * w;
  }
  torch::Tensor hard_mask(const torch::Tensor&) override {
    install_pending();
    return mask;
  }

  void collect_input(const torch::Tensor& x, const torch::Tensor& w_eff) override {
    if (!is_training() || stage_ != Stage::Training) return;
    sync_host();
    if (host_done_ || host_t_ < t_start_) return;
    torch::NoGradGuard no_grad;
    auto q = x.pow(2).sum(axes_but_features(x.dim(), kind_)).to(inputs_sq_sum.scalar_type());
    if (q.numel() != inputs_sq_sum.numel())
      throw ModelError(fmt::format("wanda: the layer sees {} input features but its weight has {} (grouped "
                                   "convolutions are not supported by wanda)",
                                   q.numel(), inputs_sq_sum.numel()));
    inputs_sq_sum += q;
    batches_collected += 1;
    if (++host_batches_ < t_delta_) return;
    // This forward's graph still holds the old mask: the new one goes in at the next forward.
    pending_ = compute_mask(w_eff, inputs_sq_sum.sqrt());
    done.fill_(true);
    inputs_sq_sum.zero_();
    batches_collected.zero_();
    host_done_ = true, host_batches_ = 0;
  }

  void post_epoch(int64_t, int64_t) override {
    install_pending();
    sync_host();
    if (stage_ != Stage::Pretraining) t += 1, ++host_t_;
  }

  /// The counters on the host, read from the buffers once (after a checkpoint load), so that the
  /// training step never waits for the device.
  void sync_host() {
    if (host_t_ >= 0) return;
    host_t_ = t.item<int32_t>(), host_batches_ = batches_collected.item<int32_t>(), host_done_ = done.item<bool>();
  }

  std::optional<double> budget_target() const override {
    return use_budget_ ? std::optional<double>(target_) : std::nullopt;
  }
  void set_budget(double layer_sparsity) override { sparsity.fill_(layer_sparsity); }

  /// The mask of weight `w` for input-feature norms `norms` (public for the worked examples).
  torch::Tensor compute_mask(const torch::Tensor& w, const torch::Tensor& norms) {
    std::vector<int64_t> view(w.dim(), 1);
    view[1] = norms.numel();
    auto score = w.abs() * norms.to(w.scalar_type()).view(view);
    torch::Tensor rows;
    int64_t prune;
    if (n_ > 0 || m_ > 0) {
      if (score.numel() % m_ != 0)
        throw ModelError(fmt::format("wanda: N:M pruning needs the weight count {} to be a multiple of M = {}",
                                     score.numel(), m_));
      rows = score.reshape({-1, m_}), prune = n_;  // N of every M pruned, as PQuantML reads it
    } else if (kind_ == LayerKind::Linear) {
      rows = score.reshape({1, -1});  // the whole matrix is one group (PQuantML), not per row
      prune = static_cast<int64_t>(rows.size(1) * sparsity.item<double>());
    } else {
      rows = score.reshape({score.size(0), -1});  // per output filter
      prune = static_cast<int64_t>(rows.size(1) * sparsity.item<double>());
    }
    auto order = std::get<1>(rows.sort(/*stable=*/true, /*dim=*/1, /*descending=*/false));
    auto kept = torch::ones_like(rows, torch::kBool);
    if (prune > 0) kept.scatter_(1, order.narrow(1, 0, prune), false);
    return (kept.reshape(w.sizes()) & (w != 0)).to(mask.scalar_type());
  }

  torch::Tensor mask, inputs_sq_sum, batches_collected, t, done, sparsity;

 private:
  void install_pending() {
    if (!pending_.defined()) return;
    torch::NoGradGuard no_grad;
    mask.copy_(pending_);
    pending_ = torch::Tensor();
  }

  torch::Tensor pending_;
  LayerKind kind_;
  int64_t t_delta_, t_start_;
  bool use_budget_;
  double target_;
  int64_t n_ = 0, m_ = 0;
  int32_t host_t_ = -1, host_batches_ = 0;  ///< -1: not read from the buffers yet
  bool host_done_ = false;
};

}  // namespace

namespace {
std::shared_ptr<PruningMethod> make_wanda(const PruningSpec& spec, const std::vector<int64_t>& shape, LayerKind kind) {
  return std::make_shared<Wanda>(spec, shape, kind);
}

const bool registered = register_method({"wanda", 4,
                                         {optional_int("M", 1), optional_int("N", 0), number("sparsity", 0.9, 0.0, 1.0),
                      integer("t_delta", 100, 1), integer("t_start_collecting_batch", 100, 0),
                      flag("calculate_pruning_budget", true)},
                                         [](const PruningSpec& spec, const std::vector<int64_t>& shape, LayerKind kind) {
                                           return make_wanda(spec, shape, kind);
                                         },
                                         epoch_after_collection});

}  // namespace

}  // namespace sparq::prune
