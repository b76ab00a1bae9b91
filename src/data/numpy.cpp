// NumPy .npy arrays and .npz archives (zip files of .npy members, stored or deflated).
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>
#include <zlib.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

#include "sparq/data/dataset.h"
#include "sparq/error.h"
#include "sparq/io/files.h"
#include "sparq/limits.h"

namespace sparq::data {

namespace {

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in = io::open_file(path, std::ios::in | std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

uint32_t le16(const uint8_t* p) { return p[0] | (p[1] << 8); }
uint32_t le32(const uint8_t* p) { return le16(p) | (uint32_t(le16(p + 2)) << 16); }
uint64_t le64(const uint8_t* p) { return le32(p) | (uint64_t(le32(p + 4)) << 32); }

/// The value text of `key` in the header dict, e.g. "'<f4'" or "(100, 3)".
std::string dict_value(const std::string& header, const std::string& key, const std::string& src) {
  auto k = header.find("'" + key + "'");
  if (k == std::string::npos)
    throw DataError(fmt::format("{}: byte 10: header has no '{}' entry", src, key));
  // The colon must follow the key (spaces between): "'shape'(4 :" is no entry.
  auto colon = header.find_first_not_of(' ', k + key.size() + 2);
  if (colon != std::string::npos && header[colon] != ':') colon = std::string::npos;
  size_t begin = colon == std::string::npos ? std::string::npos : header.find_first_not_of(' ', colon + 1), end;
  if (begin == std::string::npos) throw DataError(fmt::format("{}: byte 10: header entry '{}' has no value", src, key));
  if (header[begin] == '(') end = header.find(')', begin), end = end == std::string::npos ? end : end + 1;
  else end = header.find_first_of(",}", begin);
  if (end == std::string::npos) throw DataError(fmt::format("{}: byte 10: header entry '{}' is not terminated", src, key));
  return header.substr(begin, end - begin);
}

/// Parses one .npy image held in memory; `src` names it in errors.
torch::Tensor parse_npy(const uint8_t* data, size_t size, const std::string& src) {
  static const uint8_t magic[] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (size < 10 || std::memcmp(data, magic, 6) != 0)
    throw DataError(fmt::format("{}: byte 0: wrong magic, expected \\x93NUMPY", src));
  uint8_t major = data[6];
  size_t header_len, header_start;
  if (major == 1) header_len = le16(data + 8), header_start = 10;
  else if (major == 2 || major == 3) {
    if (size < 12) throw DataError(fmt::format("{}: truncated at byte {} in the header", src, size));
    header_len = le32(data + 8), header_start = 12;
  } else {
    throw DataError(fmt::format("{}: byte 6: unsupported .npy version {}", src, major));
  }
  if (size < header_start + header_len)
    throw DataError(fmt::format("{}: truncated at byte {}: header needs {} bytes", src, size,
                                header_start + header_len));
  std::string header(reinterpret_cast<const char*>(data + header_start), header_len);
  // The header is a Python dict literal ending in a newline (spaces pad it before the newline).
  auto open = header.find_first_not_of(' '), close = header.rfind('}');
  if (header.empty() || header.back() != '\n' || open == std::string::npos || header[open] != '{' ||
      close == std::string::npos || header.find_first_not_of(" \n", close + 1) != std::string::npos)
    throw DataError(fmt::format("{}: byte {}: the header is not a terminated dict ('{{...}}' and a newline)", src,
                                header_start));

  std::string descr = dict_value(header, "descr", src);
  if (dict_value(header, "fortran_order", src) != "False")
    throw DataError(fmt::format("{}: Fortran-order arrays are not supported, save it in C order "
                                "(numpy.ascontiguousarray)",
                                src));
  std::vector<int64_t> shape;
  {
    std::string s = dict_value(header, "shape", src);
    if (s.size() < 2 || s.front() != '(' || s.back() != ')')
      throw DataError(fmt::format("{}: header: shape {} is not a tuple of dimensions", src, s));
    std::stringstream ss(s.substr(1, s.size() - 2));
    std::string part;
    while (std::getline(ss, part, ',')) {
      size_t first = part.find_first_not_of(' '), last = part.find_last_not_of(' ');
      if (first == std::string::npos) continue;
      std::string digits = part.substr(first, last - first + 1);
      int64_t d = 0;
      auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), d);
      if (ec != std::errc() || end != digits.data() + digits.size() || d < 0)
        throw DataError(fmt::format("{}: header: shape {} has '{}', expected dimensions 0 or more", src, s, digits));
      shape.push_back(d);
    }
  }
  if (descr.size() < 4 || descr.front() != '\'')
    throw DataError(fmt::format("{}: unsupported dtype {}", src, descr));
  char order = descr[1], kind = descr[2];
  int item = std::atoi(descr.c_str() + 3);
  if (order == '>' && item > 1)
    throw DataError(fmt::format("{}: big-endian dtype {} is not supported", src, descr));
  torch::ScalarType dtype;
  bool widen_unsigned = false;
  if (kind == 'f' && item == 4) dtype = torch::kFloat32;
  else if (kind == 'f' && item == 8) dtype = torch::kFloat64;
  else if (kind == 'i' && item == 1) dtype = torch::kInt8;
  else if (kind == 'i' && item == 2) dtype = torch::kInt16;
  else if (kind == 'i' && item == 4) dtype = torch::kInt32;
  else if (kind == 'i' && item == 8) dtype = torch::kInt64;
  else if (kind == 'u' && item == 1) dtype = torch::kUInt8;
  else if (kind == 'b' && item == 1) dtype = torch::kBool;
  else if (kind == 'u' && (item == 2 || item == 4)) dtype = torch::kInt64, widen_unsigned = true;
  else
    throw DataError(fmt::format("{}: unsupported dtype {}, expected float32/64, int8..64, uint8..32 "
                                "or bool",
                                src, descr));
  auto bytes = tensor_bytes(shape, item);
  if (!bytes)
    throw DataError(fmt::format("{}: header: shape ({}) of {} overflows 64-bit sizes", src, fmt::join(shape, ", "), descr));
  if (static_cast<uint64_t>(*bytes) > size)
    throw DataError(fmt::format("{}: truncated at byte {}: shape ({}) of {} needs {} bytes", src, size,
                                fmt::join(shape, ", "), descr, *bytes));
  size_t count = static_cast<size_t>(*bytes / item);
  size_t offset = header_start + header_len, need = offset + count * item;
  if (size < need)
    throw DataError(fmt::format("{}: truncated at byte {}: shape ({}) of {} needs {} bytes", src,
                                size, fmt::join(shape, ", "), descr, need));
  if (size > need)
    throw DataError(fmt::format("{}: byte {}: {} bytes after the data of shape ({})", src, need,
                                size - need, fmt::join(shape, ", ")));
  const uint8_t* body = data + offset;
  if (widen_unsigned) {
    std::vector<int64_t> values(count);
    for (size_t i = 0; i < count; ++i)
      values[i] = item == 2 ? le16(body + 2 * i) : le32(body + 4 * i);
    return torch::tensor(values, torch::kInt64).reshape(shape);
  }
  return torch::from_blob(const_cast<uint8_t*>(body), shape, dtype).clone();
}

}  // namespace

