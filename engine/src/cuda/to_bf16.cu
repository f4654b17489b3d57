// out[r, c] = bf16(x[r, c]) rounded to nearest even: the fp32 -> bf16
// rounding of the activations that feeds cuBLAS (gemm.cpp); the CPU keeps
// them in fp32 (cpu::matmul). Split: also the remainder, rounded the same way. Grid-stride loop, elementwise_blocks(rows * cols)
// blocks of 256.
#include "cuda_util.h"
#include "device_math.cuh"
#include "launch_util.cuh"

namespace cetus::cuda {
namespace {

// hi = bf16(x) and, when lo is given, lo = bf16(x - hi): hi + lo carries x to
// about 2^-17 relative.
__global__ void to_bf16_kernel(const float* __restrict__ x, int64_t ldx, int64_t n_rows, int64_t cols,
                               uint16_t* __restrict__ hi, uint16_t* __restrict__ lo, int64_t ldo) {
    const int64_t total = n_rows * cols;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t r = i / cols, c = i % cols;
        const float v = x[r * ldx + c];
        const __nv_bfloat16 h = __float2bfloat16_rn(v);
        hi[r * ldo + c] = __bfloat16_as_ushort(h);
        if (lo) lo[r * ldo + c] = __bfloat16_as_ushort(__float2bfloat16_rn(v - __bfloat162float(h)));
    }
}

}  // namespace

void launch_to_bf16_split(const float* x, int64_t ldx, int64_t n_rows, int64_t cols, uint16_t* hi, uint16_t* lo,
                          int64_t ldo, cudaStream_t s) {
    if (n_rows <= 0 || cols <= 0) return;
    to_bf16_kernel<<<elementwise_blocks(n_rows * cols), 256, 0, s>>>(x, ldx, n_rows, cols, hi, lo, ldo);
    CETUS_CUDA_LAUNCHED("to_bf16_kernel");
}

void launch_to_bf16(const float* x, int64_t ldx, int64_t n_rows, int64_t cols, uint16_t* out, int64_t ldo,
                    cudaStream_t s) {
    launch_to_bf16_split(x, ldx, n_rows, cols, out, nullptr, ldo, s);
}

}  // namespace cetus::cuda
