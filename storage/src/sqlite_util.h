// RAII owners for sqlite3 and sqlite3_stmt, the one check helper that turns SQLite
// return codes into StorageError (recording the call site), and a cache of
// prepared statements. Internal to the storage library (tests include it too).
#pragma once

#include "cetus/storage/error.h"

#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace cetus::storage::detail {

// Where a SQLite call was made, for error messages. Not std::source_location:
// clang 14 cannot compile libstdc++ 12's <source_location>; these builtins work
// in GCC and clang alike and, as default arguments, name the caller's line.
struct CallSite {
    const char* file;
    unsigned line;
    static constexpr CallSite current(const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) noexcept {
        return {file, line};
    }
};

StorageErrorCode code_for_sqlite(int rc) noexcept;

// Throws when rc is not SQLITE_OK/ROW/DONE. `label` names the database (its path
// or ":memory:"), `what` the operation; the message also gets SQLite's own text
// and the call site, e.g. "history.db: list conversations: database disk image is
// malformed (SQLITE_CORRUPT at store.cpp:210)".
void check(sqlite3* db, int rc, std::string_view label, std::string_view what,
           CallSite where = CallSite::current());

[[noreturn]] void fail(StorageErrorCode code, std::string_view label, std::string_view message);

class Db {
public:
    // Opens without creating; see Store::open for the checks done before this.
    Db(const std::string& uri_or_path, int flags, std::string label);
    ~Db();
    Db(const Db&) = delete;
    Db& operator=(const Db&) = delete;

    sqlite3* get() const noexcept { return m_db; }
    const std::string& label() const noexcept { return m_label; }
    // Runs SQL text without parameters (schema, pragmas, transaction control).
    void exec(const char* sql, CallSite where = CallSite::current());
    int64_t pragma_int(const char* sql, CallSite where = CallSite::current());

private:
    sqlite3* m_db = nullptr;
    std::string m_label;
};

class Stmt {
public:
    Stmt(Db& db, std::string_view sql, bool persistent = false,
         CallSite where = CallSite::current());
    ~Stmt();
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;

    Stmt& bind(int index, int64_t value);
    Stmt& bind(int index, int value) { return bind(index, static_cast<int64_t>(value)); }
    Stmt& bind(int index, bool value) { return bind(index, static_cast<int64_t>(value ? 1 : 0)); }
    Stmt& bind(int index, double value);
    Stmt& bind(int index, std::string_view text);
    Stmt& bind(int index, const char* text) { return bind(index, std::string_view(text)); }
    Stmt& bind(int index, const std::string& text) { return bind(index, std::string_view(text)); }
    Stmt& bind(int index, std::nullptr_t);
    Stmt& bind(int index, std::optional<int64_t> value);
    Stmt& bind_blob(int index, std::span<const uint8_t> bytes);
    template <typename... Args> Stmt& bind_all(const Args&... args) {
        int i = 0;
        (bind(++i, args), ...);
        return *this;
    }

    // True when a row is ready; false when done. Throws on failure.
    bool step(CallSite where = CallSite::current());
    // Steps to the end; for statements that return no rows.
    void run(CallSite where = CallSite::current());
    void reset() noexcept;  // reset and clear bindings; ends the statement's read

    int64_t col_int(int i) const;
    double col_double(int i) const;
    std::string col_text(int i) const;
    bool col_null(int i) const;
    std::optional<int64_t> col_opt_int(int i) const;
    std::vector<uint8_t> col_blob(int i) const;

private:
    Db* m_db;
    sqlite3_stmt* m_stmt = nullptr;
};

// A cached statement checked out for one use; resets on scope exit so that no
// finished SELECT keeps a read transaction (and the WAL) pinned.
class Query {
public:
    explicit Query(Stmt& stmt) : m_stmt(&stmt) {}
    ~Query() { m_stmt->reset(); }
    Query(const Query&) = delete;
    Query& operator=(const Query&) = delete;
    Stmt* operator->() const noexcept { return m_stmt; }
    Stmt& operator*() const noexcept { return *m_stmt; }

private:
    Stmt* m_stmt;
};

// Prepared statements keyed by their SQL text's address: callers pass string
// literals, each prepared once per connection.
class StmtCache {
public:
    explicit StmtCache(Db& db) : m_db(&db) {}
    Query get(const char* sql, CallSite where = CallSite::current());

private:
    Db* m_db;
    std::unordered_map<const char*, std::unique_ptr<Stmt>> m_stmts;
};

}  // namespace cetus::storage::detail
