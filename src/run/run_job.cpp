#include "sparq/run/run_job.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <filesystem>
#include <sstream>
#include <nlohmann/json.hpp>

#include "sparq/compress/compress.h"
#include "sparq/error.h"
#include "sparq/fit/fitcompress.h"
#include "sparq/layers/pq_layers.h"
#include "sparq/export/onnx_export.h"
#include "sparq/export/precision.h"
#include "sparq/io/files.h"
#include "sparq/limits.h"
#include "sparq/prune/mask_pruner.h"
#include "sparq/prune/methods.h"
#include "sparq/report/report.h"
#include "sparq/train/callbacks.h"
#include "sparq/train/distillation.h"
#include "sparq/train/modifiers.h"
#include "sparq/train/quantizers.h"
#include "train/fused_mlp.h"

namespace sparq {

namespace fs = std::filesystem;

RunRng::RunRng(uint64_t seed) {
  auto gen = at::detail::getDefaultCPUGenerator();
  outer_state_ = gen.get_state();
  torch::manual_seed(seed);
}

RunRng::~RunRng() {
  auto gen = at::detail::getDefaultCPUGenerator();
  gen.set_state(outer_state_);
}

namespace {
/// Writes a small text file of the run folder (a failure is an error naming the file).
void write_text_file(const std::string& path, const std::string& text) { io::write_file_atomic(path, text); }

/// A file the run will write that exists as a folder, device or FIFO is refused before anything
/// is written (otherwise the run would train and fail at its last write).
void check_run_folder(const std::string& output) {
  for (const char* name : {"model.pt", "checkpoint.pt", "metrics.jsonl", "job.yaml", "model.yaml", "run.json",
                           "precision.json", "calibration.json", "model_speedup.pt", "model.onnx", "model_qonnx.onnx", "report.html",
                           "fitcompress.json", ".lock"}) {
    fs::path path = fs::path(output) / name;
    std::error_code ec;
    if (fs::exists(fs::symlink_status(path, ec)) && !fs::is_regular_file(path, ec))
      throw ConfigError(fmt::format("{}: exists and is not a regular file; the run writes its {} there", path.string(), name));
  }
}

/// Refuses a run that cannot fit in memory before its first step, naming what to lower: the data
/// (already loaded), the parameters with their gradients, optimizer states and (compressed) masks
/// and quantizer copies, and one training batch of every node's output kept for the backward
/// pass with its gradient and a temporary. A lower bound, not a promise: it catches the sizes
/// that would otherwise end in an allocation failure or the out-of-memory killer mid-epoch.
void check_run_memory(const config::Job& job, const models::Graph& model, const data::Splits& splits, bool compresses) {
  double data = 0;
  for (const auto* d : {&splits.train, &splits.validation, &splits.test})
    if (d->size() > 0) data += static_cast<double>(d->x.nbytes() + d->y.nbytes());
  const auto& t = job.training;
  int states = t.optimizer == "sgd" ? (t.momentum > 0 ? 1 : 0) : 2;
  double per_parameter = sizeof(float) * (2 + states + (compresses ? 2 : 0));
  double parameters = 0, activations = 0;
  for (const auto& p : model->parameters()) parameters += static_cast<double>(p.numel()) * per_parameter;
  double per_sample = 0;
  for (const auto& node : model->nodes()) {
    double n = 1;
    for (auto d : node.out_shape) n *= static_cast<double>(d);
    per_sample += n;
  }
  if (train::resolve_device(t.device).is_cpu()) {  // on a GPU they live in device memory
    int64_t batch = std::min<int64_t>(t.batch_size, std::max<int64_t>(splits.train.size(), 1));
    activations = per_sample * sizeof(float) * 3 * static_cast<double>(batch);
  } else {
    parameters = 0;
  }
  double total = data + parameters + activations;
  if (total <= static_cast<double>(memory_limit())) return;
  std::string lower = activations >= std::max(data, parameters)
                          ? fmt::format("lower training.batch_size ({})", t.batch_size)
                      : parameters >= data ? std::string("use a smaller model") : std::string("use less data (data.train_limit)");
  throw ResourceError(fmt::format("{}the run needs about {} (data {}, parameters with gradients and optimizer state {}, "
                                  "one batch of activations {}), more than this machine's memory ({}): {}",
                                  job.file.empty() ? "" : job.file + ": ", format_bytes(total), format_bytes(data), format_bytes(parameters),
                                  format_bytes(activations), memory_limit_text(), lower));
}

/// torch::save of a module, atomically (a full disk is an error and leaves the old file).
template <typename Module>
void save_module(const Module& module, const std::string& path) {
  std::ostringstream bytes;
  torch::save(module, bytes);
  io::write_file_atomic(path, bytes.str());
}

/// The graph's state that lives outside its parameters and buffers (set by the schedule's
/// events and callbacks as training went): quantizers on or off, pruning on or off per layer,
/// fusions active, nodes skipped. A replay (export_only) puts it back before loading model.pt.
nlohmann::json graph_state(const models::Graph& model) {
  nlohmann::json state = {{"quantizers", nlohmann::json::object()}, {"pruning", nlohmann::json::object()},
                          {"fused", nlohmann::json::array()}, {"skipped", nlohmann::json::array()}};
  for (const auto& item : model->named_modules()) {
    if (auto q = std::dynamic_pointer_cast<quant::QuantizerImpl>(item.value())) state["quantizers"][item.key()] = q->enabled;
    if (auto w = std::dynamic_pointer_cast<layers::PQWeightLayer>(item.value())) {
      state["pruning"][item.key()] = w->enable_pruning;
      if (!w->fused_followers.empty() && w->fold_active) state["fused"].push_back(item.key());
    }
  }
  for (const auto& node : model->nodes())
    if (node.skipped) state["skipped"].push_back(node.name);
  return state;
}

void apply_graph_state(models::Graph& model, const nlohmann::json& state, const std::string& where) {
  auto modules = model->named_modules();
  auto module = [&](const std::string& name) {
    auto* m = modules.find(name);
    if (!m) throw ConfigError(fmt::format("{}: the rebuilt model has no module '{}'; the job changed since the run", where, name));
    return *m;
  };
  for (const auto& [name, on] : state.at("quantizers").items())
    if (auto q = std::dynamic_pointer_cast<quant::QuantizerImpl>(module(name))) q->enabled = on.get<bool>();
  for (const auto& [name, on] : state.at("pruning").items())
    if (auto w = std::dynamic_pointer_cast<layers::PQWeightLayer>(module(name))) w->enable_pruning = on.get<bool>();
  for (const auto& lead : state.at("fused")) activate_fusion(model, lead.get<std::string>(), /*copy_statistics=*/false);
  for (const auto& name : state.at("skipped")) model->set_skipped(name.get<std::string>(), true);
}

/// The job's name as hls4ml's project name (a C identifier).
std::string project_name_of(const std::string& job_name) {
  std::string name;
  for (char c : job_name) name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0]))) name = "sparq_" + name;
  return name;
}

