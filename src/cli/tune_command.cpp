// `sparq tune JOB [--workers N] [--storage URL]`: the study of the job's search section. With
// --workers N, N processes of this program (`--worker`) run the trials, sharing the study through
// its storage; this one waits, then prints the study. See docs/search.md.
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <thread>

#include "cli/commands.h"
#include "sparq/error.h"
#include "sparq/io/files.h"

#ifdef SPARQ_WITH_TUNE
#include "sparq/report/report.h"
#include "sparq/tune/sampler.h"
#include "sparq/tune/tune.h"
#endif

namespace sparq::cli {

namespace fs = std::filesystem;

#ifdef SPARQ_WITH_TUNE
namespace {

std::atomic<bool> stop_requested{false};
std::atomic<int> stop_signal{0};
extern "C" void on_tune_signal(int sig) {
  stop_requested = true;
  stop_signal = sig;
  std::signal(sig, SIG_DFL);  // a second signal ends the process at once
}

std::string params_text(const tune::StudySpec& spec, const std::vector<nlohmann::json>& values) {
  std::string s;
  for (size_t p = 0; p < spec.params.size() && p < values.size(); ++p) {
    const auto& v = values[p];
    s += fmt::format("{}{}={}", s.empty() ? "" : " ", spec.params[p].name,
                     v.is_number_float() ? fmt::format("{:.4g}", v.get<double>()) : v.is_string() ? v.get<std::string>() : v.dump());
  }
  return s;
}
std::string values_text(const tune::StudySpec& spec, const std::vector<double>& values) {
  std::string s;
  for (size_t o = 0; o < spec.objectives.size() && o < values.size(); ++o)
    s += fmt::format("{}{} {:.6g}", s.empty() ? "" : "  ", spec.objectives[o].name, values[o]);
  return s;
}

class Console : public tune::TuneObserver {
 public:
  Console(const tune::StudySpec& spec, std::string prefix) : spec_(spec), prefix_(std::move(prefix)) {}
  void on_trial_start(int64_t number, const std::vector<nlohmann::json>& params) override {
    fmt::print("{}trial {} started: {}\n", prefix_, number, params_text(spec_, params));
    std::fflush(stdout);
  }
  void on_trial_end(const tune::TrialReport& r) override {
    std::string outcome = r.state == tune::TrialState::Complete ? values_text(spec_, r.values) : r.message;
    fmt::print("{}trial {} {}: {}  ({}; {:.1f} s)\n", prefix_, r.number, tune::to_string(r.state), outcome, params_text(spec_, r.params),
               r.seconds);
    std::fflush(stdout);
  }

