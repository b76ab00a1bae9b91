// SQLite and PostgreSQL behind tune::Database (see database.h).
#include "tune/database.h"

#include <fmt/format.h>
#include <sqlite3.h>

#include <chrono>
#include <thread>

#ifdef SPARQ_WITH_POSTGRES
#include <libpq-fe.h>
#endif

#include "sparq/error.h"

namespace sparq::tune {

int64_t as_int(const Database::Value& v) {
  if (auto i = std::get_if<int64_t>(&v)) return *i;
  if (auto d = std::get_if<double>(&v)) return static_cast<int64_t>(*d);
  if (auto s = std::get_if<std::string>(&v)) return std::stoll(*s);
  return 0;
}
double as_double(const Database::Value& v) {
  if (auto d = std::get_if<double>(&v)) return *d;
  if (auto i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
  if (auto s = std::get_if<std::string>(&v)) return std::stod(*s);
  return 0;
}
std::string as_text(const Database::Value& v) {
  if (auto s = std::get_if<std::string>(&v)) return *s;
  if (auto i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (auto d = std::get_if<double>(&v)) return fmt::format("{}", *d);
  return "";
}
bool is_null(const Database::Value& v) { return std::holds_alternative<std::monostate>(v); }

namespace {

class Sqlite final : public Database {
 public:
  explicit Sqlite(const std::string& path) : path_(path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) != SQLITE_OK) {
      std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
      sqlite3_close(db_);
      throw ConfigError(fmt::format("{}: cannot open the study database: {}", path, msg));
    }
    sqlite3_busy_timeout(db_, 60000);  // other workers write between our statements
  }
  ~Sqlite() override { sqlite3_close(db_); }
  bool postgres() const override { return false; }

  std::vector<Row> query(const std::string& sql, const std::vector<Value>& params) override {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) fail(sql);
    struct Finalize {
      sqlite3_stmt* st;
      ~Finalize() { sqlite3_finalize(st); }
    } finalize{st};
    for (size_t p = 0; p < params.size(); ++p) {
      const int k = static_cast<int>(p) + 1;
      const auto& v = params[p];
      if (auto i = std::get_if<int64_t>(&v)) sqlite3_bind_int64(st, k, *i);
      else if (auto d = std::get_if<double>(&v)) sqlite3_bind_double(st, k, *d);
      else if (auto s = std::get_if<std::string>(&v)) sqlite3_bind_text(st, k, s->c_str(), static_cast<int>(s->size()), SQLITE_TRANSIENT);
      else sqlite3_bind_null(st, k);
    }
    std::vector<Row> rows;
    for (;;) {
      int rc = sqlite3_step(st);
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) fail(sql);
      Row row;
      for (int c = 0; c < sqlite3_column_count(st); ++c) {
        switch (sqlite3_column_type(st, c)) {
          case SQLITE_INTEGER: row.emplace_back(static_cast<int64_t>(sqlite3_column_int64(st, c))); break;
          case SQLITE_FLOAT: row.emplace_back(sqlite3_column_double(st, c)); break;
          case SQLITE_NULL: row.emplace_back(std::monostate{}); break;
          default: row.emplace_back(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, c))));
        }
      }
      rows.push_back(std::move(row));
    }
    return rows;
  }
  void begin(int64_t) override { exec("BEGIN IMMEDIATE"); }
  void commit() override { exec("COMMIT"); }
  void rollback() override { exec("ROLLBACK"); }
  int64_t last_id() override { return sqlite3_last_insert_rowid(db_); }

 private:
  [[noreturn]] void fail(const std::string& sql) {
    throw Error(fmt::format("{}: SQLite: {} (in: {})", path_, sqlite3_errmsg(db_), sql.substr(0, 80)));
  }
  std::string path_;
  sqlite3* db_ = nullptr;
};

