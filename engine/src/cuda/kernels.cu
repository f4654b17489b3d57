// Row-wise and elementwise kernels of the forward pass: embedding gather,
// RMSNorm (cpu::rmsnorm's expression: x / sqrt(mean(x^2) + eps) * w with the
// reciprocal taken once), the latent-cache write with kv_a_layernorm and rope,
// rope on the queries (Rope::apply with the precomputed cos/sin table),
// residual adds, SwiGLU and the fp32 -> bf16 rounding that feeds cuBLAS.
#include "cuda_util.h"
#include "device_math.cuh"

#include <algorithm>

namespace cetus::cuda {
namespace {

constexpr int k_row_threads = 256;

unsigned elementwise_blocks(int64_t count) {
    return unsigned(std::clamp<int64_t>((count + 255) / 256, 1, 65536));
}

template <DeviceDtype DT>
__global__ void embed_kernel(DeviceMatrix m, const int32_t* __restrict__ ids, float* __restrict__ out) {
    const int64_t t = blockIdx.x, row = ids[t];
    for (int64_t c = threadIdx.x; c < m.cols; c += blockDim.x) out[t * m.cols + c] = load_elem<DT>(m, row, c);
}

// 1 / sqrt(sum_sq / n + eps), each operation rounded as on the CPU (no fast math).
__device__ __forceinline__ float rms_scale(float sum_sq, int64_t n, float eps) {
    return 1.0f / sqrtf(sum_sq / float(n) + eps);
}

// x and out may alias: each thread reads and writes only its own elements.
__global__ void __launch_bounds__(k_row_threads)
    rmsnorm_kernel(const float* x, int64_t ldx, const float* __restrict__ w, float eps, int64_t n, float* out,
                   int64_t ldo) {
    __shared__ float scratch[32];
    const float* xr = x + int64_t(blockIdx.x) * ldx;
    float* o = out + int64_t(blockIdx.x) * ldo;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss = fmaf(xr[i], xr[i], ss);
    const float r = rms_scale(block_sum(ss, scratch), n, eps);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) o[i] = w[i] * (xr[i] * r);
}

__global__ void __launch_bounds__(k_row_threads)
    add_rmsnorm_kernel(float* __restrict__ x, const float* __restrict__ r, const float* __restrict__ w, float eps,
                       int64_t n, float* __restrict__ out) {
    __shared__ float scratch[32];
    float* xr = x + int64_t(blockIdx.x) * n;
    const float* rr = r + int64_t(blockIdx.x) * n;
    float* o = out + int64_t(blockIdx.x) * n;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = xr[i] + rr[i];
        xr[i] = v;
        ss = fmaf(v, v, ss);
    }
    const float s = rms_scale(block_sum(ss, scratch), n, eps);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) o[i] = w[i] * (xr[i] * s);
}

// One rotary pair i of Rope::apply; in and out may alias. The products and
// sums are rounded separately, as the CPU writes them (no fused multiply-add).
__device__ __forceinline__ void rope_pair(const float* in, float* out, const float* cs, int64_t i, int64_t half,
                                          bool interleave) {
    const float c = cs[2 * i], s = cs[2 * i + 1];
    if (interleave) {
        const float a = in[2 * i], b = in[2 * i + 1];
        out[2 * i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        out[2 * i + 1] = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
    } else {
        const float a = in[i], b = in[i + half];
        out[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        out[i + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
    }
}

__global__ void __launch_bounds__(k_row_threads)
    latent_cache_kernel(const float* __restrict__ kv, const float* __restrict__ norm_w, float eps,
                        const float* __restrict__ rope_table, bool interleave,
                        const int64_t* __restrict__ start_pos, int64_t d_c, int64_t d_r, float* __restrict__ cache) {
    __shared__ float scratch[32];
    const int64_t t = blockIdx.x, width = d_c + d_r, pos = *start_pos + t;
    const float* in = kv + t * width;                // [d_c + d_r]
    float* row = cache + pos * width;               // [d_c + d_r]
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < d_c; i += blockDim.x) ss = fmaf(in[i], in[i], ss);
    const float r = rms_scale(block_sum(ss, scratch), d_c, eps);
    for (int64_t i = threadIdx.x; i < d_c; i += blockDim.x) row[i] = norm_w[i] * (in[i] * r);
    const float* cs = rope_table + pos * d_r;
    const int64_t half = d_r / 2;
    for (int64_t i = threadIdx.x; i < half; i += blockDim.x) rope_pair(in + d_c, row + d_c, cs, i, half, interleave);
}

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

__global__ void add_kernel(float* __restrict__ x, const float* __restrict__ r, int64_t count) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x)
        x[i] += r[i];
}

