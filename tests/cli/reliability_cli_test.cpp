// The run folder under stress: a second run into a folder in use is refused, SIGINT/SIGTERM end a
// run with 130/143 and a checkpoint that --resume continues to the uninterrupted result, an
// unknown command is named (docs/reliability.md).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include "test_util.h"

using namespace sparq::test;

namespace {

std::string slow_job(const std::string& output, int epochs) {
  return fmt::format("model: {{zoo: mlp, widths: [64]}}\ndata: {{dataset: random, shape: [16], samples: 16384, num_classes: 5}}\n"
                     "training: {{epochs: {}, batch_size: 32, seed: 3}}\noutput: {}\n",
                     epochs, output);
}

/// A shell loop that waits for a run folder's first checkpoint: up to 120 s (under ctest -j8 on a
/// busy machine the first epoch can take tens of seconds).
std::string wait_for_checkpoint(const std::string& run_dir) {
  return fmt::format("for i in $(seq 1 2400); do [ -f {}/checkpoint.pt ] && break; sleep 0.05; done; ", run_dir);
}

/// Starts `sparq run JOB`, waits until the run folder has a checkpoint, sends `sig`, and returns
/// the run's exit status and output.
CommandResult run_and_signal(const std::string& job, const std::string& run_dir, const char* sig) {
  std::string script = fmt::format(
      "{0} run {1} > {2}.log 2>&1 & pid=$!; {4}"
      "kill -{3} $pid; wait $pid; rc=$?; cat {2}.log; exit $rc",
      SPARQ_CLI_PATH, job, run_dir, sig, wait_for_checkpoint(run_dir));
  CommandResult r{-1, ""};
  FILE* pipe = popen(("bash -c '" + script + "'").c_str(), "r");
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) r.output.append(buf, n);
  int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace

TEST(Reliability, SignalsEndTheRunAndResumeContinuesBitForBit) {
  TempDir dir("signals");
  write_file(dir.file("full.yaml"), slow_job(dir.file("full"), 6));
  auto full = run_sparq("run " + dir.file("full.yaml"));
  ASSERT_EQ(full.exit_code, 0) << full.output;
  for (const char* sig : {"TERM", "INT"}) {
    std::string run = dir.file(std::string("cut_") + sig);
    write_file(run + ".yaml", slow_job(run, 6));
    auto cut = run_and_signal(run + ".yaml", run, sig);
    EXPECT_EQ(cut.exit_code, std::string(sig) == "TERM" ? 143 : 130) << cut.output;
    EXPECT_NE(cut.output.find(fmt::format("sparq: interrupted by SIG{}: {}/checkpoint.pt holds the last finished epoch", sig, run)),
              std::string::npos)
        << cut.output;
    auto resumed = run_sparq("run " + run + ".yaml --resume");
    ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
    auto a = metrics_of(dir.file("full")), b = metrics_of(run);
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(a.back()["train_loss"], b.back()["train_loss"]) << sig;
    EXPECT_EQ(a.back()["eval_accuracy"], b.back()["eval_accuracy"]) << sig;
    EXPECT_EQ(read_text(dir.file("full/model.pt")).size(), read_text(run + "/model.pt").size());
  }
}

TEST(Reliability, ASecondRunIntoAFolderInUseIsRefused) {
  TempDir dir("lock");
  write_file(dir.file("job.yaml"), slow_job(dir.file("run"), 400));
  std::string script = fmt::format(
      "{0} run {1} > /dev/null 2>&1 & pid=$!; {2}"
      "{0} run {1} 2>&1; rc=$?; kill -9 $pid; wait $pid 2>/dev/null; exit $rc",
      SPARQ_CLI_PATH, dir.file("job.yaml"), wait_for_checkpoint(dir.file("run")));
  FILE* pipe = popen(("bash -c '" + script + "'").c_str(), "r");
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  int status = pclose(pipe);
  EXPECT_EQ(WIFEXITED(status) ? WEXITSTATUS(status) : -1, 2) << out;
  EXPECT_NE(out.find("sparq: error: " + dir.file("run") + ": another sparq run is using this run folder (pid "), std::string::npos)
      << out;
  // The first run was killed with -9: its lock went with it, and the folder resumes.
  auto resumed = run_sparq("run " + dir.file("job.yaml") + " --resume --stop-after 1");
  EXPECT_EQ(resumed.exit_code, 0) << resumed.output;
}

TEST(Reliability, AnUnknownCommandIsNamed) {
  auto r = run_sparq("frobnicate");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("unknown command 'frobnicate'"), std::string::npos) << r.output;
  auto near = run_sparq("expor RUN");
  EXPECT_NE(near.output.find("did you mean 'export'?"), std::string::npos) << near.output;
}

