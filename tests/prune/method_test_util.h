// Helpers of the pruning-method tests (one test file per method).
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "sparq/compress/compress.h"
#include "sparq/prune/budget.h"
#include "sparq/prune/methods.h"
#include "sparq/train/trainer.h"
#include "test_util.h"

namespace sparq::test {

using prune::LayerKind;

inline PruningSpec spec(const std::string& method, std::map<std::string, ParamValue> overrides) {
  auto s = prune::default_spec(method);
  for (auto& [k, v] : overrides) s.params[k] = v;
  return s;
}

inline torch::Tensor buffer(const prune::PruningMethod& m, const std::string& name) {
  return m.named_buffers()[name];
}

inline std::vector<float> values(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kFloat32).contiguous().flatten();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

inline void expect_near(const std::vector<float>& got, const std::vector<float>& want, float tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "element " << i;
}


}  // namespace sparq::test
