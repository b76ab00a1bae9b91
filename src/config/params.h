// Reading a method's or pruner's arguments from a YAML mapping against their registered
// ParamInfo list (type, range, choices, default), for every dialect.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "sparq/plan.h"
#include "sparq/prune/methods.h"
#include "sparq/yaml/reader.h"

namespace sparq::config {

/// Every parameter of `params`: the mapping's value (checked) or the default.
std::map<std::string, ParamValue> read_params(const yaml::MapReader& r, const std::vector<prune::ParamInfo>& params);

}  // namespace sparq::config
