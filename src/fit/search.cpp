// FITCompress's search (spec §3.3-3.7) on CPU tensors; the model enters only through the Fisher
// callback. Deliberate differences from PQuantML are listed in docs/fitcompress.md.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <set>

#include "sparq/error.h"
#include "sparq/fit/fitcompress.h"

namespace sparq::fit {

namespace {
constexpr int64_t kFloatBits = 31;  // the initial nodes' "unquantized" budget (§3.4)

/// Whether `n.theta` is quantize(theta_u, q): after the first width step (the initial weights are float).
bool quantized(const SearchNode& n) {
  return std::any_of(n.state.begin(), n.state.end() - 1, [](int64_t s) { return s >= 0; });
}

double sum_over(const std::vector<torch::Tensor>& terms) {
  double total = 0;
  for (const auto& t : terms) total += t.sum().item<double>();
  return total;
}
}  // namespace

std::vector<double> pruning_curve(int64_t start, int64_t end, int64_t steps) {
  std::vector<double> curve;
  for (int64_t k = 0; k < steps; ++k) {
    double exponent = steps == 1 ? start : start + k * static_cast<double>(end - start) / (steps - 1);
    curve.push_back(1 - std::pow(10.0, exponent));
  }
  return curve;
}

SearchQuantized quantize_for_search(const torch::Tensor& weight, int64_t q) {
  SearchQuantized out;
  double max_abs = weight.numel() ? weight.abs().max().item<double>() : 0;
  out.int_bits = std::max<int64_t>(0, static_cast<int64_t>(std::ceil(std::log2(max_abs + 1e-12))));
  out.frac_bits = std::max<int64_t>(1, q - out.int_bits);
  double scale = std::ldexp(1.0, static_cast<int>(out.frac_bits));
  double top = std::ldexp(1.0, static_cast<int>(out.int_bits + out.frac_bits));  // codes of 1 + i + f bits
  auto codes = torch::floor(weight.to(torch::kFloat64) * scale + 0.5).clamp(-top, top - 1);
  out.weight = (codes / scale).to(weight.scalar_type());
  return out;
}

double fit_between(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b,
                   const std::vector<torch::Tensor>& fisher) {
  std::vector<torch::Tensor> terms;
  for (size_t l = 0; l < a.size(); ++l)
    terms.push_back(fisher[l].to(torch::kFloat64) * (a[l].to(torch::kFloat64) - b[l].to(torch::kFloat64)).square());
  return sum_over(terms);
}

double self_fit(const std::vector<torch::Tensor>& theta, const std::vector<torch::Tensor>& fisher) {
  std::vector<torch::Tensor> terms;
  for (size_t l = 0; l < theta.size(); ++l)
    terms.push_back(fisher[l].to(torch::kFloat64) * theta[l].to(torch::kFloat64).square());
  return sum_over(terms);
}

double compression_rate(const std::vector<torch::Tensor>& theta, const std::vector<int64_t>& int_bits,
                        const std::vector<int64_t>& frac_bits, const std::vector<int64_t>& q) {
  double bits = 0, float_bits = 0;
  for (size_t l = 0; l < theta.size(); ++l) {
    double width = q[l] >= kFloatBits ? 32 : 1 + int_bits[l] + frac_bits[l];
    bits += width * theta[l].count_nonzero().item<int64_t>();
    float_bits += 32.0 * theta[l].numel();
  }
  return float_bits > 0 ? bits / float_bits : 0;
}

SearchNode initial_node(const std::vector<SearchLayer>& layers, std::vector<torch::Tensor> fisher) {
  SearchNode n;
  for (const auto& layer : layers) {
    n.theta.push_back(layer.weight.detach().clone());  // by value: PQuantML's aliasing bug (§3.10) avoided
    n.theta_u.push_back(n.theta.back());
    n.q.push_back(kFloatBits), n.int_bits.push_back(0), n.frac_bits.push_back(kFloatBits);
    n.state.push_back(-1);
  }
  n.state.push_back(0);
  n.fisher = std::move(fisher);
  n.f = n.d = std::numeric_limits<double>::infinity();
  n.rate = 1.0;
  return n;
}

std::vector<SearchNode> expand(SearchNode& u, const std::vector<SearchLayer>& layers, const FisherFn& fisher,
                               const FitCompressPlan& plan, const std::vector<double>& curve, int64_t& evaluations) {
  torch::NoGradGuard no_grad;
  const size_t L = layers.size();
  if (plan.approximate) u.fisher = fisher(u.theta), ++evaluations;
  std::vector<SearchNode> children;
  auto finish = [&](SearchNode& v) {
    v.g = u.g + std::sqrt(fit_between(u.theta, v.theta, u.fisher));
    v.rate = compression_rate(v.theta, v.int_bits, v.frac_bits, v.q);
    v.f = std::abs(v.rate - plan.compression_goal) * std::sqrt(self_fit(v.theta, v.fisher));
    v.d = v.g + plan.f_lambda * v.f;
    children.push_back(std::move(v));
  };
  const auto& schedule = plan.quantization_schedule;
  if (plan.optimize_quantization)
    for (size_t l = 0; l < L; ++l) {
      int64_t next = u.state[l] + 1;
      if (next >= static_cast<int64_t>(schedule.size()) || schedule[next] == 0) continue;
      SearchNode v;
      v.state = u.state, v.state[l] = next;
      v.q = u.q, v.q[l] = static_cast<int64_t>(schedule[next]);
      v.theta_u = u.theta_u, v.pruning = u.pruning;
      for (size_t m = 0; m < L; ++m) {
        if (quantized(u) && v.q[m] == u.q[m]) {  // the same quantization of the same weights
          v.theta.push_back(u.theta[m]), v.int_bits.push_back(u.int_bits[m]), v.frac_bits.push_back(u.frac_bits[m]);
          continue;
        }
        auto qw = quantize_for_search(u.theta_u[m], v.q[m]);
        v.theta.push_back(qw.weight), v.int_bits.push_back(qw.int_bits), v.frac_bits.push_back(qw.frac_bits);
      }
      if (plan.approximate) v.fisher = u.fisher;
      else v.fisher = fisher(v.theta), ++evaluations;
      finish(v);
    }
  const int64_t next_level = u.state[L] + 1;
  if (plan.optimize_pruning && next_level < static_cast<int64_t>(curve.size())) {
    SearchNode v;
    v.state = u.state, v.state[L] = next_level;
    v.q = u.q, v.int_bits = u.int_bits, v.frac_bits = u.frac_bits;
    v.pruning = curve[next_level];
    // Global ranking of importance F * theta^2 over the prunable layers; the level is the absolute
    // fraction of their weights that is zero (already-zero weights have importance 0 and count).
    std::vector<torch::Tensor> importance;
    int64_t prunable = 0;
    for (size_t l = 0; l < L; ++l)
      if (layers[l].prunable) {
        importance.push_back((u.fisher[l].to(torch::kFloat64) * u.theta[l].to(torch::kFloat64).square()).flatten());
        prunable += u.theta[l].numel();
      }
    const auto k = static_cast<int64_t>(v.pruning * prunable);
    torch::Tensor keep;
    if (!importance.empty()) {
      auto order = std::get<1>(torch::sort(torch::cat(importance), /*stable=*/true, /*dim=*/0, /*descending=*/false));
      keep = torch::ones({prunable}, torch::kFloat32);
      keep.index_fill_(0, order.slice(0, 0, k), 0);
    }
    int64_t offset = 0;
    for (size_t l = 0; l < L; ++l) {
      if (!layers[l].prunable) {
        v.theta.push_back(u.theta[l]), v.theta_u.push_back(u.theta_u[l]);
        continue;
      }
      auto mask = keep.slice(0, offset, offset + u.theta[l].numel()).view(u.theta[l].sizes()).to(u.theta[l].scalar_type());
      offset += u.theta[l].numel();
      v.theta.push_back(u.theta[l] * mask), v.theta_u.push_back(u.theta_u[l] * mask);
    }
    v.fisher = fisher(v.theta), ++evaluations;  // always recomputed for a pruning step (§3.6)
    finish(v);
  }
  return children;
}

namespace {
SearchResult result_of(const SearchNode& v, const std::vector<SearchLayer>& layers) {
  SearchResult r;
  for (size_t l = 0; l < layers.size(); ++l) {
    LayerChoice c{layers[l].name, v.q[l], v.int_bits[l], v.frac_bits[l], v.theta[l].numel(),
                  v.theta[l].count_nonzero().item<int64_t>()};
    r.layers.push_back(c);
    r.masks.push_back((v.theta[l] != 0).to(torch::kFloat32));  // weights quantized to 0 stay 0: the rate holds
  }
  r.pruning = v.pruning, r.rate = v.rate, r.g = v.g, r.d = v.d;
  return r;
}

size_t cheapest(const std::vector<SearchNode>& nodes) {
  size_t best = 0;
  for (size_t n = 1; n < nodes.size(); ++n)
    if (nodes[n].d < nodes[best].d) best = n;  // strict: the first of equals, as PQuantML
  return best;
}

std::string bits_text(const SearchNode& v) { return fmt::format("[{}]", fmt::join(v.q, ", ")); }
}  // namespace

SearchResult search(const std::vector<SearchLayer>& layers, std::vector<torch::Tensor> initial_fisher,
                    const FisherFn& fisher, const SearchOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  const FitCompressPlan& plan = options.plan;
  if (layers.empty()) throw Error("FITCompress: the model has no Linear or Conv layer to compress");
  const auto curve = pruning_curve(plan.pruning_start, plan.pruning_end, plan.pruning_steps);
  std::vector<SearchNode> frontier;
  frontier.push_back(initial_node(layers, std::move(initial_fisher)));
  std::set<std::vector<int64_t>> closed;
  int64_t iterations = 0, evaluations = 0;
  SearchNode lowest = frontier.front();  // the lowest rate seen, for the message when the goal is out of reach
  auto done = [&](const SearchNode& v) {
    auto r = result_of(v, layers);
    r.iterations = iterations, r.fisher_evaluations = evaluations;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  };
  while (!frontier.empty() && iterations < options.max_iterations) {
    if (plan.greedy_astar) {
      for (const auto& v : frontier)
        if (v.rate < plan.compression_goal) return done(v);
      SearchNode best = std::move(frontier[cheapest(frontier)]);
      frontier = expand(best, layers, fisher, plan, curve, evaluations);
    } else {
      size_t at = cheapest(frontier);
      SearchNode best = std::move(frontier[at]);
      frontier.erase(frontier.begin() + static_cast<std::ptrdiff_t>(at));
      if (best.rate < plan.compression_goal) return done(best);
      if (!closed.insert(best.state).second) continue;  // reached before by a cheaper path
      for (auto& v : expand(best, layers, fisher, plan, curve, evaluations))
        if (!closed.count(v.state)) frontier.push_back(std::move(v));
      if (static_cast<int64_t>(frontier.size()) > options.max_frontier) {
        std::stable_sort(frontier.begin(), frontier.end(), [](const SearchNode& a, const SearchNode& b) { return a.d < b.d; });
        frontier.resize(static_cast<size_t>(options.max_frontier));
      }
    }
    ++iterations;
    for (const auto& v : frontier)
      if (v.rate < lowest.rate) lowest = v;
  }
  if (frontier.empty())
    throw Error(fmt::format(
        "FITCompress: the schedules are exhausted before compression_goal {} is reached (the lowest rate found is "
        "{:.4f}, at weight bits {} and {:.1f}% pruning): add lower widths to quantization_schedule, enable "
        "optimize_pruning or extend pruning_schedule, or raise compression_goal",
        plan.compression_goal, lowest.rate, bits_text(lowest), 100 * lowest.pruning));
  throw Error(fmt::format("FITCompress: no state under compression_goal {} after {} expansions (the lowest rate found "
                          "is {:.4f}, at weight bits {} and {:.1f}% pruning)",
                          plan.compression_goal, iterations, lowest.rate, bits_text(lowest), 100 * lowest.pruning));
}

nlohmann::json SearchResult::to_json() const {
  nlohmann::json out = {{"rate", rate}, {"pruning", pruning}, {"g", g}, {"d", d}, {"iterations", iterations},
                        {"fisher_evaluations", fisher_evaluations}, {"seconds", seconds}};
  out["layers"] = nlohmann::json::array();
  for (const auto& l : layers)
    out["layers"].push_back({{"name", l.name}, {"bits", l.q}, {"integer_bits", l.int_bits},
                             {"fractional_bits", l.frac_bits}, {"weights", l.weights}, {"nonzero", l.nonzero}});
  return out;
}

std::string width_label(const nlohmann::json& layer) {
  if (layer.at("bits").get<int64_t>() >= kFloatBits) return "fp32";
  return std::to_string(1 + layer.at("integer_bits").get<int64_t>() + layer.at("fractional_bits").get<int64_t>());
}

std::string result_table(const nlohmann::json& result) {
  if (!result.is_object() || !result.contains("layers") || !result["layers"].is_array())
    throw Error("not a FITCompress result (fitcompress.json): it has no layer list");
  try {
    size_t name_w = 5;
    for (const auto& l : result["layers"]) name_w = std::max(name_w, l.at("name").get<std::string>().size());
    std::string out = fmt::format("{:<{}}  {:>4}  {:>3}  {:>3}  {:>9}  {:>9}\n", "layer", name_w, "bits", "i", "f",
                                  "weights", "nonzero");
    for (const auto& l : result["layers"]) {
      out += fmt::format("{:<{}}  {:>4}  {:>3}  {:>3}  {:>9}  {:>9}\n", l.at("name").get<std::string>(), name_w, width_label(l),
                         l.at("integer_bits").get<int64_t>(), l.at("fractional_bits").get<int64_t>(),
                         l.at("weights").get<int64_t>(), l.at("nonzero").get<int64_t>());
    }
    out += fmt::format("rate {:.4f} of the float weights' bits, {:.1f}% pruning; {} expansion(s), {} Fisher estimate(s), "
                       "{:.1f} s\n",
                       result.at("rate").get<double>(), 100 * result.at("pruning").get<double>(),
                       result.at("iterations").get<int64_t>(), result.at("fisher_evaluations").get<int64_t>(),
                       result.at("seconds").get<double>());
    return out;
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("not a FITCompress result (fitcompress.json): {}", e.what()));
  }
}

}  // namespace sparq::fit
