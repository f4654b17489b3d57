// Absorbed multi-head latent attention (mla.cpp, mla_forward's absorbed
// branch): flash-decoding of softmax((q_abs . c_s + q_pe . kpe_s) * scale)
// over the latent cache on the CUDA cores, plus the log-sum-exp merge of
// per-token splits (also of mla_attention_mma.cu's, the tensor-core kernel a bf16
// cache takes on sm_80 and later; plan_attention chooses), alone or fused with the
// value absorption that follows it.
// Grid (splits, n_h / 8 rounded up, tokens) of 256 threads, one warp per
// head; the merge takes blocks of 128 columns per (head, token). The cache holds fp32
// or bf16 values (a bf16 cache's tiles are half the bytes; each value is widened
// exactly, the arithmetic is the same fp32).
#include "cuda_util.h"
#include "device_math.cuh"
#include "pdl.cuh"
#include "launch_util.cuh"
#include "mla_attention.cuh"

#include <cuda_pipeline.h>

#include <algorithm>

// One block takes one token, eight heads and one split of the cached rows; a
// tile of rows is staged in shared memory once and read by all eight heads;
// each warp keeps its head's online softmax (running max, sum and context) in
// registers. Where shared memory allows two blocks of two tiles each (a bf16
// cache on sm_80 / sm_90 class GPUs), the next tile's copies are in flight while
// the block computes on the current one. For decode and verify batches (up to
// k_split_max_tokens tokens) each token's rows are split across blocks so a
// single token still fills the GPU: up to split_cap splits, about one block per
// multiprocessor for a token (plan_attention); a second kernel merges the
// splits. A token's split boundaries depend only on its own position (and the
// device's plan), never on the batch it is in, so a token gets bit-identical
// attention in a batch of one (plain decode) or in an MTP verify batch: greedy
// output is the same with MTP on and off. The position comes from device memory
// and such a batch always launches split_cap splits per token plus the merge, so
// the launch is the same at every position (a CUDA graph replays it). Prefill
// chunks (more tokens) have blocks enough and take each token's rows in one block.

