// In-memory datasets: readers for IDX (MNIST/Fashion-MNIST), CSV and NumPy files, normalisation,
// seeded train/validation split and seeded shuffled batches. A whole dataset lives on one device.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace sparq::data {

enum class Task { Classification, Regression };

/// Features `x` (float32, [N, ...]) and targets `y`: int64 class indices [N] for classification,
/// float32 [N] or [N, K] for regression.
struct Dataset {
  torch::Tensor x;
  torch::Tensor y;
  Task task = Task::Classification;
  int64_t num_classes = 0;  ///< classification only

  int64_t size() const { return x.defined() ? x.size(0) : 0; }
  /// Feature shape without the batch dimension.
  std::vector<int64_t> sample_shape() const;
  /// Rows `indices` (int64 tensor) of this dataset.
  Dataset subset(const torch::Tensor& indices) const;
  /// The first `n` rows (all if n <= 0 or n >= size()).
  Dataset head(int64_t n) const;
  Dataset to(const torch::Device& device) const;
};

/// Checks that `x` and `y` fit together (row counts, label dtype and range) and builds a Dataset.
/// `num_classes` 0 means "max label + 1". `source` names the origin in error messages;
/// `feature_source` the features' file when it is another one (an .npy pair, IDX images).
/// Non-finite features and regression targets are errors naming the sample and position.
Dataset make_dataset(torch::Tensor x, torch::Tensor y, Task task, int64_t num_classes,
                     const std::string& source, const std::string& feature_source = "");

// ---- readers (all throw sparq::DataError naming the file and the position) ----

/// One IDX file (gzip or raw) as a tensor of its stored type (uint8, int8, int16, int32, float32,
/// float64).
torch::Tensor read_idx(const std::string& path);
/// An IDX image file and its label file; labels must lie in [0, num_classes).
Dataset read_idx_pair(const std::string& images, const std::string& labels, int64_t num_classes = 10);

/// A CSV file with a header row. `target` names the label column; every other column is a numeric
/// feature.
Dataset read_csv(const std::string& path, const std::string& target, Task task,
                 int64_t num_classes = 0);

/// A NumPy .npy array (C order; float32/64, signed and unsigned integers, bool).
torch::Tensor read_npy(const std::string& path);
/// Writes a float32 tensor as a C-order .npy file (atomically); throws sparq::Error.
void write_npy(const std::string& path, const torch::Tensor& t);
/// Every array of a NumPy .npz archive (stored or deflated), keyed by name without ".npy".
std::map<std::string, torch::Tensor> read_npz(const std::string& path);

// ---- preprocessing ----

enum class Normalization {
  None,         ///< values as stored
  Unit,         ///< divide by 255: byte pixels to [0, 1]
  Standardize,  ///< per feature (x - mean) / std, statistics of the training split
  MinMax,       ///< per feature to [0, 1], statistics of the training split
};
/// "none", "unit", "standardize", "minmax"; throws sparq::Error otherwise.
Normalization parse_normalization(const std::string& name);

/// A fitted normalisation: y = (x - shift) * scale, per feature.
struct Normalizer {
  torch::Tensor shift, scale;
  static Normalizer fit(const Dataset& train, Normalization mode);
  void apply(Dataset& ds) const;
};

/// Index order of one epoch: a Fisher-Yates shuffle seeded by (seed, epoch). It does not depend on
/// LibTorch's generators, so it is the same on every device and for a resumed run.
torch::Tensor shuffled_indices(int64_t n, uint64_t seed, int64_t epoch);

/// Splits off a validation part: a seeded shuffle, then the first `fraction` of rows go to
/// validation. Returns {train, validation}.
std::pair<Dataset, Dataset> split(const Dataset& ds, double validation_fraction, uint64_t seed);

/// The batches of one epoch, gathered on the dataset's device.
class Batches {
 public:
  Batches(const Dataset& ds, int64_t batch_size, bool shuffle, uint64_t seed = 0, int64_t epoch = 0);
  int64_t count() const { return count_; }
  int64_t batch_size() const { return batch_size_; }
  /// Batch `b`: {x, y}. The last batch may be smaller.
  std::pair<torch::Tensor, torch::Tensor> get(int64_t b) const;

 private:
  const Dataset& ds_;
  int64_t batch_size_, count_;
  torch::Tensor order_;  // empty when not shuffled
};

/// Where one split comes from: IDX image+label files, a CSV file, an .npz archive or two .npy files.
struct SourceFiles {
  std::string format;               ///< "idx", "csv", "npz", "npy"; empty: no files
  std::string path;                 ///< csv, npz
  std::string images, labels;       ///< idx
  std::string x, y;                 ///< npy
  bool empty() const { return format.empty(); }
};

/// The data section of a job.
struct DataConfig {
  std::string dataset;              ///< "fashion_mnist", "mnist", "random" or "" (use files)
  std::string dir;                  ///< folder of the IDX files of a named dataset
  SourceFiles train, test;
  std::string target = "label";     ///< csv label column
  std::string x_key = "x", y_key = "y";  ///< npz array names
  Task task = Task::Classification;
  int64_t num_classes = 0;          ///< 0: from the labels
  Normalization normalize = Normalization::None;
  double validation_fraction = 0.0;
  int64_t train_limit = 0, test_limit = 0;  ///< use only the first N rows (0: all)
  uint64_t seed = 0;                ///< split and random data
  std::vector<int64_t> random_shape = {16};  ///< random: sample shape
  int64_t random_samples = 1024;    ///< random: training samples (test: a quarter)
};

struct Splits {
  Dataset train, validation, test;  ///< validation/test may be empty
};

/// Reads, limits, splits and normalises (statistics of the training split) the data of a job.
Splits load_data(const DataConfig& config);

}  // namespace sparq::data
