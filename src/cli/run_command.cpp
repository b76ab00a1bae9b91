// sparq run [JOB.yaml]: load the job, its data and model, train, evaluate, summarise.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "sparq/compress/compress.h"
#include "sparq/config/job.h"
#include "sparq/error.h"
#include "sparq/export/precision.h"
#include "sparq/run/run_job.h"
#include "sparq/runtime.h"
#include "cli/progress.h"

namespace sparq::cli {

namespace {

// SIGINT/SIGTERM: the run stops at the end of the current step (the last checkpoint, written
// atomically after every epoch, stays as it is) and sparq exits 130/143. A second signal ends the
// process at once (the handler puts the default action back).
std::atomic<int> pending_signal{0};
extern "C" void on_stop_signal(int sig) {
  pending_signal = sig;
  std::signal(sig, SIG_DFL);
}
struct Interrupted {
  int signal;
};
class StopOnSignal : public train::Callback {
 public:
  void on_step_end(train::Trainer&, const train::TrainContext&) override {
    if (int sig = pending_signal.load()) throw Interrupted{sig};
  }
};

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
    for (const auto& [target, q] : pq->quantizers()) {
      if (target != (costs[name].weights > 0 ? "weight" : "input")) continue;
      auto d = q->describe();
      if (!d.enabled) return "float";
      if (d.kind == "integer") return fmt::format("{}int{}", d.k.at(0) ? "" : "u", d.k.at(0) + d.i.at(0));
      std::string prefix = q->trains_widths() ? std::string(d.kind) + " " : "";
      return prefix + (d.granularity == quant::Granularity::PerTensor ? d.element().type_name()
                                                                        : quant::to_string(d.granularity));
    }
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

/// What `sparq run` prints: the data, model and compression lines, a progress bar or lines per
/// epoch, one summary line per epoch, the per-layer table and the learned widths.
class Console : public RunObserver, public train::Callback {
 public:
  void on_data(const config::Job& job, const data::Splits& splits) override {
    const auto& train = splits.train;
    fmt::print("data: {} training samples{}{}, sample shape {}\n", train.size(),
               splits.validation.size() ? fmt::format(", {} validation", splits.validation.size()) : "",
               splits.test.size() ? fmt::format(", {} test", splits.test.size()) : "",
               shape_text(train.sample_shape()));
    classification_ = train.task == data::Task::Classification;
    evaluates_ = splits.validation.size() > 0 || splits.test.size() > 0;
  }
  void on_model(const config::Job& job, const models::Graph& model, const torch::Device& device) override {
    std::string picked = device.str();
    if (job.training.device == "auto")
      picked += device.is_cuda() ? " (auto: CUDA is available)" : " (auto: no CUDA device)";
    fmt::print("model: {} ({} nodes), device {}, {} thread(s)\n", model->name(), model->nodes().size(), picked,
               torch::get_num_threads());
  }
  void on_compressed(const config::Job& job, const CompressReport& report) override {
    fmt::print("compression: {} layer(s) replaced by PQ layers", report.replaced.size());
    std::vector<std::string> methods;
    for (const auto& spec : job.plan.pruning_methods()) methods.push_back(spec.method);
    if (job.plan.pruner) methods.push_back(job.plan.pruner->method + " (" + job.plan.dialect + " config list)");
    for (const auto& m : job.plan.modifiers)
      if (m.prunes()) methods.push_back(m.tag);
    if (!methods.empty()) fmt::print(", pruning {}", fmt::join(methods, ", "));
    if (!job.plan.modifiers.empty()) fmt::print("; recipe: {} modifier(s)", job.plan.modifiers.size());
    if (!report.left_float.empty()) fmt::print("; in float: {}", fmt::join(report.left_float, "; "));
    fmt::print("\n");
  }
  void on_warning(const config::Job& job, const std::string& message) override {
    fmt::print(stderr, "sparq: warning: {}\n", message);
  }
  void on_fitcompress(const config::Job& job, const fit::SearchResult& result) override {
    fmt::print("\nFITCompress: per-layer weight formats and pruning (goal {})\n{}\n", job.plan.fitcompress.compression_goal,
               fit::result_table(result.to_json()));
  }
  void on_trainer(const config::Job& job, train::Trainer& trainer) override {
    trainer.add_callback(std::make_shared<StopOnSignal>());
    if (job.plan.schedule) {
      const auto& s = *job.plan.schedule;
      fmt::print("schedule: {} pretraining, {} x {} training (rewind {}), {} fine-tuning epoch(s)\n",
                 s.pretraining_epochs, s.rounds, s.epochs, to_string(s.rewind), s.fine_tuning_epochs);
    }
    if (const auto& d = job.plan.distillation)
      fmt::print("distillation: {} from {}, {} entr{}, task loss x {}\n", d->type,
                 d->teacher_run.empty() ? d->teacher_model + " + " + d->teacher_weights : d->teacher_run,
                 d->rules.size(), d->rules.size() == 1 ? "y" : "ies", d->origin_loss_lambda);
    mode_ = job.training.progress;
    shows_sparsity_ = job.plan.pruner.has_value();
    for (const auto& m : job.plan.modifiers) shows_sparsity_ = shows_sparsity_ || m.prunes();
    // The console outlives the run it watches: the trainer holds it without owning it.
    trainer.add_callback(std::shared_ptr<train::Callback>(this, [](train::Callback*) {}));
  }
  void on_epoch_begin(train::Trainer& t, const train::TrainContext& ctx) override {
    progress_ = std::make_unique<ProgressDisplay>(mode_, fmt::format("epoch {}/{}", ctx.epoch_index + 1, ctx.total_epochs),
                                                  ctx.steps_per_epoch, t.options().batch_size);
  }
  void on_step_end(train::Trainer&, const train::TrainContext& ctx) override { progress_->step(ctx.step_in_epoch + 1); }
  void on_epoch_end(train::Trainer&, const train::TrainContext&, train::EpochMetrics&) override { progress_->finish(); }
  void on_epoch_report(train::Trainer& t, const train::TrainContext& ctx, const train::EpochMetrics& m) override {
    if (mode_ == train::Progress::None) return;
    std::string acc = classification_ ? fmt::format(" acc {:.2f}%", 100 * m.train_accuracy) : "";
    std::string eval_text = !evaluates_ ? "" : classification_
        ? fmt::format("  eval loss {:.4f} acc {:.2f}%", m.eval.loss, 100 * m.eval.accuracy)
        : fmt::format("  eval loss {:.4f}", m.eval.loss);
    std::string cost_text = m.layer_costs.empty() ? "" : fmt::format("  EBOPs {:.4g}", m.cost.ebops);
    if (t.prunes() || shows_sparsity_) cost_text += fmt::format("  sparsity {:.1f}%", 100 * m.sparsity);
    const auto& s = t.schedule();
    std::string stage = ctx.total_epochs == s.epochs ? "" : fmt::format(" [{}]", train::slot_text(s, m.slot));
    fmt::print("epoch {}/{}{}  train loss {:.4f}{}{}{}  {:.1f} s  {:.0f} samples/s\n", m.epoch, ctx.total_epochs, stage,
               m.train_loss, acc, eval_text, cost_text, m.seconds, m.samples_per_second);
    if (t.step_graph_note() != shown_graph_note_) {  // CUDA: how the steps ran, when that changes
      shown_graph_note_ = t.step_graph_note();
      fmt::print("steps: {}\n", shown_graph_note_ == "captured" ? "captured as a CUDA graph, replayed" : shown_graph_note_);
    }
    if (t.fused_mlp_note() != shown_fused_note_) {  // how the forward and backward ran, when that changes
      shown_fused_note_ = t.fused_mlp_note();
      fmt::print("layers: {}\n", shown_fused_note_);
    }
    std::fflush(stdout);
  }
  void on_finished(const config::Job& job, const RunResult& r) override {
    print_summary(r.model, r.history, r.test, r.classification, r.run_dir);
    bool hgq = false;
    for (const auto& node : r.model->nodes())
      if (auto pq = pq_layer(r.model, node.name)) hgq |= pq->has_hgq();
    if (r.precision && hgq)
      fmt::print("\nlearned bit widths (also in {}):\n{}",
                 (std::filesystem::path(r.run_dir) / "precision.json").string(), exporting::precision_table(*r.precision));
    for (const auto& path : r.exported) fmt::print("exported {}\n", path);
    if (r.speedup)
      fmt::print("speedup: {} -> {} parameters ({}); model_speedup.pt\n", r.speedup->parameters_before,
                 r.speedup->parameters_after,
                 r.speedup->changes.empty() ? "no channel is zero everywhere it flows" : fmt::format("{}", fmt::join(r.speedup->changes, ", ")));
  }

