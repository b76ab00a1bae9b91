#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <random>

#include "sparq/data/dataset.h"
#include "sparq/error.h"
#include "sparq/limits.h"

namespace sparq::data {

std::vector<int64_t> Dataset::sample_shape() const {
  auto s = x.sizes().vec();
  s.erase(s.begin());
  return s;
}

Dataset Dataset::subset(const torch::Tensor& indices) const {
  Dataset out = *this;
  auto idx = indices.to(x.device());
  out.x = x.index_select(0, idx);
  out.y = y.index_select(0, idx);
  return out;
}

Dataset Dataset::head(int64_t n) const {
  if (n <= 0 || n >= size()) return *this;
  Dataset out = *this;
  out.x = x.slice(0, 0, n).clone();
  out.y = y.slice(0, 0, n).clone();
  return out;
}

Dataset Dataset::to(const torch::Device& device) const {
  Dataset out = *this;
  out.x = x.to(device);
  out.y = y.to(device);
  return out;
}

Dataset make_dataset(torch::Tensor x, torch::Tensor y, Task task, int64_t num_classes,
                     const std::string& source, const std::string& feature_source) {
  const std::string& features = feature_source.empty() ? source : feature_source;
  if (x.dim() < 1) throw DataError(fmt::format("{}: features are a scalar; expected one row per sample", features));
  if (x.size(0) == 0) throw DataError(fmt::format("{}: no samples", features));
  if (y.dim() < 1 || y.size(0) != x.size(0))
    throw DataError(fmt::format("{}: {} feature rows but {} targets", source, x.size(0),
                                y.dim() < 1 ? 0 : y.size(0)));
  Dataset ds;
  ds.task = task;
  ds.x = x.to(torch::kFloat32).contiguous();
  // NaN or infinite features (or ones that overflow float32) would train to "diverged": name the first.
  auto finite_check = [&](const torch::Tensor& t, const char* what, const std::string& file) {
    auto bad = torch::logical_not(torch::isfinite(t)).reshape({t.size(0), -1}).nonzero();
    if (bad.size(0) == 0) return;
    int64_t row = bad[0][0].item<int64_t>(), col = bad[0][1].item<int64_t>();
    double v = t.reshape({t.size(0), -1})[row][col].item<double>();
    throw DataError(fmt::format("{}: {} {} at sample {}, position {} is not a finite number", file, what, v, row, col));
  };
  finite_check(ds.x, "feature", feature_source.empty() ? source : feature_source);
  if (task == Task::Regression) {
    ds.y = y.to(torch::kFloat32).contiguous();
    finite_check(ds.y.dim() == 1 ? ds.y.unsqueeze(1) : ds.y, "target", source);
    return ds;
  }
  if (y.dim() != 1)
    throw DataError(fmt::format("{}: class labels must be one-dimensional, got shape {}", source,
                                fmt::join(y.sizes(), "x")));
  torch::Tensor labels = y;
  if (y.is_floating_point()) {
    auto bad = (y != y.floor()).nonzero();
    if (bad.size(0) > 0) {
      int64_t at = bad[0].item<int64_t>();
      throw DataError(fmt::format("{}: label {} at index {} is not an integer class", source,
                                  y[at].item<double>(), at));
    }
  }
  labels = y.to(torch::kInt64).contiguous();
  int64_t lo = labels.min().item<int64_t>(), hi = labels.max().item<int64_t>();
  if (num_classes <= 0 && hi >= kMaxClasses) {
    int64_t at = (labels >= kMaxClasses).nonzero()[0].item<int64_t>();
    throw DataError(fmt::format("{}: label {} at index {} is {} classes or more (at most {}; are these regression targets? "
                                "set task: regression)",
                                source, labels[at].item<int64_t>(), at, kMaxClasses, kMaxClasses));
  }
  int64_t classes = num_classes > 0 ? num_classes : hi + 1;
  if (lo < 0 || hi >= classes) {
    int64_t at = (lo < 0 ? (labels < 0) : (labels >= classes)).nonzero()[0].item<int64_t>();
    throw DataError(fmt::format("{}: label {} at index {} is out of range 0..{}", source,
                                labels[at].item<int64_t>(), at, classes - 1));
  }
  ds.y = labels;
  ds.num_classes = classes;
  return ds;
}

Normalization parse_normalization(const std::string& name) {
  if (name == "none") return Normalization::None;
  if (name == "unit") return Normalization::Unit;
  if (name == "standardize") return Normalization::Standardize;
  if (name == "minmax") return Normalization::MinMax;
  throw Error(fmt::format("unknown normalization '{}', expected none, unit, standardize or minmax",
                          name));
}

Normalizer Normalizer::fit(const Dataset& train, Normalization mode) {
  torch::NoGradGuard no_grad;
  auto opts = train.x.options();
  auto shape = train.sample_shape();
  shape.insert(shape.begin(), 1);
  Normalizer n;
  switch (mode) {
    case Normalization::None:
      n.shift = torch::zeros({1}, opts), n.scale = torch::ones({1}, opts);
      break;
    case Normalization::Unit:
      n.shift = torch::zeros({1}, opts), n.scale = torch::full({1}, 1.0 / 255.0, opts);
      break;
    case Normalization::Standardize: {
      // Statistics in double so that large datasets do not lose precision.
      auto x = train.x.to(torch::kFloat64);
      auto mean = x.mean(0, true);
      auto std = x.std(0, /*unbiased=*/false, true);
      n.shift = mean.to(torch::kFloat32);
      n.scale = torch::where(std > 0, 1.0 / std, torch::ones_like(std)).to(torch::kFloat32);
      break;
    }
    case Normalization::MinMax: {
      auto lo = std::get<0>(train.x.min(0, true));
      auto range = std::get<0>(train.x.max(0, true)) - lo;
      n.shift = lo;
      n.scale = torch::where(range > 0, 1.0 / range, torch::ones_like(range));
      break;
    }
  }
  return n;
}

void Normalizer::apply(Dataset& ds) const {
  torch::NoGradGuard no_grad;
  ds.x = ((ds.x - shift.to(ds.x.device())) * scale.to(ds.x.device())).contiguous();
}

torch::Tensor shuffled_indices(int64_t n, uint64_t seed, int64_t epoch) {
  // Mix seed and epoch so that neighbouring epochs get unrelated streams.
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(epoch), static_cast<uint32_t>(epoch >> 32), 0x5eedu};
  std::mt19937_64 rng(seq);
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    // Unbiased bounded draw, spelled out so every standard library gives the same order.
    uint64_t bound = static_cast<uint64_t>(i) + 1, limit = UINT64_MAX - UINT64_MAX % bound, r;
    do r = rng(); while (r >= limit);
    std::swap(order[i], order[r % bound]);
  }
  return torch::tensor(order, torch::kInt64);
}

