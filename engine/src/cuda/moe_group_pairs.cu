// The (token, slot) pairs p = t * top_k + k grouped by expert without a host
// round trip, as moe_forward groups them (moe.cpp): a counting sort in one
// block of 256 threads, deterministic.
#include "cuda_util.h"
#include "device_math.cuh"
#include "moe_group_pairs.cuh"
#include "pdl.cuh"

namespace cetus::cuda {
namespace {

// One block: the grouping of group_pairs_block.
__global__ void __launch_bounds__(k_group_threads)
    group_pairs_kernel(const int32_t* ids, int64_t stride, int n_pairs, int K, int E, ExpertPairs out) {
    pdl_wait();  // first: see pdl.cuh
    extern __shared__ int pair_smem[];
    group_pairs_block<true>(ids, stride, n_pairs, K, E, out, pair_smem);
}

}  // namespace

void launch_group_pairs(const int32_t* ids, int64_t stride, int64_t n, int32_t top_k, int32_t n_experts,
                        const ExpertPairs& pairs, cudaStream_t s) {
    if (n <= 0) return;
    const int n_pairs = int(n * top_k);
    const size_t shared = size_t(n_pairs + 2 * n_experts) * sizeof(int);
    launch_pdl(group_pairs_kernel, 1, k_group_threads, shared, s, ids, stride, n_pairs, top_k, n_experts, pairs);
    CETUS_CUDA_LAUNCHED("group_pairs_kernel");
}

}  // namespace cetus::cuda
