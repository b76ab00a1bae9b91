#include "sparq/io/files.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "sparq/error.h"

namespace sparq::io {

void write_file_atomic(const std::string& path, const std::string& bytes) {
  namespace fs = std::filesystem;
  auto fail = [&](const std::string& why) { throw Error(fmt::format("cannot write {}: {}", path, why)); };
  std::error_code ec;
  auto status = fs::status(path, ec);
  if (fs::exists(status) && !fs::is_regular_file(status)) fail("it exists and is not a regular file");
  fs::path target(path);
  fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  if (!fs::is_directory(dir, ec)) fail(fmt::format("the folder '{}' does not exist", dir.string()));
  std::string tmp = (dir / ("." + target.filename().string() + ".tmp-XXXXXX")).string();
  int fd = ::mkstemp(tmp.data());
  if (fd < 0) fail(std::strerror(errno));
  auto abandon = [&](const std::string& why) {
    ::close(fd);
    ::unlink(tmp.c_str());
    fail(why);
  };
  for (size_t done = 0; done < bytes.size();) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      abandon(std::strerror(errno));
    }
    done += static_cast<size_t>(n);
  }
  if (::fchmod(fd, 0644) != 0 || ::fsync(fd) != 0) abandon(std::strerror(errno));
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    fail(std::strerror(errno));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    fail(std::strerror(err));
  }
}

std::ifstream open_file(const std::string& path, std::ios::openmode mode) {
  require_regular_file(path);
  std::ifstream in(path, mode);
  if (!in) throw Error(fmt::format("{}: cannot open file ({})", path, std::strerror(errno)));
  return in;
}

std::string read_file(const std::string& path) {
  std::ifstream in = open_file(path, std::ios::in | std::ios::binary);
  std::string text(std::istreambuf_iterator<char>(in), {});
  if (in.bad()) throw Error(fmt::format("{}: cannot read the file", path));
  return text;
}

void require_regular_file(const std::string& path) {
  std::error_code ec;
  auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) throw DataError(fmt::format("{}: does not exist", path));
  if (std::filesystem::is_directory(status)) throw DataError(fmt::format("{}: is a folder, not a file", path));
  if (!std::filesystem::is_regular_file(status)) throw DataError(fmt::format("{}: is not a regular file", path));
}

FolderLock::FolderLock(const std::string& folder) {
  const std::string path = (std::filesystem::path(folder) / ".lock").string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(fmt::format("cannot write {}: {}", path, std::strerror(errno)));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {0};
    ssize_t n = ::pread(fd_, pid, sizeof pid - 1, 0);
    ::close(fd_);
    fd_ = -1;
    std::string who = n > 0 ? fmt::format(" (pid {})", std::string(pid, static_cast<size_t>(n))) : "";
    throw ConfigError(fmt::format("{}: another sparq run is using this run folder{}; wait for it to end or give another "
                                  "output folder",
                                  folder, who));
  }
  std::string me = std::to_string(::getpid());
  if (::ftruncate(fd_, 0) == 0) (void)!::pwrite(fd_, me.data(), me.size(), 0);
}

FolderLock::~FolderLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the lock
}

}  // namespace sparq::io
