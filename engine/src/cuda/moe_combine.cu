// x[t, :] += sum_k weights[t, k] * y[t * top_k + k, :] + shared[t, :]:
// moe_forward's weighted sum in ascending slot order plus the shared experts
// (moe.cpp), then the residual add of Model::block_forward (model.cpp). One
// block of 256 threads per token.
#include "cuda_util.h"
#include "device_math.cuh"

namespace cetus::cuda {
namespace {

// Per element: sum_k w_k y_k from 0 in ascending k (cpu::axpy), plus the shared
// experts, then the residual add of block_forward.
__global__ void moe_combine_kernel(float* __restrict__ x, const float* __restrict__ y,
                                   const float* __restrict__ weights, int64_t stride,
                                   const float* __restrict__ shared, int32_t K, int64_t hidden) {
    const int64_t t = blockIdx.x;
    for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
        float r = 0.0f;
        for (int k = 0; k < K; ++k) r = fmaf(weights[t * stride + k], y[(t * K + k) * hidden + i], r);
        if (shared) r += shared[t * hidden + i];
        x[t * hidden + i] += r;
    }
}

}  // namespace

void launch_moe_combine(float* x, const float* y, const float* weights, int64_t stride, const float* shared,
                        int64_t n, int32_t top_k, int64_t hidden, cudaStream_t s) {
    if (n <= 0) return;
    moe_combine_kernel<<<unsigned(n), 256, 0, s>>>(x, y, weights, stride, shared, top_k, hidden);
    CETUS_CUDA_LAUNCHED("moe_combine_kernel");
}

}  // namespace cetus::cuda
