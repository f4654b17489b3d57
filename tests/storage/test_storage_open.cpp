// Opening database files: owner-only creation, WAL, schema version and forward
// migration (from every older version, from a frozen version-1 fixture, and the
// runner's backup and atomicity), damaged and foreign files reported without a
// byte changed, moving them aside, and every StorageErrorCode provoked.
#include "cetus/storage/store.h"
#include "schema.h"
#include "sqlite_util.h"

#include <sys/stat.h>

#include <QtTest>

#include <filesystem>
#include <fstream>
#include <random>

using namespace cetus::storage;
namespace fs = std::filesystem;

namespace {

// Version 1 exactly as a version-1 build wrote it. Frozen: when the schema moves
// on, this fixture stays, and opening it must still migrate and keep its data.
constexpr const char* k_v1_fixture = R"sql(
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    system_prompt TEXT NOT NULL DEFAULT '',
    sampling_json TEXT NOT NULL DEFAULT '{}',
    pinned INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1)),
    archived INTEGER NOT NULL DEFAULT 0 CHECK (archived IN (0, 1)),
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    active_message_id INTEGER
);
CREATE INDEX conversations_by_activity ON conversations(archived, pinned, updated_ms, id);
CREATE INDEX conversations_by_activity_all ON conversations(pinned, updated_ms, id);

CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    parent_id INTEGER REFERENCES messages(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL CHECK (state IN ('streaming', 'complete', 'interrupted', 'error')),
    writer TEXT,
    stats_json TEXT NOT NULL DEFAULT '{}',
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
CREATE INDEX messages_by_parent ON messages(parent_id);
CREATE INDEX messages_streaming ON messages(id) WHERE state = 'streaming';

CREATE TABLE routing_traces (
    message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    n_tokens INTEGER NOT NULL,
    data BLOB NOT NULL
);

CREATE VIRTUAL TABLE messages_fts USING fts5(
    content, content = 'messages', content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2');
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;

PRAGMA application_id = 1128617045;

INSERT INTO conversations VALUES (1, '0b7c6f0e-3d5a-4c1e-9f2a-1a2b3c4d5e6f', 'Fixture chat', 'demo', 'sys',
    '{"temperature":0.7}', 1, 0, 1700000000000, 1700000005000, 3);
INSERT INTO messages VALUES (1, 1, NULL, 'user', 'Tell me about manatees', 'complete', NULL, '{}', 1700000001000, 1700000001000);
INSERT INTO messages VALUES (2, 1, 1, 'assistant', 'Manatees are slow', 'complete', NULL, '{"n_generated_tokens":4}', 1700000002000, 1700000003000);
INSERT INTO messages VALUES (3, 1, 1, 'assistant', 'Manatees graze', 'streaming', '999999999:1:1', '{}', 1700000004000, 1700000005000);
PRAGMA user_version = 1;
)sql";

QByteArray file_bytes(const std::string& path) {
    QFile f(QString::fromStdString(path));
    return f.open(QIODevice::ReadOnly) ? f.readAll() : QByteArray("<missing>");
}

void write_bytes(const std::string& path, const QByteArray& bytes) {
    QFile f(QString::fromStdString(path));
    QVERIFY(f.open(QIODevice::WriteOnly | QIODevice::Truncate));
    f.write(bytes);
}

unsigned mode_of(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? (st.st_mode & 0777) : 0;
}

void raw_exec(const std::string& path, const char* sql) {
    detail::Db db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, path);
    db.exec(sql);
}

void make_history(const std::string& path, int n_conversations = 30) {
    Store s = Store::open(path);
    for (int i = 0; i < n_conversations; ++i) {
        const int64_t c = s.create_conversation({"c" + std::to_string(i), "", "", "{}"});
        NewMessage m;
        m.conversation_id = c;
        m.content = std::string(300, char('a' + i % 26)) + " walrus";
        s.add_message(m);
    }
}

