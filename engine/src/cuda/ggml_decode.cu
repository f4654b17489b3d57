// GGUF block-quantised weights decoded on the device: rows of blocks as the device
// holds them (the file's, but Q6_K's rearranged: kernels.h, ggml_device_row),
// written out as bf16 or fp32 rows ld_out elements apart (at upload, for the
// matrices whose kernels take no blocks, and for the cuBLAS products' expansion of
// a Ggml matrix). Each value is ggml_blocks.h's (the engine's own
// decoders, so the CPU backend's; through device_math.cuh's ggml_chunk, the
// kernels' own reads): fp32 exactly, bf16 rounded to nearest even as f32_to_bf16
// (dtype.h) rounds, NaN included. One thread per 32-value chunk, grid-stride, so a
// warp reads neighbouring chunks of a row and writes 16-byte pieces of the output.
#include "cuda_util.h"
#include "device_math.cuh"
#include "ggml_blocks.h"
#include "kernels.h"

#include <algorithm>
#include <atomic>
#include <cstring>

namespace cetus::cuda {
namespace {

__device__ __forceinline__ uint32_t round_bf16(float f) {
    uint32_t bits = __float_as_uint(f);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (bits >> 16) | 0x40u;
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return bits >> 16;
}

// 32 values to o: 16-byte pieces where o is 16-byte aligned (vec), else one at a time.
__device__ __forceinline__ void store32(uint16_t* o, const float (&y)[32], bool vec) {
    if (vec) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            uint32_t p[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) p[i] = round_bf16(y[8 * j + 2 * i]) | (round_bf16(y[8 * j + 2 * i + 1]) << 16);
            reinterpret_cast<uint4*>(o)[j] = make_uint4(p[0], p[1], p[2], p[3]);
        }
    } else {
#pragma unroll
        for (int v = 0; v < 32; ++v) o[v] = uint16_t(round_bf16(y[v]));
    }
}
__device__ __forceinline__ void store32(float* o, const float (&y)[32], bool vec) {
    if (vec) {
#pragma unroll
        for (int j = 0; j < 8; ++j)
            reinterpret_cast<float4*>(o)[j] = make_float4(y[4 * j], y[4 * j + 1], y[4 * j + 2], y[4 * j + 3]);
    } else {
#pragma unroll
        for (int v = 0; v < 32; ++v) o[v] = y[v];
    }
}

template <class T>
struct GgmlDecodeArgs {
    DeviceMatrix w;  // the blocks: ld bytes a row (the file's own row size at upload)
    T* out;
    int64_t ld_out;
    bool vec;  // out and ld_out keep every chunk's 32 values 16-byte aligned
};

template <class T>
__global__ void ggml_decode_kernel(GgmlDecodeArgs<T> a) {
    const int64_t per_row = a.w.cols / 32, total = a.w.rows * per_row;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t r = i / per_row, c = i % per_row;
        float y[32];
        ggml_chunk(a.w, ggml_row(a.w, r), c, y);
        store32(a.out + r * a.ld_out + 32 * c, y, a.vec);
    }
}

template <class T>
void launch_decode(const DeviceMatrix& w, T* out, int64_t ld_out, cudaStream_t s) {
    if (w.dtype != DeviceDtype::Ggml || w.ggml_values == 0 || w.rows <= 0) return;
    GgmlDecodeArgs<T> a{};
    a.w = w;
    a.out = out;
    a.ld_out = ld_out;
    a.vec = (reinterpret_cast<uintptr_t>(out) | uintptr_t(ld_out) * sizeof(T)) % 16 == 0;
    const int64_t total = w.rows * (w.cols / 32);
    const unsigned blocks = unsigned(std::min<int64_t>((total + 255) / 256, 65536));
    ggml_decode_kernel<T><<<blocks, 256, 0, s>>>(a);
    CETUS_CUDA_LAUNCHED("ggml_decode_kernel");
}

}  // namespace

int64_t ggml_row_bytes(uint32_t type, int64_t cols) {
    int values = 0, bytes = 0;
    if (!ggml_blocks::block_shape(type, values, bytes) || cols % values != 0) return 0;
    return cols / values * bytes;
}

