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
#define CETUS_GGML_HD __host__ __device__
#define CETUS_GGML_DEVICE_BUILD 1
#else
#define CETUS_GGML_HD
#define CETUS_GGML_DEVICE_BUILD 0
#endif

namespace cetus::ggml_blocks {

CETUS_GGML_HD inline uint8_t u8(const std::byte* p) { return uint8_t(*p); }

// IEEE half to float, every value exact (subnormals, infinities; a NaN is the quiet
// NaN of its sign): the engine's table in host code, the same bits computed in the
// CUDA backend (whose plug-in has no table).
CETUS_GGML_HD inline float half_bits_to_f32(uint16_t h) {
#if CETUS_GGML_DEVICE_BUILD
    const uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu;
    uint32_t mant = h & 0x3FFu, bits;
    if (exp == 0x1F) {
        bits = sign | (mant ? 0x7FC00000u : 0x7F800000u);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {  // subnormal: normalised
        uint32_t e = 113;
        while (!(mant & 0x400u)) {
            mant <<= 1;
            --e;
        }
        bits = sign | (e << 23) | ((mant & 0x3FFu) << 13);
    }
#ifdef __CUDA_ARCH__
    return __uint_as_float(bits);
#else
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
#endif
#else
    return f16_to_f32(h);
#endif
}
CETUS_GGML_HD inline float f16(const std::byte* p) {
    return half_bits_to_f32(uint16_t(u8(p) | (u8(p + 1) << 8)));
}

// Q4_K and Q5_K: eight 6-bit scales and eight 6-bit minimums in 12 bytes.
CETUS_GGML_HD inline void scale_min_k4(int j, const std::byte* q, uint8_t& sc, uint8_t& m) {
    if (j < 4) {
        sc = u8(q + j) & 63;
        m = u8(q + j + 4) & 63;
    } else {
        sc = uint8_t((u8(q + j + 4) & 0xF) | ((u8(q + j - 4) >> 6) << 4));
        m = uint8_t((u8(q + j + 4) >> 4) | ((u8(q + j) >> 6) << 4));
    }
}

// (The decoders below write their outputs in contiguous runs, so that they vectorise.)
CETUS_GGML_HD inline void block_q4_0(const std::byte* b, float* y) {
    const float d = f16(b);
    const std::byte* qs = b + 2;
    for (int j = 0; j < 16; ++j) y[j] = float(int(u8(qs + j) & 0xF) - 8) * d;
    for (int j = 0; j < 16; ++j) y[j + 16] = float(int(u8(qs + j) >> 4) - 8) * d;
}
CETUS_GGML_HD inline void block_q4_1(const std::byte* b, float* y) {
    const float d = f16(b), m = f16(b + 2);
    const std::byte* qs = b + 4;
    for (int j = 0; j < 16; ++j) y[j] = float(u8(qs + j) & 0xF) * d + m;
    for (int j = 0; j < 16; ++j) y[j + 16] = float(u8(qs + j) >> 4) * d + m;
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
        y[j] = Min ? float(x0) * d + m : float(x0 - 16) * d;
    }
    for (int j = 0; j < 16; ++j) {
        const int x1 = int((u8(qs + j) >> 4) | (((qh >> (j + 16)) & 1u) << 4));
        y[j + 16] = Min ? float(x1) * d + m : float(x1 - 16) * d;
    }
}
CETUS_GGML_HD inline void block_q5_0(const std::byte* b, float* y) { q5_codes<false>(b + 2, b + 6, f16(b), 0.0f, y); }
CETUS_GGML_HD inline void block_q5_1(const std::byte* b, float* y) {
    q5_codes<true>(b + 4, b + 8, f16(b), f16(b + 2), y);
}
CETUS_GGML_HD inline void block_q8_0(const std::byte* b, float* y) {
    const float d = f16(b);
    for (int j = 0; j < 32; ++j) y[j] = float(int8_t(u8(b + 2 + j))) * d;
}
// Q2_K: scales[16] (low nibble scale, high nibble minimum), qs[64], d, dmin. Each half
// of 128 values is four runs of 32 (bits Shift, Shift + 1 of qs[0..31]), each two runs
// of 16 with their own scale and minimum: value = (d * scale) * code - dmin * min.
template <int Shift>
CETUS_GGML_HD inline void q2_k_run(const std::byte* q, const std::byte* scales, float d, float dmin, float* y) {
    for (int half = 0; half < 2; ++half) {
        const uint8_t sc = u8(scales + half);
        const float dl = d * float(sc & 0xF), ml = dmin * float(sc >> 4);
        for (int l = 0; l < 16; ++l) y[16 * half + l] = dl * float((u8(q + l + 16 * half) >> Shift) & 3) - ml;
    }
}
CETUS_GGML_HD inline void block_q2_k(const std::byte* b, float* y) {
    const std::byte* scales = b;
    const std::byte* q = b + 16;
    const float d = f16(b + 80), dmin = f16(b + 82);
    for (int n = 0; n < 2; ++n, q += 32, scales += 8, y += 128) {
        q2_k_run<0>(q, scales, d, dmin, y);
        q2_k_run<2>(q, scales + 2, d, dmin, y + 32);
        q2_k_run<4>(q, scales + 4, d, dmin, y + 64);
        q2_k_run<6>(q, scales + 6, d, dmin, y + 96);
    }
}
// Q3_K: hmask[32], qs[64], scales[12] (sixteen 6-bit scales), d. Laid out as Q2_K's
// runs, each code's third bit in hmask (bit `mask` of hmask[0..31]; clear: minus 4).
template <int Shift>
CETUS_GGML_HD inline void q3_k_run(const std::byte* q, const std::byte* hm, uint8_t mask, const int8_t* scales,
                                  float d_all,
                     float* y) {
    for (int half = 0; half < 2; ++half) {
        const float dl = d_all * float(scales[half]);
        for (int l = 0; l < 16; ++l) {
            const int idx = l + 16 * half;
            const int v = int((u8(q + idx) >> Shift) & 3) - ((u8(hm + idx) & mask) ? 0 : 4);
            y[idx] = dl * float(v);
        }
    }
}
CETUS_GGML_HD inline void block_q3_k(const std::byte* b, float* y) {
    const std::byte* hm = b;
    const std::byte* q = b + 32;
    const std::byte* sp = b + 96;
    const float d_all = f16(b + 108);
    int8_t scales[16];
    for (int j = 0; j < 16; ++j) {
        // Low 4 bits: byte j % 8, low nibble for j < 8, else high; high 2 bits from bytes 8..11.
        const uint8_t lo = j < 8 ? (u8(sp + j) & 0xF) : (u8(sp + j - 8) >> 4);
        const uint8_t hi = (u8(sp + 8 + j % 4) >> (2 * (j / 4))) & 3;
        scales[j] = int8_t(int(lo | (hi << 4)) - 32);
    }
    for (int n = 0; n < 2; ++n, q += 32, y += 128) {
        const int m0 = 4 * n;  // hmask bits 4n .. 4n + 3
        q3_k_run<0>(q, hm, uint8_t(1 << m0), scales + 8 * n, d_all, y);
        q3_k_run<2>(q, hm, uint8_t(1 << (m0 + 1)), scales + 8 * n + 2, d_all, y + 32);
        q3_k_run<4>(q, hm, uint8_t(1 << (m0 + 2)), scales + 8 * n + 4, d_all, y + 64);
        q3_k_run<6>(q, hm, uint8_t(1 << (m0 + 3)), scales + 8 * n + 6, d_all, y + 96);
    }
}
// Sub-blocks is and is + 1 of a Q4_K / Q5_K block: their scales and minima.
CETUS_GGML_HD inline void scales_k4_pair(int is, const std::byte* sc, float d, float dmin, float& d1, float& m1,
                                        float& d2, float& m2) {
    uint8_t s, m;
    scale_min_k4(is, sc, s, m);
    d1 = d * float(s);
    m1 = dmin * float(m);
    scale_min_k4(is + 1, sc, s, m);
    d2 = d * float(s);
    m2 = dmin * float(m);
}
// Q4_K: d, dmin, scales[12], qs[128].
CETUS_GGML_HD inline void block_q4_k(const std::byte* b, float* y) {
    const float d = f16(b), dmin = f16(b + 2);
    const std::byte* sc = b + 4;
    const std::byte* q = b + 16;
    for (int j = 0, is = 0; j < 256; j += 64, is += 2) {
        float d1, m1, d2, m2;
        scales_k4_pair(is, sc, d, dmin, d1, m1, d2, m2);
        for (int l = 0; l < 32; ++l) *y++ = d1 * float(u8(q + l) & 0xF) - m1;
        for (int l = 0; l < 32; ++l) *y++ = d2 * float(u8(q + l) >> 4) - m2;
        q += 32;
    }
}
// Q5_K: d, dmin, scales[12], qh[32], qs[128].
CETUS_GGML_HD inline void block_q5_k(const std::byte* b, float* y) {
    const float d = f16(b), dmin = f16(b + 2);
    const std::byte* sc = b + 4;
    const std::byte* qh = b + 16;
    const std::byte* ql = b + 48;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0, is = 0; j < 256; j += 64, is += 2) {
        float d1, m1, d2, m2;
        scales_k4_pair(is, sc, d, dmin, d1, m1, d2, m2);
        for (int l = 0; l < 32; ++l) *y++ = d1 * float((u8(ql + l) & 0xF) + ((u8(qh + l) & u1) ? 16 : 0)) - m1;
        for (int l = 0; l < 32; ++l) *y++ = d2 * float((u8(ql + l) >> 4) + ((u8(qh + l) & u2) ? 16 : 0)) - m2;
        ql += 32;
        u1 = uint8_t(u1 << 2);
        u2 = uint8_t(u2 << 2);
    }
}
// Q6_K: ql[128], qh[64], scales[16] (int8), d. Each half of 128 values is four
// quarters of 32: quarter K's low four bits are the low (K 0, 1) or high (K 2, 3)
// nibbles of ql[32 (K % 2) ...], its top two bits bits 2K, 2K + 1 of qh[0..31], and
// its two runs of 16 take scales[2K] and scales[2K + 1]: value = (d * scale) * (q - 32).
template <int K>
CETUS_GGML_HD inline void q6_k_quarter(const std::byte* ql, const std::byte* qh, const std::byte* sc, float d,
                                      float* y) {
    const std::byte* lo = ql + 32 * (K % 2);
    constexpr int shift = 4 * (K / 2);
    for (int half = 0; half < 2; ++half) {
        const float s = d * float(int8_t(u8(sc + 2 * K + half)));
        for (int l = 16 * half; l < 16 * half + 16; ++l) {
            const int q = int(((u8(lo + l) >> shift) & 0xF) | (((u8(qh + l) >> (2 * K)) & 3) << 4)) - 32;
            y[32 * K + l] = s * float(q);
        }
    }
}
CETUS_GGML_HD inline void block_q6_k(const std::byte* b, float* y) {
    const std::byte* ql = b;
    const std::byte* qh = b + 128;
    const std::byte* sc = b + 192;
    const float d = f16(b + 208);
    for (int n = 0; n < 2; ++n, y += 128, ql += 64, qh += 32, sc += 8) {
        q6_k_quarter<0>(ql, qh, sc, d, y);
        q6_k_quarter<1>(ql, qh, sc, d, y);
        q6_k_quarter<2>(ql, qh, sc, d, y);
        q6_k_quarter<3>(ql, qh, sc, d, y);
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
CETUS_GGML_HD inline void block_iq4_nl(const std::byte* b, float* y) { iq4_codes(b + 2, f16(b), y); }
// IQ4_XS: d, scales_h (u16), scales_l[4], qs[128]: eight sub-blocks of 32 with 6-bit scales.
CETUS_GGML_HD inline void block_iq4_xs(const std::byte* b, float* y) {
    const float d = f16(b);
    const unsigned scales_h = u8(b + 2) | (unsigned(u8(b + 3)) << 8);
    for (int ib = 0; ib < 8; ++ib) {
        const int ls = ((u8(b + 4 + ib / 2) >> (4 * (ib % 2))) & 0xF) | (((scales_h >> (2 * ib)) & 3) << 4);
        iq4_codes(b + 8 + 16 * ib, d * float(ls - 32), y + 32 * ib);
    }
}

// A block type's values and bytes per block (gguf.cpp's table has the same; test_gguf
// holds them to it); false for a type without a decoder here.
CETUS_GGML_HD inline bool block_shape(uint32_t type, int& values, int& bytes) {
    switch (type) {
    case 2: values = 32, bytes = 18; return true;     // Q4_0
    case 3: values = 32, bytes = 20; return true;     // Q4_1
    case 6: values = 32, bytes = 22; return true;     // Q5_0
    case 7: values = 32, bytes = 24; return true;     // Q5_1
    case 8: values = 32, bytes = 34; return true;     // Q8_0
    case 10: values = 256, bytes = 84; return true;   // Q2_K
    case 11: values = 256, bytes = 110; return true;  // Q3_K
    case 12: values = 256, bytes = 144; return true;  // Q4_K
    case 13: values = 256, bytes = 176; return true;  // Q5_K
    case 14: values = 256, bytes = 210; return true;  // Q6_K
    case 20: values = 32, bytes = 18; return true;    // IQ4_NL
    case 23: values = 256, bytes = 136; return true;  // IQ4_XS
    default: return false;
    }
}

// Decodes one block of a type into y (its values per block); false for another type.
CETUS_GGML_HD inline bool decode_block(uint32_t type, const std::byte* b, float* y) {
    switch (type) {
    case 2: block_q4_0(b, y); return true;
    case 3: block_q4_1(b, y); return true;
    case 6: block_q5_0(b, y); return true;
    case 7: block_q5_1(b, y); return true;
    case 8: block_q8_0(b, y); return true;
    case 10: block_q2_k(b, y); return true;
    case 11: block_q3_k(b, y); return true;
    case 12: block_q4_k(b, y); return true;
    case 13: block_q5_k(b, y); return true;
    case 14: block_q6_k(b, y); return true;
    case 20: block_iq4_nl(b, y); return true;
    case 23: block_iq4_xs(b, y); return true;
    default: return false;
    }
}

// Calls f(decode) with decode(block, out) for a block type, each type's its own
// lambda type (so a generic f inlines the decoder where it is used); false for
// another type.
template <class F>
inline bool with_block_decoder(uint32_t type, F&& f) {
    switch (type) {
    case 2: f([](const std::byte* b, float* y) { block_q4_0(b, y); }); return true;
    case 3: f([](const std::byte* b, float* y) { block_q4_1(b, y); }); return true;
    case 6: f([](const std::byte* b, float* y) { block_q5_0(b, y); }); return true;
    case 7: f([](const std::byte* b, float* y) { block_q5_1(b, y); }); return true;
    case 8: f([](const std::byte* b, float* y) { block_q8_0(b, y); }); return true;
    case 10: f([](const std::byte* b, float* y) { block_q2_k(b, y); }); return true;
    case 11: f([](const std::byte* b, float* y) { block_q3_k(b, y); }); return true;
    case 12: f([](const std::byte* b, float* y) { block_q4_k(b, y); }); return true;
    case 13: f([](const std::byte* b, float* y) { block_q5_k(b, y); }); return true;
    case 14: f([](const std::byte* b, float* y) { block_q6_k(b, y); }); return true;
    case 20: f([](const std::byte* b, float* y) { block_iq4_nl(b, y); }); return true;
    case 23: f([](const std::byte* b, float* y) { block_iq4_xs(b, y); }); return true;
    default: return false;
    }
}

}  // namespace cetus::ggml_blocks
