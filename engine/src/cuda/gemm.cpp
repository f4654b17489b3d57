// cuBLAS is column-major: a row-major product y[n, R] = x[n, C] W[R, C]^T is
// computed as y^T (R x n, ld ldy) = op_T(W^T) x^T, where the row-major W is the
// column-major C x R matrix W^T with leading dimension ld.
#include "gemm.h"

#include "cuda_util.h"
#include "mla_cost.h"

#include <cublas_v2.h>

#include <algorithm>
#include <string>

namespace cetus::cuda {
namespace {

void check_cublas(cublasStatus_t st, const char* what, const char* file, int line) {
    if (st == CUBLAS_STATUS_SUCCESS) return;
    const char* base = std::strrchr(file, '/');
    throw Error(st == CUBLAS_STATUS_ALLOC_FAILED ? ErrorCode::OutOfMemory : ErrorCode::Device,
                std::string(what) + " failed (" + (base ? base + 1 : file) + ":" + std::to_string(line) +
                    "): " + cublasGetStatusString(st));
}

#define CETUS_CUBLAS(call) check_cublas((call), #call, __FILE__, __LINE__)

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

[[noreturn]] void scratch_overflow(const char* what) {
    throw Error(ErrorCode::Device, std::string("CUDA backend: the ") + what + " scratch is too small (internal error)");
}

}  // namespace

Gemm::Gemm(cudaStream_t stream, bool exact, const Scratch& scratch, uint32_t* fused_tail)
    : m_stream(stream), m_exact(exact), m_fused_tail(fused_tail), m_scratch(scratch) {
    if (exact) return;  // every product takes the fp32 kernel
    cublasHandle_t h = nullptr;
    CETUS_CUBLAS(cublasCreate(&h));
    try {
        CETUS_CUBLAS(cublasSetStream(h, stream));
        CETUS_CUBLAS(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));  // no TF32 in the fp32 SGEMM
        CETUS_CUBLAS(cublasSetWorkspace(h, scratch.workspace, scratch.workspace_bytes));
    } catch (...) {
        cublasDestroy(h);
        throw;
    }
    m_handle = h;
}

Gemm::~Gemm() {
    if (m_handle) cublasDestroy(m_handle);
}

void Gemm::set_stream(cudaStream_t s) {
    if (m_handle) CETUS_CUBLAS(cublasSetStream(m_handle, s));
    m_stream = s;
}

const uint16_t* Gemm::weights_bf16(const DeviceMatrix& w, int64_t& ld) {
    ld = w.ld;
    if (w.dtype == DeviceDtype::BF16) return static_cast<const uint16_t*>(w.data);
    if (w.dtype == DeviceDtype::Ggml) {
        ld = ggml_bf16_ld(w);
        if (size_t(w.rows * ld) > m_scratch.weight_elems) scratch_overflow("GGUF expansion");
        launch_ggml_matrix_to_bf16(w, m_scratch.weight_bf16, m_stream);
        return m_scratch.weight_bf16;
    }
    if (w.dtype != DeviceDtype::F8_E4M3) throw Error(ErrorCode::Device, "gemm: no bf16 form of the weight (internal error)");
    if (size_t(w.rows * w.ld) > m_scratch.weight_elems) scratch_overflow("FP8 expansion");
    launch_dequant_fp8(w, m_scratch.weight_bf16, m_stream);
    return m_scratch.weight_bf16;
}

const uint16_t* Gemm::activations_bf16(const float* x, int64_t ldx, int64_t n, int64_t cols, int64_t ldo) {
    if (size_t(n * ldo) > m_scratch.act_elems) scratch_overflow("bf16 activation");
    launch_to_bf16(x, ldx, n, cols, m_scratch.act_bf16, ldo, m_stream);
    return m_scratch.act_bf16;
}

void Gemm::matmul_fp32(const DeviceMatrix& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy) {
    launch_matvec(w, x, ldx, n, y, ldy, RowGroups{1, w.rows, 0, 0, 0, 0}, m_stream);
}

