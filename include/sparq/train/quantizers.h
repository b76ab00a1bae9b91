// NNI's quantizer classes at run time (spec nni-config §3.4): the integer quantizers the config
// list gave the layers are switched by a training callback (QATQuantizer from its
// quant_start_step, BNNQuantizer's clamp of the quantized weights after every step), PTQ's
// calibration pass runs after training, and every run with integer quantizers writes its
// calibration table.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <memory>
#include <string>
#include <vector>

#include "sparq/data/dataset.h"
#include "sparq/models/graph.h"
#include "sparq/plan.h"
#include "sparq/train/trainer.h"

namespace sparq::train {

/// The callback of the plan's quantizer (QAT start, BNN clamp); nullptr when it needs none.
std::shared_ptr<Callback> make_quantizer_runtime(const PruningSpec& quantizer, const models::Graph& graph);

/// After training: PtqQuantizer's calibration pass over `data` (calibration_batches batches),
/// then its bias correction when is_bias_correction is set; nothing for the other quantizers.
void finish_quantizer(const PruningSpec& quantizer, models::Graph& graph, const data::Dataset& data,
                      int64_t batch_size, const torch::Device& device);

/// The inputs of the first `batches` batches of `data` on `device`, in order (views of one copy
/// on the device): what PTQ calibrates and corrects biases with.
std::vector<torch::Tensor> calibration_batches(const data::Dataset& data, int64_t batches, int64_t batch_size,
                                               const torch::Device& device);

/// PTQ: forwards of `batches` in evaluation mode without gradients (the quantizers record their
/// range), then every integer quantizer starts.
void calibrate(models::Graph& graph, const std::vector<torch::Tensor>& batches);

/// PTQ's bias correction, layer by layer in node order: the mean difference per output channel
/// between each layer's float and quantized output (its own quantizers off and on, its input
/// from the quantized layers before it, which are corrected already) over `batches` is added to
/// its bias; then every integer quantizer is calibrated again on the corrected model.
void correct_biases(models::Graph& graph, const std::vector<torch::Tensor>& batches);

/// Loads a calibration table (what calibration_json wrote) into the model's integer quantizers:
/// ranges, scales and zero points copied, each quantizer started with its observer frozen.
/// Every quantizer needs its entry with the same dtype and scheme; throws ConfigError otherwise.
void load_calibration(models::Graph& graph, const std::string& path);

/// Every integer quantizer's `{module: {target: {scale, zero_point, quant_dtype, quant_scheme,
/// quant_bits, tracked_min, tracked_max}}}` (NNI's calibration config; per-channel values are
/// lists); empty when the model has none.
nlohmann::json calibration_json(const models::Graph& graph);

}  // namespace sparq::train
