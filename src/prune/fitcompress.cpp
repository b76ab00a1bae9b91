// FITCompress's mask holder (spec §2.8): W ⊙ mask in every stage, the mask (ones until then)
// written by the FITCompress search at the end of pretraining (src/fit/). `min_frac_bits` is
// parsed for PQuantML's configs; the calibration that reads it is never run there either.
#include <torch/torch.h>

#include "prune/methods_impl.h"

namespace sparq::prune {

namespace {

class MaskHolder : public PruningMethod {
 public:
  explicit MaskHolder(const std::vector<int64_t>& shape) { mask = register_buffer("mask", torch::ones(shape)); }
  torch::Tensor apply(const torch::Tensor& w) override { return mask * w; }
  torch::Tensor hard_mask(const torch::Tensor&) override { return mask; }
  torch::Tensor mask;
};

const bool registered = register_method(
    {"fitcompress", 8, {number("min_frac_bits", 2.0, 0.0)},
     [](const PruningSpec&, const std::vector<int64_t>& shape, LayerKind) { return std::make_shared<MaskHolder>(shape); },
     nullptr});

}  // namespace

}  // namespace sparq::prune
