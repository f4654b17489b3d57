// Matrix products of the forward pass: the fp32 warp-per-row kernel for up to
// k_max_small_tokens tokens (and always under CETUS_CUDA_EXACT=1), cuBLAS for
// longer chunks: bf16 tensor-core GEMMs with fp32 accumulation on activations
// rounded to bf16 (FP8 weights and GGUF blocks expanded to bf16 first), plain fp32 SGEMM
// (no TF32) for F32 weights; and prefill attention as GEMMs over keys and values
// expanded from the latent (the expanded form) or over the latent itself (the
// absorbed form), TF32 with an fp32 cache and bf16 with a bf16 cache.
#pragma once

#include "kernels.h"

#include <cstddef>
#include <cstdint>

struct cublasContext;

namespace cetus::cuda {

class Gemm {
public:
    static constexpr int64_t k_max_small_tokens = 16;

    // Scratch the cuBLAS path needs, in device memory owned by the caller.
    struct Scratch {
        uint16_t* act_bf16 = nullptr;  // activations rounded to bf16
        size_t act_elems = 0;
        // One FP8 matrix expanded to bf16, or rows of a GGUF one (at least one row).
        uint16_t* weight_bf16 = nullptr;
        size_t weight_elems = 0;
        void* workspace = nullptr;  // cuBLAS workspace
        size_t workspace_bytes = 0;
        // Prefill attention (mla_prefill): one batch of scores, then probabilities in place.
        float* attn_scores = nullptr;
        size_t attn_batch_elems = 0;
        // The expanded form (mla_prefill_expanded): keys and values of a group of heads,
        // [rows, heads, d_n + d_v] (bf16 with a bf16 cache, else fp32), and an fp32
        // cache's latent in two bf16 parts, [2, rows, d_c].
        void* expanded = nullptr;
        size_t expanded_bytes = 0;
        uint16_t* latent_bf16 = nullptr;
        size_t latent_elems = 0;
    };
    // Which form prefill attention takes: the cheaper by count of multiply-adds
    // (Auto), or one of them always (CETUS_CUDA_PREFILL_FORM=absorbed|expanded).
    enum class PrefillForm { Auto, Absorbed, Expanded };
    // Scores held at once by mla_prefill (128 MiB).
    static constexpr size_t k_attn_batch_elems = size_t(32) << 20;
    // Expanded keys and values held at once by mla_prefill_expanded (64 MiB; at least
    // one head's for the whole context).
    static constexpr size_t k_expanded_bytes = size_t(64) << 20;
    // Queries per block of mla_prefill_expanded: each block's products stop at its
    // last query's position, so the scores computed above the causal diagonal are a
    // block's triangle each (n^2 / (2 blocks) for n queries), not the chunk's (n^2 / 2).
    static constexpr int64_t k_expanded_query_block = 256;

    // fused_tail: the decode fusions' counter (last_block.cuh, zero between launches),
    // or null with the fusions off (CETUS_CUDA_FUSE=0).
    Gemm(cudaStream_t stream, bool exact, const Scratch& scratch, uint32_t* fused_tail);
    ~Gemm();
    Gemm(const Gemm&) = delete;
    Gemm& operator=(const Gemm&) = delete;

    bool exact() const { return m_exact; }
    uint32_t* fused_tail() const { return m_fused_tail; }
    void set_fused_tail(uint32_t* counter) { m_fused_tail = counter; }  // (the backend's step switch)
    // The stream the products are enqueued on (and cuBLAS's): decode's second stream for a
    // while (CudaBackend::moe, through StreamScope).
    cudaStream_t stream() const { return m_stream; }
    void set_stream(cudaStream_t s);

    // y[t, r] = sum_c W[r, c] x[t, c] for n tokens.  x: [n, ldx]; y: [n, ldy]
    void matmul(const DeviceMatrix& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy);
    // y = W x, then resid += y and out = rmsnorm(resid) with norm_w (launch_add_rmsnorm).
    // Up to k_fused_tail_max_tokens tokens with the fusions on: one launch of the fp32
    // kernel that adds each row where it is written and normalises in its last block,
    // the same bits.
    void matmul_add_rmsnorm(const DeviceMatrix& w, const float* x, int64_t ldx, int64_t n, float* y, float* resid,
                            const float* norm_w, float eps, float* out);
    // y1 = W1 x and y2 = W2 x (one launch on the fp32 kernel when the matrices allow).
    void matmul_pair(const DeviceMatrix& w1, float* y1, int64_t ldy1, const DeviceMatrix& w2, float* y2, int64_t ldy2,
                     const float* x, int64_t ldx, int64_t n);
    // g = silu(gate x) * (up x), [n, gate.rows]; u: scratch of the same shape for the
    // unfused path (cuBLAS, or matrices that cannot share a launch).
    void matmul_gate_up(const DeviceMatrix& gate, const DeviceMatrix& up, const float* x, int64_t ldx, int64_t n,
                        float* g, float* u);
    // The same with the fp32 kernel whatever n (router logits: routing choices follow fp32 inputs).
    void matmul_fp32(const DeviceMatrix& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy);
    // q_abs[t, h, :] = W_UK_h^T q_nope[t, h].  q: [n, n_h, d_n + d_r]; q_abs: [n, n_h, d_c]
    void absorb_q(const DeviceMatrix& kv_b, const float* q, int64_t n, const MlaShape& m, float* q_abs);
    // launch_latent_cache(latent, n), then absorb_q: one launch on the fp32 kernel with
    // the fusions on (launch_absorb_q_latent), else two.
    void latent_cache_absorb_q(const LatentCacheArgs& latent, const DeviceMatrix& kv_b, const float* q, int64_t n,
                               const MlaShape& m, float* q_abs);
    // o[t, h, :] = W_UV_h ctx[t, h].  ctx: [n, n_h, d_c]; o: [n, n_h, d_v]
    void absorb_v(const DeviceMatrix& kv_b, const float* ctx, int64_t n, const MlaShape& m, float* o);

