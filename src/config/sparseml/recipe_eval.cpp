#include "recipe_eval.h"

#include <fmt/format.h>

#include <cctype>
#include <cmath>
#include <vector>

namespace sparq::config::sparseml {

namespace {

[[noreturn]] void bad(const std::string& why) { throw std::invalid_argument(why); }

double py_round_half_even(double x) { return std::nearbyint(x); }  // default FE_TONEAREST: ties to even

/// A recursive-descent parser over the expression text, evaluating as it goes.
class Parser {
 public:
  Parser(const std::string& text, const std::map<std::string, Number>& vars) : s_(text), vars_(vars) {}

  Number parse() {
    Number v = sum();
    skip();
    if (p_ != s_.size()) bad(fmt::format("unexpected '{}' at column {}", s_.substr(p_), p_ + 1));
    return v;
  }

 private:
  void skip() {
    while (p_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[p_]))) ++p_;
  }
  bool eat(const char* op) {
    skip();
    size_t n = std::char_traits<char>::length(op);
    if (s_.compare(p_, n, op) != 0) return false;
    // '*' must not eat the first half of '**', '/' not of '//'
    if (n == 1 && (op[0] == '*' || op[0] == '/') && p_ + 1 < s_.size() && s_[p_ + 1] == op[0]) return false;
    p_ += n;
    return true;
  }

  Number sum() {
    Number v = product();
    for (;;) {
      if (eat("+")) v = arith(v, product(), '+');
      else if (eat("-")) v = arith(v, product(), '-');
      else return v;
    }
  }
  Number product() {
    Number v = unary();
    for (;;) {
      if (eat("//")) v = arith(v, unary(), 'f');
      else if (eat("*")) v = arith(v, unary(), '*');
      else if (eat("/")) v = arith(v, unary(), '/');
      else if (eat("%")) v = arith(v, unary(), '%');
      else return v;
    }
  }
  Number unary() {
    if (eat("-")) {
      Number v = unary();
      v.value = -v.value;
      return v;
    }
    if (eat("+")) return unary();
    return power();
  }
  Number power() {
    Number base = atom();
    if (eat("**")) return arith(base, unary(), '^');  // right-associative, binds tighter than a left minus
    return base;
  }

