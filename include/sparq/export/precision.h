// The final number formats of a compressed model: per layer and target, the (k, i, f) of every
// element (HGQ: learned and frozen; fixed: configured) and the ap_fixed types they make. A run
// writes them as precision.json; `sparq inspect RUN_FOLDER` prints them.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <optional>
#include <string>

#include "sparq/models/graph.h"

namespace sparq::exporting {

/// {"model": name, "layers": [{"name", "op", "targets": {"weight": {"kind": "hgq"|"fixed",
/// "granularity", "round", "overflow", "shape": bits shape, "k", "i", "f": flat lists,
/// "types": {"ap_fixed<W,I,...>": count}, "zero_width": count, "mean_bits"}}}]}.
/// Zero-width elements (k + i + f <= 0) hold 0 and count under "zero_width", not in "types".
/// Dense and convolution layers with a quantized input also get "accumulator": {"type", "width",
/// "integer", "fractional", "signed", "min", "max"} (accumulator_of).
nlohmann::json precision_json(const models::Graph& graph);

/// The accumulator of a dense or convolution layer that no sum can overflow: every output's range
/// by interval arithmetic over the real (quantized, pruned) weights and the input lane's value
/// range per feature or channel (which holds the zeros of padding), fractional bits the largest
/// f_weight + f_input over the non-zero weights and live inputs (and the bias's), integer bits the
/// fewest that hold the range. Weights and biases count by their values' own f.
struct Accumulator {
  bool is_signed = true;
  int integer = 0;     ///< I of ap_fixed<W,I> (the sign bit included)
  int fractional = 0;
  double min = 0, max = 0;  ///< the range of every sum, bias included
  int width() const { return integer + fractional; }
  std::string type_name() const;  ///< "ap_fixed<W,I>" / "ap_ufixed<W,I>"
};
/// Nothing for a layer without a quantized input lane (its inputs have no bounded range).
std::optional<Accumulator> accumulator_of(const models::Graph& graph, const std::string& node);

/// Writes a precision_json() to `path`; throws sparq::Error if the file cannot be written.
void write_precision(const nlohmann::json& precision, const std::string& path);

/// "ap_fixed<8,2,...> x1152, ap_fixed<6,1,...> x40, ... (5 types)": the `shown` most used types of a
/// precision.json target, most used first.
std::string most_used_types(const nlohmann::json& target, size_t shown);

/// The per-layer table of a precision.json (one line per layer and target).
std::string precision_table(const nlohmann::json& precision);

}  // namespace sparq::exporting
