// The hls4ml hand-off (see hls4ml.h). The QONNX writer's model is rewritten in passes, each the
// counterpart of a qonnx preparation step hls4ml's docs ask for (spec: export-search-anchors §1,
// fixed-point-hgq-qonnx-anchors §3.5), then the configuration is derived from the final graph:
// every tensor's exact fixed-point type, propagated from the Quant nodes and the accumulators.
#include <fmt/format.h>
#include <onnx/shape_inference/implementation.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include "export/onnx_model.h"
#include "sparq/error.h"
#include "sparq/export/hls4ml.h"
#include "sparq/export/precision.h"
#include "sparq/io/files.h"
#include "sparq/compress/compress.h"
#include "sparq/layers/pq_layers.h"

namespace sparq::exporting {

namespace {

namespace fs = std::filesystem;
using Shape = std::vector<int64_t>;

const char* kChannelsLast = "qonnx.custom_op.channels_last";
const char* kDefaultPrecision = "fixed<16,6>";  // hls4ml's own default, for what has no exact type

// ---- fixed-point types as hls4ml writes them ----
struct FixedType {
  bool is_signed = true;
  int width = 1, integer = 1;
  std::string round, sat;  ///< empty: hls4ml's defaults (TRN, WRAP), for sums that never round or overflow
  std::string str() const {
    std::string modes = round.empty() ? "" : "," + round + "," + sat;
    return fmt::format("{}fixed<{},{}{}>", is_signed ? "" : "u", width, integer, modes);
  }
  int fractional() const { return width - integer; }
};

/// What a type holds after a ReLU: the non-negative half (one bit less when signed).
FixedType unsigned_of(FixedType t) {
  if (t.is_signed) t.is_signed = false, t.width = std::max(t.width - 1, 1), t.integer -= 1;
  t.round.clear(), t.sat.clear();
  return t;
}
/// The narrowest type holding both (a Concat's inputs); `carry`: one integer bit more (a sum).
FixedType covering(const FixedType& a, const FixedType& b, bool carry) {
  FixedType t;
  t.is_signed = a.is_signed || b.is_signed;
  const int f = std::max(a.fractional(), b.fractional());
  auto magnitude_bits = [&](const FixedType& x) { return x.integer - (x.is_signed ? 1 : 0); };
  const int i = std::max(magnitude_bits(a), magnitude_bits(b)) + (carry ? 1 : 0);
  t.integer = i + (t.is_signed ? 1 : 0);
  t.width = t.integer + f;
  return t;
}

// ---- initializers ----
torch::Tensor values_of(const onnx::TensorProto& t) {
  Shape dims(t.dims().begin(), t.dims().end());
  auto type = t.data_type() == onnx::TensorProto::INT64 ? torch::kInt64 : torch::kFloat32;
  if (t.data_type() != onnx::TensorProto::FLOAT && t.data_type() != onnx::TensorProto::INT64)
    throw Error(fmt::format("export --format hls4ml: initializer '{}' has a type hls4ml does not read", t.name()));
  auto v = torch::empty(dims, type);
  if (t.raw_data().size() != static_cast<size_t>(v.numel() * v.element_size()))
    throw Error(fmt::format("internal error: initializer '{}' holds {} bytes", t.name(), t.raw_data().size()));
  std::memcpy(v.data_ptr(), t.raw_data().data(), t.raw_data().size());
  return v;
}
void set_values(onnx::TensorProto* t, const torch::Tensor& v_in) {
  auto v = v_in.contiguous().to(torch::kFloat32);
  t->clear_dims();
  for (auto d : v.sizes()) t->add_dims(d);
  t->set_data_type(onnx::TensorProto::FLOAT);
  t->set_raw_data(std::string(static_cast<const char*>(v.data_ptr()), v.numel() * 4));
}

const onnx::AttributeProto* attribute(const onnx::NodeProto& n, const std::string& name) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}
int64_t int_attribute(const onnx::NodeProto& n, const std::string& name, int64_t fallback) {
  const auto* a = attribute(n, name);
  return a ? a->i() : fallback;
}
std::string string_attribute(const onnx::NodeProto& n, const std::string& name) {
  const auto* a = attribute(n, name);
  return a ? a->s() : std::string();
}
void set_string_attribute(onnx::NodeProto& n, const std::string& name, const std::string& value) {
  for (auto& a : *n.mutable_attribute())
    if (a.name() == name) a.set_s(value);
}
void set_int_attribute(onnx::NodeProto& n, const std::string& name, int64_t value) {
  for (auto& a : *n.mutable_attribute())
    if (a.name() == name) a.set_i(value);
}

Shape to_channels_last(const Shape& s) {  // [N, C, *S] -> [N, *S, C]
  Shape out{s[0]};
  out.insert(out.end(), s.begin() + 2, s.end());
  out.push_back(s[1]);
  return out;
}
Shape to_channels_first(const Shape& s) {  // [N, *S, C] -> [N, C, *S]
  Shape out{s[0], s.back()};
  out.insert(out.end(), s.begin() + 1, s.end() - 1);
  return out;
}
std::vector<int64_t> perm_to_last(size_t rank) {
  std::vector<int64_t> p{0};
  for (size_t d = 2; d < rank; ++d) p.push_back(static_cast<int64_t>(d));
  p.push_back(1);
  return p;
}
std::vector<int64_t> perm_to_first(size_t rank) {
  std::vector<int64_t> p{0, static_cast<int64_t>(rank) - 1};
  for (size_t d = 1; d + 1 < rank; ++d) p.push_back(static_cast<int64_t>(d));
  return p;
}

/// The sparq layer a node's hint names: `fc1.input` -> fc1, `layer1.0.conv1` -> itself.
std::string layer_of(const std::string& hint) {
  for (const char* suffix : {".weight.quant", ".bias.quant", ".input", ".output", ".weight", ".bias", ".multiplier"}) {
    const std::string s = suffix;
    if (hint.size() > s.size() && hint.compare(hint.size() - s.size(), s.size(), s) == 0) return hint.substr(0, hint.size() - s.size());
  }
  return hint;
}

bool is_unary_elementwise(const std::string& op) {
  return op == "Relu" || op == "LeakyRelu" || op == "Tanh" || op == "Sigmoid" || op == "Clip" || op == "Identity" ||
         op == "Quant" || op == "Erf";
}
bool is_channels_last_op(const std::string& op) {
  return op == "Conv" || op == "MaxPool" || op == "AveragePool" || op == "BatchNormalization";
}

class Prep {
 public:
  Prep(BuiltOnnx built, models::Graph& graph) : model_(std::move(built.model)), origin_(std::move(built.origin_of)), graph_(graph) {
    auto* g = model_.mutable_graph();
    nodes_.assign(g->node().begin(), g->node().end());
    for (auto& t : *g->mutable_initializer()) inits_[t.name()] = t;
  }

