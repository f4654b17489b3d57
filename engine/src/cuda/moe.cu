// DeepSeekMoE on the device (moe.cpp): route_token per token, the (token, slot)
// pairs grouped by expert without a host round trip, the routed experts as
// grouped warp-per-row products (each expert's weight rows read once per 8 of
// its pairs), and the weighted sum in ascending slot order plus the shared
// experts, added to the residual stream.
#include "cuda_util.h"
#include "device_math.cuh"

#include <algorithm>
#include <climits>

namespace cetus::cuda {
namespace {

constexpr int k_route_warps = 4;  // tokens per block
constexpr int k_pair_threads = 256;
constexpr int k_expert_rows = 8;  // output rows per block, one warp each

// std::partial_sort(order, order + keep, order + len, score[x] > score[y]) as
// libstdc++ implements it (heap select), so equal group scores keep the same
// groups as on the CPU. Only the kept set matters, so the final sort_heap is left out.
__device__ void push_heap(int* a, int hole, int top, int value, const float* score) {
    int parent = (hole - 1) / 2;
    while (hole > top && score[a[parent]] > score[value]) {
        a[hole] = a[parent];
        hole = parent;
        parent = (hole - 1) / 2;
    }
    a[hole] = value;
}

__device__ void adjust_heap(int* a, int hole, int len, int value, const float* score) {
    const int top = hole;
    int child = hole;
    while (child < (len - 1) / 2) {
        child = 2 * (child + 1);
        if (score[a[child]] > score[a[child - 1]]) child--;
        a[hole] = a[child];
        hole = child;
    }
    if ((len & 1) == 0 && child == (len - 2) / 2) {
        child = 2 * (child + 1);
        a[hole] = a[child - 1];
        hole = child - 1;
    }
    push_heap(a, hole, top, value, score);
}

__device__ void heap_select(int* a, int middle, int len, const float* score) {
    if (middle <= 0) return;
    if (middle >= 2) {
        for (int parent = (middle - 2) / 2;; --parent) {
            adjust_heap(a, parent, middle, a[parent], score);
            if (parent == 0) break;
        }
    }
    for (int i = middle; i < len; ++i) {
        if (score[a[i]] > score[a[0]]) {  // __pop_heap(first, middle, i)
            const int value = a[i];
            a[i] = a[0];
            adjust_heap(a, 0, middle, value, score);
        }
    }
}

// The CPU's expert order: higher choice first, equal choices by lower id.
__device__ __forceinline__ bool better(float c, int id, float best_c, int best_id) {
    return c > best_c || (c == best_c && id < best_id);
}

// One warp per token; per-warp shared memory: scores [E], choice [E], group
// scores [G], group order [G], kept flags [G], chosen ids [K].
__global__ void __launch_bounds__(32 * k_route_warps)
    route_kernel(const float* __restrict__ z, int64_t n, RouteParams p, int32_t* __restrict__ ids,
                 float* __restrict__ weights, int64_t stride) {
    extern __shared__ float route_smem[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t t = int64_t(blockIdx.x) * k_route_warps + warp;
    if (t >= n) return;  // the kernel synchronises warps only
    const int E = p.n_experts, G = p.n_group, K = p.top_k;
    float* s = route_smem + int64_t(warp) * (2 * E + 3 * G + K);
    float* choice = s + E;
    float* group_score = choice + E;
    int* group_order = reinterpret_cast<int*>(group_score + G);
    int* group_kept = group_order + G;
    int* chosen = group_kept + G;
    const float* zt = z + t * E;  // [E]

    if (p.sigmoid) {
        for (int e = lane; e < E; e += 32) s[e] = 1.0f / (1.0f + expf(-zt[e]));
    } else {  // cpu::softmax: max, exp, the sum in index order, times the reciprocal
        float mx = -INFINITY;
        for (int e = lane; e < E; e += 32) mx = fmaxf(mx, zt[e]);
        mx = warp_max(mx);
        for (int e = lane; e < E; e += 32) s[e] = expf(zt[e] - mx);
        __syncwarp();
        float inv = 0.0f;
        if (lane == 0) {
            float sum = 0.0f;
            for (int e = 0; e < E; ++e) sum += s[e];
            inv = 1.0f / sum;
        }
        inv = __shfl_sync(k_full_mask, inv, 0);
        __syncwarp();  // lane 0 has read every score before any is scaled
        for (int e = lane; e < E; e += 32) s[e] *= inv;
    }
    for (int e = lane; e < E; e += 32) choice[e] = s[e] + (p.bias ? p.bias[e] : 0.0f);
    __syncwarp();

    if (p.method != 0 && G > 1) {
        const int per = E / G;
        for (int g = lane; g < G; g += 32) {
            const float* cg = choice + g * per;
            if (p.method == 2) {  // noaux_tc: sum of the two best
                float a = -INFINITY, b = -INFINITY;
                for (int i = 0; i < per; ++i) {
                    if (cg[i] > a) {
                        b = a;
                        a = cg[i];
                    } else if (cg[i] > b) {
                        b = cg[i];
                    }
                }
                group_score[g] = a + b;
            } else {  // group_limited_greedy: the best (std::max_element)
                float best = cg[0];
                for (int i = 1; i < per; ++i)
                    if (best < cg[i]) best = cg[i];
                group_score[g] = best;
            }
        }
        __syncwarp();
        if (lane == 0) {
            for (int g = 0; g < G; ++g) {
                group_order[g] = g;
                group_kept[g] = 0;
            }
            heap_select(group_order, p.topk_group, G, group_score);
            for (int i = 0; i < p.topk_group; ++i) group_kept[group_order[i]] = 1;
        }
        __syncwarp();
        for (int e = lane; e < E; e += 32)
            if (!group_kept[e / per]) choice[e] = -INFINITY;
        __syncwarp();
    }

    // Top K by (choice desc, id asc): K rounds of a warp arg-max; lane l owns
    // experts l, l + 32, ... and marks the ones already taken in a bit mask.
    uint32_t taken = 0;
    for (int k = 0; k < K; ++k) {
        float best_c = -INFINITY;
        int best_id = INT_MAX;
        for (int i = 0, e = lane; e < E; ++i, e += 32)
            if (!((taken >> i) & 1u) && better(choice[e], e, best_c, best_id)) {
                best_c = choice[e];
                best_id = e;
            }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            const float oc = __shfl_xor_sync(k_full_mask, best_c, off);
            const int oid = __shfl_xor_sync(k_full_mask, best_id, off);
            if (better(oc, oid, best_c, best_id)) {
                best_c = oc;
                best_id = oid;
            }
        }
        // best_id stays INT_MAX only if NaN choices left fewer than K candidates;
        // expert 0 then stands in, keeping every index in range.
        if (best_id >= E) best_id = 0;
        else if ((best_id & 31) == lane) taken |= 1u << (best_id >> 5);
        if (lane == 0) chosen[k] = best_id;
    }
    __syncwarp();
    if (lane == 0) {
        for (int k = 1; k < K; ++k) {  // ids ascending
            const int v = chosen[k];
            int j = k;
            for (; j > 0 && chosen[j - 1] > v; --j) chosen[j] = chosen[j - 1];
            chosen[j] = v;
        }
        float sum = 0.0f;
        for (int k = 0; k < K; ++k) sum += s[chosen[k]];  // unbiased scores
        for (int k = 0; k < K; ++k) {
            float w = s[chosen[k]];
            if (p.normalise) w /= (sum + 1e-20f);
            w *= p.scaling;
            ids[t * stride + k] = chosen[k];
            weights[t * stride + k] = w;
        }
    }
}

// Counting sort of the pairs by expert in one block: counts by shared atomics,
// offsets by a serial scan, then each expert's thread lists its pairs in
// ascending pair order (deterministic).
__global__ void __launch_bounds__(k_pair_threads)
    group_pairs_kernel(const int32_t* __restrict__ ids, int64_t stride, int n_pairs, int K, int E, ExpertPairs out) {
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
        int running = 0, n_active = 0;
        for (int e = 0; e < E; ++e) {
            offset[e] = running;
            out.offsets[e] = running;
            out.counts[e] = count[e];
            running += count[e];
            if (count[e] > 0) out.active[n_active++] = e;
        }
        *out.n_active = n_active;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        if (count[e] == 0) continue;
        int pos = offset[e];
        for (int p = 0; p < n_pairs; ++p)
            if (expert_of[p] == e) out.list[pos++] = p;
    }
}

struct ExpertLaunch {
    const DeviceMatrix* first;   // gate (or down)
    const DeviceMatrix* second;  // up (unused by down)
    ExpertPairs pairs;
    const float* x;  // rows of width cols: x[t] (gate/up) or h[p] (down)
    float* out;      // [n * K, rows]
    int32_t top_k;
    int64_t rows, cols;
};

// Pair p's input row: token p / K for gate/up, the pair's own row for down.
// NT pairs per pass over the rows: a token routes at most one pair to an
// expert, so NT >= min(n, 8) covers the decode case in a single pass with
// few registers; more pairs take several passes.
template <DeviceDtype DT, int NT, bool kXVec, bool kGateUp>
__global__ void __launch_bounds__(32 * k_expert_rows) experts_kernel(ExpertLaunch a) {
    if (int(blockIdx.y) >= *a.pairs.n_active) return;
    const int e = a.pairs.active[blockIdx.y];
    const int64_t row = int64_t(blockIdx.x) * k_expert_rows + (threadIdx.x >> 5);
    if (row >= a.rows) return;
    const DeviceMatrix w1 = a.first[e];
    const int count = a.pairs.counts[e], first = a.pairs.offsets[e];
    for (int c0 = 0; c0 < count; c0 += NT) {
        const int np = min(NT, count - c0);
        int pair[NT];
        const float* xs[NT];
#pragma unroll
        for (int j = 0; j < NT; ++j) {
            pair[j] = j < np ? a.pairs.list[first + c0 + j] : 0;
            xs[j] = a.x + int64_t(kGateUp ? pair[j] / a.top_k : pair[j]) * a.cols;
        }
        float v1[NT] = {};
        warp_row_dot<DT, NT, kXVec>(w1, row, xs, np, v1);
        if constexpr (kGateUp) {
            const DeviceMatrix w2 = a.second[e];
            float v2[NT] = {};
            warp_row_dot<DT, NT, kXVec>(w2, row, xs, np, v2);
#pragma unroll
            for (int j = 0; j < NT; ++j) v1[j] = v1[j] / (1.0f + expf(-v1[j])) * v2[j];  // silu(g) * u
        }
        if ((threadIdx.x & 31) == 0) {
#pragma unroll
            for (int j = 0; j < NT; ++j)
                if (j < np) a.out[int64_t(pair[j]) * a.rows + row] = v1[j];
        }
    }
}

template <DeviceDtype DT, int NT, bool kGateUp>
void launch_experts_nt(const ExpertLaunch& a, const dim3& grid, bool x_vec, cudaStream_t s) {
    if (x_vec) experts_kernel<DT, NT, true, kGateUp><<<grid, 32 * k_expert_rows, 0, s>>>(a);
    else experts_kernel<DT, NT, false, kGateUp><<<grid, 32 * k_expert_rows, 0, s>>>(a);
}

template <DeviceDtype DT, bool kGateUp>
void launch_experts_dtype(const ExpertLaunch& a, const dim3& grid, bool x_vec, int64_t n, cudaStream_t s) {
    if (n == 1) launch_experts_nt<DT, 1, kGateUp>(a, grid, x_vec, s);
    else if (n == 2) launch_experts_nt<DT, 2, kGateUp>(a, grid, x_vec, s);
    else if (n <= 4) launch_experts_nt<DT, 4, kGateUp>(a, grid, x_vec, s);
    else launch_experts_nt<DT, 8, kGateUp>(a, grid, x_vec, s);
}

template <bool kGateUp>
void launch_experts(const ExpertLaunch& a, DeviceDtype dtype, int64_t n, int32_t n_experts, cudaStream_t s) {
    // Blocks past the active count return at once; at most min(E, n * K) experts are active.
    const dim3 grid(unsigned((a.rows + k_expert_rows - 1) / k_expert_rows),
                    unsigned(std::min<int64_t>(n_experts, n * a.top_k)));
    const bool x_vec = a.cols % 4 == 0 && reinterpret_cast<uintptr_t>(a.x) % 16 == 0;
    switch (dtype) {
    case DeviceDtype::F32: launch_experts_dtype<DeviceDtype::F32, kGateUp>(a, grid, x_vec, n, s); break;
    case DeviceDtype::BF16: launch_experts_dtype<DeviceDtype::BF16, kGateUp>(a, grid, x_vec, n, s); break;
    case DeviceDtype::F8_E4M3: launch_experts_dtype<DeviceDtype::F8_E4M3, kGateUp>(a, grid, x_vec, n, s); break;
    }
    CETUS_CUDA_LAUNCHED("experts_kernel");
}

// Per element: sum_k w_k y_k from 0 in ascending k (cpu::axpy), plus the shared
// experts, then the residual add of block_forward.
__global__ void moe_combine_kernel(float* __restrict__ x, const float* __restrict__ y,
                                   const float* __restrict__ weights, int64_t stride,
                                   const float* __restrict__ shared, int32_t K, int64_t hidden) {
    const int64_t t = blockIdx.x;
    for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
        float r = 0.0f;
        for (int k = 0; k < K; ++k) r = fmaf(weights[t * stride + k], y[(t * K + k) * hidden + i], r);
        if (shared) r += shared[t * hidden + i];
        x[t * hidden + i] += r;
    }
}

}  // namespace

