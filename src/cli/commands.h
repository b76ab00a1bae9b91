// The sub-commands of the sparq program. Each returns the process exit code.
#pragma once

#include <string>
#include <vector>

namespace sparq::cli {

struct RunArgs {
  std::string job_file;  ///< empty: the built-in default job
  bool resume = false;
  std::string output;    ///< overrides the job's output folder
  std::string device;    ///< overrides training.device
  long long epochs = -1; ///< overrides training.epochs
};

int run_command(const RunArgs& args);

struct FixedArgs {
  int k = 1, i = 0, f = 7;
  std::string round = "RND", overflow = "SAT";
  std::vector<std::string> values;
  std::string csv, out;
};

int fixed_command(const FixedArgs& args);

}  // namespace sparq::cli
