// sparq fixed: the calculator and the CSV mode on the golden ap_fixed table.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "test_util.h"

using sparq::test::run_sparq;
using sparq::test::TempDir;
using sparq::test::write_file;

TEST(FixedCli, PrintsValueCodeAndType) {
  auto r = run_sparq("fixed --k 1 --i 2 --f 3 --round RND --overflow SAT 1.37 -2.6 5");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("ap_fixed<6,3,AP_RND,AP_SAT>  (k=1, i=2, f=3): range [-4, 3.875], step 0.125"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("1.375  001.011"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("-2.625  101.011"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("3.875  011.111"), std::string::npos) << r.output;
  auto u = run_sparq("fixed --k 0 --i 2 --f 2 --round TRN --overflow WRAP -- -0.25");
  EXPECT_NE(u.output.find("ap_ufixed<4,2,AP_TRN,AP_WRAP>"), std::string::npos) << u.output;
  EXPECT_NE(u.output.find("3.75  11.11"), std::string::npos) << u.output;
  auto bad = run_sparq("fixed --k 0 --i 2 --f 2 --overflow WRAP_SM 1");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.output.find("WRAP_SM needs a signed type"), std::string::npos) << bad.output;
  EXPECT_EQ(run_sparq("fixed --k 1 --i 2 --f 3 --round NEAREST 1").exit_code, 2);
  // No silent defaults: values need the whole format.
  auto partial = run_sparq("fixed --k 1 1.0");
  EXPECT_EQ(partial.exit_code, 2);
  EXPECT_NE(partial.output.find("give the format with --k, --i and --f"), std::string::npos) << partial.output;
  EXPECT_EQ(run_sparq("fixed 1.0").exit_code, 2);
}

TEST(FixedCli, GoldenTableThroughCsvMode) {
  std::string golden = sparq::test::golden_table();
  ASSERT_TRUE(std::filesystem::exists(golden)) << golden << " is missing";
  TempDir dir("fixed_csv");
  auto r = run_sparq("fixed --csv " + golden + " --out " + dir.file("out.csv"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(dir.file("out.csv"));
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "x,k,i,f,round,overflow,expected,quantized");
  size_t rows = 0, same = 0;
  while (std::getline(in, line)) {
    auto last = line.rfind(','), prev = line.rfind(',', last - 1);
    ++rows;
    // Both columns are %.17g text: equal text means the same double.
    same += line.substr(prev + 1, last - prev - 1) == line.substr(last + 1);
  }
  EXPECT_EQ(rows, 49728u);
  EXPECT_EQ(same, rows);
}

TEST(FixedCli, BadCsvRowsNameTheLine) {
  TempDir dir("fixed_bad");
  write_file(dir.file("a.csv"), "x,k,i,f,round,overflow,note\n1.5,1,2,3,RND,SAT,ok\n2,1,2,x,RND,SAT,bad\n");
  auto r = run_sparq("fixed --csv " + dir.file("a.csv"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find(dir.file("a.csv") + ":3: f: 'x' is not an integer"), std::string::npos) << r.output;
  write_file(dir.file("b.csv"), "x,k,i,f,round,overflow\n1,2,2,3,RND,SAT\n");
  r = run_sparq("fixed --csv " + dir.file("b.csv"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find(":2: fixed-point format: k = 2 must be 0 or 1"), std::string::npos) << r.output;
  write_file(dir.file("c.csv"), "x,k,i,round,overflow\n1,1,2,RND,SAT\n");
  r = run_sparq("fixed --csv " + dir.file("c.csv"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find(":1: no column 'f'"), std::string::npos) << r.output;
  write_file(dir.file("d.csv"), "x,k,i,f,round,overflow,note\n1.5,1,2,3,RND,SAT,kept\n");
  r = run_sparq("fixed --csv " + dir.file("d.csv"));
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("1.5,1,2,3,RND,SAT,kept,1.5"), std::string::npos) << r.output;
}

TEST(FixedCli, OutReplacesOnlyRegularFilesAndDashIsStdout) {
  TempDir dir("fixed_out");
  write_file(dir.file("in.csv"), "x,k,i,f,round,overflow\n0.3,1,2,3,RND,SAT\n");
  write_file(dir.file("old.csv"), "previous\n");
  auto ok = run_sparq("fixed --csv " + dir.file("in.csv") + " --out " + dir.file("old.csv"));
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_EQ(sparq::test::read_text(dir.file("old.csv")), "x,k,i,f,round,overflow,quantized\n0.3,1,2,3,RND,SAT,0.25\n");
  // A folder or a device is never replaced; the message names it; no temporary file is left.
  std::filesystem::create_directories(dir.file("folder"));
  for (const std::string& target : {dir.file("folder"), std::string("/dev/null")}) {
    auto r = run_sparq("fixed --csv " + dir.file("in.csv") + " --out " + target);
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("cannot write " + target + ": it exists and is not a regular file"), std::string::npos) << r.output;
  }
  EXPECT_TRUE(std::filesystem::is_directory(dir.file("folder")));
  EXPECT_TRUE(std::filesystem::is_character_file("/dev/null"));
  auto missing = run_sparq("fixed --csv " + dir.file("in.csv") + " --out " + dir.file("no/such/dir/out.csv"));
  EXPECT_EQ(missing.exit_code, 2) << missing.output;
  EXPECT_NE(missing.output.find("does not exist"), std::string::npos) << missing.output;
  // A bad row leaves the previous file as it was.
  write_file(dir.file("bad.csv"), "x,k,i,f,round,overflow\n0.3,1,2,3,RND,SAT\nzz,1,2,3,RND,SAT\n");
  auto bad = run_sparq("fixed --csv " + dir.file("bad.csv") + " --out " + dir.file("old.csv"));
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_EQ(sparq::test::read_text(dir.file("old.csv")), "x,k,i,f,round,overflow,quantized\n0.3,1,2,3,RND,SAT,0.25\n");
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 3);  // in.csv, old.csv, bad.csv: no temporary left behind
  auto dash = run_sparq("fixed --csv " + dir.file("in.csv") + " --out -");
  EXPECT_EQ(dash.exit_code, 0);
  EXPECT_NE(dash.output.find("0.3,1,2,3,RND,SAT,0.25"), std::string::npos) << dash.output;
}
