// ggml's block formats (its layouts, as gguf.quants reads them), decoded to float one
// block at a time. Header-only so that the CPU products (cpu/ops.cpp) compile them
// for each instruction set they are built for; ggml_dequantize (gguf.cpp) uses the same
// functions, and so does the CUDA backend's upload (cuda/ggml_decode.cu, compiled for
// the device), so every path gives the same values.
#pragma once

#include "dtype.h"

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__) || defined(CETUS_CUDA_EMU)
#include <cuda_fp16.h>
#define CETUS_GGML_HD __host__ __device__
#define CETUS_GGML_DEVICE_BUILD 1
#else
#define CETUS_GGML_HD
#define CETUS_GGML_DEVICE_BUILD 0
#endif

namespace cetus::ggml_blocks {

CETUS_GGML_HD inline uint8_t u8(const std::byte* p) { return uint8_t(*p); }

// IEEE half to float, every value exact (subnormals, infinities): the engine's table
// in host code (a NaN is the quiet NaN of its sign), the hardware's conversion in
// the CUDA backend (whose plug-in has no table; a NaN is the device's own NaN).
CETUS_GGML_HD inline float half_bits_to_f32(uint16_t h) {
#if CETUS_GGML_DEVICE_BUILD
    return __half2float(__ushort_as_half(h));
#else
    return f16_to_f32(h);
#endif
}
CETUS_GGML_HD inline float f16(const std::byte* p) {
    return half_bits_to_f32(uint16_t(u8(p) | (u8(p + 1) << 8)));
}

// a * b + c and a * b - c, the product rounded before the sum as the engine's host
// code computes them (it builds with -ffp-contract=off). nvcc would otherwise fuse
// them into one multiply-add (its default -fmad=true), which rounds once: other bits.
CETUS_GGML_HD inline float mul_add(float a, float b, float c) {
#if defined(__CUDA_ARCH__) || defined(CETUS_CUDA_EMU)
    return __fadd_rn(__fmul_rn(a, b), c);
#else
    return a * b + c;
#endif
}
CETUS_GGML_HD inline float mul_sub(float a, float b, float c) {
#if defined(__CUDA_ARCH__) || defined(CETUS_CUDA_EMU)
    return __fsub_rn(__fmul_rn(a, b), c);
#else
    return a * b - c;
#endif
}

// Each type's values come in chunks of 32: chunk_<type>(b, k, y) writes values
// 32 k .. 32 k + 31 of block b (k = 0 for the 32-value types) to y[0 .. 31], so a
// GPU thread can decode part of a block; block_<type> decodes the whole block as
// its chunks. (They write their outputs in contiguous runs, so that they vectorise.)
CETUS_GGML_HD inline void chunk_q4_0(const std::byte* b, int, float* y) {
    const float d = f16(b);
    const std::byte* qs = b + 2;
    for (int j = 0; j < 16; ++j) y[j] = float(int(u8(qs + j) & 0xF) - 8) * d;
    for (int j = 0; j < 16; ++j) y[j + 16] = float(int(u8(qs + j) >> 4) - 8) * d;
}
CETUS_GGML_HD inline void chunk_q4_1(const std::byte* b, int, float* y) {
    const float d = f16(b), m = f16(b + 2);
    const std::byte* qs = b + 4;
    for (int j = 0; j < 16; ++j) y[j] = mul_add(float(u8(qs + j) & 0xF), d, m);
    for (int j = 0; j < 16; ++j) y[j + 16] = mul_add(float(u8(qs + j) >> 4), d, m);
}
// Q5_0 / Q5_1: 32 five-bit codes, the low nibbles in qs, the fifth bits in qh
// (element j's at bit j). Q5_0: y = (code - 16) * d; Q5_1: y = code * d + m (no "+ 0"
// for Q5_0: a zero keeps its sign, as ggml's).
template <bool Min>
CETUS_GGML_HD inline void q5_codes(const std::byte* qh_at, const std::byte* qs, float d, float m, float* y) {
    const uint32_t qh = uint32_t(u8(qh_at)) | uint32_t(u8(qh_at + 1)) << 8 |
                        uint32_t(u8(qh_at + 2)) << 16 | uint32_t(u8(qh_at + 3)) << 24;
    for (int j = 0; j < 16; ++j) {
        const int x0 = int((u8(qs + j) & 0xF) | (((qh >> j) & 1u) << 4));
        y[j] = Min ? mul_add(float(x0), d, m) : float(x0 - 16) * d;
    }
    for (int j = 0; j < 16; ++j) {
        const int x1 = int((u8(qs + j) >> 4) | (((qh >> (j + 16)) & 1u) << 4));
        y[j + 16] = Min ? mul_add(float(x1), d, m) : float(x1 - 16) * d;
    }
}
CETUS_GGML_HD inline void chunk_q5_0(const std::byte* b, int, float* y) { q5_codes<false>(b + 2, b + 6, f16(b), 0.0f, y); }
CETUS_GGML_HD inline void chunk_q5_1(const std::byte* b, int, float* y) {
    q5_codes<true>(b + 4, b + 8, f16(b), f16(b + 2), y);
}
CETUS_GGML_HD inline void chunk_q8_0(const std::byte* b, int, float* y) {
    const float d = f16(b);
    for (int j = 0; j < 32; ++j) y[j] = float(int8_t(u8(b + 2 + j))) * d;
}
// Q2_K: scales[16] (low nibble scale, high nibble minimum), qs[64], d, dmin. Each half
// n of 128 values is four chunks r of 32 (bits 2r, 2r + 1 of qs[32 n ..]), each two
// runs of 16 with their own scale and minimum: value = (d * scale) * code - dmin * min.
CETUS_GGML_HD inline void chunk_q2_k(const std::byte* b, int k, float* y) {
    const int n = k / 4, shift = 2 * (k % 4);
    const std::byte* scales = b + 8 * n + 2 * (k % 4);
    const std::byte* q = b + 16 + 32 * n;
    const float d = f16(b + 80), dmin = f16(b + 82);
    for (int half = 0; half < 2; ++half) {
        const uint8_t sc = u8(scales + half);
        const float dl = d * float(sc & 0xF), ml = dmin * float(sc >> 4);
        for (int l = 0; l < 16; ++l) y[16 * half + l] = mul_sub(dl, float((u8(q + l + 16 * half) >> shift) & 3), ml);
    }
}
// Q3_K: hmask[32], qs[64], scales[12] (sixteen 6-bit scales), d. Laid out as Q2_K's
// chunks, each code's third bit in hmask (bit 4 n + r of hmask[0..31]; clear: minus 4).
// Scale j: low 4 bits from byte j % 8 (the low nibble for j < 8, else the high one),
// high 2 bits from bytes 8..11.
CETUS_GGML_HD inline int q3_k_scale(const std::byte* sp, int j) {
    const uint8_t lo = j < 8 ? (u8(sp + j) & 0xF) : (u8(sp + j - 8) >> 4);
    const uint8_t hi = (u8(sp + 8 + j % 4) >> (2 * (j / 4))) & 3;
    return int(lo | (hi << 4)) - 32;
}
CETUS_GGML_HD inline void chunk_q3_k(const std::byte* b, int k, float* y) {
    const int n = k / 4, r = k % 4, shift = 2 * r;
    const std::byte* hm = b;
    const std::byte* q = b + 32 + 32 * n;
    const uint8_t mask = uint8_t(1 << (4 * n + r));
    const float d_all = f16(b + 108);
    for (int half = 0; half < 2; ++half) {
        const float dl = d_all * float(q3_k_scale(b + 96, 8 * n + 2 * r + half));
        for (int l = 0; l < 16; ++l) {
            const int idx = l + 16 * half;
            const int v = int((u8(q + idx) >> shift) & 3) - ((u8(hm + idx) & mask) ? 0 : 4);
            y[idx] = dl * float(v);
        }
    }
}
// Q4_K and Q5_K: eight 6-bit scales and eight 6-bit minimums in 12 bytes (chunk k's:
// scale_min_k4_codes); chunk k's scale d * scale and minimum dmin * min.
CETUS_GGML_HD inline void scale_min_k4_codes(int k, const std::byte* q, uint8_t& sc, uint8_t& m) {
    if (k < 4) {
        sc = u8(q + k) & 63;
        m = u8(q + k + 4) & 63;
    } else {
        sc = uint8_t((u8(q + k + 4) & 0xF) | ((u8(q + k - 4) >> 6) << 4));
        m = uint8_t((u8(q + k + 4) >> 4) | ((u8(q + k) >> 6) << 4));
    }
}
CETUS_GGML_HD inline void scale_min_k4(int k, const std::byte* q, float d, float dmin, float& dl, float& ml) {
    uint8_t sc, m;
    scale_min_k4_codes(k, q, sc, m);
    dl = d * float(sc);
    ml = dmin * float(m);
}
// Q4_K: d, dmin, scales[12], qs[128]; chunks 2 j and 2 j + 1 are the low and high
// nibbles of qs[32 j ..].
CETUS_GGML_HD inline void chunk_q4_k(const std::byte* b, int k, float* y) {
    float dl, ml;
    scale_min_k4(k, b + 4, f16(b), f16(b + 2), dl, ml);
    const std::byte* q = b + 16 + 32 * (k / 2);
    const int shift = 4 * (k % 2);
    for (int l = 0; l < 32; ++l) y[l] = mul_sub(dl, float((u8(q + l) >> shift) & 0xF), ml);
}
// Q5_K: d, dmin, scales[12], qh[32], qs[128]: Q4_K's nibbles, chunk k's fifth bits
// at bit k of qh[0..31].
CETUS_GGML_HD inline void chunk_q5_k(const std::byte* b, int k, float* y) {
    float dl, ml;
    scale_min_k4(k, b + 4, f16(b), f16(b + 2), dl, ml);
    const std::byte* qh = b + 16;
    const std::byte* ql = b + 48 + 32 * (k / 2);
    const int shift = 4 * (k % 2);
    const uint8_t u = uint8_t(1 << k);
    for (int l = 0; l < 32; ++l)
        y[l] = mul_sub(dl, float(((u8(ql + l) >> shift) & 0xF) + ((u8(qh + l) & u) ? 16 : 0)), ml);
}
// Q6_K: ql[128], qh[64], scales[16] (int8), d. Each half n of 128 values is four
// chunks K of 32: chunk K's low four bits are the low (K 0, 1) or high (K 2, 3)
// nibbles of ql[64 n + 32 (K % 2) ...], its top two bits bits 2K, 2K + 1 of
// qh[32 n ..], and its two runs of 16 take scales[8 n + 2K] and scales[8 n + 2K + 1]:
// value = (d * scale) * (q - 32).
CETUS_GGML_HD inline void chunk_q6_k(const std::byte* b, int k, float* y) {
    const int n = k / 4, K = k % 4, shift = 4 * (K / 2);
    const std::byte* lo = b + 64 * n + 32 * (K % 2);
    const std::byte* qh = b + 128 + 32 * n;
    const std::byte* sc = b + 192 + 8 * n + 2 * K;
    const float d = f16(b + 208);
    for (int half = 0; half < 2; ++half) {
        const float s = d * float(int8_t(u8(sc + half)));
        for (int l = 16 * half; l < 16 * half + 16; ++l) {
            const int q = int(((u8(lo + l) >> shift) & 0xF) | (((u8(qh + l) >> (2 * K)) & 3) << 4)) - 32;
            y[l] = s * float(q);
        }
    }
}

// IQ4_NL and IQ4_XS: 4-bit indices into one non-linear table.
CETUS_GGML_HD inline float iq4_value(unsigned i) {
    constexpr float v[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
    return v[i];
}
// 32 indices (the low nibbles first, then the high ones) times d.
CETUS_GGML_HD inline void iq4_codes(const std::byte* qs, float d, float* y) {
    for (int j = 0; j < 16; ++j) y[j] = d * iq4_value(u8(qs + j) & 0xF);
    for (int j = 0; j < 16; ++j) y[j + 16] = d * iq4_value(u8(qs + j) >> 4);
}
// IQ4_NL: d, qs[16].
CETUS_GGML_HD inline void chunk_iq4_nl(const std::byte* b, int, float* y) { iq4_codes(b + 2, f16(b), y); }
// IQ4_XS: d, scales_h (u16), scales_l[4], qs[128]: eight chunks of 32 with 6-bit scales.
CETUS_GGML_HD inline void chunk_iq4_xs(const std::byte* b, int k, float* y) {
    const float d = f16(b);
    const unsigned scales_h = u8(b + 2) | (unsigned(u8(b + 3)) << 8);
    const int ls = ((u8(b + 4 + k / 2) >> (4 * (k % 2))) & 0xF) | (((scales_h >> (2 * k)) & 3) << 4);
    iq4_codes(b + 8 + 16 * k, d * float(ls - 32), y);
}

// The types: ggml id, name, values and bytes per block.
#define CETUS_GGML_TYPES(X)      \
    X(2, q4_0, 32, 18)           \
    X(3, q4_1, 32, 20)           \
    X(6, q5_0, 32, 22)           \
    X(7, q5_1, 32, 24)           \
    X(8, q8_0, 32, 34)           \
    X(10, q2_k, 256, 84)         \
    X(11, q3_k, 256, 110)        \
    X(12, q4_k, 256, 144)        \
    X(13, q5_k, 256, 176)        \
    X(14, q6_k, 256, 210)        \
    X(20, iq4_nl, 32, 18)        \
    X(23, iq4_xs, 256, 136)

// Each type's id as a constant: k_type_q4_k and so on.
#define CETUS_GGML_ID(id, name, values, bytes) inline constexpr uint32_t k_type_##name = id;
CETUS_GGML_TYPES(CETUS_GGML_ID)
#undef CETUS_GGML_ID

// The whole blocks: their chunks in order, unrolled (each chunk's shifts and offsets
// constants, as the host's vectorised loops want them).
#if defined(__CUDACC__)
#define CETUS_GGML_UNROLL _Pragma("unroll")
#else
#define CETUS_GGML_UNROLL _Pragma("GCC unroll 8")
#endif
#define CETUS_GGML_BLOCK(id, name, values, bytes)                                \
    CETUS_GGML_HD inline void block_##name(const std::byte* b, float* y) {      \
        CETUS_GGML_UNROLL                                                        \
        for (int k = 0; k < (values) / 32; ++k) chunk_##name(b, k, y + 32 * k); \
    }
CETUS_GGML_TYPES(CETUS_GGML_BLOCK)
#undef CETUS_GGML_BLOCK

// A block type's values and bytes per block (gguf.cpp's table has the same; test_gguf
// holds them to it); false for a type without a decoder here.
CETUS_GGML_HD inline bool block_shape(uint32_t type, int& values, int& bytes) {
    switch (type) {
#define CETUS_GGML_SHAPE(id, name, v, n) \
    case id: values = v, bytes = n; return true;
        CETUS_GGML_TYPES(CETUS_GGML_SHAPE)
#undef CETUS_GGML_SHAPE
    default: return false;
    }
}

// Decodes one block of a type into y (its values per block); false for another type.
CETUS_GGML_HD inline bool decode_block(uint32_t type, const std::byte* b, float* y) {
    switch (type) {
#define CETUS_GGML_DECODE(id, name, v, n) \
    case id: block_##name(b, y); return true;
        CETUS_GGML_TYPES(CETUS_GGML_DECODE)
#undef CETUS_GGML_DECODE
    default: return false;
    }
}

// Decodes chunk k (values 32 k .. 32 k + 31) of a block of a type into y[0 .. 31];
// false for another type.
CETUS_GGML_HD inline bool decode_chunk(uint32_t type, const std::byte* b, int k, float* y) {
    switch (type) {
#define CETUS_GGML_CHUNK(id, name, v, n) \
    case id: chunk_##name(b, k, y); return true;
        CETUS_GGML_TYPES(CETUS_GGML_CHUNK)
#undef CETUS_GGML_CHUNK
    default: return false;
    }
}

// Calls f(decode) with decode(block, out) for a block type, each type's its own
// lambda type (so a generic f inlines the decoder where it is used); false for
// another type.
template <class F>
inline bool with_block_decoder(uint32_t type, F&& f) {
    switch (type) {
#define CETUS_GGML_WITH(id, name, v, n)                                   \
    case id: f([](const std::byte* b, float* y) { block_##name(b, y); }); \
        return true;
        CETUS_GGML_TYPES(CETUS_GGML_WITH)
#undef CETUS_GGML_WITH
    default: return false;
    }
}

}  // namespace cetus::ggml_blocks
