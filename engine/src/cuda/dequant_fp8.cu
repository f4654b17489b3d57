// The FP8 -> bf16 expansion that feeds cuBLAS for longer chunks (gemm.cpp):
// out[r, c] = bf16(fp8(r, c) * scale), the FP8 decode of Matrix::row_to_f32
// (weights.cpp) through load_elem, rounded to nearest even. Grid-stride loop,
// at most 65536 blocks of 256.
#include "cuda_util.h"
#include "device_math.cuh"

#include <algorithm>

namespace cetus::cuda {
namespace {

__global__ void dequant_fp8_kernel(DeviceMatrix w, uint16_t* __restrict__ out) {
    const int64_t total = w.rows * w.cols;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t r = i / w.cols, c = i % w.cols;
        out[r * w.ld + c] = __bfloat16_as_ushort(__float2bfloat16_rn(load_elem<DeviceDtype::F8_E4M3>(w, r, c)));
    }
}

}  // namespace

void launch_dequant_fp8(const DeviceMatrix& w, uint16_t* out, cudaStream_t s) {
    const int64_t total = w.rows * w.cols;
    if (total <= 0) return;
    const unsigned blocks = unsigned(std::min<int64_t>((total + 255) / 256, 65536));
    dequant_fp8_kernel<<<blocks, 256, 0, s>>>(w, out);
    CETUS_CUDA_LAUNCHED("dequant_fp8_kernel");
}

}  // namespace cetus::cuda
