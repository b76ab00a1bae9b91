// The run report as a browser shows it: headless Chromium (Debian's chromium, driven by
// scripts/browser_check.js) opens report.html from disk; the page must raise no console error and
// each plot's drawn points must be the run's metrics.jsonl values, placed in their plot in value
// order. Without chromium/node the tests skip, except under scripts/setup.sh (SPARQ_REQUIRE_CLIENTS).
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <optional>

#include "sparq/report/report.h"
#include "test_util.h"

namespace {

using namespace sparq::test;
using nlohmann::json;

bool have_browser() { return std::system("command -v chromium >/dev/null 2>&1 && command -v node >/dev/null 2>&1") == 0; }

/// What the browser drew on `html` (and a screenshot when `png` is given).
json browser_view(const std::string& html, const std::string& png = "") {
  std::string cmd = "node " + std::string(SPARQ_SOURCE_DIR) + "/scripts/browser_check.js '" + html + "'" +
                    (png.empty() ? "" : " '" + png + "'") + " 2>&1";
  std::string text;
  if (FILE* pipe = popen(cmd.c_str(), "r")) {
    char buf[4096];
    for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) text.append(buf, n);
    int status = pclose(pipe);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return json::parse(text);
  }
  ADD_FAILURE() << "browser_check failed: " << text;
  return json::object();
}

#define REQUIRE_BROWSER() SPARQ_REQUIRE_CLIENT(have_browser(), "chromium or node")

const json& plot_of(const json& view, const std::string& id) {
  static const json none = json::object();
  for (const auto& p : view["plots"])
    if (p["id"] == id) return p;
  ADD_FAILURE() << "no plot '" << id << "' in the page";
  return none;
}

const json& series_of(const json& plot, const std::string& name) {
  static const json none = {{"points", json::array()}};
  if (plot.contains("series"))
    for (const auto& s : plot["series"])
      if (s["name"] == name) return s;
  ADD_FAILURE() << "plot " << plot.value("id", std::string("?")) << " has no series '" << name << "'";
  return none;
}

bool inside(const json& box, const json& frame) {
  return box["w"].get<double>() > 0 && box["h"].get<double>() > 0 && box["x"] >= frame["x"] && box["y"] >= frame["y"] &&
         box["x"].get<double>() + box["w"].get<double>() <= frame["x"].get<double>() + frame["w"].get<double>() &&
         box["y"].get<double>() + box["h"].get<double>() <= frame["y"].get<double>() + frame["h"].get<double>();
}

/// The series drew one point per epoch that has `key`, at (epoch, value) exactly, inside its plot,
/// a higher value higher on the screen.
void expect_series(const json& view, const std::string& plot_id, const std::string& name, const std::vector<json>& epochs,
                   const std::string& key) {
  const auto& plot = plot_of(view, plot_id);
  if (!plot.contains("box")) return;
  const auto& points = series_of(plot, name)["points"];
  std::vector<std::pair<double, double>> expected;
  for (const auto& e : epochs)
    if (e.contains(key) && e[key].is_number()) expected.emplace_back(e["epoch"].get<double>(), e[key].get<double>());
  ASSERT_EQ(points.size(), expected.size()) << plot_id << "/" << name;
  for (size_t n = 0; n < points.size(); ++n) {
    EXPECT_EQ(points[n]["x"].get<double>(), expected[n].first) << plot_id << " point " << n;
    EXPECT_EQ(points[n]["y"].get<double>(), expected[n].second) << plot_id << " point " << n;
    EXPECT_TRUE(inside(points[n]["box"], plot["box"])) << plot_id << " point " << n << " drawn outside its plot";
    for (size_t m = 0; m < n; ++m) {
      double dy = points[n]["box"]["y"].get<double>() - points[m]["box"]["y"].get<double>();
      double dx = points[n]["box"]["x"].get<double>() - points[m]["box"]["x"].get<double>();
      EXPECT_GT(dx, 0) << plot_id << ": later epochs further right";
      if (expected[n].second > expected[m].second * (1 + 1e-6) + 1e-12) {
        EXPECT_LT(dy, 0) << plot_id << " points " << m << ", " << n;
      }
      if (expected[n].second < expected[m].second * (1 - 1e-6) - 1e-12) {
        EXPECT_GT(dy, 0) << plot_id << " points " << m << ", " << n;
      }
    }
  }
}