namespace cetus::cuda {
namespace {

constexpr int k_heads_per_block = 8;  // one warp per head
constexpr int k_score_rows = 8;       // scores held in registers at a time
constexpr int k_latent_per_lane = int(k_attention_max_latent / 32);
constexpr int k_rope_per_lane = int(k_attention_max_rope / 32);

// A cached value as fp32: itself, or a bf16 value's bits widened (exact).
__device__ __forceinline__ float cached(float v) { return v; }
__device__ __forceinline__ float cached(uint16_t v) { return bf16_bits_to_f32(v); }

// Two blocks per multiprocessor (at most 128 registers a thread): one stages its
// tile while the other computes. CacheT: float or uint16_t (bf16 bits).
template <typename CacheT>
__global__ void __launch_bounds__(32 * k_heads_per_block, 2) mla_attention_kernel(AttentionLaunch a) {
    pdl_wait();  // first: see pdl.cuh
    extern __shared__ float4 attention_smem[];  // float4: the tile copy below stores 16 bytes at a time
    CacheT* tiles = reinterpret_cast<CacheT*>(attention_smem);  // [stages][k_tile_rows, d_c + d_r]
    const MlaShape& m = a.m;
    const int lane = threadIdx.x & 31;
    const int64_t h = int64_t(blockIdx.y) * k_heads_per_block + (threadIdx.x >> 5);
    const int64_t t = blockIdx.z;
    const bool active = h < m.n_h;
    const int64_t width = m.d_c + m.d_r, d_qk = m.d_n + m.d_r;
    // Causal: token t sees rows 0 .. start_pos + t; this block takes [s0, s1) of them.
    const int64_t n_rows = *a.start_pos + t + 1;
    const SplitPlan plan = split_plan(n_rows, a.split, a.split_cap);
    if (int64_t(blockIdx.x) >= plan.count) return;  // the whole block: this token needs fewer splits
    const int64_t s0 = int64_t(blockIdx.x) * plan.rows;
    const int64_t s1 = min(s0 + plan.rows, n_rows);

    // Lane l holds channels l, l + 32, ... of q_abs, q_pe and the context.
    float qc[k_latent_per_lane], acc[k_latent_per_lane], qr[k_rope_per_lane];
#pragma unroll
    for (int i = 0; i < k_latent_per_lane; ++i) {
        const int64_t c = lane + 32 * i;
        qc[i] = active && c < m.d_c ? a.q_abs[(t * m.n_h + h) * m.d_c + c] : 0.0f;
        acc[i] = 0.0f;
    }
#pragma unroll
    for (int i = 0; i < k_rope_per_lane; ++i) {
        const int64_t c = lane + 32 * i;
        qr[i] = active && c < m.d_r ? a.q[(t * m.n_h + h) * d_qk + m.d_n + c] : 0.0f;
    }
    float run_max = -INFINITY, run_sum = 0.0f;

    // Tile k of the split: rows s0 + k * k_tile_rows onwards, its copies issued by
    // every thread into buffer dst as one commit group.
    const int64_t n_tiles = ceil_div(s1 - s0, int64_t(k_tile_rows));
    constexpr int64_t per16 = 16 / sizeof(CacheT);  // values per 16-byte copy
    auto stage_tile = [&](int64_t k, CacheT* dst) {
        const int64_t base = s0 + k * k_tile_rows;
        const CacheT* src = static_cast<const CacheT*>(a.cache) + base * width;
        const int64_t count = min(int64_t(k_tile_rows), s1 - base) * width;
        if (width % per16 == 0) {
            // Asynchronous 16-byte copies straight into shared memory (cp.async): a
            // tile of 576-wide fp32 rows is 18 per thread (9 in bf16), all in flight together.
            const float4* src4 = reinterpret_cast<const float4*>(src);
            float4* dst4 = reinterpret_cast<float4*>(dst);
            for (int64_t i = threadIdx.x; i < count / per16; i += blockDim.x)
                __pipeline_memcpy_async(dst4 + i, src4 + i, 16);
        } else {
            for (int64_t i = threadIdx.x; i < count; i += blockDim.x) dst[i] = src[i];
        }
        __pipeline_commit();
    };
    const bool two = a.stages == 2;
    if (two) stage_tile(0, tiles);
    for (int64_t k = 0; k < n_tiles; ++k) {
        const int64_t base = s0 + k * k_tile_rows;
        const int rows = int(min(int64_t(k_tile_rows), s1 - base));
        CacheT* tile = tiles + (two ? (k & 1) : 0) * k_tile_rows * width;
        attention_tile_step(k, n_tiles, two,
                            [&](int64_t j, int buffer) { stage_tile(j, tiles + buffer * k_tile_rows * width); });
        if (!active) continue;

        // Rows in groups of k_score_rows: the scores of one group stay in
        // registers, then the running softmax takes them in.
        for (int g0 = 0; g0 < rows; g0 += k_score_rows) {
            float score[k_score_rows];
            float group_max = -INFINITY;
#pragma unroll
            for (int r = 0; r < k_score_rows; ++r) {
                score[r] = -INFINITY;
                if (g0 + r < rows) {  // the same for the whole block: no divergence around the shuffles
                    const CacheT* row = tile + (g0 + r) * width;
                    float part = 0.0f;
#pragma unroll
                    for (int i = 0; i < k_latent_per_lane; ++i)
                        if (lane + 32 * i < m.d_c) part = fmaf(qc[i], cached(row[lane + 32 * i]), part);
#pragma unroll
                    for (int i = 0; i < k_rope_per_lane; ++i)
                        if (lane + 32 * i < m.d_r) part = fmaf(qr[i], cached(row[m.d_c + lane + 32 * i]), part);
                    score[r] = warp_sum(part) * a.scale;
                    group_max = fmaxf(group_max, score[r]);
                }
            }
            const float new_max = fmaxf(run_max, group_max);
            const float correction = expf(run_max - new_max);  // 0 for the first group (run_max = -inf)
            run_sum *= correction;
#pragma unroll
            for (int i = 0; i < k_latent_per_lane; ++i) acc[i] *= correction;
#pragma unroll
            for (int r = 0; r < k_score_rows; ++r) {
                if (g0 + r < rows) {
                    const float p = expf(score[r] - new_max);
                    run_sum += p;
                    const CacheT* row = tile + (g0 + r) * width;
#pragma unroll
                    for (int i = 0; i < k_latent_per_lane; ++i)
                        if (lane + 32 * i < m.d_c) acc[i] = fmaf(p, cached(row[lane + 32 * i]), acc[i]);
                }
            }
            run_max = new_max;
        }
    }
    if (!active) return;

    if (!a.split) {
        const float inv = 1.0f / run_sum;  // cpu::softmax multiplies by the reciprocal too
        float* out = a.ctx + (t * m.n_h + h) * m.d_c;
#pragma unroll
        for (int i = 0; i < k_latent_per_lane; ++i)
            if (lane + 32 * i < m.d_c) out[lane + 32 * i] = acc[i] * inv;
    } else {
        const int64_t part = (int64_t(blockIdx.x) * a.n + t) * m.n_h + h;
        float* out = a.part_acc + part * m.d_c;
#pragma unroll
        for (int i = 0; i < k_latent_per_lane; ++i)
            if (lane + 32 * i < m.d_c) out[lane + 32 * i] = acc[i];
        if (lane == 0) {
            a.part_ml[2 * part] = run_max;
            a.part_ml[2 * part + 1] = run_sum;
        }
    }
}

// Log-sum-exp merge of the splits of one (token, head), for k_merge_columns of
// its context's columns per block; the token's own plan says how many splits it
// has (every one holds at least one row). The first warp finds the largest
// maximum, each split's weight and the weighted total with its lanes; each
// thread then adds its column's parts in split order (merged_columns). (A
// 600-row context has 75 splits: one thread per head walking them one by one for
// the maximum, the weights, the total and four columns each took longer than the
// attention itself; on an H200, 2026-12-04, decode at 600 rows gained nothing from
// the finer splits until the merge was spread out too.) With one split the weight
// is expf(0) = 1 and the total is that split's sum, so the context is
// acc * (1 / sum), bit for bit what the single-block path writes.
constexpr int k_merge_columns = 128;

// The merge's weights for (token t, head h) by one warp: each split's expf(max_sp -
// max_all) into weight[sp], and 1 / the weighted total of the splits' sums into
// *inv_total (lane 0).
__device__ __forceinline__ void merge_weights(const AttentionLaunch& a, int64_t t, int64_t h, int n_split,
                                              float* weight, float* inv_total) {
    const auto part_of = [&](int sp) { return (sp * a.n + t) * a.m.n_h + h; };
    const int lane = int(threadIdx.x & 31);
    float max_all = -INFINITY;
    for (int sp = lane; sp < n_split; sp += 32) max_all = fmaxf(max_all, a.part_ml[2 * part_of(sp)]);
    max_all = warp_max(max_all);
    float total = 0.0f;
    for (int sp = lane; sp < n_split; sp += 32) {
        const float w = expf(a.part_ml[2 * part_of(sp)] - max_all);
        weight[sp] = w;
        total += a.part_ml[2 * part_of(sp) + 1] * w;
    }
    total = warp_sum(total);
    if (lane == 0) *inv_total = 1.0f / total;
}

// Columns c0 .. c0 + kCols - 1 of the merged context of (token t, head h) into out,
// for a block of kThreads threads whose thread tid calls it (stage: the block's
// slots): each column's parts in split order, the first term a plain product
// (fmaf(x, w, 0) would turn a -0 into +0), times 1 / the total. Loaded into
// registers, ptxas (CUDA 13) placed each part's load next to its multiply-add
// whatever the unrolling, two or three loads in flight a thread and a memory round
// trip every few splits (device_math.cuh: warp_rows_dot), which at 128 splits made
// the merge a chain of some 40 round trips a column. Instead each thread copies its
// columns' parts of kBatch splits at a time into its own slots (cp.async, kCols * 4
// bytes a split; no other thread reads them, so no block barrier), two batches in
// flight, the next issued before the current one is waited for. The sums and their
// order are those of one column alone, so the bits do not depend on kCols or kBatch.
template <int kCols, int kBatch, int kThreads>
struct MergeStage {
    static_assert(kCols == 1 || kCols == 2 || kCols == 4, "a copy of 4, 8 or 16 bytes");
    struct alignas(4 * kCols) Slot {
        float v[kCols];
    };
    Slot slot[2][kBatch][kThreads];
};

template <int kCols, int kBatch, int kThreads>
__device__ __forceinline__ void merged_columns(const AttentionLaunch& a, int64_t t, int64_t h, int n_split,
                                               int64_t c0, const float* weight, float inv_total,
                                               MergeStage<kCols, kBatch, kThreads>& stage, float (&out)[kCols]) {
    const int tid = int(threadIdx.x);
    // Part sp's columns: a.part_acc[((sp * n + t) * n_h + h) * d_c + c0 ...].
    const float* const first = a.part_acc + (t * a.m.n_h + h) * a.m.d_c + c0;
    const int64_t stride = a.n * a.m.n_h * a.m.d_c;
    const int batches = (n_split + kBatch - 1) / kBatch;  // the last one may be short
    const auto issue = [&](int64_t b) {
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
            const int sp = int(b) * kBatch + u;
            if (sp < n_split) __pipeline_memcpy_async(&stage.slot[b & 1][u][tid], first + sp * stride, 4 * kCols);
        }
        __pipeline_commit();
    };
    float v[kCols] = {};
    double_buffered(batches, issue, [&](int64_t b) {
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
            const int sp = int(b) * kBatch + u;
            if (sp >= n_split) break;
            const auto& x = stage.slot[b & 1][u][tid];
#pragma unroll
            for (int k = 0; k < kCols; ++k) v[k] = sp == 0 ? x.v[k] * weight[0] : fmaf(x.v[k], weight[sp], v[k]);
        }
    });
#pragma unroll
    for (int k = 0; k < kCols; ++k) out[k] = v[k] * inv_total;
}

