// The CUDA backend's GGUF blocks (ggml_decode.cu, the Ggml paths of matvec.cu and
// embed.cu, all through device_math.cuh's ggml_chunk, with its wider loads for Q4_K
// and Q5_K, and for Q6_K, Q5_0 and Q8_0, whose blocks sit at every even offset from
// 16-byte alignment in these rows: 8 or more blocks a row) against the engine's own decoding
// (ggml_dequantize, gguf.cpp, which test_gguf holds to gguf.quants), for every block
// type the engine reads:
// - random blocks, their f16 scales included (so zeros, subnormals, infinities and
//   NaNs among them), decoded on the device into padded bf16 rows (every value the
//   host's rounded to nearest even as f32_to_bf16 rounds, dtype.h) and fp32 rows
//   (the host's values), bit for bit (a NaN where the host has one: a GPU's
//   arithmetic gives its own NaN bits), the rows' padding untouched;
// - blocks with finite scales kept as blocks (DeviceDtype::Ggml): the embedding
//   gather gives the host's rows bit for bit, their expansion to bf16 for the cuBLAS
//   products the host's rounded values, and the warp-per-row products (one and
//   several passes of tokens; narrow matrices split over warps, wide ones not, rows
//   of several tiles of staged activations) the double-precision sums of the host's
//   values within fp32 rounding, and the kernel's order of sums taken on the host bit
//   for bit (also two products in one launch; gate and up with the SwiGLU within 1e-6),
//   and one token's products with the rows staged in shared memory
//   (DeviceMatrix::ggml_stage) the same bits as read from the rows, in both modes;
// - the query absorption from a kv_b_proj in blocks, bit for bit against the
//   host's own multiply-adds in the CPU's order.
// Built for the CUDA emulator and, by the gpu-check preset, for a GPU.
#include "cetus/error.h"
#include "check_util.h"
#include "cpu/ggml_int8.h"
#include "dtype.h"
#include "ggml_blocks.h"
#include "gguf.h"
#include "kernels.h"
#include "weights.h"

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cmath>
#include <map>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace cetus::check;

struct Type {
    uint32_t id;
    const char* name;
    int values, bytes;
};

// pad: the output rows' padding in values; 8 keeps every chunk's output 16-byte
// aligned (the kernel's 16-byte stores), 3 does not (one value at a time).
void check_type(const Type& t, int64_t pad, std::mt19937& rng) {
    const int64_t rows = 24, blocks = t.values == 32 ? 40 : 8, cols = blocks * t.values, ld = cols + pad;
    const std::string name = std::string(t.name) + " (rows " + std::to_string(ld) + " apart)";
    const int64_t row_bytes = cetus::cuda::ggml_row_bytes(t.id, cols);
    check(row_bytes == blocks * t.bytes, std::string(t.name) + ": " + std::to_string(row_bytes) +
                                             " bytes a row of " + std::to_string(cols) + " values");
    std::vector<std::byte> src(size_t(rows * blocks * t.bytes));
    for (auto& b : src) b = std::byte(rng() & 0xFF);
    std::vector<uint16_t> want(size_t(rows * ld), 0xEEEE);
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
        cetus::ggml_dequantize(t.id, src.data() + r * row_bytes, row.data(), cols);
        for (int64_t c = 0; c < cols; ++c) want[size_t(r * ld + c)] = cetus::f32_to_bf16(row[size_t(c)]);
    }
    // The device's rows 16 bytes apart at least, as device_weights lays them out
    // (ggml_device_matrix refuses others); the block counts above need no padding.
    const int64_t src_ld = (row_bytes + 15) / 16 * 16;
    std::byte* d_src = device_copy(device_layout(t.id, src, rows, cols, src_ld));
    uint16_t* d_out = device_copy(std::vector<uint16_t>(want.size(), 0xEEEE));
    cetus::cuda::launch_ggml_to_bf16(t.id, d_src, src_ld, rows, cols, d_out, ld, nullptr);
    const std::vector<uint16_t> got = host_copy(d_out, want.size());
    auto is_nan = [](uint16_t b) { return (b & 0x7F80) == 0x7F80 && (b & 0x7F) != 0; };
    int64_t differ = 0, nan = 0, first = -1;
    for (size_t i = 0; i < want.size(); ++i) {
        nan += is_nan(want[i]);
        if (got[i] != want[i] && !(is_nan(got[i]) && is_nan(want[i]))) {
            ++differ;
            if (first < 0) first = int64_t(i);
        }
    }
    std::string what = name + ": " + std::to_string(rows * cols) + " values (" + std::to_string(nan) +
                       " NaN) decoded on the device == the host's, bit for bit, padding untouched";
    if (first >= 0) {
        char buf[96];
        std::snprintf(buf, sizeof buf, "; %lld differ, first at row %lld col %lld: %04x vs %04x", (long long)differ,
                      (long long)(first / ld), (long long)(first % ld), got[size_t(first)], want[size_t(first)]);
        what += buf;
    }
    check(differ == 0, what);
    // The same blocks as fp32 (the upload's form for kv_b_proj and the router).
    std::vector<float> want_f(size_t(rows * ld), -7.0f);
    for (int64_t r = 0; r < rows; ++r) cetus::ggml_dequantize(t.id, src.data() + r * row_bytes, &want_f[size_t(r * ld)], cols);
    float* d_f = device_copy(std::vector<float>(want_f.size(), -7.0f));
    cetus::cuda::launch_ggml_to_f32(t.id, d_src, src_ld, rows, cols, d_f, ld, nullptr);
    const std::vector<float> got_f = host_copy(d_f, want_f.size());
    differ = 0;
    for (size_t i = 0; i < want_f.size(); ++i)
        if (std::memcmp(&got_f[i], &want_f[i], 4) != 0 && !(std::isnan(got_f[i]) && std::isnan(want_f[i]))) ++differ;
    check(differ == 0, name + ": the same blocks decoded to fp32 == the host's, bit for bit (" +
                           std::to_string(differ) + " differ)");
    cudaFree(d_src);
    cudaFree(d_out);
    cudaFree(d_f);
}

