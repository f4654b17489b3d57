// Dtype names and decode tables. The tables are built once at static
// initialisation from the bit layouts (IEEE half; e4m3fn per the OCP FP8 spec).
#include "dtype.h"

#include <array>
#include <cmath>
#include <cstring>
#include <limits>

namespace cetus {
namespace {

struct NameEntry {
    std::string_view name;
    Dtype dtype;
    size_t size;
};
constexpr std::array<NameEntry, 12> k_names{{
    {"F64", Dtype::F64, 8}, {"F32", Dtype::F32, 4}, {"F16", Dtype::F16, 2},
    {"BF16", Dtype::BF16, 2}, {"F8_E4M3", Dtype::F8_E4M3, 1}, {"F8_E5M2", Dtype::F8_E5M2, 1},
    {"I64", Dtype::I64, 8}, {"I32", Dtype::I32, 4}, {"I16", Dtype::I16, 2},
    {"I8", Dtype::I8, 1}, {"U8", Dtype::U8, 1}, {"BOOL", Dtype::Bool, 1},
}};

float half_bits_to_float(uint16_t h) {
    int sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    float v;
    if (exp == 0) v = std::ldexp(float(man), -24);
    else if (exp == 31) v = man ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
    else v = std::ldexp(float(man | 0x400), exp - 25);
    return sign ? -v : v;
}

float e4m3_bits_to_float(uint8_t b) {
    int sign = (b >> 7) & 1, exp = (b >> 3) & 0xf, man = b & 7;
    float v;
    if (exp == 15 && man == 7) v = std::numeric_limits<float>::quiet_NaN();
    else if (exp == 0) v = std::ldexp(float(man), -9);
    else v = std::ldexp(float(8 + man), exp - 10);  // 2^(e-7) * (1 + m/8)
    return sign ? -v : v;
}

const float* build_f16() {
    static std::array<float, 65536> t;
    for (uint32_t i = 0; i < 65536; ++i) t[i] = half_bits_to_float(uint16_t(i));
    return t.data();
}
const float* build_fp8() {
    static std::array<float, 256> t;
    for (uint32_t i = 0; i < 256; ++i) t[i] = e4m3_bits_to_float(uint8_t(i));
    return t.data();
}

}  // namespace

const float* const k_f16_table = build_f16();
const float* const k_fp8_e4m3_table = build_fp8();

std::optional<Dtype> dtype_from_name(std::string_view name) {
    for (const auto& e : k_names)
        if (e.name == name) return e.dtype;
    return std::nullopt;
}

const char* dtype_name(Dtype d) noexcept {
    for (const auto& e : k_names)
        if (e.dtype == d) return e.name.data();
    return d == Dtype::Ggml ? "GGML blocks" : "?";
}

size_t dtype_size(Dtype d) noexcept {
    for (const auto& e : k_names)
        if (e.dtype == d) return e.size;
    return 0;
}

bool dtype_is_float_weight(Dtype d) noexcept {
    return d == Dtype::F32 || d == Dtype::F16 || d == Dtype::BF16 || d == Dtype::F8_E4M3 || d == Dtype::Ggml;
}

uint8_t f32_to_fp8_e4m3(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    const uint8_t sign = uint8_t((bits >> 24) & 0x80u);
    bits &= 0x7fffffffu;
    if (bits > 0x7f800000u) return uint8_t(sign | 0x7f);  // NaN
    float a;
    std::memcpy(&a, &bits, 4);
    // 448 is the largest finite value; from the midpoint to the next step (480) up: 448.
    if (a >= 464.0f) return uint8_t(sign | 0x7e);
    if (a < 0.015625f) {  // below 2^-6: subnormals, steps of 2^-9 (8 steps reach the first normal)
        return uint8_t(sign | uint8_t(std::nearbyint(a * 512.0f)));  // ties to even (default rounding)
    }
    // Normal: three mantissa bits, rounded to nearest even on the float's bits; a carry
    // into the exponent is the right result (the next binade's first value).
    bits += 0x7ffffu + ((bits >> 20) & 1u);
    const uint32_t e = (bits >> 23) - 127 + 7, m = (bits >> 20) & 7u;
    return uint8_t(sign | (e << 3) | m);
}

}  // namespace cetus
