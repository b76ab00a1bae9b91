// Plain-data parts of the quantization formats (include/sparq/quant/format.h).
#include "sparq/quant/format.h"

#include <fmt/format.h>

#include <algorithm>

#include "sparq/error.h"

namespace sparq::quant {

Granularity parse_granularity(const std::string& name) {
  if (name == "per_tensor") return Granularity::PerTensor;
  if (name == "per_channel") return Granularity::PerChannel;
  if (name == "per_weight") return Granularity::PerWeight;
  throw Error(fmt::format("unknown granularity '{}', expected per_tensor, per_channel or per_weight", name));
}

const char* to_string(Granularity g) {
  switch (g) {
    case Granularity::PerTensor: return "per_tensor";
    case Granularity::PerChannel: return "per_channel";
    case Granularity::PerWeight: return "per_weight";
  }
  return "?";
}

const char* kind_of(const QuantizerSpec& spec) {
  if (std::holds_alternative<HgqSpec>(spec)) return "hgq";
  if (std::holds_alternative<IntegerSpec>(spec)) return "integer";
  return "fixed";
}

const FixedSpec* fixed_part(const QuantizerSpec& spec) {
  if (auto h = std::get_if<HgqSpec>(&spec)) return h;
  return std::get_if<FixedSpec>(&spec);
}
FixedSpec* fixed_part(QuantizerSpec& spec) {
  if (auto h = std::get_if<HgqSpec>(&spec)) return h;
  return std::get_if<FixedSpec>(&spec);
}

int64_t IntegerSpec::qmin() const {
  int b = reduce_range ? bits - 1 : bits;
  return is_signed ? -(int64_t{1} << (b - 1)) + (narrow ? 1 : 0) : 0;
}
int64_t IntegerSpec::qmax() const {
  int b = reduce_range ? bits - 1 : bits;
  return is_signed ? (int64_t{1} << (b - 1)) - 1 : (int64_t{1} << b) - 1;
}

void IntegerSpec::validate() const {
  int lo = (is_signed ? 2 : 1) + (reduce_range ? 1 : 0);
  if (bits < lo || bits > 32)
    throw Error(fmt::format("integer quantizer: {} bits is out of range ({}int needs {} to 32)", bits,
                            is_signed ? "" : "u", lo));
  if (!(averaging_constant > 0 && averaging_constant <= 1))
    throw Error(fmt::format("integer quantizer: averaging_constant {} must lie in (0, 1]", averaging_constant));
}

const char* to_string(IntegerMethod m) {
  switch (m) {
    case IntegerMethod::FakeQuant: return "fake_quant";
    case IntegerMethod::Qat: return "qat";
    case IntegerMethod::Ptq: return "ptq";
    case IntegerMethod::Lsq: return "lsq";
    case IntegerMethod::LsqPlus: return "lsq_plus";
    case IntegerMethod::Dorefa: return "dorefa";
    case IntegerMethod::Bnn: return "bnn";
  }
  return "?";
}

std::string to_string(const QuantizerSpec& spec) {
  if (auto n = std::get_if<IntegerSpec>(&spec))
    return fmt::format("{}int{} {}{} {}{}", n->is_signed ? "" : "u", n->bits, n->symmetric ? "symmetric" : "affine",
                       n->reduce_range ? " reduce_range" : "",
                       n->channel_dim < 0 ? "per_tensor" : n->channel_dim == 0 ? "per_out_channel" : "per_channel",
                       n->method == IntegerMethod::FakeQuant ? "" : std::string(" ") + to_string(n->method));
  return fmt::format("{} {}", kind_of(spec), fixed_part(spec)->format().type_name());
}

int QuantFormat::max_bits() const {
  int w = 0;
  for (size_t e = 0; e < k.size(); ++e) w = std::max(w, k[e] + i[e] + f[e]);
  return w;
}

bool QuantFormat::is_signed() const { return std::any_of(k.begin(), k.end(), [](int v) { return v > 0; }); }

}  // namespace sparq::quant
