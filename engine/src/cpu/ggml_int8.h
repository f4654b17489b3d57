// Products of GGUF block-quantised weights with integer dot products: the
// activations are quantised to int8 (per token, each block of the weights' type with
// its own scale) and multiplied with the blocks' integer codes, as llama.cpp's CPU
// kernels do, instead of decoding every weight to fp32. The rounding differs from
// the exact products of cpu/ops.cpp (which stay the default and the reference): each
// term w * x becomes w * (d q) with |x - d q| <= d / 2, d = max |x| / 127 over the
// block, so a product moves by at most sum |w| d / 2. A token's result is still the
// same in a batch of one or of many. matmul takes this path for matrices marked
// Matrix::int8_activations; AVX2 (with FMA) only, elsewhere it keeps the exact path.
#pragma once

#include "weights.h"

#include <cstdint>
#include <vector>

namespace cetus::cpu {

// Activations of n_tokens rows quantised per block of values: the block of the
// weights' type (ggml_blocks.h: 32, or 256 for the K-quants and IQ4_XS), as llama.cpp
// pairs Q8_0 and Q8_K with them, so that a weight block takes one activation scale.
struct Int8Rows {
    int64_t n_tokens = 0, cols = 0;
    int block = 0;
    std::vector<int8_t> q;        // [n_tokens, cols]: round(x / d) (nearest even), |q| <= 127
    std::vector<float> d;         // [n_tokens, cols / block]: max |x| / 127 over the block (0: all zero)
    std::vector<int16_t> qsum16;  // [n_tokens, cols / 16]: the sum of q over each run of 16 (the blocks' minimums)
};
// A block holding a NaN or an infinity gets d = NaN and codes 0, so the products it
// enters are NaN.
// cols % block == 0.
void quantise_int8(const float* x, int64_t ldx, int64_t n_tokens, int64_t cols, int block, Int8Rows& out);

// Whether this machine and the block type take the integer path.
bool int8_product_available(uint32_t ggml_type);
// Whether the products take AVX-512 VNNI's dot products (the same bits as AVX2's, in
// fewer instructions): where the processor has them, unless allow_int8_vnni(false)
// (tests and benchmarks compare the two forms).
bool int8_vnni_in_use();
void allow_int8_vnni(bool allowed);

// y[t, r] = sum_c w[r, c] d[t, c / block] q[t, c] for rows [r0, r1) of a
// block-quantised matrix w (Dtype::Ggml, a type int8_product_available accepts, a.block
// its block's values), on the calling thread (cpu::matmul shares the rows out), into
// y[t * ldy + r - r0].
void matmul_int8_rows(const Int8Rows& a, const Matrix& w, int64_t r0, int64_t r1, float* y, int64_t ldy);
// Tokens rows[0 .. n) of in into out (empty in: empty out).
void gather_int8(const Int8Rows& in, const int64_t* rows, int64_t n, Int8Rows& out);

}  // namespace cetus::cpu
