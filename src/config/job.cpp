#include "sparq/config/job.h"

#include "sparq/config/dialect.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>

#include "sparq/config/nni.h"
#include "sparq/config/pquant.h"
#include "sparq/yaml/reader.h"
#include "sparq/error.h"
#include "sparq/io/files.h"
#include "sparq/limits.h"
#include "sparq/models/onnx_import.h"

namespace sparq::config {

using namespace sparq::yaml;

namespace fs = std::filesystem;

namespace {

const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

std::string resolve(const std::string& base, const std::string& path) {
  if (path.empty() || fs::path(path).is_absolute()) return path;
  return (fs::path(base) / path).lexically_normal().string();
}

bool is_model_file(const std::string& s) {
  auto ext = fs::path(s).extension().string();
  return ext == ".yaml" || ext == ".yml";
}

bool is_onnx_file(const std::string& s) { return fs::path(s).extension().string() == ".onnx"; }

ModelSource parse_model(const std::string& file, const YAML::Node& node, const std::string& base) {
  ModelSource m;
  m.where = where(file, node) + ": model";
  if (node.IsScalar()) {
    std::string s = node.Scalar();
    if (is_model_file(s)) m.file = resolve(base, s);
    else if (is_onnx_file(s)) m.onnx = resolve(base, s);
    else m.zoo = s;
  } else {
    MapReader r(file, node, "model", {"zoo", "file", "onnx", "widths", "hidden", "blocks", "activation", "weights"});
    m.zoo = r.get_string("zoo", "");
    m.file = resolve(base, r.get_string("file", ""));
    m.onnx = resolve(base, r.get_string("onnx", ""));
    if (r.has("weights")) {
      m.weights = resolve(base, r.require_string("weights"));
      if (!fs::exists(m.weights)) r.fail("weights", fmt::format("'{}' does not exist (a model.pt or a run folder)", m.weights));
    }
    if (!m.zoo.empty() + !m.file.empty() + !m.onnx.empty() != 1)
      throw ConfigError(fmt::format("{}: model: give exactly one of 'zoo' (a zoo name), 'file' (a model YAML) or "
                                    "'onnx' (an ONNX file)",
                                    where(file, node)));
    if (m.zoo.empty())
      for (const char* key : {"widths", "hidden", "blocks", "activation"})
        if (r.has(key)) r.fail(key, "applies to zoo models only");
    m.zoo_options.widths = r.get_int_list("widths", {});
    for (auto w : m.zoo_options.widths)
      if (w <= 0) r.fail("widths", fmt::format("width {} must be positive", w));
    m.zoo_options.hidden = r.get_int("hidden", 64, 1);
    m.zoo_options.blocks = r.get_int("blocks", 1, 1, 16);
    m.zoo_options.activation = r.get_choice("activation", "ReLU",
                                            {"ReLU", "Tanh", "Sigmoid", "GELU", "LeakyReLU", "Hardtanh"});
  }
  if (!m.zoo.empty()) {
    auto names = models::zoo_names();
    if (std::find(names.begin(), names.end(), m.zoo) == names.end())
      throw ConfigError(fmt::format("{}: model: unknown zoo model '{}', did you mean '{}'? (zoo: {}; or give a "
                                    "model YAML path ending in .yaml)",
                                    where(file, node.IsMap() ? node["zoo"] : node), m.zoo,
                                    nearest(m.zoo, names), fmt::join(names, ", ")));
  } else if (!m.onnx.empty()) {
    if (!fs::is_regular_file(m.onnx))
      throw ConfigError(fmt::format("{}: model: ONNX file '{}' {}", where(file, node), m.onnx,
                                    fs::exists(m.onnx) ? "is not a regular file" : "does not exist"));
  } else if (!fs::exists(m.file)) {
    throw ConfigError(fmt::format("{}: model: file '{}' does not exist", where(file, node), m.file));
  }
  return m;
}

data::SourceFiles parse_source(const std::string& file, const YAML::Node& node, const std::string& what,
                               const std::string& base) {
  MapReader r(file, node, what, {"csv", "npz", "x", "y", "images", "labels"});
  data::SourceFiles s;
  int kinds = r.has("csv") + r.has("npz") + (r.has("x") || r.has("y")) + (r.has("images") || r.has("labels"));
  if (kinds != 1)
    throw ConfigError(fmt::format("{}: {}: give exactly one of csv: FILE, npz: FILE, x:/y: (.npy files) or "
                                  "images:/labels: (IDX files)",
                                  where(file, node), what));
  auto path_of = [&](const char* key) {
    std::string p = resolve(base, r.require_string(key));
    if (!fs::exists(p)) r.fail(key, fmt::format("file '{}' does not exist", p));
    return p;
  };
  if (r.has("csv")) s.format = "csv", s.path = path_of("csv");
  else if (r.has("npz")) s.format = "npz", s.path = path_of("npz");
  else if (r.has("x") || r.has("y")) s.format = "npy", s.x = path_of("x"), s.y = path_of("y");
  else s.format = "idx", s.images = path_of("images"), s.labels = path_of("labels");
  return s;
}

data::DataConfig parse_data(const std::string& file, const YAML::Node& node, const std::string& base) {
  MapReader r(file, node, "data",
              {"dataset", "dir", "train", "test", "target", "x_key", "y_key", "task", "num_classes",
               "normalize", "validation_fraction", "train_limit", "test_limit", "shape", "samples", "seed"});
  data::DataConfig c;
  if (r.has("dataset"))
    for (const char* format : {"csv", "npz", "npy", "idx"})
      if (r.get_string("dataset", "") == format)
        r.fail("dataset", fmt::format("'{0}' names a file format: give the file as train: {{{0}: PATH}} (and test:)", format));
  c.dataset = r.has("dataset") ? r.get_choice("dataset", "", {"fashion_mnist", "mnist", "random"}) : "";
  bool named = !c.dataset.empty();
  if (named == r.has("train"))
    throw ConfigError(fmt::format("{}: data: give either 'dataset' (fashion_mnist, mnist, random) or 'train' "
                                  "(and optionally 'test') files",
                                  where(file, node)));
  if (named && r.has("test")) r.fail("test", "is only used together with 'train' files");
  if (c.dataset == "mnist" && !r.has("dir")) r.fail("dir", "is required for mnist: the folder of its IDX files");
  c.dir = resolve(base, r.get_string("dir", c.dataset == "fashion_mnist" ? kFashionMnistDir : ""));
  if (r.has("train")) c.train = parse_source(file, r.node("train"), "data.train", base);
  if (r.has("test")) c.test = parse_source(file, r.node("test"), "data.test", base);
  c.target = r.get_string("target", "label");
  c.x_key = r.get_string("x_key", "x");
  c.y_key = r.get_string("y_key", "y");
  c.task = r.get_choice("task", "classification", {"classification", "regression"}) == "regression"
               ? data::Task::Regression : data::Task::Classification;
  c.num_classes = r.get_int("num_classes", 0, 0, kMaxClasses);
  bool images = c.dataset == "fashion_mnist" || c.dataset == "mnist" || c.train.format == "idx";
  c.normalize = data::parse_normalization(
      r.get_choice("normalize", images ? "unit" : "none", {"none", "unit", "standardize", "minmax"}));
  c.validation_fraction = r.get_double("validation_fraction", 0.0, 0.0, 0.9);
  c.train_limit = r.get_int("train_limit", 0, 0);
  c.test_limit = r.get_int("test_limit", 0, 0);
  if (c.dataset != "random")
    for (const char* key : {"shape", "samples"})
      if (r.has(key)) r.fail(key, "applies to dataset: random only");
  // The folder last: a key that does not belong is said first, wherever the job runs.
  if (named && c.dataset != "random" && !fs::is_directory(c.dir))
    r.fail("dir", fmt::format("folder '{}' does not exist{}", c.dir,
                              c.dataset == "fashion_mnist" ? " (Fashion-MNIST comes with the Debian package dataset-fashion-mnist)" : ""));
  c.random_shape = r.get_int_list("shape", {16});
  for (auto d : c.random_shape)
    if (d <= 0) r.fail("shape", fmt::format("dimension {} must be positive", d));
  c.random_samples = r.get_int("samples", 1024, 1);
  // The training set and a test set of a quarter, float32: checked before any is generated.
  auto per_sample = tensor_bytes(c.random_shape, sizeof(float));
  auto bytes = per_sample ? checked_multiply(*per_sample, c.random_samples) : std::nullopt;
  if (bytes && __builtin_add_overflow(*bytes, *bytes / 4, &*bytes)) bytes.reset();
  try {
    check_memory(bytes, fmt::format("random data of {} samples of shape [{}]", c.random_samples, fmt::join(c.random_shape, ", ")));
  } catch (const ResourceError& e) {
    r.fail(r.has("samples") ? "samples" : "shape", e.what());
  }
  c.seed = static_cast<uint64_t>(r.get_int("seed", 0, 0));
  return c;
}

train::TrainOptions parse_training(const std::string& file, const YAML::Node& node, int64_t& threads) {
  MapReader r(file, node, "training",
              {"optimizer", "lr", "weight_decay", "momentum", "nesterov", "betas", "eps", "batch_size",
               "eval_batch_size", "epochs", "seed", "loss", "device", "threads", "progress", "cuda_graph", "fused_mlp"});
  train::TrainOptions t;
  t.optimizer = r.get_choice("optimizer", "adam", {"adam", "adamw", "sgd"});
  t.lr = r.get_double("lr", 1e-3, 0.0);
  t.weight_decay = r.get_double("weight_decay", t.optimizer == "adamw" ? 1e-2 : 0.0, 0.0);
  t.momentum = r.get_double("momentum", 0.0, 0.0, 1.0);
  t.nesterov = r.get_bool("nesterov", false);
  if (t.optimizer != "sgd")
    for (const char* key : {"momentum", "nesterov"})
      if (r.has(key)) r.fail(key, fmt::format("applies to optimizer sgd, not {}", t.optimizer));
  if (t.nesterov && t.momentum <= 0) r.fail("nesterov", "needs momentum > 0");
  if (r.has("betas")) {
    if (t.optimizer == "sgd") r.fail("betas", "applies to adam and adamw, not sgd");
    YAML::Node b = r.node("betas");
    if (!b.IsSequence() || b.size() != 2) r.fail("betas", "expected a list of two numbers [beta1, beta2]");
    t.beta1 = as_double(file, b[0], "training.betas");
    t.beta2 = as_double(file, b[1], "training.betas");
    if (t.beta1 < 0 || t.beta1 >= 1 || t.beta2 < 0 || t.beta2 >= 1)
      r.fail("betas", "each beta must lie in [0, 1)");
  }
  t.eps = r.get_double("eps", 1e-8, 0.0);
  t.batch_size = r.get_int("batch_size", 256, 1);
  t.eval_batch_size = r.get_int("eval_batch_size", 0, 0);
  t.epochs = r.get_int("epochs", 5, 0, kMaxEpochs);
  t.seed = static_cast<uint64_t>(r.get_int("seed", 0, 0));
  t.loss = r.get_choice("loss", "cross_entropy", {"cross_entropy", "mse"});
  t.device = r.get_string("device", "cpu");
  bool indexed = t.device.rfind("cuda:", 0) == 0 && t.device.size() > 5 && t.device.size() < 9 &&
                 t.device.find_first_not_of("0123456789", 5) == std::string::npos;
  if (t.device != "auto" && t.device != "cpu" && t.device != "cuda" && !indexed)
    r.fail("device", fmt::format("'{}' is not one of auto, cpu, cuda, cuda:N", t.device));
  t.cuda_graph = r.get_choice("cuda_graph", "auto", {"auto", "on", "off"});
  t.fused_mlp = r.get_choice("fused_mlp", "auto", {"auto", "on", "off"});
  threads = r.get_int("threads", 0, 0, 1024);
  std::string progress = r.get_choice("progress", "auto", {"auto", "bar", "lines", "none"});
  t.progress = progress == "bar" ? train::Progress::Bar : progress == "lines" ? train::Progress::Lines
             : progress == "none" ? train::Progress::None : train::Progress::Auto;
  return t;
}

/// The job's `compression:` section: a config file of any dialect (relative to the job) or inline.
YamlDoc compression_doc(const YamlDoc& doc, const MapReader& r, const std::string& base) {
  YAML::Node c = r.node("compression");
  if (!c.IsScalar()) return {doc.file, c};
  std::string path = resolve(base, c.Scalar());
  if (!fs::exists(path)) r.fail("compression", fmt::format("file '{}' does not exist", path));
  return load_config_file(path);
}

Plan compression_plan(const YamlDoc& doc, const MapReader& r, const std::string& base, const LoadOptions& options) {
  auto config = compression_doc(doc, r, base);
  return load_plan(config.file, config.root, options);
}

// `search:` is sparq tune's (tune/search.cpp reads it); sparq run trains the job as written.
const std::vector<std::string> kJobKeys = {"name",        "model",        "data",   "training", "output",
                                           "compression", "distillation", "export", "search"};

Job parse(const YamlDoc& doc, const std::string& base, const LoadOptions& options) {
  MapReader r(doc.file, doc.root, "job", kJobKeys);
  Job job;
  job.file = doc.file;
  job.base_dir = base;
  job.load_options = options;
  job.name = r.get_string("name", fs::path(doc.file).stem().string());
  if (job.name.empty() || job.name.find('/') != std::string::npos)
    r.fail("name", "must be a non-empty name without '/'");
  if (!r.has("model")) r.fail("model", "is required: a zoo name (mlp, jet_tagger, lenet, resnet) or a model YAML path");
  if (!r.has("data")) r.fail("data", "is required");
  job.model = parse_model(doc.file, r.node("model"), base);
  job.data = parse_data(doc.file, r.node("data"), base);
  if (r.has("training")) job.training = parse_training(doc.file, r.node("training"), job.threads);
  if (!r.node("data")["seed"]) job.data.seed = job.training.seed;  // one seed unless split apart
  job.output = r.get_string("output", "runs/" + job.name);
  if (job.output.empty()) r.fail("output", "must be a folder path (default runs/<name>)");
  if (r.has("export")) {
    const YAML::Node e = r.node("export");
    std::vector<YAML::Node> items;
    if (e.IsScalar()) items.push_back(e);
    else if (e.IsSequence())
      for (const auto& item : e) items.push_back(item);
    else r.fail("export", "expected a format or a list of formats (onnx, qonnx, hls4ml)");
    for (const auto& item : items) {
      std::string format = yaml::as_string(doc.file, item, "export");
      if (format != "onnx" && format != "qonnx" && format != "hls4ml")
        throw ConfigError(fmt::format("{}: export: unknown format '{}', expected onnx, qonnx or hls4ml", where(doc.file, item), format));
      if (std::find(job.exports.begin(), job.exports.end(), format) == job.exports.end()) job.exports.push_back(format);
    }
  }
  if (r.has("compression")) {
    job.plan = compression_plan(doc, r, base, options);
    if (job.plan.schedule && r.has("training") && r.node("training")["epochs"])
      throw ConfigError(fmt::format("{}: training.epochs: {}; remove one of them", where(doc.file, r.node("training")["epochs"]),
                                    job.plan.dialect == "sparseml"
                                        ? fmt::format("the recipe's modifiers give the epochs ({}, the largest epoch "
                                                      "they name)",
                                                      job.plan.schedule->epochs)
                                        : "the compression config's training_parameters give the schedule "
                                          "(pretraining_epochs, epochs per round, rounds, fine_tuning_epochs)"));
    if (job.plan.uses_masks() && !job.plan.pruner)
      r.fail("compression", "an NNI config list needs the pruner that reads it (NNI names it in code): "
                            "compression: {pruner: {type: L1NormPruner}, config_list: LIST}");
    bool nni_quant = false;
    for (const auto& rule : job.plan.rules)
      for (const auto& [target, t] : rule.targets)
        nni_quant = nni_quant || (job.plan.dialect.rfind("nni", 0) == 0 && t.quant && t.quant->spec &&
                                  std::holds_alternative<quant::IntegerSpec>(*t.quant->spec));
    if (nni_quant && !job.plan.quantizer)
      r.fail("compression", "an NNI quantization list needs the quantizer that reads it (NNI names it in code): "
                            "compression: {quantizer: {type: QATQuantizer, quant_start_step: 0}, config_list: LIST}");
  }
  if (r.has("distillation")) {
    if (job.plan.distillation)
      r.fail("distillation", "the compression section has a distiller already (compression.distiller); keep one of them");
    job.plan.distillation = read_distillation(doc.file, r.node("distillation"), "distillation", base);
  }
  return job;
}

}  // namespace

YamlDoc load_job_compression(const YamlDoc& job) {
  MapReader r(job.file, job.root, "job", kJobKeys);
  if (!r.has("compression"))
    throw ConfigError(fmt::format("{}: this job has no compression section: it trains a float model, so there is "
                                  "nothing to inspect",
                                  job.file));
  return compression_doc(job, r, fs::path(job.file).parent_path().string());
}

bool is_job(const YamlDoc& doc) {
  return doc.root.IsMap() && (doc.root["model"] || doc.root["data"] || doc.root["compression"]);
}

Plan load_job_plan(const std::string& path, const LoadOptions& options) {
  auto config = load_job_compression(YamlDoc::load_file(path));
  return load_plan(config.file, config.root, options);
}

Job load_job(const std::string& path, const LoadOptions& options) {
  std::string text = io::read_file(path);
  Job job = parse(YamlDoc::load_string(text, path), fs::path(path).parent_path().string(), options);
  job.text = std::move(text);
  return job;
}

Job parse_job(const std::string& text, const std::string& name, const std::string& base_dir, const LoadOptions& options) {
  Job job = parse(YamlDoc::load_string(text, name), base_dir, options);
  job.text = text;
  return job;
}

Job default_job() {
  Job job = parse_job(R"(
name: default
model: lenet
data:
  dataset: fashion_mnist
training:
  optimizer: adam
  lr: 0.001
  batch_size: 256
  epochs: 3
  seed: 0
compression:
  quantization_parameters:
    default_weight_integer_bits: 1
    default_weight_fractional_bits: 6
    default_data_keep_negatives: 1
    default_data_integer_bits: 3
    default_data_fractional_bits: 4
    layer_specific:
      conv1: {input: {keep_negatives: 0, integer_bits: 0, fractional_bits: 8}}
)", "<default job>");
  job.file = "";
  return job;
}

models::GraphSpec model_spec(const ModelSource& model, const std::vector<int64_t>& input_shape,
                             int64_t num_classes) {
  if (!model.onnx.empty()) {
#ifdef SPARQ_WITH_ONNX
    auto spec = models::import_onnx(model.onnx).spec;
    if (spec.input_shape != input_shape)
      throw ModelError(fmt::format("{}: the model takes samples of [{}], the data's are [{}]", model.onnx,
                                   fmt::join(spec.input_shape, ", "), fmt::join(input_shape, ", ")));
    return spec;
#else
    throw MissingFeatureError(model.onnx, "ONNX support", "libonnx-dev");
#endif
  }
  if (!model.file.empty()) {
    auto spec = models::load_model_yaml(model.file, input_shape);
    if (spec.input_shape != input_shape)
      throw ModelError(fmt::format("{}: model input_shape [{}] does not match the data's samples [{}]",
                                   model.file, fmt::join(spec.input_shape, ", "), fmt::join(input_shape, ", ")));
    return spec;
  }
  auto spec = models::zoo_spec(model.zoo, input_shape, num_classes, model.zoo_options);
  for (auto& node : spec.nodes)  // a zoo model's sizes come from the job's model: entry
    if (node.where.empty()) node.where = model.where;
  return spec;
}

BuiltModel build_model(const ModelSource& model, const std::vector<int64_t>& input_shape, int64_t outputs) {
  BuiltModel built;
#ifdef SPARQ_WITH_ONNX
  models::OnnxImport onnx;
  if (!model.onnx.empty()) {  // read once: the graph and its weights
    onnx = models::import_onnx(model.onnx);
    if (onnx.spec.input_shape != input_shape)
      throw ModelError(fmt::format("{}: the model takes samples of [{}], the data's are [{}]", model.onnx,
                                   fmt::join(onnx.spec.input_shape, ", "), fmt::join(input_shape, ", ")));
    built.spec = onnx.spec;
  } else
#endif
    built.spec = model_spec(model, input_shape, outputs);
  built.graph = models::Graph(built.spec);
  // The output per sample must be [outputs] (the data's classes or targets): otherwise the loss
  // would fail deep inside LibTorch.
  const auto& out = built.graph->nodes()[built.graph->output_index()].out_shape;
  if (out != std::vector<int64_t>{outputs})
    throw ModelError(fmt::format("{}: the model's output per sample is [{}], the data needs [{}] (its classes or targets)",
                                 !model.onnx.empty() ? model.onnx : !model.file.empty() ? model.file : model.zoo,
                                 fmt::join(out, ", "), outputs));
#ifdef SPARQ_WITH_ONNX
  if (!model.onnx.empty()) models::load_state(built.graph, onnx.state, model.onnx);
#endif
  if (!model.weights.empty()) models::load_weights(built.graph, model.weights);
  return built;
}

models::Graph load_teacher(const Distillation& d, const std::vector<int64_t>& input_shape, int64_t num_classes) {
  models::GraphSpec spec;
  std::string weights = d.teacher_weights;
  if (!d.teacher_run.empty()) {
    spec = models::load_model_yaml((fs::path(d.teacher_run) / "model.yaml").string());
    weights = d.teacher_run;
  } else {
    ModelSource source;
    const auto zoo = models::zoo_names();
    if (std::find(zoo.begin(), zoo.end(), d.teacher_model) != zoo.end()) source.zoo = d.teacher_model;
    else source.file = d.teacher_model;
    spec = model_spec(source, input_shape, num_classes);
  }
  if (spec.input_shape != input_shape)
    throw ConfigError(fmt::format("{}: distillation.teacher: the teacher takes samples of [{}], the data has [{}]",
                                  d.where, fmt::join(spec.input_shape, ", "), fmt::join(input_shape, ", ")));
  models::Graph teacher(spec);
  try {
    models::load_weights(teacher, weights, "distillation.teacher", /*exact=*/true);
  } catch (const ConfigError& e) {  // the position of the distillation section leads
    throw ConfigError(fmt::format("{}: {}", d.where, e.what()));
  }
  return teacher;
}

}  // namespace sparq::config