// The merge kernel's slots: 16 splits of one column a thread (16 KB).
constexpr int k_merge_batch = 16;

__global__ void __launch_bounds__(k_merge_columns) attention_merge_kernel(AttentionLaunch a) {
    pdl_wait();  // first: see pdl.cuh
    __shared__ float weight[k_split_cap_max];
    __shared__ float inv_total;
    __shared__ MergeStage<1, k_merge_batch, k_merge_columns> stage;
    const MlaShape& m = a.m;
    const int64_t h = blockIdx.x, t = blockIdx.y;
    const int n_split = int(split_plan(*a.start_pos + t + 1, a.split, a.split_cap).count);
    if (threadIdx.x < 32) merge_weights(a, t, h, n_split, weight, &inv_total);
    __syncthreads();
    const int64_t c = int64_t(blockIdx.z) * k_merge_columns + threadIdx.x;
    if (c >= m.d_c) return;
    float v[1];
    merged_columns(a, t, h, n_split, c, weight, inv_total, stage, v);
    a.ctx[(t * m.n_h + h) * m.d_c + c] = v[0];
}

// The merge fused with the value absorption: o[t, h, r] = W_UV_h[r, :] . ctx[t, h, :]
// for k_merge_v_rows rows r a block, W_UV_h being kv_b's rows h (d_n + d_v) + d_n + r.
// Each block merges its head's context into shared memory (merged_columns: the
// merge kernel's bits), then each warp takes two rows in one staged pass
// (warp_rows_dot). Grid (d_v / k_merge_v_rows rounded up, n_h, tokens): a token's
// values do not depend on its batch. One launch instead of two (the merge, then
// launch_matvec's product over row groups).
constexpr int k_merge_v_warps = 8, k_merge_v_rows = 2 * k_merge_v_warps;
// Merge slots: 4 splits of two columns a thread (16 KB, with warp_rows_dot's 16 KB
// and the context's 2 KB under the 48 KB of static shared memory).
constexpr int k_merge_v_batch = 4;
static_assert(k_merge_v_warps <= k_row_dot_warps, "warp_rows_dot stages for k_row_dot_warps warps a block");

