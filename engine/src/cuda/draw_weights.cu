// A random model's matrices drawn on the device (random_draws.h): the bytes the host
// builder would make, written straight into the weights' allocation in the device's
// layout, so a benchmark model needs neither host memory nor an upload.
#include "cuda_util.h"
#include "device_math.cuh"
#include "launch_util.cuh"
#include "random_draws.h"

namespace cetus::cuda {
namespace {

namespace rd = random_draws;

// BF16: one value per thread.
__global__ void draw_bf16_kernel(uint64_t seed, float a, int64_t row0, int64_t rows, int64_t cols,
                                 char* __restrict__ dst, int64_t pitch) {
    const int64_t total = rows * cols;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t r = i / cols, c = i % cols;
        reinterpret_cast<uint16_t*>(dst + r * pitch)[c] = rd::bf16_value(rd::draw(seed, row0 + r, c), a);
    }
}

// FP8 codes: the 8 codes of one draw per thread.
__global__ void draw_fp8_kernel(uint64_t seed, int64_t row0, int64_t rows, int64_t cols, char* __restrict__ dst,
                                int64_t pitch) {
    const int64_t per_row = (cols + 7) / 8, total = rows * per_row;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t r = i / per_row, c = (i % per_row) * 8;
        const uint64_t bits = rd::draw(seed, row0 + r, c / 8);
        uint8_t* out = reinterpret_cast<uint8_t*>(dst + r * pitch) + c;
        for (int k = 0; k < 8 && c + k < cols; ++k) out[k] = rd::fp8_code(bits, k);
    }
}

constexpr int k_max_block_bytes = 210;  // Q6_K's, the largest the builder makes

// GGUF blocks (of `bytes` bytes): one block per thread, made as the file holds it, then
// written in the device's layout (kernels.h: ggml_device_row; Q6_K's rearranged).
__global__ void draw_ggml_kernel(rd::Recipe recipe, int bytes, int64_t row0, int64_t rows, int64_t per_row,
                                 char* __restrict__ dst, int64_t pitch) {
    const bool q6_k = recipe.ggml_type == ggml_blocks::k_type_q6_k;
    const int64_t total = rows * per_row;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t r = i / per_row, b = i % per_row;
        uint8_t block[k_max_block_bytes];
        rd::ggml_block(recipe, row0 + r, b, block);
        uint8_t* row = reinterpret_cast<uint8_t*>(dst + r * pitch);
        for (int j = 0; j < bytes; ++j) row[q6_k ? q6_k_place(per_row, b, j) : b * bytes + j] = block[j];
    }
}

}  // namespace

void launch_draw_matrix(const random_draws::Recipe& r, int64_t row0, int64_t rows, int64_t cols, void* dst,
                        int64_t pitch, cudaStream_t s) {
    if (rows <= 0 || cols <= 0) return;
    char* out = static_cast<char*>(dst);
    switch (r.kind) {
    case rd::Recipe::Kind::Bf16:
        draw_bf16_kernel<<<elementwise_blocks(rows * cols), 256, 0, s>>>(r.seed, r.amplitude, row0, rows, cols, out,
                                                                         pitch);
        CETUS_CUDA_LAUNCHED("draw_bf16_kernel");
        return;
    case rd::Recipe::Kind::Fp8:
        draw_fp8_kernel<<<elementwise_blocks(rows * ((cols + 7) / 8)), 256, 0, s>>>(r.seed, row0, rows, cols, out, pitch);
        CETUS_CUDA_LAUNCHED("draw_fp8_kernel");
        return;
    case rd::Recipe::Kind::Ggml: {
        int values = 0, bytes = 0;
        if (!ggml_blocks::block_shape(r.ggml_type, values, bytes) || bytes > k_max_block_bytes || cols % values != 0)
            throw Error(ErrorCode::Device, "drawn GGUF blocks of type " + std::to_string(r.ggml_type) + " with rows of " +
                                               std::to_string(cols) + " values (internal error)");
        const int64_t per_row = cols / values;
        draw_ggml_kernel<<<elementwise_blocks(rows * per_row), 256, 0, s>>>(r, bytes, row0, rows, per_row, out, pitch);
        CETUS_CUDA_LAUNCHED("draw_ggml_kernel");
        return;
    }
    }
    throw Error(ErrorCode::Device, "a drawn matrix of an unknown kind (internal error)");
}

}  // namespace cetus::cuda
