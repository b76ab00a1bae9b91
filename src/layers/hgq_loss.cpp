// The HGQ loss of a PQ layer in one pass over its bit widths (CPU): beta·EBOPs + Σ gamma·(Σ f + Σ i)
// and its derivatives with respect to every trained width, computed together in double. The
// composed path (composed_hgq_loss) builds the same loss from ~35 LibTorch ops per layer and as
// many backward nodes, each a few microseconds on a CPU: most of an HGQ step at small batches.
// Each layer's EBOPs formula (spec pquantml §3.6) is written here a second time, with its
// derivative; the composed formulas (pq_layer.cpp, pq_other_layers.cpp) are the tests' oracle.
#include <c10/util/accumulate.h>
#include <torch/torch.h>

#include <cmath>
#include <deque>

#include "sparq/layers/pq_layers.h"
#ifdef SPARQ_WITH_CUDA
#include "layers/hgq_loss_cuda.h"
#endif

namespace sparq::layers {

namespace {

/// For every element of `to`, the flat index of the element of `from` that expand() puts there;
/// false when `from` does not broadcast to `to`.
bool broadcast_index(at::IntArrayRef from, at::IntArrayRef to, std::vector<int64_t>& index) {
  const int64_t rank = static_cast<int64_t>(to.size()), offset = rank - static_cast<int64_t>(from.size());
  if (offset < 0) return false;
  std::vector<int64_t> stride(rank, 0);  // the step in `from` per axis of `to` (0 where it broadcasts)
  int64_t step = 1;
  for (int64_t d = rank - 1; d >= offset; --d) {
    const int64_t n = from[d - offset];
    if (n != to[d] && n != 1) return false;
    stride[d] = n == 1 ? 0 : step;
    step *= n;
  }
  index.resize(c10::multiply_integers(to));
  std::vector<int64_t> pos(rank, 0);
  int64_t at = 0;
  for (auto& e : index) {
    e = at;
    for (int64_t d = rank - 1; d >= 0; --d) {  // the next position, last axis fastest
      if (++pos[d] < to[d]) {
        at += stride[d];
        break;
      }
      at -= stride[d] * (to[d] - 1);
      pos[d] = 0;
    }
  }
  return true;
}

/// A value whose gradient with respect to `inputs` is already known: backward scales `grads`.
struct KnownGradient : public torch::autograd::Function<KnownGradient> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, at::TensorList inputs, torch::Tensor value,
                               const std::vector<torch::Tensor>& grads) {
    ctx->save_for_backward(grads);
    return value;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list g) {
    torch::autograd::variable_list out;
    const auto grads = ctx->get_saved_variables();
#ifdef SPARQ_WITH_CUDA
    const bool scaled = scaled_on_gpu(grads, g[0], out);
#else
    const bool scaled = false;
#endif
    if (!scaled)
      for (const auto& grad : grads) out.push_back(grad * g[0]);
    out.resize(out.size() + 2);  // value and grads are not tensors of the graph
    return out;
  }
#ifdef SPARQ_WITH_CUDA
  /// All of a layer's gradients scaled in one kernel (float32 on the GPU); false otherwise.
  static bool scaled_on_gpu(const std::vector<torch::Tensor>& grads, const torch::Tensor& g,
                            torch::autograd::variable_list& out) {
    if (grads.empty() || grads.size() > static_cast<size_t>(cuda::kMaxScaled) || !g.is_cuda() ||
        g.scalar_type() != torch::kFloat32 || g.numel() != 1)
      return false;
    for (const auto& t : grads)
      if (!t.is_cuda() || t.scalar_type() != torch::kFloat32 || !t.is_contiguous()) return false;
    const auto gc = g.contiguous();
    cuda::ScaleArgs a;
    a.g = gc.data_ptr<float>();
    for (const auto& t : grads) {
      out.push_back(torch::empty_like(t));
      a.in[a.count] = t.data_ptr<float>(), a.out[a.count] = out.back().data_ptr<float>(), a.n[a.count] = t.numel();
      ++a.count;
    }
    cuda::scale_by(a);
    return true;
  }
#endif
};

/// Trained widths either pass reads in place: float32, contiguous, on `device`.
bool readable_widths(const torch::Tensor& t, torch::DeviceType device) {
  return t.device().type() == device && t.scalar_type() == torch::kFloat32 && t.is_contiguous();
}

