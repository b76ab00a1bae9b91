// sparq fixed: the fixed-point calculator. What a value becomes in a format, its code word and the
// ap_fixed type; or a whole CSV table of values and formats at once.
#include <fmt/format.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "cli/commands.h"
#include "sparq/error.h"
#include "sparq/io/files.h"
#include "sparq/quant/fixed_point.h"

namespace sparq::cli {

namespace {

using quant::FixedFormat;

/// The W-bit code word of n (two's complement when signed), with the binary point after I bits.
std::string code_word(double n, const FixedFormat& fmt) {
  int w = fmt.width(), integer_bits = fmt.k + fmt.i;
  double modulus = std::ldexp(1.0, w);
  double u = n - modulus * std::floor(n / modulus);  // two's complement pattern as an unsigned integer
  std::string bits;
  for (int b = w - 1; b >= 0; --b) {
    bits += std::fmod(std::floor(std::ldexp(u, -b)), 2.0) != 0 ? '1' : '0';
    if (b == w - integer_bits && b > 0 && integer_bits > 0) bits += '.';
  }
  return bits;
}

double parse_double(const std::string& s, bool& ok) {
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s.c_str(), &end);
  ok = !s.empty() && *end == '\0' && std::isfinite(v);
  return v;
}

int parse_int(const std::string& s, bool& ok) {
  char* end = nullptr;
  long v = std::strtol(s.c_str(), &end, 10);
  ok = !s.empty() && *end == '\0' && v > -1000 && v < 1000;
  return static_cast<int>(v);
}

double quantize(double x, const FixedFormat& fmt) {
  return quant::quantize_code<double>(x, fmt.k, fmt.i, fmt.f, fmt.round, fmt.overflow) * fmt.step() + 0.0;
}

std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> cells;
  std::stringstream ss(line);
  for (std::string c; std::getline(ss, c, ',');) cells.push_back(c);
  if (!line.empty() && line.back() == ',') cells.emplace_back();
  for (auto& c : cells)
    if (!c.empty() && c.back() == '\r') c.pop_back();
  return cells;
}

int run_csv(const FixedArgs& args) {
  std::ifstream in = io::open_file(args.csv);
  std::string line;
  if (!std::getline(in, line)) throw Error(fmt::format("{}:1: empty file, expected a header row", args.csv));
  auto header = split(line);
  std::map<std::string, size_t> col;
  for (size_t c = 0; c < header.size(); ++c) col[header[c]] = c;
  for (const char* need : {"x", "k", "i", "f", "round", "overflow"})
    if (!col.count(need))
      throw Error(fmt::format("{}:1: no column '{}' in the header (need x, k, i, f, round, overflow)", args.csv, need));
  if (col.count("quantized")) throw Error(fmt::format("{}:1: the input already has a 'quantized' column", args.csv));

  // A file is written whole and atomically at the end (never over a folder or a device; "-" is
  // stdout); stdout gets the rows as they come.
  const bool to_file = !args.out.empty() && args.out != "-";
  std::string text = line + ",quantized\n";
  int64_t line_no = 1;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    auto cells = split(line);
    auto fail = [&](const std::string& what) {
      throw Error(fmt::format("{}:{}: {}", args.csv, line_no, what));
    };
    if (cells.size() != header.size())
      fail(fmt::format("{} cells, but the header has {} columns", cells.size(), header.size()));
    bool ok = true;
    double x = parse_double(cells[col["x"]], ok);
    if (!ok) fail(fmt::format("x: '{}' is not a finite number", cells[col["x"]]));
    FixedFormat fmt;
    for (auto [name, field] : {std::pair{"k", &fmt.k}, std::pair{"i", &fmt.i}, std::pair{"f", &fmt.f}}) {
      *field = parse_int(cells[col[name]], ok);
      if (!ok) fail(fmt::format("{}: '{}' is not an integer", name, cells[col[name]]));
    }
    try {
      fmt.round = quant::parse_round_mode(cells[col["round"]]);
      fmt.overflow = quant::parse_overflow_mode(cells[col["overflow"]]);
      fmt.validate();
    } catch (const Error& e) {
      fail(e.what());
    }
    char value[40];
    std::snprintf(value, sizeof value, "%.17g", quantize(x, fmt));
    text += line + "," + value + "\n";
    if (!to_file && text.size() > (1 << 20)) std::fputs(text.c_str(), stdout), text.clear();
  }
  if (!to_file) {
    std::fputs(text.c_str(), stdout);
    return 0;
  }
  io::write_file_atomic(args.out, text);
  fmt::print(stderr, "wrote {} rows to {}\n", line_no - 1, args.out);
  return 0;
}

}  // namespace

int fixed_command(const FixedArgs& args) {
  if (!args.csv.empty()) {
    if (!args.values.empty()) throw Error("sparq fixed: give values or --csv, not both");
    return run_csv(args);
  }
  if (args.values.empty()) throw Error("sparq fixed: no values (give numbers, or --csv FILE)");
  if (!args.format_given)
    throw Error("sparq fixed: give the format with --k, --i and --f (e.g. --k 1 --i 2 --f 3 for ap_fixed<6,3>)");
  FixedFormat fmt{args.k, args.i, args.f, quant::parse_round_mode(args.round), quant::parse_overflow_mode(args.overflow)};
  fmt.validate();
  // The table is built whole first: a bad value writes nothing, and --out FILE gets it atomically.
  std::string text = fmt::format("{}  (k={}, i={}, f={}): range [{}, {}], step {}\n", fmt.type_name(), fmt.k, fmt.i,
                                 fmt.f, fmt.min_value(), fmt.max_value(), fmt.step());
  text += fmt::format("{:>24}  {:>24}  {}\n", "x", "quantized", "code");
  for (const auto& s : args.values) {
    bool ok = true;
    double x = parse_double(s, ok);
    if (!ok) throw Error(fmt::format("sparq fixed: '{}' is not a finite number", s));
    double n = quant::quantize_code<double>(x, fmt.k, fmt.i, fmt.f, fmt.round, fmt.overflow);
    text += fmt::format("{:>24}  {:>24}  {}\n", x, n * fmt.step() + 0.0, code_word(n, fmt));
  }
  if (args.out.empty() || args.out == "-") std::fputs(text.c_str(), stdout);
  else io::write_file_atomic(args.out, text);
  return 0;
}

}  // namespace sparq::cli
