// matmul reads F32 weights in place, BF16 and FP8 weights in place for small
// batches (decode, MTP drafts and verify: decoded in registers, no conversion
// buffer), and otherwise converts a block of weight rows to fp32 once (from the
// map, vectorised for BF16, FP8 and GGUF blocks) and reuses it for every token of
// the batch; GGUF blocks always go that way, their rows decoded 8 at a time.
#include "cpu/ops.h"

#include "dtype.h"
#include "ggml_blocks.h"

// The 32-byte vectors below never cross a call boundary (everything on them is
// inlined into the per-ISA clones), so GCC's note about their ABI does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

#include <algorithm>
#include <cstring>
#include <vector>

namespace cetus::cpu {
namespace {

constexpr int64_t k_row_block = 8;

// Register-tiled dot products. Every output element is reduced the same way
// whatever the tile it falls in and wherever its weights come from: lane sums
// over k in steps of 8, a fixed pairwise horizontal sum, then the scalar tail
// in order. So a token's result is bit-identical in a batch of one (decode) or
// many (prefill, MTP verify). Vectors are 8 floats in every build; the kernels
// below are compiled for x86-64-v4, v3 and the baseline and picked at load time
// (target_clones), with the same results on each (no contraction to FMA: the
// engine builds with -ffp-contract=off).
constexpr int k_lanes = 8;
typedef float v8 __attribute__((vector_size(32)));
typedef uint16_t u16x8 __attribute__((vector_size(16)));
typedef uint16_t u16x16 __attribute__((vector_size(32)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));
#define CETUS_INLINE inline __attribute__((always_inline))
CETUS_INLINE float hsum(v8 v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }

// Weight rows as fp32 (a converted block) or read in place as bf16.
struct F32Rows {
    const float* w;
    int64_t ld;
    CETUS_INLINE v8 load8(int64_t r, int64_t k) const {
        v8 v;
        std::memcpy(&v, w + r * ld + k, sizeof v);
        return v;
    }
    CETUS_INLINE float at(int64_t r, int64_t k) const { return w[r * ld + k]; }
    CETUS_INLINE F32Rows from(int64_t r0) const { return {w + r0 * ld, ld}; }
};
struct Bf16Rows {
    const uint16_t* w;
    int64_t ld;
    CETUS_INLINE v8 load8(int64_t r, int64_t k) const {
        // bf16 -> f32 is the bits in the upper half: interleave zeros below them.
        u16x8 h;
        std::memcpy(&h, w + r * ld + k, sizeof h);
        const u16x16 bits = __builtin_shufflevector(u16x8{}, h, 0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
        v8 v;
        std::memcpy(&v, &bits, sizeof v);
        return v;
    }
    CETUS_INLINE float at(int64_t r, int64_t k) const {
        const uint32_t bits = uint32_t(w[r * ld + k]) << 16;
        float f;
        std::memcpy(&f, &bits, 4);
        return f;
    }
    CETUS_INLINE Bf16Rows from(int64_t r0) const { return {w + r0 * ld, ld}; }
};

// The FP8 kernels below need GCC on x86-64 (clang rejects the generic tiles
// calling an AVX2 loader before flattening); other builds convert FP8 rows
// with Matrix::row_to_f32.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CETUS_FP8_AVX2 1
#include <immintrin.h>
#endif

#ifdef CETUS_FP8_AVX2
// e4m3fn -> f32 exactly as k_fp8_e4m3_table, through the half-float converter:
// the code's low seven bits shifted left by 7 are a half float whose exponent and
// mantissa fields are the code's (0.eeee.mmm0000000), worth 2^-8 of the e4m3 value
// for normal codes (bias 15 against 7) and subnormal ones alike (m 2^-17 against
// m 2^-9); times 256 (exact) it is the value. The sign moves to bit 15, and
// S.1111.111 is NaN. AVX2 with F16C only (byte widening has no portable vector
// form GCC compiles well); other machines convert rows with Matrix::row_to_f32.
__attribute__((target("avx2,f16c"))) inline v8 fp8_e4m3_to_f32x8(const uint8_t* p) {
    const __m128i b = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));  // 8 x u16
    const __m128i mag = _mm_and_si128(b, _mm_set1_epi16(0x7f));
    const __m128i half = _mm_or_si128(_mm_slli_epi16(mag, 7), _mm_slli_epi16(_mm_and_si128(b, _mm_set1_epi16(0x80)), 8));
    __m256 f = _mm256_mul_ps(_mm256_cvtph_ps(half), _mm256_set1_ps(256.0f));
    const __m256i nan = _mm256_cvtepi16_epi32(_mm_cmpeq_epi16(mag, _mm_set1_epi16(0x7f)));
    f = _mm256_blendv_ps(f, _mm256_set1_ps(__builtin_nanf("")), _mm256_castsi256_ps(nan));
    v8 v;
    std::memcpy(&v, &f, sizeof v);
    return v;
}

// FP8 rows with their 128x128 block scales; row0 is the first row's index in the matrix.
struct Fp8Rows {
    const uint8_t* w;
    int64_t ld;
    const float* scale_inv;
    int64_t scale_cols, row0;
    CETUS_INLINE float scale(int64_t r, int64_t k) const { return scale_inv[((row0 + r) / 128) * scale_cols + k / 128]; }
    // Not always_inline: it is inlined where the AVX2 callers below flatten the
    // generic tiles (GCC checks targets at each inlining step).
    __attribute__((target("avx2,f16c"))) inline v8 load8(int64_t r, int64_t k) const {  // k % 8: one scale block
        return fp8_e4m3_to_f32x8(w + r * ld + k) * scale(r, k);
    }
    CETUS_INLINE float at(int64_t r, int64_t k) const { return k_fp8_e4m3_table[w[r * ld + k]] * scale(r, k); }
    CETUS_INLINE Fp8Rows from(int64_t r0) const { return {w + r0 * ld, ld, scale_inv, scale_cols, row0 + r0}; }
};

#endif  // CETUS_FP8_AVX2

// Rows [r0, r1) of w as fp32 into out ([r1 - r0, cols]), the values of Matrix::row_to_f32.
template <class W>
CETUS_INLINE void convert_rows(const W& w, int64_t n_rows, int64_t cols, float* out) {
    const int64_t n8 = cols - cols % k_lanes;
    for (int64_t r = 0; r < n_rows; ++r) {
        for (int64_t k = 0; k < n8; k += k_lanes) {
            const v8 v = w.load8(r, k);
            std::memcpy(out + r * cols + k, &v, sizeof v);
        }
        for (int64_t k = n8; k < cols; ++k) out[r * cols + k] = w.at(r, k);
    }
}

CETUS_INLINE v8 load8(const float* p) {
    v8 v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

template <int TT, int RR, class W>
CETUS_INLINE void tile(const float* x, int64_t ldx, const W& w, int64_t cols, float* y, int64_t ldy) {
    v8 acc[TT][RR];
    for (int t = 0; t < TT; ++t)
        for (int r = 0; r < RR; ++r) acc[t][r] = v8{};
    const int64_t n8 = cols - cols % k_lanes;
    for (int64_t k = 0; k < n8; k += k_lanes) {
        v8 wv[RR];
        for (int r = 0; r < RR; ++r) wv[r] = w.load8(r, k);
        for (int t = 0; t < TT; ++t) {
            const v8 xv = load8(x + t * ldx + k);
            for (int r = 0; r < RR; ++r) acc[t][r] += xv * wv[r];
        }
    }
    for (int t = 0; t < TT; ++t)
        for (int r = 0; r < RR; ++r) {
            float s = hsum(acc[t][r]);
            for (int64_t k = n8; k < cols; ++k) s += x[t * ldx + k] * w.at(r, k);
            y[t * ldy + r] = s;
        }
}

// y[t, r] for all tokens and n_rows weight rows.
template <class W>
CETUS_INLINE void block_product(const float* x, int64_t ldx, int64_t n_tokens, const W& w, int64_t n_rows, int64_t cols,
                          float* y, int64_t ldy) {
    int64_t t = 0;
    for (; t + 2 <= n_tokens; t += 2) {
        int64_t r = 0;
        for (; r + 4 <= n_rows; r += 4) tile<2, 4>(x + t * ldx, ldx, w.from(r), cols, y + t * ldy + r, ldy);
        for (; r < n_rows; ++r) tile<2, 1>(x + t * ldx, ldx, w.from(r), cols, y + t * ldy + r, ldy);
    }
    for (; t < n_tokens; ++t) {
        int64_t r = 0;
        for (; r + 4 <= n_rows; r += 4) tile<1, 4>(x + t * ldx, ldx, w.from(r), cols, y + t * ldy + r, ldy);
        for (; r < n_rows; ++r) tile<1, 1>(x + t * ldx, ldx, w.from(r), cols, y + t * ldy + r, ldy);
    }
}

#if defined(__x86_64__) && !defined(__AVX__)
#define CETUS_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else  // other machines, or a build tuned for this one (CETUS_NATIVE): one version
#define CETUS_CPU_CLONES
#endif

CETUS_CPU_CLONES void product_f32(const float* x, int64_t ldx, int64_t n_tokens, const float* w, int64_t n_rows,
                                  int64_t cols, float* y, int64_t ldy) {
    block_product(x, ldx, n_tokens, F32Rows{w, cols}, n_rows, cols, y, ldy);
}

CETUS_CPU_CLONES void product_bf16(const float* x, int64_t ldx, int64_t n_tokens, const uint16_t* w, int64_t n_rows,
                                   int64_t cols, float* y, int64_t ldy) {
    block_product(x, ldx, n_tokens, Bf16Rows{w, cols}, n_rows, cols, y, ldy);
}

CETUS_CPU_CLONES void convert_bf16(const uint16_t* w, int64_t n_rows, int64_t cols, float* out) {
    convert_rows(Bf16Rows{w, cols}, n_rows, cols, out);
}

// GCC inlines everything a clone calls with flatten; clang refuses flatten beside
// target_clones (and inlines the small decoders by itself).
#if defined(__GNUC__) && !defined(__clang__)
#define CETUS_FLATTEN __attribute__((flatten))
#else
#define CETUS_FLATTEN
#endif

// Rows of a GGUF block-quantised matrix as fp32: ggml_blocks' decoders (the values of
// Matrix::row_to_f32) inlined here, so they are vectorised for each instruction set.
CETUS_CPU_CLONES CETUS_FLATTEN void convert_ggml(const GgmlTypeInfo& type, const std::byte* rows,
                                                            uint64_t row_bytes, int64_t n_rows, int64_t cols,
                                                            float* out) {
    const int64_t n_blocks = cols / type.block;
    ggml_blocks::with_block_decoder(type.id, [&](auto decode) {
        for (int64_t r = 0; r < n_rows; ++r)
            for (int64_t b = 0; b < n_blocks; ++b)
                decode(rows + r * row_bytes + b * type.bytes, out + r * cols + b * type.block);
    });
}

#ifdef CETUS_FP8_AVX2
__attribute__((target("avx2,f16c"), flatten)) void product_fp8(const float* x, int64_t ldx, int64_t n_tokens, const Fp8Rows& w,
                                                 int64_t n_rows, int64_t cols, float* y, int64_t ldy) {
    block_product(x, ldx, n_tokens, w, n_rows, cols, y, ldy);
}

__attribute__((target("avx2,f16c"), flatten)) void convert_fp8(const Fp8Rows& w, int64_t n_rows, int64_t cols, float* out) {
    convert_rows(w, n_rows, cols, out);
}

bool has_avx2_f16c() {  // the FP8 decode in the products needs both (every AVX2 processor has F16C)
    static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
    return yes;
}
#else
bool has_avx2_f16c() { return false; }
#endif

// Batches up to this size read BF16 and FP8 weights in place; larger ones
// convert a block of rows once and reuse it for every token.
constexpr int64_t k_direct_tokens = 4;

}  // namespace

void matmul_strided(const float* x, int64_t ldx, int64_t n_tokens, const Matrix& w, float* y, int64_t ldy) {
    const int64_t rows = w.rows, cols = w.cols;
    const int64_t n_blocks = (rows + k_row_block - 1) / k_row_block;
    // Small products run on the calling thread: waking the pool for a parallel region
    // (the mains make OpenMP's idle threads sleep) costs tens of microseconds, more than
    // a product of fewer than ~2^20 multiply-adds takes on one core.
    // Decoding GGUF blocks costs a few times a multiply-add per weight: such products are
    // worth the threads from a quarter of the size.
    const int64_t work = rows * cols * (w.dtype == Dtype::Ggml ? std::max<int64_t>(n_tokens, 4) : n_tokens);
    const bool parallel = work >= k_parallel_min_macs && n_blocks > 1;
#pragma omp parallel if (parallel)
    {
        const bool small = n_tokens <= k_direct_tokens;
        const bool fp8_vector = w.dtype == Dtype::F8_E4M3 && has_avx2_f16c();
        const bool direct = w.dtype == Dtype::F32 || ((w.dtype == Dtype::BF16 || fp8_vector) && small);
        std::vector<float> buf(direct ? 0 : static_cast<size_t>(k_row_block * cols));
#ifdef CETUS_FP8_AVX2
        const Fp8Rows fp8{static_cast<const uint8_t*>(w.data), cols, w.scale_inv, w.scale_cols, 0};
#endif
        const GgmlTypeInfo* ggml = w.dtype == Dtype::Ggml ? ggml_type_info(w.ggml_type) : nullptr;
        const uint64_t row_bytes = w.row_bytes();
#pragma omp for schedule(static)
        for (int64_t b = 0; b < n_blocks; ++b) {
            const int64_t r0 = b * k_row_block, r1 = std::min(rows, r0 + k_row_block);
            float* yb = y + r0;
            if (w.dtype == Dtype::F32) {
                product_f32(x, ldx, n_tokens, static_cast<const float*>(w.data) + r0 * cols, r1 - r0, cols, yb, ldy);
            } else if (direct && w.dtype == Dtype::BF16) {
                product_bf16(x, ldx, n_tokens, static_cast<const uint16_t*>(w.data) + r0 * cols, r1 - r0, cols, yb, ldy);
#ifdef CETUS_FP8_AVX2
            } else if (direct) {
                product_fp8(x, ldx, n_tokens, fp8.from(r0), r1 - r0, cols, yb, ldy);
            } else if (fp8_vector) {
                convert_fp8(fp8.from(r0), r1 - r0, cols, buf.data());
                product_f32(x, ldx, n_tokens, buf.data(), r1 - r0, cols, yb, ldy);
#endif
            } else if (ggml) {
                convert_ggml(*ggml, static_cast<const std::byte*>(w.data) + uint64_t(r0) * row_bytes, row_bytes, r1 - r0,
                             cols, buf.data());
                product_f32(x, ldx, n_tokens, buf.data(), r1 - r0, cols, yb, ldy);
            } else {
                if (w.dtype == Dtype::BF16) convert_bf16(static_cast<const uint16_t*>(w.data) + r0 * cols, r1 - r0, cols, buf.data());
                else
                    for (int64_t r = r0; r < r1; ++r) w.row_to_f32(r, buf.data() + (r - r0) * cols);
                product_f32(x, ldx, n_tokens, buf.data(), r1 - r0, cols, yb, ldy);
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