  Hls4mlExport run(const std::string& dir, const Hls4mlOptions& options) {
    set_batch_one();
    infer_shapes();
    drop_output_identity();
    fold_parameters();
    check_data_lanes();
    convert_to_channels_last();
    rename();
    Hls4mlExport result;
    result.onnx_path = (fs::path(dir) / "model_hls4ml.onnx").string();
    result.config_path = (fs::path(dir) / "hls4ml.yaml").string();
    write_model(result.onnx_path);
    io::write_file_atomic(result.config_path, config(options));
    result.nodes = static_cast<int64_t>(nodes_.size());
    result.exact = inexact_.empty();
    result.notes = notes_;
    result.notes.insert(result.notes.end(), inexact_.begin(), inexact_.end());
    result.origin = origin_;
    return result;
  }

 private:
  // ---- graph queries ----
  bool is_init(const std::string& t) const { return inits_.count(t) > 0; }
  int producer(const std::string& t) const {
    for (size_t n = 0; n < nodes_.size(); ++n)
      for (const auto& o : nodes_[n].output())
        if (o == t) return static_cast<int>(n);
    return -1;
  }
  std::vector<int> consumers(const std::string& t) const {
    std::vector<int> out;
    for (size_t n = 0; n < nodes_.size(); ++n)
      for (const auto& i : nodes_[n].input())
        if (i == t) {
          out.push_back(static_cast<int>(n));
          break;
        }
    return out;
  }
  /// A weight's tensor: an initializer, or the output of a Quant of one (after fold_parameters).
  bool is_parameter(const std::string& t) const {
    if (is_init(t)) return true;
    int p = producer(t);
    return p >= 0 && nodes_[p].op_type() == "Quant" && is_init(nodes_[p].input(0));
  }
  std::string hint_of(const onnx::NodeProto& n) const {
    auto it = origin_.find(n.name());
    return it == origin_.end() ? n.name() : it->second;
  }
  std::string fresh(const std::string& hint) {
    std::string name = hint;
    for (int i = 1; taken(name); ++i) name = fmt::format("{}_{}", hint, i);
    made_.insert(name);
    return name;
  }
  bool taken(const std::string& name) const { return made_.count(name) || shapes_.count(name) || is_init(name); }
  std::string add_init(const torch::Tensor& v, const std::string& hint) {
    onnx::TensorProto t;
    t.set_name(fresh(hint));
    set_values(&t, v);
    shapes_[t.name()] = Shape(v.sizes().begin(), v.sizes().end());
    inits_[t.name()] = t;
    return t.name();
  }
  onnx::NodeProto transpose(const std::string& in, const std::string& out, const std::vector<int64_t>& perm) {
    onnx::NodeProto n;
    n.set_op_type("Transpose");
    n.set_name(fresh(in + "/Transpose"));
    n.add_input(in);
    n.add_output(out);
    auto* a = n.add_attribute();
    a->set_name("perm");
    a->set_type(onnx::AttributeProto::INTS);
    for (auto p : perm) a->add_ints(p);
    return n;
  }

