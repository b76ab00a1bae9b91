// A full disk while a run writes its checkpoint or model: exit 2 with one line naming the file,
// the previous checkpoint intact, no temporary file left (a private tiny tmpfs; needs root).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/mount.h>

#include <fstream>

#include "test_util.h"

using namespace sparq::test;

namespace {

/// A tmpfs of `bytes` mounted on a fresh folder, unmounted at the end; mounted() false without
/// the privilege to mount.
class TinyDisk {
 public:
  explicit TinyDisk(size_t bytes) : dir_("tinyfs") {
    mounted_ = ::mount("tmpfs", dir_.path().c_str(), "tmpfs", 0, fmt::format("size={}", bytes).c_str()) == 0;
  }
  ~TinyDisk() {
    if (mounted_) ::umount2(dir_.path().c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  std::string file(const std::string& name) const { return dir_.file(name); }
  /// Fills the disk up to `free_left` bytes.
  void fill(size_t free_left) const {
    std::ofstream out(dir_.file("filler"), std::ios::binary);
    std::string block(4096, 'x');
    while (out.write(block.data(), block.size())) {
    }
    out.close();
    auto size = std::filesystem::file_size(dir_.file("filler"));
    std::filesystem::resize_file(dir_.file("filler"), size > free_left ? size - free_left : 0);
  }

 private:
  TempDir dir_;
  bool mounted_ = false;
};

}  // namespace

TEST(DiskFull, CheckpointAndModelWritesFailCleanly) {
  TinyDisk disk(4 << 20);
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (needs root)";
  TempDir jobs("disk_full_jobs");
  write_file(jobs.file("job.yaml"), fmt::format(R"(
model: {{zoo: mlp, widths: [128, 128]}}
data: {{dataset: random, shape: [16], samples: 256, num_classes: 5}}
training: {{epochs: 2, batch_size: 64}}
output: {}
)", disk.file("run")));
  auto first = run_sparq("run " + jobs.file("job.yaml") + " --stop-after 1");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const auto checkpoint = read_text(disk.file("run/checkpoint.pt")), model = read_text(disk.file("run/model.pt"));
  ASSERT_GT(checkpoint.size(), 100000u);  // ~ 19k parameters with Adam's state
  disk.fill(20000);                       // far less than the next checkpoint needs
  auto resumed = run_sparq("run " + jobs.file("job.yaml") + " --resume");
  EXPECT_EQ(resumed.exit_code, 2) << resumed.output;
  EXPECT_NE(resumed.output.find("sparq: error: cannot write " + disk.file("run/checkpoint.pt") + ": No space left on device"),
            std::string::npos)
      << resumed.output;
  EXPECT_EQ(read_text(disk.file("run/checkpoint.pt")), checkpoint);  // the previous one, byte for byte
  EXPECT_EQ(read_text(disk.file("run/model.pt")), model);
  for (const auto& e : std::filesystem::directory_iterator(disk.file("run")))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}
