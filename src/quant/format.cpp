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

const char* kind_of(const QuantizerSpec& spec) { return std::holds_alternative<HgqSpec>(spec) ? "hgq" : "fixed"; }

const FixedSpec& fixed_part(const QuantizerSpec& spec) {
  return std::visit([](const auto& s) -> const FixedSpec& { return s; }, spec);
}
FixedSpec& fixed_part(QuantizerSpec& spec) {
  return std::visit([](auto& s) -> FixedSpec& { return s; }, spec);
}

int QuantFormat::max_bits() const {
  int w = 0;
  for (size_t e = 0; e < k.size(); ++e) w = std::max(w, k[e] + i[e] + f[e]);
  return w;
}

bool QuantFormat::is_signed() const { return std::any_of(k.begin(), k.end(), [](int v) { return v > 0; }); }

}  // namespace sparq::quant
