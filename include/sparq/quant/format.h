// Quantization formats as plain data (no LibTorch): the fixed-point modes and format, the specs a
// Plan gives a target (a std::variant over the quantizer kinds), and the QuantFormat every
// quantizer describes itself as, which printers, precision.json and exporters read.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

namespace sparq::quant {

enum class RoundMode { TRN, TRN_ZERO, RND, RND_ZERO, RND_INF, RND_MIN_INF, RND_CONV };
enum class OverflowMode { SAT, SAT_SYM, WRAP, WRAP_SM };
enum class Granularity { PerTensor, PerChannel, PerWeight };

/// "TRN", "RND", ... (also with the hardware prefix "AP_"; case-insensitive). Throws sparq::Error.
RoundMode parse_round_mode(const std::string& name);
OverflowMode parse_overflow_mode(const std::string& name);
/// "per_tensor", "per_channel", "per_weight"; throws sparq::Error.
Granularity parse_granularity(const std::string& name);
const char* to_string(RoundMode mode);
const char* to_string(OverflowMode mode);
const char* to_string(Granularity g);

/// 2^e, exactly: the exponent bits set directly where 2^e is a normal number (std::ldexp is a libm
/// call that took 30% of a small HGQ quantizer's time, computing its per-width constants).
template <typename T>
inline T pow2(int e) {
  if constexpr (std::is_same_v<T, float>) {
    if (e >= -126 && e <= 127) {
      const uint32_t bits = static_cast<uint32_t>(e + 127) << 23;
      float v;
      std::memcpy(&v, &bits, sizeof v);
      return v;
    }
  } else if constexpr (std::is_same_v<T, double>) {
    if (e >= -1022 && e <= 1023) {
      const uint64_t bits = static_cast<uint64_t>(e + 1023) << 52;
      double v;
      std::memcpy(&v, &bits, sizeof v);
      return v;
    }
  }
  return std::ldexp(T(1), e);
}

/// The integer codes a format (k, i, f) holds: n in [lo, nmax], value n * 2^-f. `nmin` is the
/// two's-complement minimum (-k * 2^(i+f)); `lo` the saturation bound (SAT_SYM drops nmin, except
/// for 1-bit signed types, which keep it as the hardware does); `modulus` 2^W for wrap-around.
template <typename T>
struct CodeBounds {
  T nmax, nmin, lo, modulus;
};
template <typename T>
inline CodeBounds<T> bounds(T k, T i, T f, OverflowMode overflow) {
  const T span = i + f;  // magnitude bits
  CodeBounds<T> b;
  const T top = pow2<T>(static_cast<int>(span));
  b.nmax = top - 1;
  b.nmin = -k * top;
  b.lo = (overflow == OverflowMode::SAT_SYM && k > 0 && span > 0) ? -b.nmax : b.nmin;
  b.modulus = pow2<T>(static_cast<int>(k + span));
  return b;
}

/// One format, for validation, type names and the calculator.
struct FixedFormat {
  int k = 1, i = 0, f = 7;
  RoundMode round = RoundMode::RND;
  OverflowMode overflow = OverflowMode::SAT;

  int width() const { return k + i + f; }
  /// Throws sparq::Error unless k is 0 or 1, W >= 1, and the modes fit (no unsigned WRAP_SM).
  void validate() const;
  /// "ap_fixed<8,2,AP_RND,AP_SAT>" or "ap_ufixed<...>".
  std::string type_name() const;
  double step() const { return std::ldexp(1.0, -f); }
  double min_value() const;  ///< smallest representable value (SAT_SYM: symmetric)
  double max_value() const { return std::ldexp(1.0, i) - step(); }
};

/// A fixed-point quantizer: (k, i, f) with its modes, per tensor, channel or weight.
struct FixedSpec {
  int k = 1, i = 0, f = 7;
  RoundMode round = RoundMode::RND;
  OverflowMode overflow = OverflowMode::SAT;
  Granularity granularity = Granularity::PerTensor;
  bool dynamic = false;  ///< data lanes: re-split i/f from the batch maximum while training

