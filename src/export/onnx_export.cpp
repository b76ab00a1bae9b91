// ONNX export (see onnx_export.h). One writer walks the Graph's nodes in order; each node emits
// its ONNX ops from what its module computes in evaluation mode: PQ layers their lanes'
// quantizers, the deployed weight and bias, the op, the fused ReLU; float modules and built-ins
// their one op. Quantizers are written from describe() and the quantizer's own tensors.
#include "sparq/export/onnx_export.h"

#include "export/onnx_model.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <set>
#include <variant>

#include "sparq/error.h"
#include "sparq/io/files.h"
#include "sparq/layers/pq_layers.h"
#include "sparq/quant/integer.h"

namespace sparq::exporting {

namespace {

using models::Node;
using quant::OverflowMode;
using quant::RoundMode;

constexpr int64_t kOpset = 13;
const char* kQonnxDomain = "qonnx.custom_op.general";

/// QONNX's name of a rounding mode, or nullptr when it has none (spec anchors §3.4).
const char* qonnx_rounding(RoundMode m) {
  switch (m) {
    case RoundMode::RND_CONV: return "ROUND";
    case RoundMode::TRN: return "FLOOR";
    case RoundMode::TRN_ZERO: return "DOWN";
    case RoundMode::RND_INF: return "HALF_UP";
    case RoundMode::RND_ZERO: return "HALF_DOWN";
    default: return nullptr;
  }
}

class Writer {
 public:
  Writer(models::Graph& graph, OnnxFlavor flavor) : graph_(graph), flavor_(flavor) {
    model_.set_ir_version(7);
    model_.set_producer_name("sparq");
    model_.set_producer_version(SPARQ_VERSION);
    auto* opset = model_.add_opset_import();
    opset->set_domain("");
    opset->set_version(kOpset);
    if (flavor == OnnxFlavor::Qonnx) {
      auto* q = model_.add_opset_import();
      q->set_domain(kQonnxDomain);
      q->set_version(1);
    }
    g_ = model_.mutable_graph();
    g_->set_name(graph->name());
  }

  /// The model in memory: every node's origin (the layer and lane it comes from) in origin_of.
  BuiltOnnx build() {
    torch::NoGradGuard no_grad;
    bool was_training = graph_->is_training();
    graph_->eval();
    torch::Device device = torch::kCPU;
    for (const auto& p : graph_->parameters()) {
      device = p.device();
      break;
    }
    if (device != torch::kCPU) graph_->to(torch::kCPU);  // the exported tensors are read on the host
    try {
      emit_graph();
    } catch (...) {
      if (device != torch::kCPU) graph_->to(device);
      graph_->train(was_training);
      throw;
    }
    if (device != torch::kCPU) graph_->to(device);
    graph_->train(was_training);
    return {std::move(model_), std::move(origin_), quantizers_};
  }

 private:
  // ---- tensors and nodes ----
  std::string fresh(const std::string& hint) {
    std::string name = hint;
    for (int i = 1; !names_.insert(name).second; ++i) name = fmt::format("{}_{}", hint, i);
    return name;
  }
  /// An initializer holding `t` (float32, int64, int32, int8 or uint8) named after `hint`.
  std::string constant(const torch::Tensor& t_in, const std::string& hint) {
    auto t = t_in.detach().cpu().contiguous();
    auto* init = g_->add_initializer();
    init->set_name(fresh(hint));
    for (auto d : t.sizes()) init->add_dims(d);
    switch (t.scalar_type()) {
      case torch::kFloat32: init->set_data_type(onnx::TensorProto::FLOAT); break;
      case torch::kFloat64: t = t.to(torch::kFloat32), init->set_data_type(onnx::TensorProto::FLOAT); break;
      case torch::kInt64: init->set_data_type(onnx::TensorProto::INT64); break;
      case torch::kInt32: init->set_data_type(onnx::TensorProto::INT32); break;
      case torch::kInt8: init->set_data_type(onnx::TensorProto::INT8); break;
      case torch::kUInt8: init->set_data_type(onnx::TensorProto::UINT8); break;
      case torch::kBool: init->set_data_type(onnx::TensorProto::BOOL); break;
      default: throw Error(fmt::format("export: tensor '{}' has an unsupported type", hint));
    }
    init->set_raw_data(std::string(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size()));
    return init->name();
  }
  std::string scalar(double v, const std::string& hint) { return constant(torch::tensor(static_cast<float>(v)), hint); }

