// What the two decode attention kernels share (mla_attention.cu on CUDA cores,
// mla_attention_mma.cu on the tensor cores for a bf16 cache): how a token's
// cache rows are split across blocks, the launch's arguments, and the
// tensor-core kernel's launch (mla_attention.cu merges the splits of both).
#pragma once

#include "kernels.h"
#include "launch_util.cuh"

#include <cuda_pipeline.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace cetus::cuda {

inline constexpr int k_tile_rows = 32;        // cache rows staged per step
inline constexpr int k_split_max_tokens = 16; // batches up to this size split per token
inline constexpr int k_split_cap_min = 32,
                     k_split_cap_max = 128; // splits per token (plan_attention)
// Rows per split before the cap is reached: one group of the CUDA-core kernel's
// scores. A block's time grows with its rows (each warp walks them one after
// another), so a short context is spread over many blocks: 600 cached rows are 75
// splits of 8 rows, not 19 of 32 (an H200 profile, 2026-12-04: a 32-row split took
// the CUDA-core kernel 17.7 us at 72 rows, with 6 of its 132 blocks at work).
inline constexpr int k_split_min_rows = 8;

// How a token that sees n_rows cache rows is split: rows per split (a multiple
// of k_split_min_rows; a split's last tile may be partial) and the number of
// non-empty splits. A function of n_rows only.
struct SplitPlan {
    int64_t rows, count;
};
__host__ __device__ inline SplitPlan split_plan(int64_t n_rows, bool split, int split_cap) {
    if (!split) return {n_rows, 1};
    const int64_t want = min(int64_t(split_cap), ceil_div(n_rows, k_split_min_rows));
    const int64_t rows = ceil_div(ceil_div(n_rows, want), k_split_min_rows) * k_split_min_rows;
    return {rows, ceil_div(n_rows, rows)};
}

// One step of a block's walk over n_tiles cache tiles: afterwards tile k is in
// shared memory for every thread. stage(j, buffer) issues tile j's copies into
// buffer 0 or 1 as one commit group. With two buffers tile 0 was staged before
// the first step and each step issues the next tile's copies before waiting for
// its own; with one, each step stages its own tile. The first barrier keeps the
// buffer being refilled from the warps still reading it (the previous tile's).
template <typename Stage>
__device__ __forceinline__ void attention_tile_step(int64_t k, int64_t n_tiles, bool two,
                                                    Stage&& stage) {
    __syncthreads();
    if (!two) {
        stage(k, 0);
        __pipeline_wait_prior(0);
    } else if (k + 1 < n_tiles) {
        stage(k + 1, int((k + 1) & 1));
        __pipeline_wait_prior(1); // this tile's group has landed, the next one's may not
    } else {
        __pipeline_wait_prior(0);
    }
    __syncthreads(); // every thread's copies of this tile have landed
}

struct AttentionLaunch {
    const float* q_abs; // [n, n_h, d_c]
    const float* q;     // [n, n_h, d_n + d_r]
    const void* cache;  // [capacity, d_c + d_r] of float or bf16
    float* ctx;         // [n, n_h, d_c]: written here (no split) or by the merge
    float* part_acc;    // [split_cap, n, n_h, d_c] (split)
    float* part_ml;     // [split_cap, n, n_h, 2]
    int64_t n;
    const int64_t* start_pos; // device scalar: token t is at position *start_pos + t
    MlaShape m;
    float scale;
    bool split;    // per-token splitting (decode and verify batches)
    int split_cap; // splits per token when split
    int stages;    // tiles in shared memory: 2 (the next one's copies in flight) or 1
};

// The tensor-core kernel (mla_attention_mma.cu): a bf16 cache whose latent and
// rope widths are multiples of 16 (and within the registers' bounds, as for the
// CUDA-core kernel), on a device its code was built for (sm_80 or later).
inline bool attention_mma_shape(const MlaShape& m) {
    return m.d_c % 16 == 0 && m.d_r % 16 == 0 && m.d_c <= k_attention_max_latent &&
           m.d_r <= k_attention_max_rope;
}
bool attention_mma_compiled();
// Its dynamic shared memory per staged tile, and its static shared memory.
size_t attention_mma_tile_bytes(int64_t cache_width);
size_t attention_mma_static_bytes();
// Lets it use dynamic shared memory of that many bytes.
void allow_attention_mma_smem(int bytes);
// Grid (head tiles of 16, n_split, tokens) of 128 threads; splits as the CUDA-core
// kernel's; the queries and probabilities in parts (2 or 3) bf16 parts each.
void launch_attention_mma(const AttentionLaunch& a, int64_t n_split, int parts, cudaStream_t s);

} // namespace cetus::cuda
