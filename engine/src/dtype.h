// Element types met in safetensors files and their conversion to float.
// FP8 is e4m3 "fn" (no infinities, 0x7f/0xff are NaN), decoded by table.
// Ggml is not a safetensors type: a GGUF file's block-quantised matrix (Q4_K, Q8_0,
// ...) used in place, its ggml type beside it (TensorInfo / Matrix::ggml_type).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace cetus {

enum class Dtype { F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U8, Bool, Ggml };

std::optional<Dtype> dtype_from_name(std::string_view name);
const char* dtype_name(Dtype d) noexcept;
size_t dtype_size(Dtype d) noexcept;  // 0 for Ggml (sizes go by block)
bool dtype_is_float_weight(Dtype d) noexcept;  // F32, F16, BF16, F8_E4M3, Ggml

inline float bf16_to_f32(uint16_t v) {
    uint32_t bits = uint32_t(v) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
// Round to nearest even; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return uint16_t(bits >> 16);
}

extern const float* const k_f16_table;      // 65536 entries
extern const float* const k_fp8_e4m3_table;  // 256 entries

inline float f16_to_f32(uint16_t v) { return k_f16_table[v]; }
inline float fp8_e4m3_to_f32(uint8_t v) { return k_fp8_e4m3_table[v]; }
// The nearest e4m3 value, ties to even (as PyTorch's float8_e4m3fn cast), saturating
// at +-448; NaN gives NaN (FP8 on load, test models).
uint8_t f32_to_fp8_e4m3(float f);

}  // namespace cetus
