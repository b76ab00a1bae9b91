// NNI config lists (spec nni-config): v3 lists read into Plan rules with per-target mask settings
// (selection, target_names/target_settings, shorthand keys, first-wins precedence), v2 lists
// translated by the corrected converter of §6.3, and the job form that names the algorithm:
//   compression: {pruner: {type: L1NormPruner, ...}, config_list: FILE-or-inline-list}
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

#include "sparq/plan.h"

namespace sparq::config {

/// Whether a config list is NNI v2 (some entry has a v2-only key: sparsity, exclude, ...).
bool is_nni_v2(const YAML::Node& list);

/// The v3 list of a v2 list (spec §6.3, model-free; exact for pruning lists). `notes` receives
/// what the translation could not carry (quant_start_step belongs to the quantizer; an exclude
/// entry with both op_types and op_names excludes their union in v3). Throws ConfigError with
/// file:line:col for lists that are not valid v2.
YAML::Node nni_v2_to_v3(const std::string& file, const YAML::Node& list, std::vector<std::string>* notes = nullptr);

/// The Plan of a config list (v3, or v2 translated first); dialect "nni-v3" or "nni-v2".
Plan read_nni_list(const std::string& file, const YAML::Node& list);

/// The Plan of a compression section `{pruner: {...}, config_list: ...}` (a config_list file is
/// relative to `file`'s folder).
Plan read_nni_section(const std::string& file, const YAML::Node& section);

/// A distiller (spec §4): `{type, teacher, origin_loss_lambda, config_list}` with NNI's entry keys
/// (selection, lambda, link, apply_method). `teacher` is a run folder or `{model, weights}`;
/// paths are relative to `base_dir` ("" : `file`'s folder) and must exist. `what` names the
/// section in errors ("compression.distiller", "distillation").
Distillation read_distillation(const std::string& file, const YAML::Node& node, const std::string& what,
                               const std::string& base_dir = "");

}  // namespace sparq::config
