#include "report/svg.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace sparq::report {

namespace {

constexpr double kWidth = 600, kHeight = 320;
constexpr double kLeft = 72, kRight = 16, kTop = 34, kBottom = 48;
const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

/// One axis: maps values to pixels, linear or log10, with its tick values.
struct Axis {
  double lo = 0, hi = 1;
  bool log = false;
  double pixel_lo = 0, pixel_hi = 1;

  double t(double v) const { return log ? std::log10(v) : v; }
  double to_pixel(double v) const { return pixel_lo + (t(v) - lo) / (hi - lo) * (pixel_hi - pixel_lo); }
  bool drawable(double v) const { return std::isfinite(v) && (!log || v > 0); }

  void fit(const std::vector<double>& values) {
    double a = std::numeric_limits<double>::infinity(), b = -a;
    for (double v : values)
      if (drawable(v)) a = std::min(a, t(v)), b = std::max(b, t(v));
    if (!std::isfinite(a)) a = 0, b = 1;
    if (b - a < 1e-12 * std::max(1.0, std::abs(a))) {  // one value: a band around it
      double pad = log ? 0.5 : std::max(std::abs(a) * 0.05, 1e-3);
      a -= pad, b += pad;
    } else if (!log) {
      double pad = (b - a) * 0.05;
      a -= pad, b += pad;
    }
    lo = a, hi = b;
  }

  bool whole = false;  ///< ticks at whole numbers only (epochs)

  /// 1-2-5 steps (linear) or powers of ten (log), 3 to 8 ticks.
  std::vector<double> ticks() const {
    std::vector<double> out;
    if (log) {
      double step = std::max(1.0, std::ceil((hi - lo) / 6));
      for (double e = std::ceil(lo); e <= hi + 1e-9; e += step) out.push_back(std::pow(10.0, e));
      if (out.size() < 2) out = {std::pow(10.0, lo), std::pow(10.0, hi)};
      return out;
    }
    double raw = (hi - lo) / 5, mag = std::pow(10.0, std::floor(std::log10(raw)));
    double step = mag;
    for (double m : {1.0, 2.0, 5.0, 10.0})
      if (raw <= m * mag) { step = m * mag; break; }
    if (whole) step = std::max(step, 1.0);
    for (double v = std::ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push_back(std::abs(v) < step * 1e-9 ? 0 : v);
    return out;
  }
};

/// A tick label: short, "3.5e6" rather than "3.5e+06".
std::string number(double v) {
  if (v == 0) return "0";
  double a = std::abs(v);
  if (a < 1e5 && a >= 1e-3) return fmt::format("{:.6g}", v);
  int exponent = static_cast<int>(std::floor(std::log10(a)));
  double mantissa = v / std::pow(10.0, exponent);
  return fmt::format("{:.3g}e{}", mantissa, exponent);
}

std::string frame(const std::string& id, const std::string& title) {
  return fmt::format(R"(<svg xmlns="http://www.w3.org/2000/svg" class="plot" data-plot="{}" width="{}" height="{}" )"
                     R"(viewBox="0 0 {} {}" role="img"><title>{}</title>)"
                     R"(<rect x="0" y="0" width="{}" height="{}" fill="#fff"/>)"
                     R"(<text x="{}" y="20" class="title">{}</text>)",
                     escape(id), kWidth, kHeight, kWidth, kHeight, escape(title), kWidth, kHeight, kLeft, escape(title));
}

std::string axes(const Axis& x, const Axis& y, const std::string& x_label, const std::string& y_label, bool x_ticks) {
  std::string s = fmt::format(R"(<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#999"/>)", kLeft, kTop,
                              kWidth - kLeft - kRight, kHeight - kTop - kBottom);
  for (double v : y.ticks()) {
    double py = y.to_pixel(v);
    s += fmt::format(R"(<line x1="{}" x2="{}" y1="{:.2f}" y2="{:.2f}" stroke="#eee"/>)"
                     R"(<text x="{}" y="{:.2f}" class="tick" text-anchor="end">{}</text>)",
                     kLeft + 1, kWidth - kRight - 1, py, py, kLeft - 6, py + 4, number(v));
  }
  if (x_ticks)
    for (double v : x.ticks()) {
      double px = x.to_pixel(v);
      s += fmt::format(R"(<line x1="{:.2f}" x2="{:.2f}" y1="{}" y2="{}" stroke="#999"/>)"
                       R"(<text x="{:.2f}" y="{}" class="tick" text-anchor="middle">{}</text>)",
                       px, px, kHeight - kBottom, kHeight - kBottom + 5, px, kHeight - kBottom + 18, number(v));
    }
  s += fmt::format(R"(<text x="{}" y="{}" class="label" text-anchor="middle">{}</text>)", (kLeft + kWidth - kRight) / 2,
                   kHeight - 8, escape(x_label));
  s += fmt::format(R"s(<text transform="translate(14,{}) rotate(-90)" class="label" text-anchor="middle">{}</text>)s",
                   (kTop + kHeight - kBottom) / 2, escape(y_label));
  return s;
}

}  // namespace

