// The MoE combine: x[t, :] += sum_k weights[t, k] * y[t * K + k, :] + shared[t, :],
// then out[t, :] = rmsnorm(x[t, :]) with norm_w. combine_row takes a token's row
// in one block of k_row_threads (moe_combine_kernel, moe_combine.cu); the fused
// expert down launch (moe_experts.cu) adds up each column of its blocks' rows with
// combine_elems, the same sums element by element, and its last block then takes
// the norm with norm_row_l2 (row_kernels.cuh), the same sum of squares: both give
// the same bits. y and shared are read through L2 (__ldcg): in the fused launch
// other blocks of the same launch wrote them.
#pragma once

#include "device_math.cuh"
#include "kernels.h"
#include "row_kernels.cuh"

namespace cetus::cuda {
namespace {

// Per element: sum_k w_k y_k from 0 in ascending k (cpu::axpy), plus the shared
// experts, then the residual add of block_forward; each thread then normalises
// the elements it wrote. A thread takes k_combine_elems of its elements at a time
// and issues the loads of k_combine_experts experts' values (from L2) before their
// multiply-adds: one element and one expert at a time, each load waited for
// before the next was issued, a block took about 15 us on one token's 2048-wide
// combine (an H200 profile, 2026-12-04, of the fused down launch's last block,
// which then combined every row alone). Each element's sums are taken in the same
// order as one at a time: the same bits.
constexpr int k_combine_elems = 2;
constexpr int k_combine_experts = 4;

__device__ __forceinline__ void combine_row(const MoeCombine& c, int64_t t, const float* y, int32_t K,
                                            int64_t hidden, float* scratch) {
    constexpr int kU = k_combine_elems, kE = k_combine_experts;
    float* xr = c.x + t * hidden;
    const float* wt = c.weights + t * c.stride;
    const int64_t step = blockDim.x;
    float ss = 0.0f;
    for (int64_t i0 = threadIdx.x; i0 < hidden; i0 += kU * step) {
        float xv[kU], sv[kU], r[kU];
#pragma unroll
        for (int u = 0; u < kU; ++u) {
            const int64_t i = i0 + u * step;
            xv[u] = i < hidden ? xr[i] : 0.0f;
            sv[u] = c.shared && i < hidden ? __ldcg(c.shared + t * hidden + i) : 0.0f;
            r[u] = 0.0f;
        }
        for (int k0 = 0; k0 < K; k0 += kE) {
            float wv[kE], yv[kE][kU];
#pragma unroll
            for (int k = 0; k < kE; ++k) {
                const bool in = k0 + k < K;
                wv[k] = in ? wt[k0 + k] : 0.0f;
#pragma unroll
                for (int u = 0; u < kU; ++u) {
                    const int64_t i = i0 + u * step;
                    yv[k][u] = in && i < hidden ? __ldcg(y + (t * K + k0 + k) * hidden + i) : 0.0f;
                }
            }
#pragma unroll
            for (int k = 0; k < kE; ++k) {
                if (k0 + k >= K) break;
#pragma unroll
                for (int u = 0; u < kU; ++u) r[u] = fmaf(wv[k], yv[k][u], r[u]);
            }
        }
#pragma unroll
        for (int u = 0; u < kU; ++u) {
            const int64_t i = i0 + u * step;
            if (i >= hidden) break;
            float ru = r[u];
            if (c.shared) ru += sv[u];
            const float v = xv[u] + ru;
            xr[i] = v;
            ss = fmaf(v, v, ss);
        }
    }
    const float s = rms_scale(block_sum(ss, scratch), hidden, c.eps);
    norm_scaled_row(xr, c.norm_w, s, hidden, c.out + t * hidden, step);
}

// combine_row's sums for rows [r0, r1) of tokens 0 .. n_tokens - 1, an element a
// thread (n_tokens * (r1 - r0) of the block's threads), without the norm: sum_k w_k
// y_k from 0 in ascending k, plus the shared experts, then the residual add. Each
// thread's loads (up to k_combine_elem_experts experts' values at a time) are all
// issued before its multiply-adds.
constexpr int k_combine_elem_experts = 8;

__device__ __forceinline__ void combine_elems(const MoeCombine& c, int64_t n_tokens, const float* y, int32_t K,
                                              int64_t hidden, int64_t r0, int64_t r1) {
    constexpr int kE = k_combine_elem_experts;
    const int64_t width = r1 - r0, e = threadIdx.x;
    if (width <= 0 || e >= n_tokens * width) return;
    const int64_t t = e / width, i = r0 + e % width;
    float* xp = c.x + t * hidden + i;
    const float* wt = c.weights + t * c.stride;
    const float xv = __ldcg(xp);
    const float sv = c.shared ? __ldcg(c.shared + t * hidden + i) : 0.0f;
    float r = 0.0f;
    for (int k0 = 0; k0 < K; k0 += kE) {
        float wv[kE], yv[kE];
#pragma unroll
        for (int k = 0; k < kE; ++k) {
            const bool in = k0 + k < K;
            wv[k] = in ? wt[k0 + k] : 0.0f;
            yv[k] = in ? __ldcg(y + (t * K + k0 + k) * hidden + i) : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < kE; ++k) {
            if (k0 + k >= K) break;
            r = fmaf(wv[k], yv[k], r);
        }
    }
    if (c.shared) r += sv;
    *xp = xv + r;
}

}  // namespace
}  // namespace cetus::cuda
