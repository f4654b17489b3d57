// The fp32 matrix-vector kernel behind every product with few tokens (decode,
// MTP drafts, CETUS_CUDA_EXACT), over groups of rows: cpu::matmul and
// cpu::matmul_strided (cpu/ops.cpp) up to summation order. One warp per output
// row (four for narrow matrices), 8 warps per block, grid.y the row group; the
// weight row is read once per 8 tokens, fp32 accumulation.
#include "cuda_util.h"
#include "device_math.cuh"

#include <algorithm>

namespace cetus::cuda {
namespace {

constexpr int k_warps_per_block = 8;
constexpr int k_tokens_per_pass = 8;
// Narrow products (fewer rows than this) give each row k_narrow_split warps, so
// small matrices (the MLA latent projection, the router) still spread over the
// GPU. The choice depends on the matrix only, never on the token count, so a
// token's sums are the same in a batch of one or in a verify batch.
constexpr int64_t k_narrow_rows = 2048;
constexpr int k_narrow_split = 4;

// kSplit warps per output row, k_warps_per_block / kSplit rows per block. With
// kSplit > 1 the warps' partial sums are added in warp order.
template <DeviceDtype DT, int NT, bool kXVec, int kSplit>
__global__ void __launch_bounds__(32 * k_warps_per_block)
    matvec_kernel(DeviceMatrix w, const float* __restrict__ x, int64_t ldx, int n, float* __restrict__ y,
                  int64_t ldy, RowGroups g) {
    constexpr int kRows = k_warps_per_block / kSplit;
    __shared__ float partial[kSplit > 1 ? k_warps_per_block * NT : 1];
    const int warp = threadIdx.x >> 5, part = warp % kSplit;
    const int64_t r = int64_t(blockIdx.x) * kRows + warp / kSplit;
    const bool active = r < g.rows;
    if (kSplit == 1 && !active) return;
    const int64_t grp = blockIdx.y;
    const float* xs[NT];
#pragma unroll
    for (int j = 0; j < NT; ++j) xs[j] = x + j * ldx + grp * g.x_step;
    float acc[NT] = {};
    if (active) warp_row_dot<DT, NT, kXVec, kSplit>(w, g.w_row0 + grp * g.w_row_step + r, xs, n, acc, part);
    if constexpr (kSplit > 1) {
        if ((threadIdx.x & 31) == 0) {
#pragma unroll
            for (int j = 0; j < NT; ++j) partial[warp * NT + j] = acc[j];
        }
        __syncthreads();
        if (!active || part != 0) return;
#pragma unroll
        for (int j = 0; j < NT; ++j) {
            float sum = partial[warp * NT + j];
#pragma unroll
            for (int k = 1; k < kSplit; ++k) sum += partial[(warp + k) * NT + j];
            acc[j] = sum;
        }
    }
    if ((threadIdx.x & 31) == 0) {
#pragma unroll
        for (int j = 0; j < NT; ++j)
            if (j < n) y[j * ldy + grp * g.y_step + r] = acc[j];
    }
}

template <DeviceDtype DT, int NT, bool kXVec>
void launch_pass(const DeviceMatrix& w, const float* x, int64_t ldx, int n, float* y, int64_t ldy,
                 const RowGroups& g, cudaStream_t s) {
    if (g.rows < k_narrow_rows) {
        constexpr int kRows = k_warps_per_block / k_narrow_split;
        const dim3 grid(unsigned((g.rows + kRows - 1) / kRows), unsigned(g.n_groups));
        matvec_kernel<DT, NT, kXVec, k_narrow_split><<<grid, 32 * k_warps_per_block, 0, s>>>(w, x, ldx, n, y, ldy, g);
    } else {
        const dim3 grid(unsigned((g.rows + k_warps_per_block - 1) / k_warps_per_block), unsigned(g.n_groups));
        matvec_kernel<DT, NT, kXVec, 1><<<grid, 32 * k_warps_per_block, 0, s>>>(w, x, ldx, n, y, ldy, g);
    }
    CETUS_CUDA_LAUNCHED("matvec_kernel");
}

// The smallest compiled token count that covers n.
template <DeviceDtype DT, bool kXVec>
void launch_tokens(const DeviceMatrix& w, const float* x, int64_t ldx, int n, float* y, int64_t ldy,
                   const RowGroups& g, cudaStream_t s) {
    if (n == 1) launch_pass<DT, 1, kXVec>(w, x, ldx, n, y, ldy, g, s);
    else if (n == 2) launch_pass<DT, 2, kXVec>(w, x, ldx, n, y, ldy, g, s);
    else if (n <= 4) launch_pass<DT, 4, kXVec>(w, x, ldx, n, y, ldy, g, s);
    else launch_pass<DT, 8, kXVec>(w, x, ldx, n, y, ldy, g, s);
}

template <DeviceDtype DT>
void launch_dtype(const DeviceMatrix& w, const float* x, int64_t ldx, int n, float* y, int64_t ldy,
                  const RowGroups& g, bool x_vec, cudaStream_t s) {
    if (x_vec) launch_tokens<DT, true>(w, x, ldx, n, y, ldy, g, s);
    else launch_tokens<DT, false>(w, x, ldx, n, y, ldy, g, s);
}

}  // namespace

void launch_matvec(const DeviceMatrix& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy,
                   const RowGroups& g, cudaStream_t s) {
    if (n <= 0 || g.rows <= 0) return;
    if (g.n_groups < 1 || g.n_groups > 65535)
        throw Error(ErrorCode::Unsupported, "matvec: " + std::to_string(g.n_groups) + " row groups");
    // float4 loads of x need every token's row (and group offset) 16-byte aligned.
    const bool x_vec = ldx % 4 == 0 && g.x_step % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
    for (int64_t t0 = 0; t0 < n; t0 += k_tokens_per_pass) {
        const int nt = int(std::min<int64_t>(k_tokens_per_pass, n - t0));
        const float* xt = x + t0 * ldx;
        float* yt = y + t0 * ldy;
        switch (w.dtype) {
        case DeviceDtype::F32: launch_dtype<DeviceDtype::F32>(w, xt, ldx, nt, yt, ldy, g, x_vec, s); break;
        case DeviceDtype::BF16: launch_dtype<DeviceDtype::BF16>(w, xt, ldx, nt, yt, ldy, g, x_vec, s); break;
        case DeviceDtype::F8_E4M3: launch_dtype<DeviceDtype::F8_E4M3>(w, xt, ldx, nt, yt, ldy, g, x_vec, s); break;
        }
    }
}

}  // namespace cetus::cuda
