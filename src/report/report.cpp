#include "sparq/report/report.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "report/svg.h"
#include "sparq/error.h"
#include "sparq/export/precision.h"
#include "sparq/fit/fitcompress.h"
#include "sparq/io/files.h"
#include "sparq/run/run_job.h"

namespace sparq::report {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

/// What a report reads from a run folder.
struct RunFiles {
  std::string dir, name;
  std::vector<json> epochs;       ///< metrics.jsonl, one record per epoch
  json run, precision, fit;       ///< run.json, precision.json, fitcompress.json (null when absent)
  std::string job_text;
};

json read_json_file(const fs::path& path) {
  auto j = json::parse(io::read_file(path.string()), nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw ConfigError(fmt::format("{}: damaged (not a JSON object)", path.string()));
  return j;
}

RunFiles read_run(const std::string& dir) {
  const fs::path d(dir);
  if (!fs::exists(d)) throw ConfigError(fmt::format("{}: not a run folder (no such folder)", dir));
  if (!fs::is_directory(d)) throw ConfigError(fmt::format("{}: not a run folder (not a folder)", dir));
  for (const char* file : {"metrics.jsonl", "job.yaml"})
    if (!fs::is_regular_file(d / file))
      throw ConfigError(fmt::format("{}: not a run folder of sparq (no {})", dir, file));
  RunFiles r;
  r.dir = dir;
  r.name = fs::path(dir).lexically_normal().filename().string();
  if (r.name.empty() || r.name == ".") r.name = fs::absolute(d).lexically_normal().parent_path().filename().string();
  if (fs::is_regular_file(d / "run.json")) {
    r.run = read_json_file(d / "run.json");
    check_run_format(r.run, dir);
  }
  std::istringstream lines(io::read_file((d / "metrics.jsonl").string()));
  int line_no = 0;
  for (std::string line; std::getline(lines, line);) {
    ++line_no;
    if (line.empty()) continue;
    auto j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("epoch") || !j["epoch"].is_number())
      throw ConfigError(fmt::format("{}/metrics.jsonl:{}: not an epoch record", dir, line_no));
    r.epochs.push_back(std::move(j));
  }
  if (fs::is_regular_file(d / "precision.json")) r.precision = read_json_file(d / "precision.json");
  if (fs::is_regular_file(d / "fitcompress.json")) r.fit = read_json_file(d / "fitcompress.json");
  r.job_text = io::read_file((d / "job.yaml").string());
  return r;
}

/// A number of the record, NaN when absent or null (drawn as a gap).
double value_of(const json& record, const std::string& key) {
  auto it = record.find(key);
  return it != record.end() && it->is_number() ? it->get<double>() : std::nan("");
}

bool has_values(const std::vector<json>& epochs, const std::string& key, bool nonzero = false) {
  for (const auto& e : epochs) {
    double v = value_of(e, key);
    if (std::isfinite(v) && (!nonzero || v != 0)) return true;
  }
  return false;
}

Series series_of(const std::vector<json>& epochs, const std::string& key, const std::string& name) {
  Series s{name, {}, {}, {}, true};
  for (const auto& e : epochs) {
    double v = value_of(e, key);
    if (!std::isfinite(v)) continue;
    s.x.push_back(value_of(e, "epoch"));
    s.y.push_back(v);
  }
  return s;
}

/// The training stages as shaded epoch ranges.
std::vector<Plot::Band> stage_bands(const std::vector<json>& epochs) {
  std::vector<Plot::Band> bands;
  std::string last;
  int64_t rounds = 1;
  for (const auto& e : epochs) rounds = std::max(rounds, e.value("round", int64_t{1}));
  for (const auto& e : epochs) {
    std::string stage = e.value("stage", std::string());
    int64_t round = e.value("round", int64_t{1});
    std::string caption = stage == "training" && rounds > 1 ? fmt::format("round {}", round) : stage;
    if (caption.empty()) continue;
    double epoch = value_of(e, "epoch");
    if (bands.empty() || caption != last) bands.push_back({epoch - 0.5, epoch + 0.5, caption});
    else bands.back().to = epoch + 0.5;
    last = caption;
  }
  if (bands.size() == 1 && bands[0].caption == "training") bands.clear();  // a plain run: nothing to tell apart
  return bands;
}

bool spans_decades(const Series& s) {
  double lo = INFINITY, hi = 0;
  for (double v : s.y)
    if (v > 0) lo = std::min(lo, v), hi = std::max(hi, v);
  return hi > 0 && hi / lo > 20;
}

std::string number(double v, int digits = 4) { return std::isfinite(v) ? fmt::format("{:.{}g}", v, digits) : "—"; }

std::string percent(double v) { return std::isfinite(v) ? fmt::format("{:.2f}%", 100 * v) : "—"; }

const char* kStyle = R"(<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;max-width:1260px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.summary{color:#555;margin:0 0 12px} .plots{display:flex;flex-wrap:wrap;gap:12px}
svg.plot{border:1px solid #e4e4e4;background:#fff} svg .title{font-size:14px;font-weight:600}
svg .tick{font-size:11px;fill:#555} svg .label{font-size:12px;fill:#333} svg .legend{font-size:12px}
svg .band{font-size:11px;fill:#999} table{border-collapse:collapse;font-size:13px}
th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:right} th{background:#f6f6f6}
td:first-child,th:first-child{text-align:left} tr.front td{font-weight:600}
pre{background:#f7f7f7;padding:10px;font-size:12px;overflow:auto;max-height:420px}
</style>)";

std::string page(const std::string& title, const std::string& body) {
  return fmt::format("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>{}</head>\n"
                     "<body>\n{}\n</body></html>\n",
                     escape(title), kStyle, body);
}

std::string table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows,
                  const std::string& id, const std::vector<bool>& highlight = {}) {
  std::string s = fmt::format("<table data-table=\"{}\"><tr>", id);
  for (const auto& h : header) s += "<th>" + escape(h) + "</th>";
  s += "</tr>\n";
  for (size_t r = 0; r < rows.size(); ++r) {
    s += r < highlight.size() && highlight[r] ? "<tr class=\"front\">" : "<tr>";
    for (const auto& cell : rows[r]) s += "<td>" + escape(cell) + "</td>";
    s += "</tr>\n";
  }
  return s + "</table>\n";
}

/// Per-layer bit widths (k + i + f, 0 for a removed element) of an HGQ weight target.
std::map<int64_t, int64_t> width_histogram(const json& target) {
  std::map<int64_t, int64_t> counts;
  const auto &k = target.at("k"), &i = target.at("i"), &f = target.at("f");
  for (size_t e = 0; e < k.size() && e < i.size() && e < f.size(); ++e)
    ++counts[std::max<int64_t>(0, k[e].get<int64_t>() + i[e].get<int64_t>() + f[e].get<int64_t>())];
  return counts;
}

std::string curves_section(const RunFiles& r) {
  const auto& epochs = r.epochs;
  const auto bands = stage_bands(epochs);
  std::vector<Plot> plots;
  auto add = [&](const std::string& id, const std::string& title, const std::string& y_label,
                 std::vector<Series> series) {
    Plot p{id, title, "epoch", y_label, std::move(series), false, false, true, bands};
    for (const auto& s : p.series) p.log_y = p.log_y || spans_decades(s);
    plots.push_back(std::move(p));
  };
  add("loss", "Loss", "loss", {series_of(epochs, "train_loss", "train"), series_of(epochs, "eval_loss", "eval")});
  if (has_values(epochs, "eval_accuracy"))
    add("accuracy", "Accuracy", "accuracy",
        {series_of(epochs, "train_accuracy", "train"), series_of(epochs, "eval_accuracy", "eval")});
  if (has_values(epochs, "sparsity")) add("sparsity", "Sparsity (zero weights)", "fraction", {series_of(epochs, "sparsity", "sparsity")});
  if (has_values(epochs, "ebops", true)) add("ebops", "EBOPs", "EBOPs", {series_of(epochs, "ebops", "EBOPs")});
  if (has_values(epochs, "beta", true)) add("beta", "HGQ β", "β", {series_of(epochs, "beta", "beta")});
  if (has_values(epochs, "hgq_loss", true)) add("hgq_loss", "HGQ loss term (β·EBOPs + γ·bits)", "loss", {series_of(epochs, "hgq_loss", "hgq_loss")});
  std::string s = "<h2>Training</h2>\n<div class=\"plots\">\n";
  for (const auto& p : plots) s += svg_plot(p) + "\n";
  return s + "</div>\n";
}

std::string layers_section(const RunFiles& r) {
  const json* last_layers = nullptr;
  for (auto it = r.epochs.rbegin(); it != r.epochs.rend() && !last_layers; ++it)
    if (it->contains("layers") && (*it)["layers"].is_object()) last_layers = &(*it)["layers"];
  std::map<std::string, const json*> precision_of;
  std::vector<std::pair<std::string, std::string>> order;  // name, op
  if (r.precision.contains("layers") && r.precision["layers"].is_array())
    for (const auto& l : r.precision["layers"]) {
      precision_of[l.value("name", "")] = &l;
      order.emplace_back(l.value("name", ""), l.value("op", ""));
    }
  if (last_layers)
    for (const auto& [name, c] : last_layers->items())
      if (!precision_of.count(name)) order.emplace_back(name, "");
  if (order.empty()) return "";
  std::vector<std::string> names;
  std::vector<double> sparsity, bits, ebops;
  std::vector<std::vector<std::string>> rows;
  for (const auto& [name, op] : order) {
    const json* cost = last_layers && last_layers->contains(name) ? &(*last_layers)[name] : nullptr;
    const json* prec = precision_of.count(name) ? precision_of[name] : nullptr;
    auto formats = [&](const char* target) {
      return prec && (*prec)["targets"].contains(target) ? exporting::most_used_types((*prec)["targets"][target], 2) : "";
    };
    const std::string weight_format = formats("weight"), input_format = formats("input");
    double weights = cost ? value_of(*cost, "weights") : NAN, nonzero = cost ? value_of(*cost, "nonzero_weights") : NAN;
    double wbits = cost ? value_of(*cost, "weight_bits") : NAN, e = cost ? value_of(*cost, "ebops") : NAN;
    double sp = cost ? value_of(*cost, "sparsity") : NAN;
    double mean_bits = nonzero > 0 ? wbits / nonzero : (nonzero == 0 ? 0 : NAN);
    if (cost && weights > 0) {
      names.push_back(name);
      sparsity.push_back(sp);
      bits.push_back(mean_bits);
      ebops.push_back(e);
    }
    if (weights > 0)
      rows.push_back({name, op, number(weights, 9), number(nonzero, 9), percent(sp), number(mean_bits, 3), number(e, 4),
                      weight_format, input_format});
    else  // activations, pooling: no weights, only their cost and formats
      rows.push_back({name, op, "", "", "", "", number(e, 4), weight_format, input_format});
  }
  std::string s = "<h2>Layers (last epoch)</h2>\n";
  if (!names.empty()) {
    s += "<div class=\"plots\">\n" + svg_bars("layer_sparsity", "Sparsity per layer", "fraction", names, sparsity) + "\n";
    s += svg_bars("layer_bits", "Mean bits per non-zero weight", "bits", names, bits) + "\n";
    s += svg_bars("layer_ebops", "EBOPs per layer", "EBOPs", names, ebops) + "\n</div>\n";
  }
  s += table({"layer", "op", "weights", "non-zero", "sparsity", "mean bits", "EBOPs", "weight formats", "input formats"},
             rows, "layers");
  // Bit-width histograms of HGQ's learned per-element weight widths.
  std::string hist;
  for (const auto& [name, prec] : precision_of) {
    if (!(*prec)["targets"].contains("weight")) continue;
    const auto& w = (*prec)["targets"]["weight"];
    if (w.value("kind", "") != "hgq" || !w.contains("k") || !w.contains("i") || !w.contains("f")) continue;
    std::vector<std::string> labels;
    std::vector<double> counts;
    for (const auto& [width, count] : width_histogram(w)) {
      labels.push_back(std::to_string(width));
      counts.push_back(static_cast<double>(count));
    }
    hist += svg_bars("hist_" + name, fmt::format("{}: weights per bit width", name), "weights", labels, counts) + "\n";
  }
  if (!hist.empty()) s += "<h2>Learned weight bit widths (HGQ)</h2>\n<div class=\"plots\">\n" + hist + "</div>\n";
  return s;
}

std::string fit_section(const RunFiles& r) {
  if (!r.fit.contains("layers") || !r.fit["layers"].is_array()) return "";
  std::vector<std::vector<std::string>> rows;
  for (const auto& l : r.fit["layers"]) {
    std::string width;
    try {
      width = fit::width_label(l);
    } catch (const nlohmann::json::exception&) {
      throw ConfigError(fmt::format("{}/fitcompress.json: damaged (a layer without bits, integer_bits, fractional_bits)", r.dir));
    }
    rows.push_back({l.value("name", ""), width,
                    std::to_string(l.value("integer_bits", 0)), std::to_string(l.value("fractional_bits", 0)),
                    std::to_string(l.value("weights", int64_t{0})), std::to_string(l.value("nonzero", int64_t{0}))});
  }
  return fmt::format("<h2>FITCompress</h2>\n<p class=\"summary\">rate {} of the float weights' bits, {} pruning, "
                     "{} expansions, {} Fisher estimates, {:.1f} s</p>\n",
                     number(r.fit.value("rate", NAN)), percent(r.fit.value("pruning", NAN)),
                     r.fit.value("iterations", 0), r.fit.value("fisher_evaluations", 0), r.fit.value("seconds", 0.0)) +
         table({"layer", "bits", "i", "f", "weights", "non-zero"}, rows, "fitcompress");
}

/// Accuracy, EBOPs, sparsity, weight bits of a run's last epoch, and its test result.
std::string summary_line(const RunFiles& r) {
  if (r.epochs.empty()) return "no epoch finished yet";
  const auto& last = r.epochs.back();
  std::vector<std::string> parts{fmt::format("{} epochs", last.value("epoch", int64_t{0}))};
  if (std::isfinite(value_of(last, "eval_accuracy"))) parts.push_back("eval accuracy " + percent(value_of(last, "eval_accuracy")));
  if (r.run.contains("test") && r.run["test"].is_object() && std::isfinite(value_of(r.run["test"], "accuracy")))
    parts.push_back("test accuracy " + percent(value_of(r.run["test"], "accuracy")));
  if (std::isfinite(value_of(last, "ebops"))) parts.push_back("EBOPs " + number(value_of(last, "ebops")));
  if (std::isfinite(value_of(last, "sparsity"))) parts.push_back("sparsity " + percent(value_of(last, "sparsity")));
  double seconds = 0;
  for (const auto& e : r.epochs) seconds += std::isfinite(value_of(e, "seconds")) ? value_of(e, "seconds") : 0;
  parts.push_back(fmt::format("{:.1f} s of training", seconds));
  return fmt::format("{}", fmt::join(parts, " · "));
}

}  // namespace

std::string run_report_html(const std::string& run_dir) {
  auto r = read_run(run_dir);
  std::string body = fmt::format("<h1>{}</h1>\n<p class=\"summary\">{}</p>\n<p class=\"summary\">{}</p>\n", escape(r.name),
                                 escape(summary_line(r)), escape(fs::absolute(run_dir).lexically_normal().string()));
  if (!r.epochs.empty()) body += curves_section(r);
  body += layers_section(r) + fit_section(r);
  body += "<h2>Settings (job.yaml)</h2>\n<pre>" + escape(r.job_text) + "</pre>\n";
  return page("sparq: " + r.name, body);
}

std::string write_run_report(const std::string& run_dir) {
  auto path = (fs::path(run_dir) / "report.html").string();
  io::write_file_atomic(path, run_report_html(run_dir));
  return path;
}

std::string comparison_report_html(const std::vector<std::string>& run_dirs) {
  if (run_dirs.empty()) throw ConfigError("report: no run folder given");
  std::vector<RunFiles> runs;
  for (const auto& dir : run_dirs) {
    runs.push_back(read_run(dir));
    if (runs.back().epochs.empty()) throw ConfigError(fmt::format("{}: the run has no finished epoch to compare", dir));
  }
  bool all_ebops = true, all_sparsity = true, all_accuracy = true;
  for (const auto& r : runs) {
    all_ebops = all_ebops && value_of(r.epochs.back(), "ebops") > 0;
    all_sparsity = all_sparsity && std::isfinite(value_of(r.epochs.back(), "sparsity"));
    all_accuracy = all_accuracy && std::isfinite(value_of(r.epochs.back(), "eval_accuracy"));
  }
  if (!all_accuracy) throw ConfigError("report: every run must be a classification run (eval_accuracy) to compare");
  if (!all_ebops && !all_sparsity)
    throw ConfigError("report: the runs have neither EBOPs nor sparsity in common (uncompressed runs cannot be placed)");
  const std::string cost = all_ebops ? "ebops" : "sparsity";
  const bool minimize = all_ebops;  // fewer EBOPs is better; more sparsity is better
  std::vector<double> xs, ys;
  for (const auto& r : runs) {
    xs.push_back(value_of(r.epochs.back(), cost));
    ys.push_back(value_of(r.epochs.back(), "eval_accuracy"));
  }
  std::vector<bool> front(runs.size(), true);
  for (size_t a = 0; a < runs.size(); ++a)
    for (size_t b = 0; b < runs.size() && front[a]; ++b) {
      bool cost_ok = minimize ? xs[b] <= xs[a] : xs[b] >= xs[a];
      bool cost_better = minimize ? xs[b] < xs[a] : xs[b] > xs[a];
      if (b != a && cost_ok && ys[b] >= ys[a] && (cost_better || ys[b] > ys[a])) front[a] = false;
    }
  Series all{"runs", {}, {}, {}, false}, best{"Pareto front", {}, {}, {}, true};
  std::vector<size_t> order(runs.size());
  for (size_t n = 0; n < order.size(); ++n) order[n] = n;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return xs[a] < xs[b]; });
  for (size_t n : order) {
    (front[n] ? best : all).x.push_back(xs[n]);
    (front[n] ? best : all).y.push_back(ys[n]);
    (front[n] ? best : all).labels.push_back(runs[n].name);
  }
  Plot scatter{"pareto", fmt::format("Accuracy against {}", all_ebops ? "EBOPs" : "sparsity"),
               all_ebops ? "EBOPs (last epoch)" : "sparsity (last epoch)", "eval accuracy", {}, false, false, false, {}};
  if (!all.x.empty()) scatter.series.push_back(all);
  scatter.series.push_back(best);
  if (all_ebops) {
    double lo = *std::min_element(xs.begin(), xs.end()), hi = *std::max_element(xs.begin(), xs.end());
    scatter.log_x = hi / lo > 20;
  }
  std::vector<std::vector<std::string>> rows;
  std::vector<bool> highlight;
  for (size_t n : order) {
    const auto& last = runs[n].epochs.back();
    rows.push_back({runs[n].name, percent(ys[n]), number(value_of(last, "ebops")), percent(value_of(last, "sparsity")),
                    number(value_of(last, "weight_bits") / value_of(last, "nonzero_weights"), 3),
                    std::to_string(last.value("epoch", int64_t{0})), front[n] ? "yes" : "", runs[n].dir});
    highlight.push_back(front[n]);
  }
  std::string body = fmt::format("<h1>sparq: {} runs</h1>\n<p class=\"summary\">last epoch of each run; the Pareto front "
                                 "holds the runs no other run beats on both accuracy and {}</p>\n",
                                 runs.size(), all_ebops ? "EBOPs" : "sparsity");
  body += "<div class=\"plots\">\n" + svg_plot(scatter) + "\n</div>\n";
  body += table({"run", "eval accuracy", "EBOPs", "sparsity", "mean bits", "epochs", "front", "folder"}, rows, "runs", highlight);
  return page(fmt::format("sparq: {} runs", runs.size()), body);
}

}  // namespace sparq::report
