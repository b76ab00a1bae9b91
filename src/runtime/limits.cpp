#include "sparq/limits.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <limits>

#include "sparq/error.h"

namespace sparq {

std::optional<int64_t> checked_multiply(int64_t a, int64_t b) {
  int64_t out;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &out)) return std::nullopt;
  return out;
}

std::optional<int64_t> checked_product(const std::vector<int64_t>& dims) {
  std::optional<int64_t> p = 1;
  for (int64_t d : dims)
    if (!(p = checked_multiply(*p, d))) return std::nullopt;
  return p;
}

std::optional<int64_t> tensor_bytes(const std::vector<int64_t>& dims, int64_t item_bytes) {
  // A zero dimension makes the count 0 but not the strides of the others: those must fit too
  // (LibTorch's stride arithmetic would overflow on [0, 2^32, 2^32]).
  std::vector<int64_t> extents;
  for (auto d : dims) extents.push_back(d == 0 ? 1 : d);
  if (!checked_product(extents)) return std::nullopt;
  auto n = checked_product(dims);
  return n ? checked_multiply(*n, item_bytes) : std::nullopt;
}

namespace {

/// "12G", "512M", "1073741824": bytes, or 0 when the text is not such a size.
uint64_t parse_size(const std::string& text) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (errno || end == text.c_str() || text[0] == '-') return 0;
  std::string suffix(end);
  int shift = suffix.empty() ? 0 : suffix == "K" ? 10 : suffix == "M" ? 20 : suffix == "G" ? 30 : suffix == "T" ? 40 : -1;
  if (shift < 0 || v > (std::numeric_limits<uint64_t>::max() >> shift)) return 0;
  return static_cast<uint64_t>(v) << shift;
}

struct MemoryLimit {
  uint64_t bytes;
  const char* source;  // "" for physical memory
};

MemoryLimit read_memory_limit() {
  MemoryLimit limit{static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(sysconf(_SC_PAGE_SIZE)), ""};
  std::ifstream cgroup("/sys/fs/cgroup/memory.max");  // "max" when unlimited
  std::string text;
  if (cgroup >> text)
    if (uint64_t v = parse_size(text); v > 0 && v < limit.bytes) limit = {v, "cgroup memory.max"};
  if (const char* env = std::getenv("SPARQ_MEMORY_LIMIT")) {
    uint64_t v = parse_size(env);
    if (v == 0)
      throw ConfigError(fmt::format("SPARQ_MEMORY_LIMIT: '{}' is not a size (bytes, or a number with K, M, G or T)", env));
    if (v < limit.bytes) limit = {v, "SPARQ_MEMORY_LIMIT"};
  }
  return limit;
}

const MemoryLimit& the_memory_limit() {
  static const MemoryLimit limit = read_memory_limit();
  return limit;
}

}  // namespace

uint64_t memory_limit() { return the_memory_limit().bytes; }

std::string memory_limit_text() {
  const auto& limit = the_memory_limit();
  std::string bytes = format_bytes(static_cast<double>(limit.bytes));
  return *limit.source ? bytes + ", " + limit.source : bytes;
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (bytes >= 1024 && u < 6) bytes /= 1024, ++u;
  return u == 0 ? fmt::format("{:.0f} B", bytes) : fmt::format("{:.1f} {}", bytes, units[u]);
}

void check_memory(std::optional<int64_t> bytes, const std::string& what) {
  if (!bytes)
    throw ResourceError(fmt::format("{}: the size overflows a 64-bit count", what));
  if (static_cast<uint64_t>(*bytes) > memory_limit())
    throw ResourceError(fmt::format("{} needs {}, more than this machine's memory ({})", what,
                                    format_bytes(static_cast<double>(*bytes)), memory_limit_text()));
}

}  // namespace sparq
