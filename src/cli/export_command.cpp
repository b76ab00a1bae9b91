// `sparq export RUN` (the finished run rebuilt from its folder, written as ONNX/QONNX) and
// `sparq verify RUN` (sparq's own evaluation of the whole test split against the integer
// reference, bit for bit, and against model.onnx in ONNX Runtime, per sample).
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <filesystem>

#include "cli/commands.h"
#include "sparq/compress/compress.h"
#include "sparq/data/dataset.h"
#include "sparq/error.h"
#include "sparq/export/hls4ml.h"
#include "sparq/export/reference.h"
#include "sparq/io/files.h"
#include "sparq/layers/pq_layers.h"
#include "sparq/run/run_job.h"

namespace sparq::cli {

namespace fs = std::filesystem;

namespace {

RunResult rebuild(const config::Job& job, const std::vector<std::string>& formats,
                  const exporting::Hls4mlOptions& hls4ml = {}) {
  RunObserver quiet;
  RunOptions options;
  options.export_only = true;
  options.formats = formats;
  options.hls4ml = hls4ml;
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
#ifndef SPARQ_WITH_ONNX
  // Said first: every format needs ONNX, whatever else is wrong with the command.
  throw MissingFeatureError("export", "ONNX support", "libonnx-dev");
#else
  if (std::find(formats.begin(), formats.end(), "hls4ml") != formats.end()) {
    auto options = args.hls4ml;
    if (options.project_name.empty()) options.project_name = "myproject";  // checked here; the job's name is applied later
    exporting::check_hls4ml_options(options);
  }
#endif
  const exporting::Hls4mlOptions defaults;
  const auto& h = args.hls4ml;
  const bool hls4ml_options = h.backend != defaults.backend || h.part != defaults.part || h.clock_period != defaults.clock_period ||
                              h.io_type != defaults.io_type || h.strategy != defaults.strategy ||
                              h.reuse_factor != defaults.reuse_factor || h.project_name != defaults.project_name ||
                              h.output_dir != defaults.output_dir;
  if (hls4ml_options && std::find(formats.begin(), formats.end(), "hls4ml") == formats.end())
    throw ConfigError("export: --backend, --part, --clock-period, --io-type, --strategy, --reuse-factor, --project-name and "
                      "--output-dir apply to --format hls4ml only");
  auto job = load_run_job(args.run_dir);
  auto result = rebuild(job, formats, args.hls4ml);
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

#ifdef SPARQ_WITH_ONNX
bool have_python_onnx() { return std::system("/usr/bin/python3 -c 'import onnx, numpy' > /dev/null 2>&1") == 0; }

/// The hls4ml hand-off (model_hls4ml.onnx, written to `tmp`) run by scripts/qonnx_run.py, QONNX's
/// semantics in float64 numpy, against sparq's evaluation; nothing when the model has no hand-off.
std::optional<bool> verify_hls4ml(models::Graph& model, const torch::Tensor& x, const torch::Tensor& ours, const fs::path& tmp) {
  exporting::Hls4mlExport out;
  try {
    out = exporting::export_hls4ml(model, tmp.string(), {});
  } catch (const Error& e) {
    fmt::print("hls4ml hand-off: not available for this model: {}\n", e.what());
    return std::nullopt;
  }
  auto xf = x.contiguous().to(torch::kFloat32);
  io::write_file_atomic((tmp / "x.f32").string(), std::string(static_cast<const char*>(xf.data_ptr()), xf.numel() * 4));
  const std::string script = env_or("SPARQ_QONNX_SCRIPT", std::string(SPARQ_SCRIPTS_DIR) + "/qonnx_run.py");
  std::string cmd = fmt::format("/usr/bin/python3 '{}' '{}' '{}' '{}' {}", script, out.onnx_path, (tmp / "x.f32").string(),
                                (tmp / "y.f64").string(), x.size(0));
  if (std::system(cmd.c_str()) != 0) throw Error(fmt::format("verify: {} could not run the hls4ml hand-off", script));
  const std::string bytes = io::read_file((tmp / "y.f64").string());
  if (static_cast<int64_t>(bytes.size()) != ours.numel() * 8)
    throw Error(fmt::format("verify: the hls4ml hand-off gave {} values, sparq {}", bytes.size() / 8, ours.numel()));
  auto theirs = torch::empty(ours.sizes(), torch::kFloat64);
  std::memcpy(theirs.data_ptr(), bytes.data(), bytes.size());
  const int64_t count = (theirs != ours.to(torch::kFloat64)).sum().item<int64_t>();
  fmt::print("hls4ml hand-off (model_hls4ml.onnx, {} nodes, QONNX semantics): {} of {} logits differ from sparq's "
             "evaluation{}\n",
             out.nodes, count, ours.numel(),
             count == 0 ? " (bit for bit equal)" : out.exact ? "" : " (float parts, not expected to be exact: see below)");
  for (const auto& note : out.notes) fmt::print("  {}\n", note);
  return count == 0 || !out.exact;  // a hand-off with float parts is reported, not failed
}
#endif

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
  auto tmp = fs::temp_directory_path() / fmt::format("sparq_verify_{}", ::getpid());
  fs::create_directories(tmp);
  struct Cleanup {
    fs::path dir;
    ~Cleanup() { std::error_code ec; fs::remove_all(dir, ec); }
  } cleanup{tmp};
#ifdef SPARQ_WITH_ONNX
  if (have_python_onnx()) {
    if (auto same = verify_hls4ml(model, x, ours, tmp)) ok = *same && ok, compared = true;
  } else {
    fmt::print("hls4ml hand-off: no python3 with onnx and numpy (Debian's python3-onnx), skipped\n");
  }
#endif
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
