#include "params.h"

namespace sparq::config {

std::map<std::string, ParamValue> read_params(const yaml::MapReader& r, const std::vector<prune::ParamInfo>& params) {
  std::map<std::string, ParamValue> out;
  for (const auto& p : params) {
    ParamValue v = p.fallback;
    if (r.has(p.name)) {
      switch (p.kind) {
        case prune::ParamKind::Bool: v = r.get_bool(p.name, false); break;
        case prune::ParamKind::Int:
        case prune::ParamKind::OptionalInt:
          v = r.get_int(p.name, 0, p.min <= -1e308 ? INT64_MIN : static_cast<int64_t>(p.min),
                        p.max >= 1e308 ? INT64_MAX : static_cast<int64_t>(p.max));
          break;
        case prune::ParamKind::Float: v = r.get_double(p.name, 0.0, p.min, p.max); break;
        case prune::ParamKind::Choice: v = r.get_choice(p.name, "", p.choices); break;
      }
    }
    out[p.name] = v;
  }
  return out;
}

}  // namespace sparq::config