    // Prefill attention in the absorbed form on the tensor cores, for chunks past
    // k_max_small_tokens outside exact mode: per head, scores = scale (q_abs c^T +
    // q_pe k_pe^T) over cache rows 0 .. start + n - 1, causal softmax, ctx = P c.
    // An fp32 cache takes TF32 (operands rounded to 10-bit mantissas), a bf16 cache
    // bf16 products (queries and probabilities rounded to bf16), both with fp32
    // accumulation: the same result as launch_mla_attention within that rounding.
    // q: [n, n_h, d_n + d_r] rotated, q_abs: [n, n_h, d_c], cache: the layer's rows
    // [capacity, d_c + d_r] of float or (cache_bf16) bf16 (rows up to start + n - 1
    // written), ctx: [n, n_h, d_c]. start: the chunk's first position (host).
    void mla_prefill(const float* q_abs, const float* q, const void* cache, bool cache_bf16, int64_t n,
                     int64_t start, const MlaShape& m, float scale, float* ctx);
    bool prefill_attention(int64_t n) const { return !small(n) && m_scratch.attn_batch_elems > 0; }

    // Prefill attention in the expanded form, for chunks past k_max_small_tokens
    // outside exact mode: per head, keys [k_nope ; k_pe] and values expanded from the
    // cached latent by kv_b_proj (k_nope, v = W_UK c, W_UV c), then scores = scale
    // (q_nope k_nope^T + q_pe k_pe^T), causal softmax and o = P v, with fp32 sums:
    // bf16 products with a bf16 cache, TF32 with an fp32 cache (as mla_prefill). The
    // same function as mla_prefill followed by absorb_v (mla.cpp's naive form on the
    // CPU), with d_n + d_r + d_v instead of 2 d_c + d_r multiply-adds per query, key
    // and head, plus the expansion of every cached row.
    // q: [n, n_h, d_n + d_r] rotated; cache as for mla_prefill; o: [n, n_h, d_v].
    void mla_prefill_expanded(const DeviceMatrix& kv_b, const float* q, const void* cache, bool cache_bf16,
                              int64_t n, int64_t start, const MlaShape& m, float scale, float* o);
    // Whether an n-token chunk from position start takes mla_prefill_expanded: a
    // prefill chunk with bf16 or FP8 kv_b and the scratch for it, and the form
    // (set_prefill_form) Expanded, or Auto and fewer multiply-adds than the absorbed
    // form, counting TF32 products (half bf16's rate) and products of split
    // operands (two each) twice.
    bool prefill_expanded(const DeviceMatrix& kv_b, int64_t n, int64_t start, const MlaShape& m,
                          bool cache_bf16) const;
    void set_prefill_form(PrefillForm f) { m_form = f; }
    // Whether n tokens take the fp32 warp-per-row kernels (always in exact mode).
    bool small(int64_t n) const { return m_exact || n <= k_max_small_tokens; }

private:
    // W as bf16 for cuBLAS, rows ld elements apart: the matrix itself, or its FP8
    // values or GGUF blocks (kv_b_proj; matmul expands a GGUF weight itself, a slice
    // of rows at a time) expanded into scratch.
    const uint16_t* weights_bf16(const DeviceMatrix& w, int64_t& ld);
    // x [n, cols] (row stride ldx) rounded to bf16 into scratch with row stride ldo.
    const uint16_t* activations_bf16(const float* x, int64_t ldx, int64_t n, int64_t cols, int64_t ldo);

    cudaStream_t m_stream;
    bool m_exact;
    uint32_t* m_fused_tail;
    Scratch m_scratch;
    PrefillForm m_form = PrefillForm::Auto;
    cublasContext* m_handle = nullptr;
};

// Gemm's launches go to another stream while this lives (products without a fused tail:
// the tails' counters are the main stream's).
class StreamScope {
public:
    StreamScope(Gemm& gemm, cudaStream_t s) : m_gemm(gemm), m_old(gemm.stream()) { gemm.set_stream(s); }
    ~StreamScope() {
        try {
            m_gemm.set_stream(m_old);
        } catch (...) {  // (cuBLAS refusing a stream it took before)
        }
    }
    StreamScope(const StreamScope&) = delete;
    StreamScope& operator=(const StreamScope&) = delete;

private:
    Gemm& m_gemm;
    cudaStream_t m_old;
};

}  // namespace cetus::cuda
