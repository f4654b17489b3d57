// Opening a store (file checks, pragmas, migration, recovery), closing it,
// transactions and integrity checks. The operations live in conversations.cpp,
// messages.cpp, search.cpp, exchange.cpp and import.cpp.
#include "store_impl.h"

#include "file_util.h"
#include "schema.h"
#include "text_util.h"

#include <nlohmann/json.hpp>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <chrono>

namespace fs = std::filesystem;

namespace cetus::storage {
namespace {

std::shared_ptr<spdlog::logger> logger() {
    if (auto named = spdlog::get("storage")) return named;
    static auto quiet = std::make_shared<spdlog::logger>("storage", std::make_shared<spdlog::sinks::null_sink_mt>());
    return quiet;
}

int64_t system_now_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

void configure(detail::Db& db, const OpenOptions& options) {
    // A database file is untrusted input: no schema writes through SQL, no
    // extensions, oversized cells rejected before use.
    sqlite3_db_config(db.get(), SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
    sqlite3_db_config(db.get(), SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, nullptr);
    sqlite3_db_config(db.get(), SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, 0, nullptr);
    detail::check(db.get(), sqlite3_busy_timeout(db.get(), options.busy_timeout_ms), db.label(), "busy_timeout");
    db.exec("PRAGMA foreign_keys = ON");
    db.exec("PRAGMA cell_size_check = ON");
}

}  // namespace

namespace detail {

void begin_write(Store::Impl& impl) {
    if (impl.tx_depth == 0) impl.sql("BEGIN IMMEDIATE")->run();
    else impl.sql("SAVEPOINT nested")->run();
    ++impl.tx_depth;
}

void commit_write(Store::Impl& impl) {
    if (impl.tx_depth == 1) impl.sql("COMMIT")->run();
    else impl.sql("RELEASE nested")->run();
    --impl.tx_depth;
}

void rollback_write(Store::Impl& impl) noexcept {
    --impl.tx_depth;
    const char* sql = impl.tx_depth == 0 ? "ROLLBACK" : "ROLLBACK TO nested; RELEASE nested";
    sqlite3_exec(impl.db->get(), sql, nullptr, nullptr, nullptr);
}

std::vector<std::string> integrity_problems(Db& db, bool quick) {
    std::vector<std::string> problems;
    {
        Stmt stmt(db, quick ? "PRAGMA quick_check" : "PRAGMA integrity_check");
        while (stmt.step()) {
            std::string row = stmt.col_text(0);
            if (row != "ok") problems.push_back(std::move(row));
        }
    }
    if (!quick && problems.empty()) {
        const int rc = sqlite3_exec(db.get(), "INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')",
                                    nullptr, nullptr, nullptr);
        if (rc != SQLITE_OK) problems.push_back("the full-text index is out of step with the messages");
    }
    return problems;
}

void require_utf8(const Store::Impl& impl, std::string_view text, std::string_view what) {
    if (!valid_utf8(text)) impl.fail(StorageErrorCode::InvalidArgument, std::string(what) + " is not valid UTF-8");
}

std::string normalise_json_object(const Store::Impl& impl, std::string_view text, std::string_view what) {
    nlohmann::json value;
    bool too_deep = false;
    value = nlohmann::json::parse(
        text, [&](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
            if (depth > 32) too_deep = true;
            return !too_deep;
        },
        false);
    if (too_deep || value.is_discarded() || !value.is_object()) {
        impl.fail(StorageErrorCode::InvalidArgument, std::string(what) + " is not a JSON object");
    }
    return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace detail

Store::Store(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}
Store::Store(Store&&) noexcept = default;
Store& Store::operator=(Store&& other) noexcept {
    if (this != &other) {
        Store dying(std::move(*this));
        m_impl = std::move(other.m_impl);
    }
    return *this;
}

Store::~Store() {
    if (!m_impl) return;
    try {
        if (m_impl->tx_depth == 0) {
            auto q = m_impl->sql("UPDATE messages SET state = 'interrupted', writer = NULL WHERE state = 'streaming' AND writer = ?1");
            q->bind(1, m_impl->writer).run();
        }
    } catch (const std::exception& e) {
        logger()->warn("{}: could not mark unfinished answers interrupted on close: {}", m_impl->label(), e.what());
    }
    detail::unregister_live_writer(m_impl->nonce);
    m_impl->stmts.reset();
    m_impl->db.reset();
}

Store Store::open(const fs::path& file, const OpenOptions& options) {
    auto impl = std::make_unique<Impl>();
    impl->path = file;
    const std::string label = file.string();
    std::error_code ec;
    if (!fs::exists(fs::symlink_status(file, ec))) {
        if (!options.create) throw StorageError(StorageErrorCode::Io, label + ": no such file");
        if (!file.parent_path().empty() && !fs::is_directory(file.parent_path(), ec)) {
            throw StorageError(StorageErrorCode::Io, label + ": cannot create: folder " + file.parent_path().string() + " does not exist");
        }
        detail::create_private_file(file);
        logger()->info("{}: creating a new conversation database", label);
    }
    detail::inspect_header(file);

    detail::FileSchema schema;
    try {
        impl->db = std::make_unique<detail::Db>(file.string(), SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW, label);
        configure(*impl->db, options);
        schema = detail::read_file_schema(*impl->db);
        detail::check_schema(*impl->db, schema, detail::migrations());
        // Writes start here, once the file is known to be ours (or new and empty).
        impl->db->exec("PRAGMA journal_mode = WAL");
        impl->db->exec(options.durable ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
        if (options.verify) {
            const auto problems = detail::integrity_problems(*impl->db, true);
            if (!problems.empty()) detail::fail(StorageErrorCode::Corrupt, label, "damaged: " + problems.front() + "; left untouched");
        }
    } catch (const StorageError& e) {
        const std::string what = e.what();
        const bool explained = what.find("left untouched") != std::string::npos;
        if (explained || (e.code() != StorageErrorCode::Corrupt && e.code() != StorageErrorCode::NotADatabase)) throw;
        // SQLite's own words, behind a sentence the user can act on.
        const std::string detail = what.substr(std::min(what.size(), label.size() + 2));
        throw StorageError(e.code(), label + (e.code() == StorageErrorCode::Corrupt ? ": damaged" : ": not a database") +
                                         " (" + detail + "); left untouched");
    }
    const std::string backup = file.string() + ".schema-v" + std::to_string(schema.user_version) + ".bak";
    const int64_t version = detail::migrate(*impl->db, detail::migrations(), backup);
    if (version != schema.user_version) {
        logger()->info("{}: schema version {} -> {}", label, schema.user_version, version);
    }

    impl->stmts = std::make_unique<detail::StmtCache>(*impl->db);
    impl->clock_ms = options.clock_ms ? options.clock_ms : system_now_ms;
    impl->nonce = detail::random_u64();
    impl->writer = detail::writer_token(impl->nonce);
    detail::register_live_writer(impl->nonce);
    Store store(std::move(impl));
    store.m_impl->n_recovered = store.recover_interrupted();
    return store;
}

Store Store::open_memory(const OpenOptions& options) {
    auto impl = std::make_unique<Impl>();
    impl->db = std::make_unique<detail::Db>(":memory:", SQLITE_OPEN_READWRITE | SQLITE_OPEN_MEMORY, ":memory:");
    configure(*impl->db, options);
    detail::migrate(*impl->db, detail::migrations());
    impl->stmts = std::make_unique<detail::StmtCache>(*impl->db);
    impl->clock_ms = options.clock_ms ? options.clock_ms : system_now_ms;
    impl->nonce = detail::random_u64();
    impl->writer = detail::writer_token(impl->nonce);
    detail::register_live_writer(impl->nonce);
    return Store(std::move(impl));
}

fs::path Store::move_aside(const fs::path& file) {
    const fs::path target = detail::move_aside(file);
    logger()->warn("{}: moved aside to {}", file.string(), target.string());
    return target;
}

const fs::path& Store::path() const noexcept { return m_impl->path; }
int Store::n_recovered() const noexcept { return m_impl->n_recovered; }

int Store::recover_interrupted() {
    std::vector<std::pair<int64_t, std::string>> orphans;
    {
        auto q = m_impl->sql("SELECT id, writer FROM messages WHERE state = 'streaming'");
        while (q->step()) {
            std::string writer = q->col_null(1) ? std::string() : q->col_text(1);
            if (writer.empty() || !detail::writer_alive(writer)) orphans.emplace_back(q->col_int(0), writer);
        }
    }
    if (orphans.empty()) return 0;
    detail::WriteTx tx(*m_impl);
    int n = 0;
    for (const auto& [id, writer] : orphans) {
        auto q = m_impl->sql("UPDATE messages SET state = 'interrupted', writer = NULL "
                             "WHERE id = ?1 AND state = 'streaming' AND writer IS ?2");
        q->bind(1, id);
        if (writer.empty()) q->bind(2, nullptr);
        else q->bind(2, writer);
        q->run();
        n += static_cast<int>(m_impl->changes());
    }
    tx.commit();
    if (n > 0) logger()->warn("{}: {} unfinished answer(s) marked interrupted", m_impl->label(), n);
    return n;
}

std::vector<std::string> Store::check_integrity(bool quick) {
    return detail::integrity_problems(*m_impl->db, quick);
}

Store::Transaction::Transaction(Store& store) : m_store(&store) {
    detail::begin_write(*store.m_impl);
}

Store::Transaction::~Transaction() {
    if (!m_done) detail::rollback_write(*m_store->m_impl);
}

void Store::Transaction::commit() {
    detail::commit_write(*m_store->m_impl);
    m_done = true;
}

}  // namespace cetus::storage
