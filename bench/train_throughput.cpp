// Training throughput (samples/s): one Trainer::step per iteration (zeroing, forward, loss with
// the model's loss terms, backward, Adam, the epoch sums), float, with 8-bit fixed-point weights
// and activations, with HGQ (per-weight trainable widths, the beta·EBOPs + gamma·bits terms), and
// with NNI's int8 QAT (weights symmetric per output channel, inputs affine, EMA observers), in the
// same run; BM_bare_* is a bare LibTorch step on the same float model (what the Trainer's
// own bookkeeping costs on top).
//   build/bench/sparq_bench --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <thread>

#include "sparq/compress/compress.h"
#include "sparq/config/nni.h"
#include "sparq/config/pquant.h"
#include "sparq/data/dataset.h"
#include "sparq/models/graph.h"
#include "sparq/runtime.h"
#include "sparq/train/quantizers.h"
#include "sparq/train/trainer.h"
#include "sparq/yaml/reader.h"

namespace {

using namespace sparq;

/// SPARQ_BENCH_DEVICE=cuda runs the steps on the GPU (one synchronisation per step, as the
/// PyTorch baseline in bench/gpu/pytorch_step.py does); with SPARQ_BENCH_CUDA_GRAPH=1 the
/// Trainer captures its step as a CUDA graph (training.cuda_graph: on) and replays it, as
/// `sparq run` does; otherwise the steps are launched (cuda_graph: off). SPARQ_BENCH_FUSED_MLP
/// (below) picks the fused MLP kernels.
/// SPARQ_BENCH_PROFILE=FILE: a Chrome trace of the timed steps, summed per op (and per kernel)
/// by bench/profile_ops.py; the timings themselves are then not comparable. On a GPU it is
/// Kineto's trace, with an event per kernel; on the CPU LibTorch's legacy profiler (Debian's
/// LibTorch has no Kineto).
class StepProfile {
 public:
  explicit StepProfile(bool cuda) {
    const char* file = std::getenv("SPARQ_BENCH_PROFILE");
    if (!file) return;
    file_ = file;
    if (!cuda) {
      legacy_ = std::make_unique<torch::autograd::profiler::RecordProfile>(file_);
      return;
    }
    namespace tpi = torch::profiler::impl;
    const tpi::ProfilerConfig config(tpi::ProfilerState::KINETO);
    const std::set<tpi::ActivityType> activities{tpi::ActivityType::CPU, tpi::ActivityType::CUDA};
    torch::autograd::profiler::prepareProfiler(config, activities);
    torch::autograd::profiler::enableProfiler(config, activities);
    kineto_ = true;
  }
  ~StepProfile() {
    if (kineto_) torch::autograd::profiler::disableProfiler()->save(file_);
  }

