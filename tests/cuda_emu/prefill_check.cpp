// Prefill attention alone (Gemm, gemm.cpp) on the CUDA emulator, against MLA
// computed in double precision from the same inputs: the expanded form
// (mla_prefill_expanded: keys and values expanded from the latent, scores and
// values as bf16 products) and the absorbed form (absorb_q, mla_prefill,
// absorb_v), each giving the heads' outputs o [n, n_h, d_v]. Both forms at once
// on the same chunk, with an fp32 and a bf16 cache, for a first chunk and for
// a chunk after a prefix, with more than one block of queries, and with the
// expanded keys of one head at a time; at the tiny model's widths and at
// V2-Lite's. The model-level comparisons (selftest.cpp) bound the forms only
// through whole models; here each form's own error is measured and bounded.
// Both forms also with kv_b in GGUF blocks. Also a prefill product of a GGUF matrix (Gemm::matmul: the blocks expanded to
// bf16 a slice of rows at a time, as the scratch holds them) against double sums.
#include "check_util.h"
#include "gemm.h"
#include "ggml_blocks.h"
#include "kernels.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace cetus::cuda;
using namespace cetus::check;

struct Shape {
    const char* name;
    MlaShape m;
};

template <typename T> T* device_alloc(size_t count) {
    void* p = nullptr;
    cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(T));
    return static_cast<T*>(p);
}

// o [n, n_h, d_v] of MLA over cache rows 0 .. start + t for token t, in double.
std::vector<double> reference(const MlaShape& m, const std::vector<float>& w,
                              const std::vector<float>& q, const std::vector<float>& rows,
                              int64_t start, int64_t n, float scale) {
    const int64_t W = m.d_c + m.d_r, d_qk = m.d_n + m.d_r, d_u = m.d_n + m.d_v;
    std::vector<double> o(size_t(n * m.n_h * m.d_v));
    std::vector<double> q_abs(size_t(m.d_c)), p(size_t(start + n)), ctx(size_t(m.d_c));
    for (int64_t t = 0; t < n; ++t)
        for (int64_t h = 0; h < m.n_h; ++h) {
            const float* qh = q.data() + (t * m.n_h + h) * d_qk;
            const float* wh = w.data() + h * d_u * m.d_c; // W_UK_h rows, then W_UV_h rows
            std::fill(q_abs.begin(), q_abs.end(), 0.0);
            for (int64_t j = 0; j < m.d_n; ++j)
                for (int64_t c = 0; c < m.d_c; ++c)
                    q_abs[size_t(c)] += double(qh[j]) * wh[j * m.d_c + c];
            const int64_t len = start + t + 1;
            double mx = -1e300;
            for (int64_t s = 0; s < len; ++s) {
                const float* r = rows.data() + s * W;
                double v = 0.0;
                for (int64_t c = 0; c < m.d_c; ++c) v += q_abs[size_t(c)] * r[c];
                for (int64_t j = 0; j < m.d_r; ++j) v += double(qh[m.d_n + j]) * r[m.d_c + j];
                p[size_t(s)] = v * scale;
                mx = std::max(mx, p[size_t(s)]);
            }
            double sum = 0.0;
            for (int64_t s = 0; s < len; ++s) sum += p[size_t(s)] = std::exp(p[size_t(s)] - mx);
            std::fill(ctx.begin(), ctx.end(), 0.0);
            for (int64_t s = 0; s < len; ++s)
                for (int64_t c = 0; c < m.d_c; ++c)
                    ctx[size_t(c)] += p[size_t(s)] / sum * rows[size_t(s * W + c)];
            for (int64_t j = 0; j < m.d_v; ++j) {
                double v = 0.0;
                for (int64_t c = 0; c < m.d_c; ++c)
                    v += double(wh[(m.d_n + j) * m.d_c + c]) * ctx[size_t(c)];
                o[size_t((t * m.n_h + h) * m.d_v + j)] = v;
            }
        }
    return o;
}

