// Optuna's RDB schema (see storage.h; spec export-search-anchors §4 and its appendix).
#include "sparq/tune/storage.h"

#include <fmt/format.h>

#include <chrono>
#include <ctime>

#include "sparq/error.h"
#include "tune/database.h"

namespace sparq::tune {

namespace {

constexpr int kSchemaVersion = 12;
constexpr int64_t kSchemaLock = 0x5350525101;  // PostgreSQL advisory locks: creating the tables,
constexpr int64_t kTrialLock = 0x5350525102;   // and numbering trials

// The tables as Optuna's models.py declares them; {id} is the autoincrement key, {time} a
// datetime, {enum:NAME} an enum column (VARCHAR in SQLite, a native type in PostgreSQL as
// SQLAlchemy creates it).
const char* kTables[] = {
    "CREATE TABLE IF NOT EXISTS studies (study_id {id}, study_name VARCHAR(512) NOT NULL, PRIMARY KEY (study_id))",
    "CREATE UNIQUE INDEX IF NOT EXISTS ix_studies_study_name ON studies (study_name)",
    "CREATE TABLE IF NOT EXISTS version_info (version_info_id INTEGER NOT NULL, schema_version INTEGER, library_version "
    "VARCHAR(256), PRIMARY KEY (version_info_id), CHECK (version_info_id=1))",
    "CREATE TABLE IF NOT EXISTS study_directions (study_direction_id {id}, direction {enum:studydirection} NOT NULL, study_id "
    "INTEGER NOT NULL, objective INTEGER NOT NULL, PRIMARY KEY (study_direction_id), UNIQUE (study_id, objective), FOREIGN "
    "KEY(study_id) REFERENCES studies (study_id))",
    "CREATE TABLE IF NOT EXISTS study_user_attributes (study_user_attribute_id {id}, study_id INTEGER, \"key\" VARCHAR(512), "
    "value_json TEXT, PRIMARY KEY (study_user_attribute_id), UNIQUE (study_id, \"key\"), FOREIGN KEY(study_id) REFERENCES "
    "studies (study_id))",
    "CREATE TABLE IF NOT EXISTS study_system_attributes (study_system_attribute_id {id}, study_id INTEGER, \"key\" "
    "VARCHAR(512), value_json TEXT, PRIMARY KEY (study_system_attribute_id), UNIQUE (study_id, \"key\"), FOREIGN "
    "KEY(study_id) REFERENCES studies (study_id))",
    "CREATE TABLE IF NOT EXISTS trials (trial_id {id}, number INTEGER, study_id INTEGER, state {enum:trialstate} NOT NULL, "
    "datetime_start {time}, datetime_complete {time}, PRIMARY KEY (trial_id), FOREIGN KEY(study_id) REFERENCES studies "
    "(study_id))",
    "CREATE TABLE IF NOT EXISTS trial_user_attributes (trial_user_attribute_id {id}, trial_id INTEGER, \"key\" VARCHAR(512), "
    "value_json TEXT, PRIMARY KEY (trial_user_attribute_id), UNIQUE (trial_id, \"key\"), FOREIGN KEY(trial_id) REFERENCES "
    "trials (trial_id))",
    "CREATE TABLE IF NOT EXISTS trial_system_attributes (trial_system_attribute_id {id}, trial_id INTEGER, \"key\" "
    "VARCHAR(512), value_json TEXT, PRIMARY KEY (trial_system_attribute_id), UNIQUE (trial_id, \"key\"), FOREIGN "
    "KEY(trial_id) REFERENCES trials (trial_id))",
    "CREATE TABLE IF NOT EXISTS trial_params (param_id {id}, trial_id INTEGER, param_name VARCHAR(512), param_value FLOAT, "
    "distribution_json TEXT, PRIMARY KEY (param_id), UNIQUE (trial_id, param_name), FOREIGN KEY(trial_id) REFERENCES "
    "trials (trial_id))",
    "CREATE TABLE IF NOT EXISTS trial_values (trial_value_id {id}, trial_id INTEGER NOT NULL, objective INTEGER NOT NULL, "
    "value FLOAT, value_type {enum:trialvaluetype} NOT NULL, PRIMARY KEY (trial_value_id), UNIQUE (trial_id, objective), "
    "FOREIGN KEY(trial_id) REFERENCES trials (trial_id))",
    "CREATE TABLE IF NOT EXISTS trial_intermediate_values (trial_intermediate_value_id {id}, trial_id INTEGER NOT NULL, step "
    "INTEGER NOT NULL, intermediate_value FLOAT, intermediate_value_type {enum:trialintermediatevaluetype} NOT NULL, PRIMARY "
    "KEY (trial_intermediate_value_id), UNIQUE (trial_id, step), FOREIGN KEY(trial_id) REFERENCES trials (trial_id))",
    "CREATE TABLE IF NOT EXISTS trial_heartbeats (trial_heartbeat_id {id}, trial_id INTEGER NOT NULL, heartbeat {time} NOT "
    "NULL, PRIMARY KEY (trial_heartbeat_id), UNIQUE (trial_id), FOREIGN KEY(trial_id) REFERENCES trials (trial_id))",
    "CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY "
    "KEY (version_num))",
};
struct EnumType {
  const char* name;
  const char* values;
  int sqlite_width;  ///< SQLite: VARCHAR of the longest name, as SQLAlchemy writes it
};
const EnumType kEnums[] = {
    {"studydirection", "'NOT_SET', 'MINIMIZE', 'MAXIMIZE'", 8},
    {"trialstate", "'RUNNING', 'COMPLETE', 'PRUNED', 'FAIL', 'WAITING'", 8},
    {"trialvaluetype", "'FINITE', 'INF_POS', 'INF_NEG'", 7},
    {"trialintermediatevaluetype", "'FINITE', 'INF_POS', 'INF_NEG', 'NAN'", 7},
};

std::string ddl(std::string sql, bool postgres) {
  auto replace = [&](const std::string& from, const std::string& to) {
    for (size_t at; (at = sql.find(from)) != std::string::npos;) sql.replace(at, from.size(), to);
  };
  replace("{id}", postgres ? "SERIAL NOT NULL" : "INTEGER NOT NULL");
  replace("{time}", postgres ? "TIMESTAMP WITHOUT TIME ZONE" : "DATETIME");
  for (const auto& e : kEnums)
    replace(fmt::format("{{enum:{}}}", e.name), postgres ? std::string(e.name) : fmt::format("VARCHAR({})", e.sqlite_width));
  return sql;
}

/// Optuna's value_type for a value: FINITE, INF_POS, INF_NEG (NAN for intermediate values).
std::pair<Database::Value, std::string> value_of(double v) {
  if (std::isnan(v)) return {std::monostate{}, "NAN"};
  if (std::isinf(v)) return {std::monostate{}, v > 0 ? "INF_POS" : "INF_NEG"};
  return {v, "FINITE"};
}
double value_from(const Database::Value& v, const std::string& type) {
  if (type == "INF_POS") return INFINITY;
  if (type == "INF_NEG") return -INFINITY;
  if (type == "NAN") return NAN;
  return as_double(v);
}

TrialState state_of(const std::string& s) {
  if (s == "COMPLETE") return TrialState::Complete;
  if (s == "PRUNED") return TrialState::Pruned;
  if (s == "FAIL") return TrialState::Fail;
  if (s == "WAITING") return TrialState::Waiting;
  return TrialState::Running;
}

double seconds_of(const std::string& t) {  // "YYYY-MM-DD HH:MM:SS[.ffffff]" UTC -> seconds since 1970
  std::tm tm{};
  double fraction = 0;
  if (std::sscanf(t.c_str(), "%d-%d-%d %d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
    return 0;
  auto dot = t.find('.');
  if (dot != std::string::npos) fraction = std::stod("0" + t.substr(dot));
  tm.tm_year -= 1900, tm.tm_mon -= 1;
  return static_cast<double>(timegm(&tm)) + fraction;
}

}  // namespace

const char* to_string(TrialState s) {
  switch (s) {
    case TrialState::Running: return "RUNNING";
    case TrialState::Complete: return "COMPLETE";
    case TrialState::Pruned: return "PRUNED";
    case TrialState::Fail: return "FAIL";
    case TrialState::Waiting: return "WAITING";
  }
  return "RUNNING";
}

std::string utc_now() {
  auto now = std::chrono::system_clock::now();
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(us / 1000000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, us % 1000000);
}

Storage::Storage(const std::string& url) : db_(open_database(url)), url_(url) { create_schema(); }
Storage::~Storage() = default;

void Storage::create_schema() {
  Transaction t(*db_, kSchemaLock);
  if (db_->postgres())
    for (const auto& e : kEnums)
      if (db_->query("SELECT 1 FROM pg_type WHERE typname = ?", {std::string(e.name)}).empty())
        db_->exec(fmt::format("CREATE TYPE {} AS ENUM ({})", e.name, e.values));
  for (const char* sql : kTables) db_->exec(ddl(sql, db_->postgres()));
  auto version = db_->query("SELECT schema_version FROM version_info WHERE version_info_id = 1");
  if (version.empty()) {
    // alembic_version stays empty: Optuna stamps its own head revision on first open (spec §4).
    db_->exec("INSERT INTO version_info (version_info_id, schema_version, library_version) VALUES (1, ?, ?)",
              {int64_t(kSchemaVersion), std::string("3.1.0")});
  } else if (as_int(version[0][0]) != kSchemaVersion) {
    throw ConfigError(fmt::format("{}: an Optuna database of schema version {}; sparq writes version {} (Optuna 3.x-4.x)", url_,
                                  as_int(version[0][0]), kSchemaVersion));
  }
  t.commit();
}

int64_t Storage::study(const std::string& name, const std::vector<bool>& maximize) {
  Transaction t(*db_, kSchemaLock);
  auto rows = db_->query("SELECT study_id FROM studies WHERE study_name = ?", {name});
  int64_t id;
  if (rows.empty()) {
    auto r = db_->query(std::string("INSERT INTO studies (study_name) VALUES (?)") + (db_->postgres() ? " RETURNING study_id" : ""),
                        {name});
    id = db_->last_id();
    for (size_t o = 0; o < maximize.size(); ++o)
      db_->exec("INSERT INTO study_directions (direction, study_id, objective) VALUES (?, ?, ?)",
                {std::string(maximize[o] ? "MAXIMIZE" : "MINIMIZE"), id, static_cast<int64_t>(o)});
  } else {
    id = as_int(rows[0][0]);
    std::vector<bool> existing;
    for (const auto& d : db_->query("SELECT direction FROM study_directions WHERE study_id = ? ORDER BY objective", {id}))
      existing.push_back(as_text(d[0]) == "MAXIMIZE");
    if (existing != maximize) {
      auto list = [](const std::vector<bool>& v) {
        std::string s;
        for (bool m : v) s += (s.empty() ? "" : ", ") + std::string(m ? "maximize" : "minimize");
        return "[" + s + "]";
      };
      throw ConfigError(fmt::format("{}: study '{}' exists with directions {}, the search asks for {}; use another "
                                    "experiment_name",
                                    url_, name, list(existing), list(maximize)));
    }
  }
  t.commit();
  return id;
}

std::vector<bool> Storage::directions(int64_t study) {
  std::vector<bool> out;
  for (const auto& d : db_->query("SELECT direction FROM study_directions WHERE study_id = ? ORDER BY objective", {study}))
    out.push_back(as_text(d[0]) == "MAXIMIZE");
  return out;
}

std::pair<int64_t, int64_t> Storage::create_trial(int64_t study) {
  Transaction t(*db_, kTrialLock);
  const std::string now = utc_now();
  db_->query(std::string("INSERT INTO trials (number, study_id, state, datetime_start) VALUES (NULL, ?, 'RUNNING', ?)") +
                 (db_->postgres() ? " RETURNING trial_id" : ""),
             {study, now});
  const int64_t id = db_->last_id();
  // Optuna's numbering: the count of the study's earlier trials.
  const int64_t number = as_int(db_->query("SELECT COUNT(*) FROM trials WHERE study_id = ? AND trial_id < ?", {study, id})[0][0]);
  db_->exec("UPDATE trials SET number = ? WHERE trial_id = ?", {number, id});
  db_->exec("INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES (?, ?)", {id, now});
  t.commit();
  return {id, number};
}

void Storage::set_param(int64_t trial, const std::string& name, double internal, const Distribution& d) {
  db_->exec("INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json) VALUES (?, ?, ?, ?)",
            {trial, name, internal, d.to_json().dump()});
}

void Storage::set_user_attr(int64_t trial, const std::string& key, const nlohmann::json& value) {
  Transaction t(*db_, kTrialLock);
  db_->exec("DELETE FROM trial_user_attributes WHERE trial_id = ? AND \"key\" = ?", {trial, key});
  db_->exec("INSERT INTO trial_user_attributes (trial_id, \"key\", value_json) VALUES (?, ?, ?)", {trial, key, value.dump()});
  t.commit();
}
void Storage::set_system_attr(int64_t trial, const std::string& key, const nlohmann::json& value) {
  Transaction t(*db_, kTrialLock);
  db_->exec("DELETE FROM trial_system_attributes WHERE trial_id = ? AND \"key\" = ?", {trial, key});
  db_->exec("INSERT INTO trial_system_attributes (trial_id, \"key\", value_json) VALUES (?, ?, ?)", {trial, key, value.dump()});
  t.commit();
}

void Storage::report(int64_t trial, int64_t step, double value) {
  auto [v, type] = value_of(value);
  Transaction t(*db_, kTrialLock);
  db_->exec("DELETE FROM trial_intermediate_values WHERE trial_id = ? AND step = ?", {trial, step});
  db_->exec("INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type) VALUES (?, ?, ?, ?)",
            {trial, step, v, type});
  t.commit();
}

void Storage::heartbeat(int64_t trial) {
  db_->exec("UPDATE trial_heartbeats SET heartbeat = ? WHERE trial_id = ?", {utc_now(), trial});
}

bool Storage::finish(int64_t trial, TrialState state, const std::vector<double>& values) {
  Transaction t(*db_, kTrialLock);
  auto rows = db_->query("SELECT state FROM trials WHERE trial_id = ?", {trial});
  if (rows.empty() || as_text(rows[0][0]) != "RUNNING") return false;  // failed as stale meanwhile
  for (size_t o = 0; o < values.size(); ++o) {
    auto [v, type] = value_of(values[o]);
    db_->exec("INSERT INTO trial_values (trial_id, objective, value, value_type) VALUES (?, ?, ?, ?)",
              {trial, static_cast<int64_t>(o), v, type});
  }
  db_->exec("UPDATE trials SET state = ?, datetime_complete = ? WHERE trial_id = ?", {std::string(to_string(state)), utc_now(), trial});
  t.commit();
  return true;
}

std::vector<TrialRecord> Storage::trials(int64_t study) {
  std::vector<TrialRecord> out;
  std::map<int64_t, size_t> index;
  for (const auto& r : db_->query("SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials WHERE study_id = ? "
                                  "ORDER BY trial_id",
                                  {study})) {
    TrialRecord t;
    t.id = as_int(r[0]), t.number = as_int(r[1]), t.state = state_of(as_text(r[2]));
    t.datetime_start = as_text(r[3]), t.datetime_complete = as_text(r[4]);
    index[t.id] = out.size();
    out.push_back(std::move(t));
  }
  auto of = [&](const Database::Value& id) -> TrialRecord* {
    auto it = index.find(as_int(id));
    return it == index.end() ? nullptr : &out[it->second];
  };
  const std::string in_study = " WHERE trial_id IN (SELECT trial_id FROM trials WHERE study_id = ?)";
  for (const auto& r : db_->query("SELECT trial_id, param_name, param_value, distribution_json FROM trial_params" + in_study, {study}))
    if (auto* t = of(r[0]))
      t->params.emplace(as_text(r[1]), std::make_pair(as_double(r[2]), Distribution::from_json(nlohmann::json::parse(as_text(r[3])))));
  for (const auto& r : db_->query("SELECT trial_id, objective, value, value_type FROM trial_values" + in_study + " ORDER BY objective",
                                  {study}))
    if (auto* t = of(r[0])) t->values.push_back(value_from(r[2], as_text(r[3])));
  for (const auto& r : db_->query("SELECT trial_id, step, intermediate_value, intermediate_value_type FROM "
                                  "trial_intermediate_values" + in_study,
                                  {study}))
    if (auto* t = of(r[0])) t->intermediate[as_int(r[1])] = value_from(r[2], as_text(r[3]));
  for (const auto& r : db_->query("SELECT trial_id, \"key\", value_json FROM trial_user_attributes" + in_study, {study}))
    if (auto* t = of(r[0])) t->user_attrs[as_text(r[1])] = nlohmann::json::parse(as_text(r[2]), nullptr, false);
  for (const auto& r : db_->query("SELECT trial_id, \"key\", value_json FROM trial_system_attributes" + in_study, {study}))
    if (auto* t = of(r[0])) t->system_attrs[as_text(r[1])] = nlohmann::json::parse(as_text(r[2]), nullptr, false);
  return out;
}

std::vector<int64_t> Storage::fail_stale(int64_t study, double grace_seconds) {
  std::vector<int64_t> failed;
  const double now = seconds_of(utc_now());
  auto rows = db_->query("SELECT t.trial_id, t.number, h.heartbeat FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
                         "WHERE t.study_id = ? AND t.state = 'RUNNING'",
                         {study});
  for (const auto& r : rows) {
    if (now - seconds_of(as_text(r[2])) <= grace_seconds) continue;
    if (finish(as_int(r[0]), TrialState::Fail)) failed.push_back(as_int(r[1]));
  }
  return failed;
}

}  // namespace sparq::tune
