// sparq inspect CONFIG --model M: what a compression config resolves to on a model, layer by
// layer; and sparq config default METHOD: PQuantML's packaged config of a pruning method.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "sparq/compress/compress.h"
#include "sparq/config/job.h"
#include "sparq/config/pquant.h"
#include "sparq/config/yaml.h"
#include "sparq/error.h"
#include "sparq/export/precision.h"
#include "sparq/prune/methods.h"

namespace sparq::cli {

namespace {

std::vector<int64_t> default_input_shape(const std::string& zoo) {
  if (zoo == "jet_tagger") return {16};
  if (zoo == "resnet") return {3, 32, 32};
  return {1, 28, 28};  // mlp, lenet: Fashion-MNIST
}

models::GraphSpec inspect_model_spec(const InspectArgs& args) {
  auto ext = std::filesystem::path(args.model).extension().string();
  if (ext == ".yaml" || ext == ".yml") {
    if (!std::filesystem::exists(args.model))
      throw ConfigError(fmt::format("--model: file '{}' does not exist", args.model));
    auto spec = models::load_model_yaml(args.model, args.input_shape);
    if (spec.input_shape.empty())
      throw ConfigError(fmt::format("{}: the model has no input_shape; give one with --input-shape", args.model));
    return spec;
  }
  auto names = models::zoo_names();
  if (std::find(names.begin(), names.end(), args.model) == names.end())
    throw ConfigError(fmt::format("--model: unknown zoo model '{}', did you mean '{}'? (zoo: {}; or a model YAML "
                                  "path ending in .yaml)",
                                  args.model, config::nearest(args.model, names), fmt::join(names, ", ")));
  int64_t classes = args.classes > 0 ? args.classes : (args.model == "jet_tagger" ? 5 : 10);
  auto shape = args.input_shape.empty() ? default_input_shape(args.model) : args.input_shape;
  return models::zoo_spec(args.model, shape, classes, models::ZooOptions{});
}

/// ap_fixed<W,I> of a quantizer ("-" when the lane has none, "float" when quantization is off).
std::string format_of(const layers::PQLayer& layer, const std::string& target) {
  for (const auto& [name, q] : layer.quantizers()) {
    if (name != target) continue;
    if (!q->enabled) return "float";
    auto f = q->format();
    std::string text = fmt::format("{}{}<{},{}>", q->is_hgq() ? "hgq " : "", f.k ? "ap_fixed" : "ap_ufixed", f.width(),
                                   f.k + f.i);
    if (q->spec().granularity != quant::Granularity::PerTensor)
      text += fmt::format(" {}", quant::to_string(q->spec().granularity));
    return text;
  }
  return "-";
}

std::string value_text(const ParamValue& v) {
  if (std::holds_alternative<std::monostate>(v)) return "null";
  if (auto b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  if (auto i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (auto d = std::get_if<double>(&v)) return fmt::format("{}", *d);
  return std::get<std::string>(v);
}

void print_plan_sections(const Plan& plan) {
  if (plan.quantization) {
    const auto& q = *plan.quantization;
    fmt::print("quantization: {}; rounding {}, overflow {} (weights) / {} (data); defaults weight (k,i,f) = "
               "({},{},{}), data ({},{},{}); input lanes {}, output lanes {}{}\n",
               q.enabled ? "on" : "off (layers compute in float)", quant::to_string(q.weight.round),
               quant::to_string(q.weight.overflow), quant::to_string(q.data.overflow), q.weight.k, q.weight.i,
               q.weight.f, q.data.k, q.data.i, q.data.f, q.quantize_input ? "on" : "off",
               q.quantize_output ? "on" : "off", q.hgq ? "; HGQ on" : "");
  }
  if (plan.pruning) {
    const auto& p = *plan.pruning;
    std::vector<std::string> params;
    for (const auto& [k, v] : p.spec.params) params.push_back(fmt::format("{} {}", k, value_text(v)));
    fmt::print("pruning: {} ({}){}{}\n", p.spec.method, fmt::join(params, ", "),
               p.enable_pruning ? "" : "; enable_pruning false: no layer prunes",
               p.disabled_layers.empty() ? "" : fmt::format("; disabled for {}", fmt::join(p.disabled_layers, ", ")));
  } else {
    fmt::print("pruning: none\n");
  }
  if (plan.schedule) {
    const auto& s = *plan.schedule;
    fmt::print("schedule: {} pretraining epoch(s), {} round(s) x {} training epoch(s), {} fine-tuning epoch(s) "
               "({} in all); rewind {}, save_weights_epoch {}; {}\n",
               s.pretraining_epochs, s.rounds, s.epochs, s.fine_tuning_epochs, s.total_epochs(), to_string(s.rewind),
               s.save_weights_epoch, plan.pruning_first ? "prune, then quantize" : "quantize, then prune");
    if (!s.extra.empty()) {
      std::vector<std::string> extra;
      for (const auto& [k, v] : s.extra) extra.push_back(fmt::format("{}: {}", k, v));
      fmt::print("user keys (kept, not used by sparq run): {}\n", fmt::join(extra, ", "));
    }
  } else {
    fmt::print("schedule: none in the config (a job trains training.epochs as one stage)\n");
  }
  const auto& f = plan.fitcompress;
  fmt::print("fitcompress: {}\n",
             f.enabled ? fmt::format("on (bit widths [{}], goal {}, pruning {})", fmt::join(f.quantization_schedule, ", "),
                                     f.compression_goal, f.optimize_pruning ? "searched" : "not searched")
                       : "off");
  const auto& s = plan.search;
  std::vector<std::string> space;
  for (const auto& [name, r] : s.numerical)
    space.push_back(r.step ? fmt::format("{} [{}, {}] step {}", name, r.low, r.high, *r.step)
                           : fmt::format("{} [{}, {}]", name, r.low, r.high));
  for (const auto& [name, choices] : s.categorical) space.push_back(fmt::format("{} {{{}}}", name, fmt::join(choices, ", ")));
  fmt::print("search: {} '{}', {} trial(s){}\n", s.sampler, s.experiment_name, s.num_trials,
             space.empty() ? "" : fmt::format(", space: {}", fmt::join(space, "; ")));
}

}  // namespace

int inspect_command(const InspectArgs& args) {
  // A run folder: the formats the run ended with.
  if (std::filesystem::is_directory(args.config)) {
    auto path = std::filesystem::path(args.config) / "precision.json";
    std::ifstream in(path);
    if (!in)
      throw ConfigError(fmt::format("{}: no precision.json in this folder (a run folder of a quantized job has one)",
                                    args.config));
    auto precision = nlohmann::json::parse(in, nullptr, false);
    if (precision.is_discarded() || !precision.contains("layers"))
      throw ConfigError(fmt::format("{}: not a precision file written by sparq run", path.string()));
    fmt::print("run: {} (model {})\n\n{}", args.config, precision.value("model", "?"), exporting::precision_table(precision));
    return 0;
  }
  if (args.model.empty()) throw ConfigError("inspect: --model is required with a config file (or give a run folder)");
  // A job file: its `compression` config; otherwise a PQuantML config file.
  auto doc = config::YamlDoc::load_file(args.config);
  bool job = doc.root.IsMap() && doc.root["compression"];
  Plan plan = job ? config::load_job_plan(args.config) : config::load_pquant(args.config);
  if (args.yaml) {
    fmt::print("{}", config::write_pquant(plan));
    return 0;
  }
  torch::manual_seed(0);
  auto spec = inspect_model_spec(args);
  models::Graph graph(spec);
  check_plan_names(graph, plan);
  // The layer table shows formats; methods not runnable yet must still be inspectable.
  Plan quant_only = plan;
  quant_only.pruning.reset();
  auto report = compress(graph, quant_only);

  fmt::print("config: {} ({})\nmodel: {}, input [{}]\n\n", args.config,
             job ? "the job's compression" : "PQuantML", graph->name(),
             fmt::join(spec.input_shape, ", "));
  std::vector<std::array<std::string, 7>> rows = {{"layer", "op", "input", "weight", "bias", "output", "pruning"}};
  for (const auto& node : graph->nodes()) {
    auto pq = pq_layer(graph, node.name);
    if (!pq) continue;
    std::string op = node.op.substr(2);  // "PQLinear" -> "Linear"
    if (auto act = std::dynamic_pointer_cast<layers::PQActivationImpl>(pq)) op += " (" + act->function() + ")";
    std::string pruning = "-";
    if (std::dynamic_pointer_cast<layers::PQWeightLayer>(pq)) {
      if (!plan.pruning) pruning = "none";
      else if (!plan.pruning->enable_pruning) pruning = "off (enable_pruning)";
      else if (!plan.pruning->enabled_for(node.name)) pruning = "off (disabled)";
      else pruning = plan.pruning->spec.method;
    }
    rows.push_back({node.name, op, format_of(*pq, "input"), format_of(*pq, "weight"), format_of(*pq, "bias"),
                    format_of(*pq, "output"), pruning});
  }
  std::array<size_t, 7> width{};
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) line += fmt::format("{:<{}}  ", row[c], width[c]);
    fmt::print("{}\n", line.substr(0, line.find_last_not_of(' ') + 1));
  }
  if (!report.left_float.empty()) fmt::print("\nin float: {}\n", fmt::join(report.left_float, "; "));
  fmt::print("\n");
  print_plan_sections(plan);
  return 0;
}

int config_default_command(const std::string& method) {
  fmt::print("{}", config::write_pquant(config::packaged_config(method)));
  return 0;
}

}  // namespace sparq::cli