// W[row] . x in the fp32 kernel's order (matvec.cu, device_math.cuh: ggml_rows_dot):
// lane l of each of the split warps on the row sums chunks part * 32 + l, stepping 32 *
// split, value by value with fused multiply-adds; the xor butterfly of warp_sum over
// the lanes; the warps' sums added in warp order.
float kernel_order_dot(const float* wrow, const float* x, int64_t cols, int split) {
    const int64_t n_chunks = cols / 32;
    float total = 0.0f;
    for (int part = 0; part < split; ++part) {
        float lanes[32];
        for (int l = 0; l < 32; ++l) {
            float acc = 0.0f;
            for (int64_t c = part * 32 + l; c < n_chunks; c += 32 * split)
                for (int64_t i = c * 32; i < c * 32 + 32; ++i) acc = std::fma(wrow[i], x[i], acc);
            lanes[l] = acc;
        }
        for (int off = 16; off > 0; off >>= 1) {
            float next[32];
            for (int l = 0; l < 32; ++l) next[l] = lanes[l] + lanes[l ^ off];
            std::memcpy(lanes, next, sizeof lanes);
        }
        total = part == 0 ? lanes[0] : total + lanes[0];
    }
    return total;
}

// The fast mode's offset of chunk c of a row of blocks (GgmlCodes::o: value = s * code
// + o): the minimum of the types that have one, from the engine's own block functions.
double chunk_offset(uint32_t id, const std::byte* row, int bytes, int values, int64_t c) {
    const std::byte* b = row + (c * 32 / values) * bytes;
    const int k = int(c % (values / 32));
    float dl = 0.0f, ml = 0.0f;
    switch (id) {
    case 12: case 13:  // Q4_K, Q5_K: dl * code - ml
        cetus::ggml_blocks::scale_min_k4(k, b + 4, cetus::ggml_blocks::f16(b), cetus::ggml_blocks::f16(b + 2), dl, ml);
        return ml;
    case 3: case 7:  // Q4_1, Q5_1: d * code + m
        return cetus::ggml_blocks::f16(b + 2);
    default: return 0.0;
    }
}

// The largest scale of chunk c's runs where the fast mode takes its codes biased
// (GgmlCodes: 1 + code / 128, times 128 times the scale; the types whose codes have
// at most 7 bits), else 0.
double biased_scale(uint32_t id, const std::byte* row, int bytes, int values, int64_t c) {
    using cetus::ggml_blocks::f16;
    const std::byte* b = row + (c * 32 / values) * bytes;
    const int k = int(c % (values / 32));
    switch (id) {
    case 12: case 13: {  // Q4_K, Q5_K
        float dl = 0.0f, ml = 0.0f;
        cetus::ggml_blocks::scale_min_k4(k, b + 4, f16(b), f16(b + 2), dl, ml);
        return std::fabs(dl);
    }
    case 2: case 3: case 6: case 7: return std::fabs(f16(b));  // Q4_0, Q4_1, Q5_0, Q5_1: d
    case 14: {  // Q6_K: d * scale, a scale a run
        const std::byte* sc = b + 192 + 8 * (k / 4) + 2 * (k % 4);
        return std::fabs(f16(b + 208)) * std::max(std::abs(int(int8_t(sc[0]))), std::abs(int(int8_t(sc[1]))));
    }
    default: return 0.0;
    }
}

