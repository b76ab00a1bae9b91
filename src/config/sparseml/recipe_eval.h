// The restricted arithmetic of SparseML's `eval(...)` recipe expressions (spec sparseml §1.4):
// numbers, variable names, + - * / // % ** (Python semantics), unary minus and plus, and the
// calls abs, float, int, min, max, round (half to even). Nothing else: no attributes, lists,
// comparisons or other calls.
#pragma once

#include <map>
#include <stdexcept>
#include <string>

namespace sparq::config::sparseml {

/// A number as Python keeps it: an int or a float (printing and int() differ).
struct Number {
  double value = 0;
  bool is_int = false;
};

/// A name the expression uses that is not (yet) a numeric variable.
struct UnknownVariable : std::runtime_error {
  explicit UnknownVariable(const std::string& name) : std::runtime_error("unknown variable '" + name + "'"), name(name) {}
  std::string name;
};

/// Evaluates `expr` over `variables`. Throws UnknownVariable for a name not in the table and
/// std::invalid_argument (with the reason) for anything outside the grammar.
Number evaluate(const std::string& expr, const std::map<std::string, Number>& variables);

}  // namespace sparq::config::sparseml
