#include "sparq/export/reference.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>
#include <numeric>
#include <optional>

#include "sparq/compress/compress.h"
#include "sparq/error.h"
#include "sparq/layers/pq_layers.h"
#include "sparq/prune/target_mask.h"

namespace sparq::exporting {

namespace {

namespace F = torch::nn::functional;
using quant::OverflowMode;
using quant::RoundMode;

constexpr double kInt64Safe = 4.0e18;   // below 2^62: sums and shifts stay inside int64
constexpr double kDoubleExact = 9.0e15; // below 2^53: codes survive a trip through float64

/// A tensor of exact values code / den (int64 codes, den > 0), or the float32 output of a node
/// that the training graph computes in float (then `real` is set and `code` is not).
struct Value {
  torch::Tensor code;
  int64_t den = 1;
  torch::Tensor real;
  bool is_float() const { return real.defined(); }
};

[[noreturn]] void fail(const models::Node& node, const std::string& what) {
  throw Error(fmt::format("integer reference: node '{}' ({}): {}", node.name, node.op, what));
}

double max_abs(const torch::Tensor& t) { return t.numel() ? t.abs().max().item<double>() : 0.0; }

int64_t pow2(int e) { return int64_t{1} << e; }

torch::Tensor pow2_tensor(const torch::Tensor& e) {
  return torch::pow(torch::full_like(e, 2), e);  // int64 in, int64 out: exact
}

/// code * factor, checked against int64.
torch::Tensor times(const torch::Tensor& code, int64_t factor, const models::Node& node) {
  if (max_abs(code) * static_cast<double>(factor) >= kInt64Safe) fail(node, "a value outgrows int64 when aligned");
  return code * factor;
}

/// `v` with its codes scaled to denominator `den` (a multiple of v.den).
Value rescale(const Value& v, int64_t den, const models::Node& node) {
  return den == v.den ? v : Value{times(v.code, den / v.den, node), den, {}};
}

/// [batch, *the node's output sample shape].
std::vector<int64_t> batch_shape(int64_t batch, const models::Node& node) {
  std::vector<int64_t> shape{batch};
  shape.insert(shape.end(), node.out_shape.begin(), node.out_shape.end());
  return shape;
}

int64_t common_den(int64_t a, int64_t b, const models::Node& node) {
  const int64_t g = std::gcd(a, b);
  if (static_cast<double>(a / g) * static_cast<double>(b) >= kInt64Safe)
    fail(node, "the denominators of its inputs have no common int64 multiple");
  return a / g * b;
}

/// a * b for two denominators, checked against int64.
int64_t den_product(int64_t a, int64_t b, const models::Node& node) {
  if (static_cast<double>(a) * static_cast<double>(b) >= kInt64Safe) fail(node, "its grid is finer than int64 can hold");
  return a * b;
}

/// The float32 value of an exact tensor (what sparq's float graph holds there); it must be exact.
torch::Tensor to_float(const Value& v, const models::Node& node) {
  if (v.is_float()) return v.real;
  if (max_abs(v.code) >= kDoubleExact) fail(node, "a value has more than 53 bits");
  auto exact = v.code.to(torch::kFloat64) / static_cast<double>(v.den);
  auto single = exact.to(torch::kFloat32);
  if (!single.to(torch::kFloat64).equal(exact))
    fail(node, "a value has no exact float32 form, so the float op cannot run as in the training graph");
  return single;
}

/// Exact codes of float32 values on the grid 2^-f (a quantized weight); throws when not on it.
Value from_float(const torch::Tensor& v, int f, const models::Node& node, const char* what) {
  auto scaled = v.to(torch::kFloat64) * std::ldexp(1.0, f);
  if (max_abs(scaled) >= kDoubleExact || !scaled.equal(torch::round(scaled)))
    fail(node, fmt::format("its {} are not on a fixed-point grid (2^-{})", what, f));
  return {scaled.to(torch::kInt64), pow2(f), {}};
}

/// Per-element (k, i, f) of a quantizer as int64 tensors broadcastable to a batch of its lane.
struct Widths {
  torch::Tensor k, i, f;
};
Widths widths_of(const quant::QuantFormat& d) {
  auto t = [&](const std::vector<int>& v) {
    auto out = torch::tensor(std::vector<int64_t>(v.begin(), v.end()), torch::kInt64);
    return d.shape.empty() ? out.reshape({}) : out.reshape(d.shape);
  };
  return {t(d.k), t(d.i), t(d.f)};
}

/// The fixed-point quantizer `d` applied to `x` exactly: per element, the code rounded by the
/// mode from the exact value (integer floor division and remainder, or the float32 value's exact
/// product with 2^f), then saturated or wrapped (ap_fixed), on the common grid of the largest f.
Value quantize(const Value& x, const quant::QuantFormat& d, const models::Node& node, const char* lane) {
  if (d.kind != "fixed" && d.kind != "hgq")
    fail(node, fmt::format("its {} lane is an integer ({}) quantizer; the reference covers fixed-point lanes", lane, d.kind));
  if (d.overflow == OverflowMode::WRAP_SM) fail(node, fmt::format("its {} lane wraps sign-magnitude (WRAP_SM)", lane));
  auto w = widths_of(d);
  const int64_t max_f = w.f.max().item<int64_t>(), max_span = (w.i + w.f).max().item<int64_t>();
  if (max_f > 60 || max_span > 60 || -w.f.min().item<int64_t>() > 60) fail(node, fmt::format("its {} lane is wider than 60 bits", lane));
  // floor(v * 2^f) and where the dropped fraction stands against one half decide the rounding.
  torch::Tensor fl, above, half, negative, positive, fraction;
  if (x.is_float()) {  // u = x * 2^f is exact in float64; so are floor(u) and u - floor(u)
    auto u = x.real.to(torch::kFloat64) * torch::exp2(w.f.to(torch::kFloat64));
    auto flo = torch::floor(u), frac = u - flo;
    if (max_abs(flo) >= kDoubleExact) fail(node, fmt::format("its {} lane holds values beyond 53 bits", lane));
    fl = flo.to(torch::kInt64);
    above = frac > 0.5, half = frac == 0.5, negative = u < 0, positive = u > 0, fraction = frac > 0;
  } else {  // code / den * 2^f = n / dd with integers: floor division and the remainder
    auto fpos = torch::clamp_min(w.f, 0), fneg = torch::clamp_min(-w.f, 0);
    if (max_abs(x.code) * std::ldexp(1.0, static_cast<int>(std::max<int64_t>(max_f, 0))) >= kInt64Safe ||
        static_cast<double>(x.den) * std::ldexp(1.0, static_cast<int>(fneg.max().item<int64_t>())) >= kInt64Safe)
      fail(node, fmt::format("its {} lane's input outgrows int64 on the grid", lane));
    auto n = x.code * pow2_tensor(fpos);
    auto dd = pow2_tensor(fneg) * x.den;
    fl = torch::div(n, dd, "floor");
    auto twice_r = (n - fl * dd) * 2;
    above = twice_r > dd, half = twice_r == dd, negative = n < 0, positive = n > 0, fraction = twice_r > 0;
  }
  torch::Tensor up;
  switch (d.round) {
    case RoundMode::TRN: up = torch::zeros_like(above); break;
    case RoundMode::TRN_ZERO: up = negative.logical_and(fraction); break;
    case RoundMode::RND: up = above.logical_or(half); break;
    case RoundMode::RND_MIN_INF: up = above; break;
    case RoundMode::RND_ZERO: up = above.logical_or(half.logical_and(negative)); break;
    case RoundMode::RND_INF: up = above.logical_or(half.logical_and(positive)); break;
    case RoundMode::RND_CONV: up = above.logical_or(half.logical_and(torch::remainder(fl, 2) != 0)); break;
  }
  auto code = fl + up.to(torch::kInt64);
  // ap_fixed's overflow: saturate to [lo, nmax] or wrap modulo 2^W (two's complement).
  auto span = torch::clamp_min(w.i + w.f, 0), width = w.k + w.i + w.f;
  auto nmax = pow2_tensor(span) - 1, nmin = -w.k * pow2_tensor(span);
  if (d.overflow == OverflowMode::WRAP) {
    auto modulus = pow2_tensor(torch::clamp_min(width, 0));
    auto t = torch::remainder(code, modulus);
    code = torch::where((w.k > 0).logical_and(t > nmax), t - modulus, t);
  } else {
    auto lo = d.overflow == OverflowMode::SAT_SYM ? torch::where((w.k > 0).logical_and(w.i + w.f > 0), -nmax, nmin) : nmin;
    code = torch::maximum(torch::minimum(code, nmax), lo);
  }
  code = torch::where(width <= 0, torch::zeros_like(code), code);  // a zero-width element holds 0
  // One grid for the tensor: 2^-F with F the largest f (and at least 0).
  const int64_t grid = std::max<int64_t>(max_f, 0);
  code = code * pow2_tensor(grid - w.f);
  return {code, pow2(static_cast<int>(grid)), {}};
}

std::optional<quant::QuantFormat> lane(const layers::PQLayer& layer, const std::string& target) {
  auto q = layer.quantizer(target);
  return q ? std::optional<quant::QuantFormat>(q->describe()) : std::nullopt;
}

Value lane_in(const layers::PQLayer& layer, const Value& x, const models::Node& node) {
  if (layer.mask("_input_0")) fail(node, "its input lane is masked (activation pruning); the reference does not model it");
  auto d = lane(layer, "input");
  return d ? quantize(x, *d, node, "input") : x;
}

Value lane_out(const layers::PQLayer& layer, const Value& y, const models::Node& node) {
  if (layer.mask("_output_0")) fail(node, "its output lane is masked; the reference does not model it");
  auto d = lane(layer, "output");
  return d ? quantize(y, *d, node, "output") : y;
}

Value exact_input(const Value& x, const models::Node& node) {
  if (!x.is_float()) return x;
  fail(node, "its input is a float value (the data, or a float node's output) with no quantizer in between: quantize "
             "its input lane");
}

/// Codes of a quantized parameter (the layer's own effective weight or bias).
Value parameter_codes(const layers::PQLayer& layer, const std::string& target, const torch::Tensor& value,
                      const models::Node& node) {
  auto d = lane(layer, target);
  if (!d || (d->kind != "fixed" && d->kind != "hgq"))
    fail(node, fmt::format("its {} is not fixed-point quantized (the firmware needs integer {}s)", target, target));
  int f = 0;
  for (int e : d->f) f = std::max(f, e);
  return from_float(value, f, node, target == "weight" ? "weights" : "biases");
}

/// Throws unless every sum of products of `inputs` with a row of `weight_rows` (the last axis)
/// stays inside int64.
void check_sums(const torch::Tensor& inputs, const torch::Tensor& weight_rows, const models::Node& node) {
  double bound = max_abs(inputs) * (weight_rows.numel() ? weight_rows.abs().sum(-1).max().item<double>() : 0.0);
  if (bound >= kInt64Safe) fail(node, "its sums could leave int64");
}

/// The sums of a dense or convolution layer on to its output: the bias aligned and added along
/// `channel_dim`, a folded ReLU, the output lane.
Value finish_weight_layer(layers::PQWeightLayer& layer, Value sums, int64_t channel_dim, const models::Node& node) {
  if (auto bias = layer.effective_bias(); bias.defined()) {
    auto b = parameter_codes(layer, "bias", bias, node);
    const int64_t den = common_den(sums.den, b.den, node);
    std::vector<int64_t> view(static_cast<size_t>(sums.code.dim()), 1);
    view[static_cast<size_t>(channel_dim)] = -1;
    sums = {rescale(sums, den, node).code + rescale(b, den, node).code.view(view), den, {}};
  }
  if (layer.fused_relu && layer.fold_active) sums.code = torch::clamp_min(sums.code, 0);
  return lane_out(layer, sums, node);
}

Value dense(layers::PQDenseImpl& layer, const Value& in, const models::Node& node) {
  auto x = exact_input(lane_in(layer, in, node), node);
  auto w = parameter_codes(layer, "weight", layer.effective_weight(), node);
  auto rows = x.code.reshape({-1, x.code.size(-1)});
  check_sums(rows, w.code, node);
  auto shape = x.code.sizes().vec();
  shape.back() = w.code.size(0);
  Value sums{torch::matmul(rows, w.code.t()).reshape(shape), den_product(x.den, w.den, node), {}};
  return finish_weight_layer(layer, sums, sums.code.dim() - 1, node);
}

/// Windows of a [B, C, L] or [B, C, H, W] code tensor as [B, C * window, positions] (zeros padded).
torch::Tensor windows(const torch::Tensor& code, int dims, std::vector<int64_t> kernel, std::vector<int64_t> stride,
                      std::vector<int64_t> padding, std::vector<int64_t> dilation, const models::Node& node) {
  if (max_abs(code) >= kDoubleExact) fail(node, "its input codes have more than 53 bits");
  auto x = code.to(torch::kFloat64);
  if (dims == 1) {  // as a 2-D window of height 1
    x = x.unsqueeze(2);
    kernel.insert(kernel.begin(), 1), stride.insert(stride.begin(), 1), padding.insert(padding.begin(), 0),
        dilation.insert(dilation.begin(), 1);
  }
  auto cols = F::unfold(x, F::UnfoldFuncOptions(kernel).stride(stride).padding(padding).dilation(dilation));
  return cols.to(torch::kInt64);  // a copy of integers: exact
}

Value conv(layers::PQConvImpl& layer, const Value& in, const models::Node& node) {
  auto x = exact_input(lane_in(layer, in, node), node);
  const auto& o = layer.options();
  auto w = parameter_codes(layer, "weight", layer.effective_weight(), node);
  auto cols = windows(x.code, o.dims(), o.kernel_size(), o.stride(), o.padding(), o.dilation(), node);
  const int64_t batch = cols.size(0), groups = o.groups(), out = w.code.size(0), k = cols.size(1) / groups;
  auto wk = w.code.reshape({groups, out / groups, k});
  auto ck = cols.reshape({batch, groups, k, cols.size(2)});
  check_sums(ck, wk, node);
  auto acc = torch::matmul(wk.unsqueeze(0), ck);  // [B, groups, out/groups, positions]
  return finish_weight_layer(layer, {acc.reshape(batch_shape(batch, node)), den_product(x.den, w.den, node), {}}, 1, node);
}

/// The windows of `windows()` as [B, channels, window, positions], for a reduction over axis 2.
torch::Tensor per_window(const torch::Tensor& cols, int64_t channels, const std::vector<int64_t>& kernel) {
  const int64_t window = std::accumulate(kernel.begin(), kernel.end(), int64_t{1}, std::multiplies<int64_t>());
  return cols.reshape({cols.size(0), channels, window, cols.size(2)});
}

Value avg_pool(layers::PQAvgPoolImpl& layer, const Value& in, const models::Node& node) {
  auto x = exact_input(lane_in(layer, in, node), node);
  const auto& o = layer.options();
  auto kernel = o.kernel_size();
  auto cols = windows(x.code, o.dims(), kernel, o.stride(), o.padding(), std::vector<int64_t>(kernel.size(), 1), node);
  auto window = per_window(cols, x.code.size(1), kernel);
  auto sums = window.sum(2);  // zero padding counts in the divisor (torch's default)
  return lane_out(layer, {sums.reshape(batch_shape(cols.size(0), node)), den_product(x.den, window.size(2), node), {}}, node);
}

Value max_pool(const Value& in, const models::Node& node) {
  auto x = exact_input(in, node);
  const size_t n = node.source_op == "MaxPool1d" ? 1 : 2;
  auto kernel = models::dims_attr(node, "kernel_size", n, 1);
  auto stride = node.attrs.count("stride") ? models::dims_attr(node, "stride", n, 1) : kernel;
  auto padding = models::dims_attr(node, "padding", n, 0);
  auto dilation = models::dims_attr(node, "dilation", n, 1);
  for (auto p : padding)
    if (p != 0) fail(node, "max pooling with padding is not in the reference");
  auto cols = windows(x.code, static_cast<int>(n), kernel, stride, padding, dilation, node);
  auto best = std::get<0>(per_window(cols, x.code.size(1), kernel).max(2));
  return {best.reshape(batch_shape(cols.size(0), node)), x.den, {}};
}

Value batch_norm(layers::PQBatchNormImpl& layer, const Value& in, const models::Node& node) {
  auto x = to_float(lane_in(layer, in, node), node);
  auto param = [&](const std::string& target, const torch::Tensor& p) {  // as the layer's forward: quantized, masked
    auto q = layer.quantizer(target);
    auto v = q ? q->forward(p) : p;
    auto m = layer.mask(target);
    return m ? m->apply(v) : v;
  };
  auto y = torch::batch_norm(x, param("weight", layer.weight), param("bias", layer.bias), layer.running_mean,
                             layer.running_var, false, layer.options().momentum(), layer.options().eps(), true);
  return {{}, 1, y};
}

Value activation(layers::PQActivationImpl& layer, const Value& in, const models::Node& node) {
  Value x = in;
  if (layer.multiplier.defined()) {  // x * 2^round_half_even(m): a shift
    const double m = std::nearbyint(layer.multiplier.item<double>());
    if (!(std::abs(m) <= 60)) fail(node, "its ReLU multiplier shifts by more than 60 bits");
    const int s = static_cast<int>(m);
    if (x.is_float()) x.real = x.real * std::ldexp(1.0f, s);
    else if (s >= 0) x.code = times(x.code, pow2(s), node);
    else x.den = den_product(in.den, pow2(-s), node);
  }
  x = lane_in(layer, x, node);
  const auto& function = layer.function();
  Value y;
  if (function == "relu") {
    y = x;
    if (x.is_float()) y.real = torch::relu(x.real);
    else y.code = torch::clamp_min(x.code, 0);
  } else {  // tanh, sigmoid, ...: in float32, as the training graph computes them
    auto v = to_float(x, node);
    const auto& o = layer.options();
    torch::Tensor r;
    if (function == "tanh") r = torch::tanh(v);
    else if (function == "hard_tanh") r = torch::clamp(v, o.min_val(), o.max_val());
    else if (function == "leaky_relu") r = torch::leaky_relu(v, o.negative_slope());
    else if (function == "sigmoid") r = torch::sigmoid(v);
    else if (function == "gelu") r = torch::gelu(v);
    else r = torch::softmax(v, o.dim());
    y = {{}, 1, r};
  }
  return lane_out(layer, y, node);
}

Value reshape_to(const Value& x, const models::Node& node) {
  auto shape = batch_shape((x.is_float() ? x.real : x.code).size(0), node);
  Value y = x;
  if (x.is_float()) y.real = x.real.reshape(shape);
  else y.code = x.code.reshape(shape);
  return y;
}

Value combine(const std::vector<Value>& in, const models::Node& node) {
  bool any_float = false;
  for (const auto& v : in) any_float = any_float || v.is_float();
  const bool add = node.op == "add";
  if (any_float) {  // float32, as the graph adds or concatenates them
    std::vector<torch::Tensor> parts;
    for (const auto& v : in) parts.push_back(to_float(v, node));
    torch::Tensor r = parts[0];
    if (add) for (size_t n = 1; n < parts.size(); ++n) r = r + parts[n];
    else r = torch::cat(parts, models::int_attr(node, "dim", 1));
    return {{}, 1, r};
  }
  int64_t den = 1;
  for (const auto& v : in) den = common_den(den, v.den, node);
  std::vector<torch::Tensor> codes;
  for (const auto& v : in) codes.push_back(rescale(v, den, node).code);
  if (add) {
    torch::Tensor s = codes[0];
    double bound = 0;
    for (const auto& c : codes) bound += max_abs(c);
    if (bound >= kInt64Safe) fail(node, "its sum could leave int64");
    for (size_t n = 1; n < codes.size(); ++n) s = s + codes[n];
    return {s, den, {}};
  }
  return {torch::cat(codes, models::int_attr(node, "dim", 1)), den, {}};
}

/// The value of a node that has a module of sparq's PQ layers.
Value pq_node(layers::PQLayer& pq, const Value& in, const models::Node& node) {
  if (auto* d = dynamic_cast<layers::PQDenseImpl*>(&pq)) return dense(*d, in, node);
  if (auto* c = dynamic_cast<layers::PQConvImpl*>(&pq)) return conv(*c, in, node);
  if (auto* p = dynamic_cast<layers::PQAvgPoolImpl*>(&pq)) return avg_pool(*p, in, node);
  if (auto* b = dynamic_cast<layers::PQBatchNormImpl*>(&pq)) return batch_norm(*b, in, node);
  if (auto* a = dynamic_cast<layers::PQActivationImpl*>(&pq)) return activation(*a, in, node);
  fail(node, "this PQ layer is not in the reference");
}

/// Every node's value for one batch (the data enters as float32, which the first quantizer grids).
std::vector<Value> evaluate(models::Graph& model, const torch::Tensor& x) {
  const auto& nodes = model->nodes();
  std::vector<Value> values(nodes.size());
  Value input{{}, 1, x.to(torch::kFloat32)};
  auto in = [&](const models::Node& node, size_t k) -> const Value& {
    int idx = node.inputs.at(k);
    return idx < 0 ? input : values[static_cast<size_t>(idx)];
  };
  for (size_t n = 0; n < nodes.size(); ++n) {
    const auto& node = nodes[n];
    if (node.skipped) values[n] = in(node, 0);
    else if (auto pq = pq_layer(model, node.name)) values[n] = pq_node(*pq, in(node, 0), node);
    else if (node.op == "flatten" || node.op == "reshape" || node.source_op == "Identity" || node.source_op == "Dropout")
      values[n] = reshape_to(in(node, 0), node);
    else if (node.source_op == "MaxPool1d" || node.source_op == "MaxPool2d") values[n] = max_pool(in(node, 0), node);
    else if (node.op == "add" || node.op == "concat") {
      std::vector<Value> ins;
      for (size_t k = 0; k < node.inputs.size(); ++k) ins.push_back(in(node, k));
      values[n] = combine(ins, node);
    } else fail(node, "this op is not quantized, so it has no integer form (compress it, or fold it)");
  }
  return values;
}

/// The value as float64: exact for codes below 2^53 over a power-of-two den.
torch::Tensor as_double(const Value& v) {
  return v.is_float() ? v.real.to(torch::kFloat64) : v.code.to(torch::kFloat64) / static_cast<double>(v.den);
}

}  // namespace

ReferenceResult integer_reference(models::Graph& model, const torch::Tensor& x, int64_t batch) {
  torch::NoGradGuard no_grad;
  model->to(torch::kCPU);
  model->eval();
  ReferenceResult result;
  std::vector<torch::Tensor> outputs, codes;
  auto data = x.cpu();
  for (int64_t b = 0; b < data.size(0); b += batch) {
    auto values = evaluate(model, data.slice(0, b, std::min(b + batch, data.size(0))));
    if (b == 0)  // the same nodes on every batch: the formats, not the data, decide it
      for (size_t n = 0; n < values.size(); ++n)
        if (values[n].is_float()) result.float_nodes.push_back(model->nodes()[n].name);
    const auto& out = values[static_cast<size_t>(model->output_index())];
    outputs.push_back(as_double(out));
    if (!out.is_float()) {
      codes.push_back(out.code);
      result.output_den = out.den;
    }
  }
  result.output = torch::cat(outputs);
  if (codes.size() == outputs.size()) result.output_code = torch::cat(codes);
  return result;
}

std::vector<NodeMismatch> compare_nodes(models::Graph& model, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  model->to(torch::kCPU);
  model->eval();
  const auto& nodes = model->nodes();
  std::vector<int> all(nodes.size());
  std::iota(all.begin(), all.end(), 0);
  model->record_outputs(all);
  model->forward(x.cpu());
  std::vector<torch::Tensor> ours;
  for (size_t n = 0; n < nodes.size(); ++n) ours.push_back(model->recorded(static_cast<int>(n)).to(torch::kFloat64));
  model->record_outputs({});
  auto values = evaluate(model, x.cpu());
  std::vector<NodeMismatch> out;
  for (size_t n = 0; n < nodes.size(); ++n) {
    auto ref = as_double(values[n]);
    if (!ours[n].defined() || ours[n].sizes() != ref.sizes()) continue;
    auto differ = ours[n] != ref;
    const int64_t count = differ.sum().item<int64_t>();
    if (count == 0) continue;
    NodeMismatch m{nodes[n].name, count, ref.numel(), {}, 0, 0};
    auto first = torch::nonzero(differ)[0];  // row-major: the same element as the first in the flat order
    for (int64_t d = 0; d < first.size(0); ++d) m.first_index.push_back(first[d].item<int64_t>());
    const int64_t flat = torch::nonzero(differ.flatten())[0][0].item<int64_t>();
    m.sparq_value = ours[n].flatten()[flat].item<double>();
    m.reference_value = ref.flatten()[flat].item<double>();
    out.push_back(m);
  }
  return out;
}

}  // namespace sparq::exporting
