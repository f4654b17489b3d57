// GGUF block-quantised weights decoded on the device: rows of blocks as the file
// holds them, written out as bf16 or fp32 rows ld_out elements apart (at upload,
// for the matrices whose kernels take no blocks, and for the cuBLAS products'
// expansion of a Ggml matrix). Each value is ggml_blocks.h's (the engine's own
// decoders, so the CPU backend's): fp32 exactly, bf16 rounded to nearest even as
// f32_to_bf16 (dtype.h) rounds, NaN included. One thread per block, grid-stride.
#include "cuda_util.h"
#include "ggml_blocks.h"
#include "kernels.h"

#include <algorithm>

namespace cetus::cuda {
namespace {

__device__ __forceinline__ uint16_t round_bf16(float f) {
    uint32_t bits = __float_as_uint(f);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40u);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return uint16_t(bits >> 16);
}

__device__ __forceinline__ void store(uint16_t* o, float v) { *o = round_bf16(v); }
__device__ __forceinline__ void store(float* o, float v) { *o = v; }

template <class T>
struct GgmlDecodeArgs {
    uint32_t type;
    int values, bytes;  // per block
    const std::byte* src;
    int64_t rows, blocks_per_row, src_ld;
    T* out;
    int64_t ld_out;
};

template <class T>
__global__ void ggml_decode_kernel(GgmlDecodeArgs<T> a) {
    const int64_t total = a.rows * a.blocks_per_row;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t r = i / a.blocks_per_row, b = i % a.blocks_per_row;
        const std::byte* block = a.src + r * a.src_ld + b * a.bytes;
        T* o = a.out + r * a.ld_out + b * a.values;
        for (int k = 0; k < a.values / 32; ++k) {  // a chunk at a time: 32 values in registers, not 256
            float y[32];
            ggml_blocks::decode_chunk(a.type, block, k, y);
#pragma unroll
            for (int v = 0; v < 32; ++v) store(o + 32 * k + v, y[v]);
        }
    }
}

template <class T>
void launch_decode(uint32_t type, const void* src, int64_t src_ld, int64_t rows, int64_t cols, T* out, int64_t ld_out,
                   cudaStream_t s) {
    GgmlDecodeArgs<T> a{};
    if (!ggml_blocks::block_shape(type, a.values, a.bytes) || rows <= 0) return;
    a.type = type;
    a.src = static_cast<const std::byte*>(src);
    a.rows = rows;
    a.blocks_per_row = cols / a.values;
    a.src_ld = src_ld;
    a.out = out;
    a.ld_out = ld_out;
    const int64_t total = rows * a.blocks_per_row;
    const unsigned blocks = unsigned(std::min<int64_t>((total + 127) / 128, 65536));
    ggml_decode_kernel<T><<<blocks, 128, 0, s>>>(a);
    CETUS_CUDA_LAUNCHED("ggml_decode_kernel");
}

}  // namespace

bool ggml_block_shape(uint32_t type, int& values, int& bytes) { return ggml_blocks::block_shape(type, values, bytes); }

int64_t ggml_row_bytes(uint32_t type, int64_t cols) {
    int values = 0, bytes = 0;
    if (!ggml_blocks::block_shape(type, values, bytes) || cols % values != 0) return 0;
    return cols / values * bytes;
}

void launch_ggml_to_bf16(uint32_t type, const void* src, int64_t src_ld, int64_t rows, int64_t cols, uint16_t* out,
                         int64_t ld_out, cudaStream_t s) {
    launch_decode(type, src, src_ld, rows, cols, out, ld_out, s);
}

void launch_ggml_to_f32(uint32_t type, const void* src, int64_t src_ld, int64_t rows, int64_t cols, float* out,
                        int64_t ld_out, cudaStream_t s) {
    launch_decode(type, src, src_ld, rows, cols, out, ld_out, s);
}

void launch_ggml_matrix_to_bf16(const DeviceMatrix& w, uint16_t* out, cudaStream_t s) {
    launch_decode(w.ggml_type, w.data, w.ld, w.rows, w.cols, out, (w.cols + 7) / 8 * 8, s);
}

}  // namespace cetus::cuda
