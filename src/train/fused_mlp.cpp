#include "train/fused_mlp.h"

#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "quant/fixed_point_kernels.h"
#include "sparq/compress/compress.h"
#include "sparq/layers/pq_layers.h"
#include "sparq/quant/quantizer.h"
#include "train/fused_mlp_tile.h"
#ifdef SPARQ_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>

#include "train/fused_mlp_cuda.h"
#endif

namespace sparq::train {

namespace {

int pad4(int n) { return (n + 3) / 4 * 4; }

// The tile code (host and device, without the quantizer's headers) keeps its own copy of the bounds.
static_assert(mlp::kMinI == quant::FixedPointQuantizerImpl::kMinI && mlp::kMaxI == quant::FixedPointQuantizerImpl::kMaxI &&
              mlp::kMinF == quant::FixedPointQuantizerImpl::kMinF && mlp::kMaxF == quant::FixedPointQuantizerImpl::kMaxF);

/// Where one input of the fused function finds its gradient in the summed row.
struct Slot {
  int64_t offset = 0, count = 0;
  bool sum_all = false;  ///< a per-tensor width: the lane's per-feature sums added up
};

// ---- the CPU twin: the tile code thread after thread ----

void cpu_forward(const mlp::Desc& d, const float* x, float* y) {
  for (int t = 0; t < mlp::kThreads; ++t) mlp::clamp_widths(d, t);
  at::parallel_for(0, mlp::tiles(d), 1, [&](int64_t begin, int64_t end) {
    std::vector<float> s(d.smem_floats);
    for (int64_t tile = begin; tile < end; ++tile)
      mlp::forward_tile(d, s.data(), x, y, tile, [](auto&& phase) {
        for (int t = 0; t < mlp::kThreads; ++t) phase(t);
      });
  });
}

void cpu_backward(const mlp::Desc& d, const float* x, const float* gy, float* partial, float* sums) {
  const int64_t tiles = mlp::tiles(d);
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> s(d.smem_floats);
    for (int64_t tile = begin; tile < end; ++tile)
      mlp::backward_tile(d, s.data(), x, gy, partial + tile * d.row, tile, [](auto&& phase) {
        for (int t = 0; t < mlp::kThreads; ++t) phase(t);
      });
  });
  for (int j = 0; j < d.row; ++j) {  // the tiles in order: the same sums every run
    double acc = 0;
    for (int64_t tile = 0; tile < tiles; ++tile) acc += partial[tile * d.row + j];
    sums[j] = static_cast<float>(acc);
  }
}

torch::Tensor desc_bytes(const mlp::Desc& d) {
  auto t = torch::empty({static_cast<int64_t>(sizeof(mlp::Desc))}, torch::kUInt8);
  std::memcpy(t.data_ptr(), &d, sizeof(mlp::Desc));
  return t;
}

/// The chain as one autograd node: inputs x, then the quantized weights and biases and the trained
/// widths (in `slots` order); the gradient of x is not computed (data).
struct FusedMlpFunction : public torch::autograd::Function<FusedMlpFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x, at::TensorList inputs,
                               mlp::Desc d, const std::vector<Slot>& slots) {
    const int out = d.layer[d.layers - 1].out;
    auto y = torch::empty({x.size(0), out}, x.options());
    auto z = torch::empty({mlp::tiles(d), d.z_row}, x.options());  // every layer's z, for the backward
    d.z = z.data_ptr<float>();
#ifdef SPARQ_WITH_CUDA
    if (x.is_cuda()) mlp::cuda::forward(d, x.data_ptr<float>(), y.data_ptr<float>());
    else
#endif
      cpu_forward(d, x.data_ptr<float>(), y.data_ptr<float>());
    std::vector<torch::Tensor> saved{x};
    saved.insert(saved.end(), inputs.begin(), inputs.end());
    saved.push_back(z);
    ctx->save_for_backward(saved);  // keeps alive what the description points to
    ctx->saved_data["desc"] = desc_bytes(d);
    std::vector<int64_t> offsets, counts, sum_all;
    for (const auto& s : slots) offsets.push_back(s.offset), counts.push_back(s.count), sum_all.push_back(s.sum_all);
    ctx->saved_data["offsets"] = offsets;
    ctx->saved_data["counts"] = counts;
    ctx->saved_data["sum_all"] = sum_all;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    auto saved = ctx->get_saved_variables();
    mlp::Desc d;
    std::memcpy(&d, ctx->saved_data["desc"].toTensor().data_ptr(), sizeof(mlp::Desc));
    const auto& x = saved[0];
    auto gy = grad[0].contiguous();
    const int64_t tiles = mlp::tiles(d);
    auto partial = torch::empty({tiles, d.row}, x.options());
    auto sums = torch::empty({d.row}, x.options());
#ifdef SPARQ_WITH_CUDA
    if (x.is_cuda()) mlp::cuda::backward(d, x.data_ptr<float>(), gy.data_ptr<float>(), partial.data_ptr<float>(),
                                         sums.data_ptr<float>());
    else
#endif
      cpu_backward(d, x.data_ptr<float>(), gy.data_ptr<float>(), partial.data_ptr<float>(), sums.data_ptr<float>());
    const auto offsets = ctx->saved_data["offsets"].toIntVector(), counts = ctx->saved_data["counts"].toIntVector(),
               sum_all = ctx->saved_data["sum_all"].toIntVector();
    torch::autograd::variable_list out{torch::Tensor()};
    for (size_t j = 0; j < offsets.size(); ++j) {
      auto g = sums.narrow(0, offsets[j], counts[j]);
      const auto& input = saved[1 + j];
      out.push_back(sum_all[j] ? g.sum().reshape(input.sizes()) : g.view(input.sizes()));
    }
    out.push_back(torch::Tensor());  // desc
    out.push_back(torch::Tensor());  // slots
    return out;
  }
};

}  // namespace