// The products of n (1 or 2) tokens of m with its rows staged in shared memory
// (DeviceMatrix::ggml_stage, the decode products' copies) against the same launches
// reading the rows: a product, and with a matrix of another block type (Q6_K, or Q4_K
// beside Q6_K, as Q4_K_M files mix them) a pair of products in one launch and gate and up
// with the SwiGLU, bit for bit, the padding untouched; `staged` of the three launches
// counted as staged (a launch whose copies would not fit the shared memory reads the
// rows). Also with two tiles in flight (ggml_stage 2): the same bits, the same launches
// staged, those of rows of more than one tile with two buffers where they fit (counted
// per block type in g_double_staged: main asks that every type had some). x: the
// tokens' activations on the device, ldx apart.
std::map<std::string, uint64_t> g_double_staged;
void check_staged(const cetus::cuda::DeviceMatrix& m, const float* x, int64_t ldx, int64_t n, int64_t ldy,
                  uint64_t staged, const std::string& shape, std::mt19937& rng) {
    check(cetus::cuda::ggml_stage_fits_type(m.ggml_type), shape + "the block type fits a warp's slot");
    const int64_t rows = m.rows, cols = m.cols;
    const bool q6 = m.ggml_type == 14;
    const uint32_t other_id = q6 ? 12 : 14;
    const int other_bytes = q6 ? 144 : 210;
    const int64_t blocks = cols / 256, other_ld = (blocks * other_bytes + 15) / 16 * 16;
    check(cols % 256 == 0, shape + "rows of whole 256-value blocks (for the second matrix)");
    std::vector<std::byte> src(size_t(rows * other_ld), std::byte{0});
    for (int64_t r = 0; r < rows; ++r) random_ggml_blocks(other_id, other_bytes, blocks, src.data() + r * other_ld, rng);
    std::byte* d_o = device_copy(device_layout(other_id, src, rows, cols, other_ld));
    cetus::cuda::DeviceMatrix other = cetus::cuda::ggml_device_matrix(other_id, rows, cols, d_o, other_ld);
    other.ggml_fast = m.ggml_fast;
    other.ggml_int8 = m.ggml_int8;
    std::vector<float> out[3][3];
    uint64_t staged_launches[3] = {}, doubled = 0;
    for (int s = 0; s < 3; ++s) {
        cetus::cuda::DeviceMatrix w = m, o = other;
        w.ggml_stage = o.ggml_stage = uint8_t(s);
        const uint64_t before = cetus::cuda::ggml_staged_launches(), before2 = cetus::cuda::ggml_staged_launches(2);
        const size_t len = size_t(n * ldy);
        float* d_a = device_copy(std::vector<float>(len, -7.0f));
        float* d_b = device_copy(std::vector<float>(len, -7.0f));
        float* d_c = device_copy(std::vector<float>(len, -7.0f));
        cetus::cuda::launch_matvec(w, x, ldx, n, d_a, ldy, cetus::cuda::RowGroups{1, rows, 0, 0, 0, 0}, nullptr);
        cetus::cuda::launch_matvec_pair(w, d_b, ldy, o, d_c, ldy, x, ldx, n, nullptr);
        out[s][0] = host_copy(d_a, len);
        out[s][1] = host_copy(d_b, len);
        std::vector<float> c = host_copy(d_c, len);
        out[s][1].insert(out[s][1].end(), c.begin(), c.end());
        cetus::cuda::launch_matvec_gate_up(w, o, x, ldx, n, d_a, ldy, nullptr);
        out[s][2] = host_copy(d_a, len);
        staged_launches[s] = cetus::cuda::ggml_staged_launches() - before;
        if (s == 2) doubled = cetus::cuda::ggml_staged_launches(2) - before2;
        for (float* p : {d_a, d_b, d_c}) cudaFree(p);
    }
    cudaFree(d_o);
    const std::string tokens = std::to_string(n) + (n == 1 ? " token" : " tokens");
    check(staged_launches[0] == 0 && staged_launches[1] == staged && staged_launches[2] == staged,
          shape + tokens + ": " + std::to_string(staged) + " of the 3 launches staged their rows when asked (" +
              std::to_string(staged_launches[1]) + ", with two tiles in flight " + std::to_string(staged_launches[2]) +
              "), none otherwise (" + std::to_string(staged_launches[0]) + ")");
    const int split = rows < cetus::cuda::k_matvec_narrow_rows ? cetus::cuda::k_matvec_narrow_split : 1;
    check(m.cols / 32 > 32 * split || doubled == 0,
          shape + tokens + ": rows of one tile take one buffer (" + std::to_string(doubled) + " launches took two)");
    g_double_staged[shape.substr(0, shape.find(' '))] += doubled;
    for (int s = 1; s < 3; ++s) {
        int64_t padding = 0;
        for (int k = 0; k < 3; ++k)
            for (size_t i = 0; i < out[s][k].size(); ++i)
                padding += i % size_t(ldy) >= size_t(rows) && out[s][k][i] != -7.0f;
        check(same_bits(out[0][0], out[s][0]) && same_bits(out[0][1], out[s][1]) && same_bits(out[0][2], out[s][2]) &&
                  padding == 0,
              shape + tokens + ", rows staged in shared memory" + (s == 2 ? " (two tiles in flight: " +
              std::to_string(doubled) + " launches)" : "") + " == read from the rows, bit for bit (a product; with " +
                  (q6 ? "Q4_K" : "Q6_K") + " a pair, gate and up with the SwiGLU; " + std::to_string(padding) +
                  " padding values written)");
    }
}

// Each token's sums the same bits alone (alone: each of 11 tokens' outputs, ldy apart)
// as in batches of 2, 3 and 11 (a verify batch: MTP on == off), the padding untouched;
// two products in one launch and gate and up with the SwiGLU as each product alone.
// what: the shape and the form of the sums.
void check_batches(const cetus::cuda::DeviceMatrix& m, const float* d_x, int64_t ldx, int64_t ldy,
                   const std::vector<float>& alone, const std::string& what) {
    const int64_t rows = m.rows;
    const cetus::cuda::RowGroups all{1, rows, 0, 0, 0, 0};
    for (int64_t n : {2, 3, 11}) {
        float* d_b = device_copy(std::vector<float>(size_t(n * ldy), -7.0f));
        cetus::cuda::launch_matvec(m, d_x, ldx, n, d_b, ldy, all, nullptr);
        const std::vector<float> y = host_copy(d_b, size_t(n * ldy));
        int64_t differ = 0, padding = 0;
        for (int64_t tk = 0; tk < n; ++tk) {
            differ += std::memcmp(&y[size_t(tk * ldy)], &alone[size_t(tk * ldy)], size_t(rows) * 4) != 0;
            for (int64_t r = rows; r < ldy; ++r) padding += y[size_t(tk * ldy + r)] != -7.0f;
        }
        check(differ == 0 && padding == 0, what + " of " + std::to_string(n) +
                                               " tokens in one batch == each token alone, bit for bit (" +
                                               std::to_string(differ) + " tokens differ, " + std::to_string(padding) +
                                               " padding values written)");
        if (n == 2) {
            float* d_y2 = device_copy(std::vector<float>(size_t(n * ldy), -7.0f));
            cetus::cuda::launch_matvec_pair(m, d_b, ldy, m, d_y2, ldy, d_x, ldx, n, nullptr);
            const std::vector<float> y1 = host_copy(d_b, size_t(n * ldy)), y2 = host_copy(d_y2, size_t(n * ldy));
            int64_t differ_pair = 0, off_silu = 0;
            for (int64_t tk = 0; tk < n; ++tk) {
                differ_pair += std::memcmp(&y1[size_t(tk * ldy)], &alone[size_t(tk * ldy)], size_t(rows) * 4) != 0;
                differ_pair += std::memcmp(&y2[size_t(tk * ldy)], &alone[size_t(tk * ldy)], size_t(rows) * 4) != 0;
            }
            check(differ_pair == 0, what + ", a pair of products in one launch == each alone, bit for bit (" +
                                        std::to_string(differ_pair) + " rows of tokens differ)");
            cetus::cuda::launch_matvec_gate_up(m, m, d_x, ldx, n, d_b, ldy, nullptr);
            const std::vector<float> h = host_copy(d_b, size_t(n * ldy));
            for (int64_t tk = 0; tk < n; ++tk)
                for (int64_t r = 0; r < rows; ++r) {
                    const double z = alone[size_t(tk * ldy + r)];
                    const double want = z / (1.0 + std::exp(-z)) * z;
                    off_silu += std::fabs(h[size_t(tk * ldy + r)] - want) > 1e-6 * (1.0 + std::fabs(want));
                }
            check(off_silu == 0, what + ", gate and up with the SwiGLU in one launch == silu(gate) * up "
                                         "of each product within 1e-6 (" + std::to_string(off_silu) + " off)");
            cudaFree(d_y2);
        }
        cudaFree(d_b);
    }
}

