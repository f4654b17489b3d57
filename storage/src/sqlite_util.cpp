// SQLite handle owners and the check helper: every SQLite return code in the
// library passes through check(), which maps it to a StorageErrorCode.
#include "sqlite_util.h"

#include <cstring>

namespace cetus::storage::detail {

StorageErrorCode code_for_sqlite(int rc) noexcept {
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return StorageErrorCode::Busy;
    case SQLITE_CORRUPT: return StorageErrorCode::Corrupt;
    case SQLITE_NOTADB: return StorageErrorCode::NotADatabase;
    case SQLITE_FULL: return StorageErrorCode::Full;
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_READONLY: return StorageErrorCode::Io;
    default: return StorageErrorCode::Sqlite;
    }
}

void fail(StorageErrorCode code, std::string_view label, std::string_view message) {
    std::string text(label);
    text += ": ";
    text += message;
    throw StorageError(code, text);
}

void check(sqlite3* db, int rc, std::string_view label, std::string_view what,
           CallSite where) {
    if (rc == SQLITE_OK || rc == SQLITE_ROW || rc == SQLITE_DONE) return;
    const char* file = where.file;
    if (const char* slash = std::strrchr(file, '/')) file = slash + 1;
    std::string message(what);
    message += ": ";
    // sqlite3_errmsg describes the connection's latest error, which is this one
    // as long as nothing ran in between; fall back to the code's generic text.
    const int latest = db ? sqlite3_extended_errcode(db) : rc;
    message += (db && latest == rc) ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    message += " (";
    message += sqlite3_errstr(rc & 0xff);
    message += ", code " + std::to_string(rc) + " at " + file + ":" + std::to_string(where.line) + ")";
    fail(code_for_sqlite(rc), label, message);
}

Db::Db(const std::string& path, int flags, std::string label) : m_label(std::move(label)) {
    const int rc = sqlite3_open_v2(path.c_str(), &m_db, flags, nullptr);
    if (rc != SQLITE_OK) {
        std::string message = m_db ? sqlite3_errmsg(m_db) : sqlite3_errstr(rc);
        sqlite3_close_v2(m_db);
        m_db = nullptr;
        fail(code_for_sqlite(rc), m_label, "cannot open: " + message);
    }
    sqlite3_extended_result_codes(m_db, 1);
}

Db::~Db() {
    sqlite3_close_v2(m_db);
}

void Db::exec(const char* sql, CallSite where) {
    char* error = nullptr;
    const int rc = sqlite3_exec(m_db, sql, nullptr, nullptr, &error);
    if (rc != SQLITE_OK) {
        std::string message = error ? error : sqlite3_errstr(rc);
        sqlite3_free(error);
        std::string_view head(sql);
        check(nullptr, rc, m_label, message + " in \"" + std::string(head.substr(0, 60)) + "\"", where);
    }
}

int64_t Db::pragma_int(const char* sql, CallSite where) {
    Stmt stmt(*this, sql, false, where);
    return stmt.step(where) ? stmt.col_int(0) : 0;
}

Stmt::Stmt(Db& db, std::string_view sql, bool persistent, CallSite where) : m_db(&db) {
    const unsigned flags = persistent ? SQLITE_PREPARE_PERSISTENT : 0;
    const int rc = sqlite3_prepare_v3(db.get(), sql.data(), static_cast<int>(sql.size()), flags,
                                      &m_stmt, nullptr);
    check(db.get(), rc, db.label(), "prepare", where);
}

Stmt::~Stmt() {
    sqlite3_finalize(m_stmt);
}

Stmt& Stmt::bind(int index, int64_t value) {
    check(m_db->get(), sqlite3_bind_int64(m_stmt, index, value), m_db->label(), "bind");
    return *this;
}

Stmt& Stmt::bind(int index, double value) {
    check(m_db->get(), sqlite3_bind_double(m_stmt, index, value), m_db->label(), "bind");
    return *this;
}

Stmt& Stmt::bind(int index, std::string_view text) {
    // SQLITE_TRANSIENT: SQLite copies, so temporaries are safe to pass.
    const int rc = sqlite3_bind_text64(m_stmt, index, text.data(), text.size(), SQLITE_TRANSIENT,
                                       SQLITE_UTF8);
    check(m_db->get(), rc, m_db->label(), "bind");
    return *this;
}

Stmt& Stmt::bind(int index, std::nullptr_t) {
    check(m_db->get(), sqlite3_bind_null(m_stmt, index), m_db->label(), "bind");
    return *this;
}

Stmt& Stmt::bind(int index, std::optional<int64_t> value) {
    return value ? bind(index, *value) : bind(index, nullptr);
}

Stmt& Stmt::bind_blob(int index, std::span<const uint8_t> bytes) {
    const int rc = sqlite3_bind_blob64(m_stmt, index, bytes.data(), bytes.size(), SQLITE_TRANSIENT);
    check(m_db->get(), rc, m_db->label(), "bind");
    return *this;
}

bool Stmt::step(CallSite where) {
    const int rc = sqlite3_step(m_stmt);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    check(m_db->get(), rc, m_db->label(), "step", where);
    return false;
}

void Stmt::run(CallSite where) {
    while (step(where)) {
    }
}

void Stmt::reset() noexcept {
    sqlite3_reset(m_stmt);
    sqlite3_clear_bindings(m_stmt);
}

int64_t Stmt::col_int(int i) const {
    return sqlite3_column_int64(m_stmt, i);
}

double Stmt::col_double(int i) const {
    return sqlite3_column_double(m_stmt, i);
}

std::string Stmt::col_text(int i) const {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(m_stmt, i));
    const int n = sqlite3_column_bytes(m_stmt, i);
    return text ? std::string(text, static_cast<size_t>(n)) : std::string();
}

bool Stmt::col_null(int i) const {
    return sqlite3_column_type(m_stmt, i) == SQLITE_NULL;
}

std::optional<int64_t> Stmt::col_opt_int(int i) const {
    if (col_null(i)) return std::nullopt;
    return col_int(i);
}

std::vector<uint8_t> Stmt::col_blob(int i) const {
    const auto* data = static_cast<const uint8_t*>(sqlite3_column_blob(m_stmt, i));
    const int n = sqlite3_column_bytes(m_stmt, i);
    return data ? std::vector<uint8_t>(data, data + n) : std::vector<uint8_t>();
}

Query StmtCache::get(const char* sql, CallSite where) {
    auto& slot = m_stmts[sql];
    if (!slot) slot = std::make_unique<Stmt>(*m_db, sql, true, where);
    return Query(*slot);
}

}  // namespace cetus::storage::detail