void write_npy(const std::string& path, const torch::Tensor& t_in) {
  auto t = t_in.detach().cpu().to(torch::kFloat32).contiguous();
  std::string shape = fmt::format("{}", fmt::join(t.sizes(), ", ")) + (t.dim() == 1 ? "," : "");  // (4, 5) or (4,)
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + shape + "), }";
  header.append(63 - (10 + header.size()) % 64, ' ');
  header += '\n';
  std::string bytes = "\x93NUMPY";
  bytes += char(1), bytes += char(0);
  bytes += char(header.size() & 0xff), bytes += char(header.size() >> 8);
  bytes += header;
  bytes.append(static_cast<const char*>(t.data_ptr()), t.numel() * sizeof(float));
  io::write_file_atomic(path, bytes);
}

torch::Tensor read_npy(const std::string& path) {
  auto bytes = read_file(path);
  return parse_npy(bytes.data(), bytes.size(), path);
}

std::map<std::string, torch::Tensor> read_npz(const std::string& path) {
  auto bytes = read_file(path);
  const size_t n = bytes.size();
  // End-of-central-directory record: signature 0x06054b50 within the last 64 KiB + 22 bytes.
  size_t eocd = std::string::npos;
  for (size_t p = n >= 22 ? n - 22 : 0; n >= 22; --p) {
    if (le32(&bytes[p]) == 0x06054b50) { eocd = p; break; }
    if (p == 0 || n - p > 65557) break;
  }
  if (eocd == std::string::npos)
    throw DataError(fmt::format("{}: not a zip archive (no end-of-central-directory record); an "
                                ".npz file is written by numpy.savez",
                                path));
  uint32_t entries = le16(&bytes[eocd + 10]);
  size_t dir = le32(&bytes[eocd + 16]);
  // Every offset and length comes from the file: `len` bytes at `at` must lie inside it.
  auto inside = [n](uint64_t at, uint64_t len) { return at <= n && len <= n - at; };
  std::map<std::string, torch::Tensor> arrays;
  for (uint32_t e = 0; e < entries; ++e) {
    if (!inside(dir, 46) || le32(&bytes[dir]) != 0x02014b50 ||
        !inside(dir + 46, uint64_t{le16(&bytes[dir + 28])} + le16(&bytes[dir + 30]) + le16(&bytes[dir + 32])))
      throw DataError(fmt::format("{}: byte {}: corrupt central directory entry {}", path, dir, e));
    uint32_t flags = le16(&bytes[dir + 8]), method = le16(&bytes[dir + 10]);
    uint32_t crc = le32(&bytes[dir + 16]);
    uint64_t packed = le32(&bytes[dir + 20]), unpacked = le32(&bytes[dir + 24]);
    uint32_t name_len = le16(&bytes[dir + 28]), extra_len = le16(&bytes[dir + 30]),
             comment_len = le16(&bytes[dir + 32]);
    uint64_t local = le32(&bytes[dir + 42]);
    std::string name(reinterpret_cast<const char*>(&bytes[dir + 46]), name_len);
    // Zip64 extra field (id 1) carries the sizes/offset that did not fit in 32 bits.
    const size_t extra_end = dir + 46 + name_len + extra_len;
    for (size_t x = dir + 46 + name_len; x + 4 <= extra_end;) {
      uint32_t id = le16(&bytes[x]), len = le16(&bytes[x + 2]);
      const size_t field_end = x + 4 + len;
      if (field_end > extra_end)
        throw DataError(fmt::format("{}: byte {}: corrupt extra field in central directory entry {}", path, x, e));
      if (id == 1) {
        size_t q = x + 4;
        auto next = [&]() {
          if (q + 8 > field_end)
            throw DataError(fmt::format("{}: byte {}: zip64 field of entry {} is too short", path, x, e));
          q += 8;
          return le64(&bytes[q - 8]);
        };
        if (unpacked == 0xFFFFFFFF) unpacked = next();
        if (packed == 0xFFFFFFFF) packed = next();
        if (local == 0xFFFFFFFF) local = next();
      }
      x = field_end;
    }
    dir += 46 + name_len + extra_len + comment_len;

    std::string member = path + ":" + name;
    if (!inside(local, 30) || le32(&bytes[local]) != 0x04034b50)
      throw DataError(fmt::format("{}: byte {}: corrupt local header", member, local));
    size_t start = local + 30 + le16(&bytes[local + 26]) + le16(&bytes[local + 28]);
    if (!inside(start, packed))
      throw DataError(fmt::format("{}: truncated: member needs bytes {}..{} of {}", member, start,
                                  start + packed, n));
    if (flags & 1) throw DataError(fmt::format("{}: the member is encrypted; sparq reads unencrypted .npz files", member));
    // Declared sizes are checked before any memory is taken: deflate expands at most ~1032:1, a
    // stored member is its own size, and the array must fit in this machine's memory.
    if ((method == 0 && unpacked != packed) || (method == 8 && unpacked > packed * 1032 + 1024))
      throw DataError(fmt::format("{}: declares {} bytes uncompressed from {} stored: more than {} can give; the "
                                  "archive is damaged",
                                  member, unpacked, packed, method == 0 ? "a stored member" : "deflate"));
    check_memory(unpacked > static_cast<uint64_t>(INT64_MAX) ? std::nullopt : std::optional<int64_t>(unpacked),
                 member + ": the array");
    std::vector<uint8_t> content;
    if (method == 0) {
      content.assign(bytes.begin() + start, bytes.begin() + start + packed);
    } else if (method == 8) {
      content.resize(unpacked);
      z_stream z{};
      inflateInit2(&z, -MAX_WBITS);  // raw deflate, as zip stores it
      z.next_in = &bytes[start];
      z.avail_in = static_cast<uInt>(packed);
      z.next_out = content.data();
      z.avail_out = static_cast<uInt>(unpacked);
      int rc = inflate(&z, Z_FINISH);
      inflateEnd(&z);
      if (rc != Z_STREAM_END)
        throw DataError(fmt::format("{}: corrupt deflate data (zlib code {})", member, rc));
    } else {
      throw DataError(fmt::format("{}: unsupported zip compression method {}", member, method));
    }
    uLong sum = crc32(0L, Z_NULL, 0);
    for (size_t at = 0; at < content.size(); at += 1u << 30)
      sum = crc32(sum, content.data() + at, static_cast<uInt>(std::min<size_t>(content.size() - at, 1u << 30)));
    if (sum != crc)
      throw DataError(fmt::format("{}: CRC mismatch: the member is damaged", member));
    std::string key = name.size() > 4 && name.substr(name.size() - 4) == ".npy"
                          ? name.substr(0, name.size() - 4)
                          : name;
    arrays[key] = parse_npy(content.data(), content.size(), member);
  }
  return arrays;
}

}  // namespace sparq::data
