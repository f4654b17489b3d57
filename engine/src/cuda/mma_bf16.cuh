// One warp-wide bf16 tensor-core product with fp32 accumulation,
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (sm_80 and later), for
// kernels that need to know which lane holds which element (WMMA's fragments
// are opaque). The PTX ISA's fragment layout, with lane = 4 * group + tig:
//   a[0] = A[group][2 tig, 2 tig + 1]      a[1] = A[group + 8][2 tig, 2 tig + 1]
//   a[2] = A[group][2 tig + 8, + 9]        a[3] = A[group + 8][2 tig + 8, + 9]
//   b[0] = B[2 tig, 2 tig + 1][group]      b[1] = B[2 tig + 8, + 9][group]
//   d[0], d[1] = D[group][2 tig, 2 tig + 1]    d[2], d[3] = D[group + 8][2 tig, 2 tig + 1]
// (A 16 x 16, B 16 x 8, D 16 x 8; each 32-bit word holds the pair's lower index
// in its lower 16 bits). The CUDA emulator computes the same product from the
// same layout.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace cetus::cuda {

// d += A B over the warp's fragments.
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4],
                                               const uint32_t (&b)[2]) {
#if defined(CETUS_CUDA_EMU)
    ::cuda_emu::mma_m16n8k16_bf16(d, a, b);
#elif !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap(); // the host never launches a kernel using it below sm_80
#endif
}

// Two bf16 values (bits) as one fragment word: lo in the lower half.
__device__ __forceinline__ uint32_t bf16_pair(uint16_t lo, uint16_t hi) {
    return uint32_t(lo) | (uint32_t(hi) << 16);
}

// x as kParts bf16 values: each the rest of x so far rounded to bf16 (the rest is
// exact in fp32), so their sum is within about 2^-(9 kParts) |x| of x: 2^-18 in
// two parts, below fp32's own rounding in three. Products of such parts with
// bf16 values are exact in fp32.
template <int kParts>
__device__ __forceinline__ void split_bf16(float x, uint16_t (&parts)[kParts]) {
    float rest = x;
#pragma unroll
    for (int i = 0; i < kParts; ++i) {
        const __nv_bfloat16 h = __float2bfloat16_rn(rest);
        parts[i] = __bfloat16_as_ushort(h);
        rest -= __bfloat162float(h);
    }
}

} // namespace cetus::cuda
