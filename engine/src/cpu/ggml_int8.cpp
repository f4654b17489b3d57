// GGUF block products with int8 activations (ggml_int8.h). Each block of 8 weight
// rows is first unpacked into one form for every type (Unpacked: byte codes, signed
// or unsigned as the type stores them, integer scales and minimums per run of 16, two
// floats per block); the products are then integer dot products (maddubs: unsigned
// bytes times signed bytes, pairwise into int16, which cannot saturate for these
// codes: |code| <= 128, |q| <= 127), one fp32 step per block, and the minimums meet
// the activations' integer run sums, so that every product is the decoded weights'
// with the activations' int8 values, d q.
#include "cpu/ggml_int8.h"

#include "cetus/error.h"
#include "ggml_blocks.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#define CETUS_INT8_AVX2 1
#include "cpu/avx2_codes.h"
#endif

namespace cetus::cpu {

void quantise_int8(const float* x, int64_t ldx, int64_t n_tokens, int64_t cols, int block, Int8Rows& out) {
    const int64_t nb = cols / block, n16 = cols / 16;
    out.n_tokens = n_tokens;
    out.cols = cols;
    out.block = block;
    out.q.resize(size_t(n_tokens * cols));
    out.d.resize(size_t(n_tokens * nb));
    out.qsum16.resize(size_t(n_tokens * n16));
    for (int64_t t = 0; t < n_tokens; ++t) {
        const float* xt = x + t * ldx;
        for (int64_t j = 0; j < nb; ++j) {
            const float* v = xt + block * j;
            float amax = 0.0f;
            bool finite = true;
            for (int i = 0; i < block; ++i) {
                finite = finite && std::isfinite(v[i]);
                amax = std::max(amax, std::fabs(v[i]));
            }
            const float inv = finite && amax > 0.0f ? 127.0f / amax : 0.0f;
            int8_t* q = out.q.data() + t * cols + block * j;
            for (int i = 0; i < block; ++i) q[i] = int8_t(std::clamp(std::nearbyint(v[i] * inv), -127.0f, 127.0f));
            out.d[size_t(t * nb + j)] = finite ? amax / 127.0f : std::nanf("");
            for (int h = 0; h < block / 16; ++h) {
                int s = 0;
                for (int i = 0; i < 16; ++i) s += q[16 * h + i];
                out.qsum16[size_t(t * n16 + block / 16 * j + h)] = int16_t(s);
            }
        }
    }
}

#ifdef CETUS_INT8_AVX2
namespace {
using namespace avx2_codes;
namespace gb = ggml_blocks;

#define CETUS_INT8_TARGET __attribute__((target("avx2,f16c,fma")))
#define CETUS_INT8_INLINE CETUS_INT8_TARGET inline __attribute__((always_inline))

// One row block's unpacked form, row r at r times its size: per value a code, per run
// of 16 an int16 scale sc and minimum mn, per block (of the type's values) floats dw
// and dm, so that the weight is dw * sc * code + dm * mn.
struct Unpacked {
    std::vector<int8_t> codes;
    std::vector<int16_t> sc, mn;
    std::vector<float> dw, dm;
};

// The block's f16 fields through the F16C conversion (exact, as ggml_blocks::f16; a
// table lookup would miss the caches here).
CETUS_INT8_INLINE float f16(const std::byte* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}
CETUS_INT8_INLINE void store(int8_t* p, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
// Runs 2 k and 2 k + 1 (32 values) with one scale and minimum.
CETUS_INT8_INLINE void run32(int16_t* sc, int16_t* mn, int k, int scale, int min) {
    sc[2 * k] = sc[2 * k + 1] = int16_t(scale);
    if (mn) mn[2 * k] = mn[2 * k + 1] = int16_t(min);
}

// Per type: one block's codes, scales and minimums. The value is
// dw * sc * code + dm * mn, as ggml_blocks.h's decoders compute it (there each
// product rounded to fp32).
// Q4_K and Q5_K's eight 6-bit scales and minimums (ggml_blocks::scale_min_k4_codes),
// each for the two runs of 16 of its chunk of 32, into sc[16] and mn[16]. In 32-bit
// words of the 12 bytes: scales 0-3 are the low six bits of word 0's bytes, minimums
// 0-3 word 1's; scales 4-7 are word 2's low nibbles with word 0's top two bits above,
// minimums 4-7 word 2's high nibbles with word 1's top two bits.
CETUS_INT8_INLINE void scales_mins_k4(const std::byte* q, int16_t* sc, int16_t* mn) {
    uint32_t w[3];
    std::memcpy(w, q, sizeof w);
    const uint32_t low6 = 0x3f3f3f3fu, nib = 0x0f0f0f0fu, top2 = 0x03030303u;
    const uint32_t s[2] = {w[0] & low6, (w[2] & nib) | (((w[0] >> 6) & top2) << 4)};
    const uint32_t m[2] = {w[1] & low6, ((w[2] >> 4) & nib) | (((w[1] >> 6) & top2) << 4)};
    const __m128i sv = _mm_set_epi32(0, 0, int(s[1]), int(s[0])), mv = _mm_set_epi32(0, 0, int(m[1]), int(m[0]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(sc), _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(sv, sv)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(mn), _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mv, mv)));
}

// Q4_K and Q5_K's scales (bytes 0-7) and minimums (bytes 8-15) as scales_mins_k4
// reads them from the 12 bytes at q (words w0, w1, w2; a 16-byte load, which the
// blocks' codes after the scales keep inside the block): scales 0-3 and minimums 0-3
// the low six bits of w0 and w1, scales 4-7 and minimums 4-7 w2's low and high nibbles
// with w0's and w1's top two bits above.
CETUS_INT8_INLINE __m128i scale_min_bytes_k4(const std::byte* q) {
    const __m128i w = load16(q);
    const __m128i low = _mm_and_si128(w, _mm_set1_epi32(0x3f3f3f3f));  // [s 0-3, m 0-3, ...]
    const __m128i w2 = _mm_shuffle_epi32(w, 0xAA);
    const __m128i nibbles = _mm_and_si128(_mm_srlv_epi32(w2, _mm_setr_epi32(0, 4, 0, 0)), _mm_set1_epi32(0x0f0f0f0f));
    const __m128i top = _mm_and_si128(_mm_srli_epi32(w, 2), _mm_set1_epi32(0x30303030));  // (w >> 6 & 3) << 4
    const __m128i high = _mm_or_si128(nibbles, top);  // [s 4-7, m 4-7, ...]
    return _mm_unpacklo_epi32(low, high);
}
// Int16 k of v (of 8) in every lane.
template <int K>
CETUS_INT8_INLINE __m256i int16_everywhere(__m256i v) {
    return _mm256_shuffle_epi8(v, _mm256_set1_epi16(int16_t(2 * K | (2 * K + 1) << 8)));
}

struct Q4K {  // d sc code - dmin m, per 32
    static constexpr bool is_signed = false, has_min = true;
    static constexpr int block = 256;  // values
    // Runs 2 J and 2 J + 1 (the low and high nibbles of 32 bytes) times tokens
    // [0, TT) at x, into their integer sums.
    template <int J, int TT>
    CETUS_INT8_INLINE static void pair(const std::byte* b, __m256i s16, const int8_t* x, int64_t cols,
                                       __m256i* isum) {
        const __m256i low4 = _mm256_set1_epi8(0x0F);
        const __m256i q = load32(b + 16 + 32 * J);
        const __m256i lo = _mm256_and_si256(q, low4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
        const __m256i sl = int16_everywhere<2 * J>(s16), sh = int16_everywhere<2 * J + 1>(s16);
        for (int t = 0; t < TT; ++t) {
            const int8_t* xt = x + t * cols + 64 * J;
            const __m256i pl = _mm256_madd_epi16(
                _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xt))), sl);
            const __m256i ph = _mm256_madd_epi16(
                _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xt + 32))), sh);
            isum[t] = _mm256_add_epi32(isum[t], _mm256_add_epi32(pl, ph));
        }
    }
    // One block times tokens [t0, t0 + TT) of a, into their accumulators, its codes
    // and scales kept in registers (decode's streamed products): the integer sums of
    // block_tokens over the unpacked block (lanes 0-3 the first run of 16 of each 32
    // values, 4-7 the second; integer adds in any order give the same sums) and its
    // fp32 steps (d dx, and -(dmin dx) through fnmadd, the same rounding as dmin
    // negated first), so the same bits.
    template <int TT>
    CETUS_INT8_INLINE static void stream(const std::byte* b, const Int8Rows& a, int64_t t0, int64_t blk,
                                         __m256* acc, __m256* min_acc) {
        const int64_t cols = a.cols, nb = cols / 256, n16 = cols / 16;
        int32_t d_dmin;
        std::memcpy(&d_dmin, b, 4);
        const __m128 d2 = _mm_cvtph_ps(_mm_cvtsi32_si128(d_dmin));  // [d, dmin]
        const __m128i sm = scale_min_bytes_k4(b + 4);
        const __m256i s16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
        const __m256i m16 = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm));
        __m256i isum[TT];
        for (int t = 0; t < TT; ++t) isum[t] = _mm256_setzero_si256();
        const int8_t* x = a.q.data() + t0 * cols + blk * 256;
        pair<0, TT>(b, s16, x, cols, isum);
        pair<1, TT>(b, s16, x, cols, isum);
        pair<2, TT>(b, s16, x, cols, isum);
        pair<3, TT>(b, s16, x, cols, isum);
        for (int t = 0; t < TT; ++t) {
            const __m128 dd = _mm_mul_ps(d2, _mm_set1_ps(a.d[size_t((t0 + t) * nb + blk)]));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_broadcastss_ps(dd), acc[t]);
            const __m256i m = _mm256_madd_epi16(
                m16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.qsum16.data() + (t0 + t) * n16 + blk * 16)));
            min_acc[t] =
                _mm256_fnmadd_ps(_mm256_cvtepi32_ps(m), _mm256_broadcastss_ps(_mm_movehdup_ps(dd)), min_acc[t]);
        }
    }
    CETUS_INT8_INLINE static void unpack(const std::byte* b, int8_t* c, int16_t* sc, int16_t* mn, float& dw,
                                         float& dm) {
        dw = f16(b);
        dm = -f16(b + 2);
        scales_mins_k4(b + 4, sc, mn);
        for (int j = 0; j < 4; ++j) {
            const __m256i q = load32(b + 16 + 32 * j);
            store(c + 64 * j, _mm256_and_si256(q, _mm256_set1_epi8(0x0F)));
            store(c + 64 * j + 32, _mm256_and_si256(_mm256_srli_epi16(q, 4), _mm256_set1_epi8(0x0F)));
        }
    }
};
struct Q5K {  // Q4_K's nibbles with bit k of qh as the fifth bit
    static constexpr bool is_signed = false, has_min = true;
    static constexpr int block = 256;  // values
    CETUS_INT8_INLINE static void unpack(const std::byte* b, int8_t* c, int16_t* sc, int16_t* mn, float& dw,
                                         float& dm) {
        dw = f16(b);
        dm = -f16(b + 2);
        const __m256i qh = load32(b + 16);
        scales_mins_k4(b + 4, sc, mn);
        for (int j = 0; j < 4; ++j) {
            const __m256i q = load32(b + 48 + 32 * j);
            for (int h = 0; h < 2; ++h) {
                const int k = 2 * j + h;
                store(c + 32 * k, _mm256_or_si256(bits_of(q, 4 * h, 0x0F), _mm256_slli_epi16(bits_of(qh, k, 1), 4)));
            }
        }
    }
};
struct Q6K {  // d sc (code - 32), per 16
    static constexpr bool is_signed = true, has_min = false;
    static constexpr int block = 256;  // values
    CETUS_INT8_INLINE static void unpack(const std::byte* b, int8_t* c, int16_t* sc, int16_t*, float& dw, float&) {
        dw = f16(b + 208);
        for (int n = 0; n < 2; ++n) {
            const __m256i ql[2] = {load32(b + 64 * n), load32(b + 64 * n + 32)};
            const __m256i qh = load32(b + 128 + 32 * n);
            for (int K = 0; K < 4; ++K) {
                const int k = 4 * n + K;
                const __m256i code = _mm256_or_si256(bits_of(ql[K % 2], 4 * (K / 2), 0x0F),
                                                     _mm256_slli_epi16(bits_of(qh, 2 * K, 3), 4));
                store(c + 32 * k, _mm256_sub_epi8(code, _mm256_set1_epi8(32)));
                const std::byte* s = b + 192 + 8 * n + 2 * K;
                sc[2 * k] = int8_t(gb::u8(s));
                sc[2 * k + 1] = int8_t(gb::u8(s + 1));
            }
        }
    }
};
struct Q2K {  // d sc code - dmin m, per 16
    static constexpr bool is_signed = false, has_min = true;
    static constexpr int block = 256;  // values
    CETUS_INT8_INLINE static void unpack(const std::byte* b, int8_t* c, int16_t* sc, int16_t* mn, float& dw,
                                         float& dm) {
        dw = f16(b + 80);
        dm = -f16(b + 82);
        for (int n = 0; n < 2; ++n) {
            const __m256i q = load32(b + 16 + 32 * n);
            for (int r = 0; r < 4; ++r) {
                const int k = 4 * n + r;
                store(c + 32 * k, bits_of(q, 2 * r, 3));
                for (int h = 0; h < 2; ++h) {
                    const uint8_t s = gb::u8(b + 8 * n + 2 * r + h);
                    sc[2 * k + h] = int16_t(s & 0xF);
                    mn[2 * k + h] = int16_t(s >> 4);
                }
            }
        }
    }
};
struct Q3K {  // d scale ((code | third bit << 2) - 4), per 16
    static constexpr bool is_signed = true, has_min = false;
    static constexpr int block = 256;  // values
    CETUS_INT8_INLINE static void unpack(const std::byte* b, int8_t* c, int16_t* sc, int16_t*, float& dw, float&) {
        dw = f16(b + 108);
        const __m256i hm = load32(b);
        for (int n = 0; n < 2; ++n) {
            const __m256i q = load32(b + 32 + 32 * n);
            for (int r = 0; r < 4; ++r) {
                const int k = 4 * n + r;
                const __m256i code =
                    _mm256_or_si256(bits_of(q, 2 * r, 3), _mm256_slli_epi16(bits_of(hm, 4 * n + r, 1), 2));
                store(c + 32 * k, _mm256_sub_epi8(code, _mm256_set1_epi8(4)));
                sc[2 * k] = int16_t(gb::q3_k_scale(b + 96, 2 * k));
                sc[2 * k + 1] = int16_t(gb::q3_k_scale(b + 96, 2 * k + 1));
            }
        }
    }
};
CETUS_INT8_INLINE __m256i iq4_table_codes(const std::byte* qs) {
    const __m256i table =
        _mm256_setr_epi8(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
                         -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
    return _mm256_shuffle_epi8(table, nibbles32(qs));
}
// The 32-value types: a scale d at byte 0 (the affine ones, code d + m, a minimum m at
// byte 2), the codes as Codes reads them; one run of 32.
template <bool Signed, bool Affine, __m256i (*Codes)(const std::byte*)>
struct Block32 {
    static constexpr bool is_signed = Signed, has_min = Affine;
    static constexpr int block = 32;  // values
    CETUS_INT8_INLINE static void unpack(const std::byte* b, int8_t* c, int16_t* sc, int16_t* mn, float& dw,
                                         float& dm) {
        dw = f16(b);
        if (Affine) dm = f16(b + 2);
        store(c, Codes(b));
        run32(sc, Affine ? mn : nullptr, 0, 1, 1);
    }
};
CETUS_INT8_INLINE __m256i q8_0_codes(const std::byte* b) { return load32(b + 2); }
CETUS_INT8_INLINE __m256i q4_0_codes(const std::byte* b) {  // code - 8
    return _mm256_sub_epi8(nibbles32(b + 2), _mm256_set1_epi8(8));
}
CETUS_INT8_INLINE __m256i q4_1_codes(const std::byte* b) { return nibbles32(b + 4); }
CETUS_INT8_INLINE __m256i q5_0_codes(const std::byte* b) { return q5_codes_less_16(b + 2, b + 6); }  // code - 16
CETUS_INT8_INLINE __m256i q5_1_codes(const std::byte* b) { return q5_codes(b + 4, b + 8); }
CETUS_INT8_INLINE __m256i iq4_nl_codes(const std::byte* b) { return iq4_table_codes(b + 2); }
using Q8_0 = Block32<true, false, &q8_0_codes>;
using Q4_0 = Block32<true, false, &q4_0_codes>;
using Q4_1 = Block32<false, true, &q4_1_codes>;
using Q5_0 = Block32<true, false, &q5_0_codes>;
using Q5_1 = Block32<false, true, &q5_1_codes>;
using IQ4NL = Block32<true, false, &iq4_nl_codes>;
struct IQ4XS {
    static constexpr bool is_signed = true, has_min = false;
    static constexpr int block = 256;  // values
    CETUS_INT8_INLINE static void unpack(const std::byte* b, int8_t* c, int16_t* sc, int16_t*, float& dw, float&) {
        dw = f16(b);
        const unsigned scales_h = gb::u8(b + 2) | (unsigned(gb::u8(b + 3)) << 8);
        for (int k = 0; k < 8; ++k) {
            const int ls = ((gb::u8(b + 4 + k / 2) >> (4 * (k % 2))) & 0xF) | (((scales_h >> (2 * k)) & 3) << 4);
            store(c + 32 * k, iq4_table_codes(b + 8 + 16 * k));
            run32(sc, nullptr, k, ls - 32, 0);
        }
    }
};

CETUS_INT8_INLINE float hsum(__m256 v) {
    alignas(32) float f[8];
    _mm256_store_ps(f, v);
    return ((f[0] + f[4]) + (f[1] + f[5])) + ((f[2] + f[6]) + (f[3] + f[7]));
}

// Tokens [t0, t0 + TT) times block blk of one unpacked row (its codes, the runs'
// scales and minimums, its two floats), into each token's accumulators. Integer sums:
// per run of 32 the codes times the token's int8 values (maddubs, pairs of int16),
// each run of 16 times its scale (madd: int32 lanes 0-3 hold the first run, 4-7 the
// second), summed over the block; then times dw d in fp32. No int32 can overflow (the
// largest block sum is below 2^25). Every token's sum is formed the same way whatever
// TT is, and whether the row was unpacked whole or a block at a time.
template <class T, int TT>
CETUS_INT8_INLINE void block_tokens(const int8_t* codes, const int16_t* sc, const int16_t* mn, float dw, float dm,
                                    const Int8Rows& a, int64_t t0, int64_t blk, __m256* acc, __m256* min_acc) {
    constexpr int B = T::block, runs = B / 16;
    const int64_t cols = a.cols, nb = cols / B, n16 = cols / 16;
    // Both int16 halves of a 32-bit pair of scales, 8 times each.
    const __m256i spread = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3,
                                            2, 3, 2, 3, 2, 3, 2, 3);
    __m256i isum[TT];
    for (int t = 0; t < TT; ++t) isum[t] = _mm256_setzero_si256();
    for (int j = 0; j < B / 32; ++j) {
        const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + 32 * j));
        const __m256i cu = T::is_signed ? _mm256_sign_epi8(c, c) : c;  // |code| as unsigned bytes
        int32_t pair;
        std::memcpy(&pair, sc + 2 * j, sizeof pair);
        const __m256i s16 = _mm256_shuffle_epi8(_mm256_set1_epi32(pair), spread);
        for (int t = 0; t < TT; ++t) {
            __m256i xq = _mm256_loadu_si256(
                reinterpret_cast<const __m256i*>(a.q.data() + (t0 + t) * cols + blk * B + 32 * j));
            if (T::is_signed) xq = _mm256_sign_epi8(xq, c);
            isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(cu, xq), s16));
        }
    }
    for (int t = 0; t < TT; ++t) {
        const float dx = a.d[size_t((t0 + t) * nb + blk)];
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_set1_ps(dw * dx), acc[t]);
        if (T::has_min) {  // the runs' minimums times the token's run sums
            const int16_t* qs = a.qsum16.data() + (t0 + t) * n16 + blk * runs;
            __m256i m;
            if constexpr (runs == 16) {
                m = _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(mn)),
                                      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs)));
            } else {  // two runs
                m = _mm256_setr_epi32(int32_t(mn[0]) * qs[0] + int32_t(mn[1]) * qs[1], 0, 0, 0, 0, 0, 0, 0);
            }
            min_acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(m), _mm256_set1_ps(dm * dx), min_acc[t]);
        }
    }
}