void Gemm::matmul_add_rmsnorm(const DeviceMatrix& w, const float* x, int64_t ldx, int64_t n, float* y, float* resid,
                              const float* norm_w, float eps, float* out) {
    if (n <= 0) return;
    if (m_fused_tail && n <= k_fused_tail_max_tokens) {  // (the fp32 kernel: such batches are small)
        launch_matvec_add_rmsnorm(w, x, ldx, n, y, resid, norm_w, eps, out, m_fused_tail, m_stream);
        return;
    }
    matmul(w, x, ldx, n, y, w.rows);
    launch_add_rmsnorm(resid, y, norm_w, eps, n, w.rows, out, m_stream);
}

void Gemm::matmul(const DeviceMatrix& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy) {
    if (n <= 0) return;
    if (small(n)) {
        matmul_fp32(w, x, ldx, n, y, ldy);
        return;
    }
    const float one = 1.0f, zero = 0.0f;
    if (w.dtype == DeviceDtype::F32) {
        CETUS_CUBLAS(cublasSgemm(m_handle, CUBLAS_OP_T, CUBLAS_OP_N, int(w.rows), int(n), int(w.cols), &one,
                                 static_cast<const float*>(w.data), int(w.ld), x, int(ldx), &zero, y, int(ldy)));
        return;
    }
    const int64_t ldb = round_up(w.cols, 8);  // 16-byte aligned rows for the tensor cores
    const uint16_t* xb = activations_bf16(x, ldx, n, w.cols, ldb);
    if (w.dtype == DeviceDtype::Ggml) {
        // GGUF blocks: as many rows at a time as the scratch holds, expanded to bf16.
        const int64_t ld = round_up(w.cols, 8), slice = int64_t(m_scratch.weight_elems) / ld;
        if (slice < 1) scratch_overflow("GGUF expansion");
        for (int64_t r0 = 0; r0 < w.rows; r0 += slice) {
            DeviceMatrix part = w;
            part.rows = std::min(slice, w.rows - r0);
            part.data = static_cast<const char*>(w.data) + r0 * w.ld;
            launch_ggml_matrix_to_bf16(part, m_scratch.weight_bf16, m_stream);
            CETUS_CUBLAS(cublasGemmEx(m_handle, CUBLAS_OP_T, CUBLAS_OP_N, int(part.rows), int(n), int(w.cols), &one,
                                      m_scratch.weight_bf16, CUDA_R_16BF, int(ld), xb, CUDA_R_16BF, int(ldb), &zero,
                                      y + r0, CUDA_R_32F, int(ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        }
        return;
    }
    int64_t ldw = 0;
    const uint16_t* wb = weights_bf16(w, ldw);
    CETUS_CUBLAS(cublasGemmEx(m_handle, CUBLAS_OP_T, CUBLAS_OP_N, int(w.rows), int(n), int(w.cols), &one, wb,
                              CUDA_R_16BF, int(ldw), xb, CUDA_R_16BF, int(ldb), &zero, y, CUDA_R_32F, int(ldy),
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void Gemm::matmul_pair(const DeviceMatrix& w1, float* y1, int64_t ldy1, const DeviceMatrix& w2, float* y2,
                       int64_t ldy2, const float* x, int64_t ldx, int64_t n) {
    if (n <= 0) return;
    if (small(n) && matvec_fusable(w1, w2)) {
        launch_matvec_pair(w1, y1, ldy1, w2, y2, ldy2, x, ldx, n, m_stream);
        return;
    }
    matmul(w1, x, ldx, n, y1, ldy1);
    matmul(w2, x, ldx, n, y2, ldy2);
}

void Gemm::matmul_gate_up(const DeviceMatrix& gate, const DeviceMatrix& up, const float* x, int64_t ldx, int64_t n,
                          float* g, float* u) {
    if (n <= 0) return;
    const int64_t I = gate.rows;
    if (small(n) && matvec_fusable(gate, up) && I == up.rows) {
        launch_matvec_gate_up(gate, up, x, ldx, n, g, I, m_stream);
        return;
    }
    matmul(gate, x, ldx, n, g, I);
    matmul(up, x, ldx, n, u, I);
    launch_silu_mul(g, u, n * I, m_stream);
}

void Gemm::latent_cache_absorb_q(const LatentCacheArgs& latent, const DeviceMatrix& kv_b, const float* q, int64_t n,
                                 const MlaShape& m, float* q_abs) {
    if (n <= 0) return;
    if (m_fused_tail && small(n)) {
        launch_absorb_q_latent(kv_b, q, n, m, q_abs, latent, m_stream);
        return;
    }
    launch_latent_cache(latent, n, m_stream);
    absorb_q(kv_b, q, n, m, q_abs);
}

// Per head h (batch entry): q_abs_h^T (d_c x n) = W_UK_h^T (d_c x d_n, the
// row-major rows read column-major, no transpose) times q_nope_h^T (d_n x n).
void Gemm::absorb_q(const DeviceMatrix& kv_b, const float* q, int64_t n, const MlaShape& m, float* q_abs) {
    if (n <= 0) return;
    if (small(n)) {
        launch_absorb_q(kv_b, q, n, m, q_abs, m_stream);
        return;
    }
    const float one = 1.0f, zero = 0.0f;
    const int64_t d_qk = m.d_n + m.d_r;
    if (kv_b.dtype == DeviceDtype::F32) {
        CETUS_CUBLAS(cublasSgemmStridedBatched(
            m_handle, CUBLAS_OP_N, CUBLAS_OP_N, int(m.d_c), int(n), int(m.d_n), &one,
            static_cast<const float*>(kv_b.data), int(kv_b.ld), (m.d_n + m.d_v) * kv_b.ld, q, int(m.n_h * d_qk), d_qk,
            &zero, q_abs, int(m.n_h * m.d_c), m.d_c, int(m.n_h)));
        return;
    }
    const uint16_t* qb = activations_bf16(q, m.n_h * d_qk, n, m.n_h * d_qk, m.n_h * d_qk);
    int64_t ldw = 0;
    const uint16_t* wb = weights_bf16(kv_b, ldw);
    const int64_t stride_w = (m.d_n + m.d_v) * ldw;
    CETUS_CUBLAS(cublasGemmStridedBatchedEx(m_handle, CUBLAS_OP_N, CUBLAS_OP_N, int(m.d_c), int(n), int(m.d_n), &one,
                                            wb, CUDA_R_16BF, int(ldw), stride_w, qb, CUDA_R_16BF,
                                            int(m.n_h * d_qk), d_qk, &zero, q_abs, CUDA_R_32F, int(m.n_h * m.d_c),
                                            m.d_c, int(m.n_h), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// Per head h: o_h^T (d_v x n) = op_T(W_UV_h^T) (d_c x d_v read column-major) times ctx_h^T (d_c x n).
void Gemm::absorb_v(const DeviceMatrix& kv_b, const float* ctx, int64_t n, const MlaShape& m, float* o) {
    if (n <= 0) return;
    if (small(n)) {
        launch_matvec(kv_b, ctx, m.n_h * m.d_c, n, o, m.n_h * m.d_v,
                      RowGroups{m.n_h, m.d_v, m.d_n, m.d_n + m.d_v, m.d_c, m.d_v}, m_stream);
        return;
    }
    const float one = 1.0f, zero = 0.0f;
    if (kv_b.dtype == DeviceDtype::F32) {
        CETUS_CUBLAS(cublasSgemmStridedBatched(
            m_handle, CUBLAS_OP_T, CUBLAS_OP_N, int(m.d_v), int(n), int(m.d_c), &one,
            static_cast<const float*>(kv_b.data) + m.d_n * kv_b.ld, int(kv_b.ld), (m.d_n + m.d_v) * kv_b.ld, ctx,
            int(m.n_h * m.d_c), m.d_c, &zero, o, int(m.n_h * m.d_v), m.d_v, int(m.n_h)));
        return;
    }
    const uint16_t* cb = activations_bf16(ctx, m.n_h * m.d_c, n, m.n_h * m.d_c, m.n_h * m.d_c);
    int64_t ldw = 0;
    const uint16_t* wb = weights_bf16(kv_b, ldw);
    const int64_t stride_w = (m.d_n + m.d_v) * ldw, first_v = m.d_n * ldw;
    CETUS_CUBLAS(cublasGemmStridedBatchedEx(m_handle, CUBLAS_OP_T, CUBLAS_OP_N, int(m.d_v), int(n), int(m.d_c), &one,
                                            wb + first_v, CUDA_R_16BF, int(ldw), stride_w, cb, CUDA_R_16BF,
                                            int(m.n_h * m.d_c), m.d_c, &zero, o, CUDA_R_32F, int(m.n_h * m.d_v),
                                            m.d_v, int(m.n_h), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// Per batch of heads h0 .. h0 + gb - 1 and queries t0 .. t0 + nb - 1 (as many
// as the score buffer holds), with w = start + t0 + nb cache rows visible to the
// last of them. An fp32 cache: on TF32 tensor cores straight from the fp32 buffers,
//   scores_h^T (w x nb, ld) = scale c (w x d_c: the row-major cache read column-major,
//       transposed) q_abs_h^T (d_c x nb, rows n_h * d_c apart)
//       + scale k_pe (w x d_r) q_pe_h^T (d_r x nb, rows n_h * (d_n + d_r) apart),
//   probs = causal softmax of the scores, in place,
//   ctx_h^T (d_c x nb, rows n_h * d_c apart) = c^T (d_c x w) probs_h^T (w x nb).
// A bf16 cache: bf16 tensor cores with fp32 accumulation. The queries, as
// [q_abs ; q_pe] rows of the cache's width (a product of depth d_c + d_r for the
// scores), are split into a bf16 part and a bf16 remainder, and the scores are the
// sum of both products: a score is as large as |q| |c|, so a query rounded to bf16
// alone (2^-9) can move the larger scores by tenths, and their exponentials by
// more; split, the queries keep about 2^-17. The softmax writes the probabilities
// as bf16 over the first half of each score row's bytes (bf16 rows 2 ld apart),
// each within 2^-9 of its own value, as any bf16 activation.
void Gemm::mla_prefill(const float* q_abs, const float* q, const void* cache, bool cache_bf16, int64_t n,
                       int64_t start, const MlaShape& m, float scale, float* ctx) {
    if (n <= 0) return;
    const int64_t W = m.d_c + m.d_r, d_qk = m.d_n + m.d_r, rows = start + n;
    const int64_t ld_max = round_up(rows, 8);
    const int64_t budget = int64_t(m_scratch.attn_batch_elems);
    if (budget < ld_max) scratch_overflow("attention score");
    float* scores = m_scratch.attn_scores;
    // Whole heads (all n queries) when they fit, else query blocks of one head.
    const int64_t tq = std::min(n, budget / ld_max);
    const int64_t g = tq == n ? std::clamp<int64_t>(budget / (n * ld_max), 1, m.n_h) : 1;
    const float one = 1.0f, zero = 0.0f;
    const auto tf32 = CUBLAS_COMPUTE_32F_FAST_TF32;
    const uint16_t *q_hi = nullptr, *q_lo = nullptr;  // [n, n_h, W] each: the split queries (bf16 cache)
    if (cache_bf16) {
        const int64_t elems = n * m.n_h * W;
        if (size_t(2 * elems) > m_scratch.act_elems) scratch_overflow("bf16 query");
        uint16_t* hi = m_scratch.act_bf16;
        uint16_t* lo = m_scratch.act_bf16 + elems;
        launch_to_bf16_split(q_abs, m.d_c, n * m.n_h, m.d_c, hi, lo, W, m_stream);
        launch_to_bf16_split(q + m.d_n, d_qk, n * m.n_h, m.d_r, hi + m.d_c, lo + m.d_c, W, m_stream);
        q_hi = hi;
        q_lo = lo;
    }
    const float* cf = static_cast<const float*>(cache);
    const uint16_t* cb = static_cast<const uint16_t*>(cache);
    for (int64_t h0 = 0; h0 < m.n_h; h0 += g) {
        const int64_t gb = std::min(g, m.n_h - h0);
        for (int64_t t0 = 0; t0 < n; t0 += tq) {
            const int64_t nb = std::min(tq, n - t0), w = start + t0 + nb, ld = round_up(w, 8);
            const int64_t first = t0 * m.n_h + h0;  // (token t0, head h0)
            if (cache_bf16) {
                for (const uint16_t* part : {q_hi, q_lo}) {
                    CETUS_CUBLAS(cublasGemmStridedBatchedEx(
                        m_handle, CUBLAS_OP_T, CUBLAS_OP_N, int(w), int(nb), int(W), &scale, cb, CUDA_R_16BF, int(W),
                        0, part + first * W, CUDA_R_16BF, int(m.n_h * W), W, part == q_hi ? &zero : &one, scores,
                        CUDA_R_32F, int(ld), nb * ld, int(gb), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
                }
                launch_prefill_softmax(scores, gb * nb, nb, ld, w, start + t0 + 1, true, m_stream);
                CETUS_CUBLAS(cublasGemmStridedBatchedEx(
                    m_handle, CUBLAS_OP_N, CUBLAS_OP_N, int(m.d_c), int(nb), int(w), &one, cb, CUDA_R_16BF, int(W), 0,
                    reinterpret_cast<const uint16_t*>(scores), CUDA_R_16BF, int(2 * ld), 2 * nb * ld, &zero,
                    ctx + first * m.d_c, CUDA_R_32F, int(m.n_h * m.d_c), m.d_c, int(gb), CUBLAS_COMPUTE_32F,
                    CUBLAS_GEMM_DEFAULT));
                continue;
            }
            CETUS_CUBLAS(cublasGemmStridedBatchedEx(
                m_handle, CUBLAS_OP_T, CUBLAS_OP_N, int(w), int(nb), int(m.d_c), &scale, cf, CUDA_R_32F, int(W), 0,
                q_abs + first * m.d_c, CUDA_R_32F, int(m.n_h * m.d_c), m.d_c, &zero, scores, CUDA_R_32F, int(ld),
                nb * ld, int(gb), tf32, CUBLAS_GEMM_DEFAULT));
            CETUS_CUBLAS(cublasGemmStridedBatchedEx(
                m_handle, CUBLAS_OP_T, CUBLAS_OP_N, int(w), int(nb), int(m.d_r), &scale, cf + m.d_c, CUDA_R_32F,
                int(W), 0, q + first * d_qk + m.d_n, CUDA_R_32F, int(m.n_h * d_qk), d_qk, &one, scores, CUDA_R_32F,
                int(ld), nb * ld, int(gb), tf32, CUBLAS_GEMM_DEFAULT));
            launch_prefill_softmax(scores, gb * nb, nb, ld, w, start + t0 + 1, false, m_stream);
            CETUS_CUBLAS(cublasGemmStridedBatchedEx(
                m_handle, CUBLAS_OP_N, CUBLAS_OP_N, int(m.d_c), int(nb), int(w), &one, cf, CUDA_R_32F, int(W), 0,
                scores, CUDA_R_32F, int(ld), nb * ld, &zero, ctx + first * m.d_c, CUDA_R_32F, int(m.n_h * m.d_c),
                m.d_c, int(gb), tf32, CUBLAS_GEMM_DEFAULT));
        }
    }
}

bool Gemm::prefill_expanded(const DeviceMatrix& kv_b, int64_t n, int64_t start, const MlaShape& m,
                            bool cache_bf16) const {
    if (!prefill_attention(n) || !m_scratch.expanded || kv_b.dtype == DeviceDtype::F32) return false;
    if (m_form != PrefillForm::Auto) return m_form == PrefillForm::Expanded;
    // Multiply-adds per head (mla_cost.h), TF32 products and split operands counted
    // twice: the absorbed scores are TF32 (fp32 cache) or take split queries (bf16),
    // its sums TF32 or bf16; the expansion reads an fp32 latent in two bf16 parts and
    // the expanded products are then TF32. mla_prefill computes whole rectangles.
    const double x = cache_bf16 ? 1.0 : 2.0;
    MlaFormCosts gpu;
    gpu.absorbed_scores = 2.0;
    gpu.absorbed_sums = x;
    gpu.expanded = x;
    gpu.absorbed_causal = false;
    gpu.query_block = k_expanded_query_block;
    const MlaDims d{double(m.d_c), double(m.d_r), double(m.d_n), double(m.d_v)};
    return mla_expanded_macs(d, n, start, gpu) < mla_absorbed_macs(d, n, start, gpu);
}

// Per group of heads h0 .. h0 + gh - 1 (as many as the expansion scratch holds for
// all rows): u = c W^T for the group's kv_b rows, u[s] = [k_nope_h ; v_h] per head
// ([rows, gh, d_n + d_v]; the row-major product as in matmul). Then per block of
// queries t0 .. t0 + nb - 1 (w = start + t0 + nb rows visible to the last of them)
// and batch of heads (as many as the score buffer holds), per head h:
//   scores_h^T (w x nb, ld) = scale k_nope_h (w x d_n, rows gh (d_n + d_v) apart)
//       q_nope_h^T (d_n x nb, rows n_h (d_n + d_r) apart)
//       + scale k_pe (w x d_r, the cache rows' rope part) q_pe_h^T,
//   probs = causal softmax of the scores, in place,
//   o_h^T (d_v x nb, rows n_h d_v apart) = v_h^T (d_v x w) probs_h^T (w x nb).
// A bf16 cache: u, the queries and the probabilities (rows 2 ld apart) as bf16,
// all products bf16 with fp32 sums; each operand within 2^-9 of its value, as in
// a bf16 model's own attention. An fp32 cache keeps the absorbed form's TF32
// precision: u in fp32 from the latent in two bf16 parts (two products, the
// latent to about 2^-17), then TF32 products of fp32 operands.
void Gemm::mla_prefill_expanded(const DeviceMatrix& kv_b, const float* q, const void* cache, bool cache_bf16,
                                int64_t n, int64_t start, const MlaShape& m, float scale, float* o) {
    if (n <= 0) return;
    const int64_t W = m.d_c + m.d_r, d_qk = m.d_n + m.d_r, d_u = m.d_n + m.d_v, rows = start + n;
    const int64_t ld_max = round_up(rows, 8);
    const int64_t budget = int64_t(m_scratch.attn_batch_elems);
    if (budget < ld_max) scratch_overflow("attention score");
    const int64_t u_size = cache_bf16 ? 2 : 4;  // bytes of an element of u, the queries and the cache
    const int64_t heads_per_group =
        std::min<int64_t>(m.n_h, int64_t(m_scratch.expanded_bytes) / (rows * d_u * u_size));
    if (heads_per_group < 1) scratch_overflow("expanded key");
    int64_t ldw = 0;
    const uint16_t* wb = weights_bf16(kv_b, ldw);
    float* scores = m_scratch.attn_scores;
    const float one = 1.0f, zero = 0.0f;
    const int64_t tq = std::min({n, budget / ld_max, k_expanded_query_block});
    // The operands' type and the products' precision; the latent as the expansion
    // reads it (a bf16 cache as it is, an fp32 cache's in two parts); the queries.
    const cudaDataType t_op = cache_bf16 ? CUDA_R_16BF : CUDA_R_32F;
    const cublasComputeType_t compute = cache_bf16 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32;
    const uint16_t *lat_hi = static_cast<const uint16_t*>(cache), *lat_lo = nullptr;
    int64_t ld_lat = W;
    const void* qd = q;
    if (cache_bf16) {
        qd = activations_bf16(q, m.n_h * d_qk, n, m.n_h * d_qk, m.n_h * d_qk);
    } else {
        if (size_t(2 * rows * m.d_c) > m_scratch.latent_elems) scratch_overflow("bf16 latent");
        uint16_t* hi = m_scratch.latent_bf16;
        launch_to_bf16_split(static_cast<const float*>(cache), W, rows, m.d_c, hi, hi + rows * m.d_c, m.d_c,
                             m_stream);
        lat_hi = hi;
        lat_lo = hi + rows * m.d_c;
        ld_lat = m.d_c;
    }
    const char* pe = static_cast<const char*>(cache) + m.d_c * u_size;  // k_pe of row 0 (rows W apart)
    const auto u_at = [&](int64_t e) { return static_cast<const char*>(m_scratch.expanded) + e * u_size; };
    const auto q_at = [&](int64_t e) { return static_cast<const char*>(qd) + e * u_size; };
    const int64_t ld_p = cache_bf16 ? 2 : 1;  // the probabilities' row stride, in ld
    for (int64_t h0 = 0; h0 < m.n_h; h0 += heads_per_group) {
        const int64_t gh = std::min(heads_per_group, m.n_h - h0), ldu = gh * d_u;
        for (const uint16_t* part : {lat_hi, lat_lo}) {
            if (!part) break;
            CETUS_CUBLAS(cublasGemmEx(m_handle, CUBLAS_OP_T, CUBLAS_OP_N, int(ldu), int(rows), int(m.d_c), &one,
                                      wb + h0 * d_u * ldw, CUDA_R_16BF, int(ldw), part, CUDA_R_16BF,
                                      int(ld_lat), part == lat_hi ? &zero : &one, m_scratch.expanded, t_op, int(ldu),
                                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        }
        for (int64_t t0 = 0; t0 < n; t0 += tq) {
            const int64_t nb = std::min(tq, n - t0), w = start + t0 + nb, ld = round_up(w, 8);
            const int64_t g = std::clamp<int64_t>(budget / (nb * ld), 1, gh);
            for (int64_t h1 = 0; h1 < gh; h1 += g) {
                const int64_t gb = std::min(g, gh - h1), first = t0 * m.n_h + h0 + h1;  // (token t0, head h0 + h1)
                CETUS_CUBLAS(cublasGemmStridedBatchedEx(
                    m_handle, CUBLAS_OP_T, CUBLAS_OP_N, int(w), int(nb), int(m.d_n), &scale, u_at(h1 * d_u), t_op,
                    int(ldu), d_u, q_at(first * d_qk), t_op, int(m.n_h * d_qk), d_qk, &zero, scores, CUDA_R_32F,
                    int(ld), nb * ld, int(gb), compute, CUBLAS_GEMM_DEFAULT));
                CETUS_CUBLAS(cublasGemmStridedBatchedEx(
                    m_handle, CUBLAS_OP_T, CUBLAS_OP_N, int(w), int(nb), int(m.d_r), &scale, pe, t_op, int(W), 0,
                    q_at(first * d_qk + m.d_n), t_op, int(m.n_h * d_qk), d_qk, &one, scores, CUDA_R_32F, int(ld),
                    nb * ld, int(gb), compute, CUBLAS_GEMM_DEFAULT));
                launch_prefill_softmax(scores, gb * nb, nb, ld, w, start + t0 + 1, cache_bf16, m_stream);
                CETUS_CUBLAS(cublasGemmStridedBatchedEx(
                    m_handle, CUBLAS_OP_N, CUBLAS_OP_N, int(m.d_v), int(nb), int(w), &one, u_at(h1 * d_u + m.d_n),
                    t_op, int(ldu), d_u, scores, t_op, int(ld_p * ld), ld_p * nb * ld, &zero, o + first * m.d_v,
                    CUDA_R_32F, int(m.n_h * m.d_v), m.d_v, int(gb), compute, CUBLAS_GEMM_DEFAULT));
            }
        }
    }
}

}  // namespace cetus::cuda