// The fast mode's products (DeviceMatrix::ggml_fast: codes times the activations, then
// scales and offsets times those sums and the activations' sums, GgmlCodes): the
// double-precision sums of the host's values within 64 roundings of the terms the
// kernel adds (the codes' products' magnitude: at most the values' plus the offset's,
// and the bias of biased codes);
// each token's sums the same bits alone (one token, as a decode step) as in a batch
// of 2, 3 or 11 (a verify batch: MTP on == off), rows of activations an odd number of
// floats apart; two products in one launch and gate and up with the SwiGLU as in check_kept.
void check_fast(const Type& t, const cetus::cuda::DeviceMatrix& exact, const std::vector<std::byte>& src,
                int64_t ld, const std::vector<float>& w, const std::string& shape, std::mt19937& rng) {
    cetus::cuda::DeviceMatrix m = exact;
    m.ggml_fast = true;
    const int64_t rows = m.rows, cols = m.cols;
    // Rows of activations an odd number of floats apart: every other token's row is not
    // 16-byte aligned, so the copies take both their 16-byte and their scalar loads.
    const int64_t n_max = 11, ldx = cols + 1, ldy = rows + 3;
    std::vector<float> x(size_t(n_max * ldx));
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (auto& v : x) v = u(rng);
    float* d_x = device_copy(x);
    float* d_y = device_copy(std::vector<float>(size_t(n_max * ldy), -7.0f));
    const cetus::cuda::RowGroups all{1, rows, 0, 0, 0, 0};
    // Each token alone.
    std::vector<float> alone(size_t(n_max * ldy));
    for (int64_t tk = 0; tk < n_max; ++tk) {
        cetus::cuda::launch_matvec(m, d_x + tk * ldx, ldx, 1, d_y + tk * ldy, ldy, all, nullptr);
    }
    alone = host_copy(d_y, size_t(n_max * ldy));
    double worst = 0.0;
    for (int64_t tk = 0; tk < n_max; ++tk)
        for (int64_t r = 0; r < rows; ++r) {
            double sum = 0.0, mag = 0.0;
            for (int64_t c = 0; c < cols; c += 32) {
                double xs = 0.0;
                for (int64_t i = c; i < c + 32; ++i) {
                    const double p = double(w[size_t(r * cols + i)]) * double(x[size_t(tk * ldx + i)]);
                    sum += p;
                    mag += std::fabs(p);
                    xs += std::fabs(double(x[size_t(tk * ldx + i)]));
                }
                // Terms of the codes' products: at most a value's plus the offset's, and
                // with biased codes twice 128 times the scale (1 + code / 128 < 2).
                const std::byte* row = src.data() + r * ld;
                mag += (2.0 * std::fabs(chunk_offset(t.id, row, t.bytes, t.values, c / 32)) +
                        256.0 * biased_scale(t.id, row, t.bytes, t.values, c / 32)) * xs;
            }
            // A term is rounded at most 64 times on its way: 16 multiply-adds of a run, 4 for
            // the scales and offsets, the lane's chunks (at most 5 here), the butterfly's 5,
            // the split warps' 3, and an activations' sum's 5 before its product.
            const double err = std::fabs(double(alone[size_t(tk * ldy + r)]) - sum) / (mag * 64.0 * 0x1p-24 + 1e-30);
            worst = std::max(worst, err);
        }
    char buf[64];
    std::snprintf(buf, sizeof buf, " (worst %.3g of the bound)", worst);
    check(worst <= 1.0, shape + "fast sums, one token at a time == the host's sums within fp32 rounding" + buf);
    // One token (decode; the second's activations not 16-byte aligned) and two (a one-draft
    // verify batch; rows over four warps: gate and up's copies with two tokens' activations
    // would not fit, and it reads the rows).
    const uint64_t staged_2 = rows < cetus::cuda::k_matvec_narrow_rows ? 2 : 3;
    for (int64_t tk : {int64_t(0), int64_t(1)}) check_staged(m, d_x + tk * ldx, ldx, 1, ldy, 3, shape + "fast sums, ", rng);
    check_staged(m, d_x, ldx, 2, ldy, staged_2, shape + "fast sums, ", rng);
    check_batches(m, d_x, ldx, ldy, alone, shape + "fast sums");
    cudaFree(d_x);
    cudaFree(d_y);
}

