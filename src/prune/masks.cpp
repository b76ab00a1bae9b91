#include "sparq/prune/masks.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "sparq/error.h"

namespace sparq::prune {

std::vector<int64_t> block_kernel(const MaskGranularity& g, const std::vector<int64_t>& shape, bool is_parameter,
                                  const std::string& what) {
  const size_t rank = shape.size();
  std::vector<int64_t> k(shape);  // start from "whole dim" everywhere
  using Kind = MaskGranularity::Kind;
  auto fail = [&](const std::string& why) {
    throw Error(fmt::format("{}: granularity does not fit its shape [{}]: {}", what, fmt::join(shape, ", "), why));
  };
  switch (g.kind) {
    case Kind::Default: fail("unresolved default (internal)"); return k;
    case Kind::Element: std::fill(k.begin(), k.end(), 1); return k;
    case Kind::OutChannel:
      if (!is_parameter) fail("out_channel is for parameters (weight, bias); use per_channel for inputs/outputs");
      if (rank >= 1) k[0] = 1;
      return k;
    case Kind::InChannel:
      if (!is_parameter) fail("in_channel is for parameters (weight, bias); use per_channel for inputs/outputs");
      if (rank < 2) fail("in_channel needs a tensor with at least 2 dims");
      k[1] = 1;
      return k;
    case Kind::PerChannel:
      if (is_parameter) fail("per_channel is for inputs/outputs; use out_channel or in_channel for parameters");
      if (rank < 2) fail("per_channel needs a tensor with at least 2 dims");
      k[1] = 1;
      return k;
    case Kind::Block: {
      std::vector<int64_t> kernel = g.kernel;
      if (kernel.size() > rank) fail(fmt::format("the block [{}] has more dims than the tensor", fmt::join(g.kernel, ", ")));
      while (kernel.size() < rank)
        if (g.pad_front) kernel.insert(kernel.begin(), g.pad_value);
        else kernel.push_back(g.pad_value);
      for (size_t d = 0; d < rank; ++d) {
        if (kernel[d] == -1) continue;
        if (kernel[d] < 1 || shape[d] % kernel[d] != 0)
          fail(fmt::format("block size {} does not divide dim {} of size {}", kernel[d], d, shape[d]));
        k[d] = kernel[d];
      }
      return k;
    }
  }
  return k;
}

at::Tensor blocks_of(const at::Tensor& x, const std::vector<int64_t>& kernel) {
  const int64_t rank = x.dim();
  std::vector<int64_t> split, order, counts;
  int64_t per_block = 1;
  for (int64_t d = 0; d < rank; ++d) {
    split.push_back(x.size(d) / kernel[d]);
    split.push_back(kernel[d]);
    counts.push_back(x.size(d) / kernel[d]);
    per_block *= kernel[d];
  }
  for (int64_t d = 0; d < rank; ++d) order.push_back(2 * d);
  for (int64_t d = 0; d < rank; ++d) order.push_back(2 * d + 1);
  counts.push_back(per_block);
  return x.reshape(split).permute(order).reshape(counts);
}

at::Tensor shrink(const at::Tensor& x, const std::vector<int64_t>& kernel, BlockReduce reduce) {
  auto b = blocks_of(x, kernel);
  switch (reduce) {
    case BlockReduce::SumAbs: return b.abs().sum(-1);
    case BlockReduce::L2: return b.pow(2).sum(-1).sqrt();
    case BlockReduce::Mean: return b.mean(-1);
  }
  return b.mean(-1);
}

at::Tensor expand(const at::Tensor& m, const std::vector<int64_t>& kernel) {
  auto out = m;
  for (int64_t d = 0; d < m.dim(); ++d)
    if (kernel[d] > 1) out = out.repeat_interleave(kernel[d], d);
  return out;
}

at::Tensor ratio_mask(const at::Tensor& metric, double ratio) {
  if (!(ratio >= 0.0 && ratio <= 1.0)) throw Error(fmt::format("sparse ratio {} is outside [0, 1]", ratio));
  auto mask = torch::ones_like(metric, metric.options().dtype(torch::kFloat32));
  if (ratio == 0.0) return mask;
  if (ratio == 1.0) return mask.zero_();
  const auto k = static_cast<int64_t>(std::floor(static_cast<double>(metric.numel()) * ratio));
  auto order = std::get<1>(metric.flatten().sort(/*stable=*/true, 0, /*descending=*/false));
  mask.view(-1).index_fill_(0, order.slice(0, 0, k), 0.0);
  return mask;
}

namespace {

int64_t numel_of(const std::vector<int64_t>& shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
}

/// Members of each group id, in target order.
std::map<std::string, std::vector<size_t>> groups(const std::vector<MaskTarget>& ts,
                                                  const std::optional<std::string> MaskSetting::*id,
                                                  const std::vector<bool>& skip) {
  std::map<std::string, std::vector<size_t>> g;
  for (size_t i = 0; i < ts.size(); ++i)
    if (!skip[i] && ts[i].metric.defined() && ts[i].setting.*id) g[*(ts[i].setting.*id)].push_back(i);
  return g;
}

/// The one ratio every member of a group sets.
double group_ratio(const std::vector<MaskTarget>& ts, const std::vector<size_t>& members, const char* kind,
                   const std::string& id, bool all_must_set) {
  std::optional<double> ratio;
  for (size_t i : members) {
    const auto& r = ts[i].setting.sparse_ratio;
    if (!r) {
      if (all_must_set)
        throw Error(fmt::format("{} group {}: {} has no sparse_ratio (every member sets the same one)", kind, id,
                                ts[i].what()));
      continue;
    }
    if (ratio && *ratio != *r)
      throw Error(fmt::format("{} group {}: {} sets sparse_ratio {} but another member sets {} (a group has one "
                              "ratio)",
                              kind, id, ts[i].what(), *r, *ratio));
    ratio = r;
  }
  if (!ratio) throw Error(fmt::format("{} group {}: no member sets sparse_ratio", kind, id));
  return *ratio;
}

/// Dependency group: one mask from the mean metric, balanced over internal_metric_block chunks.
at::Tensor dependency_mask(const std::vector<MaskTarget>& ts, const std::vector<size_t>& members, const std::string& id) {
  double r = group_ratio(ts, members, "dependency", id, true);
  int64_t b = 1;
  at::Tensor sum;
  for (size_t i : members) {
    const auto& t = ts[i];
    b = std::lcm(b, t.setting.internal_metric_block.value_or(1));
    if (sum.defined() && !sum.sizes().equals(t.metric.sizes()))
      throw Error(fmt::format("dependency group {}: {} has metric shape [{}] but {} has [{}] (members prune the same "
                              "positions, so their blocks must match)",
                              id, t.what(), fmt::join(t.metric.sizes(), ", "), ts[members[0]].what(),
                              fmt::join(sum.sizes(), ", ")));
    sum = sum.defined() ? sum + t.metric : t.metric.clone();
  }
  auto mean = sum / static_cast<double>(members.size());
  if (mean.numel() % b != 0)
    throw Error(fmt::format("dependency group {}: internal_metric_block {} does not divide the {} blocks of {}", id, b,
                            mean.numel(), ts[members[0]].what()));
  auto chunks = mean.reshape({b, -1});
  auto mask = torch::empty_like(chunks, chunks.options().dtype(torch::kFloat32));
  for (int64_t c = 0; c < b; ++c) mask[c].copy_(ratio_mask(chunks[c], r));
  return mask.reshape(mean.sizes());
}

/// Global group: the smallest blocks over all members until the group's element budget; members
/// keep their min/max ratios (spec §2.5 with quirks 6 and 7 fixed).
std::vector<at::Tensor> global_masks(const std::vector<MaskTarget>& ts, const std::vector<size_t>& members,
                                     const std::string& id) {
  double r = group_ratio(ts, members, "global", id, false);
  if (!(r >= 0.0 && r <= 1.0)) throw Error(fmt::format("global group {}: sparse ratio {} is outside [0, 1]", id, r));
  int64_t total = 0, low = 0, high = 0;
  for (size_t i : members) {
    const auto& s = ts[i].setting;
    int64_t n = numel_of(ts[i].shape);
    total += n;
    low += static_cast<int64_t>(std::floor(n * s.min_sparse_ratio.value_or(0.0)));
    high += static_cast<int64_t>(std::floor(n * s.max_sparse_ratio.value_or(1.0)));
  }
  const auto budget = static_cast<int64_t>(std::floor(static_cast<double>(total) * r));
  std::vector<at::Tensor> out;
  if (budget <= low || budget >= high) {
    for (size_t i : members) {
      const auto& s = ts[i].setting;
      out.push_back(ratio_mask(ts[i].metric, budget <= low ? s.min_sparse_ratio.value_or(0.0)
                                                           : s.max_sparse_ratio.value_or(1.0)));
    }
    return out;
  }
  // Each member first loses its min_sparse_ratio; then the smallest remaining blocks go while the
  // budget lasts, skipping members at their max_sparse_ratio.
  struct Block {
    double metric;
    size_t member;
    int64_t index;
  };
  std::vector<Block> blocks;
  std::vector<int64_t> pruned(members.size()), cap(members.size()), grain(members.size());
  int64_t spent = 0;
  for (size_t m = 0; m < members.size(); ++m) {
    const auto& t = ts[members[m]];
    int64_t n = numel_of(t.shape);
    grain[m] = n / t.metric.numel();
    cap[m] = static_cast<int64_t>(std::floor(n * t.setting.max_sparse_ratio.value_or(1.0)));
    out.push_back(ratio_mask(t.metric, t.setting.min_sparse_ratio.value_or(0.0)));
    pruned[m] = (out[m].numel() - out[m].sum().item<int64_t>()) * grain[m];
    spent += pruned[m];
    auto metric = t.metric.flatten().to(torch::kFloat64).contiguous();
    auto kept = out[m].flatten().contiguous();
    for (int64_t j = 0; j < metric.numel(); ++j)
      if (kept.data_ptr<float>()[j] != 0) blocks.push_back({metric.data_ptr<double>()[j], m, j});
  }
  std::stable_sort(blocks.begin(), blocks.end(), [](const Block& a, const Block& b) { return a.metric < b.metric; });
  for (const auto& b : blocks) {
    if (pruned[b.member] + grain[b.member] > cap[b.member]) continue;
    if (spent + grain[b.member] > budget) break;
    out[b.member].view(-1)[b.index] = 0.0;
    pruned[b.member] += grain[b.member];
    spent += grain[b.member];
  }
  return out;
}

/// A target's mask that follows the source mask along `dims` (kept where any source element is).
at::Tensor align_mask(const MaskTarget& t, const at::Tensor& source, const MaskAlign& a) {
  std::vector<int64_t> reduce;
  std::vector<bool> keep(source.dim(), false);
  for (int64_t d : a.dims) {
    int64_t dd = d < 0 ? d + source.dim() : d;
    if (dd < 0 || dd >= source.dim())
      throw Error(fmt::format("{}: align dims [{}] do not exist on {}.{} (rank {})", t.what(), fmt::join(a.dims, ", "),
                              a.module.empty() ? t.module : a.module, a.target, source.dim()));
    keep[dd] = true;
  }
  for (int64_t d = 0; d < source.dim(); ++d)
    if (!keep[d]) reduce.push_back(d);
  auto kept = (reduce.empty() ? source : source.sum(reduce)) > 0;
  at::Tensor full;
  try {
    full = kept.to(torch::kFloat32).expand(t.shape).contiguous();
  } catch (const c10::Error&) {
    throw Error(fmt::format("{}: aligned to {}.{} along dims [{}], whose mask [{}] does not fit its shape [{}]",
                            t.what(), a.module.empty() ? t.module : a.module, a.target, fmt::join(a.dims, ", "),
                            fmt::join(kept.sizes(), ", "), fmt::join(t.shape, ", ")));
  }
  return (expand(shrink(full, t.kernel, BlockReduce::Mean), t.kernel) > 0).to(torch::kFloat32);
}

}  // namespace

std::map<MaskKey, at::Tensor> generate_masks(const std::vector<MaskTarget>& ts) {
  std::map<MaskKey, at::Tensor> out;
  auto put = [&](const MaskTarget& t, const at::Tensor& block_mask) {
    auto full = expand(block_mask.to(torch::kFloat32), t.kernel);
    MaskKey key{t.module, t.target};
    auto it = out.find(key);
    if (it == out.end()) out[key] = full;
    else it->second = it->second * full;
  };
  const size_t n = ts.size();
  // 1. threshold
  for (const auto& t : ts) {
    if (!t.metric.defined() || !t.setting.sparse_threshold) continue;
    auto mask = (t.metric >= *t.setting.sparse_threshold).to(torch::kFloat32);
    double s = 1.0 - mask.mean().item<double>();
    const auto& st = t.setting;
    if (st.min_sparse_ratio && s < *st.min_sparse_ratio) mask = ratio_mask(t.metric, *st.min_sparse_ratio);
    if (st.max_sparse_ratio && s > *st.max_sparse_ratio) mask = ratio_mask(t.metric, *st.max_sparse_ratio);
    put(t, mask);
  }
  // 2. dependency groups, 3. global groups (members not in a dependency group)
  std::vector<bool> in_group(n, false), none(n, false);
  for (const auto& [id, members] : groups(ts, &MaskSetting::dependency_group, none)) {
    auto mask = dependency_mask(ts, members, id);
    for (size_t i : members) put(ts[i], mask), in_group[i] = true;
  }
  for (const auto& [id, members] : groups(ts, &MaskSetting::global_group, in_group)) {
    auto masks = global_masks(ts, members, id);
    for (size_t m = 0; m < members.size(); ++m) put(ts[members[m]], masks[m]), in_group[members[m]] = true;
  }
  // 4. plain ratio, min/max clamped
  for (size_t i = 0; i < n; ++i) {
    const auto& t = ts[i];
    if (in_group[i] || !t.metric.defined() || !t.setting.sparse_ratio) continue;
    double r = std::min(t.setting.max_sparse_ratio.value_or(1.0),
                        std::max(t.setting.min_sparse_ratio.value_or(0.0), *t.setting.sparse_ratio));
    try {
      put(t, ratio_mask(t.metric, r));
    } catch (const Error& e) {
      throw Error(fmt::format("{}: {}", t.what(), e.what()));
    }
  }
  // 5. align, repeated so that chains (BN bias -> BN weight -> conv weight) resolve in any order;
  // a target whose source got no mask keeps none (spec quirk 9)
  std::vector<size_t> pending;
  for (size_t i = 0; i < n; ++i)
    if (ts[i].setting.align && !in_group[i] && !ts[i].setting.sparse_ratio && !ts[i].setting.sparse_threshold)
      pending.push_back(i);
  for (bool progress = true; progress && !pending.empty();) {
    progress = false;
    for (auto it = pending.begin(); it != pending.end();) {
      const auto& t = ts[*it];
      const auto& a = *t.setting.align;
      auto source = out.find({a.module.empty() ? t.module : a.module, a.target});
      if (source == out.end()) {
        ++it;
        continue;
      }
      put(t, shrink(align_mask(t, source->second, a), t.kernel, BlockReduce::Mean));
      it = pending.erase(it);
      progress = true;
    }
  }
  for (auto& [key, mask] : out) mask = (mask > 0).to(torch::kFloat32);
  return out;
}

}  // namespace sparq::prune