  // ---- passes ----
  void set_batch_one() {
    for (auto* list : {model_.mutable_graph()->mutable_input(), model_.mutable_graph()->mutable_output()})
      for (auto& vi : *list) vi.mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(0)->set_dim_value(1);
  }
  /// ONNX's own shape inference with each Quant shown as an Identity (qonnx's InferShapes does the same).
  void infer_shapes() {
    onnx::ModelProto copy = model_;
    for (auto& n : *copy.mutable_graph()->mutable_node())
      if (n.op_type() == "Quant") {
        std::string x = n.input(0);
        n.clear_input(), n.add_input(x), n.clear_attribute(), n.clear_domain(), n.set_op_type("Identity");
      }
    try {
      onnx::shape_inference::InferShapes(copy);
    } catch (const std::exception& e) {
      throw Error(fmt::format("internal error: shape inference of the QONNX model failed: {}", e.what()));
    }
    auto take = [&](const onnx::ValueInfoProto& vi) {
      Shape s;
      for (const auto& d : vi.type().tensor_type().shape().dim()) s.push_back(d.dim_value());
      shapes_[vi.name()] = s;
    };
    for (const auto& vi : copy.graph().value_info()) take(vi);
    for (const auto& vi : copy.graph().input()) take(vi);
    for (const auto& vi : copy.graph().output()) take(vi);
    for (const auto& [name, t] : inits_) shapes_[name] = Shape(t.dims().begin(), t.dims().end());
    for (const auto& n : nodes_)
      for (const auto& o : n.output())
        if (!shapes_.count(o)) throw Error(fmt::format("internal error: no shape inferred for '{}' ({})", o, n.name()));
  }
  /// The writer names the logits through an Identity; hls4ml's output layer must be a real node.
  void drop_output_identity() {
    auto* out = model_.mutable_graph()->mutable_output(0);
    int p = producer(out->name());
    if (p < 0 || nodes_[p].op_type() != "Identity") return;
    const std::string in = nodes_[p].input(0);
    if (producer(in) < 0) return;  // the input itself: keep the node
    shapes_[in] = shapes_[out->name()];
    out->set_name(in);
    nodes_.erase(nodes_.begin() + p);
  }

  /// The Quant parameters (scale, bitwidth) of a fixed-point Quant, or nothing for integer ones.
  struct QuantParams {
    torch::Tensor scale, bitwidth;
    bool is_signed = true, narrow = false, power_of_two = true;
    std::string rounding;
  };
  QuantParams quant_params(const onnx::NodeProto& n) const {
    QuantParams q;
    q.scale = values_of(inits_.at(n.input(1))).to(torch::kFloat64);
    auto zeropt = values_of(inits_.at(n.input(2)));
    q.bitwidth = values_of(inits_.at(n.input(3))).to(torch::kFloat64);
    q.is_signed = int_attribute(n, "signed", 1) != 0;
    q.narrow = int_attribute(n, "narrow", 0) != 0;
    q.rounding = string_attribute(n, "rounding_mode");
    auto m = torch::frexp(q.scale);
    q.power_of_two = (std::get<0>(m) == 0.5).all().item<bool>() && (zeropt == 0).all().item<bool>();
    return q;
  }
  static FixedType type_of(const QuantParams& q) {
    FixedType t;
    t.is_signed = q.is_signed;
    t.width = static_cast<int>(std::ceil(q.bitwidth.reshape({-1})[0].item<double>()));
    t.integer = t.width + static_cast<int>(std::lround(std::log2(q.scale.reshape({-1})[0].item<double>())));
    t.round = q.rounding == "FLOOR" ? "TRN" : "RND_CONV";
    t.sat = q.narrow ? "SAT_SYM" : "SAT";
    return t;
  }

