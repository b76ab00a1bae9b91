#include "sparq/runtime.h"

#include <ATen/Parallel.h>
#include <malloc.h>
#include <torch/torch.h>

#include <algorithm>
#include <mutex>
#include <set>
#include <thread>

namespace sparq {

void configure_runtime(int threads) {
#ifdef M_MMAP_THRESHOLD
  mallopt(M_MMAP_THRESHOLD, 32 << 20);        // glibc's maximum; larger blocks are still mapped
  mallopt(M_TRIM_THRESHOLD, 1 << 30);         // return memory to the system only past 1 GiB free
#endif
  int n = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(n);
}

int parallel_workers() {
  std::mutex lock;
  std::set<std::thread::id> threads;
  at::parallel_for(0, 64 * at::get_num_threads(), 1, [&](int64_t, int64_t) {
    const std::lock_guard<std::mutex> hold(lock);
    threads.insert(std::this_thread::get_id());
  });
  return static_cast<int>(threads.size());
}

bool built_with_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

}  // namespace sparq
