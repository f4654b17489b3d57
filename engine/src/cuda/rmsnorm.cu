// RMSNorm of rows, out may alias x: cpu::rmsnorm's expression (cpu/ops.cpp),
// x / sqrt(mean(x^2) + eps) * w with the reciprocal taken once; mirrors
// cpu::rmsnorm_rows. One block of k_row_threads per row, rows ldx/ldo apart.
#include "cuda_util.h"
#include "device_math.cuh"
#include "pdl.cuh"
#include "row_kernels.cuh"

namespace cetus::cuda {
namespace {

// x and out may alias: each thread reads and writes only its own elements.
__global__ void __launch_bounds__(k_row_threads)
    rmsnorm_kernel(const float* x, int64_t ldx, const float* __restrict__ w, float eps, int64_t n, float* out,
                   int64_t ldo) {
    pdl_wait();  // first: see pdl.cuh
    __shared__ float scratch[32];
    const float* xr = x + int64_t(blockIdx.x) * ldx;
    float* o = out + int64_t(blockIdx.x) * ldo;
    float ss = 0.0f;
#pragma unroll 4
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss = fmaf(xr[i], xr[i], ss);
    norm_scaled_row(xr, w, rms_scale(block_sum(ss, scratch), n, eps), n, o, blockDim.x);
}

}  // namespace

void launch_rmsnorm(const float* x, int64_t ldx, const float* w, float eps, int64_t n_rows, int64_t n, float* out,
                    int64_t ldo, cudaStream_t s) {
    if (n_rows <= 0) return;
    launch_pdl(rmsnorm_kernel, unsigned(n_rows), k_row_threads, 0, s, x, ldx, w, eps, n, out, ldo);
    CETUS_CUDA_LAUNCHED("rmsnorm_kernel");
}

}  // namespace cetus::cuda
