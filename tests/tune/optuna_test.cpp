// sparq tune with the real clients: Debian's python3-optuna opens sparq's studies (trials, params,
// values, states, directions), adds trials that sparq continues from (SQLite and a real
// PostgreSQL 15 server started on a local port), workers share one study, and a worker killed
// with SIGKILL leaves a trial that fails once its heartbeat is stale while the study goes on.
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <thread>

#include "sparq/tune/storage.h"
#include "test_util.h"

using namespace sparq;
using sparq::test::TempDir;

namespace {

bool have_optuna() { return std::system("/usr/bin/python3 -c 'import optuna' > /dev/null 2>&1") == 0; }

/// Runs a Python script (Optuna's logging quiet); its exit code and output.
test::CommandResult python(const TempDir& dir, const std::string& script) {
  test::write_file(dir.file("client.py"), "import optuna\noptuna.logging.set_verbosity(optuna.logging.ERROR)\n" + script);
  std::string cmd = fmt::format("cd {} && /usr/bin/python3 client.py 2>&1", dir.path().string());
  test::CommandResult r{-1, ""};
  FILE* pipe = popen(cmd.c_str(), "r");
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) r.output.append(buf, n);
  int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string job_text(int epochs, int samples, const std::string& search) {
  return fmt::format(R"(
name: study_job
model: mlp
data: {{dataset: random, shape: [16], samples: {}, num_classes: 4}}
training: {{epochs: {}, batch_size: 32, progress: none}}
compression:
  quantization_parameters: {{default_data_keep_negatives: 1, round_mode: RND_CONV}}
search:
{}
)",
                     samples, epochs, search);
}

const char* kSearch = R"(  experiment_name: s
  sampler: {type: TPESampler, params: {seed: 0, n_startup_trials: 2}}
  num_trials: 3
  params:
    training.lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
    training.optimizer: {type: categorical, choices: [adam, sgd]}
    compression.quantization_parameters.default_data_fractional_bits: {type: int, low: 2, high: 6}
  objectives: {eval_accuracy: maximize, ebops: minimize})";

pid_t spawn(const std::string& args) {
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    execl("/bin/sh", "sh", "-c", (std::string(SPARQ_CLI_PATH) + " " + args + " > /dev/null 2>&1").c_str(), nullptr);
    _exit(127);
  }
  return pid;
}

}  // namespace

