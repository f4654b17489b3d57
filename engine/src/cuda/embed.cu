// Embedding gather: out[t, :] = row ids[t] of the embedding matrix as fp32,
// decoded by load_elem (device_math.cuh); one instantiation per weight dtype, and
// one for GGUF blocks.
// Mirrors Model::forward's m_embed.row_to_f32 (model.cpp; Matrix::row_to_f32
// in weights.cpp). One block of k_row_threads per token.
#include "cuda_util.h"
#include "device_math.cuh"
#include "pdl.cuh"
#include "row_kernels.cuh"

namespace cetus::cuda {
namespace {

template <DeviceDtype DT>
__global__ void embed_kernel(DeviceMatrix m, const int32_t* __restrict__ ids, float* __restrict__ out) {
    pdl_wait();  // first: see pdl.cuh
    const int64_t t = blockIdx.x, row = ids[t];
    for (int64_t c = threadIdx.x; c < m.cols; c += blockDim.x) out[t * m.cols + c] = load_elem<DT>(m, row, c);
}

// GGUF blocks: a thread per 32-value chunk of the row (ggml_chunk, the CPU's values).
__global__ void embed_ggml_kernel(DeviceMatrix m, const int32_t* __restrict__ ids, float* __restrict__ out) {
    pdl_wait();  // first: see pdl.cuh
    const int64_t t = blockIdx.x;
    const std::byte* row = ggml_row(m, ids[t]);
    for (int64_t c = threadIdx.x; c < m.cols / 32; c += blockDim.x) {
        float y[32];
        ggml_chunk(m, row, c, y);
#pragma unroll
        for (int i = 0; i < 32; ++i) out[t * m.cols + c * 32 + i] = y[i];
    }
}

}  // namespace

void launch_embed(const DeviceMatrix& m, const int32_t* ids, int64_t n, float* out, cudaStream_t s) {
    if (n <= 0) return;
    switch (m.dtype) {
    case DeviceDtype::F32:
        launch_pdl(embed_kernel<DeviceDtype::F32>, unsigned(n), k_row_threads, 0, s, m, ids, out);
        break;
    case DeviceDtype::BF16:
        launch_pdl(embed_kernel<DeviceDtype::BF16>, unsigned(n), k_row_threads, 0, s, m, ids, out);
        break;
    case DeviceDtype::F8_E4M3:
        launch_pdl(embed_kernel<DeviceDtype::F8_E4M3>, unsigned(n), k_row_threads, 0, s, m, ids, out);
        break;
    case DeviceDtype::Ggml: launch_pdl(embed_ggml_kernel, unsigned(n), k_row_threads, 0, s, m, ids, out); break;
    }
    CETUS_CUDA_LAUNCHED("embed_kernel");
}

}  // namespace cetus::cuda
