// The routed experts as grouped warp-per-row products: silu(gate x) * up x,
// then down, for the pairs of every active expert, as moe_forward runs
// mlp_forward per expert batch (moe.cpp); each expert's weight rows are read
// once per 8 of its pairs. Grid (rows / 8 rounded up, active experts), one
// warp per output row; templated per dtype, pairs per pass and gate/up or down.
#include "cuda_util.h"
#include "device_math.cuh"
#include "pdl.cuh"
#include "moe_experts.cuh"

#include <algorithm>

namespace cetus::cuda {
namespace {

constexpr int k_expert_rows = 8;  // output rows per block, one warp each

// Pair p's input row: token p / K for gate/up, the pair's own row for down.
// NT pairs per pass over the rows: a token routes at most one pair to an
// expert, so NT >= min(n, 8) covers the decode case in a single pass with
// few registers; more pairs take several passes.
template <DeviceDtype DT, int NT, bool kXVec, bool kGateUp>
__global__ void __launch_bounds__(32 * k_expert_rows) experts_kernel(ExpertLaunch a) {
    pdl_wait();  // first: see pdl.cuh
    pdl_trigger();
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
    if (x_vec) launch_pdl(experts_kernel<DT, NT, true, kGateUp>, grid, 32 * k_expert_rows, 0, s, a);
    else launch_pdl(experts_kernel<DT, NT, false, kGateUp>, grid, 32 * k_expert_rows, 0, s, a);
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

}  // namespace

void launch_experts_gate_up(const DeviceExperts& e, const ExpertPairs& pairs, const float* x, int64_t n,
                            int32_t top_k, int64_t hidden, int32_t n_experts, float* h, bool tensor_cores,
                            cudaStream_t s) {
    if (n <= 0) return;
    const ExpertLaunch a{e.gate, e.up, pairs, x, h, top_k, e.inter, hidden};
    if (tensor_cores && e.gate_up_dtype != DeviceDtype::F32)
        launch_experts_mma(a, true, e.gate_up_dtype, n, n_experts, s);
    else
        launch_experts<true>(a, e.gate_up_dtype, n, n_experts, s);
}

void launch_experts_down(const DeviceExperts& e, const ExpertPairs& pairs, const float* h, int64_t n,
                         int32_t top_k, int64_t hidden, int32_t n_experts, float* y, bool tensor_cores,
                         cudaStream_t s) {
    if (n <= 0) return;
    const ExpertLaunch a{e.down, nullptr, pairs, h, y, top_k, hidden, e.inter};
    if (tensor_cores && e.down_dtype != DeviceDtype::F32)
        launch_experts_mma(a, false, e.down_dtype, n, n_experts, s);
    else
        launch_experts<false>(a, e.down_dtype, n, n_experts, s);
}

}  // namespace cetus::cuda
