// The latent-cache write of one layer: cache row *start_pos + t =
// [rmsnorm(kv[t, :d_c]) with kv_a_layernorm ; rope(kv[t, d_c:])], as
// mla_forward writes it (mla.cpp: cpu::rmsnorm, then Rope::apply of rope.cpp
// with the precomputed cos/sin table), and the same rotation of the token's
// queries q[t, h, d_n:] in place (one launch for both). One block of
// k_row_threads per token.
#include "cuda_util.h"
#include "device_math.cuh"
#include "pdl.cuh"
#include "row_kernels.cuh"

namespace cetus::cuda {
namespace {

__global__ void __launch_bounds__(k_row_threads)
    latent_cache_kernel(const float* __restrict__ kv, const float* __restrict__ norm_w, float eps,
                        const float* __restrict__ rope_table, bool interleave,
                        const int64_t* __restrict__ start_pos, int64_t d_c, int64_t d_r, float* __restrict__ cache,
                        float* __restrict__ q, int64_t n_h, int64_t d_n) {
    pdl_wait();  // first: see pdl.cuh
    pdl_trigger();
    __shared__ float scratch[32];
    const int64_t t = blockIdx.x, width = d_c + d_r, pos = *start_pos + t;
    const float* in = kv + t * width;                // [d_c + d_r]
    float* row = cache + pos * width;               // [d_c + d_r]
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < d_c; i += blockDim.x) ss = fmaf(in[i], in[i], ss);
    const float r = rms_scale(block_sum(ss, scratch), d_c, eps);
    for (int64_t i = threadIdx.x; i < d_c; i += blockDim.x) row[i] = norm_w[i] * (in[i] * r);
    const float* cs = rope_table + pos * d_r;
    const int64_t half = d_r / 2;
    for (int64_t i = threadIdx.x; i < half; i += blockDim.x) rope_pair(in + d_c, row + d_c, cs, i, half, interleave);
    const int64_t d_qk = d_n + d_r;
    for (int64_t k = threadIdx.x; k < n_h * half; k += blockDim.x) {
        float* qh = q + (t * n_h + k / half) * d_qk + d_n;  // [d_r]
        rope_pair(qh, qh, cs, k % half, half, interleave);
    }
}

}  // namespace

void launch_latent_cache(const float* kv, int64_t n, const float* norm_w, float eps, const float* rope_table,
                         bool interleave, const int64_t* start_pos, int64_t d_c, int64_t d_r, float* cache, float* q,
                         int64_t n_h, int64_t d_n, cudaStream_t s) {
    if (n <= 0) return;
    launch_pdl(latent_cache_kernel, unsigned(n), k_row_threads, 0, s, kv, norm_w, eps, rope_table, interleave,
               start_pos, d_c, d_r, cache, q, n_h, d_n);
    CETUS_CUDA_LAUNCHED("latent_cache_kernel");
}

}  // namespace cetus::cuda
