// The process settings training speed depends on (sparq/runtime.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "sparq/runtime.h"

namespace {

// sparq's own loops (the quantizer kernels, Adam) are at::parallel_for, which runs serially in a
// translation unit built without OpenMP: the CPU's HGQ lanes ran on one of two cores until the
// library was built with it.
TEST(Runtime, SparqsLoopsRunOnEveryThread) {
#if defined(__GNUC__) && !defined(__clang__)
  ASSERT_TRUE(sparq::built_with_openmp()) << "a GCC build of sparq needs OpenMP";
#endif
  // Clang builds (the sanitizer build) run the loops on one thread.
  const int expected = sparq::built_with_openmp() ? 2 : 1;
  const int before = torch::get_num_threads();
  torch::set_num_threads(2);
  EXPECT_EQ(sparq::parallel_workers(), expected);
  torch::set_num_threads(1);
  EXPECT_EQ(sparq::parallel_workers(), 1);
  torch::set_num_threads(before);
}

}  // namespace