// The int8 form's products (DeviceMatrix::ggml_int8: each token's activations quantised
// per block of the weights, integer dot products, GgmlInt8) for the types that have it:
// - against the double-precision sums of the host's values times the activations' int8
//   values, d q, as cpu::quantise_int8 makes them (the same quantisation on the device,
//   so the same integers), within 64 roundings of the terms the kernel adds (the codes'
//   products' magnitude: at most the values' plus twice the offset's);
// - against the CPU backend's own int8 products (cpu::matmul_int8_rows, AVX2), within
//   the sum of both bounds (the CPU adds its blocks' terms one after another);
// - each token's sums the same bits alone as in batches of 2, 3 and 11, activations an
//   odd number of floats apart; a pair of products in one launch and gate and up with the
//   SwiGLU as each product alone; and for the 256-value types the rows staged in shared
//   memory (check_staged) the same bits as read from the rows;
// - every launch counted as taking the int8 form.
void check_int8(const Type& t, const cetus::cuda::DeviceMatrix& exact, const std::vector<std::byte>& src, int64_t ld,
                const std::vector<float>& w, const std::string& shape, std::mt19937& rng) {
    cetus::cuda::DeviceMatrix m = exact;
    m.ggml_int8 = true;
    const int64_t rows = m.rows, cols = m.cols, nb = cols / t.values;
    const int64_t n_max = 11, ldx = cols + 1, ldy = rows + 3;
    std::vector<float> x(size_t(n_max * ldx));
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (auto& v : x) v = u(rng);
    // Blocks of other magnitudes: one all zeros (d = 0), one large, one tiny.
    for (int64_t c = 0; c < t.values; ++c) {
        x[size_t(1 * ldx + c)] = 0.0f;
        x[size_t(2 * ldx + c)] *= 3.0e4f;
        x[size_t(3 * ldx + (nb - 1) * t.values + c)] *= 1.0e-30f;
    }
    cetus::cpu::Int8Rows a;
    cetus::cpu::quantise_int8(x.data(), ldx, n_max, cols, t.values, a);
    float* d_x = device_copy(x);
    float* d_y = device_copy(std::vector<float>(size_t(n_max * ldy), -7.0f));
    const cetus::cuda::RowGroups all{1, rows, 0, 0, 0, 0};
    const uint64_t launches0 = cetus::cuda::ggml_int8_launches();
    for (int64_t tk = 0; tk < n_max; ++tk)
        cetus::cuda::launch_matvec(m, d_x + tk * ldx, ldx, 1, d_y + tk * ldy, ldy, all, nullptr);
    const std::vector<float> alone = host_copy(d_y, size_t(n_max * ldy));
    check(cetus::cuda::ggml_int8_launches() - launches0 == uint64_t(n_max),
          shape + "int8 sums: every launch took the int8 form");
    // The CPU's int8 products (rows of blocks one after another, as a file holds them).
    const bool cpu = cetus::cpu::int8_product_available(t.id);
    std::vector<float> y_cpu(size_t(n_max * rows));
    if (cpu) {
        std::vector<std::byte> packed(size_t(rows * nb * t.bytes));
        for (int64_t r = 0; r < rows; ++r)
            std::memcpy(&packed[size_t(r * nb * t.bytes)], &src[size_t(r * ld)], size_t(nb * t.bytes));
        cetus::Matrix cm;
        cm.dtype = cetus::Dtype::Ggml;
        cm.rows = rows;
        cm.cols = cols;
        cm.data = packed.data();
        cm.ggml_type = t.id;
        cm.int8_activations = true;
        cetus::cpu::matmul_int8_rows(a, cm, 0, rows, y_cpu.data(), rows);
    }
    double worst = 0.0, worst_cpu = 0.0;
    for (int64_t tk = 0; tk < n_max; ++tk)
        for (int64_t r = 0; r < rows; ++r) {
            double sum = 0.0, mag = 0.0;
            const std::byte* row = src.data() + r * ld;
            for (int64_t c = 0; c < cols; c += 32) {
                double xs = 0.0;
                for (int64_t i = c; i < c + 32; ++i) {
                    const double xq = double(a.d[size_t(tk * nb + i / t.values)]) * double(a.q[size_t(tk * cols + i)]);
                    const double p = double(w[size_t(r * cols + i)]) * xq;
                    sum += p;
                    mag += std::fabs(p);
                    xs += std::fabs(xq);
                }
                mag += 2.0 * std::fabs(chunk_offset(t.id, row, t.bytes, t.values, c / 32)) * xs;
            }
            const double unit = mag * 0x1p-24 + 1e-300;
            worst = std::max(worst, std::fabs(double(alone[size_t(tk * ldy + r)]) - sum) / (64.0 * unit));
            if (cpu)
                worst_cpu = std::max(worst_cpu, std::fabs(double(alone[size_t(tk * ldy + r)]) -
                                                          double(y_cpu[size_t(tk * rows + r)])) /
                                                    ((64.0 + 4.0 * double(nb)) * unit));
        }
    char buf[96];
    std::snprintf(buf, sizeof buf, " (worst %.3g of the bound)", worst);
    check(worst <= 1.0, shape + "int8 sums, one token at a time == the host's values times the CPU's int8 "
                                "activations, in doubles, within fp32 rounding" + buf);
    if (cpu) {
        std::snprintf(buf, sizeof buf, " (worst %.3g of the bound)", worst_cpu);
        check(worst_cpu <= 1.0, shape + "int8 sums == the CPU backend's int8 products within both roundings" + buf);
    } else {
        std::printf("skip: %sthe CPU's int8 products (no AVX2 here)\n", shape.c_str());
    }
    if (t.values == 256) {  // (check_staged pairs the matrix with Q4_K or Q6_K rows)
        for (int64_t tk : {int64_t(0), int64_t(1)})
            check_staged(m, d_x + tk * ldx, ldx, 1, ldy, 3, shape + "int8 sums, ", rng);
        check_staged(m, d_x, ldx, 2, ldy, rows < cetus::cuda::k_matvec_narrow_rows ? 2 : 3, shape + "int8 sums, ", rng);
    }
    check_batches(m, d_x, ldx, ldy, alone, shape + "int8 sums");
    cudaFree(d_x);
    cudaFree(d_y);
}

