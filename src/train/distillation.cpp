#include "sparq/train/distillation.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>
#include <limits>

#include "sparq/error.h"
#include "sparq/yaml/reader.h"

namespace sparq::train {

namespace {

std::vector<std::string> node_names(const models::Graph& g) {
  std::vector<std::string> out;
  for (const auto& n : g->nodes()) out.push_back(n.name);
  return out;
}

int teacher_index(const models::Graph& teacher, const std::string& name, const DistillRule& rule) {
  const auto& nodes = teacher->nodes();
  for (size_t i = 0; i < nodes.size(); ++i)
    if (nodes[i].name == name) return static_cast<int>(i);
  throw ConfigError(fmt::format("{}: {}.link: '{}' names no module of the teacher '{}' (nearest '{}')", rule.where,
                                rule.origin, name, teacher->name(), yaml::nearest(name, node_names(teacher))));
}

std::string shape_text(const std::vector<int64_t>& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

/// A trained Linear mapping pair `pair`'s student output to its teacher's last-axis width (Adaptive1d).
struct Adapter {
  size_t pair = 0;
  torch::nn::Linear linear{nullptr};
};

class Distiller : public LossTerm {
 public:
  Distiller(const Distillation& d, Trainer& trainer, models::Graph teacher)
      : type_(d.type), teacher_(std::move(teacher)), pairs_(distill_pairs(d, trainer.model(), teacher_)) {
    teacher_->to(trainer.device());
    teacher_->eval();
    for (auto& p : teacher_->parameters()) p.requires_grad_(false);
    std::vector<int> student_nodes, teacher_nodes;
    for (const auto& p : pairs_) {
      student_nodes.push_back(p.student);
      teacher_nodes.insert(teacher_nodes.end(), p.teachers.begin(), p.teachers.end());
    }
    trainer.model()->record_outputs(student_nodes);
    teacher_->record_outputs(teacher_nodes);
    trainer.set_task_loss_weight(d.origin_loss_lambda);
    if (type_ != "Adaptive1dLayerwiseDistiller") return;
    std::vector<torch::Tensor> params;
    for (size_t i = 0; i < pairs_.size(); ++i) {
      const auto& s = trainer.model()->nodes()[pairs_[i].student].out_shape;
      const auto& t = teacher_->nodes()[pairs_[i].teachers[0]].out_shape;
      if (s.back() == t.back()) continue;
      Adapter a;
      a.pair = i;
      a.linear = torch::nn::Linear(s.back(), t.back());
      a.linear->to(trainer.device());
      for (auto& p : a.linear->parameters()) params.push_back(p);
      adapters_.push_back(a);
    }
    if (!params.empty()) trainer.add_parameters("distiller.adapters", params);
  }

  std::string name() const override { return "distill_loss"; }
  std::string graph_blocker() const override { return "distillation is not captured yet"; }

  torch::Tensor compute(Trainer& trainer, const TrainContext&) override {
    {
      torch::NoGradGuard no_grad;
      teacher_->forward(trainer.batch_input());
    }
    torch::Tensor total;
    for (size_t i = 0; i < pairs_.size(); ++i) {
      const auto& pair = pairs_[i];
      torch::Tensor s = trainer.model()->recorded(pair.student);
      for (auto& a : adapters_)
        if (a.pair == i) s = a.linear->forward(s);
      torch::Tensor best;  // DynamicLayerwiseDistiller: the least loss over the links
      for (int t : pair.teachers) {
        auto loss = distill_loss(s, teacher_->recorded(t).to(s.device()), pair.method) * pair.lambda;
        best = best.defined() ? torch::minimum(best, loss) : loss;
      }
      total = total.defined() ? total + best : best;
    }
    return total;
  }

  void save(torch::serialize::OutputArchive& root) override {
    for (size_t i = 0; i < adapters_.size(); ++i) {
      root.write(fmt::format("distiller.adapter{}.weight", i), adapters_[i].linear->weight.detach(), /*is_buffer=*/true);
      root.write(fmt::format("distiller.adapter{}.bias", i), adapters_[i].linear->bias.detach(), /*is_buffer=*/true);
    }
  }
  void load(torch::serialize::InputArchive& root) override {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < adapters_.size(); ++i) {
      torch::Tensor w, b;
      root.read(fmt::format("distiller.adapter{}.weight", i), w, /*is_buffer=*/true);
      root.read(fmt::format("distiller.adapter{}.bias", i), b, /*is_buffer=*/true);
      adapters_[i].linear->weight.copy_(w);
      adapters_[i].linear->bias.copy_(b);
    }
  }

 private:
  std::string type_;
  models::Graph teacher_;
  std::vector<DistillPair> pairs_;
  std::vector<Adapter> adapters_;
};

}  // namespace

std::vector<DistillPair> distill_pairs(const Distillation& d, const models::Graph& student, const models::Graph& teacher) {
  const auto& nodes = student->nodes();
  std::vector<int> rule_of(nodes.size(), -1);
  for (size_t r = 0; r < d.rules.size(); ++r) {
    bool any = false;
    for (size_t n = 0; n < nodes.size(); ++n)
      if (d.rules[r].select.matches(nodes[n].name, nodes[n].source_op)) {
        any = true;
        if (rule_of[n] < 0) rule_of[n] = static_cast<int>(r);
      }
    if (!any)
      throw ConfigError(fmt::format("{}: {}: selects no module of the student '{}' (its modules: {})", d.rules[r].where,
                                    d.rules[r].origin, student->name(), fmt::join(node_names(student), ", ")));
  }
  const bool adaptive = d.type == "Adaptive1dLayerwiseDistiller";
  std::vector<DistillPair> pairs;
  for (size_t n = 0; n < nodes.size(); ++n) {
    if (rule_of[n] < 0) continue;
    const auto& rule = d.rules[rule_of[n]];
    DistillPair p;
    p.student = static_cast<int>(n);
    p.lambda = rule.lambda, p.method = rule.method;
    for (const auto& link : rule.links.empty() ? std::vector<std::string>{nodes[n].name} : rule.links) {
      int t = teacher_index(teacher, link, rule);
      const auto& s_shape = nodes[n].out_shape;
      const auto& t_shape = teacher->nodes()[t].out_shape;
      bool fits = adaptive ? s_shape.size() == t_shape.size() && !s_shape.empty() &&
                                 std::equal(s_shape.begin(), s_shape.end() - 1, t_shape.begin())
                           : s_shape == t_shape;
      if (!fits)
        throw ConfigError(fmt::format(
            "{}: {}.link: student '{}' gives {} per sample, teacher '{}' gives {}: {}", rule.where, rule.origin,
            nodes[n].name, shape_text(s_shape), link, shape_text(t_shape),
            adaptive ? "Adaptive1dLayerwiseDistiller maps only the last axis"
                     : "the outputs must have equal shapes (Adaptive1dLayerwiseDistiller maps a differing last axis)"));
      p.teachers.push_back(t);
    }
    pairs.push_back(p);
  }
  return pairs;
}

torch::Tensor distill_loss(const torch::Tensor& s, const torch::Tensor& t, const std::string& method) {
  if (method == "mse") return (s - t).pow(2).mean();
  if (method == "kl") {
    auto log_t = torch::log_softmax(t / 2, -1);
    auto log_s = torch::log_softmax(s / 2, -1);
    return (log_t.exp() * (log_t - log_s)).sum() / s.size(0) * 4;
  }
  throw Error(fmt::format("unknown distillation loss '{}' (mse, kl)", method));
}

std::shared_ptr<LossTerm> make_distiller(const Distillation& d, Trainer& trainer, models::Graph teacher) {
  return std::make_shared<Distiller>(d, trainer, std::move(teacher));
}

}  // namespace sparq::train
