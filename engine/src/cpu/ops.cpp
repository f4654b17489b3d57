// matmul converts a block of weight rows to fp32 once (bf16/f16/fp8 are read
// in place from the map) and reuses it for every token of the batch.
#include "cpu/ops.h"

#include <algorithm>
#include <vector>

namespace cetus::cpu {
namespace {
constexpr int64_t k_row_block = 8;
}

void matmul_strided(const float* x, int64_t ldx, int64_t n_tokens, const Matrix& w, float* y, int64_t ldy) {
    const int64_t rows = w.rows, cols = w.cols;
    const int64_t n_blocks = (rows + k_row_block - 1) / k_row_block;
    // Small products run on the calling thread: a parallel region costs more than they do.
    const bool parallel = rows * cols * n_tokens >= (int64_t(1) << 15) && n_blocks > 1;
#pragma omp parallel if (parallel)
    {
        std::vector<float> buf(static_cast<size_t>(k_row_block * cols));
#pragma omp for schedule(static)
        for (int64_t b = 0; b < n_blocks; ++b) {
            const int64_t r0 = b * k_row_block, r1 = std::min(rows, r0 + k_row_block);
            for (int64_t r = r0; r < r1; ++r) w.row_to_f32(r, buf.data() + (r - r0) * cols);
            for (int64_t t = 0; t < n_tokens; ++t) {
                const float* xt = x + t * ldx;
                float* yt = y + t * ldy;
                for (int64_t r = r0; r < r1; ++r) yt[r] = dot(xt, buf.data() + (r - r0) * cols, cols);
            }
        }
    }
}

void matmul(const float* x, int64_t n_tokens, const Matrix& w, float* y) {
    matmul_strided(x, w.cols, n_tokens, w, y, w.rows);
}

void rmsnorm(const float* x, const float* weight, float eps, int64_t n, float* out) {
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
    const float r = 1.0f / std::sqrt(ss / float(n) + eps);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) out[i] = weight[i] * (x[i] * r);
}

void rmsnorm_rows(const float* x, const float* weight, float eps, int64_t n_rows, int64_t n, float* out) {
    for (int64_t t = 0; t < n_rows; ++t) rmsnorm(x + t * n, weight, eps, n, out + t * n);
}

void softmax(float* x, int64_t n) {
    float m = x[0];
    for (int64_t i = 1; i < n; ++i) m = std::max(m, x[i]);
    float sum = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
        x[i] = std::exp(x[i] - m);
        sum += x[i];
    }
    const float inv = 1.0f / sum;
    for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

}  // namespace cetus::cpu