  /// Every weight and bias as hls4ml's FuseQuantWithConstant needs it: an initializer followed by
  /// one Quant with scalar, power-of-two parameters feeding its layer directly (the writer's
  /// Transpose and zero-width Mul folded in, as qonnx's FoldTransposeIntoQuantInit does). A
  /// per-channel or per-weight format becomes the one type covering every live element, which
  /// holds each value exactly (weights are on their grid already).
  void fold_parameters() {
    for (size_t n = 0; n < nodes_.size(); ++n) {
      const std::string op = nodes_[n].op_type();
      if (op != "MatMul" && op != "Conv" && op != "Add" && op != "BatchNormalization" && op != "Mul") continue;
      for (int j = 0; j < nodes_[n].input_size(); ++j) {
        Chain c;
        if (!trace(nodes_[n].input(j), c) || c.nodes.empty()) continue;
        n -= fold(c, static_cast<int>(n), j);
      }
    }
  }
  struct Chain {
    torch::Tensor value;
    int quant = -1;
    std::vector<int> nodes;
  };
  bool trace(const std::string& t, Chain& c) const {
    if (is_init(t)) {
      c.value = values_of(inits_.at(t)).to(torch::kFloat64);
      return true;
    }
    int p = producer(t);
    if (p < 0 || consumers(t).size() != 1) return false;
    const auto& node = nodes_[p];
    const std::string& op = node.op_type();
    if (op == "Transpose") {
      if (!trace(node.input(0), c)) return false;
      const auto* perm = attribute(node, "perm");
      c.value = c.value.permute(Shape(perm->ints().begin(), perm->ints().end()));
    } else if (op == "Mul" && is_init(node.input(1))) {
      if (!trace(node.input(0), c)) return false;
      c.value = c.value * values_of(inits_.at(node.input(1))).to(torch::kFloat64);
    } else if (op == "Quant" && is_init(node.input(1)) && is_init(node.input(2)) && is_init(node.input(3))) {
      if (!trace(node.input(0), c) || c.quant >= 0) return false;
      c.quant = p;
    } else {
      return false;
    }
    c.nodes.push_back(p);
    return true;
  }
  /// Rewrites the chain feeding input `j` of node `n`; returns how many nodes before `n` went.
  int fold(const Chain& c, int n, int j) {
    const std::string target = nodes_[n].input(j);
    int removed_before = 0;
    std::optional<onnx::NodeProto> quant;
    if (c.quant >= 0) {
      const auto& old = nodes_[c.quant];
      auto q = quant_params(old);
      onnx::NodeProto node = old;  // its name (and so its origin), domain and attributes
      node.clear_input();
      node.add_input(add_init(c.value, target + ".value"));
      if (q.power_of_two && (q.scale.numel() > 1 || q.bitwidth.numel() > 1)) {
        auto alive = q.bitwidth > 0;
        auto f = -torch::log2(q.scale).expand_as(q.bitwidth);
        const double k = q.is_signed ? 1 : 0;
        double F = 0, top = 0;
        if (alive.any().item<bool>()) {
          F = f.masked_select(alive).max().item<double>();
          top = (q.bitwidth - k - f).masked_select(alive).max().item<double>();  // i of the widest element
        }
        const double width = std::max(k + top + F, 1.0);
        q.scale = torch::tensor(std::ldexp(1.0, -static_cast<int>(F)), torch::kFloat64);
        q.bitwidth = torch::tensor(width, torch::kFloat64);
        set_int_attribute(node, "narrow", 0);
        notes_.push_back(fmt::format("{}: {} formats per element, written as the covering {} (exact for the values)",
                                     hint_of(old), alive.numel(), type_of(QuantParams{q.scale, q.bitwidth, q.is_signed, false, true, "ROUND"}).str()));
      }
      if (!q.power_of_two) {
        if (q.bitwidth.numel() > 1)
          throw Error(fmt::format("export --format hls4ml: {}: per-channel integer bit widths; hls4ml takes one bit width "
                                  "per Quant",
                                  hint_of(old)));
        inexact_.push_back(fmt::format("{}: scale not a power of two: hls4ml scales it with ApplyAlpha nodes (not bit exact)",
                                     hint_of(old)));
      }
      // An integer quantizer's scale and zero point stay as written (per channel too); a
      // fixed-point one is one scalar scale by now.
      auto scale = q.scale.numel() == 1 ? q.scale.reshape({}) : q.scale;
      auto zeropt = values_of(inits_.at(old.input(2))).to(torch::kFloat64);
      node.add_input(add_init(scale, target + ".scale"));
      node.add_input(add_init(q.power_of_two ? torch::zeros_like(scale) : zeropt, target + ".zeropt"));
      node.add_input(add_init(q.bitwidth.reshape({}), target + ".bitwidth"));
      if (q.rounding != "ROUND" && q.rounding != "FLOOR") set_string_attribute(node, "rounding_mode", "ROUND");
      node.clear_output();
      node.add_output(target);
      quant = node;
    }
    // Remove the chain; the new Quant takes the old Quant's place (qonnx keeps its position).
    std::vector<int> gone = c.nodes;
    std::sort(gone.rbegin(), gone.rend());
    int insert_at = c.quant;
    for (int g : gone) {
      nodes_.erase(nodes_.begin() + g);
      if (g < n) ++removed_before;
      if (g < insert_at) --insert_at;
    }
    if (quant) {
      nodes_.insert(nodes_.begin() + insert_at, *quant);
      --removed_before;
    } else {
      nodes_[n - removed_before].set_input(j, add_init(c.value, target + ".value"));
    }
    shapes_[target] = Shape(c.value.sizes().begin(), c.value.sizes().end());
    return removed_before;
  }

  /// hls4ml turns a data-lane Quant into one linear activation only for one power-of-two scale,
  /// one bit width, ROUND or FLOOR; anything else is refused here rather than computed otherwise.
  void check_data_lanes() {
    for (const auto& n : nodes_) {
      if (n.op_type() != "Quant" || is_init(n.input(0))) continue;
      auto q = quant_params(n);
      const std::string hint = hint_of(n);
      if (q.scale.numel() > 1 || q.bitwidth.numel() > 1)
        throw Error(fmt::format("export --format hls4ml: {}: the lane has {} formats (per channel or per element); "
                                "hls4ml's QONNX frontend takes one bit width and one power-of-two scale per Quant: train "
                                "its activations per tensor, or export --format onnx",
                                hint, std::max(q.scale.numel(), q.bitwidth.numel())));
      if (q.rounding != "ROUND" && q.rounding != "FLOOR")
        throw Error(fmt::format("export --format hls4ml: {}: rounding {} ({}): hls4ml maps only ROUND (RND_CONV) and FLOOR "
                                "(TRN); train with RND_CONV or TRN",
                                hint, q.rounding, q.rounding == "DOWN" ? "TRN_ZERO" : q.rounding == "HALF_UP" ? "RND_INF" : "RND_ZERO"));
      if (q.bitwidth.item<double>() < 1)
        throw Error(fmt::format("export --format hls4ml: {}: the lane has zero width (every value is 0)", hint));
      if (!q.power_of_two)
        inexact_.push_back(fmt::format("{}: scale not a power of two: hls4ml scales it with ApplyAlpha nodes (not bit exact)", hint));
    }
  }

