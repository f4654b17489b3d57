// Embedding gather: out[t, :] = row ids[t] of the embedding matrix as fp32,
// decoded by load_elem (device_math.cuh); one instantiation per weight dtype.
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
    pdl_trigger();
    const int64_t t = blockIdx.x, row = ids[t];
    for (int64_t c = threadIdx.x; c < m.cols; c += blockDim.x) out[t * m.cols + c] = load_elem<DT>(m, row, c);
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
    }
    CETUS_CUDA_LAUNCHED("embed_kernel");
}

}  // namespace cetus::cuda
