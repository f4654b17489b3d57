// What the kernel-level checks (attention_check.cpp, experts_check.cpp, ...) share:
// the ok/FAIL lines and their count, bf16 and e4m3 numbers on the host, copies to and
// from the device, random F32/BF16/FP8 weights, a product's error against double sums. Built for the CUDA emulator and, by the gpu-check preset, for a GPU.
#pragma once

#include <cuda_runtime.h>

#include "kernels.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace cetus::check {

inline int g_failed = 0;

inline void check(bool ok, const std::string& what) {
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
    if (!ok) ++g_failed;
}

inline uint16_t to_bf16(float v) { // nearest even (the values here are finite)
    uint32_t u;
    std::memcpy(&u, &v, 4);
    return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
inline float from_bf16(uint16_t b) {
    const uint32_t u = uint32_t(b) << 16;
    float v;
    std::memcpy(&v, &u, 4);
    return v;
}

template <typename T> T* device_copy(const std::vector<T>& h) {
    void* p = nullptr;
    cudaMalloc(&p, std::max<size_t>(h.size(), 1) * sizeof(T));
    cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
    return static_cast<T*>(p);
}
template <typename T> std::vector<T> host_copy(const T* d, size_t n) {
    std::vector<T> h(n);
    cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
}

// The worst |y[t, r] - sum_c w[r, c] x[t, c]| over n tokens (x rows ldx apart, y
// rows ldy apart; w [rows, cols]), the sums in double, in units of `unit` times the
// sum of the products' magnitudes.
inline double worst_product_error(const std::vector<float>& w, int64_t rows, int64_t cols,
                                  const std::vector<float>& x, int64_t ldx, const std::vector<float>& y,
                                  int64_t ldy, int64_t n, double unit) {
    double worst = 0.0;
    for (int64_t t = 0; t < n; ++t)
        for (int64_t r = 0; r < rows; ++r) {
            double sum = 0.0, mag = 0.0;
            for (int64_t c = 0; c < cols; ++c) {
                const double p = double(w[size_t(r * cols + c)]) * double(x[size_t(t * ldx + c)]);
                sum += p;
                mag += std::fabs(p);
            }
            worst = std::max(worst, std::fabs(double(y[size_t(t * ldy + r)]) - sum) / (mag * unit + 1e-30));
        }
    return worst;
}

inline constexpr uint16_t k_bf16_nan = 0x7fc0;
inline constexpr uint8_t k_fp8_nan = 0x7f;

// e4m3fn: bias 7, no infinities; the codes used here are normal numbers.
inline float from_e4m3(uint8_t b) {
    const int e = (b >> 3) & 15, m = b & 7;
    const float v = e == 0 ? std::ldexp(float(m) / 8.0f, -6) : std::ldexp(1.0f + float(m) / 8.0f, e - 7);
    return (b & 0x80) ? -v : v;
}
inline float round_bf16(float v) {
    return from_bf16(to_bf16(v));
}

inline int64_t round_up(int64_t v, int64_t m) {
    return (v + m - 1) / m * m;
}

inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

// One weight matrix as the kernels see it, and the values they compute with:
// exact (the fp32 kernels: FP8 code times scale in fp32) and rounded to bf16 (the
// tensor-core kernels' operand).
struct Weight {
    cuda::DeviceMatrix m;
    std::vector<float> exact, rounded; // [rows, cols]
};

// A random [rows, cols] weight of dtype F32, BF16 or F8_E4M3 (with 128 x 128 block
// scales), values of about 1 / sqrt(cols); F32 and BF16 hold bf16 numbers. Rows are
// padded to 16 bytes with NaN, which the kernels must never read. Its device buffers
// are appended to owned.
template <class Rng>
Weight make_weight(cuda::DeviceDtype dt, int64_t rows, int64_t cols, Rng& rng, std::vector<void*>& owned) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    Weight w;
    w.exact.resize(size_t(rows * cols));
    w.rounded.resize(w.exact.size());
    w.m.dtype = dt;
    w.m.rows = rows;
    w.m.cols = cols;
    const float spread = 1.0f / std::sqrt(float(cols));
    if (dt == cuda::DeviceDtype::BF16 || dt == cuda::DeviceDtype::F32) {
        const bool b16 = dt == cuda::DeviceDtype::BF16;
        w.m.ld = round_up(cols, b16 ? 8 : 4);
        std::vector<uint16_t> half(b16 ? size_t(rows * w.m.ld) : 0, k_bf16_nan);
        std::vector<float> full(b16 ? 0 : size_t(rows * w.m.ld), NAN);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < cols; ++c) {
                const uint16_t b = to_bf16(spread * normal(rng));
                if (b16) half[size_t(r * w.m.ld + c)] = b;
                else full[size_t(r * w.m.ld + c)] = from_bf16(b);
                w.exact[size_t(r * cols + c)] = w.rounded[size_t(r * cols + c)] = from_bf16(b);
            }
        w.m.data = b16 ? static_cast<const void*>(device_copy(half)) : device_copy(full);
    } else {
        w.m.ld = round_up(cols, 16);
        w.m.scale_cols = (cols + 127) / 128;
        std::vector<float> scale(size_t(((rows + 127) / 128) * w.m.scale_cols));
        std::uniform_real_distribution<float> uni(0.5f, 2.0f);
        for (auto& s : scale) s = uni(rng) * spread / 4.0f;
        std::uniform_int_distribution<int> exp(4, 10), mant(0, 7), sign(0, 1);
        std::vector<uint8_t> data(size_t(rows * w.m.ld), k_fp8_nan);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < cols; ++c) {
                const uint8_t b = uint8_t((sign(rng) << 7) | (exp(rng) << 3) | mant(rng));
                data[size_t(r * w.m.ld + c)] = b;
                const float v = from_e4m3(b) * scale[size_t((r / 128) * w.m.scale_cols + c / 128)];
                w.exact[size_t(r * cols + c)] = v;
                w.rounded[size_t(r * cols + c)] = round_bf16(v);
            }
        w.m.data = device_copy(data);
        w.m.scale_inv = device_copy(scale);
        owned.push_back(const_cast<float*>(w.m.scale_inv));
    }
    owned.push_back(const_cast<void*>(w.m.data));
    w.m.l2_prefetch = true;  // (the sums are the same; the emulator checks each prefetch's range)
    return w;
}

