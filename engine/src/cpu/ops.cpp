// matmul reads F32 weights in place, BF16 and FP8 weights in place for small
// batches (decode, MTP drafts and verify: decoded in registers, no conversion
// buffer), and otherwise converts a block of weight rows to fp32 once (from the
// map, vectorised for BF16, FP8 and GGUF blocks) and reuses it for every token of
// the batch; GGUF blocks always go that way, their rows decoded 8 at a time.
#include "cpu/ops.h"

#include "cetus/error.h"

#include "cpu/ggml_int8.h"
#include "dtype.h"
#include "ggml_blocks.h"

// The 32-byte vectors below never cross a call boundary (everything on them is
// inlined into the per-ISA clones), so GCC's note about their ABI does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include "cpu/avx2_codes.h"
#endif

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

// Every token against rows [0, RR) of w: tiles of 4 tokens (4 rows only), 2 and 1.
template <int RR, class W>
CETUS_INLINE void tokens_on_rows(const float* x, int64_t ldx, int64_t n_tokens, const W& w, int64_t cols, float* y,
                                 int64_t ldy) {
    int64_t t = 0;
    if constexpr (RR == 4)
        for (; t + 4 <= n_tokens; t += 4) tile<4, 4>(x + t * ldx, ldx, w, cols, y + t * ldy, ldy);
    for (; t + 2 <= n_tokens; t += 2) tile<2, RR>(x + t * ldx, ldx, w, cols, y + t * ldy, ldy);
    for (; t < n_tokens; ++t) tile<1, RR>(x + t * ldx, ldx, w, cols, y + t * ldy, ldy);
}

// block_product's values with the rows outer: each block of 4 rows is read once for
// every token (the latent cache's rows against a group of queries).
template <class W>
CETUS_INLINE void block_product_rows_outer(const float* x, int64_t ldx, int64_t n_tokens, const W& w, int64_t n_rows,
                                           int64_t cols, float* y, int64_t ldy) {
    int64_t r = 0;
    for (; r + 4 <= n_rows; r += 4) tokens_on_rows<4>(x, ldx, n_tokens, w.from(r), cols, y + r, ldy);
    for (; r < n_rows; ++r) tokens_on_rows<1>(x, ldx, n_tokens, w.from(r), cols, y + r, ldy);
}

// out[i, k] += p[i, s] * row_s[k] for s = 0, 1, ... in order (a product then a sum,
// each rounded), blocks of 8 rows read once for every i.
template <int S, class W>
CETUS_INLINE void weighted_block(const float* p, int64_t ldp, int64_t n_q, const W& w, int64_t cols, float* out,
                                 int64_t ldo) {
    const int64_t n8 = cols - cols % k_lanes;
    for (int64_t k = 0; k < n8; k += k_lanes) {
        v8 r[S];
        for (int j = 0; j < S; ++j) r[j] = w.load8(j, k);
        for (int64_t i = 0; i < n_q; ++i) {
            v8 acc = load8(out + i * ldo + k);
            for (int j = 0; j < S; ++j) acc += p[i * ldp + j] * r[j];
            std::memcpy(out + i * ldo + k, &acc, sizeof acc);
        }
    }
    for (int64_t k = n8; k < cols; ++k)
        for (int64_t i = 0; i < n_q; ++i) {
            float acc = out[i * ldo + k];
            for (int j = 0; j < S; ++j) acc += p[i * ldp + j] * w.at(j, k);
            out[i * ldo + k] = acc;
        }
}
template <class W>
CETUS_INLINE void weighted_rows(const float* p, int64_t ldp, int64_t n_q, const W& w, int64_t n_rows, int64_t cols,
                                float* out, int64_t ldo) {
    int64_t s = 0;
    for (; s + 8 <= n_rows; s += 8) weighted_block<8>(p + s, ldp, n_q, w.from(s), cols, out, ldo);
    for (; s < n_rows; ++s) weighted_block<1>(p + s, ldp, n_q, w.from(s), cols, out, ldo);
}