  struct AttrValue {
    std::string name;
    std::variant<int64_t, double, std::string, std::vector<int64_t>> value;
  };
  std::string op(const std::string& type, const std::vector<std::string>& inputs, const std::string& hint,
                 const std::vector<AttrValue>& attrs = {}, const std::string& domain = "") {
    auto* n = g_->add_node();
    n->set_op_type(type);
    n->set_name(fresh(hint + "/" + type));
    origin_[n->name()] = hint;
    if (!domain.empty()) n->set_domain(domain);
    for (const auto& in : inputs) n->add_input(in);
    std::string out = fresh(hint + "/" + type + "_output");
    n->add_output(out);
    for (const auto& a : attrs) {
      auto* p = n->add_attribute();
      p->set_name(a.name);
      if (auto v = std::get_if<int64_t>(&a.value)) p->set_type(onnx::AttributeProto::INT), p->set_i(*v);
      else if (auto v = std::get_if<double>(&a.value)) p->set_type(onnx::AttributeProto::FLOAT), p->set_f(static_cast<float>(*v));
      else if (auto v = std::get_if<std::string>(&a.value)) p->set_type(onnx::AttributeProto::STRING), p->set_s(*v);
      else {
        p->set_type(onnx::AttributeProto::INTS);
        for (auto i : std::get<std::vector<int64_t>>(a.value)) p->add_ints(i);
      }
    }
    return out;
  }

