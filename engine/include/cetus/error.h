// The engine's one exception type. Every failure the engine reports carries a
// code (so callers can react, e.g. offer the CPU after a GPU out-of-memory) and
// a message naming the file or field and the problem.
#pragma once

#include <stdexcept>
#include <string>

namespace cetus {

enum class ErrorCode {
    Io,               // cannot open, read or map a file
    BadFormat,        // malformed file contents (JSON, safetensors header, tokenizer)
    BadConfig,        // config.json field missing, of the wrong type or inconsistent
    Unsupported,      // well-formed but not something the engine runs
    MissingTensor,    // a tensor the config requires is absent
    BadTensor,        // wrong dtype, shape or byte range
    ContextOverflow,  // prompt or request longer than the context
    BadRequest,       // invalid generation or command parameters
    OutOfMemory,      // host or device allocation failed
    Device,           // backend failure (no GPU, CUDA error)
    Cancelled,        // loading was cancelled by the caller
};

const char* error_code_name(ErrorCode code) noexcept;

class Error : public std::runtime_error {
public:
    Error(ErrorCode code, const std::string& message)
        : std::runtime_error(message), m_code(code) {}
    ErrorCode code() const noexcept { return m_code; }

private:
    ErrorCode m_code;
};

}  // namespace cetus