CETUS_CPU_CLONES void rows_dot_f32(const float* q, int64_t ldq, int64_t n_q, const float* rows, int64_t ld,
                                   int64_t n_rows, int64_t cols, float* y, int64_t ldy) {
    block_product_rows_outer(q, ldq, n_q, F32Rows{rows, ld}, n_rows, cols, y, ldy);
}
CETUS_CPU_CLONES void rows_dot_bf16(const float* q, int64_t ldq, int64_t n_q, const uint16_t* rows, int64_t ld,
                                    int64_t n_rows, int64_t cols, float* y, int64_t ldy) {
    block_product_rows_outer(q, ldq, n_q, Bf16Rows{rows, ld}, n_rows, cols, y, ldy);
}
CETUS_CPU_CLONES void weighted_rows_f32(const float* p, int64_t ldp, int64_t n_q, const float* rows, int64_t ld,
                                        int64_t n_rows, int64_t cols, float* out, int64_t ldo) {
    weighted_rows(p, ldp, n_q, F32Rows{rows, ld}, n_rows, cols, out, ldo);
}
CETUS_CPU_CLONES void weighted_rows_bf16(const float* p, int64_t ldp, int64_t n_q, const uint16_t* rows, int64_t ld,
                                         int64_t n_rows, int64_t cols, float* out, int64_t ldo) {
    weighted_rows(p, ldp, n_q, Bf16Rows{rows, ld}, n_rows, cols, out, ldo);
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
// GGUF blocks decoded in AVX2 registers, 32 values at a time, every block type. Each
// value takes the operations of ggml_blocks.h's scalar decoders (the code as an exact
// float, a product rounded, then a sum or difference rounded: no FMA), so the same
// bits; the compiler left those partly scalar, and they were most of a GGUF decode step.
namespace blocks_avx2 {
using namespace avx2_codes;

// 32 byte codes (int8 where Signed, else uint8) as 32 exact floats in f[0 .. 3].
template <bool Signed> CETUS_AVX2_INLINE void codes32(__m256i q, __m256 (&f)[4]) {
    const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    const __m128i part[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int p = 0; p < 4; ++p)
        f[p] = _mm256_cvtepi32_ps(Signed ? _mm256_cvtepi8_epi32(part[p])
                                         : _mm256_cvtepu8_epi32(part[p]));
}
// y[i] = dl * f[i] - ml (mul_sub), y[i] = f[i] * d and y[i] = f[i] * d + m (mul_add),
// as the scalar decoders round them; where two values are given, the first is for
// the first 16 values (the K-quants' runs of 16).
CETUS_AVX2_INLINE void store_mul_sub_runs(float dl0, float ml0, float dl1, float ml1,
                                          const __m256 (&f)[4], float* y) {
    for (int p = 0; p < 4; ++p)
        _mm256_storeu_ps(y + 8 * p,
                         _mm256_sub_ps(_mm256_mul_ps(_mm256_set1_ps(p < 2 ? dl0 : dl1), f[p]),
                                       _mm256_set1_ps(p < 2 ? ml0 : ml1)));
}
CETUS_AVX2_INLINE void store_mul_sub(float dl, float ml, const __m256 (&f)[4], float* y) {
    store_mul_sub_runs(dl, ml, dl, ml, f, y);
}
CETUS_AVX2_INLINE void store_scaled(float d0, float d1, const __m256 (&f)[4], float* y) {
    for (int p = 0; p < 4; ++p)
        _mm256_storeu_ps(y + 8 * p, _mm256_mul_ps(f[p], _mm256_set1_ps(p < 2 ? d0 : d1)));
}
CETUS_AVX2_INLINE void store_mul_add(float d, float m, const __m256 (&f)[4], float* y) {
    for (int p = 0; p < 4; ++p)
        _mm256_storeu_ps(y + 8 * p,
                         _mm256_add_ps(_mm256_mul_ps(f[p], _mm256_set1_ps(d)), _mm256_set1_ps(m)));
}

// ggml_blocks::chunk_q4_k for k = 0 .. 7.
CETUS_AVX2_INLINE void block_q4_k(const std::byte* b, float* y) {
    const float d = ggml_blocks::f16(b), dmin = ggml_blocks::f16(b + 2);
    for (int j = 0; j < 4; ++j) {
        const __m256i q = load32(b + 16 + 32 * j);
        for (int h = 0; h < 2; ++h) {
            float dl, ml;
            ggml_blocks::scale_min_k4(2 * j + h, b + 4, d, dmin, dl, ml);
            __m256 f[4];
            codes32<false>(bits_of(q, 4 * h, 0x0F), f);
            store_mul_sub(dl, ml, f, y + 32 * (2 * j + h));
        }
    }
}
// ggml_blocks::chunk_q5_k: Q4_K's nibbles or'ed with bit k of qh (+ 16, the nibble being < 16).
CETUS_AVX2_INLINE void block_q5_k(const std::byte* b, float* y) {
    const float d = ggml_blocks::f16(b), dmin = ggml_blocks::f16(b + 2);
    const __m256i qh = load32(b + 16);
    for (int j = 0; j < 4; ++j) {
        const __m256i q = load32(b + 48 + 32 * j);
        for (int h = 0; h < 2; ++h) {
            const int k = 2 * j + h;
            float dl, ml;
            ggml_blocks::scale_min_k4(k, b + 4, d, dmin, dl, ml);
            const __m256i c =
                _mm256_or_si256(bits_of(q, 4 * h, 0x0F), _mm256_slli_epi16(bits_of(qh, k, 1), 4));
            __m256 f[4];
            codes32<false>(c, f);
            store_mul_sub(dl, ml, f, y + 32 * k);
        }
    }
}
// ggml_blocks::chunk_q6_k: (low nibble | two high bits << 4) - 32, times d * scale per 16.
CETUS_AVX2_INLINE void block_q6_k(const std::byte* b, float* y) {
    const float d = ggml_blocks::f16(b + 208);
    for (int n = 0; n < 2; ++n) {
        const __m256i ql[2] = {load32(b + 64 * n), load32(b + 64 * n + 32)};
        const __m256i qh = load32(b + 128 + 32 * n);
        for (int K = 0; K < 4; ++K) {
            const __m256i c = _mm256_or_si256(bits_of(ql[K % 2], 4 * (K / 2), 0x0F),
                                              _mm256_slli_epi16(bits_of(qh, 2 * K, 3), 4));
            __m256 f[4];
            codes32<true>(_mm256_sub_epi8(c, _mm256_set1_epi8(32)), f);
            const std::byte* sc = b + 192 + 8 * n + 2 * K;
            store_scaled(d * float(int8_t(ggml_blocks::u8(sc))),
                         d * float(int8_t(ggml_blocks::u8(sc + 1))), f, y + 32 * (4 * n + K));
        }
    }
}
// ggml_blocks::chunk_q8_0.
CETUS_AVX2_INLINE void block_q8_0(const std::byte* b, float* y) {
    const float d = ggml_blocks::f16(b);
    __m256 f[4];
    codes32<true>(load32(b + 2), f);
    store_scaled(d, d, f, y);
}
// ggml_blocks::chunk_q4_0: (code - 8) * d.
CETUS_AVX2_INLINE void block_q4_0(const std::byte* b, float* y) {
    const float d = ggml_blocks::f16(b);
    __m256 f[4];
    codes32<true>(_mm256_sub_epi8(nibbles32(b + 2), _mm256_set1_epi8(8)), f);
    store_scaled(d, d, f, y);
}
// ggml_blocks::chunk_q5_0: (code - 16) * d.
CETUS_AVX2_INLINE void block_q5_0(const std::byte* b, float* y) {
    const float d = ggml_blocks::f16(b);
    __m256 f[4];
    codes32<true>(_mm256_sub_epi8(q5_codes(b + 2, b + 6), _mm256_set1_epi8(16)), f);
    store_scaled(d, d, f, y);
}
// ggml_blocks::chunk_q5_1: code * d + m.
CETUS_AVX2_INLINE void block_q5_1(const std::byte* b, float* y) {
    __m256 f[4];
    codes32<false>(q5_codes(b + 4, b + 8), f);
    store_mul_add(ggml_blocks::f16(b), ggml_blocks::f16(b + 2), f, y);
}
// ggml_blocks::chunk_q4_1: code * d + m.
CETUS_AVX2_INLINE void block_q4_1(const std::byte* b, float* y) {
    __m256 f[4];
    codes32<false>(nibbles32(b + 4), f);
    store_mul_add(ggml_blocks::f16(b), ggml_blocks::f16(b + 2), f, y);
}
// ggml_blocks::chunk_q2_k: chunk 4 n + r is bits 2 r, 2 r + 1 of qs[32 n ..], its
// two runs of 16 with their own (d * scale) * code - dmin * min.
CETUS_AVX2_INLINE void block_q2_k(const std::byte* b, float* y) {
    const float d = ggml_blocks::f16(b + 80), dmin = ggml_blocks::f16(b + 82);
    for (int n = 0; n < 2; ++n) {
        const __m256i q = load32(b + 16 + 32 * n);
        for (int r = 0; r < 4; ++r) {
            const uint8_t s0 = ggml_blocks::u8(b + 8 * n + 2 * r),
                          s1 = ggml_blocks::u8(b + 8 * n + 2 * r + 1);
            __m256 f[4];
            codes32<false>(bits_of(q, 2 * r, 3), f);
            store_mul_sub_runs(d * float(s0 & 0xF), dmin * float(s0 >> 4), d * float(s1 & 0xF),
                               dmin * float(s1 >> 4), f, y + 32 * (4 * n + r));
        }
    }
}
// ggml_blocks::chunk_q3_k: Q2_K's codes less 4 where the third bit (bit 4 n + r of
// hmask) is clear, that is (code | third bit << 2) - 4, times d * scale per run of 16.
CETUS_AVX2_INLINE void block_q3_k(const std::byte* b, float* y) {
    const float d_all = ggml_blocks::f16(b + 108);
    const __m256i hm = load32(b);
    for (int n = 0; n < 2; ++n) {
        const __m256i q = load32(b + 32 + 32 * n);
        for (int r = 0; r < 4; ++r) {
            const __m256i c = _mm256_or_si256(bits_of(q, 2 * r, 3),
                                              _mm256_slli_epi16(bits_of(hm, 4 * n + r, 1), 2));
            __m256 f[4];
            codes32<true>(_mm256_sub_epi8(c, _mm256_set1_epi8(4)), f);
            const int j = 8 * n + 2 * r;
            store_scaled(d_all * float(ggml_blocks::q3_k_scale(b + 96, j)),
                         d_all * float(ggml_blocks::q3_k_scale(b + 96, j + 1)), f,
                         y + 32 * (4 * n + r));
        }
    }
}
// IQ4's table entries for 32 indices, as exact floats times d (ggml_blocks::iq4_codes).
CETUS_AVX2_INLINE void iq4_chunk(const std::byte* qs, float d, float* y) {
    const __m256i table =
        _mm256_setr_epi8(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
                         -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
    __m256 f[4];
    codes32<true>(_mm256_shuffle_epi8(table, nibbles32(qs)), f);
    for (int p = 0; p < 4; ++p) _mm256_storeu_ps(y + 8 * p, _mm256_mul_ps(_mm256_set1_ps(d), f[p]));
}
CETUS_AVX2_INLINE void block_iq4_nl(const std::byte* b, float* y) {
    iq4_chunk(b + 2, ggml_blocks::f16(b), y);
}
// ggml_blocks::chunk_iq4_xs for k = 0 .. 7.
CETUS_AVX2_INLINE void block_iq4_xs(const std::byte* b, float* y) {
    const float d = ggml_blocks::f16(b);
    const unsigned scales_h = ggml_blocks::u8(b + 2) | (unsigned(ggml_blocks::u8(b + 3)) << 8);
    for (int k = 0; k < 8; ++k) {
        const int ls = ((ggml_blocks::u8(b + 4 + k / 2) >> (4 * (k % 2))) & 0xF) |
                       (((scales_h >> (2 * k)) & 3) << 4);
        iq4_chunk(b + 8 + 16 * k, d * float(ls - 32), y + 32 * k);
    }
}

// noipa: GCC 12's pure-const pass takes an address that ivopts rebuilt from two of
// the block's pointers (base b - 4 b) for a null dereference, finds the rest of the
// loop unreachable and so the function pure, and its callers then drop the call
// (the Q2_K rows came out as the buffer's old contents). The code itself is right;
// noipa keeps callers from drawing conclusions from that analysis.
// Decode is one of the block_<type> functions above (the call inlines: a constant).
template <void (*Decode)(const std::byte*, float*)>
__attribute__((target("avx2,f16c"), noipa)) void convert(const std::byte* rows, uint64_t row_bytes,
                                                         uint64_t block_bytes, int64_t block_values,
                                                         int64_t n_rows, int64_t cols, float* out) {
    const int64_t n_blocks = cols / block_values;
    for (int64_t r = 0; r < n_rows; ++r)
        for (int64_t i = 0; i < n_blocks; ++i)
            Decode(rows + r * row_bytes + i * block_bytes, out + r * cols + i * block_values);
}

} // namespace blocks_avx2

// convert_ggml's values, for every block type; false on machines without AVX2.
bool convert_ggml_avx2(const GgmlTypeInfo& type, const std::byte* rows, uint64_t row_bytes,
                       int64_t n_rows, int64_t cols, float* out) {
    if (!has_avx2_f16c()) return false;
    const uint64_t bytes = uint64_t(type.bytes);
    switch (type.id) {
#define CETUS_AVX2_CASE(id, name, values, block_bytes)                                       \
    case id:                                                                                 \
        blocks_avx2::convert<&blocks_avx2::block_##name>(rows, row_bytes, bytes, type.block, \
                                                         n_rows, cols, out);                 \
        return true;
        CETUS_GGML_TYPES(CETUS_AVX2_CASE)
#undef CETUS_AVX2_CASE
    default: return false;
    }
}
#else
bool has_avx2_f16c() { return false; }
bool convert_ggml_avx2(const GgmlTypeInfo&, const std::byte*, uint64_t, int64_t, int64_t, float*) { return false; }
#endif

// Batches up to this size read BF16 and FP8 weights in place; larger ones
// convert a block of rows once and reuse it for every token.
constexpr int64_t k_direct_tokens = 4;

// Rows [r0, r1) of w (r1 - r0 <= k_row_block, not F32) as fp32 into out, the values of
// Matrix::row_to_f32, with the vectorised decoders where there are some.
void convert_block(const Matrix& w, int64_t r0, int64_t r1, float* out) {
    const int64_t cols = w.cols;
#ifdef CETUS_FP8_AVX2
    if (w.dtype == Dtype::F8_E4M3 && has_avx2_f16c()) {
        convert_fp8(Fp8Rows{static_cast<const uint8_t*>(w.data), cols, w.scale_inv, w.scale_cols, 0}.from(r0), r1 - r0,
                    cols, out);
        return;
    }
#endif
    if (w.dtype == Dtype::Ggml) {
        if (const GgmlTypeInfo* ggml = ggml_type_info(w.ggml_type)) {
            const uint64_t row_bytes = w.row_bytes();
            const std::byte* src = static_cast<const std::byte*>(w.data) + uint64_t(r0) * row_bytes;
            if (!convert_ggml_avx2(*ggml, src, row_bytes, r1 - r0, cols, out))
                convert_ggml(*ggml, src, row_bytes, r1 - r0, cols, out);
            return;
        }
    }
    if (w.dtype == Dtype::BF16) {
        convert_bf16(static_cast<const uint16_t*>(w.data) + r0 * cols, r1 - r0, cols, out);
        return;
    }
    for (int64_t r = r0; r < r1; ++r) w.row_to_f32(r, out + (r - r0) * cols);
}

// Rows [r0, r1) of w (not int8), in blocks of k_row_block rows, on the calling thread,
// into y[t * ldy + r - r0_all].
void product_rows(const float* x, int64_t ldx, int64_t n_tokens, const Matrix& w, int64_t r0_all, int64_t r1_all,
                  float* y, int64_t ldy) {
    const int64_t cols = w.cols;
    const bool small = n_tokens <= k_direct_tokens;
    const bool fp8_vector = w.dtype == Dtype::F8_E4M3 && has_avx2_f16c();
    const bool direct = w.dtype == Dtype::F32 || ((w.dtype == Dtype::BF16 || fp8_vector) && small);
    thread_local std::vector<float> buf;  // (reused: no allocation per range)
    if (!direct && buf.size() < static_cast<size_t>(k_row_block * cols)) buf.resize(static_cast<size_t>(k_row_block * cols));
    for (int64_t r0 = r0_all; r0 < r1_all; r0 += k_row_block) {
        const int64_t r1 = std::min(r1_all, r0 + k_row_block);
        float* yb = y + (r0 - r0_all);
        if (w.dtype == Dtype::F32) {
            product_f32(x, ldx, n_tokens, static_cast<const float*>(w.data) + r0 * cols, r1 - r0, cols, yb, ldy);
        } else if (direct && w.dtype == Dtype::BF16) {
            product_bf16(x, ldx, n_tokens, static_cast<const uint16_t*>(w.data) + r0 * cols, r1 - r0, cols, yb, ldy);
#ifdef CETUS_FP8_AVX2
        } else if (direct) {
            const Fp8Rows fp8{static_cast<const uint8_t*>(w.data), cols, w.scale_inv, w.scale_cols, 0};
            product_fp8(x, ldx, n_tokens, fp8.from(r0), r1 - r0, cols, yb, ldy);
#endif
        } else {
            convert_block(w, r0, r1, buf.data());
            product_f32(x, ldx, n_tokens, buf.data(), r1 - r0, cols, yb, ldy);
        }
    }
}

// The int8 products' block size for w, or 0 where w takes the fp32 path.
int int8_block(const Matrix& w) {
    if (!(w.int8_activations && w.dtype == Dtype::Ggml && int8_product_available(w.ggml_type))) return 0;
    int values = 0, bytes = 0;
    ggml_blocks::block_shape(w.ggml_type, values, bytes);
    return values;
}

}  // namespace

