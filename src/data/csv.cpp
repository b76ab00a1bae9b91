// CSV with a header row: one named target column, every other column a numeric feature.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>

#include "sparq/data/dataset.h"
#include "sparq/error.h"
#include "sparq/io/files.h"

namespace sparq::data {

namespace {

/// Splits one CSV line; double quotes protect commas, "" is a literal quote.
std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> cells(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') cells.back() += '"', ++i;
      else if (c == '"') quoted = false;
      else cells.back() += c;
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      cells.emplace_back();
    } else if (c != '\r') {
      cells.back() += c;
    }
  }
  for (auto& cell : cells) {  // trim blanks around values
    size_t b = cell.find_first_not_of(" \t"), e = cell.find_last_not_of(" \t");
    cell = b == std::string::npos ? "" : cell.substr(b, e - b + 1);
  }
  return cells;
}

bool parse_number(const std::string& s, double& out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  out = std::strtod(s.c_str(), &end);
  return *end == '\0' && errno != ERANGE && !std::isnan(out);
}

}  // namespace

Dataset read_csv(const std::string& path, const std::string& target, Task task,
                 int64_t num_classes) {
  std::ifstream in = io::open_file(path);
  std::string line;
  if (!std::getline(in, line)) throw DataError(fmt::format("{}:1: empty file, expected a header row", path));
  if (line.find('\0') != std::string::npos) throw DataError(fmt::format("{}:1: a NUL byte in the header", path));
  auto header = split_csv_line(line);
  std::map<std::string, size_t> seen;
  for (size_t c = 0; c < header.size(); ++c)
    if (auto [it, fresh] = seen.emplace(header[c], c); !fresh)
      throw DataError(fmt::format("{}:1: column '{}' appears twice (columns {} and {})", path, header[c], it->second + 1, c + 1));
  auto target_it = std::find(header.begin(), header.end(), target);
  if (target_it == header.end())
    throw DataError(fmt::format("{}:1: no column '{}' in the header (columns: {})", path, target,
                                fmt::join(header, ", ")));
  size_t target_col = target_it - header.begin(), width = header.size();
  if (width < 2) throw DataError(fmt::format("{}:1: no feature columns besides '{}'", path, target));

  std::vector<float> features;
  std::vector<double> targets;
  int64_t line_no = 1;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (auto nul = line.find('\0'); nul != std::string::npos)
      throw DataError(fmt::format("{}:{}: a NUL byte at column {} of the line", path, line_no, nul + 1));
    auto cells = split_csv_line(line);
    if (cells.size() != width)
      throw DataError(fmt::format("{}:{}: {} cells, but the header has {} columns", path, line_no,
                                  cells.size(), width));
    for (size_t c = 0; c < width; ++c) {
      double v;
      if (!parse_number(cells[c], v))
        throw DataError(fmt::format("{}:{}: column {} ('{}'): '{}' is not a number", path, line_no,
                                    c + 1, header[c], cells[c]));
      if (c == target_col) {
        if (task == Task::Classification && (v != std::floor(v) || v < 0 ||
                                             (num_classes > 0 && v >= num_classes)))
          throw DataError(fmt::format("{}:{}: column {} ('{}'): label {} is not a class index ({})", path, line_no,
                                      c + 1, header[c], cells[c],
                                      num_classes > 0 ? fmt::format("0..{}", num_classes - 1) : "a whole number from 0"));
        targets.push_back(v);
      } else {
        features.push_back(static_cast<float>(v));
      }
    }
  }
  int64_t rows = static_cast<int64_t>(targets.size());
  if (rows == 0) throw DataError(fmt::format("{}: no data rows after the header", path));
  auto x = torch::from_blob(features.data(), {rows, static_cast<int64_t>(width - 1)}, torch::kFloat32)
               .clone();
  auto y = torch::from_blob(targets.data(), {rows}, torch::kFloat64).clone();
  return make_dataset(x, y, task, num_classes, path);
}

}  // namespace sparq::data
