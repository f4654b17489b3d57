// MLA query absorption: q_abs[t, h, :] = W_UK_h^T q[t, h, :d_n], the per-head
// cpu::axpy loop of mla_forward's absorbed branch (mla.cpp) in the same j
// order. Grid (d_c / 128, n_h, n / 8), rounded up, of 128 threads: one column
// of W_UK_h per thread for 8 tokens, their q_nope staged in shared memory.
#include "cuda_util.h"
#include "device_math.cuh"
#include "launch_util.cuh"

namespace cetus::cuda {
namespace {

constexpr int k_absorb_threads = 128;
constexpr int k_absorb_tokens = 8;

// Column c of W_UK_h for 8 tokens per thread: the same j order as the CPU's axpy loop.
template <DeviceDtype DT>
__global__ void __launch_bounds__(k_absorb_threads)
    absorb_q_kernel(DeviceMatrix kv_b, const float* __restrict__ q, int64_t n, MlaShape m,
                    float* __restrict__ q_abs) {
    extern __shared__ float q_nope[];  // [k_absorb_tokens, d_n]
    const int64_t h = blockIdx.y, t0 = int64_t(blockIdx.z) * k_absorb_tokens;
    const int nt = int(min(int64_t(k_absorb_tokens), n - t0));
    const int64_t d_qk = m.d_n + m.d_r;
    for (int64_t i = threadIdx.x; i < nt * m.d_n; i += blockDim.x)
        q_nope[i] = q[((t0 + i / m.d_n) * m.n_h + h) * d_qk + i % m.d_n];
    __syncthreads();
    const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (c >= m.d_c) return;
    const int64_t row0 = h * (m.d_n + m.d_v);
    float acc[k_absorb_tokens] = {};
#pragma unroll 4
    for (int64_t j = 0; j < m.d_n; ++j) {
        const float w = load_elem<DT>(kv_b, row0 + j, c);
#pragma unroll
        for (int t = 0; t < k_absorb_tokens; ++t)
            if (t < nt) acc[t] = fmaf(q_nope[t * m.d_n + j], w, acc[t]);
    }
#pragma unroll
    for (int t = 0; t < k_absorb_tokens; ++t)
        if (t < nt) q_abs[((t0 + t) * m.n_h + h) * m.d_c + c] = acc[t];
}

}  // namespace

void launch_absorb_q(const DeviceMatrix& kv_b, const float* q, int64_t n, const MlaShape& m, float* q_abs,
                     cudaStream_t s) {
    if (n <= 0) return;
    const dim3 grid(unsigned(ceil_div(m.d_c, k_absorb_threads)), unsigned(m.n_h),
                    unsigned(ceil_div(n, k_absorb_tokens)));
    const size_t shared = size_t(k_absorb_tokens * m.d_n) * sizeof(float);
    switch (kv_b.dtype) {
    case DeviceDtype::F32:
        absorb_q_kernel<DeviceDtype::F32><<<grid, k_absorb_threads, shared, s>>>(kv_b, q, n, m, q_abs);
        break;
    case DeviceDtype::BF16:
        absorb_q_kernel<DeviceDtype::BF16><<<grid, k_absorb_threads, shared, s>>>(kv_b, q, n, m, q_abs);
        break;
    case DeviceDtype::F8_E4M3:
        absorb_q_kernel<DeviceDtype::F8_E4M3><<<grid, k_absorb_threads, shared, s>>>(kv_b, q, n, m, q_abs);
        break;
    }
    CETUS_CUDA_LAUNCHED("absorb_q_kernel");
}

}  // namespace cetus::cuda
