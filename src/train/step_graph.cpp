#include "train/step_graph.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <sstream>
#include <type_traits>

#include "sparq/error.h"
#ifdef SPARQ_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
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

}  // namespace

// ---- DeviceAdam ----

std::string DeviceAdam::refusal(torch::optim::Optimizer& optimizer) {
#ifndef SPARQ_WITH_CUDA
  return "this build has no CUDA kernels";
#else
  const bool adamw = is_adamw(optimizer);
  if (!adamw && !dynamic_cast<torch::optim::Adam*>(&optimizer)) return {};  // SGD keeps no count: capturable as is
  for (auto& group : optimizer.param_groups()) {
    const bool amsgrad = adamw ? static_cast<torch::optim::AdamWOptions&>(group.options()).amsgrad()
                               : static_cast<torch::optim::AdamOptions&>(group.options()).amsgrad();
    if (amsgrad) return "amsgrad is not fused";
    for (auto& p : group.params())
      if (!p.is_cuda() || p.scalar_type() != torch::kFloat32 || !p.is_contiguous())
        return "the fused Adam takes contiguous float32 CUDA parameters";
  }
  return {};
#endif
}

DeviceAdam::DeviceAdam(torch::optim::Optimizer& optimizer) : optimizer_(optimizer) {
  for (size_t g = 0; g < optimizer.param_groups().size(); ++g)
    for (auto& p : optimizer.param_groups()[g].params()) params_.push_back(p), group_of_.push_back(g);
  torch::Device device = params_.empty() ? torch::Device(torch::kCPU) : params_.front().device();
  steps_ = torch::zeros({static_cast<int64_t>(params_.size())}, torch::TensorOptions().dtype(torch::kInt64).device(device));
  sync_device();
}

DeviceAdam::~DeviceAdam() = default;

void DeviceAdam::step() {
#ifdef SPARQ_WITH_CUDA
  torch::NoGradGuard no_grad;
  const bool adamw = is_adamw(optimizer_);
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
    torch::Tensor *exp_avg, *exp_avg_sq;
    double lr, beta1, beta2, eps, wd;
    auto fill = [&](auto* state, const auto& o) {
      if (!state) throw Error("cannot capture the step: a parameter has no optimizer state yet");
      exp_avg = const_cast<torch::Tensor*>(&state->exp_avg());
      exp_avg_sq = const_cast<torch::Tensor*>(&state->exp_avg_sq());
      lr = o.lr(), beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas()), eps = o.eps(), wd = o.weight_decay();
    };
    auto& options = optimizer_.param_groups()[group_of_[j]].options();
    if (adamw)
      fill(state_of<torch::optim::AdamWParamState>(optimizer_, p, !capturing),
           static_cast<torch::optim::AdamWOptions&>(options));
    else
      fill(state_of<torch::optim::AdamParamState>(optimizer_, p, !capturing),
           static_cast<torch::optim::AdamOptions&>(options));
    auto& t = batch.t[batch.count++];
    t.param = p.data_ptr<float>();
    t.grad = grad.data_ptr<float>();
    t.exp_avg = exp_avg->data_ptr<float>();
    t.exp_avg_sq = exp_avg_sq->data_ptr<float>();
    t.step = steps + j;
    t.numel = p.numel();
    t.lr = lr, t.beta1 = beta1, t.beta2 = beta2, t.eps = eps, t.weight_decay = wd, t.decoupled = adamw;
    max_numel = std::max(max_numel, t.numel);
    if (batch.count == cuda::kAdamBatch) flush();
  }
  if (batch.count) flush();
#else
  throw Error("DeviceAdam needs a CUDA build");
#endif
}

void DeviceAdam::sync_host() {
  auto host = steps_.cpu();
  const bool adamw = is_adamw(optimizer_);
  for (size_t j = 0; j < params_.size(); ++j) {
    const int64_t s = host[static_cast<int64_t>(j)].item<int64_t>();
    if (adamw) {
      if (auto* st = state_of<torch::optim::AdamWParamState>(optimizer_, params_[j], false)) st->step(s);
    } else if (auto* st = state_of<torch::optim::AdamParamState>(optimizer_, params_[j], false)) {
      st->step(s);
    }
  }
}

void DeviceAdam::sync_device() {
  std::vector<int64_t> host(params_.size(), 0);
  const bool adamw = is_adamw(optimizer_);
  // Loaded moments: on the parameter's device, contiguous (the kernel indexes them flat).
  auto place = [](auto* st, const torch::Tensor& p) {
    st->exp_avg(st->exp_avg().to(p.device()).contiguous());
    st->exp_avg_sq(st->exp_avg_sq().to(p.device()).contiguous());
    return st->step();
  };
  for (size_t j = 0; j < params_.size(); ++j) {
    if (adamw) {
      if (auto* st = state_of<torch::optim::AdamWParamState>(optimizer_, params_[j], false)) host[j] = place(st, params_[j]);
    } else if (auto* st = state_of<torch::optim::AdamParamState>(optimizer_, params_[j], false)) {
      host[j] = place(st, params_[j]);
    }
  }
  steps_.copy_(torch::tensor(host, torch::kInt64));
}

// ---- StepGraph ----

#ifdef SPARQ_WITH_CUDA
struct StepGraph::Impl {
  at::cuda::CUDAGraph graph;
  bool captured = false;
};
#else
struct StepGraph::Impl {
  bool captured = false;
};
#endif

StepGraph::StepGraph() : impl_(std::make_unique<Impl>()) {}
StepGraph::~StepGraph() = default;

bool StepGraph::supported() {
#ifdef SPARQ_WITH_CUDA
  return true;
#else
  return false;
#endif
}

StepResult StepGraph::capture(const std::function<StepResult()>& body) {
#ifdef SPARQ_WITH_CUDA
  auto stream = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, x.device().index());
  torch::cuda::synchronize();
  StepResult warm;
  {
    c10::cuda::CUDAStreamGuard guard(stream);
    warm = body();  // this batch's step, and lazy state and handles made outside the graph
    stream.synchronize();
    try {
      impl_->graph.capture_begin();
      result = body();
      impl_->graph.capture_end();
      impl_->captured = true;
    } catch (const std::exception& e) {
      failure_ = e.what();
      failure_ = failure_.substr(0, failure_.find('\n'));
      try {
        impl_->graph.capture_end();
      } catch (...) {
      }
      cudaGetLastError();  // the capture's error is not this run's: clear it
      impl_ = std::make_unique<Impl>();
      result = {};
    }
  }
  torch::cuda::synchronize();
  return warm;
#else
  throw Error("CUDA graphs need a CUDA build");
#endif
}

void StepGraph::replay() {
#ifdef SPARQ_WITH_CUDA
  impl_->graph.replay();
#endif
}

bool StepGraph::captured() const { return impl_->captured; }

}  // namespace sparq::train
