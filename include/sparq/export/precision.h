// The final number formats of a compressed model: per layer and target, the (k, i, f) of every
// element (HGQ: learned and frozen; fixed: configured) and the ap_fixed types they make. A run
// writes them as precision.json; `sparq inspect RUN_FOLDER` prints them.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <string>

#include "sparq/models/graph.h"

namespace sparq::exporting {

/// {"model": name, "layers": [{"name", "op", "targets": {"weight": {"kind": "hgq"|"fixed",
/// "granularity", "round", "overflow", "shape": bits shape, "k", "i", "f": flat lists,
/// "types": {"ap_fixed<W,I,...>": count}, "zero_width": count, "mean_bits"}}}]}.
/// Zero-width elements (k + i + f <= 0) hold 0 and count under "zero_width", not in "types".
nlohmann::json precision_json(const models::Graph& graph);

/// Writes a precision_json() to `path`; throws sparq::Error if the file cannot be written.
void write_precision(const nlohmann::json& precision, const std::string& path);

/// The per-layer table of a precision.json (one line per layer and target).
std::string precision_table(const nlohmann::json& precision);

}  // namespace sparq::exporting