void matmul_strided(const float* x, int64_t ldx, int64_t n_tokens, const Matrix& w, float* y, int64_t ldy) {
    thread_local ProductInput in;  // (reused: no allocation per product)
    prepare_input(x, ldx, n_tokens, w.cols, {&w}, in);
    matmul_many(in, {{&w, y, ldy}});
}

void prepare_input(const float* x, int64_t ldx, int64_t n_tokens, int64_t cols, std::span<const Matrix* const> ws,
                   ProductInput& in) {
    in.x = x;
    in.ldx = ldx;
    in.n_tokens = n_tokens;
    in.cols = cols;
    in.q32.n_tokens = in.q256.n_tokens = 0;
    for (const Matrix* w : ws) {
        if (w->cols != cols) throw Error(ErrorCode::BadRequest, "prepare_input: a matrix of " + std::to_string(w->cols) +
                                                                 " columns for inputs of " + std::to_string(cols));
        const int block = int8_block(*w);
        Int8Rows* q = block == 32 ? &in.q32 : block == 256 ? &in.q256 : nullptr;
        if (q && !(q->n_tokens == n_tokens && q->cols == cols && q->block == block))
            quantise_int8(x, ldx, n_tokens, cols, block, *q);
    }
}

void gather_input(const ProductInput& in, const int64_t* rows, int64_t n, std::vector<float>& storage,
                  ProductInput& out) {
    const int64_t cols = in.cols;
    storage.resize(static_cast<size_t>(n * cols));
    for (int64_t i = 0; i < n; ++i) std::copy_n(in.x + rows[i] * in.ldx, cols, storage.data() + i * cols);
    out.x = storage.data();
    out.ldx = cols;
    out.n_tokens = n;
    out.cols = cols;
    gather_int8(in.q32, rows, n, out.q32);
    gather_int8(in.q256, rows, n, out.q256);
}

