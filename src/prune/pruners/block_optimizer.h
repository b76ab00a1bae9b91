// The private optimizer Slim and Movement train their per-block factors/scores with (NNI: Adam,
// lr 1e-2, stepped before the main optimizer's step), kept in checkpoints under `key`.
#pragma once

#include <torch/optim/adam.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <memory>
#include <string>
#include <vector>

namespace sparq::prune {

class BlockOptimizer {
 public:
  BlockOptimizer(std::vector<torch::Tensor> tensors, std::string key)
      : key_(std::move(key)),
        adam_(std::make_unique<torch::optim::Adam>(std::move(tensors), torch::optim::AdamOptions(1e-2))) {}
  void step() {
    adam_->step();
    adam_->zero_grad();
  }
  void save(torch::serialize::OutputArchive& root) {
    torch::serialize::OutputArchive a;
    adam_->save(a);
    root.write(key_, a);
  }
  void load(torch::serialize::InputArchive& root) {
    torch::serialize::InputArchive a;
    if (root.try_read(key_, a)) adam_->load(a);
  }

 private:
  std::string key_;
  std::unique_ptr<torch::optim::Adam> adam_;
};

}  // namespace sparq::prune
