// cuBLAS is column-major: a row-major product y[n, R] = x[n, C] W[R, C]^T is
// computed as y^T (R x n, ld ldy) = op_T(W^T) x^T, where the row-major W is the
// column-major C x R matrix W^T with leading dimension ld.
#include "gemm.h"

#include "cuda_util.h"

#include <cublas_v2.h>

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

Gemm::Gemm(cudaStream_t stream, bool exact, const Scratch& scratch)
    : m_stream(stream), m_exact(exact), m_scratch(scratch) {
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

const uint16_t* Gemm::weights_bf16(const DeviceMatrix& w) {
    if (w.dtype == DeviceDtype::BF16) return static_cast<const uint16_t*>(w.data);
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
    const uint16_t* wb = weights_bf16(w);
    CETUS_CUBLAS(cublasGemmEx(m_handle, CUBLAS_OP_T, CUBLAS_OP_N, int(w.rows), int(n), int(w.cols), &one, wb,
                              CUDA_R_16BF, int(w.ld), xb, CUDA_R_16BF, int(ldb), &zero, y, CUDA_R_32F, int(ldy),
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
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
    const int64_t d_qk = m.d_n + m.d_r, stride_w = (m.d_n + m.d_v) * kv_b.ld;
    if (kv_b.dtype == DeviceDtype::F32) {
        CETUS_CUBLAS(cublasSgemmStridedBatched(
            m_handle, CUBLAS_OP_N, CUBLAS_OP_N, int(m.d_c), int(n), int(m.d_n), &one,
            static_cast<const float*>(kv_b.data), int(kv_b.ld), stride_w, q, int(m.n_h * d_qk), d_qk, &zero, q_abs,
            int(m.n_h * m.d_c), m.d_c, int(m.n_h)));
        return;
    }
    const uint16_t* qb = activations_bf16(q, m.n_h * d_qk, n, m.n_h * d_qk, m.n_h * d_qk);
    const uint16_t* wb = weights_bf16(kv_b);
    CETUS_CUBLAS(cublasGemmStridedBatchedEx(m_handle, CUBLAS_OP_N, CUBLAS_OP_N, int(m.d_c), int(n), int(m.d_n), &one,
                                            wb, CUDA_R_16BF, int(kv_b.ld), stride_w, qb, CUDA_R_16BF,
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
    const int64_t stride_w = (m.d_n + m.d_v) * kv_b.ld, first_v = m.d_n * kv_b.ld;
    if (kv_b.dtype == DeviceDtype::F32) {
        CETUS_CUBLAS(cublasSgemmStridedBatched(
            m_handle, CUBLAS_OP_T, CUBLAS_OP_N, int(m.d_v), int(n), int(m.d_c), &one,
            static_cast<const float*>(kv_b.data) + first_v, int(kv_b.ld), stride_w, ctx, int(m.n_h * m.d_c), m.d_c,
            &zero, o, int(m.n_h * m.d_v), m.d_v, int(m.n_h)));
        return;
    }
    const uint16_t* cb = activations_bf16(ctx, m.n_h * m.d_c, n, m.n_h * m.d_c, m.n_h * m.d_c);
    const uint16_t* wb = weights_bf16(kv_b);
    CETUS_CUBLAS(cublasGemmStridedBatchedEx(m_handle, CUBLAS_OP_T, CUBLAS_OP_N, int(m.d_v), int(n), int(m.d_c), &one,
                                            wb + first_v, CUDA_R_16BF, int(kv_b.ld), stride_w, cb, CUDA_R_16BF,
                                            int(m.n_h * m.d_c), m.d_c, &zero, o, CUDA_R_32F, int(m.n_h * m.d_v),
                                            m.d_v, int(m.n_h), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace cetus::cuda