bool ggml_row_rearranged(uint32_t type) { return type == ggml_blocks::k_type_q6_k; }

namespace {
std::atomic<uint64_t> g_staged_launches[2] = {};  // one buffer, two
}  // namespace
uint64_t ggml_staged_launches(int buffers) {
    if (buffers == 1 || buffers == 2) return g_staged_launches[buffers - 1].load(std::memory_order_relaxed);
    return ggml_staged_launches(1) + ggml_staged_launches(2);
}
void count_ggml_staged_launch(int buffers) {
    g_staged_launches[buffers == 2 ? 1 : 0].fetch_add(1, std::memory_order_relaxed);
}

int32_t ggml_stage_slot_bytes(uint32_t type) {
    int values = 0, bytes = 0;
    if (!ggml_blocks::block_shape(type, values, bytes) || !ggml_stage_fits(type, values, bytes)) return 0;
    return ggml_slot_bytes(type, values, bytes);
}

bool ggml_stage_fits_type(uint32_t type) { return ggml_stage_slot_bytes(type) > 0; }

bool ggml_int8_fits_type(uint32_t type) { return ggml_int8_type(type); }

namespace {
std::atomic<uint64_t> g_int8_launches{0};
}  // namespace
uint64_t ggml_int8_launches() { return g_int8_launches.load(std::memory_order_relaxed); }
void count_ggml_int8_launch() { g_int8_launches.fetch_add(1, std::memory_order_relaxed); }

void ggml_device_row(uint32_t type, const void* src, void* dst, int64_t cols) {
    const int64_t bytes = ggml_row_bytes(type, cols);
    if (bytes <= 0)  // device_weights refuses such matrices by name before staging a row
        throw Error(ErrorCode::Device, "GGUF type " + std::to_string(type) + " with rows of " + std::to_string(cols) +
                                           " values: not whole blocks (internal error)");
    const auto* s = static_cast<const std::byte*>(src);
    auto* d = static_cast<std::byte*>(dst);
    if (!ggml_row_rearranged(type)) {
        std::memcpy(d, s, size_t(bytes));
        return;
    }
    const int64_t blocks = cols / 256;  // Q6_K: 192 bytes of codes, 16 of scales, 2 of d
    for (int64_t b = 0; b < blocks; ++b) {
        std::memcpy(d + q6_k_place(blocks, b, 0), s + 210 * b, 192);
        std::memcpy(d + q6_k_place(blocks, b, 192), s + 210 * b + 192, 18);
    }
}

DeviceMatrix ggml_device_matrix(uint32_t type, int64_t rows, int64_t cols, const void* data, int64_t ld) {
    if (ld % 16 != 0 || reinterpret_cast<uintptr_t>(data) % 16 != 0)
        throw Error(ErrorCode::Device, "GGUF rows " + std::to_string(ld) +
                                           " bytes apart or not 16-byte aligned (internal error)");
    DeviceMatrix w;
    w.dtype = DeviceDtype::Ggml;
    w.rows = rows;
    w.cols = cols;
    w.ld = ld;
    w.data = data;
    w.ggml_type = type;
    int values = 0, bytes = 0;
    if (ggml_blocks::block_shape(type, values, bytes) && cols % values == 0) {
        w.ggml_values = values;
        w.ggml_bytes = bytes;
    }
    return w;
}

void launch_ggml_to_bf16(uint32_t type, const void* src, int64_t src_ld, int64_t rows, int64_t cols, uint16_t* out,
                         int64_t ld_out, cudaStream_t s) {
    launch_decode(ggml_device_matrix(type, rows, cols, src, src_ld), out, ld_out, s);
}

void launch_ggml_to_f32(uint32_t type, const void* src, int64_t src_ld, int64_t rows, int64_t cols, float* out,
                        int64_t ld_out, cudaStream_t s) {
    launch_decode(ggml_device_matrix(type, rows, cols, src, src_ld), out, ld_out, s);
}

void launch_ggml_matrix_to_bf16(const DeviceMatrix& w, uint16_t* out, cudaStream_t s) {
    launch_decode(w, out, ggml_bf16_ld(w), s);
}

}  // namespace cetus::cuda
