// The fixed-point quantizer: the fused one-pass kernel against the same function built from
// LibTorch ops, on an activation-sized tensor (256 x 8 x 28 x 28 floats), forward and backward.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "sparq/quant/fixed_point.h"

namespace {

using namespace sparq::quant;

template <bool Fused>
void BM_quantize(benchmark::State& state) {
  torch::manual_seed(0);
  auto x = torch::randn({256, 8, 28, 28}) * 4;
  auto k = torch::tensor(1.f), i = torch::tensor(3.f), f = torch::tensor(4.f);
  bool backward = state.range(0);
  if (backward) x.requires_grad_(true);
  auto g = torch::ones_like(x);
  for (auto _ : state) {
    auto q = Fused ? fixed_quantize(x, k, i, f, RoundMode::RND, OverflowMode::SAT, true)
                   : fixed_quantize_composed(x, k, i, f, RoundMode::RND, OverflowMode::SAT, true);
    if (backward) q.backward(g);
    benchmark::DoNotOptimize(q.data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * x.numel());
}
BENCHMARK_TEMPLATE(BM_quantize, true)->ArgName("backward")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_quantize, false)->ArgName("backward")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