 private:
  const tune::StudySpec& spec_;
  std::string prefix_;
};

/// The study at the end: every trial, the best trial or the Pareto front, best_job.yaml, and the
/// front drawn over the trials' runs (report.html in the study folder).
void print_study(const config::Job& job, const tune::StudySpec& spec, const tune::TuneOptions& options) {
  tune::Storage storage(tune::storage_url(spec, options));
  std::vector<bool> maximize;
  for (const auto& o : spec.objectives) maximize.push_back(o.maximize);
  const int64_t study = storage.study(spec.experiment_name, maximize);
  auto trials = storage.trials(study);
  int64_t counts[5] = {0, 0, 0, 0, 0};
  for (const auto& t : trials) ++counts[static_cast<int>(t.state)];
  fmt::print("\nstudy '{}' in {}: {} trials ({} complete, {} pruned, {} failed, {} running)\n", spec.experiment_name,
             tune::storage_url(spec, options), trials.size(), counts[1], counts[2], counts[3], counts[0]);
  auto best = tune::best_trials(trials, maximize);
  if (best.empty()) {
    fmt::print("no trial completed\n");
    return;
  }
  fmt::print("{}:\n", maximize.size() == 1 ? "best trial" : fmt::format("Pareto front ({} trials)", best.size()));
  std::string header = "  trial";
  for (const auto& o : spec.objectives) header += fmt::format("  {:>14}", o.name + (o.maximize ? " ^" : " v"));
  fmt::print("{}  params\n", header);
  for (const auto& t : best) {
    std::string line = fmt::format("  {:>5}", t.number);
    for (double v : t.values) line += fmt::format("  {:>14.6g}", v);
    fmt::print("{}  {}\n", line, params_text(spec, tune::trial_values(spec, t)));
  }
  const auto dir = tune::study_dir(spec, options);
  const auto best_job = (fs::path(dir) / "best_job.yaml").string();
  io::write_file_atomic(best_job, tune::job_of_trial(job, spec, best[0], (fs::path(dir) / "best").string()));
  fmt::print("best job (trial {}): {}  (sparq run {})\n", best[0].number, best_job, best_job);
  std::vector<std::string> runs;
  for (const auto& t : trials)
    if (t.state == tune::TrialState::Complete && t.user_attrs.contains("run_dir") &&
        fs::exists(fs::path(t.user_attrs["run_dir"].get<std::string>()) / "metrics.jsonl"))
      runs.push_back(t.user_attrs["run_dir"].get<std::string>());
  if (runs.size() >= 2) {
    try {
      const auto page = (fs::path(dir) / "report.html").string();
      io::write_file_atomic(page, report::comparison_report_html(runs));
      fmt::print("report: {} (the trials against each other, with the Pareto front)\n", page);
    } catch (const Error& e) {
      fmt::print("report: not written: {}\n", e.what());
    }
  }
}

}  // namespace

int tune_command(const TuneArgs& args) {
  if (args.workers < 1 || args.workers > 256) throw ConfigError(fmt::format("--workers: {} must be in 1..256", args.workers));
  auto job = config::load_job(args.job);
  auto spec = tune::load_study_spec(job);
  try {
    tune::make_sampler(spec);  // what the sampler cannot search, before any trial
  } catch (const ConfigError& e) {
    std::string msg = e.what();
    throw ConfigError(msg.rfind(job.file, 0) == 0 || msg.find(".yaml:") != std::string::npos ? msg : job.file + ": " + msg);
  }
  tune::TuneOptions options;
  options.storage = args.storage, options.output = args.output, options.trials = args.trials, options.threads = args.threads;
  options.heartbeat_seconds = args.heartbeat, options.grace_seconds = args.grace, options.worker = args.worker_name;
  if (!(options.heartbeat_seconds > 0)) throw ConfigError("--heartbeat: the interval must be positive (seconds)");
  if (!(options.grace_seconds > options.heartbeat_seconds))
    throw ConfigError(fmt::format("--grace: {} s must be longer than the heartbeat interval ({} s)", options.grace_seconds,
                                  options.heartbeat_seconds));
  const int64_t total = options.trials >= 0 ? options.trials : spec.num_trials;
  std::signal(SIGINT, on_tune_signal);
  std::signal(SIGTERM, on_tune_signal);
  if (args.workers == 1 || !args.worker_name.empty()) {
    if (args.worker_name.empty())
      fmt::print("sparq {}: study '{}' ({}, {} trial(s), {}), storage {}\n", SPARQ_VERSION, spec.experiment_name, spec.sampler, total,
                 spec.objectives.size() == 1 ? "1 objective" : fmt::format("{} objectives", spec.objectives.size()),
                 tune::storage_url(spec, options));
    Console console(spec, args.worker_name.empty() ? "" : "[" + args.worker_name + "] ");
    tune::run_trials(job, spec, options, console, stop_requested);
    if (stop_requested) {
      fmt::print(stderr, "sparq: interrupted: the running trial is FAIL (interrupted); the study stays consistent\n");
      return 128 + stop_signal.load();
    }
    if (args.worker_name.empty()) print_study(job, spec, options);
    return 0;
  }
  // Several workers: each a process of this program with its share of the trials and of the cores.
  fs::create_directories(tune::study_dir(spec, options));
  {
    tune::Storage storage(tune::storage_url(spec, options));  // the study exists before the workers start
    std::vector<bool> maximize;
    for (const auto& o : spec.objectives) maximize.push_back(o.maximize);
    storage.study(spec.experiment_name, maximize);
  }
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = options.threads > 0 ? options.threads : std::max(1, cores / args.workers);
  fmt::print("sparq {}: study '{}' ({}, {} trial(s)) on {} workers of {} thread(s), storage {}\n", SPARQ_VERSION, spec.experiment_name,
             spec.sampler, total, args.workers, threads, tune::storage_url(spec, options));
  std::fflush(stdout);
  std::vector<pid_t> children;
  for (int w = 0; w < args.workers; ++w) {
    const int64_t share = total / args.workers + (w < total % args.workers ? 1 : 0);
    if (share == 0) continue;
    std::vector<std::string> argv = {"sparq", "tune", args.job, "--worker-name", fmt::format("w{}", w + 1), "--trials",
                                     std::to_string(share), "--storage", tune::storage_url(spec, options), "--output",
                                     tune::study_dir(spec, options), "--threads", std::to_string(threads), "--heartbeat",
                                     fmt::format("{}", options.heartbeat_seconds), "--grace", fmt::format("{}", options.grace_seconds)};
    pid_t pid = fork();
    if (pid < 0) throw Error("tune: cannot start a worker process (fork failed)");
    if (pid == 0) {
      std::vector<char*> c;
      for (auto& a : argv) c.push_back(a.data());
      c.push_back(nullptr);
      execv("/proc/self/exe", c.data());
      _exit(127);
    }
    children.push_back(pid);
  }
  int failed = 0, interrupted = 0;
  bool forwarded = false;
  for (size_t left = children.size(); left > 0;) {
    int status = 0;
    pid_t done = waitpid(-1, &status, WNOHANG);
    if (done <= 0) {
      if (stop_requested && !forwarded) {  // Ctrl-C reaches the group anyway; a SIGTERM to this process may not
        for (pid_t p : children) kill(p, SIGINT);
        forwarded = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    --left;
    if (WIFEXITED(status) && WEXITSTATUS(status) >= 128) ++interrupted;
    else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
  }
  if (stop_requested || interrupted) {
    fmt::print(stderr, "sparq: interrupted: the workers' running trials are FAIL (interrupted); the study stays consistent\n");
    return 128 + (stop_signal.load() ? stop_signal.load() : SIGINT);
  }
  if (failed) fmt::print(stderr, "sparq: warning: {} worker(s) ended abnormally; their running trials fail once stale\n", failed);
  print_study(job, spec, options);
  return 0;
}
#else
int tune_command(const TuneArgs&) { throw MissingFeatureError("tune", "study storage", "libsqlite3-dev"); }
#endif

}  // namespace sparq::cli
