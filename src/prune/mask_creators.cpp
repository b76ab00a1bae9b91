#include "sparq/prune/mask_creators.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <cfloat>
#include <cmath>

#include "sparq/error.h"

namespace sparq::prune {

namespace {

/// [O, I, k...] -> [O, k..., I] (the input dim last).
torch::Tensor inputs_last(const torch::Tensor& t) {
  std::vector<int64_t> perm{0};
  for (int64_t d = 2; d < t.dim(); ++d) perm.push_back(d);
  perm.push_back(1);
  return t.permute(perm);
}
torch::Tensor inputs_back(const torch::Tensor& t) {  // the inverse of inputs_last
  std::vector<int64_t> perm{0, t.dim() - 1};
  for (int64_t d = 1; d < t.dim() - 1; ++d) perm.push_back(d);
  return t.permute(perm);
}

/// [O, I, k...] -> [K, O, I] with K the trailing positions.
torch::Tensor trailing_first(const torch::Tensor& t) {
  auto flat = t.reshape({t.size(0), t.size(1), -1});  // [O, I, K]
  return flat.permute({2, 0, 1});
}

void need_2d(const torch::Tensor& t, const MaskType& type) {
  if (t.dim() < 2)
    throw Error(fmt::format("mask_type {} needs a tensor of 2 or more dims, got shape [{}]", to_string(type),
                            fmt::join(t.sizes(), ", ")));
}

}  // namespace

at::Tensor exact_mask(const at::Tensor& scores, double sparsity) {
  torch::NoGradGuard no_grad;
  auto ones = torch::ones_like(scores);
  const int64_t n = scores.numel();
  if (sparsity <= 0 || sparsity > 1 || n == 0) return ones;
  const int64_t target = static_cast<int64_t>(std::nearbyint(sparsity * static_cast<double>(n)));  // half to even
  const int64_t idx = std::max<int64_t>(0, target - 1);
  auto flat = scores.reshape({-1}).to(torch::kFloat64).cpu();
  auto sorted = std::get<0>(flat.sort());
  const double thr = sorted[idx].item<double>(), mn = sorted[0].item<double>();
  auto mask = torch::ones({n}, torch::kFloat64);
  auto acc = mask.accessor<double, 1>();
  auto s = flat.accessor<double, 1>();
  if (thr > mn) {
    int64_t masked = 0;
    for (int64_t e = 0; e < n; ++e)
      if (!(s[e] > thr)) acc[e] = 0, ++masked;
    for (int64_t e = 0; e < n && masked > target; ++e)  // ties at the threshold: keep the first ones
      if (s[e] == thr) acc[e] = 1, --masked;
  } else {
    int64_t masked = 0;
    for (int64_t e = 0; e < n && masked < target; ++e)
      if (s[e] == mn) acc[e] = 0, ++masked;
  }
  return mask.reshape(scores.sizes()).to(scores.options());
}

at::Tensor group_scores(const at::Tensor& scores, const MaskType& type) {
  torch::NoGradGuard no_grad;
  switch (type.kind) {
    case MaskType::Kind::Unstructured:
      return scores;
    case MaskType::Kind::Filter:
    case MaskType::Kind::Channel: {
      need_2d(scores, type);
      int64_t dim = type.kind == MaskType::Kind::Filter ? 0 : 1;
      return scores.transpose(0, dim).reshape({scores.size(dim), -1}).norm(2, 1);
    }
    case MaskType::Kind::Block: {
      need_2d(scores, type);
      if (type.four_block) {  // 4 consecutive inputs, the last partial block padded with its mean
        auto t = inputs_last(scores);
        const int64_t in = t.size(-1), pad = (4 - in % 4) % 4;
        if (pad) {
          auto tail = t.narrow(-1, in - in % 4, in % 4).mean(-1, true);
          t = torch::cat({t, tail.expand([&] { auto s = tail.sizes().vec(); s.back() = pad; return s; }())}, -1);
        }
        auto shape = t.sizes().vec();
        shape.back() /= 4;
        shape.push_back(4);
        return t.reshape(shape).mean(-1);
      }
      const int64_t out = scores.size(0), in = scores.size(1);
      const int64_t a = type.a == -1 ? out : type.a, b = type.b == -1 ? in : type.b;
      if (out % a || in % b)
        throw Error(fmt::format("block [{}, {}] does not divide the weight's [out, in] = [{}, {}]", type.a, type.b, out, in));
      auto t = trailing_first(scores);  // [K, O, I]
      if (b > 1) return t.reshape({t.size(0), out * in / (a * b), a * b}).mean(-1);
      return t.reshape({t.size(0), out / a, a, in}).mean(2);  // a rows of one input column
    }
    case MaskType::Kind::NM:
      break;
  }
  throw Error("N:M masks have no group scores");
}

at::Tensor expand_groups(const at::Tensor& m, const MaskType& type, at::IntArrayRef shape) {
  switch (type.kind) {
    case MaskType::Kind::Unstructured:
      return m;
    case MaskType::Kind::Filter: {
      std::vector<int64_t> view(shape.size(), 1);
      view[0] = shape[0];
      return m.view(view).expand(shape).contiguous();
    }
    case MaskType::Kind::Channel: {
      std::vector<int64_t> view(shape.size(), 1);
      view[1] = shape[1];
      return m.view(view).expand(shape).contiguous();
    }
    case MaskType::Kind::Block: {
      if (type.four_block) {
        auto full = m.unsqueeze(-1).expand([&] { auto s = m.sizes().vec(); s.push_back(4); return s; }());
        auto s = full.sizes().vec();
        s.pop_back();
        s.back() *= 4;
        auto t = full.reshape(s).narrow(-1, 0, shape[1]);
        return inputs_back(t).contiguous();
      }
      const int64_t out = shape[0], in = shape[1];
      const int64_t a = type.a == -1 ? out : type.a, b = type.b == -1 ? in : type.b;
      const int64_t k = m.size(0);
      torch::Tensor t;
      if (b > 1) t = m.unsqueeze(-1).expand({k, out * in / (a * b), a * b}).reshape({k, out, in});
      else t = m.unsqueeze(2).expand({k, out / a, a, in}).reshape({k, out, in});
      std::vector<int64_t> full(shape.begin(), shape.end());
      return t.permute({1, 2, 0}).reshape(full).contiguous();
    }
    case MaskType::Kind::NM:
      break;
  }
  throw Error("N:M masks have no group layout");
}

at::Tensor sparsity_mask(const at::Tensor& scores, double sparsity, const MaskType& type) {
  torch::NoGradGuard no_grad;
  if (type.kind != MaskType::Kind::NM)
    return expand_groups(exact_mask(group_scores(scores, type), sparsity), type, scores.sizes());
  if (sparsity == 0) return torch::ones_like(scores);
  const double nm = 1.0 - static_cast<double>(type.n) / static_cast<double>(type.m);
  if (std::fabs(sparsity - nm) > 0.01)
    throw Error(fmt::format("mask_type {}: the sparsity {} must be 0 or {} (1 - N/M)", to_string(type), sparsity, nm));
  if (scores.dim() != 2 && scores.dim() != 4)
    throw Error(fmt::format("mask_type {} applies to 2-D and 4-D weights, not shape [{}]", to_string(type),
                            fmt::join(scores.sizes(), ", ")));
  auto t = scores.dim() == 4 ? inputs_last(scores).contiguous() : scores.contiguous();
  if (t.numel() % type.m)
    throw Error(fmt::format("mask_type {}: {} elements are not a multiple of {}", to_string(type), t.numel(), type.m));
  auto groups = t.abs().reshape({-1, type.m});
  auto keep = std::get<1>(groups.topk(type.n, 1));
  auto mask = torch::zeros_like(groups).scatter_(1, keep, 1.0).reshape(t.sizes());
  return scores.dim() == 4 ? inputs_back(mask).contiguous() : mask;
}

std::vector<at::Tensor> global_masks(const std::vector<at::Tensor>& scores, double sparsity, const MaskType& type) {
  torch::NoGradGuard no_grad;
  if (type.kind == MaskType::Kind::NM) {
    std::vector<at::Tensor> out;
    for (const auto& s : scores) out.push_back(sparsity_mask(s, sparsity, type));
    return out;
  }
  std::vector<torch::Tensor> groups, flat;
  for (const auto& s : scores) {
    groups.push_back(group_scores(s, type));
    flat.push_back(groups.back().reshape({-1}).to(torch::kFloat64));
  }
  auto mask = exact_mask(torch::cat(flat), sparsity);
  std::vector<at::Tensor> out;
  int64_t at = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    auto part = mask.narrow(0, at, groups[i].numel()).reshape(groups[i].sizes()).to(scores[i].options());
    at += groups[i].numel();
    out.push_back(expand_groups(part, type, scores[i].sizes()));
  }
  return out;
}

