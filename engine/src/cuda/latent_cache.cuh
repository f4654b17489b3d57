// One token's latent-cache write and query rotation, shared by latent_cache_kernel
// (latent_cache.cu, one block per token) and the extra blocks of the fused query
// absorption launch (absorb_q.cu), for any block size (the latent's norm sums in
// the block's order).
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

// A thread issues the loads of kU of its elements (or rotary pairs) before their
// stores: the compiler cannot move a load above a store that might alias it, so
// one element at a time cost a wait for memory each (the fused query absorption's
// extra block was its launch's slowest, twice the others, on an H200, 2026-12-04).
// Each value is computed as before: the same bits.
__device__ __forceinline__ void latent_cache_token(const LatentCacheArgs& a, int64_t t, float* scratch) {
    constexpr int kU = 4;
    const int64_t step = blockDim.x;
    const int64_t width = a.d_c + a.d_r, pos = *a.start_pos + t;
    const float* in = a.kv + t * width;  // [d_c + d_r]
    float ss = 0.0f;
#pragma unroll 4
    for (int64_t i = threadIdx.x; i < a.d_c; i += step) ss = fmaf(in[i], in[i], ss);
    const float r = rms_scale(block_sum(ss, scratch), a.d_c, a.eps);
    for (int64_t i0 = threadIdx.x; i0 < a.d_c; i0 += kU * step) {
        float xv[kU], wv[kU];
        load_pair(in, a.norm_w, i0, step, a.d_c, xv, wv);
#pragma unroll
        for (int u = 0; u < kU; ++u) {
            const int64_t i = i0 + u * step;
            if (i < a.d_c) store_cached(a, pos, i, wv[u] * (xv[u] * r));
        }
    }
    const float* cs = a.rope_table + pos * a.d_r;
    const int64_t half = a.d_r / 2;
    for (int64_t i = threadIdx.x; i < half; i += step) {
        float rotated[2];
        int64_t at[2];
        rope_pair_values(in + a.d_c, cs, i, half, a.interleave, at, rotated);
        store_cached(a, pos, a.d_c + at[0], rotated[0]);
        store_cached(a, pos, a.d_c + at[1], rotated[1]);
    }
    const int64_t d_qk = a.d_n + a.d_r, pairs = a.n_h * half;
    for (int64_t k0 = threadIdx.x; k0 < pairs; k0 += kU * step) {
        float* qh[kU];
        float v[kU][2];
        int64_t at[kU][2];
#pragma unroll
        for (int u = 0; u < kU; ++u) {
            const int64_t k = k0 + u * step;
            qh[u] = a.q + (t * a.n_h + (k < pairs ? k / half : 0)) * d_qk + a.d_n;  // [d_r]
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

}  // namespace
}  // namespace cetus::cuda