  // ---- fixed-point quantizers ----
  /// Per-element constants of a fixed-point format (scalars per tensor), shaped to broadcast.
  struct FixedConstants {
    torch::Tensor scale, step, nmax, lo, modulus, inv_modulus, alive, k, width;
    bool signed_any = false, signed_all = true, uniform_width = true, any_dead = false;
  };
  FixedConstants fixed_constants(const quant::FixedPointQuantizerImpl& q) {
    auto [k, i, f] = q.integer_bits();
    k = k.to(torch::kDouble).cpu(), i = i.to(torch::kDouble).cpu(), f = f.to(torch::kDouble).cpu();
    auto shape = torch::broadcast_tensors({k, i, f});
    k = shape[0], i = torch::max(shape[1], -shape[2]), f = shape[2];  // i never below -f, as the quantizer
    auto d = q.describe();
    FixedConstants c;
    auto span = i + f;
    c.scale = torch::exp2(f), c.step = torch::exp2(-f);
    c.nmax = torch::exp2(span) - 1;
    auto nmin = -k * torch::exp2(span);
    c.lo = d.overflow == OverflowMode::SAT_SYM ? torch::where((k > 0).logical_and(span > 0), -c.nmax, nmin) : nmin;
    c.width = k + span;
    c.modulus = torch::exp2(c.width), c.inv_modulus = torch::exp2(-c.width);
    c.k = k;
    c.alive = (k + i + f > 0).to(torch::kDouble);
    c.any_dead = (c.alive == 0).any().item<bool>();
    c.signed_any = (k > 0).any().item<bool>(), c.signed_all = (k > 0).all().item<bool>();
    c.uniform_width = (c.width == c.width.reshape({-1})[0]).all().item<bool>() &&
                      (f == f.reshape({-1})[0]).all().item<bool>();
    return c;
  }
  /// A per-element constant as the exporter writes it: a scalar when all elements agree.
  std::string per_element(const torch::Tensor& t, const std::string& hint, bool as_float = true) {
    auto flat = t.reshape({-1});
    bool uniform = (flat == flat[0]).all().item<bool>();
    auto v = uniform ? flat[0] : t;
    return constant(as_float ? v.to(torch::kFloat32) : v, hint);
  }
  /// The code of u = x * 2^f under rounding mode `r`, with the exact float ops sparq's kernels use.
  std::string round_code(const std::string& u, RoundMode r, const std::string& hint) {
    if (r == RoundMode::TRN) return op("Floor", {u}, hint);
    if (r == RoundMode::RND_CONV) return op("Round", {u}, hint);  // ONNX Round: ties to even
    std::string fl = op("Floor", {u}, hint), d = op("Sub", {u, fl}, hint);
    auto half = [&] { return scalar(0.5, hint + ".half"); };
    auto zero = [&] { return scalar(0.0, hint + ".zero"); };
    std::string up;
    switch (r) {
      case RoundMode::RND: up = op("GreaterOrEqual", {d, half()}, hint); break;
      case RoundMode::RND_MIN_INF: up = op("Greater", {d, half()}, hint); break;
      case RoundMode::TRN_ZERO: {
        std::string z = zero();
        up = op("And", {op("Less", {u, z}, hint), op("Greater", {d, z}, hint)}, hint);
        break;
      }
      case RoundMode::RND_ZERO:
      case RoundMode::RND_INF: {
        std::string h = half(), z = zero();
        std::string tie = op("Equal", {d, h}, hint);
        std::string side = r == RoundMode::RND_ZERO ? op("Less", {u, z}, hint) : op("Greater", {u, z}, hint);
        up = op("Or", {op("Greater", {d, h}, hint), op("And", {tie, side}, hint)}, hint);
        break;
      }
      default: break;
    }
    return op("Add", {fl, op("Cast", {up}, hint, {{"to", int64_t(onnx::TensorProto::FLOAT)}})}, hint);
  }
  std::string fixed_standard(const std::string& x, const quant::FixedPointQuantizerImpl& q, const std::string& hint) {
    auto d = q.describe();
    if (d.overflow == OverflowMode::WRAP_SM)
      throw Error(fmt::format("export: {}: WRAP_SM has no ONNX form sparq writes (hls4ml has no WRAP_SM either); "
                              "train with WRAP or SAT",
                              hint));
    auto c = fixed_constants(q);
    std::string u = op("Mul", {x, per_element(c.scale, hint + ".scale")}, hint);
    std::string n = round_code(u, d.round, hint);
    if (d.overflow == OverflowMode::WRAP) {
      std::string m = per_element(c.modulus, hint + ".modulus");
      std::string wraps = op("Floor", {op("Mul", {n, per_element(c.inv_modulus, hint + ".inv_modulus")}, hint)}, hint);
      std::string t = op("Sub", {n, op("Mul", {m, wraps}, hint)}, hint);
      if (c.signed_any) {  // two's complement: codes above nmax are negative (never for k = 0)
        std::string above = op("Greater", {t, per_element(c.nmax, hint + ".nmax")}, hint);
        t = op("Where", {above, op("Sub", {t, m}, hint), t}, hint);
      }
      n = t;
    } else {
      n = op("Min", {op("Max", {n, per_element(c.lo, hint + ".lo")}, hint), per_element(c.nmax, hint + ".nmax")}, hint);
    }
    std::string y = op("Mul", {n, per_element(c.step, hint + ".step")}, hint);
    if (c.any_dead) y = op("Mul", {y, per_element(c.alive, hint + ".alive")}, hint);
    return y;
  }
  /// QONNX Quant of a fixed-point format; `constant_input`: the value is a weight already on its
  /// grid and in range, so any rounding and overflow mode gives the same numbers.
  std::string fixed_qonnx(const std::string& x, const quant::FixedPointQuantizerImpl& q, const std::string& hint,
                          bool constant_input) {
    auto d = q.describe();
    const char* rounding = qonnx_rounding(d.round);
    if (!constant_input) {
      if (!rounding)
        throw Error(fmt::format("export --format qonnx: {}: rounding mode {} has no QONNX equivalent (QONNX rounds "
                                "ROUND=RND_CONV, FLOOR=TRN, DOWN=TRN_ZERO, HALF_UP=RND_INF, HALF_DOWN=RND_ZERO); train "
                                "with RND_CONV or TRN for QONNX/hls4ml, or export --format onnx, which is exact",
                                hint, quant::to_string(d.round)));
      if (d.overflow == OverflowMode::WRAP || d.overflow == OverflowMode::WRAP_SM)
        throw Error(fmt::format("export --format qonnx: {}: overflow mode {} cannot be written as a QONNX Quant, which "
                                "always saturates; train with SAT/SAT_SYM, or export --format onnx",
                                hint, quant::to_string(d.overflow)));
    }
    auto c = fixed_constants(q);
    if (c.signed_any != c.signed_all)
      throw Error(fmt::format("export --format qonnx: {}: the format mixes signed and unsigned elements, which one Quant "
                              "node cannot hold", hint));
    std::string y = op("Quant",
                       {x, per_element(c.step, hint + ".scale"), scalar(0.0, hint + ".zeropt"),
                        per_element(c.width, hint + ".bitwidth")},
                       hint,
                       {{"signed", int64_t(c.signed_all ? 1 : 0)},
                        {"narrow", int64_t(d.overflow == OverflowMode::SAT_SYM && c.signed_all ? 1 : 0)},
                        {"rounding_mode", std::string(rounding ? rounding : "ROUND")}},
                       kQonnxDomain);
    if (c.any_dead) y = op("Mul", {y, per_element(c.alive, hint + ".alive")}, hint);
    return y;
  }