void write_exports(models::Graph& model, const config::Job& job, const std::vector<std::string>& formats,
                   exporting::Hls4mlOptions hls4ml, std::vector<std::string>& written) {
#ifdef SPARQ_WITH_ONNX
  for (const auto& format : formats) {
    if (format == "hls4ml") {
      if (hls4ml.project_name.empty()) hls4ml.project_name = project_name_of(job.name);
      auto out = exporting::export_hls4ml(model, job.output, hls4ml);
      written.push_back(out.onnx_path);
      written.push_back(out.config_path);
      for (const auto& note : out.notes) fmt::print("  hls4ml: {}\n", note);
      continue;
    }
    auto flavor = exporting::parse_onnx_flavor(format, "export");
    written.push_back(exporting::export_onnx(model, (fs::path(job.output) / exporting::onnx_file_name(flavor)).string(), flavor).path);
  }
#else
  (void)hls4ml;
  if (!formats.empty()) throw MissingFeatureError("export", "ONNX support", "libonnx-dev");
#endif
}

bool quantizes(const models::Graph& model) {
  for (const auto& node : model->nodes())
    if (auto pq = pq_layer(model, node.name))
      for (const auto& [target, q] : pq->quantizers())
        if (q->enabled) return true;
  return false;
}
}  // namespace

