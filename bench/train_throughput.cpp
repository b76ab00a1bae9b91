// Float training throughput (samples/s): one optimizer step per iteration (forward, loss,
// backward, Adam), the baselines that quantized and pruned training are compared against.
//   build/bench/sparq_bench --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <thread>

#include "sparq/data/dataset.h"
#include "sparq/models/graph.h"
#include "sparq/runtime.h"
#include "sparq/train/trainer.h"

namespace {

using namespace sparq;

void run_steps(benchmark::State& state, models::Graph model, const data::Dataset& ds, int64_t batch) {
  train::TrainOptions options;
  auto opt = train::make_optimizer(model->parameters(), options);
  model->train();
  int64_t epoch = 0, b = 0;
  auto batches = std::make_unique<data::Batches>(ds, batch, true, 0, epoch);
  for (auto _ : state) {
    if (b == batches->count()) batches = std::make_unique<data::Batches>(ds, batch, true, 0, ++epoch), b = 0;
    auto [x, y] = batches->get(b++);
    opt->zero_grad();
    auto loss = torch::nn::functional::cross_entropy(model->forward(x), y);
    loss.backward();
    opt->step();
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["samples_per_s"] = benchmark::Counter(static_cast<double>(state.iterations() * batch),
                                                       benchmark::Counter::kIsRate);
}

void BM_float_jet_tagger(benchmark::State& state) {
  int64_t batch = state.range(0);
  data::DataConfig c;
  c.dataset = "random";
  c.random_shape = {16};
  c.random_samples = std::max<int64_t>(batch * 4, 8192);
  c.num_classes = 5;
  auto ds = data::load_data(c).train;
  torch::manual_seed(0);
  run_steps(state, models::Graph(models::zoo_spec("jet_tagger", {16}, 5)), ds, batch);
}
BENCHMARK(BM_float_jet_tagger)->Arg(1024)->Arg(33200)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_float_lenet_fashion_mnist(benchmark::State& state) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!std::filesystem::exists(dir)) {
    state.SkipWithError("Fashion-MNIST not installed (Debian package dataset-fashion-mnist)");
    return;
  }
  data::DataConfig c;
  c.dataset = "fashion_mnist";
  c.dir = dir;
  c.normalize = data::Normalization::Unit;
  static data::Dataset ds = data::load_data(c).train;
  torch::manual_seed(0);
  run_steps(state, models::Graph(models::zoo_spec("lenet", {1, 28, 28}, 10)), ds, state.range(0));
}
BENCHMARK(BM_float_lenet_fashion_mnist)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

// Runtime as `sparq run` sets it: one thread per core (SPARQ_BENCH_THREADS overrides), heap tuning.
int main(int argc, char** argv) {
  const char* env = std::getenv("SPARQ_BENCH_THREADS");
  sparq::configure_runtime(env ? std::atoi(env) : 0);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("torch_threads", std::to_string(torch::get_num_threads()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
