// File-local helpers of the one-block-per-row kernels (embed, rmsnorm,
// add_rmsnorm, moe_combine, latent_cache), shared by their .cu files: the block
// size, the RMS scale of cpu::rmsnorm and one rotary pair of Rope::apply.
// Internal linkage, as when they lived in one file: each .cu gets its own copy.
#pragma once

#include <cstdint>

namespace cetus::cuda {
namespace {

constexpr int k_row_threads = 256;

// 1 / sqrt(sum_sq / n + eps), each operation rounded as on the CPU (no fast math).
__device__ __forceinline__ float rms_scale(float sum_sq, int64_t n, float eps) {
    return 1.0f / sqrtf(sum_sq / float(n) + eps);
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

}  // namespace
}  // namespace cetus::cuda