#ifdef SPARQ_WITH_POSTGRES
class Postgres final : public Database {
 public:
  explicit Postgres(const std::string& url) : url_(url) {
    conn_ = PQconnectdb(url.c_str());
    if (PQstatus(conn_) != CONNECTION_OK) {
      std::string msg = PQerrorMessage(conn_);
      PQfinish(conn_);
      while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
      for (auto& c : msg)
        if (c == '\n') c = ' ';
      throw ConfigError(fmt::format("--storage {}: cannot connect: {}", redacted(url), msg));
    }
    PQsetNoticeProcessor(conn_, [](void*, const char*) {}, nullptr);  // CREATE ... IF NOT EXISTS notices
  }
  ~Postgres() override { PQfinish(conn_); }
  bool postgres() const override { return true; }

  std::vector<Row> query(const std::string& sql_in, const std::vector<Value>& params) override {
    std::string sql;  // ? -> $1, $2, ...
    int n = 0;
    for (char c : sql_in) sql += c == '?' ? fmt::format("${}", ++n) : std::string(1, c);
    std::vector<std::string> text(params.size());
    std::vector<const char*> values(params.size(), nullptr);
    for (size_t p = 0; p < params.size(); ++p)
      if (!is_null(params[p])) {
        text[p] = std::holds_alternative<double>(params[p]) ? fmt::format("{:.17g}", std::get<double>(params[p])) : as_text(params[p]);
        values[p] = text[p].c_str();
      }
    PGresult* r = PQexecParams(conn_, sql.c_str(), static_cast<int>(params.size()), nullptr, values.data(), nullptr, nullptr, 0);
    struct Clear {
      PGresult* r;
      ~Clear() { PQclear(r); }
    } clear{r};
    auto status = PQresultStatus(r);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
      std::string msg = PQresultErrorMessage(r);
      while (!msg.empty() && msg.back() == '\n') msg.pop_back();
      throw Error(fmt::format("PostgreSQL {}: {} (in: {})", redacted(url_), msg.substr(0, msg.find('\n')), sql.substr(0, 80)));
    }
    std::vector<Row> rows;
    for (int i = 0; i < PQntuples(r); ++i) {
      Row row;
      for (int c = 0; c < PQnfields(r); ++c) {
        if (PQgetisnull(r, i, c)) {
          row.emplace_back(std::monostate{});
          continue;
        }
        std::string v = PQgetvalue(r, i, c);
        const Oid type = PQftype(r, c);
        if (type == 20 || type == 21 || type == 23) row.emplace_back(static_cast<int64_t>(std::stoll(v)));  // int8/2/4
        else if (type == 700 || type == 701) row.emplace_back(std::stod(v));  // float4/8
        else row.emplace_back(v);
      }
      rows.push_back(std::move(row));
    }
    if (!rows.empty() && sql_in.find("RETURNING") != std::string::npos) last_ = as_int(rows[0][0]);
    return rows;
  }
  void begin(int64_t lock) override {
    exec("BEGIN");
    exec("SELECT pg_advisory_xact_lock(?)", {lock});
  }
  void commit() override { exec("COMMIT"); }
  void rollback() override { exec("ROLLBACK"); }
  int64_t last_id() override { return last_; }

 private:
  static std::string redacted(const std::string& url) {  // no password in messages
    auto at = url.find('@'), colon = url.find(':', url.find("//") + 2);
    if (at == std::string::npos || colon == std::string::npos || colon > at) return url;
    return url.substr(0, colon) + ":***" + url.substr(at);
  }
  std::string url_;
  PGconn* conn_ = nullptr;
  int64_t last_ = 0;
};
#endif

}  // namespace

std::unique_ptr<Database> open_database(const std::string& url) {
  if (url.rfind("postgresql://", 0) == 0 || url.rfind("postgres://", 0) == 0) {
#ifdef SPARQ_WITH_POSTGRES
    return std::make_unique<Postgres>(url);
#else
    throw MissingFeatureError("--storage " + url, "PostgreSQL", "libpq-dev");
#endif
  }
  std::string path = url;
  if (path.rfind("sqlite:///", 0) == 0) path = path.substr(10);
  else if (path.find("://") != std::string::npos)
    throw ConfigError(fmt::format("--storage {}: expected sqlite:///PATH, a file path or postgresql://...", url));
  return std::make_unique<Sqlite>(path);
}

}  // namespace sparq::tune
