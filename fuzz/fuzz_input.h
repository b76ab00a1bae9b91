// Shared by the fuzz targets: the readers take paths, so each input is written to a file of the
// target's own; a sparq::Error (bad input, said on one line) is the expected end, anything else
// (another exception, a crash, a sanitizer report) is a bug libFuzzer reports.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "sparq/error.h"

namespace sparq::fuzz {

/// A folder of this process for the input files (TMPDIR or /tmp).
inline const std::filesystem::path& work_dir() {
  static const std::filesystem::path dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    auto d = std::filesystem::path(tmp && *tmp ? tmp : "/tmp") / ("sparq-fuzz-" + std::to_string(getpid()));
    std::filesystem::create_directories(d);
    // Every allocation is checked against this limit (below libFuzzer's 2 GB rss limit), so a
    // large declared size must be refused by sparq's checks rather than end the fuzzer.
    setenv("SPARQ_MEMORY_LIMIT", "512M", 1);
    return d;
  }();
  return dir;
}

/// Writes the input to work_dir()/name and returns the path.
inline std::string input_file(const uint8_t* data, size_t size, const std::string& name) {
  auto path = (work_dir() / name).string();
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data),
                                                                static_cast<std::streamsize>(size));
  return path;
}

/// Runs `read`; a sparq::Error or a filesystem error (the user's paths) is a correct answer.
template <class F>
void expect_clean_end(F&& read) {
  try {
    read();
  } catch (const sparq::Error&) {
  } catch (const std::filesystem::filesystem_error&) {
  }
}

}  // namespace sparq::fuzz