TEST(TuneOptuna, OptunaReadsTheStudyAddsTrialsAndSparqContinues) {
  SPARQ_REQUIRE_CLIENT(have_optuna(), "python3-optuna");
  TempDir dir("tune_optuna");
  test::write_file(dir.file("job.yaml"), job_text(2, 256, kSearch));
  auto run = test::run_sparq(fmt::format("tune {} --output {}", dir.file("job.yaml"), dir.file("s")));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("Pareto front"), std::string::npos) << run.output;
  EXPECT_TRUE(std::filesystem::exists(dir.file("s/best_job.yaml")));
  // Optuna sees what sparq stored, and adds two trials of its own.
  auto py = python(dir, fmt::format(R"(
s = optuna.load_study(study_name="s", storage="sqlite:///{}")
assert [d.name for d in s.directions] == ["MAXIMIZE", "MINIMIZE"], s.directions
assert len(s.trials) == 3, len(s.trials)
for t in s.trials:
    assert t.state == optuna.trial.TrialState.COMPLETE, t.state
    assert set(t.params) == {{"training.lr", "training.optimizer", "compression.quantization_parameters.default_data_fractional_bits"}}
    assert 1e-4 <= t.params["training.lr"] <= 0.1 and t.params["training.optimizer"] in ("adam", "sgd")
    assert isinstance(t.params["compression.quantization_parameters.default_data_fractional_bits"], int)
    assert 0 <= t.values[0] <= 1 and t.values[1] > 0, t.values
    assert t.user_attrs["run_dir"].endswith("trial_%d" % t.number) and t.user_attrs["ebops"] == t.values[1]
    assert sorted(t.intermediate_values) == [1, 2], t.intermediate_values
    assert t.distributions["training.lr"] == optuna.distributions.FloatDistribution(1e-4, 0.1, log=True)
print("pareto", sorted(t.number for t in s.best_trials))
for lr in (0.01, 0.002):
    t = s.ask()
    t.suggest_float("training.lr", 1e-4, 1e-1, log=True)
    t.suggest_categorical("training.optimizer", ["adam", "sgd"])
    t.suggest_int("compression.quantization_parameters.default_data_fractional_bits", 2, 6)
    s.tell(t, [0.99, 1.0])
print("added")
)",
                                    dir.file("s/study.db")));
  ASSERT_EQ(py.exit_code, 0) << py.output;
  EXPECT_NE(py.output.find("added"), std::string::npos) << py.output;
  // sparq continues the same study: its trials are numbered after Python's, and Python's count.
  auto more = test::run_sparq(fmt::format("tune {} --output {} --trials 2", dir.file("job.yaml"), dir.file("s")));
  ASSERT_EQ(more.exit_code, 0) << more.output;
  EXPECT_NE(more.output.find("trial 5 COMPLETE"), std::string::npos) << more.output;
  EXPECT_NE(more.output.find("trial 6 COMPLETE"), std::string::npos) << more.output;
  EXPECT_NE(more.output.find("7 trials (7 complete"), std::string::npos) << more.output;
  // Python's dominating trials are the front.
  EXPECT_NE(more.output.find("Pareto front (2 trials)"), std::string::npos) << more.output;
  EXPECT_TRUE(std::regex_search(more.output, std::regex("\\n +3 +0\\.99 +1 "))) << more.output;
  auto after = python(dir, fmt::format(R"(
s = optuna.load_study(study_name="s", storage="sqlite:///{}")
print("numbers", [t.number for t in s.trials], "states", {{t.state.name for t in s.trials}})
)",
                                       dir.file("s/study.db")));
  EXPECT_NE(after.output.find("numbers [0, 1, 2, 3, 4, 5, 6] states {'COMPLETE'}"), std::string::npos) << after.output;
}

TEST(TuneOptuna, PquantmlSearchSectionRunsAsAStudy) {
  SPARQ_REQUIRE_CLIENT(have_optuna(), "python3-optuna");
  TempDir dir("tune_pquant");
  test::write_file(dir.file("job.yaml"), R"(
model: mlp
data: {dataset: random, shape: [16], samples: 128, num_classes: 4}
training: {epochs: 1, batch_size: 32, progress: none}
compression:
  pruning_parameters: {pruning_method: pdp, sparsity: 0.5, epsilon: 0.015}
  hpo_parameters:
    experiment_name: pq_grid
    sampler: {type: GridSampler}
    num_trials: 10
    hyperparameter_search:
      numerical: {sparsity: [0.5, 0.9, 0.2]}
      categorical: {optimizer: [adam, sgd]}
)");
  auto run = test::run_sparq(fmt::format("tune {} --output {}", dir.file("job.yaml"), dir.file("g")));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("6 trials (6 complete"), std::string::npos) << run.output;  // the grid is 3 x 2: then exhausted
  auto py = python(dir, fmt::format(R"(
s = optuna.load_study(study_name="pq_grid", storage="sqlite:///{}")
print(sorted((round(t.params["sparsity"], 6), t.params["optimizer"]) for t in s.trials))
print(s.direction.name, s.best_trial.number == s.best_trial.number)
)",
                                    dir.file("g/study.db")));
  ASSERT_EQ(py.exit_code, 0) << py.output;
  EXPECT_NE(py.output.find("[(0.5, 'adam'), (0.5, 'sgd'), (0.7, 'adam'), (0.7, 'sgd'), (0.9, 'adam'), (0.9, 'sgd')]"),
            std::string::npos)
      << py.output;
  EXPECT_NE(py.output.find("MAXIMIZE True"), std::string::npos) << py.output;
}