template <typename F> std::pair<StorageErrorCode, std::string> error_of(F&& f) {
    try {
        f();
    } catch (const StorageError& e) {
        return {e.code(), e.what()};
    }
    return {static_cast<StorageErrorCode>(-1), "no error"};
}

}  // namespace

class TestStorageOpen : public QObject {
    Q_OBJECT

    QTemporaryDir m_dir;
    std::string path(const char* name) const { return m_dir.filePath(name).toStdString(); }

private slots:
    void initTestCase() { QVERIFY(m_dir.isValid()); }

    void new_file_is_private_and_in_wal_mode() {
        const mode_t old = ::umask(022);
        const std::string file = path("private.db");
        {
            Store s = Store::open(file);
            s.create_conversation({"x", "", "", "{}"});
            QCOMPARE(mode_of(file), 0600u);
            QCOMPARE(mode_of(file + "-wal"), 0600u);
            QCOMPARE(mode_of(file + "-shm"), 0600u);
            QCOMPARE(s.n_recovered(), 0);
            QVERIFY(s.check_integrity().empty());
        }
        ::umask(old);
        detail::Db db(file, SQLITE_OPEN_READONLY, file);
        QCOMPARE(db.pragma_int("PRAGMA user_version"), int64_t(Store::k_schema_version));
        QCOMPARE(db.pragma_int("PRAGMA application_id"), detail::k_application_id);
        detail::Stmt mode(db, "PRAGMA journal_mode");
        QVERIFY(mode.step());
        QCOMPARE(mode.col_text(0), std::string("wal"));
    }

    void empty_file_is_a_new_database() {
        const std::string file = path("empty.db");
        write_bytes(file, {});
        Store s = Store::open(file);
        QCOMPARE(s.count_conversations(), int64_t(0));
        Store::open(file, OpenOptions{true, true, 5000, true, {}});  // verify: quick_check passes
    }

    void migrates_from_every_older_version() {
        const auto all = detail::migrations();
        for (int version = 0; version < Store::k_schema_version; ++version) {
            const std::string file = path(("from_v" + std::to_string(version) + ".db").c_str());
            {
                detail::Db db(file, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, file);
                QCOMPARE(detail::migrate(db, all.first(size_t(version))), int64_t(version));
            }
            { Store s = Store::open(file); }
            // Reopening runs the schema check at the new version: the result is
            // exactly what a fresh database at the current version looks like.
            Store s = Store::open(file);
            detail::Db db(file, SQLITE_OPEN_READONLY, file);
            QCOMPARE(db.pragma_int("PRAGMA user_version"), int64_t(Store::k_schema_version));
        }
    }

    void opens_the_frozen_version_1_fixture() {
        const std::string file = path("fixture_v1.db");
        raw_exec(file, k_v1_fixture);
        Store s = Store::open(file);
        QCOMPARE(s.n_recovered(), 1);  // message 3 was streaming with a dead writer
        const auto rows = s.list_conversations();
        QCOMPARE(rows.size(), size_t(1));
        QCOMPARE(rows[0].title, std::string("Fixture chat"));
        QVERIFY(rows[0].pinned);
        const ConversationTree tree = s.open_conversation(1);
        QCOMPARE(tree.messages.size(), size_t(3));
        QCOMPARE(tree.active_path, (std::vector<int64_t>{1, 3}));
        QCOMPARE(tree.messages[2].state, MessageState::Interrupted);
        QCOMPARE(s.search("manatees").size(), size_t(3));
        QCOMPARE(s.statistics(1).n_generated_tokens, int64_t(4));
        // Migrated to version 2 after a copy of the version-1 file: answers take token
        // probabilities now.
        QVERIFY(fs::exists(file + ".schema-v1.bak"));
        QVERIFY(!s.token_probabilities(3));
        TokenProbabilities tp;
        tp.top_n = 1;
        tp.logprobs = {-0.25f};
        tp.alternatives = {{"x", -0.25f}};
        s.set_token_probabilities(3, tp);
        QCOMPARE(s.token_probabilities(3)->logprobs, tp.logprobs);
    }

