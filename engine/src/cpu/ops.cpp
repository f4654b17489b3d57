// matmul converts a block of weight rows to fp32 once (bf16/f16/fp8 are read
// in place from the map) and reuses it for every token of the batch.
#include "cpu/ops.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace cetus::cpu {
namespace {

constexpr int64_t k_row_block = 8;

// Register-tiled dot products. Every output element is reduced the same way
// whatever the tile it falls in: lane sums over k in steps of the vector width,
// a fixed pairwise horizontal sum, then the scalar tail in order. So a token's result
// is bit-identical in a batch of one (decode) or many (prefill, MTP verify).
// The lane count follows the widest vector unit the build targets.
#if defined(__AVX__)
constexpr int k_lanes = 8;
typedef float v8 __attribute__((vector_size(32)));
inline float hsum(v8 v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }
#else
constexpr int k_lanes = 4;
typedef float v8 __attribute__((vector_size(16)));
inline float hsum(v8 v) { return (v[0] + v[2]) + (v[1] + v[3]); }
#endif

inline v8 load8(const float* p) {
    v8 v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

template <int TT, int RR>
inline void tile(const float* x, int64_t ldx, const float* w, int64_t cols, float* y, int64_t ldy) {
    v8 acc[TT][RR];
    for (int t = 0; t < TT; ++t)
        for (int r = 0; r < RR; ++r) acc[t][r] = v8{};
    const int64_t n8 = cols - cols % k_lanes;
    for (int64_t k = 0; k < n8; k += k_lanes) {
        v8 wv[RR];
        for (int r = 0; r < RR; ++r) wv[r] = load8(w + r * cols + k);
        for (int t = 0; t < TT; ++t) {
            const v8 xv = load8(x + t * ldx + k);
            for (int r = 0; r < RR; ++r) acc[t][r] += xv * wv[r];
        }
    }
    for (int t = 0; t < TT; ++t)
        for (int r = 0; r < RR; ++r) {
            float s = hsum(acc[t][r]);
            for (int64_t k = n8; k < cols; ++k) s += x[t * ldx + k] * w[r * cols + k];
            y[t * ldy + r] = s;
        }
}

// y[t, r0 + r] for all tokens and the rows of one converted block.
void block_product(const float* x, int64_t ldx, int64_t n_tokens, const float* wb, int64_t n_rows, int64_t cols,
                   float* y, int64_t ldy) {
    int64_t t = 0;
    for (; t + 2 <= n_tokens; t += 2) {
        int64_t r = 0;
        for (; r + 4 <= n_rows; r += 4) tile<2, 4>(x + t * ldx, ldx, wb + r * cols, cols, y + t * ldy + r, ldy);
        for (; r < n_rows; ++r) tile<2, 1>(x + t * ldx, ldx, wb + r * cols, cols, y + t * ldy + r, ldy);
    }
    for (; t < n_tokens; ++t) {
        int64_t r = 0;
        for (; r + 4 <= n_rows; r += 4) tile<1, 4>(x + t * ldx, ldx, wb + r * cols, cols, y + t * ldy + r, ldy);
        for (; r < n_rows; ++r) tile<1, 1>(x + t * ldx, ldx, wb + r * cols, cols, y + t * ldy + r, ldy);
    }
}

}  // namespace

void matmul_strided(const float* x, int64_t ldx, int64_t n_tokens, const Matrix& w, float* y, int64_t ldy) {
    const int64_t rows = w.rows, cols = w.cols;
    const int64_t n_blocks = (rows + k_row_block - 1) / k_row_block;
    // Small products run on the calling thread: waking the pool for a parallel region
    // (the mains make OpenMP's idle threads sleep) costs tens of microseconds, more than
    // a product of fewer than ~2^20 multiply-adds takes on one core.
    const bool parallel = rows * cols * n_tokens >= k_parallel_min_macs && n_blocks > 1;
#pragma omp parallel if (parallel)
    {
        std::vector<float> buf(static_cast<size_t>(k_row_block * cols));
#pragma omp for schedule(static)
        for (int64_t b = 0; b < n_blocks; ++b) {
            const int64_t r0 = b * k_row_block, r1 = std::min(rows, r0 + k_row_block);
            for (int64_t r = r0; r < r1; ++r) w.row_to_f32(r, buf.data() + (r - r0) * cols);
            block_product(x, ldx, n_tokens, buf.data(), r1 - r0, cols, y + r0, ldy);
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
