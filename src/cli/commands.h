// The sub-commands of the sparq program. Each returns the process exit code.
#pragma once

#include <string>

namespace sparq::cli {

struct RunArgs {
  std::string job_file;  ///< empty: the built-in default job
  bool resume = false;
  std::string output;    ///< overrides the job's output folder
  std::string device;    ///< overrides training.device
  long long epochs = -1; ///< overrides training.epochs
};

int run_command(const RunArgs& args);

}  // namespace sparq::cli
