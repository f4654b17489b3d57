// SwiGLU: g[i] = silu(g[i]) * u[i], cpu::silu (cpu/ops.h) times up as in
// mlp_forward (moe.cpp). Grid-stride loop, elementwise_blocks(count) blocks
// of 256.
#include "cuda_util.h"
#include "device_math.cuh"
#include "launch_util.cuh"

namespace cetus::cuda {
namespace {

// cpu::silu(g) * u with silu(z) = z / (1 + exp(-z)).
__global__ void silu_mul_kernel(float* __restrict__ g, const float* __restrict__ u, int64_t count) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
        const float z = g[i];
        g[i] = z / (1.0f + expf(-z)) * u[i];
    }
}

}  // namespace

void launch_silu_mul(float* g, const float* u, int64_t count, cudaStream_t s) {
    if (count <= 0) return;
    silu_mul_kernel<<<elementwise_blocks(count), 256, 0, s>>>(g, u, count);
    CETUS_CUDA_LAUNCHED("silu_mul_kernel");
}

}  // namespace cetus::cuda