template <class T, int TT>
CETUS_INT8_INLINE void store_tokens(const __m256* acc, const __m256* min_acc, float* y, int64_t ldy) {
    for (int t = 0; t < TT; ++t) y[t * ldy] = hsum(acc[t]) + (T::has_min ? hsum(min_acc[t]) : 0.0f);
}

// Tokens [t0, t0 + TT) times one unpacked row into y[t * ldy].
template <class T, int TT>
CETUS_INT8_INLINE void row_tokens(const int8_t* codes, const int16_t* sc, const int16_t* mn, const float* dw,
                                  const float* dm, const Int8Rows& a, int64_t t0, float* y, int64_t ldy) {
    constexpr int B = T::block, runs = B / 16;
    const int64_t nb = a.cols / B;
    __m256 acc[TT], min_acc[TT];
    for (int t = 0; t < TT; ++t) acc[t] = min_acc[t] = _mm256_setzero_ps();
    for (int64_t blk = 0; blk < nb; ++blk)
        block_tokens<T, TT>(codes + blk * B, sc + blk * runs, mn + blk * runs, dw[blk], dm[blk], a, t0, blk, acc,
                            min_acc);
    store_tokens<T, TT>(acc, min_acc, y, ldy);
}

// Software prefetch of the block 4 KiB ahead into every cache level.
CETUS_INT8_INLINE void prefetch_ahead(const std::byte* block, int block_bytes) {
    const char* ahead = reinterpret_cast<const char*>(block) + 4096;
    for (int o = 0; o < block_bytes; o += 64) _mm_prefetch(ahead + o, _MM_HINT_T0);
}

