// Job files: what `sparq run` trains (model, data, training options, output folder).
// Every key is validated; errors carry file:line:column and the nearest valid key.
#pragma once

#include <string>

#include "sparq/config/dialect.h"
#include "sparq/data/dataset.h"
#include "sparq/models/graph.h"
#include "sparq/plan.h"
#include "sparq/train/trainer.h"
#include "sparq/yaml/reader.h"

namespace sparq::config {

/// The model of a job: a zoo name with options, a model YAML file or an ONNX file.
struct ModelSource {
  std::string zoo;                ///< "mlp", "jet_tagger", "lenet", "resnet"; empty when `file` or `onnx` is set
  models::ZooOptions zoo_options;
  std::string file;               ///< model YAML path
  std::string onnx;               ///< ONNX file: the graph and its float weights
  std::string weights;            ///< start from these weights (a model.pt or a run folder); "" random
  std::string where;              ///< "job.yaml:3:8: model", for errors in the zoo model it builds
};

struct Job {
  std::string name = "default";
  std::string file;               ///< the job file ("" for the built-in default job)
  ModelSource model;
  data::DataConfig data;
  train::TrainOptions training;
  int64_t threads = 0;            ///< CPU threads; 0: all cores
  std::string output;             ///< run folder; default runs/<name>
  std::vector<std::string> exports;  ///< `export:` "onnx" (model.onnx), "qonnx" (model_qonnx.onnx), at the end
  Plan plan;                      ///< from `compression:` (a PQuantML config); empty: float training
  std::string text;               ///< the job file's text (run folders keep a copy)
  std::string base_dir;           ///< the folder its relative paths are relative to
  LoadOptions load_options;       ///< recipe variables it was loaded with
};

/// Reads and validates a job file. Relative paths in it are relative to the file's folder.
Job load_job(const std::string& path, const LoadOptions& options = {});
/// Only the `compression:` plan of a job file (no data or model is loaded or checked).
Plan load_job_plan(const std::string& path, const LoadOptions& options = {});
/// The compression config of a loaded job file: inline, or the file it names (relative to the
/// job). Throws ConfigError when the job has none.
yaml::YamlDoc load_job_compression(const yaml::YamlDoc& job);
/// Whether a document is a job file (a mapping with model, data or compression) rather than a config.
bool is_job(const yaml::YamlDoc& doc);
Job parse_job(const std::string& text, const std::string& name, const std::string& base_dir = ".",
              const LoadOptions& options = {});
/// The built-in default job: Fashion-MNIST, lenet with 8-bit weights and activations, 3 epochs.
Job default_job();

/// Builds the model of a job for samples of `input_shape` and `num_classes` outputs.
models::GraphSpec model_spec(const ModelSource& model, const std::vector<int64_t>& input_shape,
                             int64_t num_classes);
/// The model of a job for samples of `input_shape` and `outputs` outputs, with its starting
/// weights (the ONNX file's, then `weights` when given). Throws ModelError when the model's output
/// per sample is not [outputs].
struct BuiltModel {
  models::GraphSpec spec;
  models::Graph graph{nullptr};
};
BuiltModel build_model(const ModelSource& model, const std::vector<int64_t>& input_shape, int64_t outputs);

/// The teacher of a distillation with its float weights, for samples of `input_shape` (a zoo
/// teacher gets `num_classes` outputs). Throws ConfigError when the files do not fit or the
/// teacher's model.pt is a compressed run's.
models::Graph load_teacher(const Distillation& distillation, const std::vector<int64_t>& input_shape,
                           int64_t num_classes);

}  // namespace sparq::config
