// Process-wide settings that training speed depends on.
#pragma once

namespace sparq {

/// Sets LibTorch's intra-op threads (0: one per core) and keeps freed tensor memory in the heap:
/// with glibc's defaults every activation above the mmap threshold (e.g. 33,200 x 64 floats) is
/// mapped and unmapped at each step, and the page faults cost 3x on large-batch training.
void configure_runtime(int threads = 0);

/// How many threads a loop of sparq's own (at::parallel_for in its translation units: the
/// quantizers, Adam) runs on now: at::get_num_threads() when the library is built with OpenMP, 1
/// without (ATen's loop is a header template, serial in a translation unit without OpenMP).
int parallel_workers();
/// Whether the library was compiled with OpenMP (with GCC always, with clang never; CMakeLists.txt).
bool built_with_openmp();

}  // namespace sparq
