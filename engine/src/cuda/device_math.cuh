// Device helpers shared by the kernels: weight element decoding exactly as
// dtype.cpp and Matrix::row_to_f32 (bf16 = bits << 16, e4m3fn through the
// exact fp8 -> half conversion, FP8 times its block scale in fp32), warp and
// block reductions, and the warp-per-row dot product of the matmul kernels
// (GGUF blocks through ggml_blocks.h's decoders, the CPU's values).
#pragma once

#include "ggml_blocks.h"
#include "kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

namespace cetus::cuda {

inline constexpr unsigned k_full_mask = 0xffffffffu;

// The whole warp's sum or max by an xor butterfly (every lane gets the same bits).
// The CUDA emulator computes the same butterfly from one meeting of the lanes
// instead of five shuffles (tests/cuda_emu: warp_xor_reduce; its self-check holds
// it to the shuffles' bits).
__device__ __forceinline__ float warp_sum(float v) {
#ifdef CETUS_CUDA_EMU
    ::cuda_emu::warp_xor_reduce(&v, 1, false, "warp_sum");
#else
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(k_full_mask, v, off);
#endif
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#ifdef CETUS_CUDA_EMU
    ::cuda_emu::warp_xor_reduce(&v, 1, true, "warp_max");
#else
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(k_full_mask, v, off));
#endif
    return v;
}

// warp_sum of each of v[0 .. N) (the emulator: one meeting for all of them).
template <int N>
__device__ __forceinline__ void warp_sum_each(float (&v)[N]) {
#ifdef CETUS_CUDA_EMU
    static_assert(N <= ::cuda_emu::k_gather_words, "the emulator gathers up to k_gather_words values");
    ::cuda_emu::warp_xor_reduce(v, N, false, "warp_sum");
#else
#pragma unroll
    for (int j = 0; j < N; ++j) v[j] = warp_sum(v[j]);
#endif
}

// Sum over the block (blockDim.x a multiple of 32); every thread gets the total.
// scratch: 32 floats of shared memory, free for reuse once this returns.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // an earlier call may still be reading scratch
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    return warp_sum(lane < n_warps ? scratch[lane] : 0.0f);
}

__device__ __forceinline__ float bf16_bits_to_f32(uint32_t bits) { return __uint_as_float(bits << 16); }

// e4m3fn: every value is exact in half precision, 0x7f/0xff decode to NaN.
__device__ __forceinline__ float fp8_e4m3_to_f32(uint8_t b) {
    return __half2float(__half(__nv_cvt_fp8_to_halfraw(b, __NV_E4M3)));
}

template <DeviceDtype DT>
__device__ __forceinline__ float load_elem(const DeviceMatrix& m, int64_t r, int64_t c) {
    const int64_t i = r * m.ld + c;
    if constexpr (DT == DeviceDtype::F32) {
        return static_cast<const float*>(m.data)[i];
    } else if constexpr (DT == DeviceDtype::BF16) {
        return bf16_bits_to_f32(static_cast<const uint16_t*>(m.data)[i]);
    } else {
        return fp8_e4m3_to_f32(static_cast<const uint8_t*>(m.data)[i]) *
               m.scale_inv[(r / 128) * m.scale_cols + c / 128];
    }
}

// Elements in one 16-byte load of a weight row.
template <DeviceDtype DT>
inline constexpr int k_vec_elems = DT == DeviceDtype::F32 ? 4 : DT == DeviceDtype::BF16 ? 8 : 16;
template <DeviceDtype DT>
inline constexpr int k_elem_bytes = 16 / k_vec_elems<DT>;

template <DeviceDtype DT>
__device__ __forceinline__ void decode16(const uint4& raw, float* out) {
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        if constexpr (DT == DeviceDtype::F32) {
            out[i] = __uint_as_float(words[i]);
        } else if constexpr (DT == DeviceDtype::BF16) {  // little endian: the low half is the first element
            out[2 * i] = __uint_as_float(words[i] << 16);
            out[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
        } else {  // the low byte of each pair is the first element
            const float2 lo = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(
                static_cast<__nv_fp8x2_storage_t>(words[i] & 0xffffu), __NV_E4M3)));
            const float2 hi = __half22float2(
                __half2(__nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(words[i] >> 16), __NV_E4M3)));
            out[4 * i] = lo.x;
            out[4 * i + 1] = lo.y;
            out[4 * i + 2] = hi.x;
            out[4 * i + 3] = hi.y;
        }
    }
}

// N consecutive activations; kVec: p is 16-byte aligned (N a multiple of 4).
template <int N, bool kVec>
__device__ __forceinline__ void load_x(const float* p, float* out) {
    if constexpr (kVec) {
#pragma unroll
        for (int i = 0; i < N / 4; ++i) {
            const float4 v = *reinterpret_cast<const float4*>(p + 4 * i);
            out[4 * i] = v.x;
            out[4 * i + 1] = v.y;
            out[4 * i + 2] = v.z;
            out[4 * i + 3] = v.w;
        }
    } else {
#pragma unroll
        for (int i = 0; i < N; ++i) out[i] = p[i];
    }
}

