// The emulator's asynchronous copies (cuda_pipeline.h): done at once, so the
// commit and wait calls have nothing left to do.
#pragma once

#include "cuda_emu.h"

#include <cstddef>
#include <cstring>

inline void __pipeline_memcpy_async(void* dst, const void* src, size_t bytes, size_t zero_fill = 0) {
    std::memcpy(dst, src, bytes - zero_fill);
    if (zero_fill) std::memset(static_cast<char*>(dst) + (bytes - zero_fill), 0, zero_fill);
}
inline void __pipeline_commit() {}
inline void __pipeline_wait_prior(size_t) {}