 private:
  std::string file_;
  bool kineto_ = false;
  std::unique_ptr<torch::autograd::profiler::RecordProfile> legacy_;
};

torch::Device bench_device() {
  const char* d = std::getenv("SPARQ_BENCH_DEVICE");
  return d ? torch::Device(d) : torch::Device(torch::kCPU);
}

enum class Mode { Float, Fixed8, Hgq, Int8Qat, BareFloat, Pdp8 };

/// The 8-bit config of examples/lenet_fashion_mnist_8bit.yaml (weights ap_fixed<8,2>, data
/// ap_fixed<8,4>); HGQ: per-weight trainable widths from there, beta 1e-5.
Plan eight_bit_plan(Mode mode) {
  if (mode == Mode::Int8Qat) {  // examples/nni_qat.yaml, quantizing from the first step
    auto doc = yaml::YamlDoc::load_string(
        "quantizer: {type: QATQuantizer, quant_start_step: 0}\n"
        "config_list:\n"
        "  - op_types: [Conv2d, Linear]\n"
        "    quant_dtype: int8\n"
        "    target_names: [_input_, weight]\n"
        "    target_settings:\n"
        "      weight: {quant_scheme: symmetric, granularity: out_channel}\n"
        "      _input_: {quant_scheme: affine}\n",
        "<bench>");
    return config::read_nni_section(doc.file, doc.root);
  }
  std::string text =
      "quantization_parameters: {default_weight_integer_bits: 1, default_weight_fractional_bits: 6, "
      "default_data_keep_negatives: 1, default_data_integer_bits: 3, default_data_fractional_bits: 4";
  if (mode == Mode::Hgq) text += ", use_hgq: true, granularity: per_weight, hgq_beta: 1.0e-5";
  text += "}";
  if (mode == Mode::Pdp8)  // examples/lenet_pdp.yaml's method, in its training stage from the first step
    text += "\npruning_parameters: {pruning_method: pdp, sparsity: 0.8, epsilon: 0.25}"
            "\ntraining_parameters: {pretraining_epochs: 0, epochs: 1000, fine_tuning_epochs: 0}";
  auto doc = yaml::YamlDoc::load_string(text, "<bench>");
  return config::parse_pquant(doc.file, doc.root);
}

void run_steps(benchmark::State& state, Mode mode, models::Graph model, const data::Dataset& ds_host, int64_t batch) {
  const auto device = bench_device();
  const data::Dataset ds = ds_host.to(device);
  train::TrainOptions options;
  options.device = device.str();
  options.batch_size = batch;
  // Launched steps unless SPARQ_BENCH_CUDA_GRAPH is set: then the Trainer's captured step.
  const bool graph_mode = device.is_cuda() && std::getenv("SPARQ_BENCH_CUDA_GRAPH");
  // auto: a method that cannot be captured (PDP decides on the host) runs launched, with its reason.
  options.cuda_graph = graph_mode ? "auto" : "off";
  // SPARQ_BENCH_FUSED_MLP=auto|on: the fused MLP kernels where the model is a Dense chain (on:
  // also the CPU twin); unset or off: the layers' own ops.
  const char* fused = std::getenv("SPARQ_BENCH_FUSED_MLP");
  options.fused_mlp = fused ? fused : "off";
  const bool quantized = mode == Mode::Fixed8 || mode == Mode::Hgq || mode == Mode::Int8Qat || mode == Mode::Pdp8;
  const Plan plan = quantized ? eight_bit_plan(mode) : Plan{};
  train::Trainer trainer(model, options, plan.schedule, plan.events);
  if (plan.quantizer)
    if (auto runtime = train::make_quantizer_runtime(*plan.quantizer, model)) trainer.add_callback(runtime);
  int64_t epoch = 0, b = 0;
  auto batches = std::make_unique<data::Batches>(ds, batch, true, 0, epoch);
  trainer.begin_training(batches->count());
  trainer.begin_epoch(0);
  // The next batch of the shuffled epochs; `full_only` skips an epoch's short last batch.
  auto next_batch = [&](bool full_only) {
    for (;;) {
      if (b == batches->count()) batches = std::make_unique<data::Batches>(ds, batch, true, 0, ++epoch), b = 0;
      auto xy = batches->get(b++);
      if (!full_only || xy.first.size(0) == batch) return xy;
    }
  };
  if (mode == Mode::BareFloat) {
    // The baseline: a bare LibTorch step on the same model (no loss terms, callbacks or epoch sums).
    auto opt = train::make_optimizer(model->parameters(), options);
    auto bare_step = [&] {
      auto [x, y] = next_batch(false);
      model->zero_grad(/*set_to_none=*/true);
      torch::nn::functional::cross_entropy(model->forward(x), y).backward();
      opt->step();
      if (device.is_cuda()) torch::cuda::synchronize();
    };
    // Untimed first steps: cuDNN's handles and LibTorch's lazy state (over a second on a GPU) are
    // made there; a first iteration that long would be the whole measurement.
    for (int warm = 0; warm < 3; ++warm) bare_step();
    for (auto _ : state) bare_step();
  } else {
    auto trainer_step = [&] {
      RECORD_FUNCTION("sparq::bench_step", std::vector<c10::IValue>{});  // profile_ops.py counts steps by it
      auto [x, y] = next_batch(graph_mode);  // a graph has one batch shape
      trainer.step(x, y);
      if (device.is_cuda()) torch::cuda::synchronize();
    };
    for (int warm = 0; warm < 3; ++warm) trainer_step();  // untimed: lazy state, the capture
    StepProfile profile(device.is_cuda());
    for (auto _ : state) trainer_step();
    if (!trainer.fused_mlp_note().empty()) state.SetLabel(trainer.fused_mlp_note());
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["samples_per_s"] = benchmark::Counter(static_cast<double>(state.iterations() * batch),
                                                       benchmark::Counter::kIsRate);
}

models::Graph build(const std::string& zoo, std::vector<int64_t> shape, int64_t classes, Mode mode) {
  torch::manual_seed(0);
  models::Graph g(models::zoo_spec(zoo, shape, classes));
  if (mode != Mode::Float && mode != Mode::BareFloat) compress(g, eight_bit_plan(mode));
  return g;
}

data::Dataset random_jets(int64_t batch) {
  data::DataConfig c;
  c.dataset = "random";
  c.random_shape = {16};
  c.random_samples = std::max<int64_t>(batch * 4, 8192);
  c.num_classes = 5;
  return data::load_data(c).train;
}

template <Mode M>
void BM_jet_tagger(benchmark::State& state) {
  int64_t batch = state.range(0);
  static std::map<int64_t, data::Dataset> cache;
  if (!cache.count(batch)) cache[batch] = random_jets(batch);
  run_steps(state, M, build("jet_tagger", {16}, 5, M), cache[batch], batch);
}
BENCHMARK_TEMPLATE(BM_jet_tagger, Mode::BareFloat)->Name("BM_bare_float_jet_tagger")->Arg(1024)->Arg(33200)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_jet_tagger, Mode::Float)->Name("BM_float_jet_tagger")->Arg(1024)->Arg(33200)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_jet_tagger, Mode::Fixed8)->Name("BM_fixed8_jet_tagger")->Arg(1024)->Arg(33200)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_jet_tagger, Mode::Hgq)->Name("BM_hgq_jet_tagger")->Arg(1024)->Arg(33200)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_jet_tagger, Mode::Int8Qat)->Name("BM_int8_qat_jet_tagger")->Arg(1024)->Arg(33200)->Unit(benchmark::kMillisecond)->UseRealTime();