  // ---- integer quantizers ----
  /// Scale and zero point, flat (one per channel, or one).
  static std::pair<torch::Tensor, torch::Tensor> integer_params(const quant::IntegerQuantizerImpl& q) {
    auto [s, z] = q.qparams();
    return {s.detach().cpu().to(torch::kFloat32).reshape({-1}), z.detach().cpu().to(torch::kFloat32).reshape({-1})};
  }
  void check_integer_method(const quant::IntegerQuantizerImpl& q, const std::string& hint) {
    auto m = q.spec().method;
    if (m != quant::IntegerMethod::FakeQuant && m != quant::IntegerMethod::Qat && m != quant::IntegerMethod::Ptq)
      throw Error(fmt::format("export: {}: the {} quantizer is not exported yet (FakeQuant, QAT and PTQ quantizers are)",
                              hint, quant::to_string(m)));
  }
  /// QuantizeLinear -> [Clip] -> DequantizeLinear over channel `axis` (-1: per tensor).
  std::string integer_data(const std::string& x, const quant::IntegerQuantizerImpl& q, const std::string& hint,
                           int64_t axis, size_t rank) {
    check_integer_method(q, hint);
    auto [s, z] = integer_params(q);
    const auto& spec = q.spec();
    if (flavor_ == OnnxFlavor::Qonnx) {
      std::vector<int64_t> shape(rank, 1);  // per channel: [1, C, 1, ...], the rank of x
      if (axis >= 0) shape[axis] = s.numel();
      auto view = [&](const torch::Tensor& t) { return axis >= 0 ? t.reshape(shape) : t.reshape({}); };
      ++quantizers_;
      return op("Quant", {x, constant(view(s), hint + ".scale"), constant(view(z), hint + ".zeropt"),
                          scalar(spec.bits, hint + ".bitwidth")},
                hint,
                {{"signed", int64_t(spec.is_signed)}, {"narrow", int64_t(spec.narrow)}, {"rounding_mode", std::string("ROUND")}},
                kQonnxDomain);
    }
    ++quantizers_;
    bool as_int8 = spec.is_signed;
    if (spec.bits > 8 || spec.qmin() < (as_int8 ? -128 : 0) || spec.qmax() > (as_int8 ? 127 : 255)) {
      // Wider than 8 bits: opset 13 has no such QuantizeLinear; the same formula as float ops.
      if (axis >= 0) throw Error(fmt::format("export: {}: per-channel integer lanes wider than 8 bits are not exported yet", hint));
      std::string sc = constant(s.reshape({}), hint + ".scale"), zp = constant(z.reshape({}), hint + ".zero_point");
      std::string v = op("Add", {op("Div", {x, sc}, hint), zp}, hint);
      v = op("Round", {op("Min", {op("Max", {v, scalar(spec.qmin(), hint + ".qmin")}, hint), scalar(spec.qmax(), hint + ".qmax")}, hint)}, hint);
      return op("Mul", {op("Sub", {v, zp}, hint), sc}, hint);
    }
    auto zi = z.round().to(as_int8 ? torch::kInt8 : torch::kUInt8);
    std::vector<AttrValue> attrs;
    if (axis >= 0) attrs.push_back({"axis", axis});
    std::string sc = constant(axis >= 0 ? s : s.reshape({}), hint + ".scale");
    std::string zp = constant(axis >= 0 ? zi : zi.reshape({}), hint + ".zero_point");
    std::string code = op("QuantizeLinear", {x, sc, zp}, hint, attrs);
    if (spec.qmin() > (as_int8 ? -128 : 0) || spec.qmax() < (as_int8 ? 127 : 255)) {
      auto type = as_int8 ? torch::kInt8 : torch::kUInt8;
      code = op("Clip", {code, constant(torch::tensor(spec.qmin()).to(type), hint + ".qmin"),
                         constant(torch::tensor(spec.qmax()).to(type), hint + ".qmax")},
                hint);
    }
    return op("DequantizeLinear", {code, sc, zp}, hint, attrs);
  }

