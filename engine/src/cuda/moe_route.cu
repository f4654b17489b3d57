// The MoE gate: route_token (moe.cpp) for every token, sigmoid or softmax
// scores, the correction bias, group top-k and top-k with the CPU's tie rules;
// ids and weights stay on the device. One warp per token, 4 tokens per block,
// per-warp scratch in dynamic shared memory; for small batches one block routes
// every token and then groups the pairs (moe_group_pairs.cuh) in the same launch,
// or the router product's blocks do and their last block routes and groups.
#include "cuda_util.h"
#include "device_math.cuh"
#include "last_block.cuh"
#include "moe_group_pairs.cuh"
#include "pdl.cuh"

#include <climits>

namespace cetus::cuda {
namespace {

constexpr int k_route_warps = 4;  // tokens per block

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

// route_token for token t by one warp; s: the warp's shared memory, scores [E],
// choice [E], group scores [G], group order [G], kept flags [G], chosen ids [K].
__device__ void route_one(const float* __restrict__ z, int64_t t, const RouteParams& p, float* s, int32_t* ids,
                          float* __restrict__ weights, int64_t stride) {
    const int lane = threadIdx.x & 31;
    const int E = p.n_experts, G = p.n_group, K = p.top_k;
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
    __syncwarp();  // lane 0 has read s before the warp's next token overwrites it
}

__host__ __device__ inline int64_t route_warp_floats(const RouteParams& p) { return 2 * p.n_experts + 3 * p.n_group + p.top_k; }

// One warp per token, k_route_warps tokens per block.
__global__ void __launch_bounds__(32 * k_route_warps)
    route_kernel(const float* __restrict__ z, int64_t n, RouteParams p, int32_t* __restrict__ ids,
                 float* __restrict__ weights, int64_t stride) {
    pdl_wait();  // first: see pdl.cuh
    extern __shared__ float route_smem[];
    const int warp = threadIdx.x >> 5;
    const int64_t t = int64_t(blockIdx.x) * k_route_warps + warp;
    if (t >= n) return;  // the kernel synchronises warps only
    route_one(z, t, p, route_smem + int64_t(warp) * route_warp_floats(p), ids, weights, stride);
}

// The routes of tokens 0 .. n-1 of z [n, E] by the warps of one block of
// k_group_threads, then their pairs grouped by the same block (launch_group_pairs'
// code, without the tensor-core tiles: small batches take the fp32 expert kernel).
// smem: every warp's routing scratch, then the grouping's (route_group_shared).
__device__ void route_and_group(const float* z, int64_t n, const RouteParams& p, int32_t* ids, float* weights,
                                int64_t stride, const ExpertPairs& pairs, float* smem) {
    constexpr int n_warps = k_group_threads / 32;  // as route_group_shared sizes the scratch
    const int warp = threadIdx.x >> 5;
    float* mine = smem + int64_t(warp) * route_warp_floats(p);
    for (int64_t t = warp; t < n; t += n_warps) route_one(z, t, p, mine, ids, weights, stride);
    __syncthreads();  // the block's global writes of ids are visible to the block
    group_pairs_block<false>(ids, stride, int(n * p.top_k), p.top_k, p.n_experts, pairs,
                             reinterpret_cast<int*>(smem + int64_t(n_warps) * route_warp_floats(p)));
}

// Small batches (decode, verify): routing and grouping in one launch instead of two.
__global__ void __launch_bounds__(k_group_threads)
    route_group_kernel(const float* __restrict__ z, int64_t n, RouteParams p, int32_t* ids,
                       float* __restrict__ weights, int64_t stride, ExpertPairs pairs) {
    pdl_wait();  // first: see pdl.cuh
    extern __shared__ float route_smem[];
    route_and_group(z, n, p, ids, weights, stride, pairs, route_smem);
}

// The router product with the routing and grouping of small batches: z = x W^T
// with launch_matvec's sums for a narrow matrix (k_router_split warps per row,
// partials added in warp order: the same bits), each block taking
// k_router_rows_per_block rows for every token; the last block to finish copies z
// into shared memory and runs route_group_kernel's code on it (last_block.cuh).
constexpr int k_router_split = k_matvec_narrow_split;
constexpr int k_router_rows_per_block = k_group_threads / 32 / k_router_split;

template <DeviceDtype DT, int NT, bool kXVec>
__global__ void __launch_bounds__(k_group_threads)
    router_route_group_kernel(DeviceMatrix w, const float* __restrict__ x, int64_t ldx, int64_t n, float* z,
                              RouteParams p, int32_t* ids, float* __restrict__ weights, int64_t stride,
                              ExpertPairs pairs, uint32_t* done) {
    pdl_wait();  // first: see pdl.cuh
    constexpr int n_warps = k_group_threads / 32;
    __shared__ float partial[n_warps * NT];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, part = warp % k_router_split;
    const int64_t r = int64_t(blockIdx.x) * k_router_rows_per_block + warp / k_router_split;
    const bool active = r < w.rows;
    const int E = p.n_experts;
    for (int64_t t0 = 0; t0 < n; t0 += NT) {
        const int nt = int(min(int64_t(NT), n - t0));
        const float* xs[NT];
#pragma unroll
        for (int j = 0; j < NT; ++j) xs[j] = x + (t0 + j) * ldx;
        float acc[NT] = {};
        if (active) warp_row_dot<DT, NT, kXVec, k_router_split>(w, r, xs, nt, acc, part);
        if (lane == 0) {
#pragma unroll
            for (int j = 0; j < NT; ++j) partial[warp * NT + j] = acc[j];
        }
        __syncthreads();
        if (active && part == 0 && lane == 0) {
            for (int j = 0; j < nt; ++j) {
                float sum = partial[warp * NT + j];
#pragma unroll
                for (int k = 1; k < k_router_split; ++k) sum += partial[(warp + k) * NT + j];
                z[(t0 + j) * E + r] = sum;
            }
        }
        __syncthreads();  // partial is reused by the next tokens
    }
    pdl_trigger();  // the next launch may be scheduled during the last block's routing (pdl.cuh)
    if (!last_block_arrived(done)) return;
    extern __shared__ float route_smem[];
    float* zs = route_smem;  // [n, E]: every block's rows, read from L2 (not this SM's L1)
    for (int64_t i = threadIdx.x; i < n * E; i += blockDim.x) zs[i] = __ldcg(z + i);
    __syncthreads();
    route_and_group(zs, n, p, ids, weights, stride, pairs, zs + n * E);
}

template <DeviceDtype DT, bool kXVec>
void launch_router_tokens(const DeviceMatrix& w, const float* x, int64_t ldx, int64_t n, float* z,
                          const RouteParams& p, int32_t* ids, float* weights, int64_t stride,
                          const ExpertPairs& pairs, uint32_t* done, size_t smem_bytes, cudaStream_t s) {
    const unsigned grid = unsigned((w.rows + k_router_rows_per_block - 1) / k_router_rows_per_block);
    // The smallest compiled token count per pass that covers n (up to 8; more take passes of 8).
    if (n == 1)
        launch_pdl(router_route_group_kernel<DT, 1, kXVec>, grid, k_group_threads, smem_bytes, s, w, x, ldx, n, z, p, ids,
                   weights, stride, pairs, done);
    else if (n == 2)
        launch_pdl(router_route_group_kernel<DT, 2, kXVec>, grid, k_group_threads, smem_bytes, s, w, x, ldx, n, z, p, ids,
                   weights, stride, pairs, done);
    else if (n <= 4)
        launch_pdl(router_route_group_kernel<DT, 4, kXVec>, grid, k_group_threads, smem_bytes, s, w, x, ldx, n, z, p, ids,
                   weights, stride, pairs, done);
    else
        launch_pdl(router_route_group_kernel<DT, 8, kXVec>, grid, k_group_threads, smem_bytes, s, w, x, ldx, n, z, p, ids,
                   weights, stride, pairs, done);
}

template <DeviceDtype DT>
void launch_router_dtype(const DeviceMatrix& w, const float* x, int64_t ldx, int64_t n, float* z,
                         const RouteParams& p, int32_t* ids, float* weights, int64_t stride, const ExpertPairs& pairs,
                         uint32_t* done, size_t smem_bytes, cudaStream_t s) {
    if (ldx % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0)
        launch_router_tokens<DT, true>(w, x, ldx, n, z, p, ids, weights, stride, pairs, done, smem_bytes, s);
    else
        launch_router_tokens<DT, false>(w, x, ldx, n, z, p, ids, weights, stride, pairs, done, smem_bytes, s);
}

}  // namespace

void launch_route(const float* z, int64_t n, const RouteParams& p, int32_t* ids, float* weights, int64_t stride,
                  cudaStream_t s) {
    if (n <= 0) return;
    const size_t smem_bytes = size_t(k_route_warps) * size_t(route_warp_floats(p)) * 4;
    launch_pdl(route_kernel, unsigned((n + k_route_warps - 1) / k_route_warps), 32 * k_route_warps, smem_bytes, s, z, n, p,
               ids, weights, stride);
    CETUS_CUDA_LAUNCHED("route_kernel");
}

namespace {
size_t route_group_shared(int64_t n, const RouteParams& p) {
    return (size_t(k_group_threads / 32) * size_t(route_warp_floats(p)) + size_t(n * p.top_k + 2 * p.n_experts)) * 4;
}
}  // namespace

bool route_group_fits(int64_t n, const RouteParams& p) {
    return n > 0 && n <= k_route_group_max_tokens && route_group_shared(n, p) <= 48 * 1024;
}

void launch_route_group(const float* z, int64_t n, const RouteParams& p, int32_t* ids, float* weights,
                        int64_t stride, const ExpertPairs& pairs, cudaStream_t s) {
    if (n <= 0) return;
    if (!route_group_fits(n, p))
        throw Error(ErrorCode::Device, "route_group: " + std::to_string(n) + " tokens do not fit (internal error)");
    launch_pdl(route_group_kernel, 1, k_group_threads, route_group_shared(n, p), s, z, n, p, ids, weights, stride,
               pairs);
    CETUS_CUDA_LAUNCHED("route_group_kernel");
}

// 48 KiB of shared memory less the kernel's static arrays (partial sums, the flag).
constexpr size_t k_router_dynamic_max = 48 * 1024 - 512;

bool router_route_group_fits(int64_t n, const RouteParams& p, const DeviceMatrix& router) {
    return route_group_fits(n, p) && router.rows == p.n_experts && router.rows < k_matvec_narrow_rows &&
           route_group_shared(n, p) + size_t(n * p.n_experts) * 4 <= k_router_dynamic_max;
}

void launch_router_route_group(const DeviceMatrix& router, const float* x, int64_t ldx, int64_t n, float* z,
                               const RouteParams& p, int32_t* ids, float* weights, int64_t stride,
                               const ExpertPairs& pairs, uint32_t* done, cudaStream_t s) {
    if (n <= 0) return;
    if (!router_route_group_fits(n, p, router))
        throw Error(ErrorCode::Device, "router_route_group: " + std::to_string(n) + " tokens do not fit (internal error)");
    const size_t smem_bytes = route_group_shared(n, p) + size_t(n * p.n_experts) * 4;
    switch (router.dtype) {
    case DeviceDtype::F32:
        launch_router_dtype<DeviceDtype::F32>(router, x, ldx, n, z, p, ids, weights, stride, pairs, done, smem_bytes, s);
        break;
    case DeviceDtype::BF16:
        launch_router_dtype<DeviceDtype::BF16>(router, x, ldx, n, z, p, ids, weights, stride, pairs, done, smem_bytes, s);
        break;
    case DeviceDtype::F8_E4M3:
        launch_router_dtype<DeviceDtype::F8_E4M3>(router, x, ldx, n, z, p, ids, weights, stride, pairs, done,
                                                  smem_bytes, s);
        break;
    case DeviceDtype::Ggml:  // (upload_weights decodes a GGUF router to fp32)
        throw Error(ErrorCode::Device, "router: weights in GGUF blocks (internal error)");
    }
    CETUS_CUDA_LAUNCHED("router_route_group_kernel");
}

}  // namespace cetus::cuda
