// Schema versions 1 and 2 and the migration runner. Times are milliseconds since the
// Unix epoch; JSON columns are validated by the store before they are written.
#include "schema.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <map>
#include <tuple>

namespace cetus::storage::detail {
namespace {

// Released; never edit. A change to the schema is a new migration.
constexpr const char* k_schema_v1 = R"sql(
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
)sql";

// Version 2: each answer's token probabilities (token_probabilities.h), beside its trace.
constexpr const char* k_schema_v2 = R"sql(
CREATE TABLE token_probabilities (
    message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    n_tokens INTEGER NOT NULL,
    data BLOB NOT NULL
);
)sql";

constexpr std::array<Migration, 2> k_migrations{{
    {1, k_schema_v1},
    {2, k_schema_v2},
}};

using SchemaObjects = std::map<std::pair<std::string, std::string>, std::tuple<std::string, std::string>>;

SchemaObjects read_objects(Db& db) {
    SchemaObjects objects;
    Stmt stmt(db, "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'");
    while (stmt.step()) {
        objects[{stmt.col_text(0), stmt.col_text(1)}] = {stmt.col_text(2), stmt.col_text(3)};
    }
    return objects;
}

// Applies `migration` unless another connection got there first: the version is
// read again under the write lock, so two processes opening a new file at once
// do not both create the schema.
void run_migration(Db& db, const Migration& migration) {
    db.exec("BEGIN IMMEDIATE");
    try {
        if (db.pragma_int("PRAGMA user_version") < migration.to_version) {
            db.exec(migration.sql);
            const std::string bump = "PRAGMA user_version = " + std::to_string(migration.to_version);
            db.exec(bump.c_str());
        }
        db.exec("COMMIT");
    } catch (const StorageError& e) {
        sqlite3_exec(db.get(), "ROLLBACK", nullptr, nullptr, nullptr);
        throw StorageError(e.code(), std::string(e.what()) + " (migration to schema version " +
                                         std::to_string(migration.to_version) + "; file left as it was)");
    }
}

}  // namespace

std::span<const Migration> migrations() {
    return k_migrations;
}

FileSchema read_file_schema(Db& db) {
    FileSchema schema;
    schema.user_version = db.pragma_int("PRAGMA user_version");
    schema.application_id = db.pragma_int("PRAGMA application_id");
    schema.n_objects = db.pragma_int("SELECT count(*) FROM sqlite_master");
    return schema;
}

void check_schema(Db& db, const FileSchema& schema, std::span<const Migration> all) {
    const int64_t latest = all.empty() ? 0 : all.back().to_version;
    if (schema.application_id != 0 && schema.application_id != k_application_id) {
        fail(StorageErrorCode::NotADatabase, db.label(),
             "an SQLite database of another application (application_id " +
                 std::to_string(schema.application_id) + "), not a Cetus history; left untouched");
    }
    if (schema.application_id == 0) {
        if (schema.user_version == 0 && schema.n_objects == 0) return;  // new and empty
        fail(StorageErrorCode::NotADatabase, db.label(),
             "an SQLite database that Cetus did not create; left untouched");
    }
    if (schema.user_version > latest) {
        fail(StorageErrorCode::NewerSchema, db.label(),
             "written by a newer Cetus (schema version " + std::to_string(schema.user_version) +
                 "; this build reads up to " + std::to_string(latest) +
                 "); left untouched: update Cetus or move the file aside");
    }
    if (schema.user_version < 1) {
        fail(StorageErrorCode::Corrupt, db.label(), "damaged: Cetus database without a schema version");
    }

    Db reference(":memory:", SQLITE_OPEN_READWRITE | SQLITE_OPEN_MEMORY, "schema reference");
    for (const Migration& m : all) {
        if (m.to_version > schema.user_version) break;
        reference.exec(m.sql);
    }
    const SchemaObjects want = read_objects(reference);
    const SchemaObjects have = read_objects(db);
    for (const auto& [key, value] : want) {
        auto it = have.find(key);
        if (it == have.end()) {
            fail(StorageErrorCode::Corrupt, db.label(),
                 "damaged: " + key.first + " '" + key.second + "' of schema version " +
                     std::to_string(schema.user_version) + " is missing");
        }
        if (it->second != value) {
            fail(StorageErrorCode::Corrupt, db.label(),
                 "damaged: " + key.first + " '" + key.second + "' differs from schema version " +
                     std::to_string(schema.user_version));
        }
    }
    for (const auto& [key, value] : have) {
        if (!want.count(key)) {
            fail(StorageErrorCode::Corrupt, db.label(),
                 "damaged or altered: unexpected " + key.first + " '" + key.second + "'");
        }
    }
}

int64_t migrate(Db& db, std::span<const Migration> all, const std::string& backup_path) {
    int64_t version = db.pragma_int("PRAGMA user_version");
    bool backed_up = false;
    for (const Migration& m : all) {
        if (m.to_version <= version) continue;
        if (!backed_up && version > 0 && !backup_path.empty() && ::access(backup_path.c_str(), F_OK) != 0) {
            // VACUUM INTO wants a missing or empty file; making it first sets 0600.
            const int fd = ::open(backup_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            if (fd >= 0) {
                ::close(fd);
                Stmt vacuum(db, "VACUUM INTO ?1");
                vacuum.bind(1, backup_path).run();
            }
        }
        backed_up = true;
        run_migration(db, m);
    }
    return db.pragma_int("PRAGMA user_version");
}

}  // namespace cetus::storage::detail
