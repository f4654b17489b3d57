// Token choice, sampling: a draw from each processed distribution with the
// host's random number for that row (Sampler::draw).
#include "choice_util.cuh"
#include "cuda_util.h"
#include "kernels.h"

namespace cetus::cuda {
namespace {

struct RowWeight {
    const float* p;
    __device__ float operator()(int64_t i) const { return p[i]; }
};

__global__ void __launch_bounds__(k_choice_threads)
    choice_draw_kernel(const float* probs, int64_t V, const double* u, int32_t* ids) {
    __shared__ ChoiceShared sh;
    const int64_t r = blockIdx.x;
    const int32_t id = block_draw(RowWeight{probs + r * V}, V, u[r], sh);
    if (threadIdx.x == 0) ids[r] = id;
}

}  // namespace

void launch_choice_draw(const float* probs, int64_t n, int64_t vocab, const double* u, int32_t* ids,
                        cudaStream_t s) {
    if (n <= 0) return;
    choice_draw_kernel<<<unsigned(n), k_choice_threads, 0, s>>>(probs, vocab, u, ids);
    CETUS_CUDA_LAUNCHED("choice_draw_kernel");
}

}  // namespace cetus::cuda
