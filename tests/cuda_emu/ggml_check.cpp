// The CUDA backend's decoding of GGUF blocks at upload (ggml_decode.cu) against the
// engine's own (ggml_dequantize, gguf.cpp, which test_gguf holds to gguf.quants):
// random blocks of every block type the engine reads, their f16 scales included
// (so zeros, subnormals, infinities and NaNs among them), decoded on the device
// into padded bf16 rows; every value must be the host's rounded to nearest even
// as f32_to_bf16 rounds (dtype.h), bit for bit (a NaN where the host has one: a
// GPU's arithmetic gives its own NaN bits), and the rows' padding untouched.
// Built for the CUDA emulator and, by the gpu-check preset, for a GPU.
#include "check_util.h"
#include "dtype.h"
#include "gguf.h"
#include "kernels.h"

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
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

void check_type(const Type& t, std::mt19937& rng) {
    const int64_t rows = 24, blocks = t.values == 32 ? 40 : 6, cols = blocks * t.values, ld = cols + 8;
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
    std::byte* d_src = device_copy(src);
    uint16_t* d_out = device_copy(std::vector<uint16_t>(want.size(), 0xEEEE));
    cetus::cuda::launch_ggml_to_bf16(t.id, d_src, rows, cols, d_out, ld, nullptr);
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
    std::string what = std::string(t.name) + ": " + std::to_string(rows * cols) + " values (" + std::to_string(nan) +
                       " NaN) decoded on the device == the host's, bit for bit, padding untouched";
    if (first >= 0) {
        char buf[96];
        std::snprintf(buf, sizeof buf, "; %lld differ, first at row %lld col %lld: %04x vs %04x", (long long)differ,
                      (long long)(first / ld), (long long)(first % ld), got[size_t(first)], want[size_t(first)]);
        what += buf;
    }
    check(differ == 0, what);
    cudaFree(d_src);
    cudaFree(d_out);
}

}  // namespace

int main() {
    const Type types[] = {{2, "Q4_0", 32, 18},    {3, "Q4_1", 32, 20},    {6, "Q5_0", 32, 22},
                          {7, "Q5_1", 32, 24},    {8, "Q8_0", 32, 34},    {10, "Q2_K", 256, 84},
                          {11, "Q3_K", 256, 110}, {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176},
                          {14, "Q6_K", 256, 210}, {20, "IQ4_NL", 32, 18}, {23, "IQ4_XS", 256, 136}};
    std::mt19937 rng(20261202);
    for (const Type& t : types) check_type(t, rng);
    // A type without a decoder: no row size, so the upload refuses it by name.
    check(cetus::cuda::ggml_row_bytes(1, 64) == 0 && cetus::cuda::ggml_row_bytes(12, 255) == 0,
          "F16 (not a block type) and a Q4_K row of 255 values: no row size");
    std::printf("%d failed\n", g_failed);
    return g_failed == 0 ? 0 : 1;
}