/// Adds q's f (and i where it trains) as inputs of the loss, each with `grad` (d bits/di = d bits/df).
void add_width_inputs(const quant::FixedPointQuantizerImpl& q, const torch::Tensor& grad,
                      std::vector<torch::Tensor>& inputs, std::vector<torch::Tensor>& grads) {
  inputs.push_back(q.f), grads.push_back(grad);
  if (q.i.requires_grad()) inputs.push_back(q.i), grads.push_back(grad);
}

}  // namespace

/// The bit widths of a layer's lanes as its EBOPs formula reads them (param_bits / lane_bits,
/// expanded), with a derivative buffer per lane; the trained widths' gradients follow from those.
class HgqBits {
 public:
  struct Lane {
    std::vector<double> bits, grad;  ///< expanded to the shape of of(); grad accumulates
    int64_t numel() const { return static_cast<int64_t>(bits.size()); }
  };

  /// Reads every enabled quantizer of `layer` that trains its widths; ok() is false when one
  /// cannot be read here (another kind, a GPU, not float32).
  explicit HgqBits(const PQLayer& layer) {
    const auto quantizers = layer.quantizers();
    trained_.reserve(quantizers.size());  // no reallocation after this: lanes point into it
    for (const auto& [name, q] : quantizers) {
      if (!q->enabled || !q->trains_widths()) continue;
      auto fp = quant::as_fixed_point(q);
      if (!fp || !readable(fp->k) || !readable(fp->i) || !readable(fp->f)) {
        trained_.clear();  // ok() stays false
        return;
      }
      Trained t;
      t.q = fp.get(), t.shape = fp->k.sizes().vec();
      const bool wrap = fp->spec().overflow == quant::OverflowMode::WRAP;
      const float *k = fp->k.data_ptr<float>(), *i = fp->i.data_ptr<float>(), *f = fp->f.data_ptr<float>();
      const int64_t n = fp->k.numel();
      t.bits.resize(n), t.alive.resize(n), t.grad.assign(n, 0.0);
      for (int64_t j = 0; j < n; ++j) {
        // The straight-through rounded widths (half to even), i unrounded under WRAP.
        const double fr = std::nearbyint(f[j]), ir = wrap ? i[j] : std::nearbyint(i[j]);
        t.bits[j] = k[j] + std::max(ir + fr, 0.0);
        t.alive[j] = ir + fr > 0;  // where relu passes the gradient
        t.rounded_sum += fr + (wrap ? 0.0 : ir);
      }
      trained_.push_back(std::move(t));
    }
    ok_ = !trained_.empty();
  }

  bool ok() const { return ok_; }