// The largest difference from the reference, over the reference's largest value.
double relative_error(const std::vector<float>& got, const std::vector<double>& want) {
    double err = 0.0, top = 0.0;
    for (size_t i = 0; i < want.size(); ++i) {
        if (!std::isfinite(got[i])) return INFINITY;
        err = std::max(err, std::abs(double(got[i]) - want[i]));
        top = std::max(top, std::abs(want[i]));
    }
    return err / top;
}

std::string fmt(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.2e", v);
    return b;
}

// One chunk of n tokens at positions start .. start + n - 1, both forms.
// q8: kv_b in Q8_0 blocks (a GGUF file's attn_kv_b), which both forms expand to bf16
// (rows 8-aligned, not the blocks' ld bytes apart): scales 2^-e with the values about
// 1 / sqrt(d_c), so rounding the weights to bf16 adds 2^-9 per operand, as the
// queries' rounding does.
void run_case(const Shape& shape, bool cache_bf16, int64_t start, int64_t n, bool one_head,
              uint32_t seed, bool q8 = false) {
    const MlaShape& m = shape.m;
    const int64_t W = m.d_c + m.d_r, d_qk = m.d_n + m.d_r, d_u = m.d_n + m.d_v, rows = start + n;
    const float scale = 1.0f / std::sqrt(float(d_qk));
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    // kv_b as bf16 (its values exactly), the latent rows as an RMS-normed latent
    // (about 1 per value), queries whose scores spread over several units.
    std::vector<uint16_t> w_bf16(size_t(m.n_h * d_u * m.d_c));
    std::vector<float> w(w_bf16.size());
    for (size_t i = 0; i < w.size(); ++i) {
        w_bf16[i] = to_bf16(normal(rng) / std::sqrt(float(m.d_c)));
        w[i] = from_bf16(w_bf16[i]);
    }
    const int64_t q8_row = m.d_c / 32 * 34, q8_ld = (q8_row + 15) / 16 * 16;
    std::vector<std::byte> w_q8;
    if (q8) {
        const int e = int(std::lround(std::log2(std::sqrt(double(m.d_c)) * 74.0)));  // |code| about 74 on average
        const uint16_t d = uint16_t((15 - e) << 10);                                 // 2^-e as an f16
        w_q8.assign(size_t(m.n_h * d_u * q8_ld), std::byte{0xFF});
        for (int64_t r = 0; r < m.n_h * d_u; ++r) {
            std::byte* row = w_q8.data() + r * q8_ld;
            for (int64_t b = 0; b < m.d_c / 32; ++b) {
                std::byte* blk = row + b * 34;
                blk[0] = std::byte(d & 0xFF);
                blk[1] = std::byte(d >> 8);
                for (int k = 0; k < 32; ++k) blk[2 + k] = std::byte(uint8_t(int(rng() % 255) - 127));
            }
            for (int64_t b = 0; b < m.d_c / 32; ++b)  // (d_c: whole blocks of 32)
                cetus::ggml_blocks::decode_block(8, row + b * 34, &w[size_t(r * m.d_c + b * 32)]);
        }
    }
    std::vector<float> cache_rows(size_t(rows * W));
    for (auto& v : cache_rows) v = normal(rng);
    std::vector<uint16_t> cache_b(cache_rows.size());
    if (cache_bf16)
        for (size_t i = 0; i < cache_rows.size(); ++i) {
            cache_b[i] = to_bf16(cache_rows[i]);
            cache_rows[i] = from_bf16(cache_b[i]);
        }
    std::vector<float> q(size_t(n * m.n_h * d_qk));
    for (auto& v : q) v = 1.5f * normal(rng);
    const std::vector<double> want = reference(m, w, q, cache_rows, start, n, scale);

    DeviceMatrix kv_b;
    kv_b.dtype = DeviceDtype::BF16;
    kv_b.rows = m.n_h * d_u;
    kv_b.cols = kv_b.ld = m.d_c;
    void* w_d = q8 ? static_cast<void*>(device_copy(w_q8)) : static_cast<void*>(device_copy(w_bf16));
    kv_b.data = w_d;
    if (q8) kv_b = ggml_device_matrix(8, m.n_h * d_u, m.d_c, w_d, q8_ld);
    void* cache_d = cache_bf16 ? static_cast<void*>(device_copy(cache_b))
                               : static_cast<void*>(device_copy(cache_rows));
    float* q_d = device_copy(q);
    float* q_abs = device_alloc<float>(size_t(n * m.n_h * m.d_c));
    float* ctx = device_alloc<float>(size_t(n * m.n_h * m.d_c));
    float* o = device_alloc<float>(size_t(n * m.n_h * m.d_v));

    Gemm::Scratch s;
    s.act_elems = size_t(n * std::max({2 * m.n_h * W, m.n_h * m.d_c, 2 * m.n_h * d_qk}));
    s.act_bf16 = device_alloc<uint16_t>(s.act_elems);
    s.workspace_bytes = size_t(32) << 20;
    s.workspace = device_alloc<char>(s.workspace_bytes);
    s.attn_batch_elems = size_t(m.n_h * n * ((rows + 7) / 8 * 8));
    s.attn_scores = device_alloc<float>(s.attn_batch_elems);
    s.expanded_bytes = size_t((one_head ? 1 : m.n_h) * d_u * rows * (cache_bf16 ? 2 : 4));
    s.expanded = device_alloc<char>(s.expanded_bytes);
    s.latent_elems = size_t(2 * rows * m.d_c);
    s.latent_bf16 = device_alloc<uint16_t>(s.latent_elems);
    s.weight_elems = q8 ? size_t(kv_b.rows * ggml_bf16_ld(kv_b)) : 0;
    s.weight_bf16 = device_alloc<uint16_t>(s.weight_elems);
    std::vector<float> got_e, got_a;
    {
        Gemm g(nullptr, false, s, nullptr);
        g.mla_prefill_expanded(kv_b, q_d, cache_d, cache_bf16, n, start, m, scale, o);
        got_e = host_copy(o, size_t(n * m.n_h * m.d_v));
        g.absorb_q(kv_b, q_d, n, m, q_abs);
        g.mla_prefill(q_abs, q_d, cache_d, cache_bf16, n, start, m, scale, ctx);
        g.absorb_v(kv_b, ctx, n, m, o);
        got_a = host_copy(o, size_t(n * m.n_h * m.d_v));
    }
    for (void* p : {w_d, cache_d, static_cast<void*>(q_d),
                    static_cast<void*>(q_abs), static_cast<void*>(ctx), static_cast<void*>(o),
                    static_cast<void*>(s.act_bf16), s.workspace, static_cast<void*>(s.attn_scores),
                    static_cast<void*>(s.expanded), static_cast<void*>(s.latent_bf16),
                    static_cast<void*>(s.weight_bf16)})
        cudaFree(p);

    // Bounds: with a bf16 cache every operand of the expanded form's products is
    // within 2^-9 of its value (the queries, the expanded keys and values, the
    // probabilities), and a sum of such products within about 2^-8 of the sum of
    // magnitudes; a score error moves its probability by as much relative to the
    // score's size (several units here). With an fp32 cache both forms take TF32
    // (2^-11 per operand), though the absorbed form's absorptions are bf16 products.
    // 2e-2 (bf16 cache) and 1e-2 (fp32 cache) of the largest output hold that with
    // room (measured on the emulator, which rounds TF32 operands to nearest: at most
    // 5.3e-3 and 3.2e-3); the absorbed form is held to the same bounds beside it.
    const std::string what = std::string(shape.name) +
                             (cache_bf16 ? ", bf16 cache" : ", fp32 cache") + ", tokens " +
                             std::to_string(start) + ".." + std::to_string(rows - 1) +
                             (one_head ? ", expanded keys one head at a time" : "") +
                             (q8 ? ", kv_b in Q8_0 blocks" : "");
    const double e_exp = relative_error(got_e, want), e_abs = relative_error(got_a, want);
    const double bound = cache_bf16 ? 2e-2 : 1e-2;
    check(e_exp <= bound, what + ": expanded form " + fmt(e_exp) +
                              " of the largest output (bound " + fmt(bound) + ")");
    check(e_abs <= bound, what + ": absorbed form " + fmt(e_abs) +
                              " of the largest output (bound " + fmt(bound) + ")");
}

