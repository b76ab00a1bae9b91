// sparq run [JOB.yaml]: load the job, its data and model, train, evaluate, summarise.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "sparq/compress/compress.h"
#include "sparq/config/job.h"
#include "sparq/error.h"
#include "sparq/export/precision.h"
#include "sparq/runtime.h"

namespace sparq::cli {

namespace {

std::string shape_text(const std::vector<int64_t>& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

/// Zero fraction of the deployed weights (pruned, or quantized to zero).
std::string sparsity_text(const layers::LayerCost& c) {
  return c.weights ? fmt::format("{:.1f}%", 100.0 * (1.0 - static_cast<double>(c.nonzero) / c.weights)) : "";
}

void print_summary(const models::Graph& model, const std::vector<train::EpochMetrics>& history,
                   const train::EvalResult& test, bool classification, const std::string& run_dir) {
  auto cost = graph_cost(model);
  std::map<std::string, layers::LayerCost> costs(cost.layers.begin(), cost.layers.end());
  auto weight_type = [&](const std::string& name) -> std::string {
    auto pq = pq_layer(model, name);
    if (!pq) return "";
    for (const auto& [target, q] : pq->quantizers())
      if (target == (costs[name].weights > 0 ? "weight" : "input"))
        return !q->enabled ? "float"
               : q->spec().granularity == quant::Granularity::PerTensor
                   ? (q->is_hgq() ? "hgq " : "") + q->format().type_name()
                   : (q->is_hgq() ? "hgq " : "") + std::string(quant::to_string(q->spec().granularity));
    return "float";
  };
  size_t name_w = 5, op_w = 2, shape_w = 6, type_w = 6;
  for (const auto& n : model->nodes()) {
    name_w = std::max(name_w, n.name.size());
    op_w = std::max(op_w, n.op.size());
    shape_w = std::max(shape_w, shape_text(n.out_shape).size());
    type_w = std::max(type_w, weight_type(n.name).size());
  }
  bool compressed = !cost.layers.empty();
  fmt::print("\n{:<{}}  {:<{}}  {:<{}}  {:>10}", "layer", name_w, "op", op_w, "output", shape_w, "parameters");
  if (compressed)
    fmt::print("  {:<{}}  {:>9}  {:>8}  {:>11}  {:>12}", "format", type_w, "nonzero", "sparsity", "weight bits", "EBOPs");
  fmt::print("\n");
  int64_t total = 0;
  for (const auto& n : model->nodes()) {
    int64_t count = models::parameter_count(n);
    total += count;
    fmt::print("{:<{}}  {:<{}}  {:<{}}  {:>10}", n.name, name_w, n.op, op_w, shape_text(n.out_shape), shape_w, count);
    if (compressed && costs.count(n.name)) {
      const auto& c = costs[n.name];
      fmt::print("  {:<{}}  {:>9}  {:>8}  {:>11.0f}  {:>12.0f}", weight_type(n.name), type_w,
                 c.weights ? fmt::format("{}", c.nonzero) : "", c.weights ? sparsity_text(c) : "", c.weight_bits,
                 c.ebops);
    }
    fmt::print("\n");
  }
  fmt::print("{:<{}}  {:>10}", "total", name_w + op_w + shape_w + 4, total);
  if (compressed)
    fmt::print("  {:<{}}  {:>9}  {:>8}  {:>11.0f}  {:>12.0f}", "", type_w, cost.total.nonzero,
               sparsity_text(cost.total), cost.total.weight_bits, cost.total.ebops);
  fmt::print("\n\n");
  double seconds = 0, samples = 0;
  for (const auto& m : history) seconds += m.seconds, samples += m.samples_per_second * m.seconds;
  if (test.samples > 0) {
    if (classification)
      fmt::print("test accuracy {:.2f}% ({} samples), test loss {:.4f}\n", 100 * test.accuracy, test.samples, test.loss);
    else
      fmt::print("test loss {:.6f} ({} samples)\n", test.loss, test.samples);
  }
  if (!history.empty())
    fmt::print("training time {:.1f} s over {} epoch(s), {:.0f} samples/s\n", seconds, history.size(),
               samples / std::max(seconds, 1e-9));
  fmt::print("run folder: {}\n", run_dir);
}

}  // namespace

int run_command(const RunArgs& args) {
  config::Job job = args.job_file.empty() ? config::default_job() : config::load_job(args.job_file);
  if (!args.output.empty()) job.output = args.output;
  if (!args.device.empty()) job.training.device = args.device;
  if (args.epochs >= 0) {
    if (job.plan.schedule) job.plan.schedule->epochs = args.epochs;  // epochs per round
    else job.training.epochs = args.epochs;
  }
  configure_runtime(static_cast<int>(job.threads));

  fmt::print("sparq {}: job '{}'{}\n", SPARQ_VERSION, job.name,
             job.file.empty() ? " (built-in default)" : " from " + job.file);
  auto splits = data::load_data(job.data);
  const auto& train = splits.train;
  fmt::print("data: {} training samples{}{}, sample shape {}\n", train.size(),
             splits.validation.size() ? fmt::format(", {} validation", splits.validation.size()) : "",
             splits.test.size() ? fmt::format(", {} test", splits.test.size()) : "",
             shape_text(train.sample_shape()));

  int64_t outputs = train.task == data::Task::Classification
                        ? train.num_classes
                        : (train.y.dim() > 1 ? train.y.size(1) : 1);
  train::seed_everything(job.training.seed);
  models::Graph model(config::model_spec(job.model, train.sample_shape(), outputs));
  fmt::print("model: {} ({} nodes), device {}, {} thread(s)\n", model->name(), model->nodes().size(),
             job.training.device, torch::get_num_threads());

  if (job.plan.quantization || job.plan.pruning) {
    auto report = compress(model, job.plan);
    fmt::print("compression: {} layer(s) replaced by PQ layers", report.replaced.size());
    if (job.plan.pruning) fmt::print(", pruning {}", job.plan.pruning->spec.method);
    if (!report.left_float.empty()) fmt::print("; in float: {}", fmt::join(report.left_float, "; "));
    fmt::print("\n");
  }
  train::Trainer trainer(model, job.training, job.output, job.plan.schedule);
  if (job.plan.schedule) {
    const auto& s = *job.plan.schedule;
    fmt::print("schedule: {} pretraining, {} x {} training (rewind {}), {} fine-tuning epoch(s)\n",
               s.pretraining_epochs, s.rounds, s.epochs, to_string(s.rewind), s.fine_tuning_epochs);
  }
  const auto& eval = splits.validation.size() > 0 ? splits.validation : splits.test;
  auto history = trainer.fit(train, eval, args.resume, args.stop_after);
  train::EvalResult test;
  if (splits.test.size() > 0) test = trainer.evaluate(splits.test);
  torch::save(model, (std::filesystem::path(job.output) / "model.pt").string());
  print_summary(model, history, test, train.task == data::Task::Classification, job.output);
  if (job.plan.quantization && job.plan.quantization->enabled) {
    auto path = (std::filesystem::path(job.output) / "precision.json").string();
    auto precision = exporting::precision_json(model);
    exporting::write_precision(precision, path);
    if (job.plan.quantization->hgq)
      fmt::print("\nlearned bit widths (also in {}):\n{}", path, exporting::precision_table(precision));
  }
  return 0;
}

}  // namespace sparq::cli