  // ---- lanes and weights of PQ layers ----
  /// `rank`: of the lane's tensor, batch axis included (QONNX scales need it for per-channel lanes).
  std::string lane(const std::string& x, const quant::Quantizer& q, const std::string& hint, size_t rank) {
    if (!q || !q->enabled) return x;
    if (auto fixed = quant::as_fixed_point(q)) {
      ++quantizers_;
      return flavor_ == OnnxFlavor::Qonnx ? fixed_qonnx(x, *fixed, hint, false) : fixed_standard(x, *fixed, hint);
    }
    if (auto integer = quant::as_integer(q)) {
      if (integer->passes_through()) return x;
      return integer_data(x, *integer, hint, integer->spec().channel_dim >= 0 ? 1 : -1, rank);
    }
    throw Error(fmt::format("export: {}: quantizer kind '{}' is not exported", hint, q->kind()));
  }
  void check_lane_mask(const layers::PQLayer& layer, const std::string& target, const std::string& hint) {
    if (layer.mask(target))
      throw Error(fmt::format("export: {}: a mask on the {} lane (activation pruning) is not exported yet", hint, target));
  }
  /// A deployed weight or bias: Standard writes its values (integer weights as int8 + DequantizeLinear
  /// when that gives the same numbers); QONNX the values and a Quant of the quantizer.
  std::string parameter(const torch::Tensor& value, const quant::Quantizer& q, const std::string& hint) {
    const auto v = value.detach().cpu().to(torch::kFloat32).contiguous();
    bool active = q && q->enabled;
    auto integer = active ? quant::as_integer(q) : nullptr;
    if (integer && integer->passes_through()) active = false, integer = nullptr;
    if (!active) return constant(v, hint);
    ++quantizers_;
    if (auto fixed = quant::as_fixed_point(q)) {
      if (flavor_ == OnnxFlavor::Standard) return constant(v, hint);  // on its grid already
      return fixed_qonnx(constant(v, hint), *fixed, hint + ".quant", true);
    }
    check_integer_method(*integer, hint);
    auto [s, z] = integer_params(*integer);
    const auto& spec = integer->spec();
    bool per_channel = spec.channel_dim >= 0;
    if (per_channel && spec.channel_dim != 0)
      throw Error(fmt::format("export: {}: integer weights per input channel are not exported yet", hint));
    std::vector<int64_t> bshape(static_cast<size_t>(v.dim()), 1);
    if (per_channel) bshape[0] = -1;
    auto sb = per_channel ? s.reshape(bshape) : s.reshape({});
    auto zb = per_channel ? z.reshape(bshape) : z.reshape({});
    if (flavor_ == OnnxFlavor::Qonnx)
      return op("Quant", {constant(v, hint), constant(sb, hint + ".scale"), constant(zb, hint + ".zeropt"),
                          scalar(spec.bits, hint + ".bitwidth")},
                hint + ".quant",
                {{"signed", int64_t(spec.is_signed)}, {"narrow", int64_t(spec.narrow)}, {"rounding_mode", std::string("ROUND")}},
                kQonnxDomain);
    // The integer codes, kept only if DequantizeLinear's (q - zp) * s gives back every value.
    bool as_int8 = spec.is_signed;
    if (spec.bits <= 8 && spec.qmin() >= (as_int8 ? -128 : 0) && spec.qmax() <= (as_int8 ? 127 : 255)) {
      auto codes = torch::round(v / sb + zb);
      auto back = (codes - zb) * sb;
      if (torch::equal(back, v)) {
        auto type = as_int8 ? torch::kInt8 : torch::kUInt8;
        std::vector<AttrValue> attrs;
        if (per_channel) attrs.push_back({"axis", int64_t(0)});
        return op("DequantizeLinear",
                  {constant(codes.to(type), hint + ".codes"), constant(per_channel ? s : s.reshape({}), hint + ".scale"),
                   constant((per_channel ? z : z.reshape({})).round().to(type), hint + ".zero_point")},
                  hint, attrs);
      }
    }
    return constant(v, hint);
  }

  // ---- nodes ----
  std::string input_of(const Node& node, size_t i) const {
    int in = node.inputs.at(i);
    return in < 0 ? std::string("input") : values_.at(static_cast<size_t>(in));
  }
  static std::vector<int64_t> dims(const Node& node, const char* key, size_t n, int64_t fallback) {
    return models::dims_attr(node, key, n, fallback);
  }
  static std::vector<int64_t> twice(const std::vector<int64_t>& p) {
    auto out = p;
    out.insert(out.end(), p.begin(), p.end());
    return out;
  }