  Number atom() {
    skip();
    if (p_ >= s_.size()) bad("the expression ends early");
    char c = s_[p_];
    if (c == '(') {
      ++p_;
      Number v = sum();
      if (!eat(")")) bad("a '(' is not closed");
      return v;
    }
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '.') return number();
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t b = p_;
      while (p_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[p_])) || s_[p_] == '_')) ++p_;
      std::string name = s_.substr(b, p_ - b);
      skip();
      if (p_ < s_.size() && s_[p_] == '(') return call(name);
      if (p_ < s_.size() && s_[p_] == '.') bad(fmt::format("attribute access ('{}.') is not allowed", name));
      auto it = vars_.find(name);
      if (it == vars_.end()) throw UnknownVariable(name);
      return it->second;
    }
    bad(fmt::format("'{}' is not allowed in a recipe expression (numbers, variables, + - * / // % **, abs, "
                    "float, int, min, max, round)",
                    std::string(1, c)));
  }

  Number number() {
    size_t b = p_;
    bool is_int = true;
    while (p_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[p_]))) ++p_;
    if (p_ < s_.size() && s_[p_] == '.') {
      is_int = false;
      ++p_;
      while (p_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[p_]))) ++p_;
    }
    if (p_ < s_.size() && (s_[p_] == 'e' || s_[p_] == 'E')) {
      size_t e = p_++;
      if (p_ < s_.size() && (s_[p_] == '+' || s_[p_] == '-')) ++p_;
      if (p_ >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[p_]))) bad(fmt::format("bad number '{}'", s_.substr(b, p_ - b)));
      while (p_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[p_]))) ++p_;
      is_int = false;
      (void)e;
    }
    std::string text = s_.substr(b, p_ - b);
    if (text == ".") bad("bad number '.'");
    return {std::stod(text), is_int};
  }

  Number call(const std::string& name) {
    static const std::vector<std::string> kCalls = {"abs", "float", "int", "min", "max", "round"};
    bool known = false;
    for (const auto& k : kCalls) known = known || k == name;
    if (!known) bad(fmt::format("call of '{}' is not allowed (only abs, float, int, min, max, round)", name));
    eat("(");
    std::vector<Number> args;
    std::map<std::string, Number> kwargs;
    if (!eat(")")) {
      for (;;) {
        skip();
        size_t save = p_;
        // keyword argument: name '=' expr (not '==')
        if (p_ < s_.size() && (std::isalpha(static_cast<unsigned char>(s_[p_])) || s_[p_] == '_')) {
          size_t q = p_;
          while (q < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[q])) || s_[q] == '_')) ++q;
          size_t r = q;
          while (r < s_.size() && std::isspace(static_cast<unsigned char>(s_[r]))) ++r;
          if (r < s_.size() && s_[r] == '=' && (r + 1 >= s_.size() || s_[r + 1] != '=')) {
            std::string key = s_.substr(p_, q - p_);
            p_ = r + 1;
            kwargs[key] = sum();
          } else {
            p_ = save;
            args.push_back(sum());
          }
        } else {
          args.push_back(sum());
        }
        if (eat(")")) break;
        if (!eat(",")) bad(fmt::format("expected ',' or ')' in the call of {}", name));
      }
    }
    auto arg = [&](size_t i, const char* key) -> const Number* {
      if (i < args.size()) return &args[i];
      auto it = kwargs.find(key);
      return it == kwargs.end() ? nullptr : &it->second;
    };
    if (name == "min" || name == "max") {
      if (!kwargs.empty()) bad(fmt::format("{}() takes no keyword arguments here", name));
      if (args.empty()) bad(fmt::format("{}() needs at least one argument", name));
      Number best = args[0];
      for (const auto& a : args)
        if (name == "min" ? a.value < best.value : a.value > best.value) best = a;
      return best;
    }
    if (name == "round") {
      const Number* x = arg(0, "number");
      const Number* nd = arg(1, "ndigits");
      if (!x || args.size() > 2) bad("round() takes a number and optionally ndigits");
      if (!nd) return {py_round_half_even(x->value), true};
      double scale = std::pow(10.0, nd->value);
      return {py_round_half_even(x->value * scale) / scale, x->is_int};
    }
    const Number* x = arg(0, "x");
    if (!x || args.size() != 1) bad(fmt::format("{}() takes exactly one argument", name));
    if (name == "abs") return {std::fabs(x->value), x->is_int};
    if (name == "float") return {x->value, false};
    return {std::trunc(x->value), true};  // int()
  }

  static Number arith(Number a, Number b, char op) {
    bool ints = a.is_int && b.is_int;
    switch (op) {
      case '+': return {a.value + b.value, ints};
      case '-': return {a.value - b.value, ints};
      case '*': return {a.value * b.value, ints};
      case '/':
        if (b.value == 0) bad("division by zero");
        return {a.value / b.value, false};
      case 'f':
        if (b.value == 0) bad("division by zero");
        return {std::floor(a.value / b.value), ints};
      case '%': {
        if (b.value == 0) bad("modulo by zero");
        double r = std::fmod(a.value, b.value);
        if (r != 0 && ((r < 0) != (b.value < 0))) r += b.value;  // Python: the sign of the divisor
        return {r, ints};
      }
      default: {  // '^'
        if (a.value == 0 && b.value < 0) bad("0 cannot be raised to a negative power");
        double v = std::pow(a.value, b.value);
        if (std::isnan(v)) bad("a negative number raised to a fractional power is not a real number");
        return {v, ints && b.value >= 0};
      }
    }
  }

  const std::string& s_;
  const std::map<std::string, Number>& vars_;
  size_t p_ = 0;
};

}  // namespace

Number evaluate(const std::string& expr, const std::map<std::string, Number>& variables) {
  return Parser(expr, variables).parse();
}

}  // namespace sparq::config::sparseml