void matmul_rows_at(const ProductInput& in, const Matrix& w, int64_t r0, int64_t r1, float* y, int64_t ldy) {
    if (const int block = int8_block(w)) {
        const Int8Rows& a = block == 32 ? in.q32 : in.q256;
        if (a.n_tokens != in.n_tokens || a.cols != w.cols || a.block != block)
            throw Error(ErrorCode::BadRequest, "matmul_rows: the input was not prepared for this matrix");
        matmul_int8_rows(a, w, r0, r1, y, ldy);
        return;
    }
    if (in.cols != w.cols) throw Error(ErrorCode::BadRequest, "matmul_rows: the input's width is not the matrix's");
    product_rows(in.x, in.ldx, in.n_tokens, w, r0, r1, y, ldy);
}

void matmul_rows(const ProductInput& in, const Matrix& w, int64_t r0, int64_t r1, float* y, int64_t ldy) {
    matmul_rows_at(in, w, r0, r1, y + r0, ldy);
}

void rows_dot(const float* q, int64_t ldq, int64_t n_q, const float* rows, int64_t ld, int64_t n_rows, int64_t cols,
              float* y, int64_t ldy) {
    rows_dot_f32(q, ldq, n_q, rows, ld, n_rows, cols, y, ldy);
}
void rows_dot(const float* q, int64_t ldq, int64_t n_q, const uint16_t* rows, int64_t ld, int64_t n_rows, int64_t cols,
              float* y, int64_t ldy) {
    rows_dot_bf16(q, ldq, n_q, rows, ld, n_rows, cols, y, ldy);
}
void weighted_rows(const float* p, int64_t ldp, int64_t n_q, const float* rows, int64_t ld, int64_t n_rows,
                   int64_t cols, float* out, int64_t ldo) {
    weighted_rows_f32(p, ldp, n_q, rows, ld, n_rows, cols, out, ldo);
}
void weighted_rows(const float* p, int64_t ldp, int64_t n_q, const uint16_t* rows, int64_t ld, int64_t n_rows,
                   int64_t cols, float* out, int64_t ldo) {
    weighted_rows_bf16(p, ldp, n_q, rows, ld, n_rows, cols, out, ldo);
}

