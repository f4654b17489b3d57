// The grouping of (token, slot) pairs by expert as one block's code, shared by
// group_pairs_kernel (moe_group_pairs.cu) and the fused route-and-group kernel of
// small batches (moe_route.cu).
#pragma once

#include "kernels.h"

namespace cetus::cuda {
namespace {

constexpr int k_group_threads = 256;

// Counting sort of the pairs by expert in one block: counts by shared atomics,
// offsets (and with kTiles the tensor-core kernels' tiles, which only chunks past
// the small-batch size use) by a serial scan, then each expert's thread lists its
// pairs in ascending pair order (deterministic).
// smem: n_pairs + 2E ints. ids is not restricted: the fused kernel wrote it in
// this launch (visible after its barrier), so its loads must not take the read-only path.
template <bool kTiles>
__device__ __forceinline__ void group_pairs_block(const int32_t* ids, int64_t stride, int n_pairs, int K, int E,
                                                  const ExpertPairs& out, int* smem) {
    int* expert_of = smem;             // [n_pairs]
    int* count = expert_of + n_pairs;  // [E]
    int* offset = count + E;           // [E]
    for (int p = threadIdx.x; p < n_pairs; p += blockDim.x) expert_of[p] = ids[(p / K) * stride + p % K];
    for (int e = threadIdx.x; e < E; e += blockDim.x) count[e] = 0;
    __syncthreads();
    for (int p = threadIdx.x; p < n_pairs; p += blockDim.x) atomicAdd(&count[expert_of[p]], 1);
    __syncthreads();
    if (threadIdx.x == 0) {
        int running = 0, n_active = 0, n_tiles = 0;
        for (int e = 0; e < E; ++e) {
            offset[e] = running;
            out.offsets[e] = running;
            out.counts[e] = count[e];
            running += count[e];
            if (count[e] > 0) out.active[n_active++] = e;
            if constexpr (kTiles) {
                for (int m0 = 0; m0 < count[e]; m0 += int(k_expert_tile_pairs)) {
                    out.tiles[2 * n_tiles] = e;
                    out.tiles[2 * n_tiles + 1] = m0;
                    ++n_tiles;
                }
            }
        }
        *out.n_active = n_active;
        if constexpr (kTiles) *out.n_tiles = n_tiles;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        if (count[e] == 0) continue;
        int pos = offset[e];
        for (int p = 0; p < n_pairs; ++p)
            if (expert_of[p] == e) out.list[pos++] = p;
    }
}

}  // namespace
}  // namespace cetus::cuda
