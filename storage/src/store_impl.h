// The state behind a Store, shared by store.cpp, search.cpp and exchange.cpp,
// and the write guard every mutating call runs inside.
#pragma once

#include "cetus/storage/store.h"
#include "sqlite_util.h"

#include <functional>
#include <memory>
#include <string>

namespace cetus::storage {

struct Store::Impl {
    std::filesystem::path path;
    std::unique_ptr<detail::Db> db;
    std::unique_ptr<detail::StmtCache> stmts;
    std::function<int64_t()> clock_ms;
    uint64_t nonce = 0;
    std::string writer;  // this Store's token in messages.writer while streaming
    int n_recovered = 0;
    int tx_depth = 0;

    const std::string& label() const { return db->label(); }
    detail::Query sql(const char* text, detail::CallSite where = detail::CallSite::current()) {
        return stmts->get(text, where);
    }
    int64_t now() const { return clock_ms(); }
    int64_t changes() const { return sqlite3_changes64(db->get()); }
    int64_t last_id() const { return sqlite3_last_insert_rowid(db->get()); }
    [[noreturn]] void fail(StorageErrorCode code, const std::string& message) const {
        detail::fail(code, label(), message);
    }
};

namespace detail {

// BEGIN IMMEDIATE at the outermost level (the write lock up front, so a busy
// database waits in busy_timeout instead of failing mid-transaction), SAVEPOINT
// when nested.
void begin_write(Store::Impl& impl);
void commit_write(Store::Impl& impl);
void rollback_write(Store::Impl& impl) noexcept;

// Every mutating call runs inside one; rolls back unless committed.
class WriteTx {
public:
    explicit WriteTx(Store::Impl& impl) : m_impl(&impl) { begin_write(impl); }
    ~WriteTx() {
        if (!m_done) rollback_write(*m_impl);
    }
    WriteTx(const WriteTx&) = delete;
    WriteTx& operator=(const WriteTx&) = delete;
    void commit() {
        commit_write(*m_impl);
        m_done = true;
    }

private:
    Store::Impl* m_impl;
    bool m_done = false;
};

std::vector<std::string> integrity_problems(Db& db, bool quick);

// Reads a row of CETUS_MESSAGE_SELECT (columns in that order) into a Message.
Message read_message(const Store::Impl& impl, Stmt& row);
#define CETUS_MESSAGE_SELECT                                                                      \
    "SELECT m.id, m.conversation_id, m.parent_id, m.role, m.content, m.state, m.stats_json, "    \
    "m.created_ms, m.updated_ms, EXISTS(SELECT 1 FROM routing_traces t WHERE t.message_id = m.id) " \
    "FROM messages m "

// Validates text the store is asked to keep: UTF-8, and for JSON an object,
// returned in normalised form (keys sorted, no spaces). Throws InvalidArgument.
void require_utf8(const Store::Impl& impl, std::string_view text, std::string_view what);
std::string normalise_json_object(const Store::Impl& impl, std::string_view text, std::string_view what);

}  // namespace detail
}  // namespace cetus::storage
