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
#include "sparq/config/dialect.h"
#include "sparq/config/job.h"
#include "sparq/models/onnx_import.h"
#include "sparq/config/pquant.h"
#include "sparq/yaml/reader.h"
#include "sparq/error.h"
#include "sparq/export/precision.h"
#include "sparq/fit/fitcompress.h"
#include "sparq/io/files.h"
#include "sparq/prune/methods.h"
#include "sparq/train/modifiers.h"

namespace sparq::cli {

namespace {

std::vector<int64_t> default_input_shape(const std::string& zoo) {
  if (zoo == "jet_tagger") return {16};
  if (zoo == "resnet") return {3, 32, 32};
  return {1, 28, 28};  // mlp, lenet: Fashion-MNIST
}

models::GraphSpec inspect_model_spec(const InspectArgs& args) {
  auto ext = std::filesystem::path(args.model).extension().string();
#ifdef SPARQ_WITH_ONNX
  if (ext == ".onnx") return models::import_onnx(args.model).spec;
#else
  if (ext == ".onnx")
    throw MissingFeatureError("--model " + args.model, "ONNX support", "libonnx-dev");
#endif
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
                                  args.model, yaml::nearest(args.model, names), fmt::join(names, ", ")));
  int64_t classes = args.classes > 0 ? args.classes : (args.model == "jet_tagger" ? 5 : 10);
  auto shape = args.input_shape.empty() ? default_input_shape(args.model) : args.input_shape;
  return models::zoo_spec(args.model, shape, classes, models::ZooOptions{});
}

/// ap_fixed<W,I> of a quantizer ("-" when the lane has none, "float" when it is switched off).
std::string format_of(const layers::PQLayer& layer, const std::string& target) {
  for (const auto& [name, q] : layer.quantizers()) {
    if (name != target) continue;
    auto d = q->describe();
    if (!d.enabled && d.kind != "integer") return "float";
    if (d.kind == "integer")  // QAT quantizers are off until their start: show what they will be
      return fmt::format("{}int{}{}{}", d.k.at(0) ? "" : "u", d.k.at(0) + d.i.at(0),
                         d.granularity == quant::Granularity::PerTensor ? "" : " per_channel",
                         d.enabled ? "" : " (from its start)");
    auto f = d.element();
    std::string text = fmt::format("{}{}<{},{}>", q->trains_widths() ? d.kind + " " : "", f.k ? "ap_fixed" : "ap_ufixed",
                                   f.width(), f.k + f.i);
    if (d.granularity != quant::Granularity::PerTensor) text += fmt::format(" {}", quant::to_string(d.granularity));
    return text;
  }
  return "-";
}

std::string selector_text(const Selector& s) {
  std::vector<std::string> parts;
  if (!s.names.empty()) parts.push_back(fmt::format("modules {}", fmt::join(s.names, ", ")));
  if (!s.name_regexes.empty()) parts.push_back(fmt::format("names ~ {}", fmt::join(s.name_regexes, ", ")));
  if (!s.op_types.empty()) parts.push_back(fmt::format("ops {}", fmt::join(s.op_types, ", ")));
  if (parts.empty()) parts.push_back("every module");
  if (!s.exclude_op_types.empty()) parts.push_back(fmt::format("except ops {}", fmt::join(s.exclude_op_types, ", ")));
  if (!s.exclude_names.empty()) parts.push_back(fmt::format("except {}", fmt::join(s.exclude_names, ", ")));
  return fmt::format("{}", fmt::join(parts, " "));
}