TEST(Reliability, OutputAndDataPathsOfTheWrongKindAreOneLineErrors) {
  TempDir dir("paths");
  write_file(dir.file("afile"), "x");
  std::filesystem::create_directories(dir.file("x.npy"));
  std::filesystem::create_directories(dir.file("run_with_folder/model.pt"));
  struct Case { std::string job, expect; };
  const std::string data = "data: {dataset: random, shape: [4], samples: 16, num_classes: 2}\ntraining: {epochs: 1}\n";
  for (const auto& c : {
           Case{"model: jet_tagger\n" + data + "output: " + dir.file("afile") + "\n",
                dir.file("afile") + ": cannot create directories: Not a directory"},
           Case{"model: jet_tagger\n" + data + "output: " + dir.file("afile/run") + "\n",
                dir.file("afile/run") + ": cannot create directories: Not a directory"},
           Case{"model: {zoo: mlp, widths: [4]}\n" + data + "output: " + dir.file("run_with_folder") + "\n",
                dir.file("run_with_folder/model.pt") + ": exists and is not a regular file; the run writes its model.pt there"},
           Case{"model: jet_tagger\ndata: {train: {x: " + dir.file("x.npy") + ", y: " + dir.file("x.npy") + "}}\n",
                dir.file("x.npy") + ": is a folder, not a file"},
       }) {
    write_file(dir.file("job.yaml"), c.job);
    auto r = run_sparq("run " + dir.file("job.yaml"));
    EXPECT_EQ(r.exit_code, 2) << r.output;
    auto at = r.output.find("sparq: error: ");
    ASSERT_NE(at, std::string::npos) << r.output;
    EXPECT_EQ(r.output.substr(at, r.output.find('\n', at) - at), "sparq: error: " + c.expect) << r.output;
  }
  EXPECT_TRUE(std::filesystem::is_directory(dir.file("run_with_folder/model.pt")));
}

TEST(Reliability, ADamagedCheckpointIsFoundBeforeResuming) {
  TempDir dir("damaged");
  write_file(dir.file("job.yaml"), slow_job(dir.file("run"), 2));
  ASSERT_EQ(run_sparq("run " + dir.file("job.yaml") + " --stop-after 1").exit_code, 0);
  auto bytes = read_text(dir.file("run/checkpoint.pt"));
  bytes[bytes.size() / 2] ^= 0x10;  // one flipped bit inside the stored tensors
  write_file(dir.file("run/checkpoint.pt"), bytes);
  auto r = run_sparq("run " + dir.file("job.yaml") + " --resume");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("sparq: error: " + dir.file("run/checkpoint.pt") + ": the checkpoint is damaged"), std::string::npos)
      << r.output;
  // Bytes after the checksum: damaged too. Without the trailer (a checkpoint of an earlier
  // version, ending in the archive's last record) it resumes.
  bytes[bytes.size() / 2] ^= 0x10;
  write_file(dir.file("run/checkpoint.pt"), bytes + "x");
  r = run_sparq("run " + dir.file("job.yaml") + " --resume");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("the checkpoint is damaged (it ends neither in its checksum"), std::string::npos) << r.output;
  write_file(dir.file("run/checkpoint.pt"), bytes.substr(0, bytes.size() - 20));
  r = run_sparq("run " + dir.file("job.yaml") + " --resume");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // A fuzz finding with a valid checksum: records LibTorch's TorchScript reader rejects with a
  // std::runtime_error (it was exit 1).
  std::string found = read_text(std::string(SPARQ_SOURCE_DIR) + "/fuzz/regressions/checkpoint/torchscript-type-parser-runtime-error");
  auto crc = static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(found.data()), static_cast<uInt>(found.size())));
  write_file(dir.file("run/checkpoint.pt"), found + fmt::format("sparq-crc32:{:08x}", crc));
  r = run_sparq("run " + dir.file("job.yaml") + " --resume");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("checkpoint.pt: not a checkpoint sparq can read"), std::string::npos) << r.output;
}

TEST(Reliability, ModelsThatDoNotFitTheDataOrHaveEmptyWindowsAreOneLineErrors) {
  TempDir dir("mismatch");
  write_file(dir.file("wide.yaml"), "input_shape: [16]\nlayers:\n  - {name: fc, op: Linear, out_features: 3}\n");
  write_file(dir.file("rank.yaml"), "input_shape: [16]\nlayers:\n  - {name: fc, op: Linear, out_features: 5}\n"
                                     "  - {op: reshape, shape: [5, 1]}\n");
  write_file(dir.file("kernel.yaml"), "input_shape: [1, 8, 8]\nlayers:\n  - {name: c, op: Conv2d, out_channels: 2, kernel_size: 0}\n");
  write_file(dir.file("stride.yaml"), "input_shape: [1, 8, 8]\nlayers:\n  - {name: p, op: MaxPool2d, kernel_size: 2, stride: -1}\n");
  struct Case { std::string model, shape, expect; };
  for (const auto& c : {
           Case{"wide.yaml", "[16]", "wide.yaml: the model's output per sample is [3], the data needs [5] (its classes or targets)"},
           Case{"rank.yaml", "[16]", "rank.yaml: the model's output per sample is [5, 1], the data needs [5]"},
           Case{"kernel.yaml", "[1, 8, 8]", "kernel.yaml:3:5: node 'c' (Conv2d): kernel_size: 0 must be >= 1"},
           Case{"stride.yaml", "[1, 8, 8]", "stride.yaml:3:5: node 'p' (MaxPool2d): stride: -1 must be >= 1"},
       }) {
    write_file(dir.file("job.yaml"), fmt::format("model: {}\ndata: {{dataset: random, shape: {}, samples: 32, num_classes: 5}}\n"
                                                 "training: {{epochs: 1}}\noutput: {}\n",
                                                 c.model, c.shape, dir.file("run")));
    auto r = run_sparq("run " + dir.file("job.yaml"));
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("sparq: error: " + dir.file(c.expect)), std::string::npos) << r.output;
  }
}