// The int8 form's quantisation of the activations, value by value: "identity" matrices
// (Q8_0: d = 1 and code 1 at column r of row r; Q4_K: d = 1, every scale 1, minimums 0
// and code 1 at column r) give row r's output d q of the token's value r, the product of
// one multiply-add (float(q) * d): the CPU's quantise_int8's codes and scales times each
// other, bit for bit, for blocks of 32 and 256 values, tokens with an all-zero block,
// large and tiny values and rows an odd number of floats apart. A token holding a NaN or
// an infinity gives NaN throughout (its block's d is NaN, which meets every row).
void check_int8_quantisation(uint32_t id, std::mt19937& rng) {
    const bool k = id == 12;
    const int values = k ? 256 : 32, bytes = k ? 144 : 34;
    const int64_t cols = k ? 512 : 96, nb = cols / values, rows = cols;
    const int64_t row_bytes = nb * bytes, ld = (row_bytes + 15) / 16 * 16;
    std::vector<std::byte> src(size_t(rows * ld), std::byte{0});
    for (int64_t r = 0; r < rows; ++r) {
        std::byte* b = src.data() + r * ld + (r / values) * bytes;
        b[0] = std::byte(0x00);
        b[1] = std::byte(0x3C);  // d = 1 (f16)
        const int p = int(r % values);
        if (k) {
            for (int j : {4, 5, 6, 7, 12, 13, 14, 15}) b[j] = std::byte(1);  // scales 1, minimums 0, dmin 0
            const int chunk = p / 32;
            std::byte& q = b[16 + 32 * (chunk / 2) + p % 32];
            q = std::byte(chunk % 2 ? 0x10 : 0x01);
        } else {
            b[2 + p] = std::byte(1);
        }
    }
    std::byte* d_w = device_copy(device_layout(id, src, rows, cols, ld));
    cetus::cuda::DeviceMatrix m = cetus::cuda::ggml_device_matrix(id, rows, cols, d_w, ld);
    m.ggml_int8 = true;
    const int64_t n = 5, ldx = cols + 3, ldy = rows + 1;
    std::vector<float> x(size_t(n * ldx));
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (auto& v : x) v = u(rng);
    for (int64_t c = 0; c < values; ++c) {
        x[size_t(0 * ldx + c)] = 0.0f;                  // a block of zeros
        x[size_t(1 * ldx + values + c)] *= 1.0e-30f;     // tiny values
        x[size_t(2 * ldx + c)] = float(int(c % 5) - 2);  // ties at halves: round(x 127 / 2)
    }
    x[size_t(3 * ldx + 7)] = std::nanf("");
    x[size_t(4 * ldx + cols - 1)] = -INFINITY;
    cetus::cpu::Int8Rows a;
    cetus::cpu::quantise_int8(x.data(), ldx, n, cols, values, a);
    float* d_x = device_copy(x);
    float* d_y = device_copy(std::vector<float>(size_t(n * ldy), -7.0f));
    cetus::cuda::launch_matvec(m, d_x, ldx, n, d_y, ldy, cetus::cuda::RowGroups{1, rows, 0, 0, 0, 0}, nullptr);
    const std::vector<float> y = host_copy(d_y, size_t(n * ldy));
    int64_t differ = 0, not_nan = 0;
    for (int64_t tk = 0; tk < n; ++tk)
        for (int64_t r = 0; r < rows; ++r) {
            const float got = y[size_t(tk * ldy + r)];
            if (tk >= 3) {
                not_nan += !std::isnan(got);
                continue;
            }
            const float want = float(a.q[size_t(tk * cols + r)]) * a.d[size_t(tk * nb + r / values)];
            differ += std::memcmp(&got, &want, 4) != 0;
        }
    const std::string name = k ? "Q4_K" : "Q8_0";
    check(differ == 0, name + " identity " + std::to_string(rows) + " x " + std::to_string(cols) +
                           ": the int8 form's activations == the CPU's quantise_int8 (d q), bit for bit (" +
                           std::to_string(differ) + " differ)");
    check(not_nan == 0, name + " identity: a token with a NaN, one with an infinity: NaN throughout (" +
                            std::to_string(not_nan) + " outputs not NaN)");
    cudaFree(d_w);
    cudaFree(d_x);
    cudaFree(d_y);
}

