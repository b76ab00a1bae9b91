// The sparq program: thin wrapper over the library. Every bad input ends in one line on stderr
// and exit code 2.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <cstdint>
#include <string>

#include "cli/commands.h"
#include "sparq/config/pquant.h"
#include "sparq/error.h"
#include "sparq/limits.h"
#include "sparq/yaml/reader.h"

namespace {

/// A whole number in [min, max], checked on the text: CLI11's own conversion saturates numbers
/// too large for the type instead of refusing them.
CLI::Validator whole_number(int64_t min, int64_t max) {
  return CLI::Validator(
      [min, max](std::string& text) -> std::string {
        int64_t value = 0;
        const char* end = text.data() + text.size();
        auto [stop, ec] = std::from_chars(text.data(), end, value);
        if (text.empty() || ec != std::errc() || stop != end || value < min || value > max)
          return fmt::format("'{}' is not a whole number from {} to {}", text, min, max);
        return "";
      },
      fmt::format("in [{}, {}]", min, max));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sparq: pruning and quantization-aware training for hardware"};
  app.set_version_flag("--version", fmt::format("sparq {} (LibTorch {})", SPARQ_VERSION, TORCH_VERSION));
  app.require_subcommand(1);

  sparq::cli::RunArgs run;
  auto* run_cmd = app.add_subcommand("run", "Train a job (the built-in default job without JOB)");
  run_cmd->add_option("job", run.job_file, "Job YAML file");
  run_cmd->add_flag("--resume", run.resume, "Continue from the run folder's checkpoint");
  run_cmd->add_option("--output", run.output, "Run folder (default: the job's output, runs/<name>)");
  run_cmd->add_option("--device", run.device, "auto, cpu, cuda or cuda:N (overrides the job)");
  run_cmd->add_option("--cuda-graph", run.cuda_graph, "auto, on or off: replay CUDA steps as a graph (overrides the job)")
      ->check(CLI::IsMember({"auto", "on", "off"}));
  run_cmd->add_option("--fused-mlp", run.fused_mlp,
                      "auto, on or off: train a Dense/ReLU/quantizer chain in the fused MLP kernels (overrides the job)")
      ->check(CLI::IsMember({"auto", "on", "off"}));
  run_cmd->add_option("--epochs", run.epochs, "Number of epochs (overrides the job; epochs per round with a schedule)")
      ->check(whole_number(0, sparq::kMaxEpochs));
  run_cmd->add_option("--stop-after", run.stop_after, "Stop after this many epochs; continue later with --resume")
      ->check(whole_number(1, sparq::kMaxEpochs));
  run_cmd->add_option("--recipe-var", run.recipe_vars, "Set a SparseML recipe variable: name=value (repeatable)");

  sparq::cli::InspectArgs inspect;
  sparq::cli::TuneArgs tune;
  auto* tune_cmd = app.add_subcommand("tune", "Run the job's study (search: or hpo_parameters): trials into an Optuna study");
  tune_cmd->add_option("job", tune.job, "Job file with a search section")->required();
  tune_cmd->add_option("--workers", tune.workers, "Trial processes on this machine (default 1)");
  tune_cmd->add_option("--storage", tune.storage, "sqlite:///PATH (default RUN_DIR/study.db) or postgresql://user@host:port/db");
  tune_cmd->add_option("--output", tune.output, "The study's folder (default runs/<experiment_name>)");
  tune_cmd->add_option("--trials", tune.trials, "Trials this command runs (default: the search's num_trials)")->check(CLI::Range(int64_t(0), int64_t(1000000)));
  tune_cmd->add_option("--threads", tune.threads, "CPU threads per trial (default: the cores shared by the workers)")->check(CLI::Range(0, 1024));
  tune_cmd->add_option("--heartbeat", tune.heartbeat, "Seconds between a running trial's heartbeats (default 10)");
  tune_cmd->add_option("--grace", tune.grace, "Seconds without a heartbeat before a trial fails as its worker's death (default 30)");
  tune_cmd->add_option("--worker-name", tune.worker_name, "(internal) the name of a worker process")->group("");

  auto* inspect_cmd = app.add_subcommand(
      "inspect", "Show what a compression config resolves to on a model, or the formats a run ended with");
  inspect_cmd->add_option("config", inspect.config,
                          "Compression config (PQuantML YAML), a job file with compression:, or a run folder")
      ->required();
  inspect_cmd->add_option("--model", inspect.model, "Zoo model name or model YAML (with a config)");
  inspect_cmd->add_option("--input-shape", inspect.input_shape, "Sample shape, e.g. 1,28,28 (default per zoo model)")
      ->delimiter(',');
  inspect_cmd->add_option("--classes", inspect.classes, "Outputs of a zoo model (default 10; jet_tagger 5)")
      ->check(whole_number(1, 1 << 20));
  inspect_cmd->add_flag("--yaml", inspect.yaml, "Print the config (every field) as PQuantML YAML");
  inspect_cmd->add_flag("--json", inspect.json, "Print every module and target with its quantizer and pruning, and the schedule, as JSON");
  inspect_cmd->add_option("--recipe-var", inspect.recipe_vars, "Set a SparseML recipe variable: name=value (repeatable)");
  inspect_cmd->add_option("--steps-per-epoch", inspect.steps_per_epoch, "Steps per epoch of a recipe's timeline (default 100)")
      ->check(whole_number(1, 1000000));

  std::string method;
  sparq::cli::ExportArgs export_args;
  auto* export_cmd = app.add_subcommand(
      "export", "Write a finished run's model as ONNX (model.onnx), QONNX (model_qonnx.onnx) or for hls4ml "
                "(model_hls4ml.onnx + hls4ml.yaml)");
  export_cmd->add_option("run", export_args.run_dir, "Run folder")->required();
  export_cmd->add_option("--format", export_args.formats, "onnx (default), qonnx or hls4ml; repeatable")
      ->check(CLI::IsMember({"onnx", "qonnx", "hls4ml"}));
  auto& hls = export_args.hls4ml;
  export_cmd->add_option("--backend", hls.backend, "hls4ml: Vivado, Vitis (default), Quartus, oneAPI, Catapult");
  export_cmd->add_option("--part", hls.part, "hls4ml: the FPGA part (default xcvu13p-flga2577-2-e)");
  export_cmd->add_option("--clock-period", hls.clock_period, "hls4ml: ns (default 5)");
  export_cmd->add_option("--io-type", hls.io_type, "hls4ml: io_parallel (default) or io_stream");
  export_cmd->add_option("--strategy", hls.strategy, "hls4ml: Latency (default) or Resource");
  export_cmd->add_option("--reuse-factor", hls.reuse_factor, "hls4ml: multipliers shared per product (default 1)");
  export_cmd->add_option("--project-name", hls.project_name, "hls4ml: the HLS project (default: the job's name)");
  export_cmd->add_option("--output-dir", hls.output_dir, "hls4ml: where hls4ml writes the project (default hls4ml_prj)");
  sparq::cli::VerifyArgs verify;
  auto* verify_cmd = app.add_subcommand(
      "verify", "Run a finished run's model.onnx in ONNX Runtime and compare it with sparq's evaluation on the test split");
  verify_cmd->add_option("run", verify.run_dir, "Run folder")->required();

  sparq::cli::ReportArgs report;
  auto* report_cmd = app.add_subcommand(
      "report", "Write a run's report.html again, or compare several runs (accuracy against EBOPs, Pareto front)");
  report_cmd->add_option("runs", report.run_dirs, "Run folders")->required();
  report_cmd->add_option("--out", report.out, "Output HTML file (default: RUN/report.html; ./report.html for several runs)");

  auto* config_cmd = app.add_subcommand("config", "Config files");
  auto* default_cmd = config_cmd->add_subcommand("default", "Print PQuantML's packaged config of a pruning method");
  default_cmd->add_option("method", method, "cs, dst, pdp, wanda, autosparse, activation_pruning, mdmm, fitcompress")
      ->required();
  auto* keys_cmd = config_cmd->add_subcommand("keys", "Print every PQuantML config key (default, meaning, what sparq does) as a Markdown table");
  config_cmd->require_subcommand(1);

  sparq::cli::ConvertArgs convert;
  auto* convert_cmd = app.add_subcommand("convert", "Print a config in another dialect (NNI v2 -> v3, ...)");
  convert_cmd->add_option("config", convert.config, "Config file (any dialect) or job")->required();
  convert_cmd->add_option("--to", convert.to, "nni-v3 or pquantml")->required();

  sparq::cli::FixedArgs fixed;
  auto* fixed_cmd = app.add_subcommand("fixed", "Fixed-point calculator: what values become in ap_fixed<W,I,Q,O>");
  fixed_cmd->add_option("values", fixed.values, "Values to quantize")->allow_extra_args();
  auto* k_opt = fixed_cmd->add_option("--k", fixed.k, "1 = signed, 0 = unsigned")->check(CLI::Range(0, 1));
  auto* i_opt = fixed_cmd->add_option("--i", fixed.i, "Integer bits, without the sign bit");
  auto* f_opt = fixed_cmd->add_option("--f", fixed.f, "Fractional bits");
  fixed_cmd->add_option("--round", fixed.round, "TRN, TRN_ZERO, RND, RND_ZERO, RND_INF, RND_MIN_INF, RND_CONV");
  fixed_cmd->add_option("--overflow", fixed.overflow, "SAT, SAT_SYM, WRAP, WRAP_SM");
  fixed_cmd->add_option("--csv", fixed.csv, "CSV with columns x,k,i,f,round,overflow: adds a 'quantized' column");
  fixed_cmd->add_option("--out", fixed.out, "Output CSV (default: standard output)");

  // An unknown command is named (CLI11 alone says "A subcommand is required").
  if (argc > 1 && argv[1][0] != '-') {
    std::vector<std::string> commands;
    for (const auto* sub : app.get_subcommands([](const CLI::App*) { return true; })) commands.push_back(sub->get_name());
    if (std::find(commands.begin(), commands.end(), argv[1]) == commands.end()) {
      fmt::print(stderr, "sparq: error: unknown command '{}', did you mean '{}'? (commands: {}; see sparq --help)\n",
                 argv[1], sparq::yaml::nearest(argv[1], commands), fmt::join(commands, ", "));
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string msg = e.what();
    fmt::print(stderr, "sparq: error: {} (see sparq --help)\n", msg);
    return 2;
  }
  try {
    if (run_cmd->parsed()) return sparq::cli::run_command(run);
    if (tune_cmd->parsed()) return sparq::cli::tune_command(tune);
    if (fixed_cmd->parsed()) {
      fixed.format_given = k_opt->count() && i_opt->count() && f_opt->count();
      return sparq::cli::fixed_command(fixed);
    }
    if (inspect_cmd->parsed()) return sparq::cli::inspect_command(inspect);
    if (convert_cmd->parsed()) return sparq::cli::convert_command(convert);
    if (export_cmd->parsed()) return sparq::cli::export_command(export_args);
    if (verify_cmd->parsed()) return sparq::cli::verify_command(verify);
    if (report_cmd->parsed()) return sparq::cli::report_command(report);
    if (default_cmd->parsed()) return sparq::cli::config_default_command(method);
    if (keys_cmd->parsed()) {
      fmt::print("{}", sparq::config::pquant_keys_markdown());
      return 0;
    }
  } catch (const sparq::Error& e) {
    fmt::print(stderr, "sparq: error: {}\n", e.what());
    return 2;
  } catch (const std::filesystem::filesystem_error& e) {
    // A path that is a file where a folder must be, a name too long...: the user's paths, not a bug.
    std::string what = e.what(), prefix = "filesystem error: ";
    if (what.rfind(prefix, 0) == 0) what = what.substr(prefix.size());
    if (auto bracket = what.find(" ["); bracket != std::string::npos) what.resize(bracket);
    fmt::print(stderr, "sparq: error: {}: {}\n", e.path1().string(), what);
    return 2;
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    fmt::print(stderr, "sparq: internal error: {}\n", msg.substr(0, msg.find('\n')));
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "sparq: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
