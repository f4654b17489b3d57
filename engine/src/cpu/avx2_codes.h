// Byte codes of GGUF blocks in AVX2 registers: the pieces the block decoders
// (cpu/ops.cpp) and the integer products (cpu/ggml_int8.cpp) share; for x86-64
// builds with GCC or clang only.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#define CETUS_AVX2_INLINE __attribute__((target("avx2,f16c"))) inline

namespace cetus::cpu::avx2_codes {

CETUS_AVX2_INLINE __m256i load32(const std::byte* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
CETUS_AVX2_INLINE __m128i load16(const std::byte* p) {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}
// Bytes masked after a 16-bit shift: the bits shifted in from the neighbour byte are
// always above the mask. (The count in a register: the immediate form wants a
// constant, which the callers' loops give only once unrolled.)
CETUS_AVX2_INLINE __m256i bits_of(__m256i q, int shift, int mask) {
    return _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(shift)),
                            _mm256_set1_epi8(char(mask)));
}
// 16 bytes' low nibbles then their high nibbles, as 32 byte codes.
CETUS_AVX2_INLINE __m256i nibbles32(const std::byte* p) {
    const __m128i q = load16(p), m = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
}
// Q5_0 and Q5_1's fifth bits (ggml_blocks::q5_codes): byte i all ones where bit i of
// the 4 bytes at qh_at is set.
CETUS_AVX2_INLINE __m256i q5_fifth_bits(const std::byte* qh_at) {
    uint32_t qh;
    std::memcpy(&qh, qh_at, 4);
    // Byte i gets qh's byte i / 8 (the shuffle stays in 128-bit lanes: the high lane
    // takes bytes 2 and 3), then tests its bit i % 8.
    const __m256i spread =
        _mm256_shuffle_epi8(_mm256_set1_epi32(int(qh)),
                            _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2,
                                             2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201ull));
    return _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
}
// Q5_0 and Q5_1's codes: value i's low four bits nibbles32(qs)'s, its fifth bit above.
CETUS_AVX2_INLINE __m256i q5_codes(const std::byte* qh_at, const std::byte* qs) {
    return _mm256_or_si256(nibbles32(qs), _mm256_and_si256(q5_fifth_bits(qh_at), _mm256_set1_epi8(16)));
}
// Q5_0's codes less 16, as int8: the low four bits, and 0xF0 above them (-16) where the
// fifth bit is clear.
CETUS_AVX2_INLINE __m256i q5_codes_less_16(const std::byte* qh_at, const std::byte* qs) {
    return _mm256_or_si256(nibbles32(qs), _mm256_andnot_si256(q5_fifth_bits(qh_at), _mm256_set1_epi8(char(0xF0))));
}

}  // namespace cetus::cpu::avx2_codes
