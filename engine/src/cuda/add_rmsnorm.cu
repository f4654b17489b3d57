// x += r, then out = rmsnorm(x): the residual adds of Model::block_forward
// (model.cpp) fused with the cpu::rmsnorm_rows that follows each (cpu/ops.cpp):
// after attention the post-attention norm, after a dense MLP the next layer's
// input norm or the final norm. The same expression as rmsnorm.cu. One block of
// k_row_threads per row.
#include "cuda_util.h"
#include "device_math.cuh"
#include "pdl.cuh"
#include "row_kernels.cuh"

namespace cetus::cuda {
namespace {

__global__ void __launch_bounds__(k_row_threads)
    add_rmsnorm_kernel(float* __restrict__ x, const float* __restrict__ r, const float* __restrict__ w, float eps,
                       int64_t n, float* __restrict__ out) {
    pdl_wait();  // first: see pdl.cuh
    pdl_trigger();
    __shared__ float scratch[32];
    float* xr = x + int64_t(blockIdx.x) * n;
    const float* rr = r + int64_t(blockIdx.x) * n;
    float* o = out + int64_t(blockIdx.x) * n;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = xr[i] + rr[i];
        xr[i] = v;
        ss = fmaf(v, v, ss);
    }
    const float s = rms_scale(block_sum(ss, scratch), n, eps);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) o[i] = w[i] * (xr[i] * s);
}

}  // namespace

void launch_add_rmsnorm(float* x, const float* r, const float* w, float eps, int64_t n_rows, int64_t n, float* out,
                        cudaStream_t s) {
    if (n_rows <= 0) return;
    launch_pdl(add_rmsnorm_kernel, unsigned(n_rows), k_row_threads, 0, s, x, r, w, eps, n, out);
    CETUS_CUDA_LAUNCHED("add_rmsnorm_kernel");
}

}  // namespace cetus::cuda
