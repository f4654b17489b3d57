// CPU building blocks of the forward pass: fp32 arithmetic, OpenMP across
// output rows, and inner loops written so the compiler vectorises them.
// Each output element is computed in the same order whatever the batch size,
// so one token's result is bit-identical in a batch of 1 or of many.
#pragma once

#include "cpu/ggml_int8.h"
#include "weights.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <vector>

namespace cetus::cpu {

// Multiply-adds below which an operation stays on the calling thread (see matmul_strided).
inline constexpr int64_t k_parallel_min_macs = int64_t(1) << 20;

// Runs body(begin, end) over [0, n): split into contiguous ranges, one per OpenMP
// thread, when parallel and not already inside a parallel region (a MoE layer hands
// experts' rows to the threads); otherwise once on the calling thread without opening
// a region, since even a region of one thread ends in a barrier and a futex call.
template <class Body>
void for_ranges(int64_t n, bool parallel, Body&& body) {
    if (!parallel || n < 2 || omp_in_parallel()) {
        body(int64_t(0), n);
        return;
    }
#pragma omp parallel
    {
        const int64_t nth = omp_get_num_threads(), id = omp_get_thread_num();
        const int64_t per = (n + nth - 1) / nth, begin = std::min(n, id * per), end = std::min(n, begin + per);
        if (begin < end) body(begin, end);
    }
}

inline float dot(const float* a, const float* b, int64_t n) {
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
    return acc;
}

// y += a * x
inline void axpy(float a, const float* x, float* y, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// The same over bf16 values b (a bf16 latent cache's rows): each widened to fp32
// exactly (bits << 16), then the fp32 loops above.
inline float dot(const float* a, const uint16_t* b, int64_t n) {
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < n; ++i) acc += a[i] * std::bit_cast<float>(uint32_t(b[i]) << 16);
    return acc;
}

inline void axpy(float a, const uint16_t* x, float* y, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] += a * std::bit_cast<float>(uint32_t(x[i]) << 16);
}

inline float silu(float z) { return z / (1.0f + std::exp(-z)); }

// An fp32 matrix [rows, cols] in caller-owned memory, as a Matrix for matmul.
struct F32View {
    const float* data;
    int64_t rows, cols;
    Matrix matrix() const {
        Matrix m;
        m.dtype = Dtype::F32;
        m.rows = rows;
        m.cols = cols;
        m.data = data;
        return m;
    }
};

// y[t, r] = sum_c x[t, c] * W[r, c]   x: [n_tokens, W.cols] (row stride ldx), y: [n_tokens, W.rows] (stride ldy)
void matmul(const float* x, int64_t n_tokens, const Matrix& w, float* y);
void matmul_strided(const float* x, int64_t ldx, int64_t n_tokens, const Matrix& w, float* y, int64_t ldy);

// Activations prepared once for products with several matrices, or with a matrix a
// range of rows at a time (a MoE layer hands its experts' rows to the threads in
// chunks): the fp32 rows, and the int8 form of each block size that the int8
// matrices among them need (ggml_int8.h), quantised once instead of per product.
struct ProductInput {
    const float* x = nullptr;
    int64_t ldx = 0, n_tokens = 0, cols = 0;
    Int8Rows q32, q256;
};
// x [n_tokens, cols] (row stride ldx, kept by pointer) for the matrices ws, each of
// cols columns. Throws Error on another width.
void prepare_input(const float* x, int64_t ldx, int64_t n_tokens, int64_t cols, std::span<const Matrix* const> ws,
                   ProductInput& in);
inline void prepare_input(const float* x, int64_t ldx, int64_t n_tokens, int64_t cols,
                          std::initializer_list<const Matrix*> ws, ProductInput& in) {
    prepare_input(x, ldx, n_tokens, cols, std::span<const Matrix* const>(ws.begin(), ws.size()), in);
}
// Tokens rows[0 .. n) of a prepared input (fp32 rows copied into storage).
void gather_input(const ProductInput& in, const int64_t* rows, int64_t n, std::vector<float>& storage,
                  ProductInput& out);
// Rows [r0, r1) of in times w into y[t * ldy + r], on the calling thread; each value
// the bits matmul gives it. in must be prepared for w (Error otherwise).
void matmul_rows(const ProductInput& in, const Matrix& w, int64_t r0, int64_t r1, float* y, int64_t ldy);
// The same into y[t * ldy + r - r0] (y holds the rows [r0, r1) alone).
void matmul_rows_at(const ProductInput& in, const Matrix& w, int64_t r0, int64_t r1, float* y, int64_t ldy);

// Rows [r0, r1) of w as fp32 into out ([r1 - r0, w.cols]): Matrix::row_to_f32's values,
// GGUF blocks, BF16 and FP8 through the products' vectorised decoders.
void rows_to_f32(const Matrix& w, int64_t r0, int64_t r1, float* out);

// One product of a prepared input with several matrices (the attention's query and
// latent projections read the same activations): y of each is [n_tokens, w->rows]
// with row stride ldy. Their rows go to the threads together, one parallel region
// for all when together they are worth it; each value the bits matmul gives it.
struct ProductOut {
    const Matrix* w;
    float* y;
    int64_t ldy;
};
void matmul_many(const ProductInput& in, std::initializer_list<ProductOut> outs);

// Attention over cached rows (fp32, or bf16 widened exactly), row stride ld, for a
// group of n_q queries at once, each block of rows read once for all of them:
// y[i, s] = q[i] . row_s[0 .. cols) for s < n_rows (matmul's sums: a value's bits do not
// depend on n_q or n_rows), and out[i, k] += sum over s < n_rows of p[i, s] * row_s[k]
// for k < cols, taken in the order of s (a weight of 0 leaves a value as it is).
void rows_dot(const float* q, int64_t ldq, int64_t n_q, const float* rows, int64_t ld, int64_t n_rows, int64_t cols,
              float* y, int64_t ldy);
void rows_dot(const float* q, int64_t ldq, int64_t n_q, const uint16_t* rows, int64_t ld, int64_t n_rows, int64_t cols,
              float* y, int64_t ldy);
void weighted_rows(const float* p, int64_t ldp, int64_t n_q, const float* rows, int64_t ld, int64_t n_rows,
                   int64_t cols, float* out, int64_t ldo);
void weighted_rows(const float* p, int64_t ldp, int64_t n_q, const uint16_t* rows, int64_t ld, int64_t n_rows,
                   int64_t cols, float* out, int64_t ldo);

// out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i]   (HF's RMSNorm in fp32)
void rmsnorm(const float* x, const float* weight, float eps, int64_t n, float* out);
void rmsnorm_rows(const float* x, const float* weight, float eps, int64_t n_rows, int64_t n, float* out);

// In-place numerically stable softmax over n values.
void softmax(float* x, int64_t n);

}  // namespace cetus::cpu
