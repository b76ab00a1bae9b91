// Every key of the PQuantML dialect with its default, meaning and what sparq does with it: the
// schema the reader takes its allowed keys from, and the table docs/pquantml-config.md carries
// (`sparq config keys` prints it; a test checks the doc holds it verbatim).
#include <fmt/format.h>

#include "sparq/config/pquant.h"
#include "sparq/error.h"
#include "sparq/prune/methods.h"

namespace sparq::config {

namespace {


std::string cell(std::string s) {
  for (size_t p = 0; (p = s.find('|', p)) != std::string::npos; p += 2) s.replace(p, 1, "\\|");
  return s;
}

}  // namespace

const std::vector<KeyDoc>& pquant_keys() {
  static const std::vector<KeyDoc> keys = {
    // section, key, default, meaning, what sparq does (and where it differs)
    {"training_parameters", "pretraining_epochs", "50", "epochs before pruning starts", "the pretraining stage"},
    {"training_parameters", "epochs", "200", "epochs of each training round", "`sparq run --epochs N` overrides it"},
    {"training_parameters", "rounds", "1", "rounds of the training stage", "as PQuantML"},
    {"training_parameters", "fine_tuning_epochs", "0", "epochs after training, masks frozen", "the fine-tuning stage"},
    {"training_parameters", "rewind", "never", "`never`, `every-round`, `post-training-stage`",
     "the docs' `posttraining-stage` is accepted (PQuantML then never rewinds); `post-ticket-search` means never, with a warning"},
    {"training_parameters", "save_weights_epoch", "-1", "round-0 epoch whose weights are kept for rewinding",
     "-1 or an epoch of the first round, else an error"},
    {"training_parameters", "pruning_first", "false", "true: quantize(prune(W)); false: prune(quantize(W))", "as PQuantML"},
    {"quantization_parameters", "default_weight_keep_negatives", "1", "k of weights and biases", "integer 0 or 1"},
    {"quantization_parameters", "default_weight_integer_bits", "0", "i of weights and biases (no sign bit)", "integer"},
    {"quantization_parameters", "default_weight_fractional_bits", "7", "f of weights and biases", "integer"},
    {"quantization_parameters", "default_data_keep_negatives", "0", "k of inputs, outputs, activations",
     "ReLU lanes unsigned, tanh-like lanes signed, whatever this says"},
    {"quantization_parameters", "default_data_integer_bits", "0", "i of data lanes", "integer"},
    {"quantization_parameters", "default_data_fractional_bits", "7", "f of data lanes (ReLU lanes get one more)", "integer"},
    {"quantization_parameters", "quantize_input", "true", "quantize every layer's input lane", "as PQuantML"},
    {"quantization_parameters", "quantize_output", "false", "quantize every layer's output lane",
     "batch norm has no output lane"},
    {"quantization_parameters", "granularity", "per_tensor", "`per_tensor`, `per_channel`, `per_weight` widths",
     "fixed widths: weights re-split their budget per channel or weight from the data; HGQ: the shape of the learned widths, data lanes too"},
    {"quantization_parameters", "dynamic_data_quantization", "false", "data lanes re-split i/f from the batch maximum",
     "refused with HGQ (which learns the widths)"},
    {"quantization_parameters", "enable_quantization", "true", "false: layers compute in float",
     "weight, batch-norm and pooling layers still become PQ layers (pruning lives in them)"},
    {"quantization_parameters", "round_mode", "RND", "rounding of every quantizer (7 ap_fixed modes)",
     "bit-exact with ap_fixed in every mode"},
    {"quantization_parameters", "overflow", "SAT", "seed 000: the overflow mode of data and parameters",
     "the default of the two keys below"},
    {"quantization_parameters", "overflow_mode_data", "SAT", "seed 001: overflow of data lanes",
     "`SAT`, `SAT_SYM`, `WRAP`, `WRAP_SM`; WRAP wraps in evaluation only, as the hardware"},
    {"quantization_parameters", "overflow_mode_parameters", "SAT", "seed 001: overflow of weights and biases", "as above"},
    {"quantization_parameters", "use_real_tanh", "false", "false: Tanh becomes hard tanh", "as PQuantML; tanh outputs stay signed (PQuantML clips them to >= 0)"},
    {"quantization_parameters", "use_relu_multiplier", "false", "a learned power-of-two scale before each ReLU",
     "off by default (PQuantML's code: on); off under HGQ, whose widths learn the scale"},
    {"quantization_parameters", "use_high_granularity_quantization", "false", "HGQ: every target learns its widths",
     "also spelled `use_hgq` (the seeds); give one of them"},
    {"quantization_parameters", "use_hgq", "false", "the seeds' name of the HGQ switch", "as above"},
    {"quantization_parameters", "hgq_beta", "1e-5", "coefficient of the EBOPs loss", "from the end of pretraining on"},
    {"quantization_parameters", "hgq_beta_schedule", "(none)", "sparq: `[[epoch, beta, constant|linear|log], ...]`",
     "a piecewise beta curve (HGQ2's schedule), written back by `--yaml`"},
    {"quantization_parameters", "hgq_gamma", "3e-4", "coefficient of the bit-width L1 loss",
     "also on batch-norm scale and shift (PQuantML: none)"},
    {"quantization_parameters", "hgq_heterogeneous", "true", "PQuantML: per-element widths", "read, no effect (granularity decides)"},
    {"quantization_parameters", "use_symmetric_quantization", "(none)", "in PQuantML's files, ignored there",
     "accepted with a warning; `overflow_mode_parameters: SAT_SYM` is the symmetric range"},
    {"quantization_parameters", "layer_specific", "{}", "per layer: `input`, `weight`, `bias`, `output` with `keep_negatives`, `integer_bits`, `fractional_bits` (and `quantize` on data lanes)",
     "layer names are checked against the model; the obsolete flat shape is an error"},
    {"pruning_parameters", "pruning_method", "cs", "the method; its parameters are the section's other keys",
     "unknown methods are an error; `fitcompress` is FITCompress's mask holder"},
    {"pruning_parameters", "enable_pruning", "true", "false: no layer prunes", "the methods' hooks still run"},
    {"pruning_parameters", "disable_pruning_for_layers", "[]", "weight layers left unpruned",
     "names are checked against the model's weight layers"},
    {"fitcompress_parameters", "enable_fitcompress", "false", "run FITCompress after pretraining",
     "needs optimize_quantization or optimize_pruning; see docs/fitcompress.md"},
    {"fitcompress_parameters", "optimize_quantization", "true", "search per-layer bit widths", "needs fixed-point (not HGQ) weights"},
    {"fitcompress_parameters", "quantization_schedule", "[7, 4, 3, 2]", "candidate bit widths", "1..32 each"},
    {"fitcompress_parameters", "pruning_schedule", "{start: 0, end: -3, steps: 40}",
     "pruning levels 1 - logspace(start, end, steps)", "integers, start <= 0, end < start, steps >= 2"},
    {"fitcompress_parameters", "compression_goal", "0.10", "the deployed weights' bits relative to float32 (sparq's measure)", "strictly between 0 and 1"},
    {"fitcompress_parameters", "optimize_pruning", "false", "search pruning levels too", "needs pruning_method: fitcompress"},
    {"fitcompress_parameters", "greedy_astar", "true", "greedy best-first search", "false: A* with a closed set"},
    {"fitcompress_parameters", "approximate", "true", "reuse the parent's Fisher for width steps", "as PQuantML"},
    {"fitcompress_parameters", "f_lambda", "1", "lambda in d = g + lambda f (the heuristic's weight)", ">= 0"},
    {"hpo_parameters", "experiment_name", "experiment_1", "the study's name", "also `finetuning_parameters`, `fine_tuning_parameters`; run by `sparq tune` (docs/search.md), not by `sparq run`"},
    {"hpo_parameters", "model_name", "example_model", "the model's name in the study", "parsed; unused (no MLflow)"},
    {"hpo_parameters", "sampler", "TPESampler", "a sampler name (seeds) or `{type, params}` (PQuantML)", "Grid, Random, BruteForce, TPE, NSGAII; others refused by name"},
    {"hpo_parameters", "num_trials", "0", "trials of the study", "must be >= 1 for `sparq tune`"},
    {"hpo_parameters", "hyperparameter_search", "{}", "`numerical: {name: [low, high, step]}`, `categorical: {name: [choices]}`",
     "float when any bound is written as a float; flat names map as PQuantML's, a name that maps nowhere is an error"},
};
  return keys;
}

std::vector<std::string> pquant_section_keys(const std::string& section) {
  std::vector<std::string> keys;
  for (const auto& k : pquant_keys())
    if (k.section == section) keys.push_back(k.key);
  if (keys.empty()) throw Error(fmt::format("no PQuantML section '{}'", section));
  return keys;
}

std::string pquant_keys_markdown() {
  std::string out = "| section | key | default | meaning | in sparq |\n|---|---|---|---|---|\n";
  for (const auto& k : pquant_keys())
    out += fmt::format("| `{}` | `{}` | {} | {} | {} |\n", k.section, k.key, cell(k.fallback), cell(k.meaning),
                       cell(k.sparq));
  for (const auto* m : prune::pruning_methods())
    for (const auto& p : m->params)
      out += fmt::format("| `pruning_parameters` ({}) | `{}` | {} | a parameter of {} | {} |\n", m->name, p.name,
                         cell(to_string(p.fallback)), m->name,
                         m->implemented() ? "see docs/pruning.md" : "parsed and shown; not run yet");
  return out;
}

}  // namespace sparq::config