    void migration_runner_backs_up_and_is_atomic() {
        const std::string file = path("runner.db");
        make_history(file, 3);
        // The released migrations and a next one: a good one, and one that fails half-way.
        const auto released = detail::migrations();
        const int next = Store::k_schema_version + 1;
        std::vector<detail::Migration> good(released.begin(), released.end()), bad = good;
        good.push_back({next, "ALTER TABLE conversations ADD COLUMN colour TEXT NOT NULL DEFAULT 'blue';"});
        bad.push_back({next, "ALTER TABLE conversations ADD COLUMN colour TEXT; UPDATE nope SET x = 1;"});
        const std::string backup = file + ".schema-v" + std::to_string(Store::k_schema_version) + ".bak";
        {
            detail::Db db(file, SQLITE_OPEN_READWRITE, file);
            const auto [code, what] = error_of([&] { detail::migrate(db, bad, backup); });
            QCOMPARE(code, StorageErrorCode::Sqlite);
            QVERIFY2(what.find("migration to schema version " + std::to_string(next)) != std::string::npos, what.c_str());
            QCOMPARE(db.pragma_int("PRAGMA user_version"), int64_t(Store::k_schema_version));
            QCOMPARE(db.pragma_int("SELECT count(*) FROM pragma_table_info('conversations') WHERE name = 'colour'"), int64_t(0));
        }
        QVERIFY(fs::exists(backup));
        QCOMPARE(mode_of(backup), 0600u);
        fs::remove(backup);
        {
            detail::Db db(file, SQLITE_OPEN_READWRITE, file);
            QCOMPARE(detail::migrate(db, good, backup), int64_t(next));
            QCOMPARE(db.pragma_int("SELECT count(*) FROM conversations WHERE colour = 'blue'"), int64_t(3));
        }
        detail::Db copy(backup, SQLITE_OPEN_READONLY, backup);
        QCOMPARE(copy.pragma_int("PRAGMA user_version"), int64_t(Store::k_schema_version));
        QCOMPARE(copy.pragma_int("SELECT count(*) FROM conversations"), int64_t(3));
        // This build refuses the file of a version it cannot know.
        QCOMPARE(error_of([&] { Store::open(file); }).first, StorageErrorCode::NewerSchema);
    }

