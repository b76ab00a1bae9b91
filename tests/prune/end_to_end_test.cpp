// Every pruning method end to end: pruned weights stay zero and a resumed run keeps its masks.
#include "prune/method_test_util.h"

using namespace sparq;
using namespace sparq::test;

TEST(PruningEndToEnd, PrunedWeightsStayZeroAndResumeKeepsMasks) {
  auto train = test::blobs(256, 1), eval = test::blobs(64, 2);
  for (const char* method : {"pdp", "wanda", "cs", "activation_pruning", "dst", "autosparse", "mdmm"}) {
    SCOPED_TRACE(method);
    Plan plan = test::pquant_plan("quantization_parameters: {}");
    auto spec = prune::default_spec(method);
    auto& p = spec.params;
    if (std::string(method) == "pdp") p["epsilon"] = 0.5, p["sparsity"] = 0.6;
    if (std::string(method) == "wanda") p["t_delta"] = int64_t{3}, p["t_start_collecting_batch"] = int64_t{1}, p["sparsity"] = 0.6;
    if (std::string(method) == "cs") p["final_temp"] = int64_t{50}, p["threshold_decay"] = 1e-2, p["threshold_init"] = 0.0;
    if (std::string(method) == "activation_pruning") p["t_delta"] = int64_t{4}, p["t_start_collecting_batch"] = int64_t{0};
    if (std::string(method) == "dst") p["alpha"] = 1e-2, p["threshold_init"] = 0.05;
    if (std::string(method) == "autosparse") p["threshold_init"] = -3.0;
    if (std::string(method) == "mdmm") p["epsilon"] = 0.05;
    Rule pruning;
    pruning.select.op_types = {"Linear"};
    pruning.targets["weight"].prune = PruneSetting{spec, true, std::nullopt};
    pruning.module.pruning_first = true;
    plan.rules.push_back(pruning);
    Schedule schedule;
    schedule.pretraining_epochs = 1, schedule.epochs = 3, schedule.rounds = 1, schedule.fine_tuning_epochs = 2;
    std::vector<std::string> names;
    auto run = [&](const std::string& dir, std::vector<int64_t> stops) {
      std::vector<torch::Tensor> state;
      bool resume = false;
      stops.push_back(-1);
      models::Graph model{nullptr};
      for (int64_t stop : stops) {
        train::seed_everything(4);
        model = models::Graph(models::parse_model_yaml(R"(
input_shape: [8]
layers:
  - {name: fc1, op: Linear, out_features: 16}
  - {name: relu1, op: ReLU}
  - {name: fc2, op: Linear, out_features: 3}
)", "mlp.yaml"));
        compress(model, plan);
        train::TrainOptions o;
        o.lr = 0.01, o.batch_size = 32, o.seed = 4, o.progress = train::Progress::None;
        test::RunTrainer trainer(model, o, dir, schedule);
        trainer.fit(train, eval, resume, stop);
        resume = true;
      }
      for (const auto& b : model->named_buffers()) state.push_back(b.value().clone()), names.push_back(b.key());
      for (const auto& w : model->named_parameters()) state.push_back(w.value().detach().clone()), names.push_back(w.key());
      return std::make_pair(model, state);
    };
    test::TempDir full("prune_full"), split("prune_split");
    auto [model, straight] = run(full.path().string(), {});
    auto [resumed_model, resumed] = run(split.path().string(), {2, 4});  // stops in training and fine-tuning
    ASSERT_EQ(straight.size(), resumed.size());
    for (size_t i = 0; i < straight.size(); ++i) EXPECT_TRUE(straight[i].equal(resumed[i])) << names[i];
    // Pruned weights are exact zeros in the parameters (and so in checkpoint.pt) after fine-tuning.
    int64_t zeros = 0;
    for (const char* name : {"fc1", "fc2"}) {
      auto layer = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(model, name));
      auto mask = layer->pruning()->hard_mask(layer->weight);
      EXPECT_TRUE((layer->weight.masked_select(mask.expand_as(layer->weight) == 0) == 0).all().item<bool>());
      zeros += (mask.expand_as(layer->weight) == 0).sum().item<int64_t>();
    }
    EXPECT_GT(zeros, 0) << "nothing was pruned";
    torch::serialize::InputArchive root, weights;
    root.load_from(full.file("checkpoint.pt"));
    root.read("model", weights);
    torch::Tensor saved;
    weights.read("fc1.weight", saved);
    auto fc1 = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(model, "fc1"));
    EXPECT_TRUE(saved.equal(fc1->weight.detach()));
  }
}
