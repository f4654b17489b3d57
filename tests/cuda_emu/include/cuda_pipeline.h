// The emulator's asynchronous copies (cuda_pipeline.h). A GPU may land a copy
// at any moment between its issue and the copying thread's wait; the emulator
// takes one end or the other (CETUS_EMU_ASYNC):
//   wait (default): a thread's copies land only when that thread waits for them
//     (__pipeline_wait_prior(n) completes all but its n most recent committed
//     groups; copies never waited for are dropped), so a read of a destination
//     before the copying thread's wait (plus a barrier, for other threads) sees
//     what was there before;
//   issue: at once, so a copy into a buffer other threads still read (a missing
//     barrier before a double buffer is refilled) changes what they read.
#pragma once

#include "cuda_emu.h"

#include <cstddef>

namespace cuda_emu {
void pipeline_copy(void* dst, const void* src, size_t bytes, size_t zero_fill);
void pipeline_commit();
void pipeline_wait_prior(size_t n);
}  // namespace cuda_emu

inline void __pipeline_memcpy_async(void* dst, const void* src, size_t bytes, size_t zero_fill = 0) {
    ::cuda_emu::pipeline_copy(dst, src, bytes, zero_fill);
}
inline void __pipeline_commit() { ::cuda_emu::pipeline_commit(); }
inline void __pipeline_wait_prior(size_t n) { ::cuda_emu::pipeline_wait_prior(n); }
