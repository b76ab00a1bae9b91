// The fixed-point and the integer quantizers: the fused kernels against the same function built
// from LibTorch ops, on an activation-sized tensor (256 x 8 x 28 x 28 floats), forward and
// backward; the integer one as a QAT int8 affine input lane, observer (EMA) included.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "sparq/quant/fixed_point.h"
#include "sparq/quant/integer.h"
#include "sparq/quant/quantizer.h"

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

template <bool Fused>
void BM_integer_qat(benchmark::State& state) {
  torch::manual_seed(0);
  auto x = torch::randn({256, 8, 28, 28}) * 4;
  IntegerSpec spec;  // NNI's int8 affine input lane
  spec.narrow = true;
  spec.method = IntegerMethod::Qat;
  IntegerQuantizer quantizer(spec, std::vector<int64_t>{8, 28, 28}, true);
  quantizer->train();
  quantizer->start();
  bool backward = state.range(0);
  if (backward) x.requires_grad_(true);
  auto g = torch::ones_like(x);
  for (auto _ : state) {
    auto q = Fused ? quantizer->forward(x) : quantizer->reference_forward(x);
    if (backward) q.backward(g);
    benchmark::DoNotOptimize(q.data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * x.numel());
}
BENCHMARK_TEMPLATE(BM_integer_qat, true)->ArgName("backward")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_integer_qat, false)->ArgName("backward")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

// An HGQ data lane with per-element widths ([1, features]), as the jet tagger's: forward and
// backward of a [batch, features] activation, the width gradients summed over the batch; `relu`:
// a ReLU after it, 1 inside the quantizer's pass (forward_relu), 2 as its own op.
void BM_hgq_lane(benchmark::State& state) {
  torch::manual_seed(0);
  const int64_t batch = state.range(0), features = state.range(1), relu = state.range(2);
  HgqSpec spec;
  spec.k = 1, spec.i = 3, spec.f = 4, spec.granularity = Granularity::PerWeight;
  FixedPointQuantizer q(QuantizerSpec{spec}, std::vector<int64_t>{features}, /*is_data=*/true);
  q->train();
  auto x = (torch::randn({batch, features}) * 4).requires_grad_(true);
  auto g = torch::ones_like(x);
  for (auto _ : state) {
    auto y = relu == 1 ? q->forward_relu(x) : relu == 2 ? torch::relu(q->forward(x)) : q->forward(x);
    y.backward(g);
    benchmark::DoNotOptimize(y.data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * x.numel());
}
BENCHMARK(BM_hgq_lane)
    ->ArgNames({"batch", "features", "relu"})
    ->Args({1, 2048, 0})->Args({1024, 5, 0})->Args({1024, 16, 0})->Args({1024, 64, 0})->Args({33200, 64, 0})
    ->Args({33200, 64, 1})->Args({33200, 64, 2})
    ->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
