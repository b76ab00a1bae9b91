// The fused Adam/AdamW (train/fused_adam.h) against LibTorch's torch::optim: on the CPU the same
// parameters to the bit, on CUDA within 1e-6 (the GPU test runs with scripts/gpu_build.sh test).
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "sparq/train/trainer.h"
#include "train/fused_adam.h"

using namespace sparq;

namespace {

struct Pair {
  std::vector<torch::Tensor> reference, fused;
};

/// 20 steps of the same random gradients into LibTorch's optimizer and the fused one, over
/// tensors with and without a vector tail; returns both parameter lists.
Pair twenty_steps(const std::string& name, double weight_decay, torch::Device device) {
  train::TrainOptions o;
  o.optimizer = name;
  o.lr = 0.01;
  o.weight_decay = weight_decay;
  torch::manual_seed(0);
  Pair r;
  for (auto shape : {std::vector<int64_t>{64, 16}, {64}, {5, 3000}, {7}, {40000}}) {
    auto init = torch::randn(shape).to(device);
    r.reference.push_back(init.clone().requires_grad_(true)), r.fused.push_back(init.clone().requires_grad_(true));
  }
  auto reference = train::make_optimizer(r.reference, o), fused_holder = train::make_optimizer(r.fused, o);
  EXPECT_EQ(train::FusedAdam::refusal(*fused_holder), "");
  train::FusedAdam fused(*fused_holder);
  for (int step = 0; step < 20; ++step) {
    for (size_t t = 0; t < r.reference.size(); ++t) {
      auto g = torch::randn(r.reference[t].sizes()).to(device);
      r.reference[t].mutable_grad() = g.clone(), r.fused[t].mutable_grad() = g.clone();
    }
    reference->step();
    fused.step();
  }
  fused.sync_host();
  for (const auto& st : fused_holder->state()) {
    auto steps = name == "adam" ? static_cast<torch::optim::AdamParamState&>(*st.second).step()
                                : static_cast<torch::optim::AdamWParamState&>(*st.second).step();
    EXPECT_EQ(steps, 20);
  }
  return r;
}

}  // namespace

TEST(FusedAdam, CpuStepsAreLibTorchsToTheBit) {
  // To the bit against Debian's LibTorch 1.13 (CI's, and what the CPU build links). PyTorch 2.x's
  // CPU kernels (the GPU machine's LibTorch, AVX-512) round some steps differently, and the
  // differences grow over 20 steps: there within 1e-5 relative.
  const bool bit_exact = TORCH_VERSION_MAJOR < 2;
  for (const char* name : {"adam", "adamw"})
    for (double wd : {0.0, 1e-2}) {
      SCOPED_TRACE(std::string(name) + " weight decay " + std::to_string(wd));
      auto r = twenty_steps(name, wd, torch::kCPU);
      for (size_t t = 0; t < r.reference.size(); ++t) {
        const bool same = bit_exact ? torch::equal(r.reference[t], r.fused[t])
                                    : torch::allclose(r.reference[t], r.fused[t], 1e-5, 1e-8);
        EXPECT_TRUE(same) << "tensor " << t << ": " << (r.reference[t] - r.fused[t]).abs().max().item<double>();
      }
    }
}

TEST(FusedAdam, RefusesWhatItDoesNotFuse) {
  auto d = torch::zeros({3}, torch::kFloat64).requires_grad_(true);
  torch::optim::Adam doubles({d});
  EXPECT_EQ(train::FusedAdam::refusal(doubles), "the fused Adam takes contiguous float32 parameters");
  auto f = torch::zeros({3}).requires_grad_(true);
  torch::optim::Adam amsgrad({f}, torch::optim::AdamOptions(0.1).amsgrad(true));
  EXPECT_EQ(train::FusedAdam::refusal(amsgrad), "amsgrad is not fused");
  torch::optim::SGD sgd({f}, 0.1);
  EXPECT_EQ(train::FusedAdam::refusal(sgd), "");  // SGD is LibTorch's own, capturable as it is
}

TEST(FusedAdamCuda, EqualsLibTorchAdam) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (const char* name : {"adam", "adamw"}) {
    SCOPED_TRACE(name);
    auto r = twenty_steps(name, 1e-2, torch::kCUDA);
    for (size_t t = 0; t < r.reference.size(); ++t)
      EXPECT_TRUE(torch::allclose(r.reference[t], r.fused[t], 1e-6, 1e-6))
          << (r.reference[t] - r.fused[t]).abs().max().item<double>();
  }
}