  std::string linear(const std::string& x, const std::string& w, const std::string& b, const std::string& hint) {
    if (flavor_ == OnnxFlavor::Standard) {
      std::vector<std::string> in{x, w};
      if (!b.empty()) in.push_back(b);
      return op("Gemm", in, hint, {{"transB", int64_t(1)}});
    }
    // hls4ml's QONNX frontend reads MatMul (+ Add), not Gemm.
    std::string y = op("MatMul", {x, op("Transpose", {w}, hint, {{"perm", std::vector<int64_t>{1, 0}}})}, hint);
    return b.empty() ? y : op("Add", {y, b}, hint);
  }
  std::string conv(const std::string& x, const std::string& w, const std::string& b, const layers::PQConvOptions& o,
                   const std::string& hint) {
    std::vector<std::string> in{x, w};
    if (!b.empty()) in.push_back(b);
    return op("Conv", in, hint,
              {{"kernel_shape", o.kernel_size()}, {"strides", o.stride()}, {"pads", twice(o.padding())},
               {"dilations", o.dilation()}, {"group", o.groups()}});
  }
  std::string activation(const std::string& x, const std::string& function, const Node& node, double slope, double lo,
                         double hi, int64_t dim, const std::string& hint) {
    if (function == "relu") return op("Relu", {x}, hint);
    if (function == "tanh") return op("Tanh", {x}, hint);
    if (function == "sigmoid") return op("Sigmoid", {x}, hint);
    if (function == "leaky_relu") return op("LeakyRelu", {x}, hint, {{"alpha", slope}});
    if (function == "hard_tanh") return op("Clip", {x, scalar(lo, hint + ".min"), scalar(hi, hint + ".max")}, hint);
    if (function == "softmax") return op("Softmax", {x}, hint, {{"axis", dim}});
    if (function == "gelu") {  // opset 13 has no Gelu: x * 0.5 * (1 + erf(x / sqrt(2)))
      std::string e = op("Erf", {op("Div", {x, scalar(std::sqrt(2.0), hint + ".sqrt2")}, hint)}, hint);
      std::string one_plus = op("Add", {e, scalar(1.0, hint + ".one")}, hint);
      return op("Mul", {op("Mul", {x, one_plus}, hint), scalar(0.5, hint + ".half")}, hint);
    }
    throw Error(fmt::format("export: node '{}': activation '{}' is not exported", node.name, function));
  }
  static std::string function_of(const std::string& op) {
    if (op == "ReLU") return "relu";
    if (op == "Tanh") return "tanh";
    if (op == "Sigmoid") return "sigmoid";
    if (op == "LeakyReLU") return "leaky_relu";
    if (op == "Hardtanh") return "hard_tanh";
    if (op == "Softmax") return "softmax";
    if (op == "GELU") return "gelu";
    return "";
  }

  std::string pq_node(const Node& node, const std::string& x) {
    const std::string& name = node.name;
    auto* base = dynamic_cast<layers::PQLayer*>(node.module.ptr().get());
    check_lane_mask(*base, "_input_0", name);
    check_lane_mask(*base, "_output_0", name);
    auto qs = base->quantizers();
    auto find = [&](const char* target) {
      for (const auto& [t, q] : qs)
        if (t == target) return q;
      return quant::Quantizer(nullptr);
    };
    auto in_q = find("input"), w_q = find("weight"), b_q = find("bias"), out_q = find("output");
    const size_t in_rank = 1 + (node.inputs[0] < 0 ? graph_->input_shape() : graph_->nodes()[node.inputs[0]].out_shape).size();
    const size_t out_rank = 1 + node.out_shape.size();
    if (auto* layer = dynamic_cast<layers::PQWeightLayer*>(base)) {
      std::string in = lane(x, in_q, name + ".input", in_rank);
      std::string w = parameter(layer->effective_weight(), w_q, name + ".weight");
      auto bias = layer->effective_bias();
      std::string b = bias.defined() ? parameter(bias, b_q, name + ".bias") : "";
      std::string y;
      if (dynamic_cast<layers::PQDenseImpl*>(base)) y = linear(in, w, b, name);
      else y = conv(in, w, b, dynamic_cast<layers::PQConvImpl*>(base)->options(), name);
      if (layer->fused_relu && layer->fold_active) y = op("Relu", {y}, name);
      return lane(y, out_q, name + ".output", out_rank);
    }
    if (auto* pool = dynamic_cast<layers::PQAvgPoolImpl*>(base)) {
      const auto& o = pool->options();
      std::string y = op("AveragePool", {lane(x, in_q, name + ".input", in_rank)}, name,
                         {{"kernel_shape", o.kernel_size()}, {"strides", o.stride()}, {"pads", twice(o.padding())},
                          {"count_include_pad", int64_t(1)}});
      return lane(y, out_q, name + ".output", out_rank);
    }
    if (auto* bn = dynamic_cast<layers::PQBatchNormImpl*>(base)) {
      std::string in = lane(x, in_q, name + ".input", in_rank);
      auto quantized = [&](const quant::Quantizer& q, const torch::Tensor& t) {
        return q && q->enabled ? quant::Quantizer(q)->forward(t) : t;
      };
      // The quantized scale and shift are applied after the mask, as the layer does.
      auto w = quantized(w_q, bn->weight), b = quantized(b_q, bn->bias);
      if (base->mask("weight")) w = base->mask("weight")->apply(w);
      if (base->mask("bias")) b = base->mask("bias")->apply(b);
      return op("BatchNormalization",
                {in, parameter(w, w_q, name + ".weight"), parameter(b, b_q, name + ".bias"),
                 constant(bn->running_mean, name + ".running_mean"), constant(bn->running_var, name + ".running_var")},
                name, {{"epsilon", bn->options().eps()}});
    }
    if (auto* act = dynamic_cast<layers::PQActivationImpl*>(base)) {
      const auto& o = act->options();
      std::string v = x;
      if (act->multiplier.defined())
        v = op("Mul", {v, scalar(std::exp2(std::nearbyint(act->multiplier.item<double>())), name + ".multiplier")}, name);
      v = lane(v, in_q, name + ".input", in_rank);
      bool unsigned_input = in_q && in_q->enabled && in_q->clips_negatives();
      std::string y = o.function() == "relu" && unsigned_input
                          ? v
                          : activation(v, o.function(), node, o.negative_slope(), o.min_val(), o.max_val(), o.dim(), name);
      return lane(y, out_q, name + ".output", out_rank);
    }
    throw Error(fmt::format("export: node '{}' ({}) is not exported", name, node.op));
  }

