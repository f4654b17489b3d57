// The fp32 matrix-vector kernel behind every product with few tokens (decode,
// MTP drafts, CETUS_CUDA_EXACT), over groups of rows: cpu::matmul and
// cpu::matmul_strided (cpu/ops.cpp) up to summation order. One warp per output
// row (four for narrow matrices), 8 warps per block, grid.y the row group; the
// weight row is read once per 8 tokens, fp32 accumulation. Fused forms save
// decode launches: an MLP's gate and up with the SwiGLU, two products of one
// input (the attention's query and latent projections), and a product followed
// by the residual add (each row where it is written) and the norm (in its last
// block: AddNorm). GGUF blocks (Ggml) are
// decoded 32 values at a time by the lanes, against activations staged in shared
// memory, two rows per warp for one token (device_math.cuh: ggml_rows_dot).
#include "cuda_util.h"
#include "device_math.cuh"
#include "last_block.cuh"
#include "pdl.cuh"
#include "row_kernels.cuh"

#include <algorithm>
#include <type_traits>

namespace cetus::cuda {
namespace {

constexpr int k_warps_per_block = 8;
static_assert(k_warps_per_block <= k_row_dot_warps, "warp_rows_dot stages for k_row_dot_warps warps a block");
constexpr int k_tokens_per_pass = 8;
// Narrow products (fewer rows than k_matvec_narrow_rows, kernels.h) give each row
// k_matvec_narrow_split warps, so small matrices (the MLA latent projection, the
// router) still spread over the GPU. The choice depends on the matrix only, never
// on the token count, so a token's sums are the same in a batch of one or in a
// verify batch.

// What one launch computes: a plain product over row groups, silu(W x) * (W2 x)
// (an MLP's gate and up with its SwiGLU, as launch_silu_mul), or two products of
// the same input (rows [0, W.rows) from W into y, the rest from W2 into y2).
// AddNorm: a plain product (one group) that adds each output row to the residual
// stream where it is written, as launch_add_rmsnorm would; the launch's last block
// (last_block.cuh) then takes the norm alone, so no block may leave early. (The last
// block adding every row as well was most of the output projection's time on an
// H200, 2026-12-04.)
enum class Fuse { None, GateUp, Pair, AddNorm };

struct MatvecArgs {
    DeviceMatrix w, w2;
    const float* x;
    int64_t ldx;
    int n;
    float* y;
    int64_t ldy;
    float* y2;
    int64_t ldy2;
    RowGroups g;  // g.rows: every output row of the launch
    // AddNorm: resid[t] += y[t], then norm_out[t] = rmsnorm(resid[t]) with norm_w.
    float* resid = nullptr;
    const float* norm_w = nullptr;
    float eps = 0.0f;
    float* norm_out = nullptr;
    uint32_t* done = nullptr;
    GgmlSlots ggml_slots{};  // GGUF blocks staged: the launch's weight slots
};

// Rows each warp computes: GGUF blocks take several (device_math.cuh: ggml_rows_dot).
template <DeviceDtype DT, int NT, int kSplit, Fuse kFuse>
inline constexpr int k_rows_per_warp =
    DT == DeviceDtype::Ggml ? k_ggml_rows_per_warp<NT, kSplit, kFuse == Fuse::GateUp ? 2 : 1> : 1;

// kSplit warps per output row, k_warps_per_block / kSplit rows per block (times
// k_rows_per_warp). With kSplit > 1 the warps' partial sums are added in warp order.
// x, y and y2 also come as separate restricted parameters: loads of x take the read-only path.
// kForm (GGUF blocks only): ggml_rows_dot's form of the sums (k_ggml_fast:
// DeviceMatrix::ggml_fast; k_ggml_int8: DeviceMatrix::ggml_int8); kStageW
// (GGUF blocks only): their rows staged with kStageW tiles in flight (1 or 2;
// DeviceMatrix::ggml_stage), the same sums.
template <DeviceDtype DT, int NT, bool kXVec, int kSplit, Fuse kFuse, int kForm, int kStageW = 0>
__global__ void __launch_bounds__(32 * k_warps_per_block)
    matvec_kernel(MatvecArgs a, const float* __restrict__ x, float* __restrict__ y, float* __restrict__ y2) {
    pdl_wait();  // first: see pdl.cuh
    constexpr bool kGgml = DT == DeviceDtype::Ggml;
    constexpr int R = k_rows_per_warp<DT, NT, kSplit, kFuse>;
    constexpr int kAcc = kFuse == Fuse::GateUp ? 2 : 1;
    __shared__ float partial[kSplit > 1 ? k_warps_per_block * NT * kAcc * R : 1];
    extern __shared__ __align__(16) float stage[];  // GGUF: ggml_stage_bytes (and the weights' slots)
    const RowGroups& g = a.g;
    const int warp = threadIdx.x >> 5, part = warp % kSplit;
    // The warp's first row.
    const int64_t r0 = (int64_t(blockIdx.x) * (k_warps_per_block / kSplit) + warp / kSplit) * R;
    const bool active = r0 < g.rows;
    if constexpr (kFuse != Fuse::AddNorm && !kGgml) {  // (GGUF: every warp takes part in the copies)
        if (kSplit == 1 && !active) return;
    }
    const int64_t grp = blockIdx.y;
    const float* xs[NT];
#pragma unroll
    for (int j = 0; j < NT; ++j) xs[j] = x + j * a.ldx + grp * g.x_step;
    float acc[kAcc][R][NT] = {};
    if constexpr (kGgml) {
        // Row (m, i): the GateUp pair's gate (m = 0) or up (m = 1), a Pair's row from
        // either matrix, or the row group's row.
        const auto visit = [&](int m, int i, auto&& f) {
            const int64_t r = r0 + i;
            if (r >= g.rows) return;
            if constexpr (kFuse == Fuse::Pair) {
                if (r < a.w.rows) f(a.w, r);
                else f(a.w2, r - a.w.rows);
            } else if constexpr (kFuse == Fuse::GateUp) {
                if (m == 0) f(a.w, r);
                else f(a.w2, r);
            } else {
                f(a.w, g.w_row0 + grp * g.w_row_step + r);
            }
        };
        ggml_rows_dot<NT, R, kAcc, kSplit, kForm, kStageW>(visit, a.w.cols, xs, a.n, acc, part, stage, a.ggml_slots,
                                                           a.w.ggml_values);
    } else if (active) {
        const int64_t rw = g.w_row0 + grp * g.w_row_step + r0;  // a plain product's (or the gate's) weight row
        if constexpr (kFuse == Fuse::Pair) {
            if (r0 < a.w.rows) warp_row_dot<DT, NT, kXVec, kSplit, true>(a.w, r0, xs, a.n, acc[0][0], part);
            else warp_row_dot<DT, NT, kXVec, kSplit, true>(a.w2, r0 - a.w.rows, xs, a.n, acc[0][0], part);
        } else if constexpr (kFuse == Fuse::GateUp) {  // gate's row and up's in one pass
            warp_row_pair_dot<DT, NT, kXVec, kSplit>(a.w, rw, a.w2, r0, xs, a.n,
                                                     reinterpret_cast<float (&)[2][NT]>(acc), part);
        } else {
            warp_row_dot<DT, NT, kXVec, kSplit, true>(a.w, rw, xs, a.n, acc[0][0], part);
        }
    }
    if constexpr (kSplit > 1) {
        if ((threadIdx.x & 31) == 0) {
#pragma unroll
            for (int m = 0; m < kAcc; ++m)
#pragma unroll
                for (int i = 0; i < R; ++i)
#pragma unroll
                    for (int j = 0; j < NT; ++j)
                        partial[((m * k_warps_per_block + warp) * R + i) * NT + j] = acc[m][i][j];
        }
        __syncthreads();
        if constexpr (kFuse != Fuse::AddNorm) {
            if (!active || part != 0) return;
        }
        if (active && part == 0) {  // (only AddNorm gets here with other parts or rows past the end)
#pragma unroll
            for (int m = 0; m < kAcc; ++m)
#pragma unroll
                for (int i = 0; i < R; ++i)
#pragma unroll
                    for (int j = 0; j < NT; ++j) {
                        float sum = partial[((m * k_warps_per_block + warp) * R + i) * NT + j];
#pragma unroll
                        for (int k = 1; k < kSplit; ++k)
                            sum += partial[((m * k_warps_per_block + warp + k) * R + i) * NT + j];
                        acc[m][i][j] = sum;
                    }
        }
    }
    const bool store = active && (kSplit == 1 || part == 0);
    if (store && (threadIdx.x & 31) == 0) {
#pragma unroll
        for (int i = 0; i < R; ++i) {
            const int64_t r = r0 + i;
            if (r >= g.rows) break;
#pragma unroll
            for (int j = 0; j < NT; ++j) {
                if (j >= a.n) continue;
                if constexpr (kFuse == Fuse::GateUp) {
                    const float z = acc[0][i][j];
                    y[j * a.ldy + r] = z / (1.0f + expf(-z)) * acc[kAcc - 1][i][j];  // silu(gate) * up
                } else if constexpr (kFuse == Fuse::Pair) {
                    if (r < a.w.rows) y[j * a.ldy + r] = acc[0][i][j];
                    else y2[j * a.ldy2 + (r - a.w.rows)] = acc[0][i][j];
                } else {
                    y[j * a.ldy + grp * g.y_step + r] = acc[0][i][j];
                    if constexpr (kFuse == Fuse::AddNorm) {  // add_rmsnorm_row's sum, by the row's own warp
                        float* xr = a.resid + j * g.rows + r;
                        *xr = *xr + acc[0][i][j];
                    }
                }
            }
        }
    }
    if constexpr (kFuse == Fuse::AddNorm) {
        static_assert(32 * k_warps_per_block == k_row_threads, "norm_row_l2 needs a block of k_row_threads");
        pdl_trigger();  // the next launch may be scheduled during the last block's norm (pdl.cuh)
        if (last_block_arrived(a.done)) {
            __shared__ float scratch[32];
            for (int t = 0; t < a.n; ++t)
                norm_row_l2(a.resid + t * g.rows, a.norm_w, a.eps, g.rows, a.norm_out + t * g.rows, scratch);
        }
    }
}

static_assert(k_ggml_group * 32 * k_matvec_narrow_split * k_ggml_x_stride * 4 <= k_ggml_stage_budget,
              "a copy of k_ggml_group tokens' tiles must fit the shared-memory budget");

// The weight slots of a GGUF launch of nt tokens; buffers 0 where it reads the rows.
// Staged where asked for (DeviceMatrix::ggml_stage, on both matrices of a fused pair),
// for at most k_ggml_stage_max_tokens tokens (decode, a one-draft verify batch), with
// the buffers asked for (two only for rows of more than one tile) where the shared
// memory stays within what a launch gets without opting in, else one. (The upload asks
// only where a matrix's copies fit a slot.)
GgmlSlots ggml_stage_slots(const MatvecArgs& a, int nt, int k_split, int k_acc, int r, bool pair) {
    if (nt > k_ggml_stage_max_tokens || !a.w.ggml_stage || (pair && !a.w2.ggml_stage)) return {0, 0};
    int bytes = ggml_slot_bytes(a.w.ggml_type, a.w.ggml_values, a.w.ggml_bytes);
    if (pair) bytes = std::max(bytes, ggml_slot_bytes(a.w2.ggml_type, a.w2.ggml_values, a.w2.ggml_bytes));
    const int ask = pair ? std::min(a.w.ggml_stage, a.w2.ggml_stage) : a.w.ggml_stage;
    const bool tiles = a.w.cols / 32 > 32 * k_split;  // (a pair's matrices have the same width)
    return ggml_fit_slots(ask, tiles, bytes, ggml_stage_bytes(nt, k_split, a.w.cols), k_acc, r);
}

// One launch with kSplit warps a row: the fast mode's sums for GGUF blocks that take
// them (no fast instance of the other dtypes is compiled), and for one or two tokens
// their rows staged where asked and where they fit (ggml_stage_slots).
template <DeviceDtype DT, int NT, bool kXVec, int kSplit, Fuse kFuse>
void launch_split(const MatvecArgs& a, cudaStream_t s) {
    constexpr int R = k_rows_per_warp<DT, NT, kSplit, kFuse>;
    constexpr int kRows = k_warps_per_block / kSplit * R;
    const dim3 grid(unsigned((a.g.rows + kRows - 1) / kRows), unsigned(a.g.n_groups));
    if constexpr (DT == DeviceDtype::Ggml) {
        constexpr int kAcc = kFuse == Fuse::GateUp ? 2 : 1;
        size_t smem = ggml_stage_bytes(NT, kSplit, a.w.cols);
        const bool pair = kFuse == Fuse::GateUp || kFuse == Fuse::Pair;
        const bool int8 = ggml_int8_launch(a.w, pair ? &a.w2 : nullptr);
        if (int8) count_ggml_int8_launch();
        const auto go = [&](auto staged, const MatvecArgs& args) {  // the int8, fast or exact sums
            constexpr int kStageW = decltype(staged)::value;
            if (int8)
                launch_pdl(matvec_kernel<DT, NT, kXVec, kSplit, kFuse, k_ggml_int8, kStageW>, grid,
                           32 * k_warps_per_block, smem, s, args, a.x, a.y, a.y2);
            else if (a.w.ggml_fast)
                launch_pdl(matvec_kernel<DT, NT, kXVec, kSplit, kFuse, k_ggml_fast, kStageW>, grid,
                           32 * k_warps_per_block, smem, s, args, a.x, a.y, a.y2);
            else
                launch_pdl(matvec_kernel<DT, NT, kXVec, kSplit, kFuse, k_ggml_exact, kStageW>, grid,
                           32 * k_warps_per_block, smem, s, args, a.x, a.y, a.y2);
        };
        if constexpr (NT <= k_ggml_stage_max_tokens) {  // (no staged instance for more tokens)
            const GgmlSlots slots = ggml_stage_slots(a, NT, kSplit, kAcc, R, pair);
            if (slots.buffers > 0) {
                count_ggml_staged_launch(slots.buffers);
                smem += ggml_weight_stage_bytes(kAcc, R, slots);
                MatvecArgs staged = a;
                staged.ggml_slots = slots;
                if (slots.buffers == 2) go(std::integral_constant<int, 2>{}, staged);
                else go(std::integral_constant<int, 1>{}, staged);
                return;
            }
        }
        go(std::integral_constant<int, 0>{}, a);
    } else {
        launch_pdl(matvec_kernel<DT, NT, kXVec, kSplit, kFuse, k_ggml_exact>, grid, 32 * k_warps_per_block, 0, s, a,
                   a.x, a.y, a.y2);
    }
}

template <DeviceDtype DT, int NT, bool kXVec, Fuse kFuse>
void launch_pass(const MatvecArgs& a, cudaStream_t s) {
    // A pair is narrow when one of its matrices is (V3's q_a and kv_a: 1536 and 576 rows).
    const int64_t split_rows = kFuse == Fuse::Pair ? std::min(a.w.rows, a.w2.rows) : a.g.rows;
    if (split_rows < k_matvec_narrow_rows) launch_split<DT, NT, kXVec, k_matvec_narrow_split, kFuse>(a, s);
    else launch_split<DT, NT, kXVec, 1, kFuse>(a, s);
    CETUS_CUDA_LAUNCHED("matvec_kernel");
}

// The smallest compiled token count that covers a.n.
template <DeviceDtype DT, bool kXVec, Fuse kFuse>
void launch_tokens(const MatvecArgs& a, cudaStream_t s) {
    static_assert(kFuse != Fuse::AddNorm || k_fused_tail_max_tokens <= 2, "AddNorm is compiled for 1 and 2 tokens");
    if (a.n == 1) launch_pass<DT, 1, kXVec, kFuse>(a, s);
    else if (a.n == 2) launch_pass<DT, 2, kXVec, kFuse>(a, s);
    else if constexpr (kFuse == Fuse::AddNorm) throw Error(ErrorCode::Device, "matvec: AddNorm of more than 2 tokens");
    else if (a.n <= 4) launch_pass<DT, 4, kXVec, kFuse>(a, s);
    else launch_pass<DT, 8, kXVec, kFuse>(a, s);
}

template <DeviceDtype DT, Fuse kFuse>
void launch_dtype(const MatvecArgs& a, bool x_vec, cudaStream_t s) {
    if (x_vec) launch_tokens<DT, true, kFuse>(a, s);
    else launch_tokens<DT, false, kFuse>(a, s);
}

// a over n tokens in passes of k_tokens_per_pass (a.n, a.x, a.y, a.y2 set per pass).
template <Fuse kFuse>
void launch_all(MatvecArgs a, int64_t n, cudaStream_t s) {
    if (a.g.n_groups < 1 || a.g.n_groups > 65535)
        throw Error(ErrorCode::Unsupported, "matvec: " + std::to_string(a.g.n_groups) + " row groups");
    // float4 loads of x need every token's row (and group offset) 16-byte aligned.
    const bool x_vec = a.ldx % 4 == 0 && a.g.x_step % 4 == 0 && reinterpret_cast<uintptr_t>(a.x) % 16 == 0;
    const float* x = a.x;
    float* y = a.y;
    float* y2 = a.y2;
    for (int64_t t0 = 0; t0 < n; t0 += k_tokens_per_pass) {
        a.n = int(std::min<int64_t>(k_tokens_per_pass, n - t0));
        a.x = x + t0 * a.ldx;
        a.y = y + t0 * a.ldy;
        a.y2 = y2 ? y2 + t0 * a.ldy2 : nullptr;
        switch (a.w.dtype) {
        case DeviceDtype::F32: launch_dtype<DeviceDtype::F32, kFuse>(a, x_vec, s); break;
        case DeviceDtype::BF16: launch_dtype<DeviceDtype::BF16, kFuse>(a, x_vec, s); break;
        case DeviceDtype::F8_E4M3: launch_dtype<DeviceDtype::F8_E4M3, kFuse>(a, x_vec, s); break;
        // (plain loads of x: half the instantiations of the largest kernels)
        case DeviceDtype::Ggml: launch_tokens<DeviceDtype::Ggml, false, kFuse>(a, s); break;
        }
    }
}

}  // namespace

void launch_matvec(const DeviceMatrix& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy,
                   const RowGroups& g, cudaStream_t s) {
    if (n <= 0 || g.rows <= 0) return;
    launch_all<Fuse::None>(MatvecArgs{w, DeviceMatrix{}, x, ldx, 0, y, ldy, nullptr, 0, g}, n, s);
}

void launch_matvec_add_rmsnorm(const DeviceMatrix& w, const float* x, int64_t ldx, int64_t n, float* y,
                               float* resid, const float* norm_w, float eps, float* out, uint32_t* done,
                               cudaStream_t s) {
    if (n <= 0 || w.rows <= 0) return;
    static_assert(k_fused_tail_max_tokens <= k_tokens_per_pass, "the fused form runs in one pass");
    if (n > k_fused_tail_max_tokens || !done)
        throw Error(ErrorCode::Device, "matvec: the fused residual add and norm of " + std::to_string(n) +
                                           " tokens (internal error)");
    MatvecArgs a{w, DeviceMatrix{}, x, ldx, 0, y, w.rows, nullptr, 0, RowGroups{1, w.rows, 0, 0, 0, 0}};
    a.resid = resid;
    a.norm_w = norm_w;
    a.eps = eps;
    a.norm_out = out;
    a.done = done;
    launch_all<Fuse::AddNorm>(a, n, s);
}

bool matvec_fusable(const DeviceMatrix& a, const DeviceMatrix& b) {
    // (two Ggml matrices may be of different block types, not of different sums; in the
    // int8 form blocks of one size)
    return a.dtype == b.dtype && a.cols == b.cols && a.ggml_fast == b.ggml_fast && a.ggml_int8 == b.ggml_int8 &&
           (!a.ggml_int8 || a.ggml_values == b.ggml_values);
}

void launch_matvec_gate_up(const DeviceMatrix& gate, const DeviceMatrix& up, const float* x, int64_t ldx, int64_t n,
                           float* y, int64_t ldy, cudaStream_t s) {
    if (n <= 0 || gate.rows <= 0) return;
    if (!matvec_fusable(gate, up) || gate.rows != up.rows)
        throw Error(ErrorCode::Device, "matvec: gate and up of different shapes or types (internal error)");
    launch_all<Fuse::GateUp>(MatvecArgs{gate, up, x, ldx, 0, y, ldy, nullptr, 0, RowGroups{1, gate.rows, 0, 0, 0, 0}},
                             n, s);
}

void launch_matvec_pair(const DeviceMatrix& w1, float* y1, int64_t ldy1, const DeviceMatrix& w2, float* y2,
                        int64_t ldy2, const float* x, int64_t ldx, int64_t n, cudaStream_t s) {
    if (n <= 0 || w1.rows + w2.rows <= 0) return;
    if (!matvec_fusable(w1, w2))
        throw Error(ErrorCode::Device, "matvec: a pair of different widths or types (internal error)");
    launch_all<Fuse::Pair>(
        MatvecArgs{w1, w2, x, ldx, 0, y1, ldy1, y2, ldy2, RowGroups{1, w1.rows + w2.rows, 0, 0, 0, 0}}, n, s);
}

}  // namespace cetus::cuda
