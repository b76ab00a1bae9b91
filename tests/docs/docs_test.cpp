// The docs say what the code does: the PQuantML key table is the parser's own schema, and every
// command the README shows is one `sparq --help` lists.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "sparq/config/pquant.h"
#include "test_util.h"

namespace {
std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

TEST(Docs, PquantKeyTableIsTheParsersSchema) {
  auto doc = read(std::string(SPARQ_SOURCE_DIR) + "/docs/pquantml-config.md");
  // The program's table (this test binary registers a method of its own, so not its own table).
  auto table = sparq::test::run_sparq("config keys").output;
  ASSERT_NE(table.find("| `quantization_parameters` | `round_mode` |"), std::string::npos) << table;
  EXPECT_NE(doc.find(table), std::string::npos)
      << "docs/pquantml-config.md does not hold the table `sparq config keys` prints; paste it in again:\n"
      << table;
  // Every key of the schema is in it (so a key the parser accepts is documented), seeds' keys too.
  for (const auto& k : sparq::config::pquant_keys())
    EXPECT_NE(table.find("| `" + k.section + "` | `" + k.key + "` |"), std::string::npos) << k.key;
  for (const char* key : {"round_mode", "quantize_input", "quantize_output", "enable_quantization", "use_real_tanh",
                          "use_relu_multiplier", "overflow_mode_data", "overflow_mode_parameters", "enable_fitcompress",
                          "quantization_schedule", "pruning_schedule", "compression_goal", "f_lambda"})
    EXPECT_NE(doc.find(std::string("`") + key + "`"), std::string::npos) << key;
}

TEST(Docs, EveryReadmeCommandIsOneTheProgramHas) {
  auto readme = read(std::string(SPARQ_SOURCE_DIR) + "/README.md");
  auto help = sparq::test::run_sparq("--help").output;
  auto config_help = sparq::test::run_sparq("config --help").output;
  // The commands in the README's code blocks ("sparq run ...", "build/sparq inspect ...").
  std::string code;
  for (size_t open = readme.find("```"); open != std::string::npos; open = readme.find("```", open)) {
    size_t body = readme.find('\n', open) + 1, close = readme.find("```", body);
    if (close == std::string::npos) break;
    code += readme.substr(body, close - body);
    open = close + 3;
  }
  std::regex command(R"((?:^|\n|build/)sparq ([a-z-]+)(?: ([a-z]+))?)");
  std::set<std::string> seen;
  for (std::sregex_iterator it(code.begin(), code.end(), command), end; it != end; ++it) {
    std::string sub = (*it)[1], second = (*it)[2];
    if (sub.rfind("-", 0) == 0) continue;  // --help, --version
    seen.insert(sub);
    EXPECT_NE(help.find("  " + sub + " "), std::string::npos) << "README names `sparq " << sub << "`";
    if (sub == "config") {
      EXPECT_NE(config_help.find("  " + second + " "), std::string::npos) << "sparq config " << second;
    }
  }
  for (const char* sub : {"run", "inspect", "config", "fixed"}) EXPECT_TRUE(seen.count(sub)) << sub;
}
