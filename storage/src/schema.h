// The schema, its forward migrations and the checks that a file's schema is
// exactly one Cetus wrote. Migrations are never edited once released: migration N
// turns a version N-1 database into version N.
#pragma once

#include "sqlite_util.h"

#include <span>

namespace cetus::storage::detail {

constexpr int64_t k_application_id = 0x43455455;  // "CETU" in PRAGMA application_id

struct Migration {
    int to_version;
    const char* sql;  // runs inside the migration's transaction
};

std::span<const Migration> migrations();

// What an opened file turned out to be, read without writing to it.
struct FileSchema {
    int64_t user_version = 0;
    int64_t application_id = 0;
    int64_t n_objects = 0;  // rows in sqlite_master
};
FileSchema read_file_schema(Db& db);

// Refuses (throws) a database this build must not touch: another application's,
// a newer schema, or one whose tables, indexes and triggers differ from what the
// migrations create at its version (a damaged or foreign schema could carry
// triggers that run arbitrary SQL on our writes).
void check_schema(Db& db, const FileSchema& schema, std::span<const Migration> all);

// Applies the migrations after the file's version, each in its own IMMEDIATE
// transaction together with its user_version bump. `backup_path`, when given and
// the file already holds data, receives a copy (VACUUM INTO) before the first one.
// Returns the version reached.
int64_t migrate(Db& db, std::span<const Migration> all, const std::string& backup_path = {});

}  // namespace cetus::storage::detail