  /// qonnx's ConvertToChannelsLastAndClean, for the graphs sparq writes: tensors of rank >= 3 become
  /// channels-last from the input on (one Transpose after the graph input), the layout ops move to
  /// the channels_last domain with OHWI convolution weights, elementwise ops follow their input,
  /// and a flatten into a dense layer permutes that layer's weight rows instead of transposing
  /// back (AbsorbChanFirstIntoMatMul). Anything else gets its channels-first tensor back.
  void convert_to_channels_last() {
    auto* g = model_.mutable_graph();
    const std::string input = g->input(0).name();
    bool spatial = false;  // as qonnx: only a graph with a layout op changes (a flatten alone does not)
    for (const auto& n : nodes_) spatial = spatial || (is_channels_last_op(n.op_type()) && shapes_.at(n.input(0)).size() >= 3);
    if (!spatial) return;
    uses_channels_last_ = true;
    std::vector<onnx::NodeProto> out;
    std::map<std::string, std::string> rename;  // a channels-first tensor -> its channels-last twin
    std::map<std::string, std::string> back;    // a channels-last tensor -> a channels-first copy
    std::set<std::string> last;                 // tensors in channels-last layout
    auto to_first = [&](const std::string& t) {
      if (back.count(t)) return back[t];
      std::string cf = fresh(t + "_cf");
      const auto& s = shapes_.at(t);
      out.push_back(transpose(t, cf, perm_to_first(s.size())));
      shapes_[cf] = to_channels_first(s);
      return back[t] = cf;
    };
    if (shapes_.at(input).size() >= 3) {
      std::string cl = fresh(input + "_cl");
      out.push_back(transpose(input, cl, perm_to_last(shapes_.at(input).size())));
      shapes_[cl] = to_channels_last(shapes_.at(input));
      rename[input] = cl;
      last.insert(cl);
    }
    auto mark_last = [&](onnx::NodeProto& n) {
      for (const auto& o : n.output()) shapes_[o] = to_channels_last(shapes_.at(o)), last.insert(o);
    };
    for (size_t idx = 0; idx < nodes_.size(); ++idx) {
      onnx::NodeProto n = nodes_[idx];
      for (int j = 0; j < n.input_size(); ++j)
        if (rename.count(n.input(j))) n.set_input(j, rename[n.input(j)]);
      const std::string op = n.op_type();
      std::vector<int> data;  // inputs that are data tensors, not weights
      for (int j = 0; j < n.input_size(); ++j)
        if (!is_parameter(n.input(j)) && !n.input(j).empty()) data.push_back(j);
      bool any_last = false, all_last = !data.empty();
      for (int j : data) any_last = any_last || last.count(n.input(j)), all_last = all_last && last.count(n.input(j));
      if (!any_last) {
        out.push_back(n);
        continue;
      }
      if (is_channels_last_op(op) && data.size() == 1 && data[0] == 0) {
        n.set_domain(kChannelsLast);
        if (op == "Conv") permute_conv_weight(n.input(1));
        mark_last(n);
      } else if ((is_unary_elementwise(op) || op == "Mul" || op == "Add" || op == "Sub" || op == "Div") && all_last &&
                 scalar_parameters(n, data)) {
        mark_last(n);
      } else if (op == "Concat" && all_last) {
        const int64_t rank = static_cast<int64_t>(shapes_.at(n.input(0)).size());
        int64_t axis = int_attribute(n, "axis", 1);
        if (axis < 0) axis += rank;
        int64_t new_axis = axis == 1 ? rank - 1 : axis == 0 ? 0 : axis - 1;
        set_int_attribute(n, "axis", new_axis);
        mark_last(n);
      } else if ((op == "Flatten" || op == "Reshape") && shapes_.at(n.output(0)).size() == 2 && absorb_into_dense(n)) {
        // the dense weights were permuted: the flatten reads channels-last as it is
      } else {
        for (int j : data)
          if (last.count(n.input(j))) n.set_input(j, to_first(n.input(j)));
      }
      out.push_back(n);
    }
    // A channels-last graph output is transposed back under its own name.
    auto* output = g->mutable_output(0);
    if (last.count(output->name())) {
      std::string cl = fresh(output->name() + "_cl");
      for (auto& n : out)
        for (int j = 0; j < n.output_size(); ++j)
          if (n.output(j) == output->name()) n.set_output(j, cl);
      for (auto& n : out)
        for (int j = 0; j < n.input_size(); ++j)
          if (n.input(j) == output->name()) n.set_input(j, cl);
      shapes_[cl] = shapes_.at(output->name());
      const auto& s = shapes_[cl];
      out.push_back(transpose(cl, output->name(), perm_to_first(s.size())));
      shapes_[output->name()] = to_channels_first(s);
    }
    nodes_ = out;
  }
  /// Elementwise on a channels-last tensor: every non-data input a scalar (or none).
  bool scalar_parameters(const onnx::NodeProto& n, const std::vector<int>& data) const {
    for (int j = 0; j < n.input_size(); ++j) {
      if (std::find(data.begin(), data.end(), j) != data.end() || n.input(j).empty()) continue;
      if (n.op_type() == "Quant") continue;  // data lanes are per tensor (check_data_lanes)
      const auto& s = shapes_.at(n.input(j));
      int64_t numel = 1;
      for (auto d : s) numel *= d;
      if (numel != 1) return false;
    }
    return true;
  }
  /// The initializer behind a weight tensor (the value a weight Quant reads, or the tensor itself).
  std::string weight_initializer(const std::string& t) const {
    if (is_init(t)) return t;
    return nodes_[producer(t)].input(0);
  }
  void permute_conv_weight(const std::string& weight) {
    const std::string name = weight_initializer(weight);
    auto w = values_of(inits_.at(name));
    std::vector<int64_t> perm{0};  // OI[K...] -> O[K...]I
    for (int64_t d = 2; d < w.dim(); ++d) perm.push_back(d);
    perm.push_back(1);
    auto v = w.permute(perm).contiguous();
    set_values(&inits_.at(name), v);
    shapes_[name] = Shape(v.sizes().begin(), v.sizes().end());
    if (name != weight) shapes_[weight] = shapes_[name];
  }
  /// A flatten of a channels-last tensor whose every use (through per-tensor elementwise ops)
  /// is the data input of a dense layer: those layers' weight rows are permuted to read it.
  bool absorb_into_dense(const onnx::NodeProto& flatten) {
    const Shape& in = shapes_.at(flatten.input(0));  // [N, *S, C] channels-last
    const int64_t channels = in.back();
    int64_t positions = 1;
    for (size_t d = 1; d + 1 < in.size(); ++d) positions *= in[d];
    std::vector<int> dense;
    std::vector<std::string> frontier{flatten.output(0)};
    while (!frontier.empty()) {
      std::string t = frontier.back();
      frontier.pop_back();
      auto users = consumers(t);
      if (users.empty()) return false;  // the graph output
      for (int u : users) {
        const auto& node = nodes_[u];
        if (node.op_type() == "MatMul" && node.input(0) == t && is_parameter(node.input(1))) dense.push_back(u);
        else if (is_unary_elementwise(node.op_type()) && node.input(0) == t) frontier.push_back(node.output(0));
        else return false;
      }
    }
    for (int u : dense) {
      const std::string name = weight_initializer(nodes_[u].input(1));
      auto w = values_of(inits_.at(name));  // [C * positions, out], rows in channels-first order
      auto v = w.reshape({channels, positions, w.size(1)}).permute({1, 0, 2}).reshape({w.size(0), w.size(1)});
      set_values(&inits_.at(name), v);
    }
    return true;
  }