std::vector<std::string> ineffective_settings(const config::Job& job, int64_t steps_per_epoch) {
  std::vector<std::string> out;
  const Plan& plan = job.plan;
  const Schedule s = plan.schedule.value_or(Schedule::single_stage(job.training.epochs));
  const int64_t training = s.rounds * s.epochs, total = s.total_epochs();
  for (const auto& spec : plan.pruning_methods(/*active_only=*/true)) {
    const auto* info = prune::find_method(spec.method);
    int64_t first = info && info->first_pruning_epoch ? info->first_pruning_epoch(spec, steps_per_epoch) : 1;
    if (training == 0)
      out.push_back(fmt::format("pruning method {} prunes in the training stage, but the schedule has none "
                                "({} pretraining, {} fine-tuning epoch(s)): nothing will be pruned",
                                spec.method, s.pretraining_epochs, s.fine_tuning_epochs));
    else if (first > training)
      out.push_back(fmt::format("pruning method {} first prunes at the end of training epoch {} ({} batches per "
                                "epoch), but the training stage ends after epoch {} (global epoch {} of {}): nothing "
                                "will be pruned; give it more epochs or start it earlier",
                                spec.method, first, steps_per_epoch, training, s.pretraining_epochs + training, total));
  }
  if (!plan.events_of(Event::Kind::HgqBeta).empty() && total <= s.pretraining_epochs)
    out.push_back(fmt::format("HGQ's loss terms start after pretraining, but all {} epoch(s) are pretraining: the "
                              "bit widths will not be trained",
                              total));
  if (!plan.search.empty())
    out.push_back(fmt::format("the config's search section ('{}', {} trial(s)) is not run by `sparq run`, which "
                              "trains once with the config's own values; `sparq tune JOB` runs the study (docs/search.md)",
                              plan.search.experiment_name, plan.search.num_trials));
  return out;
}

RunResult run_job(const config::Job& job, RunObserver& observer, const RunOptions& options) {
  auto splits = data::load_data(job.data);
  observer.on_data(job, splits);
  const auto& train = splits.train;
  RunResult result;
  result.data = splits;
  result.classification = train.task == data::Task::Classification;
  result.run_dir = job.output;
  train::FitOptions fit;
  if (options.resume) fit.resume_from = train::resume_checkpoint(job.output);  // before any work
  fit.stop_after = options.stop_after;

  int64_t outputs = result.classification ? train.num_classes : (train.y.dim() > 1 ? train.y.size(1) : 1);
  RunRng rng(job.training.seed);
  auto built = config::build_model(job.model, train.sample_shape(), outputs);
  const auto& spec = built.spec;
  models::Graph model = built.graph;
  observer.on_model(job, model, train::resolve_device(job.training.device));
  Resolution resolution;
  if (job.plan.compresses()) {
    resolution = resolve(job.plan, model);
    for (const auto& message : resolution.warnings) observer.on_warning(job, message);
    result.compression = compress(model, resolution);
    observer.on_compressed(job, result.compression);
  }
  check_run_memory(job, model, splits, job.plan.compresses());
  const int64_t steps = (train.size() + job.training.batch_size - 1) / std::max<int64_t>(job.training.batch_size, 1);
  for (const auto& message : ineffective_settings(job, steps)) observer.on_warning(job, message);
  if (job.training.fused_mlp == "on") {  // a model the kernels cannot run is a config error, found before any work
    std::vector<int64_t> sample{1};
    for (auto d : train.sample_shape()) sample.push_back(d);
    if (auto why = train::FusedMlp(model).refusal(torch::zeros(sample), /*allow_cpu=*/true); !why.empty())
      throw ConfigError(fmt::format("{}: training.fused_mlp: on, but the model cannot run fused: {}",
                                    job.file.empty() ? "job" : job.file, why));
  }
  train::Trainer trainer(model, job.training, job.plan.schedule, job.plan.events);
  if (job.plan.pruner) trainer.add_loss_term(prune::make_pruner(*job.plan.pruner, resolution, model));
  for (auto& modifier : train::make_modifiers(job.plan, resolution, model)) trainer.add_callback(modifier);
  if (job.plan.quantizer) {
    if (job.plan.quantizer->params.count("calibration"))  // an earlier run's table: no calibration pass
      train::load_calibration(model, job.plan.quantizer->text("calibration"));
    if (auto runtime = train::make_quantizer_runtime(*job.plan.quantizer, model))
      trainer.add_callback(runtime);
  }
  if (options.export_only) {  // the finished run: its graph state, then its weights, then the files
    io::FolderLock lock(job.output);
    auto state = nlohmann::json::parse(io::read_file((fs::path(job.output) / "run.json").string()), nullptr, false);
    if (state.is_discarded() || !state.contains("graph"))
      throw ConfigError(fmt::format("{}: run.json is missing or damaged; re-export needs a run folder written by this version",
                                    job.output));
    apply_graph_state(model, state["graph"], job.output);
    models::load_weights(model, job.output, "export", /*exact=*/true);
    write_exports(model, job, options.formats, options.hls4ml, result.exported);
    result.model = model;
    return result;
  }
  if (job.plan.distillation)
    trainer.add_loss_term(train::make_distiller(
        *job.plan.distillation, trainer, config::load_teacher(*job.plan.distillation, train.sample_shape(), outputs)));
  if (job.plan.fitcompress.enabled)  // before the run folder's checkpointer: a checkpoint holds its result
    trainer.add_callback(fit::fitcompress_callback(job.plan.fitcompress, train, [&](const fit::SearchResult& r) {
      write_text_file((fs::path(job.output) / "fitcompress.json").string(), r.to_json().dump(1) + "\n");
      observer.on_fitcompress(job, r);
    }));
  check_run_folder(job.output);
  fs::create_directories(job.output);
  io::FolderLock lock(job.output);  // held to the end: a second run into this folder is refused
  train::write_run_folder(trainer, job.output, result.classification,
                          {{"model.yaml", models::model_yaml_text(spec)}, {"job.yaml", job.text}});
  observer.on_trainer(job, trainer);
  const auto& eval = splits.validation.size() > 0 ? splits.validation : splits.test;
  result.history = trainer.fit(train, eval, fit);
  if (job.plan.quantizer) train::finish_quantizer(*job.plan.quantizer, model, train, job.training.batch_size, trainer.device());
  if (splits.test.size() > 0) result.test = trainer.evaluate(splits.test);
  save_module(model, (fs::path(job.output) / "model.pt").string());
  if (quantizes(model)) {
    result.precision = exporting::precision_json(model);
    exporting::write_precision(*result.precision, (fs::path(job.output) / "precision.json").string());
  }
  if (auto table = train::calibration_json(model); !table.empty()) {  // integer quantizers' scales, NNI's format
    write_text_file((fs::path(job.output) / "calibration.json").string(), table.dump(1) + "\n");
  }
  if (job.plan.speedup) {
    SpeedupReport report;
    auto small = speedup(model, &report);
    save_module(small, (fs::path(job.output) / "model_speedup.pt").string());
    result.speedup = report;
  }
  nlohmann::json run = {{"format", kRunFormat},
                        {"sparq_version", SPARQ_VERSION},
                        {"name", job.name},
                        {"job_dir", fs::absolute(job.base_dir.empty() ? "." : job.base_dir).lexically_normal().string()},
                        {"recipe_variables", job.load_options.recipe_variables},
                        {"graph", graph_state(model)}};
  if (result.test.samples > 0)
    run["test"] = {{"samples", result.test.samples},
                   {"loss", result.test.loss},
                   {"accuracy", result.classification ? nlohmann::json(result.test.accuracy) : nlohmann::json(nullptr)}};
  write_text_file((fs::path(job.output) / "run.json").string(), run.dump(1) + "\n");
  write_exports(model, job, job.exports, options.hls4ml, result.exported);
  report::write_run_report(job.output);
  result.model = model;
  observer.on_finished(job, result);
  return result;
}

