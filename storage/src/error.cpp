// Names of storage error codes, for logs and the CLI.
#include "cetus/storage/error.h"

namespace cetus::storage {

const char* storage_error_code_name(StorageErrorCode code) noexcept {
    switch (code) {
    case StorageErrorCode::Io: return "io";
    case StorageErrorCode::NotADatabase: return "not_a_database";
    case StorageErrorCode::Corrupt: return "corrupt";
    case StorageErrorCode::NewerSchema: return "newer_schema";
    case StorageErrorCode::Busy: return "busy";
    case StorageErrorCode::Full: return "full";
    case StorageErrorCode::NotFound: return "not_found";
    case StorageErrorCode::InvalidArgument: return "invalid_argument";
    case StorageErrorCode::BadImport: return "bad_import";
    case StorageErrorCode::Sqlite: return "sqlite";
    }
    return "unknown";
}

}  // namespace cetus::storage
