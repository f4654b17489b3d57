// x += r, then out = rmsnorm(x): the residual adds of Model::block_forward
// (model.cpp) fused with the cpu::rmsnorm_rows that follows each (cpu/ops.cpp):
// after attention the post-attention norm, after a dense MLP the next layer's
// input norm or the final norm. The same expression as rmsnorm.cu. One block of
// k_row_threads per row (add_rmsnorm_row, row_kernels.cuh; decode batches do the
// same in the preceding product's launch, launch_matvec_add_rmsnorm).
#include "cuda_util.h"
#include "device_math.cuh"
#include "pdl.cuh"
#include "row_kernels.cuh"

namespace cetus::cuda {
namespace {

__global__ void __launch_bounds__(k_row_threads)
    add_rmsnorm_kernel(float* x, const float* r, const float* w, float eps, int64_t n, float* out) {
    pdl_wait();  // first: see pdl.cuh
    __shared__ float scratch[32];
    add_rmsnorm_row(x, r, w, eps, n, out, blockIdx.x, scratch);
}

}  // namespace

void launch_add_rmsnorm(float* x, const float* r, const float* w, float eps, int64_t n_rows, int64_t n, float* out,
                        cudaStream_t s) {
    if (n_rows <= 0) return;
    launch_pdl(add_rmsnorm_kernel, unsigned(n_rows), k_row_threads, 0, s, x, r, w, eps, n, out);
    CETUS_CUDA_LAUNCHED("add_rmsnorm_kernel");
}

}  // namespace cetus::cuda
