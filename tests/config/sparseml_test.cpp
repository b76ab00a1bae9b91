// SparseML recipes: grammar, variables and eval() (spec sparseml §1, §4.2 A), every field's
// checks, and the bad recipes of the issue (exit 2 with file:line and the key or tag).
#include <gtest/gtest.h>

#include "../../src/config/sparseml/recipe_eval.h"
#include "sparq/config/dialect.h"
#include "sparq/config/sparseml.h"
#include "test_util.h"

namespace sparq {
namespace {

using config::sparseml::Number;

Plan recipe(const std::string& text, const config::RecipeVariables& vars = {}) {
  auto doc = yaml::YamlDoc::load_string(text, "r.yaml");
  config::LoadOptions o;
  o.recipe_variables = vars;
  return config::load_plan(doc.file, doc.root, o);
}

std::string recipe_error(const std::string& text, const config::RecipeVariables& vars = {}) {
  try {
    recipe(text, vars);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

const Modifier& find(const Plan& p, const std::string& type) {
  for (const auto& m : p.modifiers)
    if (m.type == type) return m;
  throw std::runtime_error("no " + type);
}

TEST(RecipeEval, ReferenceCases) {
  auto ev = [](const std::string& e, std::map<std::string, Number> v = {}) { return config::sparseml::evaluate(e, v).value; };
  EXPECT_EQ(ev("1"), 1);
  EXPECT_EQ(ev("2 *3 + 1"), 7);
  EXPECT_EQ(ev("2 * (3 + 1)"), 8);
  EXPECT_DOUBLE_EQ(ev("x", {{"x", {5.2, false}}}), 5.2);
  EXPECT_EQ(ev("0.2 * num_epochs", {{"num_epochs", {100, true}}}), 20);
  EXPECT_EQ(ev("num_epochs + offset", {{"num_epochs", {100, true}}, {"offset", {5, true}}}), 105);
  EXPECT_EQ(ev("min(0.2 * num_epochs, pruning_start) - 5", {{"num_epochs", {100, true}}, {"pruning_start", {19, true}}}), 14);
  EXPECT_EQ(ev("min(0.2 * num_epochs, pruning_start) - 5", {{"num_epochs", {100, true}}, {"pruning_start", {21, true}}}), 15);
  // Python semantics: floor division and modulo, power, unary minus (which SparseML's crashes on)
  EXPECT_EQ(ev("-7 // 2"), -4);
  EXPECT_EQ(ev("-7 % 3"), 2);
  EXPECT_EQ(ev("2 ** 3 ** 2"), 512);
  EXPECT_EQ(ev("-2 ** 2"), -4);
  EXPECT_EQ(ev("-x", {{"x", {3, true}}}), -3);
  EXPECT_EQ(ev("round(2.5)"), 2);  // half to even
  EXPECT_EQ(ev("round(3.5)"), 4);
  EXPECT_DOUBLE_EQ(ev("round(number=2.675, ndigits=1)"), 2.7);
  EXPECT_EQ(ev("int(-2.7) + abs(-3) + max(1, 4, 2)"), -2 + 3 + 4);
  EXPECT_THROW(ev("5 + num_epochs"), config::sparseml::UnknownVariable);
  EXPECT_THROW(ev("[1,2]"), std::invalid_argument);
  EXPECT_THROW(ev("tuple(5)"), std::invalid_argument);
  EXPECT_THROW(ev("x.y", {{"x", {1, true}}}), std::invalid_argument);
  EXPECT_THROW(ev("1 / 0"), std::invalid_argument);
}

TEST(Recipe, VariablesAndExpressionsAsTheSpecEvaluates) {  // §4.2 A1
  auto p = recipe(R"(
num_epochs: 10.0
pruning_end_epoch: eval(pruning_start_epoch + num_pruning_epochs)
pruning_start_epoch: eval(num_epochs * 0.2)
num_pruning_epochs: 6
init_sparsity: 0.2
pruning_mask_type: [1, 4]
modifiers:
  - !GMPruningModifier
    end_epoch: eval(pruning_end_epoch)
    final_sparsity: eval(init_sparsity + 0.7)
    init_sparsity: eval(init_sparsity)
    mask_type: eval(pruning_mask_type)
    start_epoch: eval(pruning_start_epoch)
    update_frequency: 1.0
    params: ['re:.*weight']
)");
  ASSERT_EQ(p.dialect, "sparseml");
  const auto& m = find(p, "GMPruningModifier");
  EXPECT_EQ(m.start_epoch, 2.0);
  EXPECT_EQ(m.end_epoch, 8.0);
  EXPECT_EQ(m.final_sparsity, 0.8999999999999999);  // the floating sum 0.2 + 0.7
  EXPECT_EQ(m.init_sparsity, 0.2);
  EXPECT_EQ(m.mask_type.kind, MaskType::Kind::Block);
  EXPECT_EQ(m.mask_type.a, 1);
  EXPECT_EQ(m.mask_type.b, 4);
  EXPECT_FALSE(m.mask_type.four_block);
  ASSERT_TRUE(p.schedule);
  EXPECT_EQ(p.schedule->epochs, 8);
}

TEST(Recipe, StagedRecipeScopes) {  // §4.2 A2
  auto p = recipe(R"(
sparsity: 0.9
lr_func: cosine
init_lr: 0.05
final_lr: 0.0
end_epoch: 100
update_frequency: 10
start_epoch: 0.0
global_sparsity: True
stage_a:
  update_frequency: 5
  end_epoch_global: eval(end_epoch)
  end_epoch: 75
  num_epochs: 10
  end_warm_up_epoch: 5.0
  final_lr: 0.256
  sparsity: 0.5
  global_sparsity: False
  stage_a_modifiers:
    - !GMPruningModifier
      params: __ALL_PRUNABLE__
      init_sparsity: 0.05
      final_sparsity: eval(sparsity)
      start_epoch: eval(start_epoch)
      end_epoch: eval(end_epoch)
      update_frequency: eval(update_frequency)
      global_sparsity: eval(global_sparsity)
    - !LearningRateFunctionModifier
      lr_func: eval(lr_func)
      init_lr: eval(init_lr)
      final_lr: eval(final_lr)
      start_epoch: eval(end_epoch_global - 100)
      end_epoch: eval(end_epoch_global)
stage_b:
  new_num_epochs: 15
  stage_b_modifiers:
    - !EpochRangeModifier
      start_epoch: eval(start_epoch + new_num_epochs)
      end_epoch: eval(end_epoch)
    - !SetLearningRateModifier {start_epoch: 0.0, learning_rate: eval(sparsity)}
)");
  const auto& gm = find(p, "GMPruningModifier");
  EXPECT_EQ(gm.stage, "stage_a");
  EXPECT_EQ(gm.end_epoch, 75);
  EXPECT_EQ(gm.final_sparsity, 0.5);
  EXPECT_EQ(gm.update_frequency, 5);
  EXPECT_FALSE(gm.global_sparsity);
  const auto& lr = find(p, "LearningRateFunctionModifier");
  EXPECT_EQ(lr.lr_func, "cosine");
  EXPECT_EQ(lr.init_lr, 0.05);
  EXPECT_EQ(lr.final_lr, 0.256);
  EXPECT_EQ(lr.end_epoch, 100);  // the stage variable eval(end_epoch) took the global 100
  EXPECT_EQ(lr.start_epoch, 0);
  const auto& range = find(p, "EpochRangeModifier");
  EXPECT_EQ(range.stage, "stage_b");
  EXPECT_EQ(range.start_epoch, 15.0);
  EXPECT_EQ(range.end_epoch, 100);
  EXPECT_EQ(find(p, "SetLearningRateModifier").learning_rate, 0.9);
  EXPECT_EQ(p.schedule->epochs, 100);
}

TEST(Recipe, VariableErrorsAndOverrides) {  // §4.2 A3, A4
  const std::string tail = "modifiers:\n  - !EpochRangeModifier {start_epoch: 0, end_epoch: 1}\n";
  EXPECT_NE(recipe_error("val_1: eval(val_2)\nval_2: eval(val_1)\n" + tail).find("cycle"), std::string::npos);
  EXPECT_NE(recipe_error("val_1: eval(val2)\n" + tail).find("unknown variable 'val2'"), std::string::npos);
  EXPECT_NE(recipe_error("val_1: eval([1,2])\n" + tail).find("r.yaml:1:"), std::string::npos);
  auto p = recipe("num_epochs: 100.0\nmodifiers:\n  - !EpochRangeModifier {start_epoch: 0, end_epoch: eval(num_epochs)}\n",
                  {{"num_epochs", "10"}});
  EXPECT_EQ(p.modifiers[0].end_epoch, 10);
  EXPECT_NE(recipe_error(tail, {{"nope", "1"}}).find("no variable 'nope'"), std::string::npos);
  config::RecipeVariables vars;
  config::parse_recipe_variable("a=1,b:two", vars);
  EXPECT_EQ(vars.at("a"), "1");
  EXPECT_EQ(vars.at("b"), "two");
  EXPECT_THROW(config::parse_recipe_variable("novalue", vars), ConfigError);
}

TEST(Recipe, ShapesTagsAndLegacyNames) {
  // a single tagged modifier, a list of them, flow style, a qualified tag
  EXPECT_EQ(recipe("!EpochRangeModifier {start_epoch: 0.0, end_epoch: 3}").modifiers.size(), 1u);
  EXPECT_EQ(recipe("- !EpochRangeModifier {start_epoch: 0.0, end_epoch: 3}\n- !pytorch.SetLearningRateModifier "
                   "{learning_rate: 0.1}")
                .modifiers.size(),
            2u);
  EXPECT_EQ(recipe("modifiers: [!EpochRangeModifier {start_epoch: 0.0, end_epoch: 2}]").schedule->epochs, 2);
  // legacy tags equal their new names (log_types dropped); 1e-7 is a number
  auto legacy = recipe(R"(
modifiers:
  - !GradualKSModifier {params: ['re:.*weight'], init_sparsity: 0.05, final_sparsity: 0.8, start_epoch: 1.0,
                        end_epoch: 6.0, update_frequency: 1.0, log_types: __ALL__}
  - !ConstantKSModifier {params: __ALL__}
  - !SetWeightDecayModifier {weight_decay: 1e-7}
)");
  auto modern = recipe(R"(
modifiers:
  - !GMPruningModifier {params: ['re:.*weight'], init_sparsity: 0.05, final_sparsity: 0.8, start_epoch: 1.0,
                        end_epoch: 6.0, update_frequency: 1.0}
  - !ConstantPruningModifier {params: __ALL__}
  - !SetWeightDecayModifier {weight_decay: 1.0e-7}
)");
  ASSERT_EQ(legacy.modifiers.size(), modern.modifiers.size());
  for (size_t i = 0; i < legacy.modifiers.size(); ++i) {
    auto a = legacy.modifiers[i], b = modern.modifiers[i];
    EXPECT_EQ(a.type, b.type);
    a.tag = b.tag, a.where = b.where;
    EXPECT_TRUE(a == b) << a.type;
  }
  EXPECT_EQ(find(legacy, "SetWeightDecayModifier").weight_decay, 1e-7);
  // grouped and staged lists: every *modifiers key, in order
  EXPECT_EQ(recipe("training_modifiers:\n  - !EpochRangeModifier {start_epoch: 0, end_epoch: 4}\n"
                   "pruning_modifiers:\n  - !ConstantPruningModifier {params: __ALL__}\n"
                   "  - !SetLearningRateModifier {learning_rate: 0.1}\n")
                .modifiers.size(),
            3u);
}

TEST(Recipe, ModifierOrderAndEpochRange) {  // §1.8.6, §3.4 and §4.2 B1
  auto p = recipe(test::read_text(test::fixture("sparseml/worked_example.yaml")));
  std::vector<std::string> order;
  for (const auto& m : p.modifiers) order.push_back(m.type);
  EXPECT_EQ(order, (std::vector<std::string>{"GMPruningModifier", "EpochRangeModifier", "SetLearningRateModifier",
                                             "LearningRateModifier", "QuantizationModifier"}));
  EXPECT_EQ(max_epochs(p.modifiers), 10);
  EXPECT_EQ(min_epochs(p.modifiers), 0);
  Modifier a, b;
  a.start_epoch = 1, a.end_epoch = 2, b.start_epoch = 5, b.end_epoch = 10;
  EXPECT_EQ(min_epochs({a, b}), 1);
  EXPECT_EQ(max_epochs({a, b}), 10);
  a.start_epoch = 0, a.end_epoch = 10.5, b.start_epoch = 1, b.end_epoch = 8.2;
  EXPECT_EQ(max_epochs({a, b}), 11);
  EXPECT_EQ(min_epochs({a, b}), 0);
  // QAT: integer quantizers on Linear/Conv weights (int8 symmetric) and inputs (uint8 affine)
  ASSERT_EQ(p.rules.size(), 1u);
  auto w = std::get<quant::IntegerSpec>(*p.rules[0].targets.at("weight").quant->spec);
  EXPECT_TRUE(w.is_signed && w.symmetric && w.bits == 8);
  auto in = std::get<quant::IntegerSpec>(*p.rules[0].targets.at(kInput).quant->spec);
  EXPECT_TRUE(!in.is_signed && !in.symmetric && in.bits == 8);
}

TEST(Recipe, MarkdownFrontMatter) {
  test::TempDir dir("recipe_md");
  test::write_file(dir.file("r.md"), "# My recipe\n\nSome words.\n\n---\nmodifiers:\n  - !EpochRangeModifier\n"
                                     "    start_epoch: 0.0\n    end_epoch: 3\n---\n\nMore words.\n");
  auto p = config::load_plan(dir.file("r.md"));
  EXPECT_EQ(p.schedule->epochs, 3);
  EXPECT_NE(p.modifiers[0].where.find("r.md:7:"), std::string::npos);  // the file's own line
  test::write_file(dir.file("n.md"), "# no front matter\n");
  EXPECT_THROW(config::load_plan(dir.file("n.md")), ConfigError);
  test::write_file(dir.file("r.txt"), "modifiers: []\n");
  try {
    config::load_plan(dir.file("r.txt"));
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("'.txt'"), std::string::npos);
  }
}

TEST(Recipe, BadRecipesNameTheLineAndTheKey) {
  struct Case {
    std::string text, expected;
  };
  const std::string gm = "  - !GMPruningModifier {params: __ALL__, init_sparsity: 0.05, start_epoch: 0, update_frequency: 1,";
  std::vector<Case> cases = {
      {"modifiers:\n  - !NoSuchModifier {start_epoch: 0}\n", "r.yaml:2:5: unknown modifier tag !NoSuchModifier"},
      {"incorrect_modifier_list_name: 1\nstuff:\n  - !EpochRangeModifier {start_epoch: 0, end_epoch: 1}\n",
       "invalid modifier location 'stuff'"},
      {"version: 1.0.0\nnothing: [1, 2]\n", "'modifiers'"},
      {"modifiers:\n  - !EpochRangeModifier {start_epoch: 2, end_epoch: 1}\n", "EpochRangeModifier.end_epoch"},
      {"modifiers:\n" + gm + " end_epoch: 0, final_sparsity: 0.8}\n", "GMPruningModifier.end_epoch: 0 must be after"},
      {"modifiers:\n" + gm + " end_epoch: 5, final_sparsity: 1.2}\n", "GMPruningModifier.final_sparsity: 1.2 is out of range"},
      {"modifiers:\n" + gm + " end_epoch: 5, final_sparsity: 0.8, inter_func: quartic}\n", "unknown interpolation 'quartic'"},
      {"modifiers:\n  - !LearningRateModifier {start_epoch: 0, lr_class: CyclicLR, lr_kwargs: {gamma: 0.1}, init_lr: 0.1}\n",
       "LearningRateModifier.lr_class: unknown lr_class 'CyclicLR'"},
      {"modifiers:\n  - !LearningRateModifier {start_epoch: 0, lr_class: StepLR, lr_kwargs: {step_size: 2}, init_lr: 0.1}\n",
       "StepLR needs 'gamma'"},
      {"modifiers:\n  - !SetLearningRateModifier {learning_rate: eval(1 +)}\n", "SetLearningRateModifier.learning_rate: eval(1 +)"},
      {"modifiers:\n  - !SetLearningRateModifier {learning_rate: 2.0}\n", "learning_rate: 2 is out of range"},
      {"modifiers:\n  - !GMPruningModifier {params: __ALL__}\n", "the field 'start_epoch' is required"},
      {"modifiers:\n  - !EpochRangeModifier {start_epoch: 0, end_epoch: 1, end_epochs: 2}\n", "did you mean 'end_epoch'"},
      {"modifiers:\n  - !MFACPruningModifier {start_epoch: 0}\n", "!MFACPruningModifier (second-order"},
      {"modifiers:\n  - !QuantizationModifier {start_epoch: 0, end_epoch: 5}\n", "QAT cannot be turned off"},
      {"modifiers:\n  - !TrainableParamsModifier {params: __ALL_PRUNABLE__, trainable: false}\n", "__ALL_PRUNABLE__ is not supported"},
      {"modifiers:\n  - !ConstantPruningModifier {params: conv1.weight}\n", "write names and 're:' patterns as a list"},
      {"modifiers:\n" + gm + " end_epoch: 5, final_sparsity: 0.8, mask_type: '3:2'}\n", "not an N:M pattern"},
  };
  for (const auto& c : cases) {
    std::string e = recipe_error(c.text);
    EXPECT_NE(e.find(c.expected), std::string::npos) << c.text << "\n-> " << e;
    EXPECT_NE(e.find("r.yaml"), std::string::npos) << e;
  }
}

}  // namespace
}  // namespace sparq