TEST(TuneOptuna, WorkersShareAStudyAndAKilledWorkersTrialFails) {
  TempDir dir("tune_workers");
  // Trials of a few seconds each, so that one can be killed while it runs.
  test::write_file(dir.file("job.yaml"), job_text(60, 4096, R"(  experiment_name: w
  sampler: {type: RandomSampler, params: {seed: 2}}
  num_trials: 4
  params:
    training.lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true})"));
  const std::string db = dir.file("w/study.db");
  pid_t victim = spawn(fmt::format("tune {} --output {} --trials 1 --heartbeat 0.5 --grace 5 --threads 1", dir.file("job.yaml"),
                                   dir.file("w")));
  // Wait for its trial to run, then kill it without a chance to clean up.
  bool running = false;
  for (int k = 0; k < 300 && !running; ++k) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!std::filesystem::exists(db)) continue;
    try {
      tune::Storage storage("sqlite:///" + db);
      auto trials = storage.trials(storage.study("w", {true}));
      running = !trials.empty() && trials[0].state == tune::TrialState::Running && trials[0].params.size() == 1;
    } catch (const std::exception&) {
    }
  }
  ASSERT_TRUE(running) << "the first worker never started its trial";
  kill(-victim, SIGKILL);
  waitpid(victim, nullptr, 0);
  // Two workers carry on with the rest; the dead worker's trial fails once its heartbeat is stale.
  std::this_thread::sleep_for(std::chrono::milliseconds(5500));
  auto rest = test::run_sparq(fmt::format("tune {} --output {} --workers 2 --trials 3 --heartbeat 0.5 --grace 5", dir.file("job.yaml"),
                                          dir.file("w")));
  ASSERT_EQ(rest.exit_code, 0) << rest.output;
  EXPECT_NE(rest.output.find("on 2 workers of 1 thread(s)"), std::string::npos) << rest.output;
  EXPECT_NE(rest.output.find("4 trials (3 complete, 0 pruned, 1 failed, 0 running)"), std::string::npos) << rest.output;
  tune::Storage storage("sqlite:///" + db);
  auto trials = storage.trials(storage.study("w", {true}));
  ASSERT_EQ(trials.size(), 4u);
  EXPECT_EQ(trials[0].state, tune::TrialState::Fail);
  std::set<std::string> workers;
  for (size_t k = 1; k < trials.size(); ++k) {
    EXPECT_EQ(trials[k].state, tune::TrialState::Complete) << k;
    workers.insert(trials[k].user_attrs.value("worker", ""));
  }
  EXPECT_EQ(workers, (std::set<std::string>{"w1", "w2"}));
}

namespace {

/// A PostgreSQL 15 server from Debian's postgresql package on a free local port, for one test.
class PostgresServer {
 public:
  explicit PostgresServer(const TempDir& dir) : data_(dir.file("pgdata")) {
    for (const char* v : {"17", "16", "15", "14", "13"})
      if (std::filesystem::exists(fmt::format("/usr/lib/postgresql/{}/bin/initdb", v))) bin_ = fmt::format("/usr/lib/postgresql/{}/bin", v);
    if (bin_.empty()) return;
    port_ = 20000 + static_cast<int>(getpid() % 20000);
    // initdb refuses root: as root the server runs as Debian's postgres user.
    as_ = geteuid() == 0 ? "runuser -u postgres -- " : "";
    std::filesystem::create_directories(data_);
    if (geteuid() == 0) std::system(fmt::format("chown postgres {} && chmod 700 {}", data_, data_).c_str());
    user_ = geteuid() == 0 ? "postgres" : std::string(getenv("USER") ? getenv("USER") : "postgres");
    ok_ = std::system(fmt::format("{}{}/initdb -D {} -U {} --auth=trust > {}.initdb.log 2>&1", as_, bin_, data_, user_, data_).c_str()) == 0 &&
          std::system(fmt::format("{}{}/pg_ctl -D {} -l {}/server.log -w -o '-p {} -k {} -c listen_addresses=127.0.0.1' start > /dev/null 2>&1",
                                  as_, bin_, data_, data_, port_, data_)
                          .c_str()) == 0;
  }
  ~PostgresServer() {
    if (ok_) std::system(fmt::format("{}{}/pg_ctl -D {} -m immediate stop > /dev/null 2>&1", as_, bin_, data_).c_str());
  }
  bool ok() const { return ok_; }
  std::string url() const { return fmt::format("postgresql://{}@127.0.0.1:{}/postgres", user_, port_); }
  std::string sqlalchemy_url() const { return fmt::format("postgresql+psycopg2://{}@127.0.0.1:{}/postgres", user_, port_); }