// Blocks kept as blocks, with finite scales between 2^-9 and 2^-3: the embedding,
// the bf16 expansion and the products against the host's values.
void check_kept(const Type& t, int64_t rows, int64_t blocks, std::mt19937& rng) {
    const int64_t cols = blocks * t.values, row_bytes = blocks * t.bytes, ld = (row_bytes + 15) / 16 * 16;
    std::vector<std::byte> src(size_t(rows * ld), std::byte{0});
    std::vector<float> w(size_t(rows * cols));
    for (int64_t r = 0; r < rows; ++r) {
        std::byte* row = src.data() + r * ld;
        random_ggml_blocks(t.id, t.bytes, blocks, row, rng);
        cetus::ggml_dequantize(t.id, row, &w[size_t(r * cols)], cols);
    }
    std::byte* d_w = device_copy(device_layout(t.id, src, rows, cols, ld));
    const cetus::cuda::DeviceMatrix m = cetus::cuda::ggml_device_matrix(t.id, rows, cols, d_w, ld);
    check(m.ggml_values == t.values && m.ggml_bytes == t.bytes, std::string(t.name) + ": the block shape");
    const std::string shape = std::string(t.name) + " " + std::to_string(rows) + " x " + std::to_string(cols) + ": ";

    // Embedding rows (some twice, the last row included).
    const std::vector<int32_t> ids = {int32_t(rows - 1), 0, 3, 3, int32_t(rows / 2)};
    int32_t* d_ids = device_copy(ids);
    float* d_e = device_copy(std::vector<float>(ids.size() * size_t(cols), -7.0f));
    cetus::cuda::launch_embed(m, d_ids, int64_t(ids.size()), d_e, nullptr);
    const std::vector<float> e = host_copy(d_e, ids.size() * size_t(cols));
    bool same = true;
    for (size_t i = 0; i < ids.size(); ++i)
        same = same && std::memcmp(&e[i * size_t(cols)], &w[size_t(ids[i]) * size_t(cols)], size_t(cols) * 4) == 0;
    check(same, shape + "embedding rows gathered from the blocks == the host's, bit for bit");

    // The bf16 expansion of the cuBLAS path: rows cols rounded up to 8 apart.
    const int64_t ldb = (cols + 7) / 8 * 8;
    uint16_t* d_b = device_copy(std::vector<uint16_t>(size_t(rows * ldb), 0xEEEE));
    cetus::cuda::launch_ggml_matrix_to_bf16(m, d_b, nullptr);
    const std::vector<uint16_t> b = host_copy(d_b, size_t(rows * ldb));
    int64_t differ = 0;
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) differ += b[size_t(r * ldb + c)] != cetus::f32_to_bf16(w[size_t(r * cols + c)]);
    check(differ == 0, shape + "expanded to bf16 == the host's values rounded (" + std::to_string(differ) + " differ)");

    // Products for 1, 2, 3 and 11 tokens (11: two passes of the kernel, 8 and 3).
    const int split = rows < cetus::cuda::k_matvec_narrow_rows ? cetus::cuda::k_matvec_narrow_split : 1;
    for (int64_t n : {1, 2, 3, 11}) {
        // 3 tokens: rows of activations 16-byte aligned only for the first (the copies' scalar loads).
        const int64_t ldx = cols + (n == 3 ? 1 : 4), ldy = rows + 3;
        std::vector<float> x(size_t(n * ldx));
        std::uniform_real_distribution<float> u(-1.0f, 1.0f);
        for (auto& v : x) v = u(rng);
        float* d_x = device_copy(x);
        float* d_y = device_copy(std::vector<float>(size_t(n * ldy), -7.0f));
        cetus::cuda::launch_matvec(m, d_x, ldx, n, d_y, ldy, cetus::cuda::RowGroups{1, rows, 0, 0, 0, 0}, nullptr);
        const std::vector<float> y = host_copy(d_y, size_t(n * ldy));
        // fp32 sums of cols products: a few units of 2^-24 per addition at worst.
        const double worst = worst_product_error(w, rows, cols, x, ldx, y, ldy, n, double(cols) * 0x1p-24);
        char buf[64];
        std::snprintf(buf, sizeof buf, " (worst %.3g of the bound)", worst);
        check(worst <= 1.0, shape + std::to_string(n) + " tokens: products from the blocks == the host's sums within fp32 rounding" + buf);
        // The same bits as the kernel's order of summation taken on the host.
        int64_t differ_order = 0, padding = 0;
        for (int64_t tk = 0; tk < n; ++tk) {
            for (int64_t r = 0; r < rows; ++r) {
                const float want = kernel_order_dot(&w[size_t(r * cols)], &x[size_t(tk * ldx)], cols, split);
                differ_order += std::memcmp(&want, &y[size_t(tk * ldy + r)], 4) != 0;
            }
            for (int64_t r = rows; r < ldy; ++r) padding += y[size_t(tk * ldy + r)] != -7.0f;
        }
        check(differ_order == 0 && padding == 0,
              shape + std::to_string(n) + " tokens: products == the kernel's order of sums on the host, bit for bit (" +
                  std::to_string(differ_order) + " differ, " + std::to_string(padding) + " padding values written)");
        // Two matrices of one input in one launch (rows from the first, then the
        // second: here the same matrix), and an MLP's gate and up with the SwiGLU.
        if (n <= 2)  // (two tokens over four warps: see check_fast)
            check_staged(m, d_x, ldx, n, ldy, n == 1 || split == 1 ? 3 : 2, shape + "exact sums, ", rng);
        if (n <= 2) {
            float* d_y2 = device_copy(std::vector<float>(size_t(n * ldy), -7.0f));
            cetus::cuda::launch_matvec_pair(m, d_y, ldy, m, d_y2, ldy, d_x, ldx, n, nullptr);
            const std::vector<float> y1 = host_copy(d_y, size_t(n * ldy)), y2 = host_copy(d_y2, size_t(n * ldy));
            // Pairs split over warps when either matrix is narrow (as this one alone).
            int64_t differ_pair = 0, off_silu = 0;
            for (int64_t tk = 0; tk < n; ++tk)
                for (int64_t r = 0; r < rows; ++r) {
                    const float want = kernel_order_dot(&w[size_t(r * cols)], &x[size_t(tk * ldx)], cols, split);
                    differ_pair += std::memcmp(&want, &y1[size_t(tk * ldy + r)], 4) != 0;
                    differ_pair += std::memcmp(&want, &y2[size_t(tk * ldy + r)], 4) != 0;
                }
            check(differ_pair == 0, shape + std::to_string(n) +
                                        " tokens: a pair of products in one launch == the kernel's order of sums, "
                                        "bit for bit (" + std::to_string(differ_pair) + " differ)");
            cetus::cuda::launch_matvec_gate_up(m, m, d_x, ldx, n, d_y, ldy, nullptr);
            const std::vector<float> h = host_copy(d_y, size_t(n * ldy));
            for (int64_t tk = 0; tk < n; ++tk)
                for (int64_t r = 0; r < rows; ++r) {
                    const double z = kernel_order_dot(&w[size_t(r * cols)], &x[size_t(tk * ldx)], cols, split);
                    const double want = z / (1.0 + std::exp(-z)) * z;  // silu(gate) * up, gate = up
                    off_silu += std::fabs(h[size_t(tk * ldy + r)] - want) > 1e-6 * (1.0 + std::fabs(want));
                }
            check(off_silu == 0, shape + std::to_string(n) +
                                     " tokens: gate and up with the SwiGLU in one launch == silu(gate) * up of the "
                                     "kernel's sums within 1e-6 (" + std::to_string(off_silu) + " off)");
            cudaFree(d_y2);
        }
        cudaFree(d_x);
        cudaFree(d_y);
    }
    check_fast(t, m, src, ld, w, shape, rng);
    if (cetus::cuda::ggml_int8_fits_type(t.id)) check_int8(t, m, src, ld, w, shape, rng);
    cudaFree(d_w);
    cudaFree(d_ids);
    cudaFree(d_e);
    cudaFree(d_b);
}

