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
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

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
// One row block's unpacked form, row r at r times its size: per value a code, per run
// of 16 an int16 scale sc and minimum mn, per block (of the type's values) floats dw
// and dm, so that the weight is dw * sc * code + dm * mn.
struct Unpacked {
    std::vector<int8_t> codes;
    std::vector<int16_t> sc, mn;
    std::vector<float> dw, dm;
};

#define CETUS_INT8_INLINE CETUS_INT8_TARGET inline __attribute__((always_inline))

// The kernels for AVX2 (with FMA and F16C), then again with AVX-512 VNNI's dot products
// (vpdpbusd: four byte products summed into an int32 lane, where AVX2 takes maddubs,
// madd and add; vpdpwssd: madd and add) on 256-bit registers, for the processors that
// have them (AMD since Zen 4, Intel's Ice Lake and later server and some client parts).
#define CETUS_INT8_TARGET __attribute__((target("avx2,f16c,fma")))
#define CETUS_INT8_VNNI 0
namespace int8_avx2 {
#include "cpu/ggml_int8_kernels.inc"
}  // namespace int8_avx2
#undef CETUS_INT8_TARGET
#undef CETUS_INT8_VNNI
#define CETUS_INT8_TARGET __attribute__((target("avx2,f16c,fma,avx512f,avx512vl,avx512bw,avx512vnni")))
#define CETUS_INT8_VNNI 1
namespace int8_vnni {
#include "cpu/ggml_int8_kernels.inc"
}  // namespace int8_vnni
#undef CETUS_INT8_TARGET
#undef CETUS_INT8_VNNI

using RowBlockFn = int8_avx2::RowBlockFn;
constexpr int64_t k_streamed_tokens = int8_avx2::k_streamed_tokens;

// (Every AVX2 processor has F16C, which came a generation earlier; clang's builtin
// does not know the name.)
bool has_avx2_fma() {
    static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return yes;
}
bool has_vnni() {
    static const bool yes = has_avx2_fma() && __builtin_cpu_supports("avx512vnni") &&
                            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
    return yes;
}
// CETUS_CPU_VNNI=0 keeps to the AVX2 form (side-by-side benchmarks).
bool vnni_by_default() {
    const char* v = std::getenv("CETUS_CPU_VNNI");
    return !(v && std::string(v) == "0");
}
std::atomic<bool> vnni_allowed{vnni_by_default()};

RowBlockFn row_block_for(uint32_t type) {
    return has_vnni() && vnni_allowed.load(std::memory_order_relaxed) ? int8_vnni::row_block_for(type)
                                                                      : int8_avx2::row_block_for(type);
}

constexpr int64_t k_rows_per_block = 8;
}  // namespace

bool int8_product_available(uint32_t ggml_type) { return has_avx2_fma() && row_block_for(ggml_type) != nullptr; }

bool int8_vnni_in_use() { return has_vnni() && vnni_allowed.load(std::memory_order_relaxed); }
void allow_int8_vnni(bool allowed) { vnni_allowed.store(allowed, std::memory_order_relaxed); }

void matmul_int8_rows(const Int8Rows& a, const Matrix& w, int64_t r0_all, int64_t r1_all, float* y, int64_t ldy) {
    const RowBlockFn fn = row_block_for(w.ggml_type);
    int values = 0, bytes = 0;
    ggml_blocks::block_shape(w.ggml_type, values, bytes);
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
bool int8_vnni_in_use() { return false; }
void allow_int8_vnni(bool) {}
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
