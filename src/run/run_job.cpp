#include "sparq/run/run_job.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <filesystem>

#include "sparq/error.h"
#include "sparq/export/precision.h"
#include "sparq/train/callbacks.h"

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
bool quantizes(const models::Graph& model) {
  for (const auto& node : model->nodes())
    if (auto pq = pq_layer(model, node.name))
      for (const auto& [target, q] : pq->quantizers())
        if (q->enabled) return true;
  return false;
}
}  // namespace

RunResult run_job(const config::Job& job, RunObserver& observer, const RunOptions& options) {
  auto splits = data::load_data(job.data);
  observer.on_data(job, splits);
  const auto& train = splits.train;
  RunResult result;
  result.classification = train.task == data::Task::Classification;
  result.run_dir = job.output;
  const fs::path checkpoint = fs::path(job.output) / "checkpoint.pt";
  if (options.resume && !fs::exists(checkpoint))
    throw Error(fmt::format("--resume: no checkpoint at {}", checkpoint.string()));

  int64_t outputs = result.classification ? train.num_classes : (train.y.dim() > 1 ? train.y.size(1) : 1);
  RunRng rng(job.training.seed);
  models::Graph model(config::model_spec(job.model, train.sample_shape(), outputs));
  observer.on_model(job, model, train::resolve_device(job.training.device));
  if (job.plan.compresses()) {
    result.compression = compress(model, job.plan);
    observer.on_compressed(job, result.compression);
  }
  train::Trainer trainer(model, job.training, job.plan.schedule, job.plan.events);
  trainer.add_callback(std::make_shared<train::MetricsWriter>(job.output, result.classification));
  trainer.add_callback(std::make_shared<train::Checkpointer>(job.output));
  observer.on_trainer(job, trainer);
  const auto& eval = splits.validation.size() > 0 ? splits.validation : splits.test;
  train::FitOptions fit;
  if (options.resume) fit.resume_from = checkpoint.string();
  fit.stop_after = options.stop_after;
  result.history = trainer.fit(train, eval, fit);
  if (splits.test.size() > 0) result.test = trainer.evaluate(splits.test);
  fs::create_directories(job.output);
  torch::save(model, (fs::path(job.output) / "model.pt").string());
  if (quantizes(model)) {
    result.precision = exporting::precision_json(model);
    exporting::write_precision(*result.precision, (fs::path(job.output) / "precision.json").string());
  }
  result.model = model;
  observer.on_finished(job, result);
  return result;
}

}  // namespace sparq
