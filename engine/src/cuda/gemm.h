// Matrix products of the forward pass: the fp32 warp-per-row kernel for up to
// k_max_small_tokens tokens (and always under CETUS_CUDA_EXACT=1), cuBLAS for
// longer chunks: bf16 tensor-core GEMMs with fp32 accumulation on activations
// rounded to bf16 (FP8 weights expanded to bf16 first), plain fp32 SGEMM
// (no TF32) for F32 weights.
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
        uint16_t* weight_bf16 = nullptr;  // one FP8 matrix expanded to bf16
        size_t weight_elems = 0;
        void* workspace = nullptr;  // cuBLAS workspace
        size_t workspace_bytes = 0;
    };

    Gemm(cudaStream_t stream, bool exact, const Scratch& scratch);
    ~Gemm();
    Gemm(const Gemm&) = delete;
    Gemm& operator=(const Gemm&) = delete;

    bool exact() const { return m_exact; }

    // y[t, r] = sum_c W[r, c] x[t, c] for n tokens.  x: [n, ldx]; y: [n, ldy]
    void matmul(const DeviceMatrix& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy);
    // The same with the fp32 kernel whatever n (router logits: routing choices follow fp32 inputs).
    void matmul_fp32(const DeviceMatrix& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy);
    // q_abs[t, h, :] = W_UK_h^T q_nope[t, h].  q: [n, n_h, d_n + d_r]; q_abs: [n, n_h, d_c]
    void absorb_q(const DeviceMatrix& kv_b, const float* q, int64_t n, const MlaShape& m, float* q_abs);
    // o[t, h, :] = W_UV_h ctx[t, h].  ctx: [n, n_h, d_c]; o: [n, n_h, d_v]
    void absorb_v(const DeviceMatrix& kv_b, const float* ctx, int64_t n, const MlaShape& m, float* o);

private:
    bool small(int64_t n) const { return m_exact || n <= k_max_small_tokens; }
    // W as bf16 for cuBLAS: the matrix itself, or its FP8 values expanded into scratch.
    const uint16_t* weights_bf16(const DeviceMatrix& w);
    // x [n, cols] (row stride ldx) rounded to bf16 into scratch with row stride ldo.
    const uint16_t* activations_bf16(const float* x, int64_t ldx, int64_t n, int64_t cols, int64_t ldo);

    cudaStream_t m_stream;
    bool m_exact;
    Scratch m_scratch;
    cublasContext* m_handle = nullptr;
};

}  // namespace cetus::cuda