// Query absorption from kv_b_proj in blocks (a GGUF file's attn_kv_b; absorb_q.cu
// stages decoded chunks): q_abs[t, h, c] = sum over j < d_n of q[t, h, j] w[h (d_n +
// d_v) + j, c], one fused multiply-add per j in j order, as the CPU's axpy loop
// (mla.cpp) takes the engine's decoded values; so the host's fma loop here gives
// the same bits. d_n 72: two stagings of 64 rows and 8; d_c 352 (32-value types):
// the last block of 128 columns a quarter outside; 11 tokens: 8 and 3 a block.
void check_absorb(const Type& t, std::mt19937& rng) {
    cetus::cuda::MlaShape m;
    m.n_h = 3;
    m.d_n = 72;
    m.d_r = 8;
    m.d_v = 24;
    m.d_c = t.values == 32 ? 352 : 512;
    const int64_t rows = m.n_h * (m.d_n + m.d_v), cols = m.d_c, blocks = cols / t.values;
    const int64_t row_bytes = blocks * t.bytes, ld = (row_bytes + 15) / 16 * 16, d_qk = m.d_n + m.d_r;
    std::vector<std::byte> src(size_t(rows * ld), std::byte{0xFF});
    std::vector<float> w(size_t(rows * cols));
    for (int64_t r = 0; r < rows; ++r) {
        random_ggml_blocks(t.id, t.bytes, blocks, src.data() + r * ld, rng);
        cetus::ggml_dequantize(t.id, src.data() + r * ld, &w[size_t(r * cols)], cols);
    }
    std::byte* d_w = device_copy(device_layout(t.id, src, rows, cols, ld));
    const cetus::cuda::DeviceMatrix kv_b = cetus::cuda::ggml_device_matrix(t.id, rows, cols, d_w, ld);
    for (int64_t n : {1, 11}) {
        std::vector<float> q(size_t(n * m.n_h * d_qk));
        std::uniform_real_distribution<float> u(-1.0f, 1.0f);
        for (auto& v : q) v = u(rng);
        std::vector<float> want(size_t(n * m.n_h * cols));
        for (int64_t tk = 0; tk < n; ++tk)
            for (int64_t h = 0; h < m.n_h; ++h)
                for (int64_t c = 0; c < cols; ++c) {
                    float acc = 0.0f;
                    for (int64_t j = 0; j < m.d_n; ++j)
                        acc = std::fma(q[size_t((tk * m.n_h + h) * d_qk + j)],
                                       w[size_t((h * (m.d_n + m.d_v) + j) * cols + c)], acc);
                    want[size_t((tk * m.n_h + h) * cols + c)] = acc;
                }
        float* d_q = device_copy(q);
        float* d_out = device_copy(std::vector<float>(want.size(), -7.0f));
        cetus::cuda::launch_absorb_q(kv_b, d_q, n, m, d_out, nullptr);
        const std::vector<float> got = host_copy(d_out, want.size());
        int64_t differ = 0;
        for (size_t i = 0; i < want.size(); ++i) differ += std::memcmp(&got[i], &want[i], 4) != 0;
        check(differ == 0, std::string(t.name) + " kv_b_proj " + std::to_string(rows) + " x " + std::to_string(cols) +
                               ", " + std::to_string(n) + " tokens: query absorption from the blocks == the host's "
                               "fma loop over its values, bit for bit (" + std::to_string(differ) + " differ)");
        cudaFree(d_q);
        cudaFree(d_out);
    }
    cudaFree(d_w);
}

}  // namespace

int main() {
    const Type types[] = {{2, "Q4_0", 32, 18},    {3, "Q4_1", 32, 20},    {6, "Q5_0", 32, 22},
                          {7, "Q5_1", 32, 24},    {8, "Q8_0", 32, 34},    {10, "Q2_K", 256, 84},
                          {11, "Q3_K", 256, 110}, {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176},
                          {14, "Q6_K", 256, 210}, {20, "IQ4_NL", 32, 18}, {23, "IQ4_XS", 256, 136}};
    std::mt19937 rng(20261202);
    for (const Type& t : types) {
        check_type(t, 8, rng);
        check_type(t, 3, rng);
    }
    for (const Type& t : types) {
        // Narrow: a row over several warps, 264 chunks of 32 values (three tiles of 128
        // chunks, the third partial: staged with two buffers, the first buffer's copies
        // are taken again). Wide: a warp on two rows for up to 2 tokens (an odd number of
        // rows: the last warp has one), 40 chunks (two tiles of 32).
        check_kept(t, 24, t.values == 32 ? 264 : 33, rng);
        check_kept(t, cetus::cuda::k_matvec_narrow_rows + 9, t.values == 32 ? 40 : 5, rng);
    }
    for (const Type& t : types) check_absorb(t, rng);
    check_int8_quantisation(8, rng);
    check_int8_quantisation(12, rng);
    // Every type's products took two buffers somewhere (rows of two and three tiles).
    for (const Type& t : types)
        check(g_double_staged[t.name] > 0, std::string(t.name) + ": " + std::to_string(g_double_staged[t.name]) +
                                               " staged launches took two tiles in flight");
    // A type without a decoder: no row size, so the upload refuses it by name.
    check(cetus::cuda::ggml_row_bytes(1, 64) == 0 && cetus::cuda::ggml_row_bytes(12, 255) == 0,
          "F16 (not a block type) and a Q4_K row of 255 values: no row size");
    // Rows the 16-byte loads could not read: refused, not read misaligned.
    bool refused = false;
    try {
        (void)cetus::cuda::ggml_device_matrix(14, 2, 256, nullptr, 210);
    } catch (const cetus::Error& e) {
        refused = std::string(e.what()).find("210 bytes apart") != std::string::npos;
    }
    check(refused, "Q6_K rows 210 bytes apart (not a multiple of 16): refused by name");
    // A row of partial blocks is refused when staged, not copied short.
    for (const uint32_t type : {14u, 12u}) {
        refused = false;
        std::vector<std::byte> in(420), out(420);
        try {
            cetus::cuda::ggml_device_row(type, in.data(), out.data(), 300);
        } catch (const cetus::Error& e) {
            refused = std::string(e.what()).find("300 values") != std::string::npos;
        }
        check(refused, "GGUF type " + std::to_string(type) + ", a row of 300 values staged: refused by name");
    }
    std::printf("%d failed\n", g_failed);
    return g_failed == 0 ? 0 : 1;
}
