// PDP, parameter-free differentiable pruning (Cho et al., NeurIPS 2023; spec §2.3): a nearly
// binary soft mask sigma((w^2 - t^2)/tau) around the magnitude threshold t of the current target
// sparsity r, which ramps up linearly each round to the layer's share of the global budget.
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "prune/methods_impl.h"

namespace sparq::prune {

namespace {

/// The l-th and (l+1)-th largest of v[0, n) (0-based, descending, ties by index), as indices:
/// by selection with comparisons (O(n), but indirect). The fallback of select_pair.
std::pair<int64_t, int64_t> select_pair_by_order(const float* v, int64_t n, int64_t l) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t e = 0; e < n; ++e) order[static_cast<size_t>(e)] = e;
  auto before = [v](int64_t a, int64_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); };
  std::nth_element(order.begin(), order.begin() + l, order.end(), before);
  const int64_t kept = order[static_cast<size_t>(l)];
  return {kept, *std::min_element(order.begin() + l + 1, order.end(), before)};
}

/// The same pair for values >= 0 (magnitudes, norms), whose float bits sort as the values do: the
/// l-th largest by three histogram passes over 11, 11 and 10 bits (sequential reads, where the
/// comparison selection's indirect ones were most of PDP's CPU step on fc1's 50k weights), then
/// its index among equal values and the next one in the order. NaNs fall back to
/// select_pair_by_order.
std::pair<int64_t, int64_t> select_pair(const float* v, int64_t n, int64_t l) {
  auto bits = [](float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
  };
  uint32_t prefix = 0, mask = 0;
  int64_t rank = l;  // ends as the rank of the l-th among the values equal to it
  std::array<int64_t, 2048> hist;
  for (const auto& [shift, width] : {std::pair{21, 11}, std::pair{10, 11}, std::pair{0, 10}}) {
    const uint32_t digits = (1u << width) - 1;
    hist.fill(0);
    for (int64_t e = 0; e < n; ++e)
      if (const uint32_t u = bits(v[e]); (u & mask) == prefix) ++hist[(u >> shift) & digits];
    int64_t b = digits;
    for (; b > 0 && rank >= hist[static_cast<size_t>(b)]; --b) rank -= hist[static_cast<size_t>(b)];
    prefix |= static_cast<uint32_t>(b) << shift, mask |= digits << shift;
  }
  float value;
  std::memcpy(&value, &prefix, sizeof value);
  int64_t kept = -1, pruned = -1;
  for (int64_t e = 0; e < n && kept < 0; ++e)
    if (v[e] == value && rank-- == 0) kept = e;
  for (int64_t e = kept + 1; kept >= 0 && e < n && pruned < 0; ++e)
    if (v[e] == value) pruned = e;
  if (kept >= 0 && pruned < 0) {  // the largest value below, its first index
    float best = -1;
    for (int64_t e = 0; e < n; ++e)
      if (v[e] < value && v[e] > best) best = v[e], pruned = e;
  }
  if (kept < 0 || pruned < 0) return select_pair_by_order(v, n, l);
  return {kept, pruned};
}

float sigmoid_of(float w, float t2, float tau) { return 1.0f / (1.0f + std::exp(-((w * w - t2) / tau))); }