// Batches up to this size multiply each block as it is unpacked (rows_streamed, 4
// tokens at a time, the row block staying in the first-level cache between groups);
// larger ones unpack a row block whole and reuse it for every group of 4 tokens. (The
// products alone, Q4_K, 2 threads: streamed 6.7, 4.9 and 2.4 GB/s of blocks at 5, 8
// and 16 tokens against 6.3, 4.2 and 2.2 unpacked whole; at 64 tokens 0.58 against
// 0.62.)
constexpr int64_t k_streamed_tokens = 16;

// Every token of a (TT of them: decode and short verify batches) times the rows,
// each block multiplied as soon as it is unpacked: the rows' bytes stream in while
// the products run, where unpacking a row block whole first would leave the memory
// idle during its products.
template <class T, int TT>
CETUS_INT8_INLINE void rows_streamed(const Int8Rows& a, int64_t t0, const std::byte* rows, uint64_t row_bytes,
                                     int block_bytes, int64_t n_rows, float* y, int64_t ldy) {
    constexpr int B = T::block, runs = B / 16;
    const int64_t nb = a.cols / B;
    alignas(32) int8_t codes[B];
    alignas(32) int16_t sc[runs], mn[runs] = {};
    for (int64_t r = 0; r < n_rows; ++r) {
        __m256 acc[TT], min_acc[TT];
        for (int t = 0; t < TT; ++t) acc[t] = min_acc[t] = _mm256_setzero_ps();
        for (int64_t blk = 0; blk < nb; ++blk) {
            const std::byte* b = rows + r * row_bytes + blk * block_bytes;
            if constexpr (B == 32)  // blocks of under 64 bytes: one line each touches every line
                _mm_prefetch(reinterpret_cast<const char*>(b) + 4096, _MM_HINT_T0);
            else
                prefetch_ahead(b, block_bytes);
            if constexpr (requires { T::template stream<TT>(b, a, t0, blk, acc, min_acc); }) {
                T::template stream<TT>(b, a, t0, blk, acc, min_acc);
            } else {
                float dw = 0.0f, dm = 0.0f;
                T::unpack(b, codes, sc, mn, dw, dm);
                block_tokens<T, TT>(codes, sc, mn, dw, dm, a, t0, blk, acc, min_acc);
            }
        }
        store_tokens<T, TT>(acc, min_acc, y + r, ldy);
    }
}