template <Mode M>
void BM_lenet_fashion_mnist(benchmark::State& state) {
  const char* env_dir = std::getenv("SPARQ_FMNIST_DIR");
  const std::string dir = env_dir ? env_dir : "/usr/share/datasets/fashion-mnist";
  if (!std::filesystem::exists(dir)) {
    state.SkipWithError("Fashion-MNIST not installed (Debian package dataset-fashion-mnist)");
    return;
  }
  data::DataConfig c;
  c.dataset = "fashion_mnist";
  c.dir = dir;
  c.normalize = data::Normalization::Unit;
  static data::Dataset ds = data::load_data(c).train;
  run_steps(state, M, build("lenet", {1, 28, 28}, 10, M), ds, state.range(0));
}
BENCHMARK_TEMPLATE(BM_lenet_fashion_mnist, Mode::BareFloat)->Name("BM_bare_float_lenet_fashion_mnist")->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_lenet_fashion_mnist, Mode::Float)->Name("BM_float_lenet_fashion_mnist")->Arg(256)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_lenet_fashion_mnist, Mode::Fixed8)->Name("BM_fixed8_lenet_fashion_mnist")->Arg(256)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_lenet_fashion_mnist, Mode::Pdp8)->Name("BM_pdp_fixed8_lenet_fashion_mnist")->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_lenet_fashion_mnist, Mode::Int8Qat)->Name("BM_int8_qat_lenet_fashion_mnist")->Arg(256)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();

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