/// "ratio 0.5 out_channel, global group 'g'": the keys a mask setting has.
std::string mask_text(const MaskSetting& m) {
  std::vector<std::string> parts;
  if (m.sparse_ratio) parts.push_back(fmt::format("ratio {}", *m.sparse_ratio));
  if (m.sparse_threshold) parts.push_back(fmt::format("threshold {}", *m.sparse_threshold));
  if (m.sparse_ratio || m.sparse_threshold) parts.push_back(to_string(m.granularity));
  if (m.min_sparse_ratio) parts.push_back(fmt::format("min {}", *m.min_sparse_ratio));
  if (m.max_sparse_ratio) parts.push_back(fmt::format("max {}", *m.max_sparse_ratio));
  if (m.global_group) parts.push_back("global group " + *m.global_group);
  if (m.dependency_group) parts.push_back("dependency group " + *m.dependency_group);
  if (m.internal_metric_block) parts.push_back(fmt::format("block {}", *m.internal_metric_block));
  if (m.align && parts.empty())
    parts.push_back(fmt::format("aligned to {}.{} dims [{}]", m.align->module.empty() ? "this" : m.align->module,
                                m.align->target, fmt::join(m.align->dims, ", ")));
  if (m.apply_method != "mul") parts.push_back("apply " + m.apply_method);
  return parts.empty() ? "no mask" : fmt::format("{}", fmt::join(parts, " "));
}

std::string setting_text(const TargetSetting& t) {
  std::vector<std::string> parts;
  if (t.quant) {
    const auto& q = *t.quant;
    if (q.spec) parts.push_back(quant::to_string(*q.spec));
    for (auto [name, v] : {std::pair{"k", q.k}, std::pair{"i", q.i}, std::pair{"f", q.f}})
      if (v) parts.push_back(fmt::format("{} = {}", name, *v));
    if (q.enabled) parts.push_back(*q.enabled ? "on" : "off");
  }
  if (t.prune) {
    if (t.prune->method) parts.push_back("prune " + t.prune->method->method);
    if (t.prune->active) parts.push_back(*t.prune->active ? "pruning on" : "pruning off");
    if (t.prune->mask) parts.push_back("mask " + mask_text(*t.prune->mask));
  }
  return fmt::format("{}", fmt::join(parts, " "));
}

