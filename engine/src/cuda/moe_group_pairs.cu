// The (token, slot) pairs p = t * top_k + k grouped by expert without a host
// round trip, as moe_forward groups them (moe.cpp): a counting sort in one
// block of 256 threads, deterministic.
#include "cuda_util.h"
#include "device_math.cuh"
#include "pdl.cuh"

namespace cetus::cuda {
namespace {

constexpr int k_pair_threads = 256;

// Counting sort of the pairs by expert in one block: counts by shared atomics,
// offsets (and the tensor-core kernels' tiles) by a serial scan, then each expert's thread lists its pairs in
// ascending pair order (deterministic).
__global__ void __launch_bounds__(k_pair_threads)
    group_pairs_kernel(const int32_t* __restrict__ ids, int64_t stride, int n_pairs, int K, int E, ExpertPairs out) {
    pdl_wait();  // first: see pdl.cuh
    pdl_trigger();
    extern __shared__ int pair_smem[];
    int* expert_of = pair_smem;        // [n_pairs]
    int* count = expert_of + n_pairs;  // [E]
    int* offset = count + E;           // [E]
    for (int p = threadIdx.x; p < n_pairs; p += blockDim.x) expert_of[p] = ids[(p / K) * stride + p % K];
    for (int e = threadIdx.x; e < E; e += blockDim.x) count[e] = 0;
    __syncthreads();
    for (int p = threadIdx.x; p < n_pairs; p += blockDim.x) atomicAdd(&count[expert_of[p]], 1);
    __syncthreads();
    if (threadIdx.x == 0) {
        int running = 0, n_active = 0, n_tiles = 0;
        for (int e = 0; e < E; ++e) {
            offset[e] = running;
            out.offsets[e] = running;
            out.counts[e] = count[e];
            running += count[e];
            if (count[e] > 0) out.active[n_active++] = e;
            for (int m0 = 0; m0 < count[e]; m0 += int(k_expert_tile_pairs)) {
                out.tiles[2 * n_tiles] = e;
                out.tiles[2 * n_tiles + 1] = m0;
                ++n_tiles;
            }
        }
        *out.n_active = n_active;
        *out.n_tiles = n_tiles;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        if (count[e] == 0) continue;
        int pos = offset[e];
        for (int p = 0; p < n_pairs; ++p)
            if (expert_of[p] == e) out.list[pos++] = p;
    }
}

}  // namespace

void launch_group_pairs(const int32_t* ids, int64_t stride, int64_t n, int32_t top_k, int32_t n_experts,
                        const ExpertPairs& pairs, cudaStream_t s) {
    if (n <= 0) return;
    const int n_pairs = int(n * top_k);
    const size_t shared = size_t(n_pairs + 2 * n_experts) * sizeof(int);
    launch_pdl(group_pairs_kernel, 1, k_pair_threads, shared, s, ids, stride, n_pairs, top_k, n_experts, pairs);
    CETUS_CUDA_LAUNCHED("group_pairs_kernel");
}

}  // namespace cetus::cuda
