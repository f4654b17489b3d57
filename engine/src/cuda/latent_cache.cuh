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

__device__ __forceinline__ void latent_cache_token(const LatentCacheArgs& a, int64_t t, float* scratch) {
    const int64_t width = a.d_c + a.d_r, pos = *a.start_pos + t;
    const float* in = a.kv + t * width;  // [d_c + d_r]
    float* row = a.cache + pos * width;  // [d_c + d_r]
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < a.d_c; i += blockDim.x) ss = fmaf(in[i], in[i], ss);
    const float r = rms_scale(block_sum(ss, scratch), a.d_c, a.eps);
    for (int64_t i = threadIdx.x; i < a.d_c; i += blockDim.x) row[i] = a.norm_w[i] * (in[i] * r);
    const float* cs = a.rope_table + pos * a.d_r;
    const int64_t half = a.d_r / 2;
    for (int64_t i = threadIdx.x; i < half; i += blockDim.x)
        rope_pair(in + a.d_c, row + a.d_c, cs, i, half, a.interleave);
    const int64_t d_qk = a.d_n + a.d_r;
    for (int64_t k = threadIdx.x; k < a.n_h * half; k += blockDim.x) {
        float* qh = a.q + (t * a.n_h + k / half) * d_qk + a.d_n;  // [d_r]
        rope_pair(qh, qh, cs, k % half, half, a.interleave);
    }
}

}  // namespace
}  // namespace cetus::cuda