template <DeviceDtype DT>
__global__ void __launch_bounds__(32 * k_merge_v_warps) merge_absorb_v_kernel(AttentionLaunch a, DeviceMatrix kv_b,
                                                                               float* o) {
    pdl_wait();  // first: see pdl.cuh
    __shared__ float weight[k_split_cap_max];
    __shared__ float inv_total;
    __shared__ __align__(16) float ctx[k_attention_max_latent];
    __shared__ MergeStage<2, k_merge_v_batch, 32 * k_merge_v_warps> stage;
    const MlaShape& m = a.m;
    const int64_t h = blockIdx.y, t = blockIdx.z;
    const int64_t r0 = int64_t(blockIdx.x) * k_merge_v_rows + 2 * (threadIdx.x >> 5);  // the warp's first row
    const int64_t w0 = h * (m.d_n + m.d_v) + m.d_n + r0;
    // The warp's value rows asked for before the merge (DeviceMatrix::l2_prefetch).
    if (kv_b.l2_prefetch && r0 < m.d_v)
        prefetch_l2(row_pieces<DT>(kv_b, w0), (r0 + 1 < m.d_v ? 2 : 1) * kv_b.ld * k_elem_bytes<DT>);
    const int n_split = int(split_plan(*a.start_pos + t + 1, a.split, a.split_cap).count);
    if (threadIdx.x < 32) merge_weights(a, t, h, n_split, weight, &inv_total);
    __syncthreads();
    // Two adjacent columns a thread (d_c is a multiple of 4: merge_absorb_v_fits).
    for (int64_t c = 2 * threadIdx.x; c < m.d_c; c += 2 * blockDim.x) {
        float v[2];
        merged_columns(a, t, h, n_split, c, weight, inv_total, stage, v);
        ctx[c] = v[0];
        ctx[c + 1] = v[1];
    }
    __syncthreads();
    if (r0 >= m.d_v) return;  // (the whole warp; no block barrier follows)
    const bool second = r0 + 1 < m.d_v;
    const int64_t w1 = second ? w0 + 1 : w0;
    const uint4* const wrows[2] = {row_pieces<DT>(kv_b, w0), row_pieces<DT>(kv_b, w1)};
    const float* const srows[2] = {row_scales<DT>(kv_b, w0), row_scales<DT>(kv_b, w1)};
    const float* const xs[1] = {ctx};
    float acc[2][1] = {};
    warp_rows_dot<DT, 1, true, 2, 1, 1, true>(wrows, srows, kv_b.cols, xs, 1, acc);
    if ((threadIdx.x & 31) == 0) {
        float* out = o + (t * m.n_h + h) * m.d_v + r0;
        out[0] = acc[0][0];
        if (second) out[1] = acc[1][0];
    }
}

