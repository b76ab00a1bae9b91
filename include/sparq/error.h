// Errors thrown by sparq. Each says what was wrong, where (file:line:column, file and byte
// offset, or node name) and what was expected; the CLI prints the message on one line and exits 2.
#pragma once

#include <stdexcept>
#include <string>

namespace sparq {

/// Base of every error caused by bad input (config, model, data, command line).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A data file that is missing, malformed, truncated or inconsistent.
class DataError : public Error {
 public:
  using Error::Error;
};

/// A configuration or job file that does not validate.
class ConfigError : public Error {
 public:
  using Error::Error;
};

/// An optional library this build lacks, needed at `where`: "WHERE: this build of sparq has no
/// FEATURE (PACKAGE was not found)" (the bad-input suite knows the phrase).
class MissingFeatureError : public ConfigError {
 public:
  MissingFeatureError(const std::string& where, const std::string& feature, const std::string& package)
      : ConfigError(where + ": this build of sparq has no " + feature + " (" + package + " was not found)") {}
};

/// A model description that cannot be built (unknown op, shape mismatch, bad edge).
class ModelError : public Error {
 public:
  using Error::Error;
};

/// A size that overflows or needs more memory than the machine has (checked before allocating).
class ResourceError : public Error {
 public:
  using Error::Error;
};

}  // namespace sparq
