// The last block of a launch to finish: cooperative groups' grid-sync pattern
// without needing every block resident at once. Every block of the grid calls
// last_block_arrived() once a counter, with all of its threads, after its global writes;
// it returns true in the block that arrives last, which then sees every block's
// writes (read them with __ldcg: not through this multiprocessor's L1). The
// counter is zero before the launch and left at zero, so CUDA graphs replay the
// launch; kernels sharing one counter must run one after another (one stream).
#pragma once

#include <cstdint>

namespace cetus::cuda {
namespace {

// The same among `blocks` blocks that share a counter (a column of the grid, say):
// each calls it once, and the last of them to arrive gets true.
__device__ __forceinline__ bool last_block_arrived(uint32_t* counter, uint32_t blocks) {
    __shared__ bool last;
    __syncthreads();  // the block's writes are ordered before thread 0's fence
    if (threadIdx.x == 0) {
        __threadfence();
        last = atomicAdd(counter, 1u) == blocks - 1;
        if (last) {
            __threadfence();  // the other blocks' writes before the reads below (as grid sync does)
            *counter = 0;     // every block has arrived
        }
    }
    __syncthreads();
    if (last) __threadfence();
    return last;
}

__device__ __forceinline__ bool last_block_arrived(uint32_t* counter) {
    return last_block_arrived(counter, gridDim.x * gridDim.y * gridDim.z);
}

}  // namespace
}  // namespace cetus::cuda