  /// qonnx's GiveUniqueNodeNames (`<op>_<n>` per op type, in graph order) and
  /// GiveReadableTensorNames (`<node>_out<i>`, `<node>_param<j>`, global_in, global_out).
  void rename() {
    std::map<std::string, int> count;
    std::map<std::string, std::string> origin;
    std::map<std::string, std::string> tensor;
    for (auto& n : nodes_) {
      std::string name = fmt::format("{}_{}", n.op_type(), count[n.op_type()]++);
      origin[name] = hint_of(n);
      n.set_name(name);
      for (int o = 0; o < n.output_size(); ++o) tensor.emplace(n.output(o), fmt::format("{}_out{}", name, o));
      int params = 0;
      for (const auto& i : n.input())
        if (is_init(i)) tensor.emplace(i, fmt::format("{}_param{}", name, params++));
    }
    auto* g = model_.mutable_graph();
    tensor[g->input(0).name()] = "global_in";
    tensor[g->output(0).name()] = "global_out";
    auto renamed = [&](const std::string& t) { return tensor.count(t) ? tensor[t] : t; };
    for (auto& n : nodes_) {
      for (int j = 0; j < n.input_size(); ++j) n.set_input(j, renamed(n.input(j)));
      for (int j = 0; j < n.output_size(); ++j) n.set_output(j, renamed(n.output(j)));
    }
    std::map<std::string, onnx::TensorProto> inits;
    std::map<std::string, Shape> shapes;
    for (auto& [name, t] : inits_) {
      bool used = false;
      for (const auto& n : nodes_)
        for (const auto& i : n.input()) used = used || i == renamed(name);
      if (!used) continue;  // qonnx's RemoveUnusedTensors
      t.set_name(renamed(name));
      inits[t.name()] = t;
    }
    for (const auto& [name, s] : shapes_) shapes[renamed(name)] = s;
    g->mutable_input(0)->set_name("global_in");
    g->mutable_output(0)->set_name("global_out");
    inits_ = std::move(inits), shapes_ = std::move(shapes), origin_ = std::move(origin);
  }

  void write_model(const std::string& path) {
    auto* g = model_.mutable_graph();
    g->clear_node();
    for (const auto& n : nodes_) *g->add_node() = n;
    g->clear_initializer();
    g->clear_value_info();
    auto set_shape = [&](onnx::ValueInfoProto* vi, const Shape& s, int type) {
      auto* t = vi->mutable_type()->mutable_tensor_type();
      t->set_elem_type(type);
      t->clear_shape();
      for (auto d : s) t->mutable_shape()->add_dim()->set_dim_value(d);
    };
    set_shape(g->mutable_input(0), shapes_.at("global_in"), onnx::TensorProto::FLOAT);
    set_shape(g->mutable_output(0), shapes_.at("global_out"), onnx::TensorProto::FLOAT);
    // Every tensor has its shape, initializers too (qonnx's set_initializer does the same, and
    // hls4ml looks a node's input shapes up in value_info).
    for (const auto& [name, t] : inits_) {
      *g->add_initializer() = t;
      auto* vi = g->add_value_info();
      vi->set_name(name);
      set_shape(vi, Shape(t.dims().begin(), t.dims().end()), t.data_type());
    }
    for (const auto& n : nodes_)
      for (const auto& o : n.output())
        if (o != "global_out") {
          auto* vi = g->add_value_info();
          vi->set_name(o);
          set_shape(vi, shapes_.at(o), onnx::TensorProto::FLOAT);
        }
    if (uses_channels_last_) {
      auto* opset = model_.add_opset_import();
      opset->set_domain(kChannelsLast);
      opset->set_version(13);  // qonnx: the channels-last ops take the standard opset's version
    }
    write_onnx(model_, path);
  }

