// The sub-commands of the sparq program. Each returns the process exit code.
#pragma once

#include <string>
#include <vector>

#include "sparq/export/hls4ml.h"

namespace sparq::cli {

struct RunArgs {
  std::string job_file;  ///< empty: the built-in default job
  bool resume = false;
  std::string output;    ///< overrides the job's output folder
  std::string device;    ///< overrides training.device
  std::string cuda_graph;  ///< overrides training.cuda_graph
  std::string fused_mlp;   ///< overrides training.fused_mlp
  long long epochs = -1; ///< overrides training.epochs (epochs per round with a schedule)
  long long stop_after = -1;  ///< stop after this many epochs (resume later with --resume)
  std::vector<std::string> recipe_vars;  ///< SparseML recipe variables, name=value
};

int run_command(const RunArgs& args);

struct FixedArgs {
  int k = 1, i = 0, f = 7;
  std::string round = "RND", overflow = "SAT";
  std::vector<std::string> values;
  std::string csv, out;
  bool format_given = false;  ///< --k, --i and --f were all given (values need them: no silent defaults)
};

int fixed_command(const FixedArgs& args);

struct InspectArgs {
  std::string config;       ///< PQuantML config YAML
  std::string model;        ///< zoo name or model YAML
  std::vector<int64_t> input_shape;  ///< sample shape; default per zoo model
  long long classes = 10;
  bool yaml = false;        ///< print the config as PQuantML YAML with every field instead of the table
  bool json = false;        ///< print the resolution (module x target -> settings) as JSON
  std::vector<std::string> recipe_vars;  ///< SparseML recipe variables, name=value
  long long steps_per_epoch = 100;       ///< for a recipe's timeline
};


int inspect_command(const InspectArgs& args);

struct ConvertArgs {
  std::string config;  ///< a config file of any dialect, or a job
  std::string to;      ///< nni-v3, pquantml
};

int convert_command(const ConvertArgs& args);

struct ExportArgs {
  std::string run_dir;
  std::vector<std::string> formats;  ///< onnx, qonnx, hls4ml; default onnx
  exporting::Hls4mlOptions hls4ml;
};
int export_command(const ExportArgs& args);
struct TuneArgs {
  std::string job;
  int workers = 1;
  std::string storage, output;
  int64_t trials = -1;
  int threads = 0;
  double heartbeat = 10, grace = 30;
  std::string worker_name;  ///< set for the worker processes of --workers N
};
int tune_command(const TuneArgs& args);
struct VerifyArgs {
  std::string run_dir;
};
/// Exit 0 when ONNX Runtime agrees (no prediction differs, logits within one output LSB), 3 when not.
int verify_command(const VerifyArgs& args);
struct ReportArgs {
  std::vector<std::string> run_dirs;
  std::string out;  ///< default: RUN/report.html for one run, ./report.html for several
};
int report_command(const ReportArgs& args);
/// `sparq config default METHOD`: PQuantML's packaged config of a pruning method.
int config_default_command(const std::string& method);

}  // namespace sparq::cli

#include "sparq/config/dialect.h"
#include "sparq/config/sparseml.h"

namespace sparq::cli {
/// The LoadOptions of `--recipe-var` values; throws ConfigError for a malformed one.
inline config::LoadOptions load_options(const std::vector<std::string>& recipe_vars) {
  config::LoadOptions o;
  for (const auto& v : recipe_vars) config::parse_recipe_variable(v, o.recipe_variables);
  return o;
}
}  // namespace sparq::cli
