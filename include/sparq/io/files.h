// Writing files so that a reader never sees half of one: the bytes go to a temporary file beside
// the target, are flushed to disk, then renamed over it. The previous file stays intact when any
// step fails (disk full, unwritable folder), and only regular files are ever replaced.
#pragma once

#include <fstream>
#include <string>

namespace sparq::io {

/// Writes `bytes` to `path` atomically. Throws sparq::Error ("cannot write PATH: reason") when the
/// target is not a regular file (a folder, a device), or the write, flush or rename fails.
void write_file_atomic(const std::string& path, const std::string& bytes);

/// `path` opened for reading, after require_regular_file; throws sparq::Error ("PATH: cannot
/// open file (reason)") when it cannot be opened.
std::ifstream open_file(const std::string& path, std::ios::openmode mode = std::ios::in);

/// The whole file (through open_file); throws sparq::Error when it cannot be read.
std::string read_file(const std::string& path);

/// Throws DataError unless `path` is a regular file: "PATH: does not exist" or "PATH: is a
/// folder, not a file" (a folder would read as an empty or failing stream).
void require_regular_file(const std::string& path);

/// An exclusive lock on a run folder (flock on FOLDER/.lock, released when the object goes or
/// the process dies), so two runs never write one folder. Throws ConfigError naming the other
/// process when the folder is locked.
class FolderLock {
 public:
  explicit FolderLock(const std::string& folder);
  ~FolderLock();
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace sparq::io
