// A study in Optuna's own RDB schema (schema_version 12, the tables Optuna's RDBStorage creates),
// so `optuna.load_study(storage="sqlite:///runs/NAME/study.db")` and optuna-dashboard read what
// sparq writes, and Python workers and sparq workers share one study. SQLite by default,
// PostgreSQL for workers on many machines. Enums are their names, params Optuna's internal
// representation with the distribution JSON, datetimes naive UTC. See docs/search.md.
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sparq/tune/search.h"

namespace sparq::tune {

class Database;

enum class TrialState { Running, Complete, Pruned, Fail, Waiting };
const char* to_string(TrialState s);

struct TrialRecord {
  int64_t id = 0, number = 0;
  TrialState state = TrialState::Running;
  std::map<std::string, std::pair<double, Distribution>> params;  ///< name -> (internal value, distribution)
  std::vector<double> values;                                     ///< per objective (COMPLETE trials)
  std::map<int64_t, double> intermediate;                         ///< step -> value
  nlohmann::json user_attrs = nlohmann::json::object();
  nlohmann::json system_attrs = nlohmann::json::object();
  std::string datetime_start, datetime_complete;
  bool finished() const { return state == TrialState::Complete || state == TrialState::Pruned || state == TrialState::Fail; }
};

class Storage {
 public:
  /// sqlite:///PATH or a path (SQLite), postgresql://... (libpq). Creates Optuna's tables when
  /// they are missing; refuses a database of another schema version.
  explicit Storage(const std::string& url);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  /// The study's id, created with `maximize` (one direction per objective) when new; an existing
  /// study must have the same directions (load_if_exists). Throws ConfigError otherwise.
  int64_t study(const std::string& name, const std::vector<bool>& maximize);
  std::vector<bool> directions(int64_t study);

  /// A new RUNNING trial with its heartbeat: (trial id, number within the study).
  std::pair<int64_t, int64_t> create_trial(int64_t study);
  void set_param(int64_t trial, const std::string& name, double internal, const Distribution& d);
  void set_user_attr(int64_t trial, const std::string& key, const nlohmann::json& value);
  void set_system_attr(int64_t trial, const std::string& key, const nlohmann::json& value);
  void report(int64_t trial, int64_t step, double value);
  void heartbeat(int64_t trial);
  /// Ends a trial (COMPLETE with its values, PRUNED, FAIL); a trial already finished (failed as
  /// stale by another worker) stays as it is: returns false then.
  bool finish(int64_t trial, TrialState state, const std::vector<double>& values = {});
  std::vector<TrialRecord> trials(int64_t study);
  /// RUNNING trials whose heartbeat is older than `grace_seconds` become FAIL (Optuna's
  /// fail_stale_trials); returns their numbers.
  std::vector<int64_t> fail_stale(int64_t study, double grace_seconds);

 private:
  void create_schema();
  std::unique_ptr<Database> db_;
  std::string url_;
};

/// "YYYY-MM-DD HH:MM:SS.ffffff", naive UTC (Optuna >= 5 writes UTC; heartbeats are compared in UTC).
std::string utc_now();

}  // namespace sparq::tune
