#include "sparq/prune/mask_pruner.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>
#include <map>

#include "sparq/compress/compress.h"
#include "sparq/error.h"

namespace sparq::prune {

namespace {

std::map<std::string, PrunerInfo>& registry() {
  static std::map<std::string, PrunerInfo> r;
  return r;
}

/// The raw parameter `target` of a PQ layer (undefined when the layer has none, e.g. bias=false).
torch::Tensor parameter_of(const layers::PQLayer& layer, const std::string& target) {
  auto params = layer.named_parameters(/*recurse=*/false);
  auto* p = params.find(target);
  return p ? *p : torch::Tensor();
}

}  // namespace

bool register_pruner(PrunerInfo info) {
  info.params.push_back(integer("start_epoch", 0, 0));
  std::string name = info.name;
  registry()[name] = std::move(info);
  return true;
}

const PrunerInfo* find_pruner(const std::string& name) {
  auto it = registry().find(name);
  return it == registry().end() ? nullptr : &it->second;
}

std::vector<std::string> pruner_names() {
  std::vector<std::string> names;
  for (const auto& [name, info] : registry()) names.push_back(name);
  return names;
}

MaskSetting scaled_goals(const MaskSetting& s, double factor) {
  MaskSetting out = s;
  auto scale = [&](std::optional<double>& v, bool ratio) {
    if (v) v = ratio ? std::clamp(*v * factor, 0.0, 1.0) : *v * factor;
  };
  scale(out.sparse_ratio, true);
  scale(out.sparse_threshold, false);
  scale(out.max_sparse_ratio, true);
  scale(out.min_sparse_ratio, true);
  return out;
}

MaskPruner::MaskPruner(PruningSpec spec, std::vector<PrunerTarget> targets)
    : spec_(std::move(spec)), targets_(std::move(targets)), start_epoch_(spec_.integer("start_epoch")) {}

void MaskPruner::generate() {
  torch::NoGradGuard no_grad;
  std::vector<MaskTarget> ts;
  for (const auto& t : targets_) {
    MaskTarget m{t.module, t.target, scaled_goals(t.setting, goal_factor_), t.shape(), t.kernel, {}};
    if (m.setting.active()) m.metric = metric(t).detach().to(torch::kFloat32);
    ts.push_back(std::move(m));
  }
  auto masks = generate_masks(ts);
  for (auto& t : targets_) {
    auto it = masks.find({t.module, t.target});
    if (it != masks.end()) t.mask->mask.copy_(it->second);
  }
}

int64_t MaskPruner::local_step(const train::TrainContext& ctx) const {
  return ctx.global_step - start_epoch_ * ctx.steps_per_epoch;
}

void MaskPruner::on_train_begin(train::Trainer&, const train::TrainContext& ctx) {
  const int64_t start = start_epoch_;
  const int64_t available = (ctx.total_epochs - start) * ctx.steps_per_epoch;
  if (steps_needed() > available)
    throw ConfigError(fmt::format("pruner {}: its schedule needs {} optimizer step(s) from start_epoch {}, but "
                                  "training has {} ({} epoch(s) of {} batches){}; train longer or shorten the "
                                  "schedule",
                                  spec_.method, steps_needed(), start, std::max<int64_t>(available, 0),
                                  ctx.total_epochs, ctx.steps_per_epoch,
                                  start >= ctx.total_epochs ? ", so the pruner never starts" : ""));
}

void MaskPruner::on_step_begin(train::Trainer&, const train::TrainContext& ctx) {
  if (int64_t s = local_step(ctx); s >= 0) before_step(s);
}

void MaskPruner::on_after_backward(train::Trainer&, const train::TrainContext& ctx) {
  if (int64_t s = local_step(ctx); s >= 0) after_backward(s);
}

void MaskPruner::on_step_end(train::Trainer&, const train::TrainContext& ctx) {
  if (int64_t s = local_step(ctx); s >= 0) after_step(s);
}

torch::Tensor MaskPruner::compute(train::Trainer&, const train::TrainContext& ctx) {
  int64_t s = local_step(ctx);
  return s >= 0 ? loss(s) : torch::Tensor();
}

namespace {
bool is_lane(const std::string& target) { return target == kInput || target == kOutput; }

/// The shape of a target's mask: the parameter's, or [1, sample shape] of the input/output lane
/// (broadcast over the batch); empty when the target has no tensor (bias=false).
std::vector<int64_t> target_shape(const models::Graph& graph, const std::string& module, const layers::PQLayer& layer,
                                  const std::string& target) {
  if (!is_lane(target)) {
    auto t = parameter_of(layer, target);
    return t.defined() ? t.sizes().vec() : std::vector<int64_t>{};
  }
  const auto& node = graph->node(module);
  std::vector<int64_t> shape{1};
  const auto& sample = target == kOutput ? node.out_shape
                                         : (node.inputs.empty() || node.inputs[0] < 0 ? graph->input_shape()
                                                                                      : graph->nodes()[node.inputs[0]].out_shape);
  shape.insert(shape.end(), sample.begin(), sample.end());
  return shape;
}
}  // namespace

void install_masks(const Resolution& resolution, models::Graph& graph) {
  for (const auto& m : resolution.modules)
    for (const auto& [target, t] : m.targets) {
      if (!t.mask) continue;
      auto layer = pq_layer(graph, m.name);
      if (!layer) continue;
      auto shape = target_shape(graph, m.name, *layer, target);
      if (shape.empty()) continue;  // bias=false: nothing to mask
      auto mask = std::make_shared<TargetMask>(shape, t.mask->apply_method);
      auto params = layer->parameters();
      if (!params.empty()) mask->to(params[0].device());
      layer->set_mask(target, mask);
    }
}

std::shared_ptr<MaskPruner> make_pruner(const PruningSpec& pruner, const Resolution& resolution,
                                        const models::Graph& graph) {
  const auto* info = find_pruner(pruner.method);
  if (!info)
    throw ConfigError(fmt::format("unknown pruner '{}' (pruners: {})", pruner.method, fmt::join(pruner_names(), ", ")));
  auto granularity = info->default_granularity;
  if (info->wraps_pruner) granularity = find_pruner(pruner.text("pruner"))->default_granularity;
  std::vector<PrunerTarget> targets;
  for (const auto& m : resolution.modules)
    for (const auto& [target, t] : m.targets) {
      if (!t.mask) continue;
      auto layer = pq_layer(graph, m.name);
      auto holder = layer ? layer->mask(target) : nullptr;
      if (!holder) continue;
      const std::string at = m.where.empty() ? "" : m.where + ": ";
      PrunerTarget pt{m.name, target, *t.mask, {}, parameter_of(*layer, target), holder};
      const bool lane = is_lane(target);
      if (lane && pt.setting.active())
        throw ConfigError(fmt::format("{}{}: a ratio or threshold on a module input/output needs activation "
                                      "statistics, which this version does not gather; align it to a weight instead",
                                      at, pt.what()));
      if (pt.setting.granularity.kind == MaskGranularity::Kind::Default)
        pt.setting.granularity.kind = lane ? MaskGranularity::Kind::PerChannel : granularity;
      try {
        pt.kernel = block_kernel(pt.setting.granularity, pt.shape(), !lane, pt.what());
      } catch (const Error& e) {
        throw ConfigError(fmt::format("{}{}", at, e.what()));
      }
      targets.push_back(std::move(pt));
    }
  return info->make(pruner, std::move(targets));
}

}  // namespace sparq::prune
