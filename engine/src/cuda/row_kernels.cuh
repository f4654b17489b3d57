// File-local helpers of the one-block-per-row kernels (embed, rmsnorm,
// add_rmsnorm, moe_combine, latent_cache), shared by their .cu files: the block
// size, the RMS scale of cpu::rmsnorm, one rotary pair of Rope::apply, one row
// of add_rmsnorm, and the norm alone of a row that other blocks added up (the last
// block of the fused matvec and expert down launches).
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

// One rotary pair i of Rope::apply: its two positions and rotated values, which
// the caller stores (the latent cache's row, fp32 or bf16; the queries' rope parts
// in place). The products and sums are rounded separately, as the CPU writes them
// (no fused multiply-add).
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

// Elements i0, i0 + step, ... (kU of them) of a and b, zero past n, all loads
// issued before any is used; b through L2 (__ldcg) with kBL2.
template <int kU, bool kBL2 = false>
__device__ __forceinline__ void load_pair(const float* a, const float* b, int64_t i0, int64_t step, int64_t n,
                                          float (&av)[kU], float (&bv)[kU]) {
#pragma unroll
    for (int u = 0; u < kU; ++u) {
        const int64_t i = i0 + u * step;
        av[u] = i < n ? a[i] : 0.0f;
        if constexpr (kBL2) bv[u] = i < n ? __ldcg(b + i) : 0.0f;
        else bv[u] = i < n ? b[i] : 0.0f;
    }
}

// out[i] = w[i] * (x[i] * s) for a row, by threads step apart (a block's), kU of
// a thread's elements loaded before their stores; x through L2 (__ldcg) with kXL2,
// where other blocks of the launch wrote it.
template <int kU = 4, bool kXL2 = false>
__device__ __forceinline__ void norm_scaled_row(const float* x, const float* w, float s, int64_t n, float* out,
                                                int64_t step) {
    for (int64_t i0 = threadIdx.x; i0 < n; i0 += kU * step) {
        float wv[kU], xv[kU];
        load_pair<kU, kXL2>(w, x, i0, step, n, wv, xv);
#pragma unroll
        for (int u = 0; u < kU; ++u) {
            const int64_t i = i0 + u * step;
            if (i < n) out[i] = wv[u] * (xv[u] * s);
        }
    }
}

// out = rmsnorm(x) with w for a row of n values that other blocks of the launch
// wrote (read through L2, __ldcg), by the threads of a block of k_row_threads: the
// sum of squares in add_rmsnorm_row's and combine_row's order (each thread its
// elements in ascending order, then block_sum) and norm_scaled_row's products, so
// the same bits as they give after adding the row themselves. A thread's eight
// elements are loaded before any is used; a row of at most 8 * k_row_threads
// values (V2-Lite's 2048) is read once and kept in registers.
__device__ __forceinline__ void norm_row_l2(const float* x, const float* w, float eps, int64_t n, float* out,
                                            float* scratch) {
    constexpr int kU = 8;
    constexpr int64_t step = k_row_threads;  // (a constant: the loads' offsets are immediates)
    if (n <= kU * step) {
        float wv[kU], xv[kU];
        load_pair<kU, true>(w, x, threadIdx.x, step, n, wv, xv);
        float ss = 0.0f;
#pragma unroll
        for (int u = 0; u < kU; ++u)
            if (threadIdx.x + u * step < n) ss = fmaf(xv[u], xv[u], ss);
        const float s = rms_scale(block_sum(ss, scratch), n, eps);
#pragma unroll
        for (int u = 0; u < kU; ++u) {
            const int64_t i = threadIdx.x + u * step;
            if (i < n) out[i] = wv[u] * (xv[u] * s);
        }
        return;
    }
    float ss = 0.0f;
    for (int64_t i0 = threadIdx.x; i0 < n; i0 += kU * step) {
        float xv[kU];
#pragma unroll
        for (int u = 0; u < kU; ++u) {
            const int64_t i = i0 + u * step;
            xv[u] = i < n ? __ldcg(x + i) : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < kU; ++u)
            if (i0 + u * step < n) ss = fmaf(xv[u], xv[u], ss);
    }
    norm_scaled_row<kU, true>(x, w, rms_scale(block_sum(ss, scratch), n, eps), n, out, step);
}

// Row t of launch_add_rmsnorm: x[t] += r[t], then out[t] = rmsnorm(x[t]) with w;
// a block of k_row_threads. r is read through L2 (__ldcg): in the fused matvec
// launch other blocks of the same launch wrote it. A thread loads four of its
// elements before adding them (one at a time, each load waited for, the fused
// launch's last block took several microseconds for a 2048-wide row); the sum
// of squares is taken in the same order: the same bits.
__device__ __forceinline__ void add_rmsnorm_row(float* x, const float* r, const float* w, float eps, int64_t n,
                                                float* out, int64_t t, float* scratch) {
    constexpr int kU = 4;
    float* xr = x + t * n;
    const float* rr = r + t * n;
    const int64_t step = blockDim.x;
    float ss = 0.0f;
    for (int64_t i0 = threadIdx.x; i0 < n; i0 += kU * step) {
        float xv[kU], rv[kU];
        load_pair<kU, true>(xr, rr, i0, step, n, xv, rv);
#pragma unroll
        for (int u = 0; u < kU; ++u) {
            const int64_t i = i0 + u * step;
            if (i >= n) break;
            const float v = xv[u] + rv[u];
            xr[i] = v;
            ss = fmaf(v, v, ss);
        }
    }
    const float s = rms_scale(block_sum(ss, scratch), n, eps);
    norm_scaled_row(xr, w, s, n, out + t * n, step);
}

}  // namespace
}  // namespace cetus::cuda
