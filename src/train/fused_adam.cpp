#include "train/fused_adam.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cmath>
#include <optional>
#include <sstream>
#include <type_traits>

#include "sparq/error.h"
#ifdef SPARQ_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include "train/adam_cuda.h"
#endif

namespace sparq::train {

namespace {

/// The key of a parameter's state in torch::optim's map (a string in LibTorch 1.x, the
/// TensorImpl's address in later versions).
template <typename Map>
typename Map::key_type state_key(const torch::Tensor& p) {
  using Key = typename Map::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream s;
    s << p.unsafeGetTensorImpl();
    return s.str();
  } else {
    return static_cast<Key>(p.unsafeGetTensorImpl());
  }
}

template <typename State>
State* state_of(torch::optim::Optimizer& optimizer, const torch::Tensor& p, bool create) {
  auto& states = optimizer.state();
  auto key = state_key<std::decay_t<decltype(states)>>(p);
  auto it = states.find(key);
  if (it != states.end()) return static_cast<State*>(it->second.get());
  if (!create) return nullptr;
  auto state = std::make_unique<State>();
  state->step(0);
  state->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
  state->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
  auto* raw = state.get();
  states[key] = std::move(state);
  return raw;
}

bool is_adamw(torch::optim::Optimizer& optimizer) {
  return dynamic_cast<torch::optim::AdamW*>(&optimizer) != nullptr;
}

/// LibTorch 1.13's Adam/AdamW constants of one step, as its tensor ops round them (float scalars).
struct AdamConstants {
  AdamConstants(double lr, double beta1, double beta2, double eps, double wd, bool adamw, int64_t step)
      : beta1(static_cast<float>(beta1)), one_minus_beta1(static_cast<float>(1 - beta1)),
        beta2(static_cast<float>(beta2)), one_minus_beta2(static_cast<float>(1 - beta2)),
        bias2_sqrt(static_cast<float>(std::sqrt(1 - std::pow(beta2, static_cast<double>(step))))),
        eps(static_cast<float>(eps)),
        neg_step_size(static_cast<float>(-(lr / (1 - std::pow(beta1, static_cast<double>(step)))))),
        weight_decay(static_cast<float>(wd)), decay(static_cast<float>(1 - lr * wd)), adamw(adamw), decays(wd != 0) {}
  float beta1, one_minus_beta1, beta2, one_minus_beta2, bias2_sqrt, eps, neg_step_size, weight_decay, decay;
  bool adamw, decays;
};

/// One Adam step of elements [b, e), op by op as LibTorch computes it: grad.add(p, wd) (AdamW:
/// p.mul_(1 - lr·wd)), exp_avg.mul_(β1).add_(g, 1 - β1), exp_avg_sq.mul_(β2).addcmul_(g, g, 1 - β2),
/// denom = sqrt(v) / sqrt(1 - β2^t) + eps, p.addcdiv_(m, denom, -lr / (1 - β1^t)). `Fma`: its
/// AVX2/AVX-512 kernels fuse add_'s and addcmul_'s multiply-add (one rounding), the baseline
/// kernels do not.
template <bool Fma>
inline __attribute__((always_inline)) void adam_loop(float* __restrict w, const float* __restrict g,
                                                     float* __restrict m, float* __restrict v, int64_t b, int64_t e,
                                                     const AdamConstants& c) {
  auto madd = [](float x, float y, float z) {
    if constexpr (Fma) return __builtin_fmaf(x, y, z);
    else return x * y + z;
  };
  for (int64_t k = b; k < e; ++k) {
    float gk = g[k], wk = w[k];
    if (c.decays) {
      if (c.adamw) wk = wk * c.decay;
      else gk = madd(wk, c.weight_decay, gk);
    }
    const float mk = madd(gk, c.one_minus_beta1, m[k] * c.beta1);
    const float vk = madd(c.one_minus_beta2 * gk, gk, v[k] * c.beta2);
    m[k] = mk, v[k] = vk;
    const float denom = std::sqrt(vk) / c.bias2_sqrt + c.eps;
    w[k] = wk + c.neg_step_size * mk / denom;
  }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) void adam_range_fma(float* w, const float* g, float* m, float* v, int64_t b,
                                                         int64_t e, const AdamConstants& c) {
  adam_loop<true>(w, g, m, v, b, e, c);
}
#endif

void adam_range_plain(float* w, const float* g, float* m, float* v, int64_t b, int64_t e, const AdamConstants& c) {
  adam_loop<false>(w, g, m, v, b, e, c);
}

/// The loop LibTorch's own kernels would run on this CPU (its dispatch: AVX2 and up fuse).
void adam_range(float* w, const float* g, float* m, float* v, int64_t b, int64_t e, const AdamConstants& c) {
#if defined(__x86_64__)
  static const bool fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (fma) return adam_range_fma(w, g, m, v, b, e, c);
#endif
  adam_range_plain(w, g, m, v, b, e, c);
}

}  // namespace