void check_run_format(const nlohmann::json& run, const std::string& run_dir) {
  auto format = run.find("format");
  if (format == run.end() || !format->is_number_integer())
    throw ConfigError(fmt::format("{}: written by an incompatible (older) version of sparq: run.json has no format; "
                                  "run the job again",
                                  run_dir));
  if (format->get<int64_t>() != kRunFormat)
    throw ConfigError(fmt::format("{}: written by an incompatible version of sparq ({}): run folder format {}, this sparq "
                                  "reads format {}",
                                  run_dir, run.value("sparq_version", std::string("unknown")), format->dump(), kRunFormat));
}

config::Job load_run_job(const std::string& run_dir) {
  auto dir = fs::path(run_dir);
  for (const char* file : {"job.yaml", "run.json", "model.pt"})
    if (!fs::is_regular_file(dir / file))
      throw ConfigError(fmt::format("{}: not a finished run folder of this version of sparq (no {})", run_dir, file));
  auto run = nlohmann::json::parse(io::read_file((dir / "run.json").string()), nullptr, false);
  if (run.is_discarded() || !run.is_object()) throw ConfigError(fmt::format("{}: run.json is damaged", (dir / "run.json").string()));
  check_run_format(run, run_dir);
  if (!run.contains("job_dir") || !run["job_dir"].is_string())
    throw ConfigError(fmt::format("{}: run.json is damaged", (dir / "run.json").string()));
  config::LoadOptions load;
  if (run.contains("recipe_variables") && run["recipe_variables"].is_object())
    for (const auto& [k, v] : run["recipe_variables"].items()) load.recipe_variables[k] = v.get<std::string>();
  auto job = config::parse_job(io::read_file((dir / "job.yaml").string()), (dir / "job.yaml").string(),
                               run["job_dir"].get<std::string>(), load);
  job.output = run_dir;
  return job;
}

}  // namespace sparq