  FixedFormat format() const { return {k, i, f, round, overflow}; }
  bool operator==(const FixedSpec& o) const {
    return k == o.k && i == o.i && f == o.f && round == o.round && overflow == o.overflow &&
           granularity == o.granularity && dynamic == o.dynamic;
  }
};

/// HGQ: a fixed-point quantizer whose i and f are trained (k, i, f are the initial widths).
struct HgqSpec : FixedSpec {
  double gamma = 0;  ///< coefficient of the L1 term gamma * (sum f + sum i)
  bool operator==(const HgqSpec& o) const { return FixedSpec::operator==(o) && gamma == o.gamma; }
};

/// How an integer quantizer finds its scale and zero point and rounds (the quantizer classes of
/// SparseML and NNI, spec sparseml §2.12.5 and nni-config §3.3-3.4).
enum class IntegerMethod {
  FakeQuant,  ///< torch FakeQuantize (SparseML's QAT): EMA min/max observer while training, round then clamp
  Qat,        ///< NNI QATQuantizer: EMA (decay 0.99) in training, bypass until started, qat_clamp_round
  Ptq,        ///< NNI PtqQuantizer: running min/max while calibrating (bypass), then clamp_round
  Lsq,        ///< NNI LsqQuantizer: a trained scale (zero point 0), lsq_clamp_round
  LsqPlus,    ///< NNI LsqPlusQuantizer: trained scale and zero point
  Dorefa,     ///< NNI DoReFaQuantizer: tanh-normalised weights, [0, 1] outputs, per-batch inputs
  Bnn,        ///< NNI BNNQuantizer: sign(x)
};
const char* to_string(IntegerMethod m);

/// An integer quantizer: value (q - zp) * scale with q an integer in [qmin, qmax].
struct IntegerSpec {
  int bits = 8;
  bool is_signed = true;      ///< [-2^(b-1), 2^(b-1) - 1]; unsigned [0, 2^b - 1]
  bool narrow = false;        ///< signed without the most negative code (NNI's int<b>: +-(2^(b-1) - 1))
  bool symmetric = false;     ///< zero point 0 (signed) / the middle code (unsigned)
  bool reduce_range = false;  ///< one bit less of range (torch's reduce_range)
  /// -1: one scale per tensor; 0: per output channel of a weight; 1: per input channel of a
  /// weight, or per channel of a data lane ([B, C, ...]).
  int channel_dim = -1;
  double averaging_constant = 0.01;  ///< the observer's EMA step after the first batch
  IntegerMethod method = IntegerMethod::FakeQuant;
  bool output_lane = false;   ///< an output target (DoReFa and BNN treat them differently)
  int64_t qmin() const;
  int64_t qmax() const;
  /// Throws sparq::Error unless 1 <= bits <= 32 (2 for signed) and 0 < averaging_constant <= 1.
  void validate() const;
  bool operator==(const IntegerSpec& o) const {
    return bits == o.bits && is_signed == o.is_signed && narrow == o.narrow && symmetric == o.symmetric &&
           reduce_range == o.reduce_range && channel_dim == o.channel_dim &&
           averaging_constant == o.averaging_constant && method == o.method && output_lane == o.output_lane;
  }
};

/// What a Plan says one target's quantizer is.
using QuantizerSpec = std::variant<FixedSpec, HgqSpec, IntegerSpec>;

/// "fixed", "hgq" or "integer": the registered quantizer kind of a spec.
const char* kind_of(const QuantizerSpec& spec);
/// The fixed-point part of a fixed or HGQ spec, nullptr for an integer spec.
const FixedSpec* fixed_part(const QuantizerSpec& spec);
FixedSpec* fixed_part(QuantizerSpec& spec);
/// "fixed ap_fixed<8,1,AP_RND,AP_SAT>", "hgq ...", "int8 symmetric per_tensor".
std::string to_string(const QuantizerSpec& spec);

/// How a quantizer quantizes, as it describes itself: the one record printers and exporters read.
struct QuantFormat {
  std::string kind;  ///< "fixed" | "hgq"
  bool enabled = true;
  Granularity granularity = Granularity::PerTensor;
  RoundMode round = RoundMode::RND;
  OverflowMode overflow = OverflowMode::SAT;
  std::vector<int64_t> shape;  ///< shape of the per-element widths ([] per tensor)
  std::vector<int> k, i, f;    ///< integer widths per element (one entry per tensor); W = k + i + f
  /// Integer quantizers: per tensor or per channel (dim 0), value = (q - zero_point) * scale,
  /// q in [qmin, qmax]; k/i/f then hold the sign bit and the total width in i.
  std::vector<double> scale;
  std::vector<int64_t> zero_point;
  int64_t qmin = 0, qmax = 0;
  /// The format of element `e` (zero width when k + i + f <= 0).
  FixedFormat element(size_t e = 0) const { return {k.at(e), i.at(e), f.at(e), round, overflow}; }
  /// Largest width over the elements.
  int max_bits() const;
  bool is_signed() const;  ///< any element keeps a sign bit
};

}  // namespace sparq::quant