TEST(Report, EveryPlotOfAnHgqPruningRunDrawsTheRunsMetricsInChromium) {
  REQUIRE_BROWSER();
  TempDir dir("report_run");
  write_file(dir.file("job.yaml"), R"(name: report
model: jet_tagger
data: {dataset: random, shape: [16], samples: 2048, num_classes: 5, normalize: standardize}
training: {batch_size: 64, threads: 1, progress: none, lr: 0.01}
compression:
  training_parameters: {pretraining_epochs: 1, epochs: 3, fine_tuning_epochs: 1, pruning_first: true}
  quantization_parameters:
    use_high_granularity_quantization: true
    granularity: per_weight
    hgq_beta_schedule: [[2, 1.0e-5, linear], [4, 3.0e-5]]
    default_data_keep_negatives: 1
    default_data_integer_bits: 2
    default_data_fractional_bits: 5
  pruning_parameters: {pruning_method: pdp, sparsity: 0.5, epsilon: 0.5}
)");
  auto r = run_sparq("run " + dir.file("job.yaml") + " --output " + dir.file("run"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto epochs = metrics_of(dir.file("run"));
  ASSERT_EQ(epochs.size(), 5u);
  auto view = browser_view(dir.file("run/report.html"), dir.file("shot.png"));
  EXPECT_EQ(view["errors"], json::array()) << view["errors"].dump();
  EXPECT_EQ(view["title"], "sparq: run");
  expect_series(view, "loss", "train", epochs, "train_loss");
  expect_series(view, "loss", "eval", epochs, "eval_loss");
  expect_series(view, "accuracy", "train", epochs, "train_accuracy");
  expect_series(view, "accuracy", "eval", epochs, "eval_accuracy");
  expect_series(view, "sparsity", "sparsity", epochs, "sparsity");
  expect_series(view, "ebops", "EBOPs", epochs, "ebops");
  expect_series(view, "beta", "beta", epochs, "beta");
  expect_series(view, "hgq_loss", "hgq_loss", epochs, "hgq_loss");
  EXPECT_GT(epochs.back()["sparsity"].get<double>(), 0.4);  // the plots have something to show
  EXPECT_GT(epochs.back()["beta"].get<double>(), 0.0);

  // Per-layer bars: the last epoch's numbers, one bar per layer with weights, drawn inside the plot.
  const auto& layers = epochs.back()["layers"];
  size_t weight_layers = 0;
  for (const auto& [name, c] : layers.items()) weight_layers += c["weights"].get<int64_t>() > 0;
  EXPECT_EQ(weight_layers, 4u);  // fc1..fc4 of the jet tagger
  for (const auto& [id, key] : std::vector<std::pair<std::string, std::string>>{{"layer_sparsity", "sparsity"},
                                                                                {"layer_ebops", "ebops"},
                                                                                {"layer_bits", ""}}) {
    const auto& bars = plot_of(view, id)["bars"];
    ASSERT_EQ(bars.size(), weight_layers) << id;
    for (const auto& bar : bars) {
      const auto& c = layers[bar["label"].get<std::string>()];
      double want = key.empty() ? c["weight_bits"].get<double>() / c["nonzero_weights"].get<double>() : c[key].get<double>();
      EXPECT_EQ(bar["value"].get<double>(), want) << id << " " << bar["label"];
      EXPECT_TRUE(inside(bar["box"], plot_of(view, id)["box"])) << id << " " << bar["label"];
    }
  }
  // HGQ: a histogram of fc1's 16 x 64 learned weight widths, equal to precision.json's (k, i, f).
  std::ifstream in(dir.file("run/precision.json"));
  auto fc1 = json::parse(in)["layers"][0]["targets"]["weight"];
  std::map<std::string, double> want;
  for (size_t e = 0; e < fc1["k"].size(); ++e)
    want[std::to_string(std::max(0, fc1["k"][e].get<int>() + fc1["i"][e].get<int>() + fc1["f"][e].get<int>()))] += 1;
  std::map<std::string, double> drawn;
  double total = 0;
  for (const auto& bar : plot_of(view, "hist_fc1")["bars"]) {
    drawn[bar["label"]] = bar["value"];
    total += bar["value"].get<double>();
  }
  EXPECT_EQ(drawn, want);
  EXPECT_EQ(total, 16.0 * 64.0);
  EXPECT_EQ(view["tables"]["layers"], static_cast<int>(layers.size()));
  EXPECT_GT(std::filesystem::file_size(dir.file("shot.png")), 10000u);  // a real screenshot

  // `sparq report RUN` writes the same page again from the folder alone.
  auto before = read_text(dir.file("run/report.html"));
  std::filesystem::remove(dir.file("run/report.html"));
  r = run_sparq("report " + dir.file("run"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_text(dir.file("run/report.html")), before);
}

/// A run folder holding only what the comparison reads: one epoch record.
void fake_run(const std::string& dir, const json& last) {
  std::filesystem::create_directories(dir);
  write_file(dir + "/job.yaml", "name: x\n");
  write_file(dir + "/run.json", R"({"format": 1})");
  json record = last;
  record["epoch"] = 3;
  write_file(dir + "/metrics.jsonl", json{{"epoch", 1}, {"eval_accuracy", 0.1}}.dump() + "\n" + record.dump() + "\n");
}

TEST(Report, ComparisonDrawsEveryRunAndTheParetoFrontOfAccuracyAndEbops) {
  REQUIRE_BROWSER();
  TempDir dir("report_front");
  // b beats c on both; a, b and d trade accuracy for EBOPs.
  fake_run(dir.file("a"), {{"eval_accuracy", 0.90}, {"ebops", 1000.0}, {"weight_bits", 40.0}, {"nonzero_weights", 10}});
  fake_run(dir.file("b"), {{"eval_accuracy", 0.85}, {"ebops", 500.0}, {"weight_bits", 40.0}, {"nonzero_weights", 10}});
  fake_run(dir.file("c"), {{"eval_accuracy", 0.80}, {"ebops", 800.0}, {"weight_bits", 40.0}, {"nonzero_weights", 10}});
  fake_run(dir.file("d"), {{"eval_accuracy", 0.95}, {"ebops", 50000.0}, {"weight_bits", 40.0}, {"nonzero_weights", 10}});
  auto r = run_sparq("report " + dir.file("a") + " " + dir.file("b") + " " + dir.file("c") + " " + dir.file("d") +
                     " --out " + dir.file("front.html"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto view = browser_view(dir.file("front.html"));
  EXPECT_EQ(view["errors"], json::array()) << view["errors"].dump();
  const auto& plot = plot_of(view, "pareto");
  auto xs = [](const json& series) {
    std::vector<double> out;
    for (const auto& p : series["points"]) out.push_back(p["x"]);
    return out;
  };
  EXPECT_EQ(xs(series_of(plot, "Pareto front")), (std::vector<double>{500, 1000, 50000}));
  EXPECT_TRUE(series_of(plot, "Pareto front")["line"].get<bool>());
  EXPECT_EQ(xs(series_of(plot, "runs")), (std::vector<double>{800}));
  EXPECT_EQ(series_of(plot, "runs")["points"][0]["y"].get<double>(), 0.80);
  // EBOPs over two decades: a log axis, so 1000 sits nearer 500 than 50000 on the screen.
  const auto& front = series_of(plot, "Pareto front")["points"];
  double x0 = front[0]["box"]["x"], x1 = front[1]["box"]["x"], x2 = front[2]["box"]["x"];
  EXPECT_NEAR((x1 - x0) / (x2 - x0), std::log10(2.0) / std::log10(100.0), 0.02);
  EXPECT_EQ(view["tables"]["runs"], 4);

  // Without EBOPs everywhere the runs are placed by sparsity, more being better.
  fake_run(dir.file("e"), {{"eval_accuracy", 0.9}, {"sparsity", 0.5}});
  fake_run(dir.file("f"), {{"eval_accuracy", 0.8}, {"sparsity", 0.4}, {"ebops", 10.0}});
  fake_run(dir.file("g"), {{"eval_accuracy", 0.7}, {"sparsity", 0.9}});
  r = run_sparq("report " + dir.file("e") + " " + dir.file("f") + " " + dir.file("g") + " --out " + dir.file("s.html"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  view = browser_view(dir.file("s.html"));
  EXPECT_EQ(xs(series_of(plot_of(view, "pareto"), "Pareto front")), (std::vector<double>{0.5, 0.9}));
  EXPECT_EQ(xs(series_of(plot_of(view, "pareto"), "runs")), (std::vector<double>{0.4}));
}

TEST(Report, RefusesFoldersThatAreNotRunsOfThisVersion) {
  TempDir dir("report_bad");
  EXPECT_NE(error_of<sparq::ConfigError>([&] { sparq::report::run_report_html(dir.path().string()); })
                .find("not a run folder of sparq (no metrics.jsonl)"),
            std::string::npos);
  fake_run(dir.file("old"), {{"eval_accuracy", 0.9}});
  write_file(dir.file("old/run.json"), R"({"format": 7, "sparq_version": "9.1.0"})");
  EXPECT_NE(error_of<sparq::ConfigError>([&] { sparq::report::run_report_html(dir.file("old")); })
                .find("written by an incompatible version of sparq (9.1.0): run folder format 7, this sparq reads format 1"),
            std::string::npos);
}

}  // namespace
