// The causal softmax of prefill attention on the tensor cores (Gemm::mla_prefill,
// gemm.cpp): one block of 256 threads per row of scores, the row's maximum and
// sum over the positions it may see, probabilities in place, zero past the
// row's position; as fp32, or (bf16 cache) as bf16 over the first half of the
// row's own bytes for the second bf16 product.
#include "cuda_util.h"
#include "device_math.cuh"

namespace cetus::cuda {
namespace {

constexpr int k_softmax_threads = 256;

__global__ void __launch_bounds__(k_softmax_threads)
    prefill_softmax_kernel(float* __restrict__ scores, int64_t rows_per_head, int64_t ld, int64_t width,
                           int64_t first_len, bool bf16_out) {
    __shared__ float scratch[32];
    const int64_t row = blockIdx.x;
    // Query i of the block sees positions 0 .. first_len - 1 + i.
    const int64_t len = min(width, first_len + row % rows_per_head);
    float* s = scores + row * ld;
    float mx = -INFINITY;
    for (int64_t c = threadIdx.x; c < len; c += blockDim.x) mx = fmaxf(mx, s[c]);
    mx = warp_max(mx);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = mx;
    __syncthreads();
    mx = warp_max(int(threadIdx.x & 31) < int(blockDim.x >> 5) ? scratch[threadIdx.x & 31] : -INFINITY);
    float sum = 0.0f;
    for (int64_t c = threadIdx.x; c < len; c += blockDim.x) sum += expf(s[c] - mx);
    sum = block_sum(sum, scratch);
    const float inv = 1.0f / sum;
    if (!bf16_out) {
        for (int64_t c = threadIdx.x; c < width; c += blockDim.x)
            s[c] = c < len ? expf(s[c] - mx) * inv : 0.0f;  // each thread rewrites only what it reads
        return;
    }
    // bf16 value c takes bytes 2c .. 2c + 1, inside fp32 value c / 2: in each round
    // the block reads values [c0, c0 + B) and then writes bf16 values [c0, c0 + B),
    // which lie in fp32 values [c0 / 2, (c0 + B) / 2): read already, in this round
    // or an earlier one. The barrier keeps a round's writes after all its reads.
    uint16_t* out = reinterpret_cast<uint16_t*>(s);
    for (int64_t c0 = 0; c0 < width; c0 += blockDim.x) {
        const int64_t c = c0 + threadIdx.x;
        const float p = c < len ? expf(s[c] - mx) * inv : 0.0f;
        __syncthreads();
        if (c < width) out[c] = __bfloat16_as_ushort(__float2bfloat16_rn(p));
    }
}

}  // namespace

void launch_prefill_softmax(float* s, int64_t n_rows, int64_t rows_per_head, int64_t ld, int64_t width,
                            int64_t first_len, bool bf16_out, cudaStream_t stream) {
    if (n_rows <= 0) return;
    prefill_softmax_kernel<<<unsigned(n_rows), k_softmax_threads, 0, stream>>>(s, rows_per_head, ld, width, first_len,
                                                                               bf16_out);
    CETUS_CUDA_LAUNCHED("prefill_softmax_kernel");
}

}  // namespace cetus::cuda
