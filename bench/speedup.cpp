// Speedup: one training step (forward, cross-entropy, backward, Adam) of the zoo's small ResNet
// with half of every conv's filters pruned by NNI's L1NormPruner (dependency groups across the
// residual adds, each BatchNorm aligned to its conv), as the masked model trains it and as the
// shrunk model speedup() builds from it. Same batches, same run.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "sparq/compress/compress.h"
#include "sparq/compress/speedup.h"
#include "sparq/config/dialect.h"
#include "sparq/prune/mask_pruner.h"
#include "sparq/train/trainer.h"

namespace sparq {
namespace {

models::Graph masked_resnet() {
  torch::manual_seed(0);
  models::ZooOptions o;
  o.widths = {16, 32};
  models::Graph g(models::zoo_spec("resnet", {1, 28, 28}, 10, o));
  std::string text = "pruner: {type: L1NormPruner}\ndependency_groups: auto\nconfig_list:\n"
                     "  - {op_types: [Conv2d], sparse_ratio: 0.5}\n";
  for (const auto& [conv, bn] : std::vector<std::pair<std::string, std::string>>{
           {"conv1", "bn1"}, {"layer1.0.conv1", "layer1.0.bn1"}, {"layer1.0.conv2", "layer1.0.bn2"},
           {"layer2.0.conv1", "layer2.0.bn1"}, {"layer2.0.conv2", "layer2.0.bn2"},
           {"layer2.0.downsample.0", "layer2.0.downsample.1"}})
    text += "  - {op_names: [" + bn + "], target_settings: {weight: {align: {module_name: " + conv +
            ", target_name: weight, dims: [0]}, granularity: out_channel}}}\n";
  auto doc = yaml::YamlDoc::load_string(text, "<bench>");
  Plan plan = config::load_plan(doc.file, doc.root);
  auto resolution = resolve(plan, g);
  compress(g, resolution);
  prune::make_pruner(*plan.pruner, resolution, g)->generate();
  return g;
}

void steps(benchmark::State& state, models::Graph model) {
  auto opt = train::make_optimizer(model->parameters(), train::TrainOptions{});
  auto gen = at::detail::createCPUGenerator(1);
  auto x = at::normal(0.0, 1.0, {256, 1, 28, 28}, gen);
  auto y = at::randint(10, {256}, gen, torch::kInt64);
  int64_t params = 0;
  for (const auto& p : model->parameters()) params += p.numel();
  for (auto _ : state) {
    model->zero_grad(true);
    torch::nn::functional::cross_entropy(model->forward(x), y).backward();
    opt->step();
  }
  state.counters["parameters"] = static_cast<double>(params);
  state.counters["samples_per_s"] = benchmark::Counter(static_cast<double>(state.iterations() * 256), benchmark::Counter::kIsRate);
}

void BM_resnet_masked(benchmark::State& state) { steps(state, masked_resnet()); }
void BM_resnet_speedup(benchmark::State& state) {
  auto masked = masked_resnet();
  masked->eval();
  auto small = speedup(masked);
  small->train();
  steps(state, small);
}
BENCHMARK(BM_resnet_masked)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_resnet_speedup)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace sparq
