// The routed experts as grouped warp-per-row products: silu(gate x) * up x,
// then down, for the pairs of every active expert, as moe_forward runs
// mlp_forward per expert batch (moe.cpp); each expert's weight rows are read
// once per 8 of its pairs. Grid (rows / (8 R) rounded up, shared slots + active
// experts), one warp per R output rows (R = 1, or 2 for GGUF blocks with one token
// and for their down projection with two); templated per dtype, pairs per pass and
// gate/up or down. The shared experts can ride along in the same launches
// (decode: two launches fewer per MoE layer, and their weights stream beside
// the routed ones'). GGUF blocks (Ggml) as in matvec.cu: activations staged in
// shared memory (device_math.cuh: ggml_rows_dot).
#include "cuda_util.h"
#include "device_math.cuh"
#include "last_block.cuh"
#include "moe_combine.cuh"
#include "moe_experts.cuh"
#include "pdl.cuh"

#include <algorithm>
#include <type_traits>

namespace cetus::cuda {
namespace {

constexpr int k_expert_rows = 8;  // output rows per block, one warp each
static_assert(k_expert_rows >= 8, "moe_combine_counters counts columns of blocks of 8 rows or more");
static_assert(k_expert_rows <= k_row_dot_warps, "warp_rows_dot stages for k_row_dot_warps warps a block");

// Rows each warp computes: GGUF blocks take several (device_math.cuh: ggml_rows_dot).
template <DeviceDtype DT, int NT, bool kGateUp>
inline constexpr int k_rows_per_warp = DT == DeviceDtype::Ggml ? k_ggml_rows_per_warp<NT, 1, kGateUp ? 2 : 1> : 1;

// Rows [row0, row0 + n_rows) of w1 (and w2 for gate/up with SwiGLU) for `count` pairs, NT
// at a time: pair_at(i) is the i-th pair, x_of(p) its input row and out_of(p, r) where
// its result for row r goes. NT >= min(n, 8) covers the decode case in a single pass
// with few registers; more pairs take several passes. A pair's sum does not depend on
// NT or on the other pairs. GGUF blocks: every warp of the block calls this with the
// same count and pairs (n_rows may be 0), as ggml_rows_dot's copies need.
template <DeviceDtype DT, int NT, bool kXVec, bool kGateUp, int kForm, int kStageW, class PairAt, class InputOf,
          class OutputOf>
__device__ __forceinline__ void rows_for_pairs(const DeviceMatrix& w1, const DeviceMatrix& w2, int64_t row0,
                                               int n_rows, int count, PairAt pair_at, InputOf x_of, OutputOf out_of,
                                               float* stage, GgmlSlots slots, int qblock) {
    constexpr int R = k_rows_per_warp<DT, NT, kGateUp>;
    constexpr int kAcc = kGateUp ? 2 : 1;
    for (int c0 = 0; c0 < count; c0 += NT) {
        const int np = min(NT, count - c0);
        int pair[NT];
        const float* xs[NT];
#pragma unroll
        for (int j = 0; j < NT; ++j) {
            pair[j] = j < np ? pair_at(c0 + j) : 0;
            xs[j] = x_of(pair[j]);
        }
        float v[kAcc][R][NT] = {};
        if constexpr (DT == DeviceDtype::Ggml) {
            const auto visit = [&](int m, int i, auto&& f) {
                if (i < n_rows) f(m == 0 ? w1 : w2, row0 + i);
            };
            ggml_rows_dot<NT, R, kAcc, 1, kForm, kStageW>(visit, w1.cols, xs, np, v, 0, stage, slots, qblock);
        } else if constexpr (kGateUp) {  // gate's row and up's in one pass
            warp_row_pair_dot<DT, NT, kXVec>(w1, row0, w2, row0, xs, np, reinterpret_cast<float (&)[2][NT]>(v));
        } else {
            warp_row_dot<DT, NT, kXVec, 1, true>(w1, row0, xs, np, v[0][0]);
        }
        if ((threadIdx.x & 31) == 0) {
#pragma unroll
            for (int i = 0; i < R; ++i) {
                if (i >= n_rows) break;
#pragma unroll
                for (int j = 0; j < NT; ++j) {
                    if (j >= np) continue;
                    float r = v[0][i][j];
                    if constexpr (kGateUp) r = r / (1.0f + expf(-r)) * v[kAcc - 1][i][j];  // silu(g) * u
                    *out_of(pair[j], row0 + i) = r;
                }
            }
        }
    }
}

// Shared blocks (the first s_slots of grid.y, scheduled first: their rows can be
// the longest): every token through the shared MLP's rows, split into slots of
// gridDim.x * k_expert_rows * R rows. Routed blocks: the rest of grid.y indexes the
// active experts (blocks past the active count return at once); pair p's input
// row is token p / K for gate/up, the pair's own row for down (a token routes at
// most one pair to an expert). Both take the same code below (one inlined copy).
// Each warp computes R = k_rows_per_warp rows (1 but for GGUF blocks).
// kCombine (down only): every block takes part in last_block_arrived, so no block
// returns early. The last block of each column of the grid (the routed and shared
// experts' blocks of the same rows) adds those rows up for every token
// (combine_elems), and the launch's last block then takes the norms.
// kForm (GGUF blocks only): ggml_rows_dot's form of the sums (k_ggml_fast:
// DeviceMatrix::ggml_fast; k_ggml_int8: ExpertLaunch::ggml_int8_block); kStageW (GGUF
// blocks only): their rows staged with kStageW tiles in flight (1 or 2;
// DeviceMatrix::ggml_stage), the same sums.
// Blocks a multiprocessor it is compiled for (at most 128 registers for two): two for one
// token, where ptxas otherwise moved between about 128 and 200 registers on small changes
// of the code (sm_90, 2026-12-07), but for gate and up with two tiles in flight in the
// exact and fast forms (255 registers, none spilled; bound to two blocks they spilled 132
// and 164 bytes; the int8 form's took 129 unbound).
template <int NT, bool kGateUp, int kForm, int kStageW>
inline constexpr int k_expert_min_blocks = NT == 1 && !(kStageW == 2 && kGateUp && kForm != k_ggml_int8) ? 2 : 1;
template <DeviceDtype DT, int NT, bool kXVec, bool kGateUp, bool kCombine, int kForm, int kStageW = 0>
__global__ void __launch_bounds__(32 * k_expert_rows, (k_expert_min_blocks<NT, kGateUp, kForm, kStageW>))
    experts_kernel(ExpertLaunch a) {
    static_assert(!kCombine || 32 * k_expert_rows == k_row_threads, "norm_row_l2 needs a block of k_row_threads");
    pdl_wait();  // first: see pdl.cuh
    constexpr bool kGgml = DT == DeviceDtype::Ggml;
    constexpr int R = k_rows_per_warp<DT, NT, kGateUp>;
    extern __shared__ __align__(16) float stage[];  // GGUF: ggml_stage_bytes (and the weights' slots)
    const int warp = threadIdx.x >> 5;
    // The launch's fields are read where they are used (kernel parameters, not registers
    // held across the products); only the weights and the block's pair list are kept.
    const bool shared = int(blockIdx.y) < a.s_slots;
    DeviceMatrix w1, w2;
    int64_t row0 = 0, rows = 0;
    int count = 0;
    const int32_t* list = nullptr;  // the expert's pairs
    bool work;                      // (the same in the whole block)
    if (shared) {
        const int64_t block_row0 = (int64_t(blockIdx.y) * gridDim.x + blockIdx.x) * k_expert_rows * R;
        row0 = block_row0 + warp * R;
        rows = a.s_rows;
        work = block_row0 < rows;
        if (work) {
            w1 = a.s_first;
            w2 = a.s_second;
            count = a.n_tokens;
        }
    } else {
        const int slot = int(blockIdx.y) - a.s_slots;
        work = slot < *a.pairs.n_active;
        if (work) {
            const int e = a.pairs.active[slot];
            row0 = (int64_t(blockIdx.x) * k_expert_rows + warp) * R;
            rows = a.rows;
            w1 = a.first[e];
            w2 = kGateUp ? a.second[e] : w1;
            count = a.pairs.counts[e];
            list = a.pairs.list + a.pairs.offsets[e];
        }
    }
    const int64_t left = rows - row0;
    const int n_rows = left <= 0 ? 0 : left < R ? int(left) : R;  // the warp's rows
    if constexpr (!kCombine) {
        if (!work || (!kGgml && n_rows == 0)) return;  // (GGUF: every warp takes part in the copies)
    }
    if (work && (kGgml || n_rows > 0)) {
        rows_for_pairs<DT, NT, kXVec, kGateUp, kForm, kStageW>(
            w1, w2, row0, n_rows, count, [&](int i) { return shared ? i : list[i]; },
            [&](int p) {
                return shared ? a.s_x + int64_t(p) * a.s_cols : a.x + int64_t(kGateUp ? p / a.top_k : p) * a.cols;
            },
            [&](int p, int64_t r) {
                return shared ? a.s_out + int64_t(p) * a.s_rows + r : a.out + int64_t(p) * a.rows + r;
            },
            stage, GgmlSlots{a.ggml_slot_bytes, a.ggml_buffers}, shared ? a.s_int8_block : a.ggml_int8_block);
    }
    if constexpr (kCombine) {
        // (A shared block covers the rows of the routed blocks beside it: the shared
        // experts' down has a.rows rows, one slot.)
        constexpr int kRows = k_expert_rows * R;
        static_assert(k_fused_tail_max_tokens * kRows <= 32 * k_expert_rows, "combine_elems takes an element a thread");
        pdl_trigger();  // the next launch may be scheduled during the combine and the norm (pdl.cuh)
        if (last_block_arrived(a.combine.done + 1 + blockIdx.x, gridDim.y)) {
            const int64_t r0 = int64_t(blockIdx.x) * kRows;
            combine_elems(a.combine, a.n_tokens, a.out, a.top_k, a.rows, r0, min(r0 + kRows, a.rows));
        }
        if (last_block_arrived(a.combine.done)) {
            __shared__ float scratch[32];
            for (int64_t t = 0; t < a.n_tokens; ++t)
                norm_row_l2(a.combine.x + t * a.rows, a.combine.norm_w, a.combine.eps, a.rows,
                            a.combine.out + t * a.rows, scratch);
        }
    }
}

// GGUF blocks: the shared memory of NT tokens' activations (blocks of the shared experts'
// rows, when they ride along, stage s_cols values).
template <int NT>
size_t ggml_x_bytes(const ExpertLaunch& a) {
    return std::max(ggml_stage_bytes(NT, 1, a.cols), a.s_rows > 0 ? ggml_stage_bytes(NT, 1, a.s_cols) : 0);
}

template <DeviceDtype DT, int NT, bool kXVec, bool kGateUp, int kForm, int kStageW = 0>
void launch_experts_vec(const ExpertLaunch& a, const dim3& grid, cudaStream_t s) {
    constexpr int threads = 32 * k_expert_rows;
    static_assert(k_fused_tail_max_tokens <= 2, "the fused combine is compiled for 1 and 2 tokens");
    size_t smem = DT != DeviceDtype::Ggml ? 0 : ggml_x_bytes<NT>(a);
    if constexpr (kStageW)
        smem += ggml_weight_stage_bytes(kGateUp ? 2 : 1, k_rows_per_warp<DT, NT, kGateUp>,
                                        GgmlSlots{a.ggml_slot_bytes, a.ggml_buffers});
    if constexpr (!kGateUp && NT <= 2) {
        if (a.combine.done) {
            launch_pdl(experts_kernel<DT, NT, kXVec, false, true, kForm, kStageW>, grid, threads, smem, s, a);
            return;
        }
    }
    launch_pdl(experts_kernel<DT, NT, kXVec, kGateUp, false, kForm, kStageW>, grid, threads, smem, s, a);
}

// The weight slots of a GGUF launch of NT tokens; buffers 0 where it reads the rows.
// Staged where asked for (every expert's matrices, DeviceExperts::ggml_stage, and the
// shared experts' riding along), for at most k_ggml_stage_max_tokens tokens (decode, a
// one-draft verify batch), with the buffers asked for (two only for rows of more than one
// tile) where the shared memory stays within what a launch gets without opting in, else
// one. a.ggml_slot_bytes: the routed experts' largest slot (0: k_ggml_slot_bytes).
template <int NT, bool kGateUp>
GgmlSlots ggml_stage_slots(const ExpertLaunch& a) {
    constexpr int R = k_rows_per_warp<DeviceDtype::Ggml, NT, kGateUp>;
    const bool shared = a.s_rows == 0 || (a.s_first.ggml_stage && (!kGateUp || a.s_second.ggml_stage));
    if (NT > k_ggml_stage_max_tokens || !a.ggml_stage || !shared) return {0, 0};
    int ask = a.ggml_stage;
    int bytes = a.ggml_slot_bytes > 0 ? a.ggml_slot_bytes : k_ggml_slot_bytes;
    if (a.s_rows > 0) {  // the shared experts' matrices riding along
        for (const DeviceMatrix* m : {&a.s_first, &a.s_second}) {
            if (m == &a.s_second && !kGateUp) break;
            bytes = std::max(bytes, ggml_slot_bytes(m->ggml_type, m->ggml_values, m->ggml_bytes));
            ask = std::min<int>(ask, m->ggml_stage);
        }
    }
    const bool tiles = a.cols / 32 > 32 || (a.s_rows > 0 && a.s_cols / 32 > 32);
    return ggml_fit_slots(ask, tiles, bytes, ggml_x_bytes<NT>(a), kGateUp ? 2 : 1, R);
}

// The grid: blocks of k_expert_rows * R rows. Blocks past the active count return at
// once; at most min(E, n * K) experts are active. The shared experts' slots (of as many
// rows as the routed experts' blocks cover) come before them.
// GGUF blocks take plain loads of x only (half the instantiations, as matvec.cu).
template <DeviceDtype DT, int NT, bool kGateUp>
void launch_experts_nt(ExpertLaunch a, int64_t n, int32_t n_experts, bool x_vec, cudaStream_t s) {
    constexpr int kRows = k_expert_rows * k_rows_per_warp<DT, NT, kGateUp>;
    static_assert(DT != DeviceDtype::Ggml || k_ggml_group * 32 * k_ggml_x_stride * 4 <= k_ggml_stage_budget,
                  "a copy of k_ggml_group tokens' tiles must fit the shared-memory budget");
    const int64_t blocks = std::max<int64_t>(1, (a.rows + kRows - 1) / kRows);
    a.s_slots = a.s_rows > 0 ? int32_t((a.s_rows + blocks * kRows - 1) / (blocks * kRows)) : 0;
    const dim3 grid(unsigned(blocks), unsigned(std::min<int64_t>(n_experts, n * a.top_k) + a.s_slots));
    if constexpr (DT == DeviceDtype::Ggml) {
        if (a.ggml_int8_block) count_ggml_int8_launch();
        const auto go = [&](auto staged) {  // the int8, fast or exact sums
            constexpr int kStageW = decltype(staged)::value;
            if (a.ggml_int8_block) launch_experts_vec<DT, NT, false, kGateUp, k_ggml_int8, kStageW>(a, grid, s);
            else if (a.ggml_fast) launch_experts_vec<DT, NT, false, kGateUp, k_ggml_fast, kStageW>(a, grid, s);
            else launch_experts_vec<DT, NT, false, kGateUp, k_ggml_exact, kStageW>(a, grid, s);
        };
        if constexpr (NT <= k_ggml_stage_max_tokens) {  // (no staged instance for more tokens)
            const GgmlSlots slots = ggml_stage_slots<NT, kGateUp>(a);
            if (slots.buffers > 0) {
                count_ggml_staged_launch(slots.buffers);
                a.ggml_slot_bytes = slots.bytes;
                a.ggml_buffers = slots.buffers;
                if (slots.buffers == 2) go(std::integral_constant<int, 2>{});
                else go(std::integral_constant<int, 1>{});
                return;
            }
        }
        go(std::integral_constant<int, 0>{});
    } else if (x_vec) {
        launch_experts_vec<DT, NT, true, kGateUp, k_ggml_exact>(a, grid, s);
    } else {
        launch_experts_vec<DT, NT, false, kGateUp, k_ggml_exact>(a, grid, s);
    }
}

template <DeviceDtype DT, bool kGateUp>
void launch_experts_dtype(const ExpertLaunch& a, int64_t n, int32_t n_experts, bool x_vec, cudaStream_t s) {
    if (n == 1) launch_experts_nt<DT, 1, kGateUp>(a, n, n_experts, x_vec, s);
    else if (n == 2) launch_experts_nt<DT, 2, kGateUp>(a, n, n_experts, x_vec, s);
    else if (n <= 4) launch_experts_nt<DT, 4, kGateUp>(a, n, n_experts, x_vec, s);
    else launch_experts_nt<DT, 8, kGateUp>(a, n, n_experts, x_vec, s);
}

template <bool kGateUp>
void launch_experts(const ExpertLaunch& a, DeviceDtype dtype, int64_t n, int32_t n_experts, cudaStream_t s) {
    const auto aligned = [](const float* x, int64_t cols) {
        return cols % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
    };
    const bool x_vec = aligned(a.x, a.cols) && (a.s_rows == 0 || aligned(a.s_x, a.s_cols));
    switch (dtype) {
    case DeviceDtype::F32: launch_experts_dtype<DeviceDtype::F32, kGateUp>(a, n, n_experts, x_vec, s); break;
    case DeviceDtype::BF16: launch_experts_dtype<DeviceDtype::BF16, kGateUp>(a, n, n_experts, x_vec, s); break;
    case DeviceDtype::F8_E4M3: launch_experts_dtype<DeviceDtype::F8_E4M3, kGateUp>(a, n, n_experts, x_vec, s); break;
    case DeviceDtype::Ggml: launch_experts_dtype<DeviceDtype::Ggml, kGateUp>(a, n, n_experts, x_vec, s); break;
    }
    CETUS_CUDA_LAUNCHED("experts_kernel");
}

}  // namespace

bool experts_shared_fusable(const DeviceExperts& e, const DeviceMatrix& gate, const DeviceMatrix& up,
                            const DeviceMatrix& down, int64_t hidden) {
    // (In the int8 form as the routed experts' launch, their own block size: gate and up
    // of one, as a warp's two rows share the staged activations.)
    const auto sums = [&](const DeviceMatrix& m, bool int8) {
        return m.dtype != DeviceDtype::Ggml ||
               (m.ggml_fast == e.ggml_fast && m.ggml_stage == e.ggml_stage && m.ggml_int8 == int8);
    };
    const bool int8_gate_up = e.ggml_int8_gate_up != 0;
    return gate.dtype == e.gate_up_dtype && up.dtype == e.gate_up_dtype && down.dtype == e.down_dtype &&
           sums(gate, int8_gate_up) && sums(up, int8_gate_up) && sums(down, e.ggml_int8_down != 0) &&
           (!int8_gate_up || gate.ggml_values == up.ggml_values) &&
           gate.rows == up.rows && gate.cols == hidden && up.cols == hidden && down.rows == hidden &&
           down.cols == gate.rows && gate.rows > 0;
}

namespace {
// a with the shared experts' part: w1/w2 over x [n, cols] into out [n, w1.rows]
// (launch_experts_nt divides it into slots).
void add_shared(ExpertLaunch& a, const DeviceMatrix& w1, const DeviceMatrix& w2, const float* x, float* out) {
    a.s_first = w1;
    a.s_second = w2;
    a.s_x = x;
    a.s_out = out;
    a.s_rows = w1.rows;
    a.s_cols = w1.cols;
    a.s_int8_block = w1.ggml_int8 ? w1.ggml_values : 0;
}
}  // namespace

void launch_experts_gate_up(const DeviceExperts& e, const ExpertPairs& pairs, const float* x, int64_t n,
                            int32_t top_k, int64_t hidden, int32_t n_experts, float* h, const ExpertMma* mma,
                            const SharedExpertLaunch* shared, cudaStream_t s) {
    if (n <= 0) return;
    ExpertLaunch a{e.gate, e.up, pairs, x, h, top_k, e.inter, hidden};
    a.n_tokens = int32_t(n);
    a.ggml_fast = e.ggml_fast;
    a.ggml_stage = e.ggml_stage;
    a.ggml_slot_bytes = e.ggml_slot_gate_up;
    a.ggml_int8_block = e.ggml_int8_gate_up;
    if (mma) {
        if (shared) throw Error(ErrorCode::Device, "experts: shared experts on the tensor-core kernel (internal error)");
        launch_to_bf16(x, hidden, n, hidden, mma->x_bf16, mma->ld_x, s);
        a.xb = mma->x_bf16;
        a.ldxb = mma->ld_x;
        a.outb = mma->h_bf16;
        a.ldob = mma->ld_h;
        launch_experts_mma(a, true, e.gate_up_dtype, mma->tile_rows, n, n_experts, s);
        return;
    }
    if (shared) add_shared(a, shared->gate, shared->up, x, shared->h);
    launch_experts<true>(a, e.gate_up_dtype, n, n_experts, s);
}

void launch_experts_down(const DeviceExperts& e, const ExpertPairs& pairs, const float* h, int64_t n,
                         int32_t top_k, int64_t hidden, int32_t n_experts, float* y, const ExpertMma* mma,
                         const SharedExpertLaunch* shared, const MoeCombine* combine, cudaStream_t s) {
    if (n <= 0) return;
    ExpertLaunch a{e.down, nullptr, pairs, h, y, top_k, hidden, e.inter};
    a.n_tokens = int32_t(n);
    a.ggml_fast = e.ggml_fast;
    a.ggml_stage = e.ggml_stage;
    a.ggml_slot_bytes = e.ggml_slot_down;
    a.ggml_int8_block = e.ggml_int8_down;
    if (mma) {
        if (shared || combine)
            throw Error(ErrorCode::Device, "experts: a fused part on the tensor-core kernel (internal error)");
        a.xb = mma->h_bf16;
        a.ldxb = mma->ld_h;
        launch_experts_mma(a, false, e.down_dtype, mma->tile_rows, n, n_experts, s);
        return;
    }
    if (combine) {
        if (n > k_fused_tail_max_tokens || !combine->done)
            throw Error(ErrorCode::Device, "experts: the fused combine of " + std::to_string(n) + " tokens (internal error)");
        // (the grid's columns: blocks of k_expert_rows rows or more)
        if (combine->counters < moe_combine_counters(hidden) || (shared && shared->down.rows != hidden))
            throw Error(ErrorCode::Device, "experts: the fused combine's counters or shared rows (internal error)");
        a.combine = *combine;
    }
    if (shared) add_shared(a, shared->down, shared->down, shared->h, shared->out);
    launch_experts<false>(a, e.down_dtype, n, n_experts, s);
}

}  // namespace cetus::cuda