std::pair<Dataset, Dataset> split(const Dataset& ds, double validation_fraction, uint64_t seed) {
  if (validation_fraction < 0 || validation_fraction >= 1)
    throw Error(fmt::format("validation fraction {} is out of range, expected 0 <= f < 1",
                            validation_fraction));
  int64_t n_val = static_cast<int64_t>(validation_fraction * ds.size());
  if (n_val == 0) return {ds, Dataset{}};
  auto order = shuffled_indices(ds.size(), seed, -1);
  return {ds.subset(order.slice(0, n_val)), ds.subset(order.slice(0, 0, n_val))};
}

Batches::Batches(const Dataset& ds, int64_t batch_size, bool shuffle, uint64_t seed, int64_t epoch)
    : ds_(ds), batch_size_(batch_size) {
  if (batch_size <= 0) throw Error(fmt::format("batch size {} must be positive", batch_size));
  count_ = (ds.size() + batch_size - 1) / batch_size;
  if (shuffle) order_ = shuffled_indices(ds.size(), seed, epoch).to(ds.x.device());
}

std::pair<torch::Tensor, torch::Tensor> Batches::get(int64_t b) const {
  int64_t begin = b * batch_size_, end = std::min(begin + batch_size_, ds_.size());
  if (!order_.defined()) return {ds_.x.slice(0, begin, end), ds_.y.slice(0, begin, end)};
  auto idx = order_.slice(0, begin, end);
  return {ds_.x.index_select(0, idx), ds_.y.index_select(0, idx)};
}

}  // namespace sparq::data
