// From a job's data section to train/validation/test datasets.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <fstream>

#include "sparq/data/dataset.h"
#include "sparq/error.h"

namespace sparq::data {

namespace {

Dataset read_source(const SourceFiles& s, const DataConfig& c) {
  if (s.format == "idx") return read_idx_pair(s.images, s.labels, c.num_classes > 0 ? c.num_classes : 10);
  if (s.format == "csv") return read_csv(s.path, c.target, c.task, c.num_classes);
  if (s.format == "npz") {
    auto arrays = read_npz(s.path);
    for (const auto& key : {c.x_key, c.y_key})
      if (!arrays.count(key)) {
        std::vector<std::string> names;
        for (const auto& [name, _] : arrays) names.push_back(name);
        throw DataError(fmt::format("{}: no array '{}' (arrays: {})", s.path, key, fmt::join(names, ", ")));
      }
    return make_dataset(arrays[c.x_key], arrays[c.y_key], c.task, c.num_classes, s.path);
  }
  if (s.format == "npy") return make_dataset(read_npy(s.x), read_npy(s.y), c.task, c.num_classes, s.y, s.x);
  throw DataError(fmt::format("unknown data format '{}'", s.format));
}

Dataset random_dataset(const DataConfig& c, int64_t samples, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  std::vector<int64_t> shape = c.random_shape;
  shape.insert(shape.begin(), samples);
  auto x = at::normal(0.0, 1.0, shape, gen);
  int64_t classes = c.num_classes > 0 ? c.num_classes : 5;
  auto y = c.task == Task::Classification ? at::randint(classes, {samples}, gen, torch::kInt64)
                                          : at::normal(0.0, 1.0, {samples}, gen);
  return make_dataset(x, y, c.task, c.task == Task::Classification ? classes : 0, "random data");
}

}  // namespace

Splits load_data(const DataConfig& c) {
  Splits s;
  if (c.dataset == "random") {
    s.train = random_dataset(c, c.random_samples, c.seed);
    s.test = random_dataset(c, std::max<int64_t>(c.random_samples / 4, 1), c.seed + 1);
  } else if (c.dataset == "fashion_mnist" || c.dataset == "mnist") {
    // The Debian package ships gzip files; unpacked copies are read as well.
    auto file = [&](const std::string& stem) {
      std::string gz = c.dir + "/" + stem + ".gz";
      return std::ifstream(gz).good() ? gz : c.dir + "/" + stem;
    };
    s.train = read_idx_pair(file("train-images-idx3-ubyte"), file("train-labels-idx1-ubyte"), 10);
    s.test = read_idx_pair(file("t10k-images-idx3-ubyte"), file("t10k-labels-idx1-ubyte"), 10);
  } else {
    s.train = read_source(c.train, c);
    if (!c.test.empty()) s.test = read_source(c.test, c);
  }
  auto name = [](const SourceFiles& f) { return f.format == "idx" ? f.images : f.format == "npy" ? f.x : f.path; };
  if (s.test.size() > 0 && s.test.sample_shape() != s.train.sample_shape())
    throw DataError(fmt::format("{}: test samples have shape [{}] but training samples ({}) [{}]", name(c.test),
                                fmt::join(s.test.sample_shape(), ", "), name(c.train), fmt::join(s.train.sample_shape(), ", ")));
  if (s.test.size() > 0 && s.train.task == Task::Classification)
    s.train.num_classes = s.test.num_classes = std::max(s.train.num_classes, s.test.num_classes);
  s.train = s.train.head(c.train_limit);
  if (s.test.size() > 0) s.test = s.test.head(c.test_limit);
  auto [train, validation] = split(s.train, c.validation_fraction, c.seed);
  s.train = train, s.validation = validation;
  auto norm = Normalizer::fit(s.train, c.normalize);
  norm.apply(s.train);
  if (s.validation.size() > 0) norm.apply(s.validation);
  if (s.test.size() > 0) norm.apply(s.test);
  return s;
}

}  // namespace sparq::data
