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

__device__ __forceinline__ void latent_cache_token(const LatentCacheArgs& a, int64_t t, float* scratch) {
    const int64_t width = a.d_c + a.d_r, pos = *a.start_pos + t;
    const float* in = a.kv + t * width;  // [d_c + d_r]
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < a.d_c; i += blockDim.x) ss = fmaf(in[i], in[i], ss);
    const float r = rms_scale(block_sum(ss, scratch), a.d_c, a.eps);
    for (int64_t i = threadIdx.x; i < a.d_c; i += blockDim.x) store_cached(a, pos, i, a.norm_w[i] * (in[i] * r));
    const float* cs = a.rope_table + pos * a.d_r;
    const int64_t half = a.d_r / 2;
    for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
        float rotated[2];
        int64_t at[2];
        rope_pair_values(in + a.d_c, cs, i, half, a.interleave, at, rotated);
        store_cached(a, pos, a.d_c + at[0], rotated[0]);
        store_cached(a, pos, a.d_c + at[1], rotated[1]);
    }
    const int64_t d_qk = a.d_n + a.d_r;
    for (int64_t k = threadIdx.x; k < a.n_h * half; k += blockDim.x) {
        float* qh = a.q + (t * a.n_h + k / half) * d_qk + a.d_n;  // [d_r]
        rope_pair(qh, qh, cs, k % half, half, a.interleave);
    }
}

}  // namespace
}  // namespace cetus::cuda
