// FITCompress (spec pquantml-pruning-fitcompress-hpo §3): a best-first search over per-layer weight
// bit widths and global pruning levels, scored by the Fisher-weighted perturbation (FIT), run once
// at the end of pretraining. The search itself works on CPU tensors and a Fisher callback, so it
// is tested without a model; fitcompress_callback() runs it inside a Trainer on a Graph.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sparq/data/dataset.h"
#include "sparq/plan.h"
#include "sparq/train/trainer.h"

namespace sparq::fit {

/// The pruning levels 1 - 10^(start + k (end - start) / (steps - 1)), k = 0 .. steps-1 (§3.5).
std::vector<double> pruning_curve(int64_t start, int64_t end, int64_t steps);

/// A weight tensor as the search quantizes it (§3.6.1): `q` bits besides the sign,
/// i = max(0, ceil(log2(max|w| + 1e-12))), f = max(1, q - i), RND, SAT.
struct SearchQuantized {
  torch::Tensor weight;
  int64_t int_bits = 0, frac_bits = 0;
};
SearchQuantized quantize_for_search(const torch::Tensor& weight, int64_t q);

/// FIT(a -> b; F) = sum_l sum_j F_l[j] (a_l[j] - b_l[j])^2 (§3.3).
double fit_between(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b,
                   const std::vector<torch::Tensor>& fisher);
/// FIT(theta; F) = sum_l sum_j F_l[j] theta_l[j]^2.
double self_fit(const std::vector<torch::Tensor>& theta, const std::vector<torch::Tensor>& fisher);

/// The bits the deployed weights store relative to float32: sum over non-zero weights of
/// (1 + i_l + f_l), over 32 bits per weight (a layer at 31 bits counts as float: 32 per non-zero
/// weight). sparq's compression measure; PQuantML's differs (docs/fitcompress.md).
double compression_rate(const std::vector<torch::Tensor>& theta, const std::vector<int64_t>& int_bits,
                        const std::vector<int64_t>& frac_bits, const std::vector<int64_t>& q);

/// Fisher of the model with `theta` loaded: one tensor per layer, the shape of its weight.
using FisherFn = std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>& theta)>;

struct SearchLayer {
  std::string name;
  torch::Tensor weight;   ///< the pretrained float weight (CPU)
  bool prunable = true;   ///< false: the pruning neighbours leave it dense
};

struct SearchOptions {
  FitCompressPlan plan;
  int64_t max_iterations = 1000;  ///< expansions (PQuantML's cap)
  int64_t max_frontier = 512;     ///< non-greedy search: the costliest nodes beyond it are dropped
};

/// One search state.
struct SearchNode {
  std::vector<torch::Tensor> theta, theta_u, fisher;  ///< quantized+pruned, pruned, Fisher
  std::vector<int64_t> q, int_bits, frac_bits;         ///< bits besides the sign (31: float)
  std::vector<int64_t> state;                          ///< quantization index per layer, then pruning index
  double pruning = 0;                                  ///< the global pruning level
  double g = 0, f = 0, d = 0, rate = 1;
};

struct LayerChoice {
  std::string name;
  int64_t q = 31, int_bits = 0, frac_bits = 31;
  int64_t weights = 0, nonzero = 0;
};

struct SearchResult {
  std::vector<LayerChoice> layers;
  std::vector<torch::Tensor> masks;  ///< per layer: 1 where the chosen weight is non-zero (pruned or quantized to 0: 0)
  double pruning = 0, rate = 1, g = 0, d = 0;
  int64_t iterations = 0, fisher_evaluations = 0;
  double seconds = 0;
  nlohmann::json to_json() const;
};

/// The result as a table (layer, bits, integer/fractional bits, non-zero weights) with the rate,
/// pruning level and search cost: what `sparq run` prints and `sparq inspect RUN` shows from
/// fitcompress.json. Throws sparq::Error for JSON that is not a result.
std::string result_table(const nlohmann::json& result);
/// A fitcompress.json layer's deployed width: "fp32" for a layer left in float, else 1 + i + f.
std::string width_label(const nlohmann::json& layer);

/// The expansion of `u` (§3.6), neighbours in PQuantML's order: one per layer whose bit width can
/// step down the schedule, then the pruning neighbour. `evaluations` counts Fisher calls.
std::vector<SearchNode> expand(SearchNode& u, const std::vector<SearchLayer>& layers, const FisherFn& fisher,
                               const FitCompressPlan& plan, const std::vector<double>& curve, int64_t& evaluations);

/// The initial node: the pretrained weights at 31 bits, no pruning, rate 1 (§3.4).
SearchNode initial_node(const std::vector<SearchLayer>& layers, std::vector<torch::Tensor> fisher);

/// Runs the search from the pretrained weights and their Fisher. Greedy (PQuantML's greedy_astar):
/// the frontier is the expanded node's children and the first child under the goal, in their
/// order, is the result. Otherwise A*: a closed set over states, the goal tested when a node is
/// taken from the frontier (the lowest g + f_lambda f under the goal), a bounded frontier. Throws
/// sparq::Error when the schedules are exhausted or the iterations run out before the goal.
SearchResult search(const std::vector<SearchLayer>& layers, std::vector<torch::Tensor> initial_fisher,
                    const FisherFn& fisher, const SearchOptions& options);

/// The empirical Fisher (§3.2) of the trainer's model at the PQ weight layers `layer_names`: over
/// exactly `batches` batches of `batch_size` samples of `data` in order (restarting it; a smaller
/// last batch is skipped), the mean of B * (dloss/dW)^2, the trainer's task loss, eval mode, on the
/// trainer's device; CPU tensors. Throws sparq::Error when `data` has fewer than `batch_size` rows.
std::vector<torch::Tensor> empirical_fisher(train::Trainer& trainer, const std::vector<std::string>& layer_names,
                                            const data::Dataset& data, int64_t batch_size, int64_t batches = 100);

/// Runs FITCompress at the end of pretraining of `trainer`'s schedule on `train` and applies the
/// result: the weight formats on the layers' fixed-point weight quantizers, the masks on their
/// `fitcompress` pruning methods. `report` sees the result (run_job writes fitcompress.json and
/// tells its observer). Throws sparq::Error for a model it cannot search (no weight layer, HGQ
/// weights, a layer without the quantizer or mask holder the plan needs).
std::shared_ptr<train::Callback> fitcompress_callback(const FitCompressPlan& plan, const data::Dataset& train,
                                                      std::function<void(const SearchResult&)> report);

}  // namespace sparq::fit