// A Q4_K matrix of 40 rows by 512 columns for 20 tokens (past Gemm's small
// products) with a weight scratch of 7 rows: six slices, the last one short. Both
// operands are rounded to bf16 (2^-9 each) and summed in fp32, so an output is within
// about 2^-8 of the sum of its products' magnitudes; held to 2^-7 of it.
void ggml_matmul_case() {
    const int64_t rows = 40, cols = 512, n = 20, row_bytes = 2 * 144, ld = row_bytes, slice = 7;
    std::mt19937 rng(77);
    std::vector<std::byte> blocks(size_t(rows * ld));
    for (auto& b : blocks) b = std::byte(rng() & 0xFF);
    std::vector<float> w(size_t(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t b = 0; b < 2; ++b) {
            std::byte* blk = blocks.data() + r * ld + b * 144;
            for (int off : {0, 2}) {  // d and dmin: finite, 2^-9 .. 2^-3
                const uint16_t h = uint16_t(((rng() % 7 + 6) << 10) | (rng() & 0x3FF));
                blk[off] = std::byte(h & 0xFF);
                blk[off + 1] = std::byte(h >> 8);
            }
            cetus::ggml_blocks::decode_block(12, blk, &w[size_t(r * cols + b * 256)]);
        }
    std::vector<float> x(size_t(n * cols));
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (auto& v : x) v = u(rng);
    DeviceMatrix m;
    m.dtype = DeviceDtype::Ggml;
    m.rows = rows;
    m.cols = cols;
    m.ld = ld;
    m.ggml_type = 12;
    m.ggml_values = 256;
    m.ggml_bytes = 144;
    std::byte* w_d = device_copy(blocks);
    m.data = w_d;
    float* x_d = device_copy(x);
    float* y_d = device_copy(std::vector<float>(size_t(n * rows), -7.0f));
    Gemm::Scratch s;
    s.act_elems = size_t(n * cols);
    s.act_bf16 = device_alloc<uint16_t>(s.act_elems);
    s.weight_elems = size_t(slice * cols);
    s.weight_bf16 = device_alloc<uint16_t>(s.weight_elems);
    s.workspace_bytes = size_t(32) << 20;
    s.workspace = device_alloc<char>(s.workspace_bytes);
    std::vector<float> y;
    {
        Gemm g(nullptr, false, s, nullptr);
        g.matmul(m, x_d, cols, n, y_d, rows);
        y = host_copy(y_d, size_t(n * rows));
    }
    for (void* p : {static_cast<void*>(w_d), static_cast<void*>(x_d), static_cast<void*>(y_d),
                    static_cast<void*>(s.act_bf16), static_cast<void*>(s.weight_bf16), s.workspace})
        cudaFree(p);
    const double worst = worst_product_error(w, rows, cols, x, cols, y, rows, n, 1.0);
    check(worst <= 0x1p-7, "Q4_K 40 x 512, 20 tokens, expanded 7 rows at a time: " + fmt(worst) +
                               " of the products' magnitude (bound 2^-7)");
}

} // namespace

int main() {
    try {
        const Shape tiny{"tiny widths (4 heads, d_c 64)", {4, 32, 16, 32, 64}};
        const Shape v2{"V2-Lite widths (16 heads, d_c 512)", {16, 128, 64, 128, 512}};
        for (bool bf16 : {false, true}) {
            run_case(tiny, bf16, 0, 300, false, 1);  // a first chunk in two blocks of queries
            run_case(tiny, bf16, 300, 44, false, 2); // a chunk after a prefix
            run_case(tiny, bf16, 37, 280, true, 3);  // keys one head at a time
            run_case(v2, bf16, 0, 40, false, 4);
            run_case(v2, bf16, 40, 270, false, 5);
        }
        run_case(tiny, false, 20, 280, true, 6, true);
        run_case(v2, true, 0, 40, false, 7, true);
        ggml_matmul_case();
    } catch (const std::exception& e) {
        std::printf("FAIL %s\n", e.what());
        return 1;
    }
    std::printf("%d failed\n", g_failed);
    return g_failed == 0 ? 0 : 1;
}
