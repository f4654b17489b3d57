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
#include <limits>
#include <string>

#if defined(__x86_64__) && defined(__GNUC__)
#define CETUS_INT8_AVX2 1
#include "cpu/avx2_codes.h"
#endif

namespace cetus::cpu {

namespace {
// A block holding a NaN or an infinity: d = NaN, codes 0.
void non_finite_block(int block, int8_t* q, float& d, int16_t* qsum16) {
    std::fill_n(q, block, int8_t(0));
    std::fill_n(qsum16, block / 16, int16_t(0));
    d = std::nanf("");
}

// One block of values: codes round(v / d) (to nearest, ties to even), d = max |v| / 127,
// and the codes' sums over each run of 16. A block holding a NaN or an infinity gets
// d = NaN and codes 0.
void quantise_block(const float* v, int block, int8_t* q, float& d, int16_t* qsum16) {
    float amax = 0.0f;
    bool finite = true;
    for (int i = 0; i < block; ++i) {
        finite = finite && std::isfinite(v[i]);
        amax = std::max(amax, std::fabs(v[i]));
    }
    if (!finite) return non_finite_block(block, q, d, qsum16);
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int i = 0; i < block; ++i) q[i] = int8_t(std::clamp(std::nearbyint(v[i] * inv), -127.0f, 127.0f));
    d = amax / 127.0f;
    for (int h = 0; h < block / 16; ++h) {
        int sum = 0;
        for (int i = 0; i < 16; ++i) sum += q[16 * h + i];
        qsum16[h] = int16_t(sum);
    }
}

#ifdef CETUS_INT8_AVX2
// quantise_block in AVX2, with the same values: the maximum of the same magnitudes, the
// same products rounded by the same rule (the conversion's, to nearest even, as
// nearbyint's in the default mode), the same sums.
__attribute__((target("avx2"))) void quantise_block_avx2(const float* v, int block, int8_t* q, float& d,
                                                         int16_t* qsum16) {
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
    __m256 amax = _mm256_setzero_ps(), finite = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    for (int i = 0; i < block; i += 8) {
        const __m256 m = _mm256_and_ps(_mm256_loadu_ps(v + i), magnitude);
        finite = _mm256_and_ps(finite, _mm256_cmp_ps(m, inf, _CMP_LT_OQ));  // false for NaN too
        amax = _mm256_max_ps(amax, m);
    }
    if (_mm256_movemask_ps(finite) != 0xFF) return non_finite_block(block, q, d, qsum16);
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    const float am = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
    const __m256 inv = _mm256_set1_ps(am > 0.0f ? 127.0f / am : 0.0f);
    const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
    for (int i = 0; i < block; i += 32) {
        __m256i w[4];
        for (int k = 0; k < 4; ++k)
            w[k] = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + i + 8 * k), inv)), lo), hi);
        // The packs interleave 128-bit lanes: dwords (w0 0-3, w1 0-3, w2 0-3, w3 0-3,
        // w0 4-7, ...) back into order.
        const __m256i b = _mm256_permutevar8x32_epi32(
            _mm256_packs_epi16(_mm256_packs_epi32(w[0], w[1]), _mm256_packs_epi32(w[2], w[3])),
            _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), b);
        // Sums of 8 bytes, each biased by 128 to be unsigned.
        const __m256i s = _mm256_sad_epu8(_mm256_xor_si256(b, _mm256_set1_epi8(char(0x80))), _mm256_setzero_si256());
        qsum16[i / 16] = int16_t(_mm256_extract_epi64(s, 0) + _mm256_extract_epi64(s, 1) - 2048);
        qsum16[i / 16 + 1] = int16_t(_mm256_extract_epi64(s, 2) + _mm256_extract_epi64(s, 3) - 2048);
    }
    d = am / 127.0f;
}
// (Every AVX2 processor has F16C, which came a generation earlier; clang's builtin
// does not know the name.)
bool has_avx2_fma() {
    static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return yes;
}
#endif
}  // namespace

void quantise_int8(const float* x, int64_t ldx, int64_t n_tokens, int64_t cols, int block, Int8Rows& out) {
    const int64_t nb = cols / block, n16 = cols / 16;
    out.n_tokens = n_tokens;
    out.cols = cols;
    out.block = block;
    out.q.resize(size_t(n_tokens * cols));
    out.d.resize(size_t(n_tokens * nb));
    out.qsum16.resize(size_t(n_tokens * n16));
    auto* one = &quantise_block;
#ifdef CETUS_INT8_AVX2
    if (block % 32 == 0 && has_avx2_fma()) one = &quantise_block_avx2;
#endif
    for (int64_t t = 0; t < n_tokens; ++t)
        for (int64_t j = 0; j < nb; ++j)
            one(x + t * ldx + block * j, block, out.q.data() + t * cols + block * j, out.d[size_t(t * nb + j)],
                out.qsum16.data() + t * n16 + block / 16 * j);
}

#ifdef CETUS_INT8_AVX2
namespace {
// One row block's unpacked form, row r at r times its size: per value a code, per run
// of 16 an int16 scale sc and minimum mn, per block (of the type's values) floats dw
// and dm, so that the weight is dw * sc * code + dm * mn.
// (The AVX2 form.) The VNNI form keeps the row block interleaved instead
// (ggml_int8_kernels.inc, interleave): il the codes, sc32 the runs' scales, mp the pairs
// of minimums or bias terms, dwv and dmv the floats, each per block for 8 rows.
struct Unpacked {
    std::vector<int8_t> codes;
    std::vector<int16_t> sc, mn;
    std::vector<float> dw, dm;
    std::vector<uint8_t> il;
    std::vector<int32_t> sc32, mp;
    std::vector<float> dwv, dmv;
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
constexpr int64_t k_unpack_from = int8_avx2::k_unpack_from;

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
    if (a.n_tokens >= k_unpack_from) {
        u.codes.resize(size_t(k_rows_per_block * cols));
        u.sc.resize(size_t(k_rows_per_block * n16));
        u.mn.resize(size_t(k_rows_per_block * n16));
        u.dw.resize(size_t(k_rows_per_block * nb));
        u.dm.resize(size_t(k_rows_per_block * nb));
        u.il.resize(size_t(k_rows_per_block * cols));
        u.sc32.resize(size_t(k_rows_per_block * n16));
        u.mp.resize(size_t(k_rows_per_block * (cols / 32)));
        u.dwv.resize(size_t(k_rows_per_block * nb));
        u.dmv.resize(size_t(k_rows_per_block * nb));
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