size_t tile_bytes(int64_t width, bool cache_bf16) {
    return size_t(k_tile_rows) * size_t(width) * (cache_bf16 ? sizeof(uint16_t) : sizeof(float));
}

}  // namespace

AttentionPlan plan_attention(const MlaShape& m, int n_sm, bool cache_bf16, size_t max_shared_per_block,
                             bool allow_mma, bool exact, int split_cap, int max_stages) {
    AttentionPlan p;
    const int64_t width = m.d_c + m.d_r, shared = int64_t(max_shared_per_block);
    p.mma = allow_mma && cache_bf16 && attention_mma_shape(m) && attention_mma_compiled();
    p.mma_parts = exact ? 3 : 2;
    const int64_t tile = int64_t(p.mma ? attention_mma_tile_bytes(width) : tile_bytes(width, cache_bf16));
    const int64_t fixed = p.mma ? int64_t(attention_mma_static_bytes()) : 0;
    // Two tiles when two blocks of two still fit a multiprocessor (about the
    // per-block limit on these GPUs), else one.
    p.stages = 2 * (2 * tile + fixed) <= shared ? 2 : tile + fixed <= shared ? 1 : 0;
    if (p.stages == 0) return p;
    p.stages = std::min(p.stages, std::max(max_stages, 1));
    // About two blocks per multiprocessor (the kernels' launch bounds) for one
    // token's splits of all head groups.
    const int64_t groups = ceil_div(m.n_h, int64_t(p.mma ? 16 : k_heads_per_block));
    p.split_cap = split_cap > 0 ? std::min(split_cap, k_split_cap_max)
                                : int(std::clamp<int64_t>(ceil_div(2 * int64_t(n_sm), groups), k_split_cap_min,
                                                          k_split_cap_max));
    p.max_parts = int64_t(k_split_max_tokens) * p.split_cap;
    const int bytes = int(p.stages * tile);
    if (p.mma)
        allow_attention_mma_smem(bytes);
    else if (cache_bf16)
        CETUS_CUDA(cudaFuncSetAttribute(mla_attention_kernel<uint16_t>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        bytes));
    else
        CETUS_CUDA(cudaFuncSetAttribute(mla_attention_kernel<float>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    return p;
}

bool launch_mla_attention(const float* q_abs, const float* q, const void* cache, bool cache_bf16, int64_t n,
                          const int64_t* start_pos, const MlaShape& m, float scale, int,
                          const AttentionPartials& parts, float* ctx, cudaStream_t s, const AbsorbV& absorb_v) {
    if (n <= 0) return false;
    const int64_t n_groups = ceil_div(m.n_h, k_heads_per_block);
    const bool split = n <= k_split_max_tokens;
    // A split batch launches every split a token can have (split_plan never
    // gives more than split_cap) whatever the position, which the host does
    // not read: blocks past a token's own count return at once, and the merge
    // always runs, reading only the token's own splits.
    const AttentionPlan& plan = parts.plan;
    const int64_t n_split = split ? plan.split_cap : 1;
    if (split && n * n_split > plan.max_parts)
        throw Error(ErrorCode::Device, "attention partial buffers too small (internal error)");
    if (plan.stages < 1 || plan.stages > 2 || plan.split_cap < 1 || plan.split_cap > k_split_cap_max)
        throw Error(ErrorCode::Device, "attention plan out of range (internal error)");

    AttentionLaunch a{q_abs, q,  cache, ctx,   parts.acc, parts.ml,        n,
                      start_pos, m, scale, split, plan.split_cap, plan.stages};
    if (plan.mma) {
        if (!cache_bf16 || !attention_mma_shape(m))
            throw Error(ErrorCode::Device, "tensor-core attention planned for a cache it cannot read (internal error)");
        launch_attention_mma(a, n_split, plan.mma_parts, s);
    } else {
        const dim3 grid{unsigned(n_split), unsigned(n_groups), unsigned(n)};
        const size_t smem = size_t(plan.stages) * tile_bytes(m.d_c + m.d_r, cache_bf16);
        if (cache_bf16) launch_pdl(mla_attention_kernel<uint16_t>, grid, 32 * k_heads_per_block, smem, s, a);
        else launch_pdl(mla_attention_kernel<float>, grid, 32 * k_heads_per_block, smem, s, a);
        CETUS_CUDA_LAUNCHED("mla_attention_kernel");
    }
    if (!split) return false;
    const DeviceMatrix* kv_b = absorb_v.kv_b;
    if (kv_b && merge_absorb_v_fits(*kv_b, m)) {
        const dim3 grid{unsigned(ceil_div(m.d_v, int64_t(k_merge_v_rows))), unsigned(m.n_h), unsigned(n)};
        const unsigned threads = 32 * k_merge_v_warps;
        switch (kv_b->dtype) {
        case DeviceDtype::F32:
            launch_pdl(merge_absorb_v_kernel<DeviceDtype::F32>, grid, threads, 0, s, a, *kv_b, absorb_v.o);
            break;
        case DeviceDtype::BF16:
            launch_pdl(merge_absorb_v_kernel<DeviceDtype::BF16>, grid, threads, 0, s, a, *kv_b, absorb_v.o);
            break;
        case DeviceDtype::F8_E4M3:
            launch_pdl(merge_absorb_v_kernel<DeviceDtype::F8_E4M3>, grid, threads, 0, s, a, *kv_b, absorb_v.o);
            break;
        case DeviceDtype::Ggml: break;  // (merge_absorb_v_fits refuses them)
        }
        CETUS_CUDA_LAUNCHED("merge_absorb_v_kernel");
        return true;
    }
    const dim3 merge_grid{unsigned(m.n_h), unsigned(n), unsigned(ceil_div(m.d_c, int64_t(k_merge_columns)))};
    launch_pdl(attention_merge_kernel, merge_grid, k_merge_columns, 0, s, a);
    CETUS_CUDA_LAUNCHED("attention_merge_kernel");
    return false;
}

bool merge_absorb_v_fits(const DeviceMatrix& kv_b, const MlaShape& m) {
    return kv_b.dtype != DeviceDtype::Ggml && kv_b.cols == m.d_c && m.d_c % 4 == 0 && m.d_c <= k_attention_max_latent &&
           kv_b.rows == m.n_h * (m.d_n + m.d_v);
}

}  // namespace cetus::cuda