  /// The bits of `q` expanded to `shape`: 32 without an enabled quantizer (param_bits).
  Lane& of(const quant::Quantizer& q, at::IntArrayRef shape) {
    auto& lane = lanes_.emplace_back();
    const int64_t n = c10::multiply_integers(shape);
    lane.value.bits.assign(n, 32.0), lane.value.grad.assign(n, 0.0);
    if (!q || !q->enabled) return lane.value;
    const double* source = nullptr;
    std::vector<int64_t> source_shape;
    std::vector<double> fixed;
    for (auto& t : trained_)
      if (t.q == q.get()) lane.trained = &t;
    if (lane.trained) {
      source = lane.trained->bits.data(), source_shape = lane.trained->shape;
    } else {  // widths that are not trained: what total_bits gives, no gradient
      torch::NoGradGuard no_grad;
      auto t = q->total_bits();
      if (!t.device().is_cpu()) return fail(), lane.value;
      t = t.to(torch::kFloat64).contiguous();
      fixed.assign(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
      source = fixed.data(), source_shape = t.sizes().vec();
    }
    if (!broadcast_index(source_shape, shape, lane.index)) return fail(), lane.value;
    for (int64_t e = 0; e < n; ++e) lane.value.bits[e] = source[lane.index[e]];
    return lane.value;
  }

  /// beta·ebops + Σ gamma·(rounded widths), its gradient to every trained i and f attached.
  torch::Tensor loss(double ebops, double beta) {
    for (const auto& lane : lanes_)  // each expanded derivative back onto the width it came from
      if (lane.trained)
        for (int64_t e = 0; e < lane.value.numel(); ++e) lane.trained->grad[lane.index[e]] += lane.value.grad[e];
    double value = beta * ebops;
    std::vector<torch::Tensor> inputs, grads;
    for (auto& t : trained_) {
      const double gamma = t.q->gamma();
      value += gamma * t.rounded_sum;
      auto grad = torch::empty(t.q->f.sizes(), t.q->f.options().requires_grad(false));
      float* g = grad.data_ptr<float>();
      for (size_t j = 0; j < t.grad.size(); ++j) g[j] = static_cast<float>((t.alive[j] ? beta * t.grad[j] : 0.0) + gamma);
      add_width_inputs(*t.q, grad, inputs, grads);
    }
    auto total = torch::full({}, value, inputs.empty() ? torch::kFloat32 : inputs[0].scalar_type());
    return KnownGradient::apply(at::TensorList(inputs), total, grads);
  }

 private:
  struct Trained {
    quant::FixedPointQuantizerImpl* q = nullptr;
    std::vector<int64_t> shape;
    std::vector<double> bits, grad;  ///< per width element; grad: d ebops / d bits
    std::vector<uint8_t> alive;
    double rounded_sum = 0;  ///< Σ f (+ Σ i unless WRAP), rounded: what gamma multiplies
  };
  struct Expanded {
    Lane value;
    Trained* trained = nullptr;
    std::vector<int64_t> index;  ///< the width element behind each expanded element
  };
  static bool readable(const torch::Tensor& t) { return readable_widths(t, torch::kCPU); }
  void fail() { ok_ = false; }

  std::vector<Trained> trained_;  ///< in the order of quantizers(): the same sums every run
  std::deque<Expanded> lanes_;  // a deque: the references of() hands out stay valid
  bool ok_ = false;
};

#ifdef SPARQ_WITH_CUDA
namespace {

/// The arguments of the CUDA pass (hgq_loss_cuda.cu) for one layer: its trained quantizers and
/// the lanes of its EBOPs formula. run() gives an undefined tensor for widths the kernel cannot
/// read (not float32 on the GPU, more than kMaxTrained quantizers, lane widths that neither match
/// the lane nor broadcast one number), and the composed ops take over.
class DeviceHgqLoss {
 public:
  cuda::HgqLossArgs args;

  explicit DeviceHgqLoss(const PQLayer& layer) {
    for (const auto& [name, q] : layer.quantizers()) {
      if (!q->enabled || !q->trains_widths()) continue;
      auto fp = quant::as_fixed_point(q);
      if (!fp || args.n_trained == cuda::kMaxTrained || !readable(fp->k) || !readable(fp->i) || !readable(fp->f) ||
          fp->i.numel() != fp->k.numel() || fp->f.numel() != fp->k.numel()) {
        fail();
        return;
      }
      auto& t = args.trained[args.n_trained++];
      t.k = fp->k.data_ptr<float>(), t.i = fp->i.data_ptr<float>(), t.f = fp->f.data_ptr<float>();
      t.numel = fp->k.numel(), t.gamma = fp->gamma(), t.wrap = fp->spec().overflow == quant::OverflowMode::WRAP;
      trained_.push_back(fp.get());
    }
  }

  /// Points `lane` at the bits of `q` over a lane of `shape` (32 bits without an enabled quantizer).
  void lane(cuda::LaneWidths& lane, const quant::Quantizer& q, at::IntArrayRef shape) {
    if (!q || !q->enabled) return;
    for (size_t n = 0; n < trained_.size(); ++n)
      if (trained_[n] == q.get()) {
        lane.trained = static_cast<int>(n), lane.numel = args.trained[n].numel;
        if (!fits(trained_[n]->k.sizes(), shape)) fail();
        return;
      }
    torch::NoGradGuard no_grad;  // widths that are not trained: what total_bits gives, no gradient
    auto bits = q->total_bits().to(torch::kFloat32).contiguous();
    if (!bits.is_cuda() || !fits(bits.sizes(), shape)) return fail();
    lane.bits = bits.data_ptr<float>(), lane.numel = bits.numel();
    kept_.push_back(bits);
  }

