// Bounds that every reader of a value applies alike (job YAML, PQuantML configs, the CLI), so a
// number that would overflow a step count or train for ever is an error where it is written.
#pragma once

#include <cstdint>

namespace sparq {

/// The most epochs a run (or one stage or round of a schedule) takes: 10^8 (sweeps run hundreds
/// of thousands of epochs; 10^8 times a step count per epoch still fits a 64-bit step counter).
constexpr int64_t kMaxEpochs = 100'000'000;

}  // namespace sparq