  // ---- the configuration ----
  /// A Quant's type with the rounding and overflow modes the layer trained with (a weight's Quant
  /// says ROUND whatever they were: on its grid every mode gives the same values).
  FixedType with_trained_modes(FixedType t, const std::string& hint) const {
    std::string layer = layer_of(hint), target = hint.substr(std::min(hint.size(), layer.size() + 1));
    if (target.size() > 6 && target.compare(target.size() - 6, 6, ".quant") == 0) target.resize(target.size() - 6);
    auto pq = sparq::pq_layer(graph_, layer);
    if (!pq) return t;
    auto q = pq->quantizer(target);
    if (!q) return t;
    auto d = q->describe();
    if (d.kind == "integer") return t;
    t.round = quant::to_string(d.round), t.sat = quant::to_string(d.overflow);
    return t;
  }
  struct Entry {
    std::map<std::string, std::string> precision;  // weight, bias, result, accum
    bool layer = false;                            // a dense/conv layer: ReuseFactor and Strategy too
  };
  std::string config(const Hls4mlOptions& o) {
    std::map<std::string, FixedType> type;  // per tensor, where exact
    std::map<std::string, Entry> entries;
    // The input port takes the type of the Quant that reads it (through the channels-last
    // Transpose): feeding it rounds and saturates as that Quant does.
    std::optional<FixedType> input_type;
    std::vector<std::string> layout_only;  // Transpose/Flatten/Reshape between the input and that Quant
    auto users = consumers("global_in");
    while (users.size() == 1) {
      const auto& reader = nodes_[users[0]];
      if (reader.op_type() == "Quant") {
        input_type = with_trained_modes(type_of(quant_params(reader)), origin_.at(reader.name()));
        break;
      }
      if (reader.op_type() != "Transpose" && reader.op_type() != "Flatten" && reader.op_type() != "Reshape") break;
      layout_only.push_back(reader.output(0));
      users = consumers(reader.output(0));
    }
    if (input_type) {
      type["global_in"] = *input_type;
      for (const auto& t : layout_only) type[t] = *input_type;
    }
    auto type_of_tensor = [&](const std::string& t) -> std::optional<FixedType> {
      auto it = type.find(t);
      return it == type.end() ? std::nullopt : std::optional<FixedType>(it->second);
    };
    for (const auto& n : nodes_) {
      const std::string op = n.op_type(), name = n.name(), layer = layer_of(origin_.at(name));
      auto& e = entries[name];
      auto in = n.input_size() ? type_of_tensor(n.input(0)) : std::nullopt;
      std::optional<FixedType> result;
      if (op == "Quant") {
        result = with_trained_modes(type_of(quant_params(n)), origin_.at(name));
      } else if (op == "MatMul" || op == "Conv") {
        e.layer = true;
        if (auto w = type_of_tensor(n.input(1))) e.precision["weight"] = w->str();
        if (n.input_size() > 2)
          if (auto b = type_of_tensor(n.input(2))) e.precision["bias"] = b->str();
        if (auto acc = accumulator_of(graph_, layer)) {
          FixedType t;
          t.is_signed = acc->is_signed, t.width = acc->width(), t.integer = acc->integer;
          result = t;
          e.precision["accum"] = t.str();
        } else {
          inexact_.push_back(fmt::format("{} ({}): its input is not quantized, so no accumulator is exact; hls4ml's "
                                       "default {} is used",
                                       name, layer, kDefaultPrecision));
        }
      } else if (op == "Add" && n.input_size() == 2 && (is_parameter(n.input(1)) || is_parameter(n.input(0)))) {
        // The bias of the MatMul before it: hls4ml folds it into the dense layer's accumulator.
        const int bias = is_parameter(n.input(1)) ? 1 : 0;
        int p = producer(n.input(1 - bias));
        if (p >= 0 && nodes_[p].op_type() == "MatMul") {
          if (auto b = type_of_tensor(n.input(bias))) entries[nodes_[p].name()].precision["bias"] = b->str();
          result = type_of_tensor(n.input(1 - bias));
        }
      } else if (op == "Add" && n.input_size() == 2) {
        auto a = type_of_tensor(n.input(0)), b = type_of_tensor(n.input(1));
        if (a && b) result = covering(*a, *b, true);
      } else if (op == "Relu") {
        if (in) result = unsigned_of(*in);
      } else if (op == "MaxPool" || op == "Flatten" || op == "Reshape" || op == "Transpose" || op == "Identity") {
        result = in;
      } else if (op == "AveragePool" && in) {
        int64_t window = 1;
        for (auto k : attribute(n, "kernel_shape")->ints()) window *= k;
        const int extra = static_cast<int>(std::ceil(std::log2(static_cast<double>(window))));
        FixedType t = *in;
        t.width += extra, t.round.clear(), t.sat.clear();
        result = t;
        if ((window & (window - 1)) != 0)
          inexact_.push_back(fmt::format("{} ({}): a {}-element window is not a power of two; the mean is not exact in "
                                       "fixed point",
                                       name, layer, window));
      } else if (op == "Mul" && in && is_init(n.input(1)) && shapes_.at(n.input(1)).empty()) {
        const double m = values_of(inits_.at(n.input(1))).item<double>();
        int e2 = 0;
        if (std::frexp(m, &e2) == 0.5) {  // a power-of-two multiplier: the point moves
          FixedType t = *in;
          t.integer += e2 - 1, t.round.clear(), t.sat.clear();
          result = t;
        }
      } else if (op == "Concat") {
        result = in;
        for (const auto& i : n.input()) {
          auto t = type_of_tensor(i);
          result = t && result ? std::optional<FixedType>(covering(*result, *t, false)) : std::nullopt;
        }
      }
      if (!result) {
        std::string why = op == "BatchNormalization" ? "hls4ml scales and shifts in its own types (fold the batch norm into "
                                                       "the layer before it, NNI's fuse_names, for an exact path)"
                          : op == "Tanh" || op == "Sigmoid" || op == "Softmax" ? "hls4ml reads it from a lookup table"
                                                                                : "no exact fixed-point type";
        inexact_.push_back(fmt::format("{} ({}, {}): {}; its result takes the default {}", name, op, layer, why, kDefaultPrecision));
      }
      for (const auto& o : n.output())
        if (result) type[o] = *result;
      e.precision["result"] = result ? result->str() : kDefaultPrecision;
    }
    if (!input_type)
      inexact_.push_back(fmt::format("global_in: the model's input is not quantized; hls4ml feeds it as {}", kDefaultPrecision));

    std::string y = fmt::format(
        "# hls4ml configuration written by sparq {} (`sparq export RUN --format hls4ml`).\n"
        "# From the run folder: python3 -c \"import hls4ml; m = hls4ml.converters.convert_from_config('hls4ml.yaml'); "
        "m.compile()\"\n"
        "# Every node of model_hls4ml.onnx is listed under LayerName with the types that hold what the trained model\n"
        "# computes: weights and biases their formats, dense/conv results and accumulators the width no sum overflows,\n"
        "# each Quant its own type. See sparq's docs/hls4ml.md.\n"
        "OnnxModel: model_hls4ml.onnx\nOutputDir: {}\nProjectName: {}\nBackend: {}\nPart: {}\nClockPeriod: {}\nIOType: {}\n"
        "HLSConfig:\n  Model:\n    Precision:\n      default: {}\n    ReuseFactor: {}\n    Strategy: {}\n"
        "    BramFactor: 1000000000\n    TraceOutput: false\n  LayerName:\n",
        SPARQ_VERSION, o.output_dir, o.project_name, o.backend, o.part, o.clock_period, o.io_type, kDefaultPrecision,
        o.reuse_factor, o.strategy);
    y += fmt::format("    global_in:\n      Precision:\n        result: {}\n", input_type ? input_type->str() : kDefaultPrecision);
    for (const auto& n : nodes_) {
      const auto& e = entries.at(n.name());
      y += fmt::format("    {}:  # {}\n      Precision:\n", n.name(), origin_.at(n.name()));
      for (const char* key : {"weight", "bias", "result", "accum"})
        if (e.precision.count(key)) y += fmt::format("        {}: {}\n", key, e.precision.at(key));
      if (e.layer) y += fmt::format("      ReuseFactor: {}\n      Strategy: {}\n", o.reuse_factor, o.strategy);
    }
    return y;
  }

