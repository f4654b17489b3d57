// x[i] += r[i]: the residual add after a dense MLP in Model::block_forward
// (model.cpp); after attention it is fused into add_rmsnorm.cu, after MoE into
// moe_combine.cu. Grid-stride loop, elementwise_blocks(count) blocks of 256.
#include "cuda_util.h"
#include "device_math.cuh"
#include "launch_util.cuh"

namespace cetus::cuda {
namespace {

__global__ void add_kernel(float* __restrict__ x, const float* __restrict__ r, int64_t count) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x)
        x[i] += r[i];
}

}  // namespace

void launch_add(float* x, const float* r, int64_t count, cudaStream_t s) {
    if (count <= 0) return;
    add_kernel<<<elementwise_blocks(count), 256, 0, s>>>(x, r, count);
    CETUS_CUDA_LAUNCHED("add_kernel");
}

}  // namespace cetus::cuda
