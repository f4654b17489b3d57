// Token choice, greedy: the argmax of each work row over [0, n_valid), the
// first id among equal maxima (std::max_element, as Sampler::argmax).
#include "choice_util.cuh"
#include "cuda_util.h"
#include "kernels.h"

namespace cetus::cuda {
namespace {

struct Best {
    float v;
    int64_t i;
};
struct BetterOf {
    __device__ Best operator()(const Best& a, const Best& b) const {
        return a.v > b.v || (a.v == b.v && a.i < b.i) ? a : b;
    }
};

__global__ void __launch_bounds__(k_choice_threads) choice_argmax_kernel(ChoiceParams p, const float* work,
                                                                         int32_t* ids) {
    __shared__ cub::BlockReduce<Best, k_choice_threads>::TempStorage temp;
    const int64_t r = blockIdx.x;
    const float* w = work + r * p.vocab;
    Best best{-INFINITY, k_no_index};
    for (int64_t i = threadIdx.x; i < p.n_valid; i += blockDim.x) {  // ascending: a thread keeps its first maximum
        const float x = w[i];
        if (best.i == k_no_index || x > best.v) best = Best{x, i};
    }
    const Best all = cub::BlockReduce<Best, k_choice_threads>(temp).Reduce(best, BetterOf{});
    if (threadIdx.x == 0) ids[r] = int32_t(all.i == k_no_index ? 0 : all.i);
}

}  // namespace

void launch_choice_argmax(int64_t n, const ChoiceParams& p, const ChoiceBuffers& b, int32_t* ids, cudaStream_t s) {
    if (n <= 0) return;
    choice_argmax_kernel<<<unsigned(n), k_choice_threads, 0, s>>>(p, b.work, ids);
    CETUS_CUDA_LAUNCHED("choice_argmax_kernel");
}

}  // namespace cetus::cuda