  std::string float_node(const Node& node, const std::vector<std::string>& in) {
    const std::string& name = node.name;
    const std::string& type = node.op;
    auto params = node.module.is_empty() ? torch::OrderedDict<std::string, torch::Tensor>()
                                         : node.module.ptr()->named_parameters(false);
    auto buffers = node.module.is_empty() ? torch::OrderedDict<std::string, torch::Tensor>()
                                          : node.module.ptr()->named_buffers(false);
    auto bias_of = [&]() { return params.find("bias") ? constant(params["bias"], name + ".bias") : std::string(); };
    if (type == "Linear") return linear(in[0], constant(params["weight"], name + ".weight"), bias_of(), name);
    if (type == "Conv1d" || type == "Conv2d") {
      size_t n = type == "Conv1d" ? 1 : 2;
      auto w = params["weight"];
      std::vector<std::string> inputs{in[0], constant(w, name + ".weight")};
      if (params.find("bias")) inputs.push_back(bias_of());
      return op("Conv", inputs, name,
                {{"kernel_shape", std::vector<int64_t>(w.sizes().begin() + 2, w.sizes().end())},
                 {"strides", dims(node, "stride", n, 1)},
                 {"pads", twice(dims(node, "padding", n, 0))},
                 {"dilations", dims(node, "dilation", n, 1)},
                 {"group", models::int_attr(node, "groups", 1)}});
    }
    if (type == "BatchNorm1d" || type == "BatchNorm2d")
      return op("BatchNormalization",
                {in[0], constant(params["weight"], name + ".weight"), constant(params["bias"], name + ".bias"),
                 constant(buffers["running_mean"], name + ".running_mean"),
                 constant(buffers["running_var"], name + ".running_var")},
                name, {{"epsilon", models::number_attr(node, "eps", 1e-5)}});
    if (type == "AvgPool1d" || type == "AvgPool2d" || type == "MaxPool1d" || type == "MaxPool2d") {
      size_t n = type.back() == 'd' && type[type.size() - 2] == '1' ? 1 : 2;
      auto kernel = dims(node, "kernel_size", n, 1);
      auto stride = node.attrs.count("stride") ? dims(node, "stride", n, 1) : kernel;
      std::vector<AttrValue> attrs{{"kernel_shape", kernel}, {"strides", stride}, {"pads", twice(dims(node, "padding", n, 0))}};
      bool max = type.rfind("Max", 0) == 0;
      if (!max) attrs.push_back({"count_include_pad", int64_t(1)});
      return op(max ? "MaxPool" : "AveragePool", {in[0]}, name, attrs);
    }
    std::string function = function_of(type);
    if (!function.empty())
      return activation(in[0], function, node, models::number_attr(node, "negative_slope", 0.01),
                        models::number_attr(node, "min_val", -1.0), models::number_attr(node, "max_val", 1.0),
                        models::int_attr(node, "dim", 1), name);
    if (type == "Identity" || type == "Dropout") return in[0];
    if (type == "add") {
      std::string sum = in[0];
      for (size_t i = 1; i < in.size(); ++i) sum = op("Add", {sum, in[i]}, name);
      return sum;
    }
    if (type == "concat") return op("Concat", in, name, {{"axis", models::int_attr(node, "dim", 1)}});
    if (type == "flatten") return op("Flatten", {in[0]}, name, {{"axis", int64_t(1)}});
    if (type == "reshape") {
      auto shape = std::get<std::vector<int64_t>>(node.attrs.at("shape"));
      shape.insert(shape.begin(), 0);  // 0: the batch axis as it is
      return op("Reshape", {in[0], constant(torch::tensor(shape), name + ".shape")}, name);
    }
    throw Error(fmt::format("export: node '{}': op {} is not exported", name, type));
  }

