// IDX files (the MNIST family): 2 zero bytes, a type code, the number of dimensions, the
// dimensions as big-endian uint32, then the data in big-endian order. gzip or raw.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "sparq/data/dataset.h"
#include "sparq/error.h"
#include "sparq/io/files.h"
#include "sparq/limits.h"

namespace sparq::data {

namespace {

/// Reads a whole (possibly gzipped) file; zlib reads raw files transparently.
std::vector<uint8_t> read_maybe_gzipped(const std::string& path) {
  io::require_regular_file(path);
  std::unique_ptr<gzFile_s, int (*)(gzFile)> file(gzopen(path.c_str(), "rb"), gzclose);
  if (!file) throw DataError(fmt::format("{}: cannot open file ({})", path, std::strerror(errno)));
  std::vector<uint8_t> bytes;
  uint8_t chunk[1 << 16];
  for (;;) {
    int got = gzread(file.get(), chunk, sizeof chunk);
    if (got < 0) {
      int code = 0;
      const char* msg = gzerror(file.get(), &code);
      throw DataError(fmt::format("{}: corrupt or truncated gzip data after byte {} ({})", path,
                                  bytes.size(), msg));
    }
    if (got == 0) break;
    bytes.insert(bytes.end(), chunk, chunk + got);
  }
  // A gzip stream cut short ends without error from gzread but leaves Z_BUF_ERROR behind.
  int code = 0;
  gzerror(file.get(), &code);
  if (code == Z_BUF_ERROR)
    throw DataError(fmt::format("{}: truncated gzip stream after byte {}", path, bytes.size()));
  return bytes;
}

struct IdxType {
  torch::ScalarType dtype;
  size_t item_size;
};

IdxType idx_type(uint8_t code, const std::string& path) {
  switch (code) {
    case 0x08: return {torch::kUInt8, 1};
    case 0x09: return {torch::kInt8, 1};
    case 0x0B: return {torch::kInt16, 2};
    case 0x0C: return {torch::kInt32, 4};
    case 0x0D: return {torch::kFloat32, 4};
    case 0x0E: return {torch::kFloat64, 8};
    default:
      throw DataError(fmt::format("{}: byte 2: unknown IDX type code 0x{:02x}, expected 0x08, 0x09, "
                                  "0x0b, 0x0c, 0x0d or 0x0e",
                                  path, code));
  }
}

uint32_t big_endian32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

}  // namespace

torch::Tensor read_idx(const std::string& path) {
  auto bytes = read_maybe_gzipped(path);
  if (bytes.size() < 4)
    throw DataError(fmt::format("{}: truncated at byte {}: an IDX header has 4 magic bytes", path,
                                bytes.size()));
  if (bytes[0] != 0 || bytes[1] != 0 || bytes[3] == 0)
    throw DataError(fmt::format("{}: byte 0: wrong magic {:02x} {:02x} {:02x} {:02x}, expected an "
                                "IDX header 00 00 <type> <dims>",
                                path, bytes[0], bytes[1], bytes[2], bytes[3]));
  IdxType type = idx_type(bytes[2], path);
  size_t dims = bytes[3], header = 4 + 4 * dims;
  if (bytes.size() < header)
    throw DataError(fmt::format("{}: truncated at byte {}: the header declares {} dimensions and "
                                "needs {} bytes",
                                path, bytes.size(), dims, header));
  std::vector<int64_t> shape;
  for (size_t d = 0; d < dims; ++d) shape.push_back(big_endian32(&bytes[4 + 4 * d]));
  auto body = tensor_bytes(shape, static_cast<int64_t>(type.item_size));
  if (!body) throw DataError(fmt::format("{}: byte 4: shape [{}] overflows 64-bit sizes", path, fmt::join(shape, ", ")));
  if (static_cast<uint64_t>(*body) > bytes.size())
    throw DataError(fmt::format("{}: truncated at byte {}: shape [{}] needs {} bytes", path, bytes.size(),
                                fmt::join(shape, ", "), header + *body));
  size_t count = static_cast<size_t>(*body) / type.item_size;
  size_t need = header + count * type.item_size;
  if (bytes.size() < need)
    throw DataError(fmt::format("{}: truncated at byte {}: shape [{}] needs {} bytes", path,
                                bytes.size(), fmt::join(shape, ", "), need));
  if (bytes.size() > need)
    throw DataError(fmt::format("{}: byte {}: {} bytes after the data of shape [{}]", path, need,
                                bytes.size() - need, fmt::join(shape, ", ")));
  uint8_t* data = bytes.data() + header;
  // IDX stores multi-byte values big-endian; swap to host (little-endian) order in place.
  if (type.item_size > 1)
    for (size_t i = 0; i < count; ++i)
      std::reverse(data + i * type.item_size, data + (i + 1) * type.item_size);
  return torch::from_blob(data, shape, type.dtype).clone();
}

Dataset read_idx_pair(const std::string& images, const std::string& labels, int64_t num_classes) {
  auto x = read_idx(images);
  auto y = read_idx(labels);
  if (y.dim() != 1)
    throw DataError(fmt::format("{}: a label file has 1 dimension, this one has {}", labels,
                                y.dim()));
  if (x.dim() < 2)
    throw DataError(fmt::format("{}: an image file has at least 2 dimensions, this one has {}",
                                images, x.dim()));
  if (x.size(0) != y.size(0))
    throw DataError(fmt::format("{}: {} images but {} has {} labels", images, x.size(0), labels,
                                y.size(0)));
  // Images get a channel axis: [N, H, W] -> [N, 1, H, W], as convolutions expect.
  if (x.dim() == 3) x = x.unsqueeze(1);
  return make_dataset(x, y, Task::Classification, num_classes, labels, images);
}

}  // namespace sparq::data
