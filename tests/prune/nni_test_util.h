// NNI pruning fixtures of spec nni-config §7.2: models with hand-set weights, a config list with
// its pruner (as a job's compression section), and the masks one generation gives.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <regex>
#include <string>
#include <vector>

#include "sparq/compress/compress.h"
#include "sparq/config/dialect.h"
#include "sparq/prune/mask_pruner.h"
#include "test_util.h"

namespace sparq::test {

/// A compressed model, its resolution and the plan's pruner.
struct NniSetup {
  models::Graph graph{nullptr};
  Resolution resolution;
  std::shared_ptr<prune::MaskPruner> pruner;
  /// The mask of module.target as a flat list (empty when the target has no mask).
  std::vector<float> mask(const std::string& module, const std::string& target) const {
    auto layer = pq_layer(graph, module);
    auto m = layer ? layer->mask(target) : nullptr;
    if (!m) return {};
    auto t = m->mask.flatten().contiguous();
    return std::vector<float>(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
  }
  /// 1 per kept row (dim 0 slice) of module.target's mask.
  std::vector<float> rows(const std::string& module, const std::string& target = "weight") const {
    auto m = pq_layer(graph, module)->mask(target)->mask;
    auto r = (m.reshape({m.size(0), -1}).sum(1) > 0).to(torch::kFloat32).contiguous();
    return std::vector<float>(r.data_ptr<float>(), r.data_ptr<float>() + r.numel());
  }
};

/// `section`: a compression section (pruner + config_list) as YAML text, errors naming "c.yaml".
inline Plan nni_plan(const std::string& section) {
  auto doc = yaml::YamlDoc::load_string(section, "c.yaml");
  return config::load_plan(doc.file, doc.root);
}

/// Builds `spec`, sets the float weights (module -> weight, bias), compresses with the section's
/// plan and makes its pruner; `generate`: one mask generation.
inline NniSetup nni_setup(const models::GraphSpec& spec, const std::map<std::string, std::vector<torch::Tensor>>& weights,
                          const std::string& section, bool generate = true) {
  NniSetup s;
  s.graph = models::Graph(spec);
  {
    torch::NoGradGuard no_grad;
    for (const auto& [module, tensors] : weights) {
      auto params = s.graph->node(module).module.ptr()->named_parameters(false);
      params["weight"].copy_(tensors[0]);
      if (tensors.size() > 1) params["bias"].copy_(tensors[1]);
    }
  }
  Plan plan = nni_plan(section);
  s.resolution = resolve(plan, s.graph);
  compress(s.graph, s.resolution);
  s.pruner = prune::make_pruner(*plan.pruner, s.resolution, s.graph);
  if (generate) s.pruner->generate();
  return s;
}

/// Fixture P: fc1 = Linear(4 -> 4), fc2 = Linear(4 -> 2).
inline models::GraphSpec fixture_p_model() {
  return models::parse_model_yaml(R"(
input_shape: [4]
layers:
  - {name: fc1, op: Linear, out_features: 4}
  - {name: fc2, op: Linear, out_features: 2}
)", "p.yaml");
}

inline std::map<std::string, std::vector<torch::Tensor>> fixture_p_weights() {
  return {{"fc1",
           {torch::tensor({1.f, -1.f, 1.f, -1.f, 2.f, 2.f, -2.f, 2.f, .5f, .5f, .5f, -.5f, 3.f, .1f, .1f, .1f}).view({4, 4}),
            torch::tensor({1.f, 2.f, 3.f, 4.f})}},
          {"fc2", {torch::tensor({.2f, -.9f, .4f, .05f, 1.5f, .3f, -.6f, .7f}).view({2, 4}), torch::tensor({1.f, 1.f})}}};
}

/// Fixture C: conv = Conv2d(2 -> 4, kernel 2) (weight 1..32, filter 0 x 0.1, filter 2 x 0.01),
/// bn = BatchNorm2d(4), then a Linear "adapter" (4 -> 3) and fc = Linear(3 -> 4).
inline models::GraphSpec fixture_c_model() {
  return models::parse_model_yaml(R"(
input_shape: [2, 2, 2]
layers:
  - {name: conv, op: Conv2d, out_channels: 4, kernel_size: 2}
  - {name: bn, op: BatchNorm2d}
  - {name: flatten, op: flatten}
  - {name: adapter, op: Linear, out_features: 3}
  - {name: fc, op: Linear, out_features: 4}
)", "c.yaml");
}

inline std::map<std::string, std::vector<torch::Tensor>> fixture_c_weights() {
  auto conv = torch::arange(1, 33, torch::kFloat32).view({4, 2, 2, 2});
  conv[0] *= 0.1;
  conv[2] *= 0.01;
  return {{"conv", {conv, torch::tensor({1.f, 2.f, 3.f, 4.f})}},
          {"bn", {torch::tensor({.5f, -2.f, .1f, 1.f}), torch::zeros({4})}},
          {"adapter", {torch::arange(1, 13, torch::kFloat32).view({3, 4}) * 0.5, torch::zeros({3})}},
          {"fc", {torch::tensor({1.f, 2.f, 3.f, -4.f, 5.f, -6.f, .7f, .8f, .9f, 10.f, 0.f, 0.f}).view({4, 3}),
                  torch::zeros({4})}}};
}

}  // namespace sparq::test
