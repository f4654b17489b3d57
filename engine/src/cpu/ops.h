// CPU building blocks of the forward pass: fp32 arithmetic, OpenMP across
// output rows, and inner loops written so the compiler vectorises them.
// Each output element is computed in the same order whatever the batch size,
// so one token's result is bit-identical in a batch of 1 or of many.
#pragma once

#include "weights.h"

#include <bit>
#include <cmath>
#include <cstdint>

namespace cetus::cpu {

// Multiply-adds below which an operation stays on the calling thread (see matmul_strided).
inline constexpr int64_t k_parallel_min_macs = int64_t(1) << 20;

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

// out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i]   (HF's RMSNorm in fp32)
void rmsnorm(const float* x, const float* weight, float eps, int64_t n, float* out);
void rmsnorm_rows(const float* x, const float* weight, float eps, int64_t n_rows, int64_t n, float* out);

// In-place numerically stable softmax over n values.
void softmax(float* x, int64_t n);

}  // namespace cetus::cpu
