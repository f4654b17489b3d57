// x[t, :] += sum_k weights[t, k] * y[t * top_k + k, :] + shared[t, :]:
// moe_forward's weighted sum in ascending slot order plus the shared experts
// (moe.cpp), then the residual add of Model::block_forward (model.cpp), fused
// with the RMSNorm that follows it (rmsnorm.cu's expression and summation
// order, so the same bits as a separate launch). One block of k_row_threads per
// token; decode batches do the same in the expert down launch (moe_combine.cuh).
#include "cuda_util.h"
#include "device_math.cuh"
#include "moe_combine.cuh"
#include "pdl.cuh"
#include "row_kernels.cuh"

namespace cetus::cuda {
namespace {

__global__ void __launch_bounds__(k_row_threads) moe_combine_kernel(MoeCombine c, const float* y, int32_t K,
                                                                    int64_t hidden) {
    pdl_wait();  // first: see pdl.cuh
    __shared__ float scratch[32];
    combine_row(c, blockIdx.x, y, K, hidden, scratch);
}

}  // namespace

void launch_moe_combine(const MoeCombine& c, const float* y, int64_t n, int32_t top_k, int64_t hidden,
                        cudaStream_t s) {
    if (n <= 0) return;
    launch_pdl(moe_combine_kernel, unsigned(n), k_row_threads, 0, s, c, y, top_k, hidden);
    CETUS_CUDA_LAUNCHED("moe_combine_kernel");
}

}  // namespace cetus::cuda