// Rows [0, n_rows) of blocks at rows (row_bytes apart) for every token of a.
template <class T>
CETUS_INT8_TARGET __attribute__((flatten)) void row_block(const Int8Rows& a, const std::byte* rows,
                                                          uint64_t row_bytes, int block_bytes, int64_t n_rows,
                                                          Unpacked& u, float* y, int64_t ldy) {
    if (a.n_tokens <= k_streamed_tokens) {
        int64_t t = 0;
        for (; t + 4 <= a.n_tokens; t += 4)
            rows_streamed<T, 4>(a, t, rows, row_bytes, block_bytes, n_rows, y + t * ldy, ldy);
        switch (a.n_tokens - t) {
        case 1: return rows_streamed<T, 1>(a, t, rows, row_bytes, block_bytes, n_rows, y + t * ldy, ldy);
        case 2: return rows_streamed<T, 2>(a, t, rows, row_bytes, block_bytes, n_rows, y + t * ldy, ldy);
        case 3: return rows_streamed<T, 3>(a, t, rows, row_bytes, block_bytes, n_rows, y + t * ldy, ldy);
        default: return;
        }
    }
    constexpr int B = T::block, runs = B / 16;
    const int64_t cols = a.cols, n16 = cols / 16, nb = cols / B;
    for (int64_t r = 0; r < n_rows; ++r)
        for (int64_t b = 0; b < nb; ++b) {
            prefetch_ahead(rows + r * row_bytes + b * block_bytes, block_bytes);
            T::unpack(rows + r * row_bytes + b * block_bytes, u.codes.data() + r * cols + b * B,
                      u.sc.data() + r * n16 + b * runs, u.mn.data() + r * n16 + b * runs, u.dw[size_t(r * nb + b)],
                      u.dm[size_t(r * nb + b)]);
        }
    for (int64_t r = 0; r < n_rows; ++r) {
        const int8_t* c = u.codes.data() + r * cols;
        const int16_t* sc = u.sc.data() + r * n16;
        const int16_t* mn = u.mn.data() + r * n16;
        const float* dw = u.dw.data() + r * nb;
        const float* dm = u.dm.data() + r * nb;
        int64_t t = 0;
        for (; t + 4 <= a.n_tokens; t += 4) row_tokens<T, 4>(c, sc, mn, dw, dm, a, t, y + t * ldy + r, ldy);
        for (; t < a.n_tokens; ++t) row_tokens<T, 1>(c, sc, mn, dw, dm, a, t, y + t * ldy + r, ldy);
    }
}

