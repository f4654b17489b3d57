// The storage library's one exception type. Every failure carries a code, so the
// HistoryStore boundary can react (offer to move a damaged file aside, retry when
// busy), and a message naming the database file and the problem.
#pragma once

#include <stdexcept>
#include <string>

namespace cetus::storage {

enum class StorageErrorCode {
    Io,               // cannot create, open, read, write or rename a file
    NotADatabase,     // not an SQLite file, or an SQLite file of another application
    Corrupt,          // damaged: truncated, malformed pages, schema not Cetus's
    NewerSchema,      // written by a newer Cetus; this build refuses to touch it
    Busy,             // another connection held a lock past busy_timeout
    Full,             // disk (or the page limit) is full
    NotFound,         // no conversation or message with that id
    InvalidArgument,  // a call the API does not allow (bad parent, invalid UTF-8, bad JSON)
    BadImport,        // an import file failed validation; nothing was imported
    Sqlite,           // any other SQLite failure
};

const char* storage_error_code_name(StorageErrorCode code) noexcept;

class StorageError : public std::runtime_error {
public:
    StorageError(StorageErrorCode code, const std::string& message)
        : std::runtime_error(message), m_code(code) {}
    StorageErrorCode code() const noexcept { return m_code; }

private:
    StorageErrorCode m_code;
};

}  // namespace cetus::storage
