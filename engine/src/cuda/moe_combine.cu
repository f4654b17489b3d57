// x[t, :] += sum_k weights[t, k] * y[t * top_k + k, :] + shared[t, :]:
// moe_forward's weighted sum in ascending slot order plus the shared experts
// (moe.cpp), then the residual add of Model::block_forward (model.cpp), fused
// with the RMSNorm that follows it (rmsnorm.cu's expression and summation
// order, so the same bits as a separate launch). One block of k_row_threads per token.
#include "cuda_util.h"
#include "device_math.cuh"
#include "pdl.cuh"
#include "row_kernels.cuh"

namespace cetus::cuda {
namespace {

// Per element: sum_k w_k y_k from 0 in ascending k (cpu::axpy), plus the shared
// experts, then the residual add of block_forward; each thread then normalises
// the elements it wrote.
__global__ void __launch_bounds__(k_row_threads)
    moe_combine_kernel(float* __restrict__ x, const float* __restrict__ y, const float* __restrict__ weights,
                       int64_t stride, const float* __restrict__ shared, int32_t K, int64_t hidden,
                       const float* __restrict__ norm_w, float eps, float* __restrict__ out) {
    pdl_wait();  // first: see pdl.cuh
    pdl_trigger();
    __shared__ float scratch[32];
    const int64_t t = blockIdx.x;
    float* xr = x + t * hidden;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
        float r = 0.0f;
        for (int k = 0; k < K; ++k) r = fmaf(weights[t * stride + k], y[(t * K + k) * hidden + i], r);
        if (shared) r += shared[t * hidden + i];
        const float v = xr[i] + r;
        xr[i] = v;
        ss = fmaf(v, v, ss);
    }
    const float s = rms_scale(block_sum(ss, scratch), hidden, eps);
    float* o = out + t * hidden;
    for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) o[i] = norm_w[i] * (xr[i] * s);
}

}  // namespace

void launch_moe_combine(float* x, const float* y, const float* weights, int64_t stride, const float* shared,
                        int64_t n, int32_t top_k, int64_t hidden, const float* norm_w, float eps, float* out,
                        cudaStream_t s) {
    if (n <= 0) return;
    launch_pdl(moe_combine_kernel, unsigned(n), k_row_threads, 0, s, x, y, weights, stride, shared, top_k, hidden,
               norm_w, eps, out);
    CETUS_CUDA_LAUNCHED("moe_combine_kernel");
}

}  // namespace cetus::cuda
