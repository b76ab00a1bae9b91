// The run report: one self-contained HTML page per run folder (report.html, plain SVG, no scripts,
// opens from disk) drawn from the folder's own files (metrics.jsonl, precision.json, run.json,
// fitcompress.json, job.yaml), and a comparison page of several runs (accuracy against EBOPs or
// sparsity, with the Pareto front). docs/report.md describes both.
#pragma once

#include <string>
#include <vector>

namespace sparq::report {

/// The report of one run folder. Throws ConfigError when the folder is not a run folder (no
/// metrics.jsonl or job.yaml), was written by an incompatible version, or its files are damaged.
std::string run_report_html(const std::string& run_dir);

/// Writes RUN/report.html (atomically); returns its path.
std::string write_run_report(const std::string& run_dir);

/// The last epoch of each run: accuracy against EBOPs when every run has EBOPs, else against
/// sparsity; the Pareto front (most accurate for its cost) drawn and marked in the table.
std::string comparison_report_html(const std::vector<std::string>& run_dirs);

}  // namespace sparq::report
