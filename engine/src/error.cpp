// Names of error codes, for logs and JSON output.
#include "cetus/error.h"

namespace cetus {

const char* error_code_name(ErrorCode code) noexcept {
    switch (code) {
    case ErrorCode::Io: return "io";
    case ErrorCode::BadFormat: return "bad_format";
    case ErrorCode::BadConfig: return "bad_config";
    case ErrorCode::Unsupported: return "unsupported";
    case ErrorCode::MissingTensor: return "missing_tensor";
    case ErrorCode::BadTensor: return "bad_tensor";
    case ErrorCode::ContextOverflow: return "context_overflow";
    case ErrorCode::BadRequest: return "bad_request";
    case ErrorCode::OutOfMemory: return "out_of_memory";
    case ErrorCode::Device: return "device";
    case ErrorCode::Cancelled: return "cancelled";
    }
    return "unknown";
}

}  // namespace cetus