using RowBlockFn = void (*)(const Int8Rows&, const std::byte*, uint64_t, int, int64_t, Unpacked&, float*, int64_t);
RowBlockFn row_block_for(uint32_t type) {
    switch (type) {
    case gb::k_type_q4_0: return &row_block<Q4_0>;
    case gb::k_type_q4_1: return &row_block<Q4_1>;
    case gb::k_type_q5_0: return &row_block<Q5_0>;
    case gb::k_type_q5_1: return &row_block<Q5_1>;
    case gb::k_type_q8_0: return &row_block<Q8_0>;
    case gb::k_type_q2_k: return &row_block<Q2K>;
    case gb::k_type_q3_k: return &row_block<Q3K>;
    case gb::k_type_q4_k: return &row_block<Q4K>;
    case gb::k_type_q5_k: return &row_block<Q5K>;
    case gb::k_type_q6_k: return &row_block<Q6K>;
    case gb::k_type_iq4_nl: return &row_block<IQ4NL>;
    case gb::k_type_iq4_xs: return &row_block<IQ4XS>;
    default: return nullptr;
    }
}

// (Every AVX2 processor has F16C, which came a generation earlier; clang's builtin
// does not know the name.)
bool has_avx2_fma() {
    static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return yes;
}

constexpr int64_t k_rows_per_block = 8;
}  // namespace

