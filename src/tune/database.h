// The two SQL databases a study can live in, behind one small interface: SQLite (a file, one
// machine) and PostgreSQL through libpq (many machines). Statements are written with `?`
// placeholders; the PostgreSQL side numbers them. Private to src/tune.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

namespace sparq::tune {

class Database {
 public:
  using Value = std::variant<std::monostate, int64_t, double, std::string>;  ///< monostate: NULL
  using Row = std::vector<Value>;

  virtual ~Database() = default;
  virtual bool postgres() const = 0;
  /// Runs one statement; the rows it returns (none for most writes). Throws sparq::Error.
  virtual std::vector<Row> query(const std::string& sql, const std::vector<Value>& params = {}) = 0;
  void exec(const std::string& sql, const std::vector<Value>& params = {}) { query(sql, params); }
  /// A write transaction that excludes other writers until commit (SQLite BEGIN IMMEDIATE;
  /// PostgreSQL BEGIN plus an advisory lock on `lock`).
  virtual void begin(int64_t lock) = 0;
  virtual void commit() = 0;
  virtual void rollback() = 0;
  /// The id of the row an INSERT just made: SQLite's rowid; PostgreSQL: the INSERT must end with
  /// `RETURNING <id>`, whose row is returned by query().
  virtual int64_t last_id() = 0;
};

/// `sqlite:///path/study.db`, a plain path (SQLite), or `postgresql://user@host:port/db`.
std::unique_ptr<Database> open_database(const std::string& url);

int64_t as_int(const Database::Value& v);
double as_double(const Database::Value& v);
std::string as_text(const Database::Value& v);
bool is_null(const Database::Value& v);

/// Commits at the end of a scope unless commit() ran; rolls back on an exception.
class Transaction {
 public:
  Transaction(Database& db, int64_t lock) : db_(db) { db_.begin(lock); }
  ~Transaction() {
    if (!done_) try {
        db_.rollback();
      } catch (...) {
      }
  }
  void commit() { db_.commit(), done_ = true; }

 private:
  Database& db_;
  bool done_ = false;
};

}  // namespace sparq::tune