std::vector<at::Tensor> shared_masks(const std::vector<at::Tensor>& scores, double sparsity, const MaskType& type) {
  torch::NoGradGuard no_grad;
  torch::Tensor sum;
  for (const auto& s : scores) {
    auto g = group_scores(s, type).to(torch::kFloat64);
    if (sum.defined() && g.sizes() != sum.sizes())
      throw Error(fmt::format("param_groups: tensors pruned on the same {}s must have as many of them ({} vs {})",
                              to_string(type), g.numel(), sum.numel()));
    sum = sum.defined() ? sum + g : g;
  }
  auto mask = exact_mask(sum, sparsity);
  std::vector<at::Tensor> out;
  for (const auto& s : scores) out.push_back(expand_groups(mask.to(s.options()), type, s.sizes()));
  return out;
}

double interpolate_sparsity(double e, double start, double end, double init, double final, const std::string& func) {
  double x = std::clamp((e - start) / (end - start), 0.0, 1.0);
  double y = func == "linear" ? x : func == "cubic" ? 1 - std::pow(1 - x, 3) : 1 - std::pow(1 - x, 1.0 / 3);
  if (y <= DBL_EPSILON) return init;
  if (y >= 1 - DBL_EPSILON) return final;
  return init + y * (final - init);
}

}  // namespace sparq::prune
