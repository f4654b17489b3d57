// The grouping of (token, slot) pairs by expert as one block's code, shared by
// group_pairs_kernel (moe_group_pairs.cu) and the fused route-and-group kernel of
// small batches (moe_route.cu).
#pragma once

#include "device_math.cuh"
#include "kernels.h"

namespace cetus::cuda {
namespace {

constexpr int k_group_threads = 256;

// Counting sort of the pairs by expert in one block: counts by shared atomics,
// offsets (and with kTiles the tensor-core kernels' tiles, which only chunks past
// the small-batch size use) by running sums over a warp, then each expert's
// thread lists its pairs in ascending pair order (deterministic).
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
    if (threadIdx.x < 32) {
        // The first warp takes 32 experts at a time: each lane's offset, active slot and
        // first tile from running sums over the lanes (the same values as a walk over
        // the experts in order; one thread walking 64 experts was most of the routing
        // launch's tail on an H200).
        const int lane = int(threadIdx.x);
        const auto inclusive = [lane](int v) {
            for (int off = 1; off < 32; off <<= 1) {
                const int u = __shfl_up_sync(k_full_mask, v, off);
                if (lane >= off) v += u;
            }
            return v;
        };
        int running = 0, n_active = 0, n_tiles = 0;
        for (int e0 = 0; e0 < E; e0 += 32) {
            const int e = e0 + lane;
            const int c = e < E ? count[e] : 0;
            const int tiles = kTiles ? (c + int(k_expert_tile_pairs) - 1) / int(k_expert_tile_pairs) : 0;
            const int c_sum = inclusive(c), a_sum = inclusive(c > 0 ? 1 : 0), t_sum = inclusive(tiles);
            if (e < E) {
                const int at = running + c_sum - c;
                offset[e] = at;
                out.offsets[e] = at;
                out.counts[e] = c;
                if (c > 0) out.active[n_active + a_sum - 1] = e;
                if constexpr (kTiles) {
                    int tile = n_tiles + t_sum - tiles;
                    for (int m0 = 0; m0 < c; m0 += int(k_expert_tile_pairs), ++tile) {
                        out.tiles[2 * tile] = e;
                        out.tiles[2 * tile + 1] = m0;
                    }
                }
            }
            running += __shfl_sync(k_full_mask, c_sum, 31);
            n_active += __shfl_sync(k_full_mask, a_sum, 31);
            n_tiles += __shfl_sync(k_full_mask, t_sum, 31);
        }
        if (lane == 0) {
            *out.n_active = n_active;
            if constexpr (kTiles) *out.n_tiles = n_tiles;
        }
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
