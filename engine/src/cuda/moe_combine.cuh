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
// the elements it wrote.
__device__ __forceinline__ void combine_row(const MoeCombine& c, int64_t t, const float* y, int32_t K,
                                            int64_t hidden, float* scratch) {
    float* xr = c.x + t * hidden;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
        float r = 0.0f;
        for (int k = 0; k < K; ++k) r = fmaf(c.weights[t * c.stride + k], __ldcg(y + (t * K + k) * hidden + i), r);
        if (c.shared) r += __ldcg(c.shared + t * hidden + i);
        const float v = xr[i] + r;
        xr[i] = v;
        ss = fmaf(v, v, ss);
    }
    const float s = rms_scale(block_sum(ss, scratch), hidden, c.eps);
    float* o = c.out + t * hidden;
    for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) o[i] = c.norm_w[i] * (xr[i] * s);
}

}  // namespace
}  // namespace cetus::cuda