/// w · M(W; r) of an unstructured mask on the CPU in one pass, and its backward in one: the same
/// function as the composed ops (|w| against t = (|w_kept| + |w_pruned|) / 2, the gradient through
/// t reaching those two weights), without the ~20 full-size ops and autograd nodes they cost a
/// step. `kept` and `pruned` index the flattened weight.
struct SoftMaskedWeight : public torch::autograd::Function<SoftMaskedWeight> {
  static constexpr int64_t kChunk = 16384;  // fixed chunks: the sums are the same with any thread count

  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor w, int64_t kept, int64_t pruned,
                               double tau) {
    auto wc = w.contiguous();
    const float* p = wc.data_ptr<float>();
    const float t = (std::abs(p[kept]) + std::abs(p[pruned])) / 2, t2 = t * t, tf = static_cast<float>(tau);
    auto y = torch::empty_like(wc), m = torch::empty_like(wc);
    float *yp = y.data_ptr<float>(), *mp = m.data_ptr<float>();
    at::parallel_for(0, wc.numel(), kChunk, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) mp[j] = sigmoid_of(p[j], t2, tf), yp[j] = mp[j] * p[j];
    });
    ctx->save_for_backward({wc, m});
    ctx->saved_data["kept"] = kept;
    ctx->saved_data["pruned"] = pruned;
    ctx->saved_data["tau"] = tau;
    ctx->saved_data["t"] = static_cast<double>(t);
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    auto saved = ctx->get_saved_variables();
    const auto& w = saved[0];
    auto g = grad[0].contiguous();
    const float *p = w.data_ptr<float>(), *mp = saved[1].data_ptr<float>(), *gp = g.data_ptr<float>();
    const float tf = static_cast<float>(ctx->saved_data["tau"].toDouble());
    const int64_t n = w.numel(), chunks = (n + kChunk - 1) / kChunk;
    auto dw = torch::empty_like(w);
    float* dp = dw.data_ptr<float>();
    std::vector<double> sums(static_cast<size_t>(chunks), 0.0);  // Σ g·w·m(1-m), per chunk
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double acc = 0;
        for (int64_t j = c * kChunk, end = std::min(n, (c + 1) * kChunk); j < end; ++j) {
          const float slope = mp[j] * (1.0f - mp[j]);  // dσ/dd
          dp[j] = gp[j] * (mp[j] + p[j] * slope * (2.0f * p[j] / tf));
          acc += static_cast<double>(gp[j] * p[j] * slope);
        }
        sums[static_cast<size_t>(c)] = acc;
      }
    });
    double total = 0;
    for (double v : sums) total += v;
    // dL/dt = Σ g·w·σ'·(-2t/τ); t = (|w_kept| + |w_pruned|) / 2.
    const double dt = total * (-2.0 * ctx->saved_data["t"].toDouble() / ctx->saved_data["tau"].toDouble());
    for (const char* which : {"kept", "pruned"}) {
      const int64_t j = ctx->saved_data[which].toInt();
      dp[j] += static_cast<float>(0.5 * dt * static_cast<double>((p[j] > 0) - (p[j] < 0)));
    }
    return {dw, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

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
    const double rate = current_r();
    if (!structured_ && w.is_cpu() && w.scalar_type() == torch::kFloat32 && w.numel() >= 2 && rate > 0) {
      auto flat = w.detach().contiguous();
      auto values = flat.abs();
      const auto [kept, pruned] = select_pair(values.data_ptr<float>(), flat.numel(), threshold_rank(flat.numel(), rate));
      return SoftMaskedWeight::apply(w, kept, pruned, tau_);
    }
    return soft_mask(w, rate) * w;
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
    auto [kept, pruned] = order_statistics(values, threshold_rank(n, rate));
    auto t = (kept + pruned) / 2;
    return torch::sigmoid((values.pow(2) - t.pow(2)) / tau_);
  }

  /// The rank l of the smallest kept value among n (0-based, descending) at pruning rate `rate`.
  static int64_t threshold_rank(int64_t n, double rate) {
    return std::clamp<int64_t>(static_cast<int64_t>((1.0 - rate) * n) - 1, 0, n - 2);
  }

  /// The l-th and (l+1)-th largest of `values`, as elements of it (the gradient reaches the
  /// weights they come from): on the CPU by select_pair, elsewhere by sorting.
  static std::pair<torch::Tensor, torch::Tensor> order_statistics(const torch::Tensor& values, int64_t l) {
    auto flat = values.flatten();
    if (!flat.is_cpu() || flat.scalar_type() != torch::kFloat32) {
      auto sorted = std::get<0>(flat.sort(/*dim=*/0, /*descending=*/true));
      return {sorted[l], sorted[l + 1]};
    }
    auto host = flat.detach().contiguous();
    const auto [kept, pruned] = select_pair(host.data_ptr<float>(), host.numel(), l);
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
