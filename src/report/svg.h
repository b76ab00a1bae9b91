// Plots as plain SVG text, for the self-contained HTML report (no scripts, no network). Every drawn
// data point carries its values (data-x, data-y; data-label, data-value for bars) so that a test
// can compare what the browser drew with the run's files.
#pragma once

#include <string>
#include <vector>

namespace sparq::report {

struct Series {
  std::string name;
  std::vector<double> x, y;
  std::vector<std::string> labels;  ///< optional, one per point (shown as the point's tooltip)
  bool joined = true;               ///< a line through the points (false: points only)
};

struct Plot {
  std::string id;  ///< data-plot attribute: what the test looks up
  std::string title, x_label, y_label;
  std::vector<Series> series;
  bool log_x = false, log_y = false;
  bool whole_x = false;  ///< x ticks at whole numbers only (epochs)
  /// Shaded x ranges with a caption (the training stages of a run).
  struct Band {
    double from, to;
    std::string caption;
  };
  std::vector<Band> bands;
};

/// A line or scatter plot; points whose value cannot be drawn (NaN, or <= 0 on a log axis) are
/// left out.
std::string svg_plot(const Plot& plot);

/// A vertical bar per label.
std::string svg_bars(const std::string& id, const std::string& title, const std::string& y_label,
                     const std::vector<std::string>& labels, const std::vector<double>& values);

/// Text made safe inside HTML/SVG elements and attributes.
std::string escape(const std::string& text);

}  // namespace sparq::report