  void emit_graph() {
    auto* in = g_->add_input();
    in->set_name("input");
    names_.insert("input");
    auto* type = in->mutable_type()->mutable_tensor_type();
    type->set_elem_type(onnx::TensorProto::FLOAT);
    type->mutable_shape()->add_dim()->set_dim_param("batch");
    for (auto d : graph_->input_shape()) type->mutable_shape()->add_dim()->set_dim_value(d);
    for (const auto& node : graph_->nodes()) {
      std::vector<std::string> inputs;
      for (size_t i = 0; i < node.inputs.size(); ++i) inputs.push_back(input_of(node, i));
      std::string out;
      if (node.skipped) out = inputs[0];
      else if (!node.module.is_empty() && dynamic_cast<layers::PQLayer*>(node.module.ptr().get())) out = pq_node(node, inputs[0]);
      else out = float_node(node, inputs);
      values_.push_back(out);
    }
    // The output gets its own name through an Identity (it may be the input of other nodes too).
    const auto& last = graph_->nodes()[graph_->output_index()];
    auto* id = g_->add_node();
    id->set_op_type("Identity");
    id->set_name(fresh("output/Identity"));
    id->add_input(values_[graph_->output_index()]);
    id->add_output("logits");
    auto* out = g_->add_output();
    out->set_name("logits");
    auto* t = out->mutable_type()->mutable_tensor_type();
    t->set_elem_type(onnx::TensorProto::FLOAT);
    t->mutable_shape()->add_dim()->set_dim_param("batch");
    for (auto d : last.out_shape) t->mutable_shape()->add_dim()->set_dim_value(d);
  }

  models::Graph& graph_;
  OnnxFlavor flavor_;
  onnx::ModelProto model_;
  onnx::GraphProto* g_ = nullptr;
  std::set<std::string> names_;
  std::map<std::string, std::string> origin_;
  std::vector<std::string> values_;  ///< per Graph node: the ONNX tensor of its output
  int64_t quantizers_ = 0;
};

}  // namespace

BuiltOnnx build_onnx(models::Graph& graph, OnnxFlavor flavor) { return Writer(graph, flavor).build(); }

void write_onnx(const onnx::ModelProto& model, const std::string& path) {
  // Debian's checker knows the default domain; QONNX's custom domains are left to QONNX tools.
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    std::string msg = e.what();
    throw Error(fmt::format("internal error: the exported ONNX model does not pass the checker: {}", msg.substr(0, msg.find('\n'))));
  }
  std::string bytes;
  if (!model.SerializeToString(&bytes)) throw Error(fmt::format("cannot serialise the ONNX model for {}", path));
  io::write_file_atomic(path, bytes);
}

OnnxExport export_onnx(models::Graph& graph, const std::string& path, OnnxFlavor flavor) {
  auto built = build_onnx(graph, flavor);
  write_onnx(built.model, path);
  return {path, built.model.graph().node_size(), built.quantizers};
}

OnnxFlavor parse_onnx_flavor(const std::string& name, const std::string& what) {
  if (name == "qonnx") return OnnxFlavor::Qonnx;
  if (name == "onnx") return OnnxFlavor::Standard;
  throw ConfigError(fmt::format("{}: unknown export format '{}', expected onnx, qonnx or hls4ml", what, name));
}

const char* onnx_file_name(OnnxFlavor flavor) { return flavor == OnnxFlavor::Qonnx ? "model_qonnx.onnx" : "model.onnx"; }

}  // namespace sparq::exporting
