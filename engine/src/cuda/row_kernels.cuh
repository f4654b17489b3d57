// File-local helpers of the one-block-per-row kernels (embed, rmsnorm,
// add_rmsnorm, moe_combine, latent_cache), shared by their .cu files: the block
// size, the RMS scale of cpu::rmsnorm, one rotary pair of Rope::apply and one row
// of add_rmsnorm (also the last block of the fused matvec launch).
// Internal linkage, as when they lived in one file: each .cu gets its own copy.
#pragma once

#include "device_math.cuh"

#include <cstdint>

namespace cetus::cuda {
namespace {

constexpr int k_row_threads = 256;

// 1 / sqrt(sum_sq / n + eps), each operation rounded as on the CPU (no fast math).
__device__ __forceinline__ float rms_scale(float sum_sq, int64_t n, float eps) {
    return 1.0f / sqrtf(sum_sq / float(n) + eps);
}

// One rotary pair i of Rope::apply; in and out may alias. The products and
// sums are rounded separately, as the CPU writes them (no fused multiply-add).
// rope_pair_values gives the pair's positions and values to a caller that stores
// them itself (the latent cache's row, fp32 or bf16); rope_pair writes them to out.
__device__ __forceinline__ void rope_pair_values(const float* in, const float* cs, int64_t i, int64_t half,
                                                 bool interleave, int64_t at[2], float out[2]) {
    const float c = cs[2 * i], s = cs[2 * i + 1];
    if (interleave) {
        const float a = in[2 * i], b = in[2 * i + 1];
        at[0] = 2 * i;
        at[1] = 2 * i + 1;
        out[0] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        out[1] = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
    } else {
        const float a = in[i], b = in[i + half];
        at[0] = i;
        at[1] = i + half;
        out[0] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        out[1] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
    }
}

__device__ __forceinline__ void rope_pair(const float* in, float* out, const float* cs, int64_t i, int64_t half,
                                          bool interleave) {
    int64_t at[2];
    float v[2];
    rope_pair_values(in, cs, i, half, interleave, at, v);  // both read before either is written (in may be out)
    out[at[0]] = v[0];
    out[at[1]] = v[1];
}

// Row t of launch_add_rmsnorm: x[t] += r[t], then out[t] = rmsnorm(x[t]) with w;
// a block of k_row_threads. r is read through L2 (__ldcg): in the fused matvec
// launch other blocks of the same launch wrote it.
__device__ __forceinline__ void add_rmsnorm_row(float* x, const float* r, const float* w, float eps, int64_t n,
                                                float* out, int64_t t, float* scratch) {
    float* xr = x + t * n;
    const float* rr = r + t * n;
    float* o = out + t * n;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = xr[i] + __ldcg(rr + i);
        xr[i] = v;
        ss = fmaf(v, v, ss);
    }
    const float s = rms_scale(block_sum(ss, scratch), n, eps);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) o[i] = w[i] * (xr[i] * s);
}

}  // namespace
}  // namespace cetus::cuda
