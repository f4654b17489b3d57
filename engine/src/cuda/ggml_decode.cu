// GGUF block-quantised weights decoded on the device while they are uploaded: rows of
// blocks copied up as the file holds them, written out as bf16 rows ld elements apart.
// Each value is ggml_blocks.h's (the engine's own decoders, so the CPU backend's)
// rounded to nearest even as f32_to_bf16 (dtype.h) rounds, NaN included. One thread
// per block, grid-stride.
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

struct GgmlDecodeArgs {
    uint32_t type;
    int values, bytes;  // per block
    const std::byte* src;
    int64_t rows, blocks_per_row, src_row_bytes;
    uint16_t* out;
    int64_t ld_out;
};

__global__ void ggml_to_bf16_kernel(GgmlDecodeArgs a) {
    const int64_t total = a.rows * a.blocks_per_row;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t r = i / a.blocks_per_row, b = i % a.blocks_per_row;
        float y[256];
        ggml_blocks::decode_block(a.type, a.src + r * a.src_row_bytes + b * a.bytes, y);
        uint16_t* o = a.out + r * a.ld_out + b * a.values;
        for (int k = 0; k < a.values; ++k) o[k] = round_bf16(y[k]);
    }
}

}  // namespace

int64_t ggml_row_bytes(uint32_t type, int64_t cols) {
    int values = 0, bytes = 0;
    if (!ggml_blocks::block_shape(type, values, bytes) || cols % values != 0) return 0;
    return cols / values * bytes;
}

void launch_ggml_to_bf16(uint32_t type, const void* src, int64_t rows, int64_t cols, uint16_t* out, int64_t ld_out,
                         cudaStream_t s) {
    GgmlDecodeArgs a{};
    if (!ggml_blocks::block_shape(type, a.values, a.bytes) || rows <= 0) return;
    a.type = type;
    a.src = static_cast<const std::byte*>(src);
    a.rows = rows;
    a.blocks_per_row = cols / a.values;
    a.src_row_bytes = a.blocks_per_row * a.bytes;
    a.out = out;
    a.ld_out = ld_out;
    const int64_t total = rows * a.blocks_per_row;
    const unsigned blocks = unsigned(std::min<int64_t>((total + 127) / 128, 65536));
    ggml_to_bf16_kernel<<<blocks, 128, 0, s>>>(a);
    CETUS_CUDA_LAUNCHED("ggml_to_bf16_kernel");
}

}  // namespace cetus::cuda
