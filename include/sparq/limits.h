// Bounds that every reader of a value applies alike (job YAML, PQuantML configs, model files,
// data headers, the CLI), so a number that would overflow, allocate more than the machine has or
// train for ever is an error where it is written, not an allocation failure inside LibTorch.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sparq {

/// The most epochs a run (or one stage or round of a schedule) takes: 10^8 (sweeps run hundreds
/// of thousands of epochs; 10^8 times a step count per epoch still fits a 64-bit step counter).
constexpr int64_t kMaxEpochs = 100'000'000;

/// The most classes a classifier may have (a label or `num_classes` above is an error): 10^7, ten
/// times the largest extreme-classification benchmarks, far below what overflows a logits tensor.
constexpr int64_t kMaxClasses = 10'000'000;

/// a * b, or nothing when either is negative or the product overflows int64.
std::optional<int64_t> checked_multiply(int64_t a, int64_t b);
/// The product of `dims` (1 for none), or nothing when a dimension is negative or it overflows.
std::optional<int64_t> checked_product(const std::vector<int64_t>& dims);

/// The bytes a run may plan to use: the smallest of the machine's physical memory, the cgroup's
/// `memory.max` and the SPARQ_MEMORY_LIMIT environment variable (bytes, or with a K, M, G or T
/// suffix, powers of 1024). Read once.
uint64_t memory_limit();
/// memory_limit() for a message, with what set it: "23.4 GiB", "1.0 GiB, SPARQ_MEMORY_LIMIT",
/// "2.0 GiB, cgroup memory.max".
std::string memory_limit_text();
/// "23.4 GiB", "512 B": bytes for a message.
std::string format_bytes(double bytes);
/// Throws ResourceError "WHAT needs N, more than this machine's memory (L)" when `bytes` exceeds
/// memory_limit() (or is nothing: an overflowed size).
void check_memory(std::optional<int64_t> bytes, const std::string& what);
/// The bytes of a tensor of `dims` with `item_bytes` per element (nothing on overflow, also of
/// the strides that a zero dimension hides).
std::optional<int64_t> tensor_bytes(const std::vector<int64_t>& dims, int64_t item_bytes);

}  // namespace sparq