// Byte offsets of a GGUF block's f16 scales (d, and dmin where the type has one).
inline std::vector<int> ggml_half_offsets(uint32_t id) {
    switch (id) {
    case 3: case 7: case 12: case 13: return {0, 2};
    case 10: return {80, 82};
    case 11: return {108};
    case 14: return {208};
    default: return {0};
    }
}

// n_blocks random GGUF blocks of type id (block_bytes each) at out, their f16 scales
// finite, between 2^-9 and 2^-3 (random scales would bring infinities and NaNs).
template <class Rng>
void random_ggml_blocks(uint32_t id, int block_bytes, int64_t n_blocks, std::byte* out, Rng& rng) {
    for (int64_t i = 0; i < n_blocks * block_bytes; ++i) out[i] = std::byte(rng() & 0xFF);
    for (int64_t b = 0; b < n_blocks; ++b)
        for (int off : ggml_half_offsets(id)) {
            const uint16_t h = uint16_t(((rng() % 7 + 6) << 10) | (rng() & 0x3FF));
            out[b * block_bytes + off] = std::byte(h & 0xFF);
            out[b * block_bytes + off + 1] = std::byte(h >> 8);
        }
}

// rows of GGUF blocks of cols values each (the file's layout), ld bytes apart, as the
// device holds them (kernels.h: ggml_device_row), the rows' padding as it was.
inline std::vector<std::byte> device_layout(uint32_t id, const std::vector<std::byte>& file, int64_t rows,
                                            int64_t cols, int64_t ld) {
    std::vector<std::byte> out = file;
    for (int64_t r = 0; r < rows; ++r)
        cetus::cuda::ggml_device_row(id, file.data() + r * ld, out.data() + r * ld, cols);
    return out;
}

} // namespace cetus::check
