// Channel dependencies of a Graph (spec nni-config §2.9): weight layers whose output channels meet
// in an element-wise add (or a concat along a dim other than the channels) must keep the same
// channels, or the add's inputs no longer line up once channels are removed.
#pragma once

#include <string>
#include <vector>

#include "sparq/models/graph.h"

namespace sparq::models {

/// Sets (of two or more) of weight layers (Linear, Conv) whose outputs are added together: for
/// every add, the nearest weight layer upstream of each input, walking through nodes that keep
/// the channel count (BatchNorm, activations, pooling, other adds); overlapping sets merged.
/// In graph order.
std::vector<std::vector<std::string>> channel_dependency_sets(const Graph& graph);

}  // namespace sparq::models