  onnx::ModelProto model_;
  std::map<std::string, std::string> origin_;
  models::Graph& graph_;
  std::vector<onnx::NodeProto> nodes_;
  std::map<std::string, onnx::TensorProto> inits_;
  std::map<std::string, Shape> shapes_;
  std::set<std::string> made_;
  std::vector<std::string> notes_;    ///< what the hand-off changes exactly (a covering weight type)
  std::vector<std::string> inexact_;  ///< where hls4ml will not compute what sparq computes
  bool uses_channels_last_ = false;
};

}  // namespace

void check_hls4ml_options(const Hls4mlOptions& o) {
  auto one_of = [](const std::string& v, std::initializer_list<const char*> allowed, const char* what) {
    for (const char* a : allowed)
      if (v == a) return;
    std::string list;
    for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
    throw ConfigError(fmt::format("export --format hls4ml: {} '{}' is not one of {}", what, v, list));
  };
  one_of(o.backend, {"Vivado", "Vitis", "Quartus", "oneAPI", "Catapult"}, "--backend");
  one_of(o.io_type, {"io_parallel", "io_stream"}, "--io-type");
  one_of(o.strategy, {"Latency", "Resource"}, "--strategy");
  if (o.reuse_factor < 1) throw ConfigError(fmt::format("export --format hls4ml: --reuse-factor {} must be at least 1", o.reuse_factor));
  if (!(o.clock_period > 0)) throw ConfigError(fmt::format("export --format hls4ml: --clock-period {} must be positive (ns)", o.clock_period));
  auto identifier = [](const std::string& v, const char* what) {
    bool ok = !v.empty() && !std::isdigit(static_cast<unsigned char>(v[0]));
    for (char c : v) ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_');
    if (!ok) throw ConfigError(fmt::format("export --format hls4ml: {} '{}' must be a C identifier (letters, digits, _)", what, v));
  };
  identifier(o.project_name, "--project-name");
  if (o.part.empty() || o.part.find_first_of(" \n:#") != std::string::npos)
    throw ConfigError(fmt::format("export --format hls4ml: --part '{}' is not an FPGA part name", o.part));
}

Hls4mlExport export_hls4ml(models::Graph& graph, const std::string& dir, const Hls4mlOptions& options) {
  auto o = options;
  if (o.project_name.empty()) o.project_name = "myproject";  // hls4ml's own default
  check_hls4ml_options(o);
  return Prep(build_onnx(graph, OnnxFlavor::Qonnx), graph).run(dir, o);
}

}  // namespace sparq::exporting