// Piece v (16 bytes) of a weight row as floats; FP8 times its block scale (srow:
// the row's scales). A piece never straddles a 128-column scale block.
template <DeviceDtype DT>
__device__ __forceinline__ void load_piece(const uint4* wrow, const float* srow, int64_t v,
                                           float (&wf)[k_vec_elems<DT>]) {
    decode16<DT>(__ldg(wrow + v), wf);
    if constexpr (DT == DeviceDtype::F8_E4M3) {
        const float s = srow[(v * k_vec_elems<DT>) / 128];
#pragma unroll
        for (int i = 0; i < k_vec_elems<DT>; ++i) wf[i] *= s;
    }
}

// warp_row_dot over a row of GGUF blocks (DeviceDtype::Ggml): the row's cols / 32
// chunks of 32 values go to the lanes in turn (lane, lane + 32, ...; with kSplit > 1
// as warp_row_dot's pieces), each decoded by ggml_blocks::decode_chunk into
// registers and taken against every token.
template <int NT, bool kXVec, int kSplit>
__device__ __forceinline__ void ggml_row_dot(const DeviceMatrix& w, int64_t row, const float* const (&xs)[NT], int n,
                                             float (&acc)[NT], int part) {
    const int lane = threadIdx.x & 31;
    const std::byte* wrow = static_cast<const std::byte*>(w.data) + row * w.ld;
    const int shift = w.ggml_values == 256 ? 3 : 0;  // chunks per block: 8 or 1
    const int64_t n_chunks = w.cols / 32;
    for (int64_t c = part * 32 + lane; c < n_chunks; c += 32 * kSplit) {
        float wf[32];
        ggml_blocks::decode_chunk(w.ggml_type, wrow + (c >> shift) * w.ggml_bytes, int(c & ((1 << shift) - 1)), wf);
#pragma unroll
        for (int j = 0; j < NT; ++j) {
            if (j < n) {
                float xv[32];
                load_x<32, kXVec>(xs[j] + c * 32, xv);
#pragma unroll
                for (int i = 0; i < 32; ++i) acc[j] = fmaf(wf[i], xv[i], acc[j]);
            }
        }
    }
    warp_sum_each(acc);
}

// acc[j] = sum_c W[row, c] * xs[j][c] for the first n (<= NT) tokens, called by a
// whole warp; every lane gets the sums. Each lane reads 16-byte pieces of the row
// (lane, lane + 32, ...), so the warp streams 512 contiguous bytes per step and
// each weight byte is read once for all NT tokens. kXVec: every xs[j] is 16-byte aligned.
// Unrolled 4 deep so a lane has several weight loads in flight (a 2048-wide bf16
// row is 8 pieces per lane); the multiply-adds keep their order. With kSplit > 1
// the row is shared by kSplit warps (part = 0 .. kSplit - 1): this warp takes
// pieces part * 32 + lane, stepping 32 * kSplit, and returns its partial sums.
template <DeviceDtype DT, int NT, bool kXVec, int kSplit = 1>
__device__ __forceinline__ void warp_row_dot(const DeviceMatrix& w, int64_t row, const float* const (&xs)[NT], int n,
                                             float (&acc)[NT], int part = 0) {
    if constexpr (DT == DeviceDtype::Ggml) {
        ggml_row_dot<NT, kXVec, kSplit>(w, row, xs, n, acc, part);
        return;
    }
    constexpr int kVec = k_vec_elems<DT>;
    const int lane = threadIdx.x & 31, first = part * 32 + lane;
    const uint4* wrow = reinterpret_cast<const uint4*>(static_cast<const char*>(w.data) +
                                                       row * w.ld * int64_t(k_elem_bytes<DT>));
    const float* srow = DT == DeviceDtype::F8_E4M3 ? w.scale_inv + (row / 128) * w.scale_cols : nullptr;
    const int64_t n_full = w.cols / kVec;
#pragma unroll 4
    for (int64_t v = first; v < n_full; v += 32 * kSplit) {
        float wf[kVec];
        load_piece<DT>(wrow, srow, v, wf);
#pragma unroll
        for (int j = 0; j < NT; ++j) {
            if (j < n) {
                float xv[kVec];
                load_x<kVec, kXVec>(xs[j] + v * kVec, xv);
#pragma unroll
                for (int i = 0; i < kVec; ++i) acc[j] = fmaf(wf[i], xv[i], acc[j]);
            }
        }
    }
    // The row's last partial piece: the padding up to ld is loaded but never used.
    const int64_t rem = w.cols - n_full * kVec;
    if (rem > 0 && first == int(n_full % (32 * kSplit))) {
        float wf[kVec];
        load_piece<DT>(wrow, srow, n_full, wf);
        const int64_t c0 = n_full * kVec;
#pragma unroll
        for (int j = 0; j < NT; ++j) {
            if (j < n) {
#pragma unroll
                for (int i = 0; i < kVec; ++i)
                    if (i < rem) acc[j] = fmaf(wf[i], xs[j][c0 + i], acc[j]);
            }
        }
    }
    warp_sum_each(acc);
}

}  // namespace cetus::cuda
