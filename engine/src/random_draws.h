// The random models' weights (random_model.cpp) as recipes: every byte of a
// matrix follows from its recipe and its place, so the host can build the bytes
// and the CUDA backend can draw the same bytes on the device (cuda/draw_weights.cu)
// without them ever being in host memory. The draws are counter-based: row r's
// k-th 64-bit draw is splitmix64's output for the state seed + r * k_row_step +
// (k + 1) * k_golden, which is what a splitmix64 generator started at
// seed + r * k_row_step gives as its k-th output, row by row, as the host builder
// has always drawn them. Both sides call these functions.
#pragma once

#include "ggml_blocks.h"

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__) || defined(CETUS_CUDA_EMU)
#define CETUS_DRAW_HD __host__ __device__
#else
#define CETUS_DRAW_HD
#endif

namespace cetus::random_draws {

inline constexpr uint64_t k_golden = 0x9e3779b97f4a7c15ull;    // splitmix64's increment
inline constexpr uint64_t k_row_step = 0x2545F4914F6CDD1Dull;  // between rows' first states

// How a matrix's bytes are drawn.
struct Recipe {
    enum class Kind : uint32_t { Bf16, Fp8, Ggml };
    Kind kind = Kind::Bf16;
    uint64_t seed = 0;
    float amplitude = 0.0f;  // Bf16: values uniform in [-amplitude, amplitude)
    uint32_t ggml_type = 0;  // Ggml: the block type (the builder makes Q4_K, Q6_K, Q5_0 and Q8_0)
    uint16_t d = 0;          // Ggml: every block's scale d (IEEE half bits)
    uint16_t dmin = 0;       // Ggml, Q4_K: every block's dmin
};

CETUS_DRAW_HD inline uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Row r's k-th draw (k from 0).
CETUS_DRAW_HD inline uint64_t draw(uint64_t seed, int64_t row, int64_t k) {
    return mix(seed + uint64_t(row) * k_row_step + uint64_t(k + 1) * k_golden);
}

// A draw as a float uniform in [0, 1) (its top 24 bits), then as a value uniform in
// [-a, a) rounded to bf16 (to nearest even; the values are finite).
CETUS_DRAW_HD inline float unit(uint64_t bits) { return float(bits >> 40) * (1.0f / 16777216.0f); }
CETUS_DRAW_HD inline uint16_t bf16_value(uint64_t bits, float a) {
    const float x = (2.0f * unit(bits) - 1.0f) * a;
    uint32_t b;
#ifdef __CUDA_ARCH__
    b = __float_as_uint(x);
#else
    std::memcpy(&b, &x, 4);
#endif
    b += 0x7fffu + ((b >> 16) & 1u);
    return uint16_t(b >> 16);
}
// Byte k of a draw as an e4m3 code: exponent 4..10, random mantissa and sign, so
// |x| in [2^-3, 2^4), never NaN.
CETUS_DRAW_HD inline uint8_t fp8_code(uint64_t bits, int k) {
    const uint8_t b = uint8_t(bits >> (8 * k));
    const uint8_t e = uint8_t(4 + (b >> 3) % 7);
    return uint8_t((b & 0x80) | (e << 3) | (b & 7));
}

// Block b of row r as a file holds it, into out[its bytes (ggml_blocks::block_shape)]:
// the row's draws as
// bytes (row byte i is byte i % 8 of draw i / 8), then the scales set: every block's d
// (Q6_K's at byte 208, the others' at 0) and, for Q4_K, dmin = the recipe's and the
// minimums equal to the scales (scale_min_k4's packing), so that values centre on zero
// as a checkpoint's do (random_model.cpp says why).
CETUS_DRAW_HD inline void ggml_block(const Recipe& r, int64_t row, int64_t block, uint8_t* out) {
    int values = 0, bytes = 0;
    ggml_blocks::block_shape(r.ggml_type, values, bytes);
    const int64_t first = block * bytes;
    uint64_t bits = draw(r.seed, row, first / 8);
    for (int i = 0; i < bytes; ++i) {
        const int64_t at = first + i;
        if (at % 8 == 0) bits = draw(r.seed, row, at / 8);
        out[i] = uint8_t(bits >> (8 * (at % 8)));
    }
    const int d_at = r.ggml_type == ggml_blocks::k_type_q6_k ? 208 : 0;
    out[d_at] = uint8_t(r.d & 0xff);
    out[d_at + 1] = uint8_t(r.d >> 8);
    if (r.ggml_type == ggml_blocks::k_type_q4_k) {
        out[2] = uint8_t(r.dmin & 0xff);
        out[3] = uint8_t(r.dmin >> 8);
        uint8_t* sc = out + 4;
        for (int j = 0; j < 4; ++j) sc[j + 4] = sc[j];
        for (int j = 8; j < 12; ++j) sc[j] = uint8_t((sc[j] & 0xF) * 0x11);
    }
}

}  // namespace cetus::random_draws
