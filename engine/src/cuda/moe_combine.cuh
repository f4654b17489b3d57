// One token's MoE combine, shared by moe_combine_kernel (moe_combine.cu) and the
// last block of the fused expert down launch (moe_experts.cu), so both give the
// same bits: x[t, :] += sum_k weights[t, k] * y[t * K + k, :] + shared[t, :],
// then out[t, :] = rmsnorm(x[t, :]) with norm_w. Needs a block of k_row_threads.
// y and shared are read through L2 (__ldcg): in the fused launch other blocks of
// the same launch wrote them.
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
// before the next was issued, the last block of the fused down launch spent about
// 15 us of a V2-Lite layer's 35 on one token's combine (an H200 profile, 2026-12-04).
// Each element's sums are taken in the same order as one at a time: the same bits.
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
    norm_scaled_row(xr, c.norm_w, s, hidden, c.out + t * hidden);
}

}  // namespace
}  // namespace cetus::cuda
