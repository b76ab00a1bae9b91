// sparq convert --to DIALECT FILE: a config in another dialect where it can be expressed there
// (NNI v2 -> v3 with the corrected converter; PQuantML -> PQuantML with every field), and a
// one-line reason where it cannot.
#include <fmt/format.h>

#include <filesystem>

#include "cli/commands.h"
#include "sparq/config/dialect.h"
#include "sparq/config/job.h"
#include "sparq/config/nni.h"
#include "sparq/config/pquant.h"
#include "sparq/error.h"

namespace sparq::cli {

namespace {

std::string emit(const YAML::Node& node) {
  YAML::Emitter out;
  out << node;
  return std::string(out.c_str()) + "\n";
}

}  // namespace

int convert_command(const ConvertArgs& args) {
  auto doc = config::load_config_file(args.config);
  const auto config = config::is_job(doc) ? config::load_job_compression(doc) : doc;
  Plan plan = config::load_plan(config.file, config.root);  // validates whatever the dialect
  const bool nni = plan.dialect.rfind("nni", 0) == 0;
  if (args.to == "nni-v3") {
    if (!nni)
      throw ConfigError(fmt::format("{}: a {} config has no NNI form: its pruning methods (cs, dst, pdp, wanda, ...) "
                                    "and fixed-point quantizers are not NNI's pruners and integer quantizers",
                                    args.config, plan.dialect));
    YAML::Node list = config.root.IsMap() ? config.root["config_list"] : config.root;
    if (list.IsScalar())  // a config_list file, relative to the file that names it
      list = config::load_config_file((std::filesystem::path(config.file).parent_path() / list.Scalar()).string()).root;
    std::vector<std::string> notes;
    YAML::Node v3 = config::is_nni_v2(list) ? config::nni_v2_to_v3(config.file, list, &notes) : list;
    for (const auto& note : notes) fmt::print(stderr, "note: {}\n", note);
    fmt::print("{}", emit(v3));
    return 0;
  }
  if (args.to == "pquantml") {
    if (plan.dialect != "pquantml")
      throw ConfigError(fmt::format("{}: an {} list has no PQuantML form: NNI's pruners (L1NormPruner, AGPPruner, "
                                    "...) and their mask settings are not PQuantML's pruning methods",
                                    args.config, plan.dialect));
    fmt::print("{}", config::write_pquant(config::read_pquant(config.file, config.root)));
    return 0;
  }
  throw ConfigError(fmt::format("--to: '{}' is not a dialect sparq writes (nni-v3, pquantml)", args.to));
}

}  // namespace sparq::cli
