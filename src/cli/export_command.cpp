// `sparq export RUN` (the finished run rebuilt from its folder, written as ONNX/QONNX) and
// `sparq verify RUN` (that model.onnx in ONNX Runtime against sparq's own evaluation, per
// sample, over the whole test split).
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "cli/commands.h"
#include "sparq/compress/compress.h"
#include "sparq/data/dataset.h"
#include "sparq/error.h"
#include "sparq/layers/pq_layers.h"
#include "sparq/run/run_job.h"

namespace sparq::cli {

namespace fs = std::filesystem;

namespace {

RunResult rebuild(const config::Job& job, const std::vector<std::string>& formats) {
  RunObserver quiet;
  RunOptions options;
  options.export_only = true;
  options.formats = formats;
  return run_job(job, quiet, options);
}

/// The step of the model's output format when its last layer quantizes its output with one f.
std::optional<std::pair<double, std::string>> output_lsb(const models::Graph& model) {
  const auto& node = model->nodes()[model->output_index()];
  auto pq = pq_layer(model, node.name);
  if (!pq) return std::nullopt;
  for (const auto& [target, q] : pq->quantizers()) {
    if (target != "output" || !q->enabled) continue;
    auto d = q->describe();
    if (d.kind == "integer" || d.f.empty()) return std::nullopt;
    for (int f : d.f)
      if (f != d.f[0]) return std::nullopt;
    return std::make_pair(std::ldexp(1.0, -d.f[0]), d.element(0).type_name());
  }
  return std::nullopt;
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

}  // namespace

int export_command(const ExportArgs& args) {
  auto formats = args.formats.empty() ? std::vector<std::string>{"onnx"} : args.formats;
  auto result = rebuild(load_run_job(args.run_dir), formats);
  for (const auto& path : result.exported) fmt::print("exported {}\n", path);
  return 0;
}

int verify_command(const VerifyArgs& args) {
  auto job = load_run_job(args.run_dir);  // the run folder first: the user's input, before the tools
  const std::string modules = env_or("SPARQ_NODE_MODULES", SPARQ_NODE_MODULES);
  const std::string script = env_or("SPARQ_ORT_SCRIPT", std::string(SPARQ_SCRIPTS_DIR) + "/ort_run.js");
  if (!fs::is_directory(fs::path(modules) / "onnxruntime-node") || !fs::is_regular_file(script))
    throw ConfigError(fmt::format("verify needs ONNX Runtime: no onnxruntime-node in {} (scripts/setup.sh test installs "
                                  "it there; or set SPARQ_NODE_MODULES)",
                                  modules));
  auto result = rebuild(job, {"onnx"});
  const auto& splits = result.data;
  const auto& test = splits.test.size() > 0 ? splits.test : splits.validation;
  if (test.size() == 0) throw ConfigError(fmt::format("{}: the job has no test or validation split to verify on", args.run_dir));
  auto model = result.model;
  model->to(torch::kCPU);
  model->eval();
  torch::Tensor ours;
  {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> parts;
    const int64_t batch = std::max<int64_t>(job.training.eval_batch_size > 0 ? job.training.eval_batch_size : job.training.batch_size, 1);
    auto x = test.x.cpu();
    for (int64_t b = 0; b < x.size(0); b += batch) parts.push_back(model->forward(x.slice(0, b, std::min(b + batch, x.size(0)))));
    ours = torch::cat(parts);
  }
  auto tmp = fs::temp_directory_path() / fmt::format("sparq_verify_{}", ::getpid());
  fs::create_directories(tmp);
  struct Cleanup {
    fs::path dir;
    ~Cleanup() { std::error_code ec; fs::remove_all(dir, ec); }
  } cleanup{tmp};
  data::write_npy((tmp / "x.npy").string(), test.x.cpu());
  auto onnx = (fs::path(args.run_dir) / "model.onnx").string();
  std::string cmd = fmt::format("NODE_PATH='{}' node '{}' '{}' '{}' '{}'", modules, script, onnx, (tmp / "x.npy").string(),
                                (tmp / "y.npy").string());
  if (std::system(cmd.c_str()) != 0) throw Error(fmt::format("verify: ONNX Runtime could not run {}", onnx));
  auto theirs = data::read_npy((tmp / "y.npy").string());
  if (theirs.sizes() != ours.sizes())
    throw Error(fmt::format("verify: ONNX Runtime's output has shape [{}], sparq's [{}]", fmt::join(theirs.sizes(), ", "),
                            fmt::join(ours.sizes(), ", ")));
  const int64_t n = ours.size(0);
  const bool classification = test.task == data::Task::Classification;
  const int64_t differ = classification ? (ours.argmax(1) != theirs.argmax(1)).sum().item<int64_t>() : 0;
  const double largest = (ours - theirs).abs().max().item<double>();
  fmt::print("verify {}: {} samples, sparq's evaluation against ONNX Runtime running {}\n", args.run_dir, n, onnx);
  if (classification) {
    auto labels = test.y.cpu();
    fmt::print("accuracy: sparq {:.2f}%, onnxruntime {:.2f}%\n",
               100.0 * (ours.argmax(1) == labels).sum().item<int64_t>() / n,
               100.0 * (theirs.argmax(1) == labels).sum().item<int64_t>() / n);
    fmt::print("predictions that differ: {}\n", differ);
  }
  bool ok = differ == 0;
  if (auto lsb = output_lsb(model)) {
    auto lsbs = ((ours - theirs).abs() / lsb->first).round();
    fmt::print("largest logit difference: {} LSB of {} ({} of {} logits differ, all by at most that)\n",
               lsbs.max().item<double>(), lsb->second, (lsbs > 0).sum().item<int64_t>(), ours.numel());
    ok = ok && largest <= lsb->first;
  } else {
    fmt::print("largest logit difference: {:.3g} (the output is not on a fixed-point grid)\n", largest);
  }
  fmt::print("{}\n", ok ? "verified" : "MISMATCH");
  return ok ? 0 : 3;
}

}  // namespace sparq::cli