    void refused_files_are_left_untouched_data() {
        QTest::addColumn<QString>("damage");
        QTest::addColumn<int>("code");
        QTest::addColumn<QString>("reason");
        QTest::newRow("newer_schema") << "newer" << int(StorageErrorCode::NewerSchema) << "newer Cetus (schema version 7";
        QTest::newRow("truncated_to_half") << "half" << int(StorageErrorCode::Corrupt) << "truncated";
        QTest::newRow("truncated_mid_page") << "mid_page" << int(StorageErrorCode::Corrupt) << "truncated";
        QTest::newRow("truncated_in_header") << "50_bytes" << int(StorageErrorCode::Corrupt) << "truncated to 50 bytes";
        QTest::newRow("random_bytes") << "random" << int(StorageErrorCode::NotADatabase) << "not a database";
        QTest::newRow("text_file") << "text" << int(StorageErrorCode::NotADatabase) << "not a database";
        QTest::newRow("bad_page_size") << "page_size" << int(StorageErrorCode::Corrupt) << "page size";
        QTest::newRow("garbage_pages") << "garbage_pages" << int(StorageErrorCode::Corrupt) << "damaged";
        QTest::newRow("other_app_database") << "other_app" << int(StorageErrorCode::NotADatabase) << "did not create";
        QTest::newRow("other_application_id") << "other_id" << int(StorageErrorCode::NotADatabase) << "another application";
        QTest::newRow("extra_trigger") << "trigger" << int(StorageErrorCode::Corrupt) << "unexpected trigger 'evil'";
        QTest::newRow("missing_index_trigger") << "no_trigger" << int(StorageErrorCode::Corrupt) << "messages_fts_update' of schema version 2 is missing";
    }
    void refused_files_are_left_untouched() {
        QFETCH(QString, damage);
        QFETCH(int, code);
        QFETCH(QString, reason);
        const std::string file = path(("refused_" + damage + ".db").toUtf8().constData());
        const std::string kind = damage.toStdString();
        std::mt19937 rng(5);
        QByteArray random(65536, 0);
        for (auto& b : random) b = char(rng());
        if (kind == "random") {
            write_bytes(file, random);
        } else if (kind == "text") {
            write_bytes(file, "hello, not a database\n");
        } else if (kind == "other_app") {
            raw_exec(file, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes VALUES (1, 'x');");
        } else {
            make_history(file);
            QVERIFY(!fs::exists(file + "-wal"));  // closed cleanly: all in the main file
            QByteArray bytes = file_bytes(file);
            if (kind == "newer") raw_exec(file, "PRAGMA user_version = 7");
            if (kind == "other_id") raw_exec(file, "PRAGMA application_id = 42");
            if (kind == "trigger") raw_exec(file, "CREATE TRIGGER evil AFTER INSERT ON messages BEGIN DELETE FROM conversations; END;");
            if (kind == "no_trigger") raw_exec(file, "DROP TRIGGER messages_fts_update");
            if (kind == "half") write_bytes(file, bytes.left(bytes.size() / 2 / 4096 * 4096));
            if (kind == "mid_page") write_bytes(file, bytes.left(bytes.size() - 100));
            if (kind == "50_bytes") write_bytes(file, bytes.left(50));
            if (kind == "page_size") write_bytes(file, bytes.left(16) + QByteArray("\x00\x03", 2) + bytes.mid(18));
            if (kind == "garbage_pages") {
                QByteArray garbage = bytes;
                for (qsizetype i = 4096 * 2; i < garbage.size(); ++i) garbage[i] = char(rng());
                write_bytes(file, garbage);
            }
        }
        const QByteArray before = file_bytes(file);
        OpenOptions options;
        options.verify = true;
        const auto [got, what] = error_of([&] { Store::open(file, options); });
        QCOMPARE(int(got), code);
        QVERIFY2(what.rfind(file + ": ", 0) == 0, what.c_str());
        QVERIFY2(what.find(reason.toStdString()) != std::string::npos, what.c_str());
        QVERIFY2(file_bytes(file) == before, "the refused file was modified");
        QVERIFY(!fs::exists(file + "-wal") || fs::file_size(file + "-wal") == 0);

        // Moving it aside keeps every byte and lets a fresh database start.
        const fs::path aside = Store::move_aside(file);
        QVERIFY(aside.string().find(".damaged-") != std::string::npos);
        QVERIFY(!fs::exists(file));
        QVERIFY(file_bytes(aside.string()) == before);
        Store fresh = Store::open(file);
        QCOMPARE(fresh.count_conversations(), int64_t(0));
    }

    void move_aside_takes_the_wal_along() {
        const std::string file = path("aside.db");
        write_bytes(file, "junk");
        write_bytes(file + "-wal", "wal bytes");
        write_bytes(file + "-shm", "shm bytes");
        const fs::path first = Store::move_aside(file);
        QCOMPARE(file_bytes(first.string() + "-wal"), QByteArray("wal bytes"));
        QCOMPARE(file_bytes(first.string() + "-shm"), QByteArray("shm bytes"));
        QVERIFY(!fs::exists(file + "-wal") && !fs::exists(file + "-shm"));
        write_bytes(file, "junk again");
        const fs::path second = Store::move_aside(file);  // same second: a distinct name
        QVERIFY(second != first);
        QCOMPARE(file_bytes(second.string()), QByteArray("junk again"));
        QCOMPARE(error_of([&] { Store::move_aside(file); }).first, StorageErrorCode::Io);
    }

    void every_error_code_is_provoked() {
        // Io: a missing folder, a missing file without create, a symlink.
        QCOMPARE(error_of([&] { Store::open(path("no/such/dir/h.db")); }).first, StorageErrorCode::Io);
        QCOMPARE(error_of([&] { Store::open(path("absent.db"), OpenOptions{false, true, 5000, false, {}}); }).first,
                 StorageErrorCode::Io);
        make_history(path("target.db"), 1);
        fs::create_symlink(path("target.db"), path("link.db"));
        QCOMPARE(error_of([&] { Store::open(path("link.db")); }).first, StorageErrorCode::Io);

        // Busy: another connection holds the write lock past busy_timeout.
        const std::string busy = path("busy.db");
        make_history(busy, 1);
        {
            detail::Db holder(busy, SQLITE_OPEN_READWRITE, busy);
            holder.exec("BEGIN IMMEDIATE");
            OpenOptions quick;
            quick.busy_timeout_ms = 50;
            Store s = Store::open(busy, quick);
            const auto [code, what] = error_of([&] { s.create_conversation({}); });
            QCOMPARE(code, StorageErrorCode::Busy);
            QVERIFY2(what.find(busy) == 0, what.c_str());
            holder.exec("ROLLBACK");
            s.create_conversation({});  // and it recovers once the lock is gone
        }

        // Full: SQLITE_FULL from a page limit on the store's own connection is not
        // reachable through the API, so provoke it on a raw connection and map it.
        {
            detail::Db db(path("full.db"), SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "full.db");
            db.exec("CREATE TABLE t (x BLOB); PRAGMA max_page_count = 3;");
            const auto [code, what] = error_of([&] { db.exec("INSERT INTO t VALUES (zeroblob(100000))"); });
            QCOMPARE(code, StorageErrorCode::Full);
        }

        // Sqlite: any other failure; the check helper names the call site.
        const int line = __LINE__ + 1;
        const auto [code, what] = error_of([] { detail::check(nullptr, SQLITE_MISUSE, "x.db", "probe"); });
        QCOMPARE(code, StorageErrorCode::Sqlite);
        QVERIFY2(what.find("x.db: probe: ") == 0, what.c_str());
        QVERIFY2(what.find("test_storage_open.cpp:" + std::to_string(line)) != std::string::npos, what.c_str());
        QCOMPARE(detail::code_for_sqlite(SQLITE_IOERR_FSYNC), StorageErrorCode::Io);
        QCOMPARE(detail::code_for_sqlite(SQLITE_CORRUPT), StorageErrorCode::Corrupt);
        QCOMPARE(detail::code_for_sqlite(SQLITE_NOTADB), StorageErrorCode::NotADatabase);
        QCOMPARE(detail::code_for_sqlite(SQLITE_BUSY_SNAPSHOT), StorageErrorCode::Busy);
        QCOMPARE(detail::code_for_sqlite(SQLITE_CONSTRAINT), StorageErrorCode::Sqlite);

        // The rest through the API (NotADatabase, Corrupt, NewerSchema: see above).
        Store s = Store::open_memory();
        QCOMPARE(error_of([&] { s.conversation(1); }).first, StorageErrorCode::NotFound);
        QCOMPARE(error_of([&] { s.create_conversation({"", "", "", "nope"}); }).first, StorageErrorCode::InvalidArgument);
        QCOMPARE(error_of([&] { s.import_json("{}"); }).first, StorageErrorCode::BadImport);
        for (auto c : {StorageErrorCode::Io, StorageErrorCode::NotADatabase, StorageErrorCode::Corrupt,
                       StorageErrorCode::NewerSchema, StorageErrorCode::Busy, StorageErrorCode::Full,
                       StorageErrorCode::NotFound, StorageErrorCode::InvalidArgument, StorageErrorCode::BadImport,
                       StorageErrorCode::Sqlite}) {
            QVERIFY(std::string(storage_error_code_name(c)) != "unknown");
        }
    }
};

QTEST_GUILESS_MAIN(TestStorageOpen)
#include "test_storage_open.moc"