// cpu::silu(g) * u with silu(z) = z / (1 + exp(-z)).
__global__ void silu_mul_kernel(float* __restrict__ g, const float* __restrict__ u, int64_t count) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
        const float z = g[i];
        g[i] = z / (1.0f + expf(-z)) * u[i];
    }
}

__global__ void to_bf16_kernel(const float* __restrict__ x, int64_t ldx, int64_t n_rows, int64_t cols,
                               uint16_t* __restrict__ out, int64_t ldo) {
    const int64_t total = n_rows * cols;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t r = i / cols, c = i % cols;
        out[r * ldo + c] = __bfloat16_as_ushort(__float2bfloat16_rn(x[r * ldx + c]));
    }
}

}  // namespace

void launch_embed(const DeviceMatrix& m, const int32_t* ids, int64_t n, float* out, cudaStream_t s) {
    if (n <= 0) return;
    switch (m.dtype) {
    case DeviceDtype::F32: embed_kernel<DeviceDtype::F32><<<unsigned(n), k_row_threads, 0, s>>>(m, ids, out); break;
    case DeviceDtype::BF16: embed_kernel<DeviceDtype::BF16><<<unsigned(n), k_row_threads, 0, s>>>(m, ids, out); break;
    case DeviceDtype::F8_E4M3:
        embed_kernel<DeviceDtype::F8_E4M3><<<unsigned(n), k_row_threads, 0, s>>>(m, ids, out);
        break;
    }
    CETUS_CUDA_LAUNCHED("embed_kernel");
}

void launch_rmsnorm(const float* x, int64_t ldx, const float* w, float eps, int64_t n_rows, int64_t n, float* out,
                    int64_t ldo, cudaStream_t s) {
    if (n_rows <= 0) return;
    rmsnorm_kernel<<<unsigned(n_rows), k_row_threads, 0, s>>>(x, ldx, w, eps, n, out, ldo);
    CETUS_CUDA_LAUNCHED("rmsnorm_kernel");
}

void launch_add_rmsnorm(float* x, const float* r, const float* w, float eps, int64_t n_rows, int64_t n, float* out,
                        cudaStream_t s) {
    if (n_rows <= 0) return;
    add_rmsnorm_kernel<<<unsigned(n_rows), k_row_threads, 0, s>>>(x, r, w, eps, n, out);
    CETUS_CUDA_LAUNCHED("add_rmsnorm_kernel");
}

void launch_add(float* x, const float* r, int64_t count, cudaStream_t s) {
    if (count <= 0) return;
    add_kernel<<<elementwise_blocks(count), 256, 0, s>>>(x, r, count);
    CETUS_CUDA_LAUNCHED("add_kernel");
}

void launch_silu_mul(float* g, const float* u, int64_t count, cudaStream_t s) {
    if (count <= 0) return;
    silu_mul_kernel<<<elementwise_blocks(count), 256, 0, s>>>(g, u, count);
    CETUS_CUDA_LAUNCHED("silu_mul_kernel");
}

void launch_latent_cache(const float* kv, int64_t n, const float* norm_w, float eps, const float* rope_table,
                         bool interleave, const int64_t* start_pos, int64_t d_c, int64_t d_r, float* cache,
                         cudaStream_t s) {
    if (n <= 0) return;
    latent_cache_kernel<<<unsigned(n), k_row_threads, 0, s>>>(kv, norm_w, eps, rope_table, interleave, start_pos, d_c,
                                                               d_r, cache);
    CETUS_CUDA_LAUNCHED("latent_cache_kernel");
}

void launch_rope_q(float* q, int64_t n, int64_t n_h, int64_t d_n, int64_t d_r, const float* rope_table,
                   bool interleave, const int64_t* start_pos, cudaStream_t s) {
    if (n <= 0) return;
    rope_q_kernel<<<unsigned(n), k_row_threads, 0, s>>>(q, n_h, d_n, d_r, rope_table, interleave, start_pos);
    CETUS_CUDA_LAUNCHED("rope_q_kernel");
}

void launch_to_bf16(const float* x, int64_t ldx, int64_t n_rows, int64_t cols, uint16_t* out, int64_t ldo,
                    cudaStream_t s) {
    if (n_rows <= 0 || cols <= 0) return;
    to_bf16_kernel<<<elementwise_blocks(n_rows * cols), 256, 0, s>>>(x, ldx, n_rows, cols, out, ldo);
    CETUS_CUDA_LAUNCHED("to_bf16_kernel");
}

}  // namespace cetus::cuda