void launch_route(const float* z, int64_t n, const RouteParams& p, int32_t* ids, float* weights, int64_t stride,
                  cudaStream_t s) {
    if (n <= 0) return;
    const size_t shared = size_t(k_route_warps) * size_t(2 * p.n_experts + 3 * p.n_group + p.top_k) * 4;
    route_kernel<<<unsigned((n + k_route_warps - 1) / k_route_warps), 32 * k_route_warps, shared, s>>>(
        z, n, p, ids, weights, stride);
    CETUS_CUDA_LAUNCHED("route_kernel");
}

void launch_group_pairs(const int32_t* ids, int64_t stride, int64_t n, int32_t top_k, int32_t n_experts,
                        const ExpertPairs& pairs, cudaStream_t s) {
    if (n <= 0) return;
    const int n_pairs = int(n * top_k);
    const size_t shared = size_t(n_pairs + 2 * n_experts) * sizeof(int);
    group_pairs_kernel<<<1, k_pair_threads, shared, s>>>(ids, stride, n_pairs, top_k, n_experts, pairs);
    CETUS_CUDA_LAUNCHED("group_pairs_kernel");
}

void launch_experts_gate_up(const DeviceExperts& e, const ExpertPairs& pairs, const float* x, int64_t n,
                            int32_t top_k, int64_t hidden, int32_t n_experts, float* h, cudaStream_t s) {
    if (n <= 0) return;
    launch_experts<true>(ExpertLaunch{e.gate, e.up, pairs, x, h, top_k, e.inter, hidden}, e.gate_up_dtype, n,
                         n_experts, s);
}

void launch_experts_down(const DeviceExperts& e, const ExpertPairs& pairs, const float* h, int64_t n,
                         int32_t top_k, int64_t hidden, int32_t n_experts, float* y, cudaStream_t s) {
    if (n <= 0) return;
    launch_experts<false>(ExpertLaunch{e.down, nullptr, pairs, h, y, top_k, hidden, e.inter}, e.down_dtype, n,
                          n_experts, s);
}

void launch_moe_combine(float* x, const float* y, const float* weights, int64_t stride, const float* shared,
                        int64_t n, int32_t top_k, int64_t hidden, cudaStream_t s) {
    if (n <= 0) return;
    moe_combine_kernel<<<unsigned(n), 256, 0, s>>>(x, y, weights, stride, shared, top_k, hidden);
    CETUS_CUDA_LAUNCHED("moe_combine_kernel");
}

}  // namespace cetus::cuda
