// `sparq export RUN` (the finished run rebuilt from its folder, written as ONNX/QONNX) and
// `sparq verify RUN` (sparq's own evaluation of the whole test split against the integer
// reference, bit for bit, and against model.onnx in ONNX Runtime, per sample).
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
#include "sparq/export/reference.h"
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
  auto q = pq->quantizer("output");
  if (!q) return std::nullopt;
  auto d = q->describe();
  if (d.kind == "integer" || d.f.empty()) return std::nullopt;
  for (int f : d.f)
    if (f != d.f[0]) return std::nullopt;
  return std::make_pair(std::ldexp(1.0, -d.f[0]), d.element(0).type_name());
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

namespace {

/// sparq's evaluation of the test split (what the run reports), in batches, on the CPU.
torch::Tensor evaluate_split(models::Graph& model, const torch::Tensor& x, int64_t batch) {
  torch::NoGradGuard no_grad;
  model->to(torch::kCPU);
  model->eval();
  std::vector<torch::Tensor> parts;
  for (int64_t b = 0; b < x.size(0); b += batch) parts.push_back(model->forward(x.slice(0, b, std::min(b + batch, x.size(0)))));
  return torch::cat(parts);
}

/// The integer reference against sparq's evaluation: exit-code sense (true = every logit equal).
bool verify_reference(models::Graph& model, const torch::Tensor& x, const torch::Tensor& ours, int64_t batch) {
  auto ref = exporting::integer_reference(model, x, batch);
  auto sparq_values = ours.to(torch::kFloat64);
  auto differ = sparq_values != ref.output;
  const int64_t count = differ.sum().item<int64_t>();
  fmt::print("integer reference: {} of {} logits differ from sparq's evaluation{}\n", count, ours.numel(),
             count == 0 ? " (bit for bit equal)" : "");
  if (!ref.float_nodes.empty())
    fmt::print("  evaluated in float32 as the training graph does (no integer form): {}\n", fmt::join(ref.float_nodes, ", "));
  if (count == 0) return true;
  auto where = torch::nonzero(differ);
  for (int64_t n = 0; n < std::min<int64_t>(where.size(0), 5); ++n) {
    int64_t s = where[n][0].item<int64_t>(), o = where.size(1) > 1 ? where[n][1].item<int64_t>() : 0;
    fmt::print("  sample {} output {}: sparq {:.10g}, reference {:.10g}\n", s, o, sparq_values[s].view(-1)[o].item<double>(),
               ref.output[s].view(-1)[o].item<double>());
  }
  // The first node where the two part, on the first differing sample.
  const int64_t s = where[0][0].item<int64_t>();
  auto nodes = exporting::compare_nodes(model, x.slice(0, s, s + 1));
  if (!nodes.empty())
    fmt::print("  first differing node: {} ({} of {} values; element [{}]: sparq {:.10g}, reference {:.10g})\n", nodes[0].node,
               nodes[0].count, nodes[0].elements, fmt::join(nodes[0].first_index, ", "), nodes[0].sparq_value,
               nodes[0].reference_value);
  return false;
}

}  // namespace

int verify_command(const VerifyArgs& args) {
  auto job = load_run_job(args.run_dir);  // the run folder first: the user's input, before the tools
  if (!fs::is_regular_file(fs::path(args.run_dir) / "precision.json"))
    throw ConfigError(fmt::format("{}: the run's model is not quantized (no precision.json): verify compares the quantized "
                                  "model bit for bit",
                                  args.run_dir));
  const std::string modules = env_or("SPARQ_NODE_MODULES", SPARQ_NODE_MODULES);
  const std::string script = env_or("SPARQ_ORT_SCRIPT", std::string(SPARQ_SCRIPTS_DIR) + "/ort_run.js");
  const bool have_ort = fs::is_directory(fs::path(modules) / "onnxruntime-node") && fs::is_regular_file(script);
#ifndef SPARQ_WITH_ONNX
  const bool can_export = false;
#else
  const bool can_export = true;
#endif
  auto result = rebuild(job, have_ort && can_export ? std::vector<std::string>{"onnx"} : std::vector<std::string>{});
  const auto& splits = result.data;
  const auto& test = splits.test.size() > 0 ? splits.test : splits.validation;
  if (test.size() == 0) throw ConfigError(fmt::format("{}: the job has no test or validation split to verify on", args.run_dir));
  auto model = result.model;
  const int64_t batch = std::max<int64_t>(job.training.eval_batch_size > 0 ? job.training.eval_batch_size : job.training.batch_size, 1);
  auto x = test.x.cpu();
  torch::Tensor ours = evaluate_split(model, x, batch);
  const int64_t n = ours.size(0);
  const bool classification = test.task == data::Task::Classification;
  fmt::print("verify {}: {} samples of the test split\n", args.run_dir, n);
  if (classification)
    fmt::print("accuracy: sparq {:.2f}%\n", 100.0 * (ours.argmax(1) == test.y.cpu()).sum().item<int64_t>() / n);

  bool ok = true, compared = false;
  try {
    ok = verify_reference(model, x, ours, batch) && ok;
    compared = true;
  } catch (const Error& e) {  // a model outside the reference (integer lanes, ...): said, and ORT still runs
    fmt::print("integer reference: not available for this model: {}\n", e.what());
  }
  if (!have_ort || !can_export) {
    fmt::print("ONNX Runtime: {}, skipped\n", can_export ? fmt::format("no onnxruntime-node in {} (scripts/setup.sh test "
                                                                      "installs it; or set SPARQ_NODE_MODULES)", modules)
                                                        : std::string("this build has no ONNX export"));
    if (!compared) throw ConfigError(fmt::format("{}: nothing to verify with: the integer reference cannot run this model "
                                                 "and ONNX Runtime is not installed",
                                                 args.run_dir));
    fmt::print("{}\n", ok ? "verified" : "MISMATCH");
    return ok ? 0 : 3;
  }
  auto tmp = fs::temp_directory_path() / fmt::format("sparq_verify_{}", ::getpid());
  fs::create_directories(tmp);
  struct Cleanup {
    fs::path dir;
    ~Cleanup() { std::error_code ec; fs::remove_all(dir, ec); }
  } cleanup{tmp};
  data::write_npy((tmp / "x.npy").string(), x);
  auto onnx = (fs::path(args.run_dir) / "model.onnx").string();
  std::string cmd = fmt::format("NODE_PATH='{}' node '{}' '{}' '{}' '{}'", modules, script, onnx, (tmp / "x.npy").string(),
                                (tmp / "y.npy").string());
  if (std::system(cmd.c_str()) != 0) throw Error(fmt::format("verify: ONNX Runtime could not run {}", onnx));
  auto theirs = data::read_npy((tmp / "y.npy").string());
  if (theirs.sizes() != ours.sizes())
    throw Error(fmt::format("verify: ONNX Runtime's output has shape [{}], sparq's [{}]", fmt::join(theirs.sizes(), ", "),
                            fmt::join(ours.sizes(), ", ")));
  const int64_t differ = classification ? (ours.argmax(1) != theirs.argmax(1)).sum().item<int64_t>() : 0;
  const double largest = (ours - theirs).abs().max().item<double>();
  fmt::print("ONNX Runtime running {}:\n", onnx);
  if (classification) {
    fmt::print("accuracy: onnxruntime {:.2f}%\n", 100.0 * (theirs.argmax(1) == test.y.cpu()).sum().item<int64_t>() / n);
    fmt::print("predictions that differ: {}\n", differ);
  }
  ok = ok && differ == 0;
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
