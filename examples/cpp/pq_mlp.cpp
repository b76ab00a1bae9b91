// A small quantized MLP built from PQ layers by hand and trained with LibTorch's loop; then a zoo
// model quantized by compress(). Built as build/examples/cpp/pq_mlp (see the README).
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <sparq/compress/compress.h>
#include <sparq/layers/pq_layers.h>
#include <sparq/runtime.h>
#include <sparq/train/trainer.h>

int main() {
  using namespace sparq;
  configure_runtime();
  torch::manual_seed(0);
  // 8-bit weights ap_fixed<8,1>, activations ap_fixed<8,4>, ReLU input ap_ufixed<8,3>.
  layers::QuantTargets dense;
  dense.input = quant::FixedSpec{1, 3, 4};
  dense.weight = dense.bias = quant::FixedSpec{1, 0, 7};
  layers::QuantTargets relu;
  relu.input = quant::FixedSpec{0, 3, 5};
  torch::nn::Sequential net(layers::PQDense(16, 32, true, dense), layers::PQActivation("relu", relu),
                            layers::PQDense(32, 5, true, dense));
  auto opt = train::make_optimizer(net->parameters(), train::TrainOptions{});
  // A learnable toy task: the class is the index of the largest of the first five features.
  auto x = torch::randn({512, 16});
  auto y = std::get<1>(x.slice(1, 0, 5).max(1));
  for (int step = 0; step < 300; ++step) {
    opt->zero_grad();
    auto loss = torch::nn::functional::cross_entropy(net->forward(x), y);
    loss.backward();
    opt->step();
  }
  net->eval();
  double accuracy = (net->forward(x).argmax(1) == y).to(torch::kFloat64).mean().item<double>();
  fmt::print("PQ MLP: training accuracy {:.3f}\n", accuracy);

  // Or quantize a zoo model with a plan of rules: 8-bit weights ap_fixed<8,2> on every layer that
  // has weights, ap_fixed<8,4> inputs everywhere, ReLU inputs unsigned.
  models::Graph g(models::zoo_spec("lenet", {1, 28, 28}, 10));
  Plan plan;
  Rule all;
  all.targets["weight"].quant = QuantSetting::of(quant::FixedSpec{1, 1, 6});
  all.targets[kInput].quant = QuantSetting::of(quant::FixedSpec{1, 3, 4});
  Rule relus;
  relus.select.op_types = {"ReLU"};
  relus.targets[kInput].quant = QuantSetting::of(quant::FixedSpec{0, 3, 5});
  plan.rules = {all, relus};
  auto report = compress(g, plan);
  fmt::print("lenet: {} layers quantized; in float: {}\n", report.replaced.size(), fmt::join(report.left_float, "; "));
  return accuracy > 0.8 ? 0 : 1;
}