bool int8_product_available(uint32_t ggml_type) { return has_avx2_fma() && row_block_for(ggml_type) != nullptr; }

void matmul_int8_rows(const Int8Rows& a, const Matrix& w, int64_t r0_all, int64_t r1_all, float* y, int64_t ldy) {
    const RowBlockFn fn = row_block_for(w.ggml_type);
    int values = 0, bytes = 0;
    gb::block_shape(w.ggml_type, values, bytes);
    if (!fn || a.block != values || a.cols != w.cols)
        throw Error(ErrorCode::BadRequest, "matmul_int8_rows: activations quantised per " + std::to_string(a.block) +
                                             " for blocks of " + std::to_string(values));
    const int64_t cols = w.cols, n16 = cols / 16, nb = cols / values;
    const uint64_t row_bytes = w.row_bytes();
    thread_local Unpacked u;  // (streamed batches unpack a block at a time instead)
    if (a.n_tokens > k_streamed_tokens) {
        u.codes.resize(size_t(k_rows_per_block * cols));
        u.sc.resize(size_t(k_rows_per_block * n16));
        u.mn.resize(size_t(k_rows_per_block * n16));
        u.dw.resize(size_t(k_rows_per_block * nb));
        u.dm.resize(size_t(k_rows_per_block * nb));
    }
    for (int64_t r0 = r0_all; r0 < r1_all; r0 += k_rows_per_block) {
        const int64_t r1 = std::min(r1_all, r0 + k_rows_per_block);
        fn(a, static_cast<const std::byte*>(w.data) + uint64_t(r0) * row_bytes, row_bytes, bytes, r1 - r0, u,
           y + (r0 - r0_all), ldy);
    }
}

#else
bool int8_product_available(uint32_t) { return false; }
void matmul_int8_rows(const Int8Rows&, const Matrix&, int64_t, int64_t, float*, int64_t) {}
#endif

void gather_int8(const Int8Rows& in, const int64_t* rows, int64_t n, Int8Rows& out) {
    out.n_tokens = in.n_tokens > 0 ? n : 0;
    out.cols = in.cols;
    out.block = in.block;
    if (out.n_tokens == 0) return;
    const int64_t cols = in.cols, nb = cols / in.block, n16 = cols / 16;
    out.q.resize(size_t(n * cols));
    out.d.resize(size_t(n * nb));
    out.qsum16.resize(size_t(n * n16));
    for (int64_t i = 0; i < n; ++i) {
        std::copy_n(in.q.data() + rows[i] * cols, cols, out.q.data() + i * cols);
        std::copy_n(in.d.data() + rows[i] * nb, nb, out.d.data() + i * nb);
        std::copy_n(in.qsum16.data() + rows[i] * n16, n16, out.qsum16.data() + i * n16);
    }
}

}  // namespace cetus::cpu
