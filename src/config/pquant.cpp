#include "sparq/config/pquant.h"

#include <fmt/format.h>

#include <cstdio>

#include "sparq/config/yaml.h"
#include "sparq/error.h"

namespace sparq::config {

namespace {

const std::vector<std::string> kModes = {"TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_INF", "RND_MIN_INF", "RND_CONV"};
const std::vector<std::string> kOverflows = {"SAT", "SAT_SYM", "WRAP", "WRAP_SM"};

int bits(const MapReader& r, const std::string& key, int fallback, int min, int max) {
  return static_cast<int>(r.get_int(key, fallback, min, max));
}

LayerOverride parse_layer(const std::string& file, const YAML::Node& node, const std::string& layer) {
  LayerOverride o;
  o.where = where(file, node);
  MapReader sections(file, node, "layer_specific." + layer, {"input", "weight", "bias", "output"});
  for (const char* target : {"input", "weight", "bias", "output"}) {
    if (!sections.has(target)) continue;
    bool data = std::string(target) == "input" || std::string(target) == "output";
    std::vector<std::string> keys = {"keep_negatives", "integer_bits", "fractional_bits"};
    if (data) keys.push_back("quantize");
    MapReader r(file, sections.node(target), "layer_specific." + layer + "." + target, keys);
    TargetOverride t;
    if (r.has("keep_negatives")) t.k = bits(r, "keep_negatives", 0, 0, 1);
    if (r.has("integer_bits")) t.i = bits(r, "integer_bits", 0, -32, 32);
    if (r.has("fractional_bits")) t.f = bits(r, "fractional_bits", 0, -32, 32);
    if (r.has("quantize")) t.quantize = r.get_bool("quantize", true);
    o.targets[target] = t;
  }
  return o;
}

QuantPlan parse_quantization(const std::string& file, const YAML::Node& node) {
  MapReader r(file, node, "quantization_parameters",
              {"default_weight_keep_negatives", "default_weight_integer_bits", "default_weight_fractional_bits",
               "default_data_keep_negatives", "default_data_integer_bits", "default_data_fractional_bits",
               "quantize_input", "quantize_output", "granularity", "dynamic_data_quantization",
               "enable_quantization", "hgq_gamma", "hgq_beta", "hgq_heterogeneous", "layer_specific",
               "use_high_granularity_quantization", "use_hgq", "use_real_tanh", "overflow_mode_parameters",
               "overflow_mode_data", "overflow", "round_mode", "use_relu_multiplier", "use_symmetric_quantization"});
  QuantPlan q;
  q.weight.k = bits(r, "default_weight_keep_negatives", 1, 0, 1);
  q.weight.i = bits(r, "default_weight_integer_bits", 0, -32, 32);
  q.weight.f = bits(r, "default_weight_fractional_bits", 7, -32, 32);
  q.data.k = bits(r, "default_data_keep_negatives", 0, 0, 1);
  q.data.i = bits(r, "default_data_integer_bits", 0, -32, 32);
  q.data.f = bits(r, "default_data_fractional_bits", 7, -32, 32);
  q.quantize_input = r.get_bool("quantize_input", true);
  q.quantize_output = r.get_bool("quantize_output", false);
  q.weight.granularity = quant::parse_granularity(
      r.get_choice("granularity", "per_tensor", {"per_tensor", "per_channel", "per_weight"}));
  q.data.dynamic = r.get_bool("dynamic_data_quantization", false);
  q.enabled = r.get_bool("enable_quantization", true);
  r.get_double("hgq_gamma", 3e-4, 0.0);
  r.get_double("hgq_beta", 1e-5, 0.0);
  r.get_bool("hgq_heterogeneous", true);
  for (const char* key : {"use_high_granularity_quantization", "use_hgq"})
    if (r.get_bool(key, false)) r.fail(key, "HGQ (trainable bit widths) is not available yet; set it to false");
  q.use_real_tanh = r.get_bool("use_real_tanh", false);
  // Seed 000 spells one `overflow` for everything; seed 001 splits it by data and parameters.
  std::string both = r.get_choice("overflow", "SAT", kOverflows);
  q.weight.overflow = quant::parse_overflow_mode(r.get_choice("overflow_mode_parameters", both, kOverflows));
  q.data.overflow = quant::parse_overflow_mode(r.get_choice("overflow_mode_data", both, kOverflows));
  q.weight.round = q.data.round = quant::parse_round_mode(r.get_choice("round_mode", "RND", kModes));
  q.use_relu_multiplier = r.get_bool("use_relu_multiplier", false);
  if (r.has("use_symmetric_quantization"))
    warn(fmt::format("{}: quantization_parameters.use_symmetric_quantization has no effect (PQuantML ignores it "
                     "too); use overflow_mode_parameters: SAT_SYM for a symmetric range",
                     r.where("use_symmetric_quantization")));
  for (auto [spec, what] : {std::pair{&q.weight, "default_weight"}, std::pair{&q.data, "default_data"}}) {
    try {
      spec->format().validate();
    } catch (const Error& e) {
      throw ConfigError(fmt::format("{}: quantization_parameters.{}_*: {}", where(file, node), what, e.what()));
    }
  }
  if (r.has("layer_specific")) {
    YAML::Node layers = r.node("layer_specific");
    if (!layers.IsMap()) r.fail("layer_specific", "expected a mapping from layer names to sections");
    for (auto it = layers.begin(); it != layers.end(); ++it) {
      std::string name = it->first.Scalar();
      q.layers[name] = parse_layer(file, it->second, name);
    }
  }
  return q;
}

}  // namespace

void warn(const std::string& message) { std::fprintf(stderr, "sparq: warning: %s\n", message.c_str()); }

Plan parse_pquant(const std::string& file, const YAML::Node& root) {
  MapReader r(file, root, "PQuantML config",
              {"quantization_parameters", "training_parameters", "pruning_parameters", "fitcompress_parameters",
               "hpo_parameters", "finetuning_parameters"});
  for (const char* section : {"training_parameters", "pruning_parameters", "fitcompress_parameters", "hpo_parameters",
                              "finetuning_parameters"})
    if (r.has(section))
      r.fail(section, "this section is not supported yet (quantization_parameters is); remove it to train with "
                      "quantization only");
  Plan plan;
  plan.quantization = r.has("quantization_parameters")
                          ? parse_quantization(file, r.node("quantization_parameters"))
                          : QuantPlan{};
  return plan;
}

Plan load_pquant(const std::string& path) {
  auto doc = YamlDoc::load_file(path);
  return parse_pquant(doc.file, doc.root);
}

}  // namespace sparq::config
