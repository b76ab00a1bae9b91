#include "sparq/plan.h"

namespace sparq {

layers::QuantTargets QuantPlan::targets(const std::string& name, const std::string& op) const {
  layers::QuantTargets t;
  t.enable_quantization = enabled;
  quant::QuantSpec in = data, out = data;
  bool weights = op == "Linear" || op == "Conv1d" || op == "Conv2d";
  bool batchnorm = op == "BatchNorm1d" || op == "BatchNorm2d";
  if (op == "ReLU") {
    // Unsigned with one more fractional bit, as PQuantML's replacement does.
    in.k = out.k = 0;
    in.f += 1, out.f += 1;
  } else if (op == "Tanh" || op == "Hardtanh" || op == "LeakyReLU" || op == "GELU") {
    in.k = out.k = 1;  // signed outputs (PQuantML clips tanh outputs to >= 0: a bug)
  } else if (op == "Sigmoid" || op == "Softmax") {
    in.k = 1, out.k = 0;  // signed logits in, probabilities out
  }
  bool qin = quantize_input, qout = quantize_output;
  quant::QuantSpec w = weight, b = weight;
  auto it = layers.find(name);
  if (it != layers.end()) {
    for (const auto& [target, o] : it->second.targets) {
      quant::QuantSpec* spec = target == "input" ? &in : target == "output" ? &out : target == "weight" ? &w : &b;
      if (o.k) spec->k = *o.k;
      if (o.i) spec->i = *o.i;
      if (o.f) spec->f = *o.f;
      if (o.quantize && target == "input") qin = *o.quantize;
      if (o.quantize && target == "output") qout = *o.quantize;
    }
  }
  if (qin) t.input = in;
  if (qout && !batchnorm) t.output = out;
  if (weights || batchnorm) t.weight = w, t.bias = b;
  return t;
}

}  // namespace sparq