void rows_to_f32(const Matrix& w, int64_t r0, int64_t r1, float* out) {
    if (r0 < 0 || r1 > w.rows || r0 > r1) throw Error(ErrorCode::BadRequest, "rows_to_f32: rows out of the matrix");
    if (w.dtype == Dtype::F32) {
        std::copy_n(static_cast<const float*>(w.data) + r0 * w.cols, (r1 - r0) * w.cols, out);
        return;
    }
    for (int64_t b = r0; b < r1; b += k_row_block)
        convert_block(w, b, std::min(r1, b + k_row_block), out + (b - r0) * w.cols);
}

void matmul_many(const ProductInput& in, std::initializer_list<ProductOut> outs) {
    // The matrices' blocks of k_row_block rows, one after another, shared out together.
    auto blocks_of = [](const Matrix& w) { return (w.rows + k_row_block - 1) / k_row_block; };
    int64_t n_blocks = 0, work = 0;
    for (const ProductOut& o : outs) {
        n_blocks += blocks_of(*o.w);
        // Small products run on the calling thread: waking the pool for a parallel
        // region (the mains make OpenMP's idle threads sleep) costs tens of
        // microseconds, more than a product of fewer than ~2^20 multiply-adds takes on
        // one core. Decoding GGUF blocks costs a few times a multiply-add per weight:
        // such products are worth the threads from a quarter of the size.
        work += o.w->rows * o.w->cols * (o.w->dtype == Dtype::Ggml ? std::max<int64_t>(in.n_tokens, 4) : in.n_tokens);
    }
    for_ranges(n_blocks, work >= k_parallel_min_macs, [&](int64_t b_begin, int64_t b_end) {
        int64_t first = 0;  // the matrix's first block in the joint count
        for (const ProductOut& o : outs) {
            const int64_t nb = blocks_of(*o.w), b0 = std::max(b_begin, first), b1 = std::min(b_end, first + nb);
            if (b0 < b1)
                matmul_rows(in, *o.w, (b0 - first) * k_row_block, std::min(o.w->rows, (b1 - first) * k_row_block), o.y,
                            o.ldy);
            first += nb;
        }
    });
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