  /// The loss with its gradient to every trained width attached; undefined when !ok.
  torch::Tensor run(const torch::Tensor& beta_in) {
    if (!ok_ || trained_.empty()) return {};
    auto beta = beta_in.to(torch::kFloat32).contiguous();
    const auto on = torch::TensorOptions().device(beta.device());
    int64_t slopes = 0;
    for (int n = 0; n < args.n_trained; ++n) slopes += args.trained[n].numel;
    auto scratch = torch::empty({slopes + 2 * args.features}, on.dtype(torch::kFloat64));
    auto value = torch::empty({}, on.dtype(torch::kFloat32));
    std::vector<torch::Tensor> inputs, grads;
    double* at = scratch.data_ptr<double>();
    for (int n = 0; n < args.n_trained; ++n) {
      auto grad = torch::empty(trained_[n]->f.sizes(), on.dtype(torch::kFloat32));
      args.trained[n].grad = grad.data_ptr<float>(), args.trained[n].slope = at;
      at += args.trained[n].numel;
      add_width_inputs(*trained_[n], grad, inputs, grads);
    }
    args.sums = at, args.beta = beta.data_ptr<float>(), args.value = value.data_ptr<float>();
    cuda::hgq_layer_loss(args);
    return KnownGradient::apply(at::TensorList(inputs), value, grads);
  }

 private:
  static bool readable(const torch::Tensor& t) { return readable_widths(t, torch::kCUDA); }
  /// One width for the lane, or the lane's own shape (leading 1s aside).
  static bool fits(at::IntArrayRef widths, at::IntArrayRef lane) {
    if (c10::multiply_integers(widths) == 1) return true;
    auto strip = [](at::IntArrayRef s) {
      while (!s.empty() && s[0] == 1) s = s.slice(1);
      return s;
    };
    return strip(widths).equals(strip(lane));
  }
  void fail() { ok_ = false; }

  std::vector<quant::FixedPointQuantizerImpl*> trained_;
  std::vector<torch::Tensor> kept_;  ///< fixed bits the kernel reads
  bool ok_ = true;
};

}  // namespace
#endif

torch::Tensor PQLayer::fused_hgq_loss(const torch::Tensor& beta) {
  if (beta.is_cuda()) {
#ifdef SPARQ_WITH_CUDA
    // Dense and activation layers (the hls4ml networks); the other kinds take the composed ops.
    DeviceHgqLoss device(*this);
    auto& a = device.args;
    if (auto* dense = dynamic_cast<PQDenseImpl*>(this)) {
      if (!input_shape_.empty()) {
        a.kind = cuda::HgqLossArgs::kDense;
        a.features = dense->weight.size(1), a.outputs = dense->weight.size(0);
        a.positions = c10::multiply_integers(input_shape_) / a.features;
        device.lane(a.input, input_q, lane_shape());
        device.lane(a.weight, weight_q, dense->weight.sizes());
        if ((a.has_bias = dense->bias.defined())) device.lane(a.bias, bias_q, dense->bias.sizes());
      }
      return device.run(beta);
    }
    if (dynamic_cast<PQActivationImpl*>(this)) {
      if (!input_shape_.empty() && input_q && input_q->enabled) {
        a.kind = cuda::HgqLossArgs::kActivation;
        a.lane = c10::multiply_integers(input_shape_);
        device.lane(a.input, input_q, lane_shape());
        if (output_q && output_q->enabled) device.lane(a.output, output_q, lane_shape());
        else a.output = a.input;  // the value leaves at its input width
      }
      return device.run(beta);
    }
#endif
    return {};
  }
  if (!beta.device().is_cpu()) return {};
  HgqBits bits(*this);
  if (!bits.ok()) return {};
  const double ebops = ebops_gradient(bits);
  if (!bits.ok()) return {};
  return bits.loss(ebops, beta.item<double>());
}

namespace {
/// mean(bits of `param`) · factor, the bias term of the weight layers and BatchNorm.
double mean_bits_term(HgqBits& b, const quant::Quantizer& q, const torch::Tensor& param, double factor) {
  if (!param.defined()) return 0;
  auto& lane = b.of(q, param.sizes());
  double sum = 0;
  for (int64_t j = 0; j < lane.numel(); ++j) sum += lane.bits[j], lane.grad[j] += factor / lane.numel();
  return sum / lane.numel() * factor;
}
}  // namespace

// Σ_{pos,o,i} B_in[pos,i]·B_w[o,i] + mean(B_b)·positions·out
double PQDenseImpl::ebops_gradient(HgqBits& b) {
  if (input_shape_.empty()) return 0;
  auto& w = b.of(weight_q, weight.sizes());
  auto& in = b.of(input_q, lane_shape());
  const int64_t out = weight.size(0), features = weight.size(1), positions = in.numel() / features;
  std::vector<double> in_sum(features, 0.0), w_column(features, 0.0);
  for (int64_t p = 0; p < positions; ++p)
    for (int64_t i = 0; i < features; ++i) in_sum[i] += in.bits[p * features + i];
  double ebops = 0;
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < features; ++i) {
      const int64_t at = o * features + i;
      ebops += w.bits[at] * in_sum[i];
      w.grad[at] += in_sum[i];
      w_column[i] += w.bits[at];
    }
  for (int64_t p = 0; p < positions; ++p)
    for (int64_t i = 0; i < features; ++i) in.grad[p * features + i] += w_column[i];
  return ebops + mean_bits_term(b, bias_q, bias, static_cast<double>(positions * out));
}

