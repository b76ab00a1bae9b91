// `sparq report RUN...`: one run folder's report.html written again (or to --out), or the
// comparison page of several runs (accuracy against EBOPs or sparsity, Pareto front).
#include <fmt/format.h>

#include "cli/commands.h"
#include "sparq/io/files.h"
#include "sparq/report/report.h"

namespace sparq::cli {

int report_command(const ReportArgs& args) {
  std::string path;
  if (args.run_dirs.size() == 1 && args.out.empty()) {
    path = report::write_run_report(args.run_dirs[0]);
  } else {
    path = args.out.empty() ? "report.html" : args.out;
    io::write_file_atomic(path, args.run_dirs.size() == 1 ? report::run_report_html(args.run_dirs[0])
                                                          : report::comparison_report_html(args.run_dirs));
  }
  fmt::print("report: {}\n", path);
  return 0;
}

}  // namespace sparq::cli