std::string FusedAdam::refusal(torch::optim::Optimizer& optimizer) {
  const bool adamw = is_adamw(optimizer);
  if (!adamw && !dynamic_cast<torch::optim::Adam*>(&optimizer)) return {};  // SGD keeps no count: capturable as is
  std::optional<bool> on_cuda;
  for (auto& group : optimizer.param_groups()) {
    const bool amsgrad = adamw ? static_cast<torch::optim::AdamWOptions&>(group.options()).amsgrad()
                               : static_cast<torch::optim::AdamOptions&>(group.options()).amsgrad();
    if (amsgrad) return "amsgrad is not fused";
    for (auto& p : group.params()) {
      if (p.scalar_type() != torch::kFloat32 || !p.is_contiguous() || !(p.is_cpu() || p.is_cuda()))
        return "the fused Adam takes contiguous float32 parameters";
      if (on_cuda.value_or(p.is_cuda()) != p.is_cuda()) return "the fused Adam takes parameters on one device";
      on_cuda = p.is_cuda();
    }
  }
#ifndef SPARQ_WITH_CUDA
  if (on_cuda.value_or(false)) return "this build has no CUDA kernels";
#endif
  return {};
}

FusedAdam::FusedAdam(torch::optim::Optimizer& optimizer) : optimizer_(optimizer), adamw_(is_adamw(optimizer)) {
  for (size_t g = 0; g < optimizer.param_groups().size(); ++g)
    for (auto& p : optimizer.param_groups()[g].params()) params_.push_back(p), group_of_.push_back(g);
  cuda_ = !params_.empty() && params_.front().is_cuda();
  // CUDA: the step counts live on the device; the CPU steps count in the torch::optim state itself.
  if (cuda_)
    steps_ = torch::zeros({static_cast<int64_t>(params_.size())},
                          torch::TensorOptions().dtype(torch::kInt64).device(params_.front().device()));
  sync_device();
}

FusedAdam::~FusedAdam() = default;

template <typename Fn>
void FusedAdam::with_state(size_t j, bool create, Fn&& fn) {
  auto& options = optimizer_.param_groups()[group_of_[j]].options();
  if (adamw_)
    fn(state_of<torch::optim::AdamWParamState>(optimizer_, params_[j], create),
       static_cast<torch::optim::AdamWOptions&>(options));
  else
    fn(state_of<torch::optim::AdamParamState>(optimizer_, params_[j], create),
       static_cast<torch::optim::AdamOptions&>(options));
}

void FusedAdam::step() {
  torch::NoGradGuard no_grad;
  if (cuda_) cuda_step();
  else cpu_step();
}

namespace {
/// The kernels write through raw pointers: count the in-place change as LibTorch's own ops do
/// (autograd's saved-tensor checks and version-keyed caches rely on it).
void mark_written(std::initializer_list<const torch::Tensor*> tensors) {
  for (const auto* t : tensors) t->unsafeGetTensorImpl()->bump_version();
}
}  // namespace