void print_plan_sections(const Plan& plan) {
  fmt::print("rules ({}, {}):\n", plan.dialect.empty() ? "hand-made" : plan.dialect,
             plan.precedence == Precedence::LaterWins ? "later rules override earlier ones" : "the first rule wins");
  for (size_t n = 0; n < plan.rules.size(); ++n) {
    const auto& rule = plan.rules[n];
    std::vector<std::string> sets;
    for (const auto& [target, t] : rule.targets) sets.push_back(fmt::format("{}: {}", target, setting_text(t)));
    if (rule.module.function) sets.push_back("function " + *rule.module.function);
    if (rule.module.relu_multiplier) sets.push_back("relu multiplier");
    if (rule.module.pruning_first) sets.push_back(*rule.module.pruning_first ? "prune, then quantize" : "quantize, then prune");
    fmt::print("  {}. {}: {}{}\n", n + 1, selector_text(rule.select), sets.empty() ? "PQ layers" : fmt::format("{}", fmt::join(sets, "; ")),
               rule.where.empty() ? "" : fmt::format("  ({})", rule.where));
  }
  if (plan.pruner) {
    std::vector<std::string> params;
    for (const auto& [k, v] : plan.pruner->params) params.push_back(fmt::format("{} {}", k, to_string(v)));
    fmt::print("pruner: {} ({})\n", plan.pruner->method, fmt::join(params, ", "));
  } else if (plan.uses_masks()) {
    fmt::print("pruner: none named (a job names it: compression: {{pruner: {{type: L1NormPruner}}, config_list: ...}})\n");
  }
  if (plan.quantizer) {
    std::vector<std::string> params;
    for (const auto& [k, v] : plan.quantizer->params) params.push_back(fmt::format("{} {}", k, to_string(v)));
    fmt::print("quantizer: {}{}\n", plan.quantizer->method, params.empty() ? "" : fmt::format(" ({})", fmt::join(params, ", ")));
  }
  auto methods = plan.pruning_methods();
  for (const auto& spec : methods) {
    std::vector<std::string> params;
    for (const auto& [k, v] : spec.params) params.push_back(fmt::format("{} {}", k, to_string(v)));
    fmt::print("pruning: {} ({})\n", spec.method, fmt::join(params, ", "));
  }
  if (methods.empty() && !plan.uses_masks() && plan.modifiers.empty()) fmt::print("pruning: none\n");
  if (plan.schedule) {
    const auto& s = *plan.schedule;
    fmt::print("schedule: {} pretraining epoch(s), {} round(s) x {} training epoch(s), {} fine-tuning epoch(s) "
               "({} in all); rewind {}, save_weights_epoch {}\n",
               s.pretraining_epochs, s.rounds, s.epochs, s.fine_tuning_epochs, s.total_epochs(), to_string(s.rewind),
               s.save_weights_epoch);
    if (!s.extra.empty()) {
      std::vector<std::string> extra;
      for (const auto& [k, v] : s.extra) extra.push_back(fmt::format("{}: {}", k, v));
      fmt::print("user keys (kept, not used by sparq run): {}\n", fmt::join(extra, ", "));
    }
  } else {
    fmt::print("schedule: none in the config (a job trains training.epochs as one stage)\n");
  }
  if (!plan.events.empty()) {
    std::vector<std::string> events;
    for (const auto& e : plan.events)
      events.push_back(e.at_step ? fmt::format("{} {} at step {}", to_string(e.kind), e.value, *e.at_step)
                                 : fmt::format("{} {} at epoch {}", to_string(e.kind), e.value, e.at_epoch));
    fmt::print("events: {}\n", fmt::join(events, "; "));
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

/// One modifier's updates in a dry run of a recipe's schedule.
struct ModifierTimeline {
  const Modifier* modifier;
  std::vector<std::string> params;
  std::vector<std::tuple<int64_t, double, double>> updates;  ///< (step, epoch, value after it)
  std::string value_name;                                   ///< "sparsity", "lr", "weight decay", ...
};

/// Runs the modifiers' schedule on the compressed graph without training (the hooks of every
/// step, no forward or backward): when each one updates, and the sparsity of its parameters or
/// the learning rate after it. `lr` gets the learning rate of group 0 at each epoch's first step.
std::vector<ModifierTimeline> dry_run(const Plan& plan, const Resolution& resolution, models::Graph& graph,
                                      int64_t spe, std::vector<double>& lr) {
  train::TrainOptions options;
  options.progress = train::Progress::None;
  train::Trainer trainer(graph, options, plan.schedule);
  auto callbacks = train::make_modifiers(plan, resolution, graph);
  std::vector<ModifierTimeline> out;
  std::vector<train::ModifierCallback*> mods;
  size_t cb = 0;
  for (size_t i = 0; i < plan.modifiers.size(); ++i) {
    const auto& m = plan.modifiers[i];
    if (m.type == "EpochRangeModifier") continue;
    ModifierTimeline t{&m, {}, {}, ""};
    for (const auto& [node, target] : resolution.modifiers[i].params) t.params.push_back(node + "." + target);
    t.value_name = m.prunes() ? "sparsity"
                   : m.type.find("LearningRate") != std::string::npos                            ? "lr"
                   : m.type == "SetWeightDecayModifier"                                          ? "weight decay"
                                                                                                 : "";
    out.push_back(t);
    mods.push_back(dynamic_cast<train::ModifierCallback*>(callbacks[cb++].get()));
    trainer.add_callback(callbacks[cb - 1]);
  }
  trainer.begin_training(spe);
  auto value = [&](const ModifierTimeline& t) -> double {
    if (t.value_name == "lr") return trainer.lr(0);
    if (t.value_name == "weight decay") return trainer.weight_decay(0);
    if (t.value_name != "sparsity") return 0;
    double zeros = 0, total = 0;
    for (const auto& [node, target] : resolution.modifiers[static_cast<size_t>(t.modifier - plan.modifiers.data())].params) {
      auto pq = pq_layer(graph, node);
      auto mask = pq ? pq->mask(target) : nullptr;
      if (!mask) continue;
      auto w = train::parameter_of(graph, node, target) * mask->mask;  // zeros a disabled mask left too
      zeros += static_cast<double>((w == 0).sum().item<int64_t>());
      total += static_cast<double>(w.numel());
    }
    return total > 0 ? zeros / total : 0;
  };
  const int64_t epochs = plan.schedule ? plan.schedule->total_epochs() : 1;
  train::TrainContext ctx = trainer.context();
  for (int64_t k = 0; k < epochs * spe; ++k) {
    ctx.global_step = k;
    for (size_t j = 0; j < mods.size(); ++j) {
      auto before = mods[j]->clock();
      mods[j]->on_after_backward(trainer, ctx);
      mods[j]->on_step_end(trainer, ctx);
      const auto& after = mods[j]->clock();
      if (after.last_update != before.last_update || after.started != before.started)
        out[j].updates.emplace_back(k, train::epoch_at(k, spe), value(out[j]));
    }
    if (k % spe == 0) lr.push_back(trainer.lr(0));
  }
  return out;
}

std::string epoch_text(double e) { return e == -1 ? "-1" : fmt::format("{:g}", e); }

void print_timeline(const std::vector<ModifierTimeline>& timeline, const std::vector<double>& lr, int64_t spe) {
  fmt::print("recipe timeline ({} steps per epoch; epochs are fractional: step k is epoch k / {}):\n", spe, spe);
  for (const auto& t : timeline) {
    const auto& m = *t.modifier;
    std::string name = m.tag == m.type ? m.type : fmt::format("{} (as {})", m.type, m.tag);
    std::string range = m.end_epoch == -1 ? fmt::format("from epoch {}", epoch_text(m.start_epoch))
                                          : fmt::format("epochs [{}, {})", epoch_text(m.start_epoch), epoch_text(m.end_epoch));
    fmt::print("  {}  {}{}  ({})\n", name, range, m.stage.empty() ? "" : ", stage " + m.stage, m.where);
    if (!t.params.empty())
      fmt::print("    params: {}\n", t.params.size() <= 6 ? fmt::format("{}", fmt::join(t.params, ", "))
                                                           : fmt::format("{}, ... ({} in all)", fmt::join(t.params.begin(), t.params.begin() + 6, ", "), t.params.size()));
    if (t.updates.empty()) {
      fmt::print("    no update within the run's epochs\n");
      continue;
    }
    std::vector<std::string> points;
    for (size_t u = 0; u < t.updates.size() && u < 12; ++u) {
      auto [step, epoch, v] = t.updates[u];
      points.push_back(t.value_name.empty() ? fmt::format("{:g}", epoch) : fmt::format("{:g}: {:.6g}", epoch, v));
    }
    if (t.updates.size() > 12) points.push_back(fmt::format("... ({} updates, the last at step {})", t.updates.size(), std::get<0>(t.updates.back())));
    fmt::print("    {} update(s){} at epoch{}: {}\n", t.updates.size(), t.value_name.empty() ? "" : " (" + t.value_name + " after it)",
               t.updates.size() > 1 ? "s" : "", fmt::join(points, ", "));
  }
  std::vector<std::string> lrs;
  for (size_t e = 0; e < lr.size(); ++e) lrs.push_back(fmt::format("{}: {:.6g}", e, lr[e]));
  fmt::print("learning rate at each epoch's first step (group 0): {}\n", fmt::join(lrs, ", "));
}

nlohmann::json timeline_json(const std::vector<ModifierTimeline>& timeline, const std::vector<double>& lr, int64_t spe) {
  nlohmann::json mods = nlohmann::json::array();
  for (const auto& t : timeline) {
    const auto& m = *t.modifier;
    nlohmann::json updates = nlohmann::json::array();
    for (const auto& [step, epoch, v] : t.updates) {
      nlohmann::json u = {{"step", step}, {"epoch", epoch}};
      if (!t.value_name.empty()) u[t.value_name == "weight decay" ? "weight_decay" : t.value_name] = v;
      updates.push_back(u);
    }
    mods.push_back({{"type", m.type}, {"tag", m.tag}, {"stage", m.stage}, {"where", m.where},
                    {"start_epoch", m.start_epoch}, {"end_epoch", m.end_epoch}, {"update_frequency", m.update_frequency},
                    {"params", t.params}, {"updates", updates}});
  }
  return {{"steps_per_epoch", spe}, {"modifiers", mods}, {"lr_per_epoch", lr}};
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
    auto fit_path = std::filesystem::path(args.config) / "fitcompress.json";
    if (std::filesystem::exists(fit_path)) {
      auto result = nlohmann::json::parse(io::read_file(fit_path.string()), nullptr, false);
      try {
        fmt::print("\nFITCompress\n{}", fit::result_table(result));
      } catch (const Error& e) {
        throw ConfigError(fmt::format("{}: {}", fit_path.string(), e.what()));
      }
    }
    return 0;
  }
  // A job file: its `compression` config; otherwise a config file of any dialect.
  auto doc = config::load_config_file(args.config);
  const bool job = config::is_job(doc);
  const auto config = job ? config::load_job_compression(doc) : doc;
  Plan plan = config::load_plan(config.file, config.root, load_options(args.recipe_vars));
  if (args.yaml) {
    if (plan.dialect != "pquantml") throw ConfigError(fmt::format("{}: --yaml writes PQuantML configs only", args.config));
    fmt::print("{}", config::write_pquant(config::read_pquant(config.file, config.root)));
    return 0;
  }
  if (args.model.empty()) throw ConfigError("inspect: --model is required with a config file (or give a run folder)");
  torch::manual_seed(0);
  auto spec = inspect_model_spec(args);
  models::Graph graph(spec);
  auto resolution = resolve(plan, graph);
  for (const auto& w : resolution.warnings) fmt::print(stderr, "warning: {}\n", w);
  if (!plan.modifiers.empty()) {  // a recipe: the layers and the schedule's dry run
    compress(graph, resolution);
    std::vector<double> lr;
    auto timeline = dry_run(plan, resolution, graph, args.steps_per_epoch, lr);
    if (args.json) {
      auto j = resolution_json(resolution, plan);
      j["recipe"] = timeline_json(timeline, lr, args.steps_per_epoch);
      fmt::print("{}\n", j.dump(2));
      return 0;
    }
    fmt::print("config: {} ({})\nmodel: {}, input [{}]\n\n", args.config, job ? "the job's compression" : plan.dialect,
               graph->name(), fmt::join(spec.input_shape, ", "));
    print_timeline(timeline, lr, args.steps_per_epoch);
    fmt::print("\n");
    print_plan_sections(plan);
    return 0;
  }
  if (args.json) {
    fmt::print("{}\n", resolution_json(resolution, plan).dump(2));
    return 0;
  }
  // The layer table shows formats; methods not runnable yet must still be inspectable, so the
  // layers are built without their pruning methods.
  for (auto& m : resolution.modules)
    for (auto& [name, t] : m.targets) t.pruning.reset();
  auto report = compress(graph, resolution);
  auto pruned = resolve(plan, graph);

  fmt::print("config: {} ({})\nmodel: {}, input [{}]\n\n", args.config,
             job ? "the job's compression" : plan.dialect, graph->name(), fmt::join(spec.input_shape, ", "));
  std::vector<std::array<std::string, 7>> rows = {{"layer", "op", "input", "weight", "bias", "output", "pruning"}};
  for (const auto& node : graph->nodes()) {
    auto pq = pq_layer(graph, node.name);
    if (!pq) continue;
    std::string op = node.source_op;
    if (auto act = std::dynamic_pointer_cast<layers::PQActivationImpl>(pq)) op += " (" + act->function() + ")";
    std::string pruning = "-";
    if (std::dynamic_pointer_cast<layers::PQWeightLayer>(pq)) {
      const auto& w = pruned.find(node.name)->targets.at("weight");
      if (w.mask) pruning = (plan.pruner ? plan.pruner->method + " " : "") + mask_text(*w.mask);
      else if (!w.pruning) pruning = "none";
      else if (!w.pruning_active) pruning = "off (disabled)";
      else pruning = w.pruning->method;
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
