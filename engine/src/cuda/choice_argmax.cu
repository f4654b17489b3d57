// Token choice, greedy: the argmax of each row over [0, n_valid), the first id
// among equal maxima (std::max_element, as Sampler::argmax). 32 blocks share a
// row (ascending slices), each writes its best; one warp per row merges them
// with a butterfly under a total order (value descending, then id ascending),
// so the result does not depend on timing or merge order.
#include "choice_util.cuh"
#include "cuda_util.h"
#include "kernels.h"
#include "pdl.cuh"

namespace cetus::cuda {
namespace {

constexpr int k_argmax_blocks = 32;  // per row; one warp merges them
constexpr int k_argmax_threads = 256;

struct Best {
    float v;
    int64_t i;
};
struct BetterOf {
    __device__ Best operator()(const Best& a, const Best& b) const {
        return a.v > b.v || (a.v == b.v && a.i < b.i) ? a : b;
    }
};

__global__ void __launch_bounds__(k_argmax_threads)
    choice_argmax_partial_kernel(const float* src, ChoiceParams p, Best* partial) {
    pdl_wait();  // first: see pdl.cuh
    __shared__ cub::BlockReduce<Best, k_argmax_threads>::TempStorage temp;
    const int64_t r = blockIdx.y, b = blockIdx.x;
    const int64_t slice = ceil_div(p.n_valid, int64_t(k_argmax_blocks));
    const int64_t i0 = b * slice, i1 = min(p.n_valid, i0 + slice);
    const float* w = src + r * p.vocab;
    Best best{-INFINITY, k_no_index};
#pragma unroll 4
    for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {  // ascending: a thread keeps its first maximum
        const float x = w[i];
        if (best.i == k_no_index || x > best.v) best = Best{x, i};
    }
    const Best all = cub::BlockReduce<Best, k_argmax_threads>(temp).Reduce(best, BetterOf{});
    if (threadIdx.x == 0) partial[r * k_argmax_blocks + b] = all;
}

__global__ void choice_argmax_merge_kernel(const Best* partial, int32_t* ids) {
    pdl_wait();  // first: see pdl.cuh
    const int64_t r = blockIdx.x;
    Best best = partial[r * k_argmax_blocks + threadIdx.x];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        Best other;
        other.v = __shfl_xor_sync(0xffffffffu, best.v, off);
        other.i = __shfl_xor_sync(0xffffffffu, best.i, off);
        best = BetterOf{}(best, other);
    }
    if (threadIdx.x == 0) ids[r] = int32_t(best.i == k_no_index ? 0 : best.i);
}

}  // namespace

size_t choice_argmax_partial_bytes(int64_t rows) { return size_t(rows * k_argmax_blocks) * sizeof(Best); }

void launch_choice_argmax(const float* src, int64_t n, const ChoiceParams& p, const ChoiceBuffers& b, int32_t* ids,
                          cudaStream_t s) {
    if (n <= 0) return;
    static_assert(k_argmax_blocks == 32, "one lane per partial in the merge");
    ChoiceParams q = p;
    q.n_valid = std::clamp<int64_t>(p.n_valid, 1, p.vocab);
    Best* partial = static_cast<Best*>(b.argmax_partial);
    launch_pdl(choice_argmax_partial_kernel, dim3(k_argmax_blocks, unsigned(n)), k_argmax_threads, 0, s, src, q,
               partial);
    CETUS_CUDA_LAUNCHED("choice_argmax_partial_kernel");
    launch_pdl(choice_argmax_merge_kernel, unsigned(n), 32, 0, s, partial, ids);
    CETUS_CUDA_LAUNCHED("choice_argmax_merge_kernel");
}

}  // namespace cetus::cuda