struct FusedMlp::Built {
  mlp::Desc desc;
  std::vector<torch::Tensor> inputs;
  std::vector<Slot> slots;
  int lane_begin = 0;  ///< first op of the lane being built
  int width = 0;       ///< width of the value the chain is at
  int lane_ops = 0;    ///< ops on that lane so far
};

std::string FusedMlp::refusal(const torch::Tensor& x, bool allow_cpu) {
  if (x.dim() != 2) return fmt::format("inputs of {} dimensions (a Dense chain takes [batch, features])", x.dim());
  if (x.scalar_type() != torch::kFloat32) return "inputs are not float32";
  if (x.requires_grad()) return "the input needs its gradient";
  if (!x.is_cuda() && !allow_cpu) return "not on a GPU";
#ifndef SPARQ_WITH_CUDA
  if (x.is_cuda()) return "this build has no CUDA kernels";
#endif
  Built b;
  return build(x, /*with_tensors=*/false, b);
}

std::string FusedMlp::build(const torch::Tensor& x, bool with_tensors, Built& b) {
  mlp::Desc& d = b.desc;
  d = mlp::Desc{};
  d.n = x.size(0);
  d.in_width = b.width = static_cast<int>(x.size(1));
  if (b.width > mlp::kMaxWidth) return fmt::format("{} input features (the kernels take up to {})", b.width, mlp::kMaxWidth);
  // The lane being built ends where a Dense layer begins: its ops go to the layer before (or the input).
  auto close_lane = [&] {
    int& begin = d.layers == 0 ? d.in_ops_begin : d.layer[d.layers - 1].ops_begin;
    int& end = d.layers == 0 ? d.in_ops_end : d.layer[d.layers - 1].ops_end;
    begin = b.lane_begin, end = d.ops;
    b.lane_begin = d.ops, b.lane_ops = 0;
  };
  auto add_op = [&](const mlp::LaneOp& op) -> std::string {
    if (d.ops == mlp::kMaxOps) return fmt::format("more than {} quantizers and activations", mlp::kMaxOps);
    if (++b.lane_ops > mlp::kMaxChain)
      return fmt::format("more than {} quantizers and activations between two Dense layers", mlp::kMaxChain);
    d.op[d.ops++] = op;
    return {};
  };
  auto add_relu = [&] { return add_op(mlp::LaneOp{}); };
  auto add_quantizer = [&](const quant::Quantizer& q, const std::string& where) -> std::string {
    if (q.is_empty() || !q->enabled) return {};
    auto fp = quant::as_fixed_point(q);
    if (!fp) return fmt::format("{}: quantizer kind '{}'", where, q->kind());
    const auto& spec = fp->spec();
    mlp::LaneOp op;
    op.round = static_cast<int>(spec.round);
    op.overflow = static_cast<int>(spec.overflow);
    if (fp->trains_widths()) {
      if (spec.overflow != quant::OverflowMode::SAT && spec.overflow != quant::OverflowMode::SAT_SYM)
        return fmt::format("{}: HGQ overflow {} (the kernels take SAT and SAT_SYM)", where, quant::to_string(spec.overflow));
      const int64_t n = fp->k.numel();
      if (n != 1 && !(fp->k.dim() == 2 && fp->k.size(0) == 1 && n == b.width))
        return fmt::format("{}: HGQ widths of shape [{}] (the kernels take one per feature or one per lane)", where,
                           fmt::join(fp->k.sizes(), ", "));
      for (const auto* t : {&fp->k, &fp->i, &fp->f})
        if (t->numel() != n || t->scalar_type() != torch::kFloat32 || !t->is_contiguous() || t->device() != x.device())
          return fmt::format("{}: HGQ widths that are not contiguous float32 on the input's device", where);
      op.kind = mlp::kHgq;
      op.period = static_cast<int>(n);
      if (with_tensors) {
        op.k = fp->k.data_ptr<float>(), op.i = fp->i.data_ptr<float>(), op.f = fp->f.data_ptr<float>();
        if (fp->i.requires_grad() || fp->f.requires_grad()) {
          op.grad = d.row;
          d.row += 2 * b.width;
          // g·dq/df first, then g·dq/di (lane_backward's row layout).
          for (auto [t, offset] : {std::pair{&fp->f, op.grad}, std::pair{&fp->i, op.grad + b.width}}) {
            if (!t->requires_grad()) continue;
            b.inputs.push_back(*t);
            b.slots.push_back({offset, b.width, n == 1});
          }
        }
      }
    } else {
      if (!fp->is_data() || spec.dynamic || fp->k.numel() != 1)
        return fmt::format("{}: fixed widths that are not one per tensor", where);
      if (with_tensors) {
        const auto [k, i, f] = fp->host_bits();
        const auto p = quant::kernels::format_constants(k, i, f, spec.overflow);
        if (!p) return fmt::format("{}: a fixed format with negative f or WRAP_SM", where);
        op.kind = mlp::kFixed;
        op.fixed = {static_cast<float>(p->scale), static_cast<float>(p->step), static_cast<float>(p->lo),
                    static_cast<float>(p->nmax), spec.overflow == quant::OverflowMode::WRAP};
      } else if (spec.overflow == quant::OverflowMode::WRAP_SM) {
        return fmt::format("{}: overflow WRAP_SM", where);
      } else {
        op.kind = mlp::kFixed;
      }
    }
    return add_op(op);
  };
  auto add_dense = [&](int out, const std::string& name, const std::function<std::pair<torch::Tensor, torch::Tensor>()>& weights) -> std::string {
    if (d.layers == mlp::kMaxLayers) return fmt::format("more than {} Dense layers", mlp::kMaxLayers);
    if (out > mlp::kMaxWidth) return fmt::format("{}: {} outputs (the kernels take up to {})", name, out, mlp::kMaxWidth);
    close_lane();
    mlp::Layer& L = d.layer[d.layers++];
    L.in = b.width, L.out = out, L.in_pad = pad4(L.in), L.out_pad = pad4(L.out);
    L.w_grad = d.row;
    d.row += L.out * L.in;
    if (with_tensors) {
      auto [w, bias] = weights();
      if (w.scalar_type() != torch::kFloat32 || w.device() != x.device() || !w.sizes().equals({out, b.width}))
        return fmt::format("{}: weights that are not float32 [{}, {}] on the input's device", name, out, b.width);
      w = w.contiguous();
      L.w = w.data_ptr<float>();
      b.inputs.push_back(w);
      b.slots.push_back({L.w_grad, static_cast<int64_t>(L.out) * L.in, false});
      if (bias.defined()) {
        bias = bias.contiguous();
        L.b = bias.data_ptr<float>();
        L.b_grad = d.row;
        d.row += L.out;
        b.inputs.push_back(bias);
        b.slots.push_back({L.b_grad, L.out, false});
      }
    }
    b.width = out;
    return {};
  };

  const auto& nodes = model_->nodes();
  if (model_->output_index() != static_cast<int>(nodes.size()) - 1) return "the model's output is not its last node";
  if (model_->recording()) return "node outputs are recorded (distillation)";
  for (size_t n = 0; n < nodes.size(); ++n) {
    const auto& node = nodes[n];
    const std::string where = fmt::format("node '{}'", node.name);
    if (node.inputs.size() != 1 || node.inputs[0] != static_cast<int>(n) - 1)
      return where + " does not take the previous node's output alone";
    if (node.skipped) return where + " is skipped";
    if (node.module.is_empty()) return fmt::format("{} ({})", where, node.op);
    auto module = node.module.ptr();
    std::string why;
    if (auto dense = std::dynamic_pointer_cast<layers::PQDenseImpl>(module)) {
      if (dense->pruning()) return where + " has a pruning method";
      if (dense->folds_batchnorm() && dense->fold_active) return where + " folds a batch norm";
      for (const char* target : {"_input_0", "_output_0"})
        if (dense->mask(target)) return where + " has a mask on " + target;
      if (with_tensors) dense->set_input_shape({b.width});
      if (!(why = add_quantizer(dense->quantizer("input"), where + " input")).empty()) return why;
      const int out = static_cast<int>(dense->options().out_features());
      if (!(why = add_dense(out, where, [&] { return std::pair{dense->effective_weight(), dense->effective_bias()}; })).empty())
        return why;
      if (dense->fused_relu && dense->fold_active && !(why = add_relu()).empty()) return why;
      if (!(why = add_quantizer(dense->quantizer("output"), where + " output")).empty()) return why;
    } else if (auto linear = std::dynamic_pointer_cast<torch::nn::LinearImpl>(module)) {
      const int out = static_cast<int>(linear->options.out_features());
      if (!(why = add_dense(out, where, [&] { return std::pair{linear->weight, linear->bias}; })).empty()) return why;
    } else if (auto act = std::dynamic_pointer_cast<layers::PQActivationImpl>(module)) {
      if (act->function() != "relu") return fmt::format("{}: activation {} (the kernels take relu)", where, act->function());
      if (act->multiplier.defined()) return where + " has a ReLU multiplier";
      for (const char* target : {"_input_0", "_output_0"})
        if (act->mask(target)) return where + " has a mask on " + target;
      if (with_tensors) act->set_input_shape({b.width});
      auto input_q = act->quantizer("input");
      if (!(why = add_quantizer(input_q, where + " input")).empty()) return why;
      if (!(!input_q.is_empty() && input_q->clips_negatives()) && !(why = add_relu()).empty()) return why;
      if (!(why = add_quantizer(act->quantizer("output"), where + " output")).empty()) return why;
    } else if (std::dynamic_pointer_cast<torch::nn::ReLUImpl>(module)) {
      if (!(why = add_relu()).empty()) return why;
    } else {
      return fmt::format("{} ({}) is not a Dense or ReLU layer", where, node.op);
    }
  }
  if (d.layers == 0) return "the model has no Dense layer";
  close_lane();
  for (int o = d.in_ops_begin; o < d.in_ops_end; ++o) d.input_lane_grads |= d.op[o].grad >= 0;
  // Shared memory: the padded weights and biases, every layer's z and a scratch row of the widest
  // lane (what the forward uses), then a second scratch row and the partial sums.
  int at = 0, widest = d.in_width;
  for (int l = 0; l < d.layers; ++l) {
    mlp::Layer& L = d.layer[l];
    L.w_smem = at, at += L.out_pad * L.in_pad;
    L.b_smem = at, at += L.out_pad;
    widest = std::max(widest, L.out_pad);
  }
  widest = std::max(widest, pad4(d.in_width));
  d.z0_smem = at, at += d.in_width * mlp::kStride;
  for (int l = 0; l < d.layers; ++l) {
    d.layer[l].z_smem = at, at += d.layer[l].out * mlp::kStride;
    d.layer[l].z_keep = d.z_row, d.z_row += d.layer[l].out * mlp::kTile;
  }
  d.p_smem = at, at += widest * mlp::kStride;
  d.q_smem = at, at += widest * mlp::kStride;
  d.sums_smem = at, at += mlp::kSumsFloats;
  d.smem_floats = at;
#ifdef SPARQ_WITH_CUDA
  if (x.is_cuda()) return mlp::cuda::refusal(d);
#endif
  return {};
}

torch::Tensor FusedMlp::forward(const torch::Tensor& x, std::string* why) {
  Built b;
  if (auto refused = build(x, /*with_tensors=*/true, b); !refused.empty()) {
    if (why) *why = refused;
    return {};
  }
  auto xc = x.contiguous();
  return FusedMlpFunction::apply(xc, at::TensorList(b.inputs), b.desc, b.slots);
}

}  // namespace sparq::train
