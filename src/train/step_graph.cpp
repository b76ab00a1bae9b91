#include "train/step_graph.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "sparq/error.h"
#ifdef SPARQ_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

namespace sparq::train {

// ---- StepGraph ----

#ifdef SPARQ_WITH_CUDA
struct StepGraph::Impl {
  at::cuda::CUDAGraph graph;
  bool captured = false;
};
#else
struct StepGraph::Impl {
  bool captured = false;
};
#endif

StepGraph::StepGraph() : impl_(std::make_unique<Impl>()) {}
StepGraph::~StepGraph() = default;

bool StepGraph::supported() {
#ifdef SPARQ_WITH_CUDA
  return true;
#else
  return false;
#endif
}

StepResult StepGraph::capture(const std::function<StepResult()>& body) {
#ifdef SPARQ_WITH_CUDA
  auto stream = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, x.device().index());
  torch::cuda::synchronize();
  StepResult warm;
  {
    c10::cuda::CUDAStreamGuard guard(stream);
    warm = body();  // this batch's step, and lazy state and handles made outside the graph
    stream.synchronize();
    try {
      impl_->graph.capture_begin();
      result = body();
      impl_->graph.capture_end();
      impl_->captured = true;
    } catch (const std::exception& e) {
      failure_ = e.what();
      failure_ = failure_.substr(0, failure_.find('\n'));
      try {
        impl_->graph.capture_end();
      } catch (...) {
      }
      cudaGetLastError();  // the capture's error is not this run's: clear it
      impl_ = std::make_unique<Impl>();
      result = {};
    }
  }
  torch::cuda::synchronize();
  return warm;
#else
  throw Error("CUDA graphs need a CUDA build");
#endif
}

void StepGraph::replay() {
#ifdef SPARQ_WITH_CUDA
  impl_->graph.replay();
#endif
}

bool StepGraph::captured() const { return impl_->captured; }

}  // namespace sparq::train
