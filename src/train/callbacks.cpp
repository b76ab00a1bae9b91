#include "sparq/train/callbacks.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "sparq/error.h"
#include "sparq/io/files.h"

namespace sparq::train {

namespace fs = std::filesystem;

nlohmann::json metrics_json(const EpochMetrics& m, bool classification) {
  nlohmann::json j = {{"epoch", m.epoch},           {"stage", prune::to_string(m.slot.stage)},
                      {"round", m.slot.round + 1},  {"stage_epoch", m.slot.epoch + 1},
                      {"train_loss", m.train_loss}, {"eval_loss", m.eval.loss},
                      {"seconds", m.seconds},       {"samples_per_second", m.samples_per_second},
                      {"lr", m.lr}};
  // The documented loss terms are always written (0 when the run has none), then any others.
  for (const char* key : {"extra_loss", "hgq_loss", "beta"}) j[key] = m.value(key);
  for (const auto& [key, v] : m.values) j[key] = v;
  j["train_accuracy"] = classification ? nlohmann::json(m.train_accuracy) : nlohmann::json(nullptr);
  j["eval_accuracy"] = classification ? nlohmann::json(m.eval.accuracy) : nlohmann::json(nullptr);
  if (!m.layer_costs.empty()) {
    auto cost_json = [](const layers::LayerCost& c) {
      double sparsity = c.weights ? 1.0 - static_cast<double>(c.nonzero) / c.weights : 0.0;
      return nlohmann::json{{"ebops", c.ebops},     {"weight_bits", c.weight_bits}, {"nonzero_weights", c.nonzero},
                            {"weights", c.weights}, {"sparsity", sparsity}};
    };
    j.update(cost_json(m.cost));
    nlohmann::json per_layer;
    for (const auto& [name, c] : m.layer_costs) per_layer[name] = cost_json(c);
    j["layers"] = per_layer;
  }
  return j;
}

void MetricsWriter::on_train_begin(Trainer& t, const TrainContext& ctx) {
  fs::create_directories(dir_);
  fs::path path = fs::path(dir_) / "metrics.jsonl";
  std::vector<std::string> keep;
  if (ctx.resumed) {  // keep the lines of the epochs the checkpoint holds; the rest is trained again
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.value("epoch", int64_t{0}) <= ctx.start_epoch) keep.push_back(line);
    }
  }
  std::string text;
  for (const auto& line : keep) text += line + '\n';
  io::write_file_atomic(path.string(), text);
}

void MetricsWriter::on_epoch_report(Trainer& t, const TrainContext&, const EpochMetrics& m) {
  // Appended (a sweep's file grows by one line an epoch); a failed write is cut back off, so the
  // file keeps whole lines only, and stops the run.
  const auto path = fs::path(dir_) / "metrics.jsonl";
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  std::ofstream out(path, std::ios::app);
  out << metrics_json(m, classification_).dump() << '\n';
  out.flush();
  if (!out) {
    const int err = errno;
    out.close();
    if (!ec) fs::resize_file(path, size, ec);
    throw Error(fmt::format("cannot write {}: {}", path.string(), std::strerror(err)));
  }
}

void Checkpointer::on_epoch_report(Trainer& t, const TrainContext& ctx, const EpochMetrics& m) {
  fs::create_directories(dir_);
  t.save_checkpoint(checkpoint_path(dir_), m.epoch);
}

void RunFilesWriter::on_train_begin(Trainer& t, const TrainContext& ctx) {
  fs::create_directories(dir_);
  for (const auto& [name, text] : files_) io::write_file_atomic((fs::path(dir_) / name).string(), text);
}

void write_run_folder(Trainer& trainer, const std::string& dir, bool classification,
                      std::map<std::string, std::string> files) {
  if (!files.empty()) trainer.add_callback(std::make_shared<RunFilesWriter>(dir, std::move(files)));
  trainer.add_callback(std::make_shared<MetricsWriter>(dir, classification));
  trainer.add_callback(std::make_shared<Checkpointer>(dir));
}

std::string checkpoint_path(const std::string& dir) { return (fs::path(dir) / "checkpoint.pt").string(); }

std::string resume_checkpoint(const std::string& dir) {
  auto path = checkpoint_path(dir);
  if (dir.empty() || !fs::exists(path)) throw Error(fmt::format("--resume: no checkpoint at {}", path));
  return path;
}

}  // namespace sparq::train