 private:
  std::string data_, bin_, as_, user_;
  int port_ = 0;
  bool ok_ = false;
};

bool have_psycopg2() { return std::system("/usr/bin/python3 -c 'import psycopg2' > /dev/null 2>&1") == 0; }

}  // namespace

TEST(TuneOptuna, TwoSparqWorkersAndAPythonWorkerShareAPostgresqlStudy) {
  SPARQ_REQUIRE_CLIENT(have_optuna() && have_psycopg2(), "python3-optuna and python3-psycopg2");
  TempDir dir("tune_pg");
  if (geteuid() == 0) std::system(fmt::format("chmod 755 {}", dir.path().string()).c_str());
  PostgresServer server(dir);
  SPARQ_REQUIRE_CLIENT(server.ok(), "a PostgreSQL server from Debian's postgresql (initdb, pg_ctl)");
  test::write_file(dir.file("job.yaml"), job_text(2, 256, R"(  experiment_name: pg
  sampler: {type: TPESampler, params: {seed: 1, n_startup_trials: 3}}
  num_trials: 4
  params:
    training.lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
    training.batch_size: {type: int, low: 16, high: 64, step: 16})"));
  // sparq creates the schema and the study; two sparq workers and a Python worker run trials at once.
  pid_t sparq = spawn(fmt::format("tune {} --output {} --workers 2 --storage {}", dir.file("job.yaml"), dir.file("pg"), server.url()));
  bool created = false;
  for (int k = 0; k < 300 && !created; ++k) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    try {
      tune::Storage storage(server.url());
      created = storage.study("pg", {true}) > 0;
    } catch (const std::exception&) {
    }
  }
  ASSERT_TRUE(created);
  auto py = python(dir, fmt::format(R"(
s = optuna.load_study(study_name="pg", storage="{}")
def objective(t):
    lr = t.suggest_float("training.lr", 1e-3, 1e-1, log=True)
    t.suggest_int("training.batch_size", 16, 64, step=16)
    return 0.5
s.optimize(objective, n_trials=3)
print("python done")
)",
                                    server.sqlalchemy_url()));
  int status = 0;
  waitpid(sparq, &status, 0);
  ASSERT_EQ(py.exit_code, 0) << py.output;
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  tune::Storage storage(server.url());
  auto trials = storage.trials(storage.study("pg", {true}));
  ASSERT_EQ(trials.size(), 7u);
  std::set<int64_t> numbers;
  for (const auto& t : trials) {
    EXPECT_EQ(t.state, tune::TrialState::Complete) << t.number;
    numbers.insert(t.number);
  }
  EXPECT_EQ(numbers.size(), 7u);  // unique numbers 0..6 across the three processes
  EXPECT_EQ(*numbers.rbegin(), 6);
  auto check = python(dir, fmt::format(R"(
s = optuna.load_study(study_name="pg", storage="{}")
print(len(s.trials), sorted({{t.user_attrs.get("worker", "python") for t in s.trials}}), s.direction.name)
)",
                                       server.sqlalchemy_url()));
  EXPECT_NE(check.output.find("7 ['python', 'w1', 'w2'] MAXIMIZE"), std::string::npos) << check.output;
}
