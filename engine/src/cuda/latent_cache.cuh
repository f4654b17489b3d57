// One token's latent-cache write and query rotation, shared by latent_cache_kernel
// (latent_cache.cu, one block per token) and the extra blocks of the fused query
// absorption launch (absorb_q.cu: one writes the cache row, the others rotate the
// queries), for any block size (the latent's norm sums in the block's order).
#pragma once

#include "device_math.cuh"
#include "kernels.h"
#include "row_kernels.cuh"

namespace cetus::cuda {
namespace {

// Value i of cache row pos: fp32, or rounded to bf16 (nearest even, as the CPU's
// f32_to_bf16 for every finite value).
__device__ __forceinline__ void store_cached(const LatentCacheArgs& a, int64_t pos, int64_t i, float v) {
    const int64_t at = pos * (a.d_c + a.d_r) + i;
    if (a.cache_bf16) static_cast<uint16_t*>(a.cache)[at] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
    else static_cast<float*>(a.cache)[at] = v;
}

// The rope parts q[t, h, d_n:] of the token's queries for heads first, first + step,
// ... (below n_h), rotated in place (Rope::apply's values, rope_pair_values) with
// cs, the position's cos/sin row, by the threads of a block. A thread computes kU
// of its pairs before storing any: the compiler cannot move a load above a store
// that might alias it, so one pair at a time cost a wait for memory each.
constexpr int k_rope_pairs_at_once = 4;

__device__ __forceinline__ void rotate_queries(const LatentCacheArgs& a, int64_t t, const float* cs, int64_t first,
                                               int64_t step_heads) {
    constexpr int kU = k_rope_pairs_at_once;
    const int64_t step = blockDim.x;
    const int64_t half = a.d_r / 2, d_qk = a.d_n + a.d_r;
    const int64_t heads = first < a.n_h ? (a.n_h - 1 - first) / step_heads + 1 : 0, pairs = heads * half;
    for (int64_t k0 = threadIdx.x; k0 < pairs; k0 += kU * step) {
        float* qh[kU];
        float v[kU][2];
        int64_t at[kU][2];
#pragma unroll
        for (int u = 0; u < kU; ++u) {
            const int64_t k = k0 + u * step;
            const int64_t h = first + (k < pairs ? k / half : 0) * step_heads;
            qh[u] = a.q + (t * a.n_h + h) * d_qk + a.d_n;  // [d_r]
            if (k < pairs) rope_pair_values(qh[u], cs, k % half, half, a.interleave, at[u], v[u]);
        }
#pragma unroll
        for (int u = 0; u < kU; ++u) {
            if (k0 + u * step >= pairs) break;
            qh[u][at[u][0]] = v[u][0];
            qh[u][at[u][1]] = v[u][1];
        }
    }
}

// Token t's cache row, and with rotate_q its queries' rotation (rotate_queries for
// every head; the fused query absorption gives that to other blocks). A thread's
// first kU latent values, their norm weights and its first rotary pair are all
// loaded before the block's sum and before any store, so that one wait for memory
// covers them (one element at a time, the fused query absorption's extra block was
// its launch's slowest, twice the others, on an H200, 2026-12-04). Each value is
// computed as one at a time: the same bits.
__device__ __forceinline__ void latent_cache_token(const LatentCacheArgs& a, int64_t t, float* scratch,
                                                   bool rotate_q = true) {
    constexpr int kU = 4;
    const int64_t step = blockDim.x;
    const int64_t width = a.d_c + a.d_r, pos = *a.start_pos + t;
    const float* in = a.kv + t * width;  // [d_c + d_r]
    const float* cs = a.rope_table + pos * a.d_r;
    const int64_t half = a.d_r / 2;
    float xv[kU], wv[kU];
    load_pair(in, a.norm_w, threadIdx.x, step, a.d_c, xv, wv);
    const bool pair0 = threadIdx.x < half;
    float rotated0[2] = {};
    int64_t at0[2] = {};
    if (pair0) rope_pair_values(in + a.d_c, cs, threadIdx.x, half, a.interleave, at0, rotated0);
    float ss = 0.0f;
#pragma unroll
    for (int u = 0; u < kU; ++u)
        if (threadIdx.x + u * step < a.d_c) ss = fmaf(xv[u], xv[u], ss);
    for (int64_t i = threadIdx.x + kU * step; i < a.d_c; i += step) ss = fmaf(in[i], in[i], ss);  // (wider latents)
    const float r = rms_scale(block_sum(ss, scratch), a.d_c, a.eps);
#pragma unroll
    for (int u = 0; u < kU; ++u) {
        const int64_t i = threadIdx.x + u * step;
        if (i < a.d_c) store_cached(a, pos, i, wv[u] * (xv[u] * r));
    }
    for (int64_t i0 = threadIdx.x + kU * step; i0 < a.d_c; i0 += kU * step) {  // (wider latents)
        load_pair(in, a.norm_w, i0, step, a.d_c, xv, wv);
#pragma unroll
        for (int u = 0; u < kU; ++u) {
            const int64_t i = i0 + u * step;
            if (i < a.d_c) store_cached(a, pos, i, wv[u] * (xv[u] * r));
        }
    }
    if (pair0) {
        store_cached(a, pos, a.d_c + at0[0], rotated0[0]);
        store_cached(a, pos, a.d_c + at0[1], rotated0[1]);
    }
    for (int64_t i = threadIdx.x + step; i < half; i += step) {  // (wider rope parts)
        float rotated[2];
        int64_t at[2];
        rope_pair_values(in + a.d_c, cs, i, half, a.interleave, at, rotated);
        store_cached(a, pos, a.d_c + at[0], rotated[0]);
        store_cached(a, pos, a.d_c + at[1], rotated[1]);
    }
    if (rotate_q) rotate_queries(a, t, cs, 0, 1);
}

}  // namespace
}  // namespace cetus::cuda
