// Knowledge distillation (NNI's distillers, spec nni-config §4): a float teacher runs without
// gradients on each training batch, and a loss term pulls the selected student module outputs
// toward the linked teacher outputs (mse, or kl at temperature 2). Works next to any compression
// of the student: the term is one more entry on the Trainer's loss list.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "sparq/models/graph.h"
#include "sparq/plan.h"
#include "sparq/train/trainer.h"

namespace sparq::train {

/// One student node and the teacher nodes its output is compared with.
struct DistillPair {
  int student = -1;
  std::vector<int> teachers;
  double lambda = 1.0;
  std::string method = "mse";
};

/// The pairs a distillation makes on a student and a teacher, in student node order (first entry
/// wins per node, as NNI v3). Throws ConfigError at the entry's position when an entry selects
/// nothing, a link names no teacher node, or shapes differ (Adaptive1d: all but the last axis).
std::vector<DistillPair> distill_pairs(const Distillation& distillation, const models::Graph& student,
                                       const models::Graph& teacher);

/// NNI's losses without lambda: mse = mean((s - t)^2); kl = 4 * sum(p_t * (log p_t - log_softmax(s/2)))
/// / s.size(0) with p_t = softmax(t/2), both along the last axis.
torch::Tensor distill_loss(const torch::Tensor& student, const torch::Tensor& teacher, const std::string& method);

/// The loss term "distill_loss" for `trainer`'s model: moves the teacher to the trainer's device,
/// records the linked outputs of both graphs and, for Adaptive1dLayerwiseDistiller, adds the
/// Linear adapters of differing last axes to the trainer's optimizer (their weights are in
/// checkpoints). Also sets the task loss weight (origin_loss_lambda).
std::shared_ptr<LossTerm> make_distiller(const Distillation& distillation, Trainer& trainer, models::Graph teacher);

}  // namespace sparq::train