void FusedAdam::cpu_step() {
  for (size_t j = 0; j < params_.size(); ++j) {
    auto& p = params_[j];
    if (!p.grad().defined()) continue;
    with_state(j, /*create=*/true, [&](auto* state, const auto& o) {
      state->step(state->step() + 1);
      const auto g = p.grad().contiguous();
      AdamConstants c(o.lr(), std::get<0>(o.betas()), std::get<1>(o.betas()), o.eps(), o.weight_decay(), adamw_,
                      state->step());
      float *w = p.data_ptr<float>(), *m = state->exp_avg().template data_ptr<float>(),
            *v = state->exp_avg_sq().template data_ptr<float>();
      const float* gp = g.data_ptr<float>();
      at::parallel_for(0, p.numel(), 32768, [&](int64_t b, int64_t e) { adam_range(w, gp, m, v, b, e, c); });
      mark_written({&p, &state->exp_avg(), &state->exp_avg_sq()});
    });
  }
}

void FusedAdam::cuda_step() {
#ifdef SPARQ_WITH_CUDA
  cudaStreamCaptureStatus capture_status = cudaStreamCaptureStatusNone;
  cudaStreamIsCapturing(c10::cuda::getCurrentCUDAStream(), &capture_status);
  const bool capturing = capture_status != cudaStreamCaptureStatusNone;
  cuda::AdamBatch batch;
  int64_t max_numel = 0;
  auto flush = [&] {
    cuda::adam_step(batch, max_numel);
    batch.count = 0, max_numel = 0;
  };
  int64_t* steps = steps_.data_ptr<int64_t>();
  for (size_t j = 0; j < params_.size(); ++j) {
    auto& p = params_[j];
    auto& grad = p.mutable_grad();
    if (!grad.defined()) continue;
    if (!grad.is_contiguous()) grad = grad.contiguous();
    with_state(j, /*create=*/!capturing, [&](auto* state, const auto& o) {
      if (!state) throw Error("cannot capture the step: a parameter has no optimizer state yet");
      auto& t = batch.t[batch.count++];
      t.param = p.data_ptr<float>();
      t.grad = grad.data_ptr<float>();
      t.exp_avg = state->exp_avg().template data_ptr<float>();
      t.exp_avg_sq = state->exp_avg_sq().template data_ptr<float>();
      t.step = steps + j;
      t.numel = p.numel();
      t.lr = o.lr(), t.beta1 = std::get<0>(o.betas()), t.beta2 = std::get<1>(o.betas()), t.eps = o.eps();
      t.weight_decay = o.weight_decay(), t.decoupled = adamw_;
      mark_written({&p, &state->exp_avg(), &state->exp_avg_sq()});
    });
    max_numel = std::max(max_numel, p.numel());
    if (batch.count == cuda::kAdamBatch) flush();
  }
  if (batch.count) flush();
#else
  throw Error("the fused Adam's CUDA kernels need a CUDA build");
#endif
}

void FusedAdam::sync_host() {
  if (!cuda_) return;
  auto host = steps_.cpu();
  for (size_t j = 0; j < params_.size(); ++j)
    with_state(j, /*create=*/false, [&](auto* state, const auto&) {
      if (state) state->step(host[static_cast<int64_t>(j)].item<int64_t>());
    });
}

void FusedAdam::sync_device() {
  std::vector<int64_t> host(params_.size(), 0);
  // Loaded moments: on the parameter's device, contiguous (the loops index them flat).
  for (size_t j = 0; j < params_.size(); ++j)
    with_state(j, /*create=*/false, [&](auto* state, const auto&) {
      if (!state) return;
      state->exp_avg(state->exp_avg().to(params_[j].device()).contiguous());
      state->exp_avg_sq(state->exp_avg_sq().to(params_[j].device()).contiguous());
      host[j] = state->step();
    });
  if (cuda_) steps_.copy_(torch::tensor(host, torch::kInt64));
}

}  // namespace sparq::train