std::string escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string svg_plot(const Plot& plot) {
  Axis x{0, 1, plot.log_x, kLeft, kWidth - kRight}, y{0, 1, plot.log_y, kHeight - kBottom, kTop};
  x.whole = plot.whole_x;
  std::vector<double> xs, ys;
  for (const auto& s : plot.series) {
    xs.insert(xs.end(), s.x.begin(), s.x.end());
    ys.insert(ys.end(), s.y.begin(), s.y.end());
  }
  x.fit(xs);
  y.fit(ys);
  std::string svg = frame(plot.id, plot.title);
  for (size_t b = 0; b < plot.bands.size(); ++b) {  // behind everything else
    const auto& band = plot.bands[b];
    double a = std::max(kLeft, x.to_pixel(band.from)), e = std::min(kWidth - kRight, x.to_pixel(band.to));
    if (e <= a) continue;
    svg += fmt::format(R"(<rect x="{:.2f}" y="{}" width="{:.2f}" height="{}" fill="{}"/>)"
                       R"(<text x="{:.2f}" y="{}" class="band" text-anchor="middle">{}</text>)",
                       a, kTop, e - a, kHeight - kTop - kBottom, b % 2 ? "#f4f4f4" : "#fafafa", (a + e) / 2, kTop + 12,
                       escape(band.caption));
  }
  svg += axes(x, y, plot.x_label, plot.y_label, true);
  // The legend on the title's row, right-aligned, so that it never covers data.
  double legend_x = kWidth - kRight;
  std::string legend;
  for (size_t n = plot.series.size(); plot.series.size() > 1 && n-- > 0;) {
    legend_x -= 18 + 7.0 * static_cast<double>(plot.series[n].name.size());
    legend += fmt::format(R"(<rect x="{:.1f}" y="11" width="10" height="10" fill="{}"/>)"
                          R"(<text x="{:.1f}" y="20" class="legend">{}</text>)",
                          legend_x, kColors[n % std::size(kColors)], legend_x + 14, escape(plot.series[n].name));
  }
  for (size_t n = 0; n < plot.series.size(); ++n) {
    const auto& s = plot.series[n];
    const char* color = kColors[n % std::size(kColors)];
    std::string points, circles;
    for (size_t p = 0; p < s.x.size() && p < s.y.size(); ++p) {
      if (!x.drawable(s.x[p]) || !y.drawable(s.y[p])) continue;
      double px = x.to_pixel(s.x[p]), py = y.to_pixel(s.y[p]);
      points += fmt::format("{:.2f},{:.2f} ", px, py);
      std::string tip = p < s.labels.size() ? s.labels[p] + ": " : "";
      circles += fmt::format(R"(<circle cx="{:.2f}" cy="{:.2f}" r="{}" fill="{}" data-x="{}" data-y="{}"><title>{}{} = {}</title></circle>)",
                             px, py, s.joined ? 3 : 4.5, color, fmt::format("{:.17g}", s.x[p]),
                             fmt::format("{:.17g}", s.y[p]), escape(tip), escape(s.name), number(s.y[p]));
    }
    svg += fmt::format(R"(<g class="series" data-series="{}">)", escape(s.name));
    if (s.joined && !points.empty())
      svg += fmt::format(R"(<polyline points="{}" fill="none" stroke="{}" stroke-width="1.5"/>)", points, color);
    svg += circles + "</g>";
  }
  svg += legend;
  return svg + "</svg>";
}

std::string svg_bars(const std::string& id, const std::string& title, const std::string& y_label,
                     const std::vector<std::string>& labels, const std::vector<double>& values) {
  Axis x{0, 1, false, kLeft, kWidth - kRight}, y{0, 1, false, kHeight - kBottom, kTop};
  std::vector<double> range = values;
  range.push_back(0);  // bars start at 0
  y.fit(range);
  y.lo = std::min(0.0, y.lo);
  std::string svg = frame(id, title) + axes(x, y, "", y_label, false);
  const double slot = (kWidth - kLeft - kRight) / std::max<size_t>(labels.size(), 1);
  for (size_t n = 0; n < labels.size() && n < values.size(); ++n) {
    double v = std::isfinite(values[n]) ? values[n] : 0;
    double top = y.to_pixel(std::max(v, 0.0)), bottom = y.to_pixel(std::min(v, 0.0));
    double px = kLeft + slot * n + slot * 0.15;
    svg += fmt::format(R"(<rect class="bar" x="{:.2f}" y="{:.2f}" width="{:.2f}" height="{:.2f}" fill="{}" )"
                       R"(data-label="{}" data-value="{}"><title>{} = {}</title></rect>)",
                       px, top, slot * 0.7, std::max(bottom - top, 0.5), kColors[0], escape(labels[n]),
                       fmt::format("{:.17g}", values[n]), escape(labels[n]), number(values[n]));
    svg += fmt::format(R"(<text x="{:.2f}" y="{}" class="tick" text-anchor="middle">{}</text>)", px + slot * 0.35,
                       kHeight - kBottom + 16, escape(labels[n].size() > 12 ? labels[n].substr(0, 11) + "…" : labels[n]));
  }
  return svg + "</svg>";
}

}  // namespace sparq::report