 private:
  train::Progress mode_ = train::Progress::Auto;
  std::unique_ptr<ProgressDisplay> progress_;
  bool classification_ = true, evaluates_ = false, shows_sparsity_ = false;
  std::string shown_graph_note_, shown_fused_note_;
};

}  // namespace

int run_command(const RunArgs& args) {
  auto load = load_options(args.recipe_vars);
  if (args.job_file.empty() && !args.recipe_vars.empty())
    throw ConfigError("--recipe-var: the default job has no SparseML recipe");
  config::Job job = args.job_file.empty() ? config::default_job() : config::load_job(args.job_file, load);
  if (!args.recipe_vars.empty() && job.plan.dialect != "sparseml")
    throw ConfigError(fmt::format("--recipe-var: {}'s compression is not a SparseML recipe{}, so it has no variables",
                                  args.job_file, job.plan.dialect.empty() ? "" : " (it is " + job.plan.dialect + ")"));
  if (!args.output.empty()) job.output = args.output;
  if (!args.device.empty()) job.training.device = args.device;
  if (!args.cuda_graph.empty()) job.training.cuda_graph = args.cuda_graph;
  if (!args.fused_mlp.empty()) job.training.fused_mlp = args.fused_mlp;
  if (args.epochs >= 0) {
    if (job.plan.schedule) job.plan.schedule->epochs = args.epochs;  // epochs per round
    else job.training.epochs = args.epochs;
  }
  configure_runtime(static_cast<int>(job.threads));
  fmt::print("sparq {}: job '{}'{}\n", SPARQ_VERSION, job.name,
             job.file.empty() ? " (built-in default)" : " from " + job.file);
  Console console;
  RunOptions options;
  options.resume = args.resume;
  options.stop_after = args.stop_after;
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  try {
    run_job(job, console, options);
  } catch (const Interrupted& stop) {
    auto checkpoint = std::filesystem::path(job.output) / "checkpoint.pt";
    fmt::print(stderr, "sparq: interrupted by {}: {}\n", stop.signal == SIGINT ? "SIGINT" : "SIGTERM",
               std::filesystem::exists(checkpoint)
                   ? fmt::format("{} holds the last finished epoch; continue with --resume", checkpoint.string())
                   : std::string("no epoch had finished, nothing to resume"));
    return 128 + stop.signal;
  }
  return 0;
}

}  // namespace sparq::cli