// Σ_{o,c} max_spatial(B_in)[c]·Σ_kernel B_w[o,c] per group + mean(B_b)·prod(input shape); the
// maximum's derivative goes to its first position, as LibTorch's max does.
double PQConvImpl::ebops_gradient(HgqBits& b) {
  if (input_shape_.empty()) return 0;
  auto& w = b.of(weight_q, weight.sizes());
  auto& in = b.of(input_q, lane_shape());
  const int64_t channels = input_shape_[0], out = weight.size(0), groups = options_.groups();
  const int64_t group_in = channels / groups, group_out = out / groups, spatial = in.numel() / channels,
                kernel = w.numel() / (out * group_in);
  std::vector<double> in_max(channels), reach(channels, 0.0);  // reach: Σ_kernel B_w over the outputs reading c
  std::vector<int64_t> arg(channels, 0);
  for (int64_t c = 0; c < channels; ++c) {
    in_max[c] = in.bits[c * spatial];
    for (int64_t s = 1; s < spatial; ++s)
      if (in.bits[c * spatial + s] > in_max[c]) in_max[c] = in.bits[c * spatial + s], arg[c] = s;
  }
  double ebops = 0;
  for (int64_t o = 0; o < out; ++o)
    for (int64_t cl = 0; cl < group_in; ++cl) {
      const int64_t c = o / group_out * group_in + cl;
      double w_sum = 0;
      for (int64_t k = 0; k < kernel; ++k) {
        const int64_t at = (o * group_in + cl) * kernel + k;
        w_sum += w.bits[at];
        w.grad[at] += in_max[c];
      }
      ebops += w_sum * in_max[c];
      reach[c] += w_sum;
    }
  for (int64_t c = 0; c < channels; ++c) in.grad[c * spatial + arg[c]] += reach[c];
  return ebops + mean_bits_term(b, bias_q, bias, static_cast<double>(in.numel()));
}

// Σ B_in
double PQAvgPoolImpl::ebops_gradient(HgqBits& b) {
  if (input_shape_.empty()) return 0;
  auto& in = b.of(input_q, lane_shape());
  double ebops = 0;
  for (int64_t j = 0; j < in.numel(); ++j) ebops += in.bits[j], in.grad[j] += 1;
  return ebops;
}

// Σ B_in·B_w[c] + mean(B_b)·prod(input shape)
double PQBatchNormImpl::ebops_gradient(HgqBits& b) {
  if (input_shape_.empty()) return 0;
  auto& in = b.of(input_q, lane_shape());
  auto& w = b.of(weight_q, weight.sizes());
  const int64_t channels = weight.size(0), inner = in.numel() / channels;
  double ebops = 0;
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t s = 0; s < inner; ++s) {
      const int64_t at = c * inner + s;
      ebops += in.bits[at] * w.bits[c];
      in.grad[at] += w.bits[c];
      w.grad[c] += in.bits[at];
    }
  return ebops + mean_bits_term(b, bias_q, bias, static_cast<double>(in.numel()));
}

// 1e-4·Σ 2^B_in·B_out (B_out = B_in without an output quantizer)
double PQActivationImpl::ebops_gradient(HgqBits& b) {
  if (input_shape_.empty() || !input_q || !input_q->enabled) return 0;
  auto& in = b.of(input_q, lane_shape());
  auto& out = output_q && output_q->enabled ? b.of(output_q, lane_shape()) : in;
  const double ln2 = std::log(2.0);
  double ebops = 0;
  for (int64_t j = 0; j < in.numel(); ++j) {
    const double table = 1e-4 * std::exp2(in.bits[j]), b_out = out.bits[j];
    ebops += table * b_out;
    in.grad[j] += ln2 * table * b_out;
    out.grad[j] += table;
  }
  return ebops;
}

}  // namespace sparq::layers
