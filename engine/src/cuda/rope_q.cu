// Rope on the queries: rotates q[t, h, d_n:] of every head in place at
// position *start_pos + t, as mla_forward does (mla.cpp) with Rope::apply
// (rope.cpp) and the precomputed cos/sin table. One block of k_row_threads
// per token.
#include "cuda_util.h"
#include "device_math.cuh"
#include "row_kernels.cuh"

namespace cetus::cuda {
namespace {

__global__ void __launch_bounds__(k_row_threads)
    rope_q_kernel(float* __restrict__ q, int64_t n_h, int64_t d_n, int64_t d_r, const float* __restrict__ rope_table,
                  bool interleave, const int64_t* __restrict__ start_pos) {
    const int64_t t = blockIdx.x, half = d_r / 2, d_qk = d_n + d_r;
    const float* cs = rope_table + (*start_pos + t) * d_r;
    for (int64_t k = threadIdx.x; k < n_h * half; k += blockDim.x) {
        float* qh = q + (t * n_h + k / half) * d_qk + d_n;  // [d_r]
        rope_pair(qh, qh, cs, k % half, half, interleave);
    }
}

}  // namespace

void launch_rope_q(float* q, int64_t n, int64_t n_h, int64_t d_n, int64_t d_r, const float* rope_table,
                   bool interleave, const int64_t* start_pos, cudaStream_t s) {
    if (n <= 0) return;
    rope_q_kernel<<<unsigned(n), k_row_threads, 0, s>>>(q, n_h, d_n, d_r, rope_table, interleave, start_pos);
    CETUS_CUDA_LAUNCHED("rope_q_kernel");
}

}  // namespace cetus::cuda
