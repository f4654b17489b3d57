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
#include <cuda_pipeline.h>

#include <type_traits>

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

// Asks the L2 to fetch [p, p + bytes) from memory now (DeviceMatrix::l2_prefetch),
// called by every lane of a warp with the same range: each lane prefetches every 32nd
// 32-byte sector (prefetch.global.L2: no register to wait for, nothing ptxas could
// move next to a use). A decode product's warp asks for each of its rows whole when it
// starts on them, so the row's bytes are on their way at once, not a staged batch or
// two at a time; the loads that follow find them in the L2. (A bulk prefetch,
// cp.async.bulk.prefetch, is one instruction for the whole row on sm_90 but takes a
// uniform address: from one lane ptxas wraps it in a loop that took the decode
// experts' kernel from 40 to 57 registers.) The emulator checks that the range lies in
// one device allocation.
__device__ __forceinline__ void prefetch_l2(const void* p, int64_t bytes) {
#ifdef CETUS_CUDA_EMU
    if ((threadIdx.x & 31) == 0) ::cuda_emu::check_device_range(p, size_t(bytes), "prefetch_l2");
#elif defined(__CUDA_ARCH__)
    const char* c = static_cast<const char*>(p) + (threadIdx.x & 31) * 32;
    const char* const end = static_cast<const char*>(p) + bytes;
#pragma unroll 1
    for (; c < end; c += 32 * 32) asm volatile("prefetch.global.L2 [%0];" ::"l"(c));
#else
    (void)p;
    (void)bytes;
#endif
}

// warp_sum of each of v[0 .. N) (the emulator: one meeting per k_gather_words values).
template <int N>
__device__ __forceinline__ void warp_sum_each(float (&v)[N]) {
#ifdef CETUS_CUDA_EMU
    for (int i = 0; i < N; i += ::cuda_emu::k_gather_words)
        ::cuda_emu::warp_xor_reduce(v + i, N - i < ::cuda_emu::k_gather_words ? N - i : ::cuda_emu::k_gather_words,
                                    false, "warp_sum");
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

// Piece v (16 bytes, raw) of a weight row as floats; FP8 times its block scale (srow:
// the row's scales). A piece never straddles a 128-column scale block.
template <DeviceDtype DT>
__device__ __forceinline__ void decode_piece(const uint4& raw, const float* srow, int64_t v,
                                             float (&wf)[k_vec_elems<DT>]) {
    decode16<DT>(raw, wf);
    if constexpr (DT == DeviceDtype::F8_E4M3) {
        const float s = srow[(v * k_vec_elems<DT>) / 128];
#pragma unroll
        for (int i = 0; i < k_vec_elems<DT>; ++i) wf[i] *= s;
    }
}

// decode_piece of piece v loaded from the row.
template <DeviceDtype DT>
__device__ __forceinline__ void load_piece(const uint4* wrow, const float* srow, int64_t v,
                                           float (&wf)[k_vec_elems<DT>]) {
    decode_piece<DT>(__ldg(wrow + v), srow, v, wf);
}

// Where the block decoders below read: kShared = false, a weight row in global memory
// (__ldg, the read-only path); kShared = true, a warp's copy of it in shared memory
// (ggml_stage_range), through plain loads. The emulator checks that each pointer lies
// in the space its loads name (a read-only global load of a shared address faults on
// a GPU).
template <bool kShared>
__device__ __forceinline__ void check_space(const void* p) {
#ifdef CETUS_CUDA_EMU
    const auto* b = static_cast<const unsigned char*>(p);
    const ::cuda_emu::Block* blk = ::cuda_emu::g_block;
    const bool in = blk && b >= blk->dynamic_smem && b < blk->dynamic_smem + blk->dynamic_bytes;
    if (in != kShared) __trap();
#else
    (void)p;
#endif
}
template <bool kShared, class T>
__device__ __forceinline__ T load_from(const T* p) {
    check_space<kShared>(p);
    if constexpr (kShared) return *p;
    else return __ldg(p);
}

// A 16-byte load from p, which must be 16-byte aligned (the emulator checks).
template <bool kShared = false>
__device__ __forceinline__ uint4 load16(const std::byte* p) {
#ifdef CETUS_CUDA_EMU
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) __trap();
#endif
    return load_from<kShared>(reinterpret_cast<const uint4*>(p));
}

// A 2-byte load from p, which must be 2-byte aligned (the emulator checks).
template <bool kShared = false>
__device__ __forceinline__ uint32_t load2(const std::byte* p) {
#ifdef CETUS_CUDA_EMU
    if (reinterpret_cast<uintptr_t>(p) % 2 != 0) __trap();
#endif
    return load_from<kShared>(reinterpret_cast<const uint16_t*>(p));
}

// Bytes [p, p + len) (p 2-byte aligned, len <= 4 N) as N words, word i holding bytes
// 4 i .. 4 i + 3 (bytes past len undefined): the aligned 4-byte words that hold them,
// shifted into place. Only words holding one of the bytes are read, so a row's padding
// to 16 bytes covers every read of its blocks.
template <bool kShared = false, int N>
__device__ __forceinline__ void load_bytes(const std::byte* p, int len, uint32_t (&out)[N]) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
#ifdef CETUS_CUDA_EMU
    if (a % 2 != 0) __trap();
#endif
    const uint32_t* w = reinterpret_cast<const uint32_t*>(a & ~uintptr_t(3));
    const int off = int(a & 3), n_words = (off + len + 3) / 4;
    uint32_t cur = load_from<kShared>(w);
#pragma unroll
    for (int i = 0; i < N; ++i) {
        const uint32_t next = i + 1 < n_words ? load_from<kShared>(w + i + 1) : 0u;
        out[i] = uint32_t(((uint64_t(next) << 32) | cur) >> (8 * off));
        cur = next;
    }
}

// Byte j of words (j a constant once unrolled).
template <int N>
__device__ __forceinline__ uint32_t byte_of(const uint32_t (&words)[N], int j) {
    return (words[j / 4] >> (8 * (j % 4))) & 0xFFu;
}

__device__ __forceinline__ float half_to_f32(uint32_t bits) { return __half2float(__ushort_as_half(uint16_t(bits))); }

// float(v) for 0 <= v < 2^23 less c (a whole number up to 2^23), exactly: v in the
// mantissa of 2^23, less 2^23 + c (an integer or and one float subtraction, where a
// conversion runs at a quarter of the rate).
__device__ __forceinline__ float small_uint_to_f32(uint32_t v, float c = 0.0f) {
    return __fsub_rn(__uint_as_float(0x4B000000u | v), 8388608.0f + c);
}

// Byte b of word (a code below 256) less c, as a float exactly: a byte permute puts it
// in the mantissa of 2^23 (where shifting it down and or-ing in the exponent takes two
// instructions), then one float subtraction.
__device__ __forceinline__ float code_of_byte(uint32_t word, int b, float c) {
    return __fsub_rn(__uint_as_float(__byte_perm(word, 0x4B000000u, 0x7440u | uint32_t(b))), 8388608.0f + c);
}

// Q8_0 (d, 32 int8 codes; 34-byte blocks, 2-byte aligned): ggml_blocks::chunk_q8_0's
// values from 9 word loads instead of 34 byte loads.
template <bool S = false>
__device__ __forceinline__ void chunk_q8_0_wide(const std::byte* b, float (&y)[32]) {
    uint32_t w[9];
    load_bytes<S>(b, 34, w);
    const float d = half_to_f32(w[0] & 0xFFFFu);
#pragma unroll
    for (int j = 0; j < 32; ++j) y[j] = small_uint_to_f32(byte_of(w, 2 + j) ^ 0x80u, 128.0f) * d;
}

// Q5_0 (d, 32 fifth bits, 16 bytes of nibbles; 22-byte blocks): chunk_q5_0's values
// from 6 word loads.
template <bool S = false>
__device__ __forceinline__ void chunk_q5_0_wide(const std::byte* b, float (&y)[32]) {
    uint32_t w[6];
    load_bytes<S>(b, 22, w);
    const float d = half_to_f32(w[0] & 0xFFFFu);
    const uint32_t qh = (w[0] >> 16) | (w[1] << 16);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        const uint32_t q = byte_of(w, 6 + j);
        y[j] = small_uint_to_f32((q & 0xFu) | (((qh >> j) & 1u) << 4), 16.0f) * d;
        y[j + 16] = small_uint_to_f32((q >> 4) | (((qh >> (j + 16)) & 1u) << 4), 16.0f) * d;
    }
}

// Q4_0 (d, 16 bytes of nibbles; 18-byte blocks): chunk_q4_0's values from 5 word loads
// instead of 17 byte loads (code - 8 exactly, as the host's int arithmetic gives it).
template <bool S = false>
__device__ __forceinline__ void chunk_q4_0_wide(const std::byte* b, float (&y)[32]) {
    uint32_t w[5];
    load_bytes<S>(b, 18, w);
    const float d = half_to_f32(w[0] & 0xFFFFu);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        const uint32_t q = byte_of(w, 2 + j);
        y[j] = small_uint_to_f32(q & 0xFu, 8.0f) * d;
        y[j + 16] = small_uint_to_f32(q >> 4, 8.0f) * d;
    }
}

// Q4_1 (d, m, 16 bytes of nibbles; 20-byte blocks): chunk_q4_1's values from 5 word loads.
template <bool S = false>
__device__ __forceinline__ void chunk_q4_1_wide(const std::byte* b, float (&y)[32]) {
    uint32_t w[5];
    load_bytes<S>(b, 20, w);
    const float d = half_to_f32(w[0] & 0xFFFFu), m = half_to_f32(w[0] >> 16);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        const uint32_t q = byte_of(w, 4 + j);
        y[j] = ggml_blocks::mul_add(small_uint_to_f32(q & 0xFu), d, m);
        y[j + 16] = ggml_blocks::mul_add(small_uint_to_f32(q >> 4), d, m);
    }
}

// Q5_1 (d, m, 32 fifth bits, 16 bytes of nibbles; 24-byte blocks): chunk_q5_1's values
// from 6 word loads.
template <bool S = false>
__device__ __forceinline__ void chunk_q5_1_wide(const std::byte* b, float (&y)[32]) {
    uint32_t w[6];
    load_bytes<S>(b, 24, w);
    const float d = half_to_f32(w[0] & 0xFFFFu), m = half_to_f32(w[0] >> 16);
    const uint32_t qh = w[1];
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        const uint32_t q = byte_of(w, 8 + j);
        y[j] = ggml_blocks::mul_add(small_uint_to_f32((q & 0xFu) | (((qh >> j) & 1u) << 4)), d, m);
        y[j + 16] = ggml_blocks::mul_add(small_uint_to_f32((q >> 4) | (((qh >> (j + 16)) & 1u) << 4)), d, m);
    }
}

// Q2_K (scales[16], qs[64], d, dmin; 84-byte blocks, 4-byte aligned): chunk_q2_k's
// values from 8 word loads of codes, one of d and dmin and a 2-byte load of the two
// runs' scales, instead of about 36 byte loads.
template <bool S = false>
__device__ __forceinline__ void chunk_q2_k_wide(const std::byte* b, int k, float (&y)[32]) {
    const int n = k / 4, shift = 2 * (k % 4);
    uint32_t q[8];
    load_bytes<S>(b + 16 + 32 * n, 32, q);
    const uint32_t sc = load2<S>(b + 8 * n + 2 * (k % 4));
    uint32_t dm[1];
    load_bytes<S>(b + 80, 4, dm);
    const float d = half_to_f32(dm[0] & 0xFFFFu), dmin = half_to_f32(dm[0] >> 16);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const uint32_t s = (sc >> (8 * half)) & 0xFFu;
        const float dl = d * small_uint_to_f32(s & 0xFu), ml = dmin * small_uint_to_f32(s >> 4);
#pragma unroll
        for (int l = 0; l < 16; ++l)
            y[16 * half + l] =
                ggml_blocks::mul_sub(dl, small_uint_to_f32((byte_of(q, 16 * half + l) >> shift) & 3u), ml);
    }
}

// Q3_K (hmask[32], qs[64], scales[12], d; 110-byte blocks, 2-byte aligned):
// chunk_q3_k's values from 8 word loads of third bits, 8 of codes, 3 of scales and a
// 2-byte load of d, instead of about 70 byte loads. A code less 4 where its third bit
// is clear: (code | third bit << 2) - 4, exactly.
template <bool S = false>
__device__ __forceinline__ void chunk_q3_k_wide(const std::byte* b, int k, float (&y)[32]) {
    const int n = k / 4, r = k % 4, shift = 2 * r, bit = 4 * n + r;
    uint32_t hm[8], q[8], sw[3];
    load_bytes<S>(b, 32, hm);
    load_bytes<S>(b + 32 + 32 * n, 32, q);
    load_bytes<S>(b + 96, 12, sw);
    const float d_all = half_to_f32(load2<S>(b + 108));
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        // Scale j (ggml_blocks::q3_k_scale); j is known at run time only, so its bytes
        // are picked from the words by shifts (an array indexed at run time would live
        // in local memory).
        const int j = 8 * n + 2 * r + half;
        const uint32_t b_lo = ((j % 8 < 4 ? sw[0] : sw[1]) >> (8 * (j % 4))) & 0xFFu;
        const uint32_t lo = j < 8 ? (b_lo & 0xFu) : (b_lo >> 4);
        const uint32_t hi = (sw[2] >> (8 * (j % 4) + 2 * (j / 4))) & 3u;
        const float dl = d_all * small_uint_to_f32(lo | (hi << 4), 32.0f);
#pragma unroll
        for (int l = 0; l < 16; ++l) {
            const int idx = l + 16 * half;
            const uint32_t code = ((byte_of(q, idx) >> shift) & 3u) | (((byte_of(hm, idx) >> bit) & 1u) << 2);
            y[idx] = dl * small_uint_to_f32(code, 4.0f);
        }
    }
}

// IQ4_NL and IQ4_XS: ggml_blocks::iq4_value's table as int8 in four words, an index's
// entry picked by a byte permute (where a local array indexed at run time would live
// in local memory), as a float exactly.
__device__ __forceinline__ float iq4_value_wide(uint32_t i) {
    // -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113
    const uint32_t lo = i < 8 ? 0xBFAD9881u : 0x26190D01u, hi = i < 8 ? 0xF6EADDCFu : 0x71594535u;
    return small_uint_to_f32((__byte_perm(lo, hi, i & 7u) & 0xFFu) ^ 0x80u, 128.0f);
}
// 16 bytes of indices in w[0 .. 3], as table values times d: the low nibbles first.
__device__ __forceinline__ void iq4_codes_wide(const uint32_t* w, float d, float (&y)[32]) {
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        const uint32_t q = (w[j / 4] >> (8 * (j % 4))) & 0xFFu;
        y[j] = d * iq4_value_wide(q & 0xFu);
        y[j + 16] = d * iq4_value_wide(q >> 4);
    }
}

// IQ4_NL (d, 16 bytes of indices; 18-byte blocks): chunk_iq4_nl's values from 5 word loads.
template <bool S = false>
__device__ __forceinline__ void chunk_iq4_nl_wide(const std::byte* b, float (&y)[32]) {
    uint32_t w[5];
    load_bytes<S>(b + 2, 16, w);
    iq4_codes_wide(w, half_to_f32(load2<S>(b)), y);
}

// IQ4_XS (d, scales_h, scales_l[4], qs[128]; 136-byte blocks, 8-byte aligned):
// chunk_iq4_xs's values from 2 word loads of the head and 4 of the chunk's indices.
template <bool S = false>
__device__ __forceinline__ void chunk_iq4_xs_wide(const std::byte* b, int k, float (&y)[32]) {
    uint32_t head[2], w[4];
    load_bytes<S>(b, 8, head);
    load_bytes<S>(b + 8 + 16 * k, 16, w);
    const float d = half_to_f32(head[0] & 0xFFFFu);
    const uint32_t scales_h = head[0] >> 16;
    const uint32_t ls = ((head[1] >> (8 * (k / 2) + 4 * (k % 2))) & 0xFu) | (((scales_h >> (2 * k)) & 3u) << 4);
    iq4_codes_wide(w, d * small_uint_to_f32(ls, 32.0f), y);
}

// Q6_K blocks (ql[128], qh[64], scales[16], d: 210 bytes) as the device holds them
// (kernels.h: ggml_device_row): each block's 192 bytes of codes (ql, qh) together at the
// row's start, 16-byte aligned, then every block's 18 bytes of scales and d. q: block
// b's codes, tail: its scales and d.
// q6_k_place: where byte j (0..209) of block b of a row of `blocks` blocks lies
// (ggml_device_row and the drawn weights write rows so).
struct Q6kAt {
    const std::byte *q, *tail;
};
__host__ __device__ inline int64_t q6_k_place(int64_t blocks, int64_t b, int j) {
    return j < 192 ? 192 * b + j : 192 * blocks + 18 * b + (j - 192);
}
__device__ __forceinline__ Q6kAt q6_k_at(const std::byte* wrow, int64_t cols, int64_t b) {
    return {wrow + q6_k_place(cols / 256, b, 0), wrow + q6_k_place(cols / 256, b, 192)};
}
// Chunk k's 32 bytes of low nibbles (ql) and of high bits (qh) as words.
template <bool S = false>
__device__ __forceinline__ void q6_k_words(const std::byte* q, int k, uint32_t (&lo)[8], uint32_t (&hi)[8]) {
    const int n = k / 4, K = k % 4;
    const std::byte* l = q + 64 * n + 32 * (K % 2);
    const std::byte* h = q + 128 + 32 * n;
    const uint4 l0 = load16<S>(l), l1 = load16<S>(l + 16), h0 = load16<S>(h), h1 = load16<S>(h + 16);
    const uint32_t lw[8] = {l0.x, l0.y, l0.z, l0.w, l1.x, l1.y, l1.z, l1.w};
    const uint32_t hw[8] = {h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w};
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        lo[i] = lw[i];
        hi[i] = hw[i];
    }
}

// chunk_q6_k's values, bit for bit, from four 16-byte loads of codes and two 2-byte loads.
template <bool S = false>
__device__ __forceinline__ void chunk_q6_k_wide(const std::byte* q, const std::byte* tail, int k, float (&y)[32]) {
    const int n = k / 4, K = k % 4, shift = 4 * (K / 2);
    uint32_t lo[8], hi[8];
    q6_k_words<S>(q, k, lo, hi);
    const uint32_t sc = load2<S>(tail + 8 * n + 2 * K);
    const float d = half_to_f32(load2<S>(tail + 16));
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const float s = d * float(int8_t(uint8_t(sc >> (8 * half))));
#pragma unroll
        for (int l = 16 * half; l < 16 * half + 16; ++l) {
            const uint32_t c = ((byte_of(lo, l) >> shift) & 0xFu) | (((byte_of(hi, l) >> (2 * K)) & 3u) << 4);
            y[l] = s * small_uint_to_f32(c, 32.0f);
        }
    }
}

// Q4_K and Q5_K blocks start with 16 bytes: d, dmin and 12 bytes of eight 6-bit scales
// and minimums (ggml_blocks::scale_min_k4). Chunk k's d * scale and dmin * minimum.
// Bytes 0..3 (head.y) hold scales 0..3 and, at bits 6 and 7, the top bits of scales
// 4..7; bytes 4..7 (head.z) the same for the minimums; bytes 8..11 (head.w) the low
// four bits of scales 4..7 and, at bits 4..7, of minimums 4..7. The 8 lanes of a block
// take its 8 chunks, so the two halves (k < 4, k >= 4) would diverge in every warp: all
// four of a half's scales and minimums are put together a word at a time, the same
// instructions for both halves, and byte k % 4 is taken from the words.
__device__ __forceinline__ void k4_scale_min(const uint4& head, int k, float& dl, float& ml) {
    const float d = half_to_f32(head.x & 0xFFFFu), dmin = half_to_f32(head.x >> 16);
    const bool upper = k >= 4;
    const int top = upper ? 2 : 0;  // the top two bits' shift to bits 4 and 5 (in place for k < 4)
    const uint32_t sc = ((upper ? head.w : head.y) & 0x0F0F0F0Fu) | ((head.y >> top) & 0x30303030u);
    const uint32_t m = ((upper ? head.w >> 4 : head.z) & 0x0F0F0F0Fu) | ((head.z >> top) & 0x30303030u);
    dl = d * code_of_byte(sc, k % 4, 0.0f);
    ml = dmin * code_of_byte(m, k % 4, 0.0f);
}

// ggml_blocks::chunk_q4_k's values, bit for bit, from three 16-byte loads instead of
// about 40 byte loads: the block's head and the chunk's 32 bytes of nibbles. A Q4_K
// block is 144 bytes and rows start 16-byte aligned, so every block does.
template <bool S = false>
__device__ __forceinline__ void chunk_q4_k_wide(const std::byte* b, int k, float (&y)[32]) {
    const uint4 head = load16<S>(b);
    const std::byte* q = b + 16 + 32 * (k / 2);
    const uint4 lo = load16<S>(q), hi = load16<S>(q + 16);
    float dl, ml;
    k4_scale_min(head, k, dl, ml);
    const uint32_t words[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
    const int shift = 4 * (k % 2);
#pragma unroll
    for (int l = 0; l < 32; ++l)
        y[l] = ggml_blocks::mul_sub(dl, small_uint_to_f32((words[l / 4] >> (8 * (l % 4) + shift)) & 0xFu), ml);
}

// ggml_blocks::chunk_q5_k's values, bit for bit, from five 16-byte loads: the head,
// the 32 bytes of fifth bits (chunk k's at bit k of each) and the chunk's 32 bytes of
// nibbles. A Q5_K block is 176 bytes, so every block is 16-byte aligned too.
template <bool S = false>
__device__ __forceinline__ void chunk_q5_k_wide(const std::byte* b, int k, float (&y)[32]) {
    const uint4 head = load16<S>(b), h0 = load16<S>(b + 16), h1 = load16<S>(b + 32);
    const std::byte* q = b + 48 + 32 * (k / 2);
    const uint4 lo = load16<S>(q), hi = load16<S>(q + 16);
    float dl, ml;
    k4_scale_min(head, k, dl, ml);
    const uint32_t words[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
    const uint32_t high[8] = {h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w};
    const int shift = 4 * (k % 2);
#pragma unroll
    for (int l = 0; l < 32; ++l) {
        const uint32_t code = ((words[l / 4] >> (8 * (l % 4) + shift)) & 0xFu) |
                              (((high[l / 4] >> (8 * (l % 4) + k)) & 1u) << 4);
        y[l] = ggml_blocks::mul_sub(dl, small_uint_to_f32(code), ml);
    }
}

// Where chunk c of a row lies: its block's index, and k, the chunk's index in the block.
struct GgmlChunkAt {
    int64_t block;
    int k;
};
__device__ __forceinline__ GgmlChunkAt ggml_chunk_at(const DeviceMatrix& w, int64_t c) {
    const int shift = w.ggml_values == 256 ? 3 : 0;  // chunks per block: 8 or 1
    return {c >> shift, int(c & ((1 << shift) - 1))};
}

// Where chunk c's bytes lie: its block (Q6_K: the block's codes), Q6_K's scales and d
// (tail), and k, the chunk's index in its block; in a row in global memory
// (ggml_block_at) or in a warp's copy of part of one (ggml_staged_at).
struct GgmlBlockAt {
    const std::byte* block;
    const std::byte* tail;
    int k;
};
// Chunk c of the row at wrow (global memory, the device's layout: kernels.h,
// ggml_device_row).
__device__ __forceinline__ GgmlBlockAt ggml_block_at(const DeviceMatrix& w, const std::byte* wrow, int64_t c) {
    const GgmlChunkAt at = ggml_chunk_at(w, c);
    if (w.ggml_type == ggml_blocks::k_type_q6_k) {
        const Q6kAt q6 = q6_k_at(wrow, w.cols, at.block);
        return {q6.q, q6.tail, at.k};
    }
    return {wrow + at.block * w.ggml_bytes, nullptr, at.k};
}

// Values [32 c, 32 c + 32) of a row of GGUF blocks (DeviceDtype::Ggml): the values
// ggml_blocks::decode_chunk gives (those ggml_dequantize gives the CPU), every type
// through its *_wide version above, the same bits from fewer, wider loads. The byte
// decoders are not compiled in: their arrays indexed at run time gave every kernel
// with this path a stack frame, and more registers. at: the chunk's bytes
// (ggml_block_at, or with S ggml_staged_at). Blocks hold 32 or 256 values, so a chunk
// never straddles two.
template <bool S = false>
__device__ __forceinline__ void ggml_chunk_from(uint32_t type, const GgmlBlockAt& at, float (&y)[32]) {
    const std::byte* block = at.block;
    const int k = at.k;
    switch (type) {
    case ggml_blocks::k_type_q4_k: chunk_q4_k_wide<S>(block, k, y); break;
    case ggml_blocks::k_type_q5_k: chunk_q5_k_wide<S>(block, k, y); break;
    case ggml_blocks::k_type_q6_k: chunk_q6_k_wide<S>(block, at.tail, k, y); break;
    case ggml_blocks::k_type_q5_0: chunk_q5_0_wide<S>(block, y); break;
    case ggml_blocks::k_type_q8_0: chunk_q8_0_wide<S>(block, y); break;
    case ggml_blocks::k_type_q4_0: chunk_q4_0_wide<S>(block, y); break;
    case ggml_blocks::k_type_q4_1: chunk_q4_1_wide<S>(block, y); break;
    case ggml_blocks::k_type_q5_1: chunk_q5_1_wide<S>(block, y); break;
    case ggml_blocks::k_type_q2_k: chunk_q2_k_wide<S>(block, k, y); break;
    case ggml_blocks::k_type_q3_k: chunk_q3_k_wide<S>(block, k, y); break;
    case ggml_blocks::k_type_iq4_nl: chunk_iq4_nl_wide<S>(block, y); break;
    case ggml_blocks::k_type_iq4_xs: chunk_iq4_xs_wide<S>(block, k, y); break;
    default:  // not a block type (device_weights uploads none such): NaN, loudly wrong
#pragma unroll
        for (int l = 0; l < 32; ++l) y[l] = __int_as_float(0x7FC00000);
    }
}
// The same for chunk c of the row at wrow (global memory).
__device__ __forceinline__ void ggml_chunk(const DeviceMatrix& w, const std::byte* wrow, int64_t c, float (&y)[32]) {
    ggml_chunk_from(w.ggml_type, ggml_block_at(w, wrow, c), y);
}

// The fast mode's form of a chunk (DeviceMatrix::ggml_fast): value l is s[h] * q[l] +
// o[h] (h = l / 16, the chunk's two runs of 16), the codes q floats that hold the
// block's codes exactly, so that a row's sum over the chunk is s[0] * (q . x)[0, 16) +
// s[1] * (q . x)[16, 32) + o[0] * sum x[0, 16) + o[1] * sum x[16, 32): one
// multiply-add a value instead of the decode's multiply and add (rounded apart, for
// the CPU's bits) and the product's multiply-add. Codes below 128 are taken biased,
// as 1 + code / 128 (a byte permute of 0x80 | code into the mantissa of 1.0: no
// arithmetic at all), the bias moved into the scale and offset: value = s * (code - c)
// + o = (128 s) (1 + code / 128) + (o - (128 + c) s). Not the CPU's bits: the products
// are sums in another order and the decoded values are never rounded; within fp32
// rounding of the same sums' terms (the bias's included).
struct GgmlCodes {
    float q[32];
    float s[2], o[2];
};

// Codes 4 i .. 4 i + 3 of q from the bytes of word (byte b: code 4 i + b), less c.
__device__ __forceinline__ void codes_of_word(uint32_t word, int i, float c, float (&q)[32]) {
#pragma unroll
    for (int b = 0; b < 4; ++b) q[4 * i + b] = code_of_byte(word, b, c);
}
// Codes 4 i .. 4 i + 3 of q from the bytes of word (each below 128), biased: 1 + code / 128.
__device__ __forceinline__ void biased_codes_of_word(uint32_t word, int i, float (&q)[32]) {
    word |= 0x80808080u;  // the exponent's lowest bit (or-ed with the caller's mask: one instruction)
#pragma unroll
    for (int b = 0; b < 4; ++b)
        q[4 * i + b] = __uint_as_float(__byte_perm(word, 0x3F000000u, 0x7044u | (uint32_t(b) << 8)));
}
// Run h's scale and offset for biased codes of value = s * (code - c) + o.
__device__ __forceinline__ void biased_run(GgmlCodes& g, int h, float s, float o, float c) {
    g.s[h] = 128.0f * s;
    g.o[h] = fmaf(-(128.0f + c), s, o);
}
__device__ __forceinline__ void biased_runs(GgmlCodes& g, float s, float o, float c) {
    biased_run(g, 0, s, o, c);
    biased_run(g, 1, s, o, c);
}
// Bits 0 .. 3 of v to bit 4 of bytes 0 .. 3 (the multiplier's four shifted copies of the
// nibble land each bit i at 4 + 8 i and the rest at distinct bits, so nothing carries).
__device__ __forceinline__ uint32_t nibble_to_byte_bit4(uint32_t v) { return ((v & 0xFu) * 0x02040810u) & 0x10101010u; }

// A chunk's codes as eight words of bytes (value l at byte l % 4 of word l / 4), from
// chunk_*_wide's loads, as the fast form (GgmlCodes, through biased_codes_of_word) and
// the int8 form (GgmlInt8, as they are) take them; each returns what else its block's
// scales need.
// Q4_K: the nibbles at bit 4 (k % 2) of the chunk's 32 bytes; returns the block's head
// (d, dmin, the scales and minimums: k4_scale_min).
template <bool S = false>
__device__ __forceinline__ uint4 q4_k_code_words(const std::byte* b, int k, uint32_t (&q)[8]) {
    const uint4 head = load16<S>(b);
    const std::byte* p = b + 16 + 32 * (k / 2);
    const uint4 lo = load16<S>(p), hi = load16<S>(p + 16);
    const uint32_t words[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
    const int shift = 4 * (k % 2);
#pragma unroll
    for (int i = 0; i < 8; ++i) q[i] = (words[i] >> shift) & 0x0F0F0F0Fu;
    return head;
}
// Q5_K: Q4_K's nibbles with bit k of each byte of qh as the fifth bit; returns the head.
template <bool S = false>
__device__ __forceinline__ uint4 q5_k_code_words(const std::byte* b, int k, uint32_t (&q)[8]) {
    const uint4 head = load16<S>(b), h0 = load16<S>(b + 16), h1 = load16<S>(b + 32);
    const std::byte* p = b + 48 + 32 * (k / 2);
    const uint4 lo = load16<S>(p), hi = load16<S>(p + 16);
    const uint32_t words[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
    const uint32_t high[8] = {h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w};
    const int shift = 4 * (k % 2);
#pragma unroll
    for (int i = 0; i < 8; ++i) q[i] = ((words[i] >> shift) & 0x0F0F0F0Fu) | (((high[i] >> k) & 0x01010101u) << 4);
    return head;
}
// Q6_K: codes 0 .. 63. The high bits 2 K, 2 K + 1 of each byte of qh go to bits 4 and 5
// by one rotation of the word (right by 2 K - 4, mod 32); what wraps around lands outside
// the mask.
template <bool S = false>
__device__ __forceinline__ void q6_k_code_words(const std::byte* qb, int k, uint32_t (&q)[8]) {
    const int K = k % 4, shift = 4 * (K / 2), rot = (2 * K + 28) & 31;
    uint32_t lo[8], hi[8];
    q6_k_words<S>(qb, k, lo, hi);
#pragma unroll
    for (int i = 0; i < 8; ++i) q[i] = ((lo[i] >> shift) & 0x0F0F0F0Fu) | (__funnelshift_r(hi[i], hi[i], rot) & 0x30303030u);
}
// Q4_0: the low nibbles of the 16 bytes first (the block's d: its first two bytes).
template <bool S = false>
__device__ __forceinline__ void q4_0_code_words(const std::byte* b, uint32_t (&q)[8]) {
    uint32_t w[4];
    load_bytes<S>(b + 2, 16, w);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        q[i] = w[i] & 0x0F0F0F0Fu;
        q[4 + i] = (w[i] >> 4) & 0x0F0F0F0Fu;
    }
}
// Q4_1: as Q4_0's after d and m; returns the block's first word (d, m).
template <bool S = false>
__device__ __forceinline__ uint32_t q4_1_code_words(const std::byte* b, uint32_t (&q)[8]) {
    uint32_t w[5];
    load_bytes<S>(b, 20, w);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        q[i] = w[1 + i] & 0x0F0F0F0Fu;
        q[4 + i] = (w[1 + i] >> 4) & 0x0F0F0F0Fu;
    }
    return w[0];
}
// Q5_0: element j's fifth bit at bit j of qh; returns the block's first word (d below).
template <bool S = false>
__device__ __forceinline__ uint32_t q5_0_code_words(const std::byte* b, uint32_t (&q)[8]) {
    uint32_t w[6];
    load_bytes<S>(b, 22, w);
    const uint32_t qh = (w[0] >> 16) | (w[1] << 16);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const uint32_t qs = (w[1 + i] >> 16) | (w[2 + i] << 16);  // bytes 6 + 4 i .. 9 + 4 i
        q[i] = (qs & 0x0F0F0F0Fu) | nibble_to_byte_bit4(qh >> (4 * i));
        q[4 + i] = ((qs >> 4) & 0x0F0F0F0Fu) | nibble_to_byte_bit4(qh >> (16 + 4 * i));
    }
    return w[0];
}
// Q5_1: as Q5_0's after d, m and qh; returns the block's first word (d, m).
template <bool S = false>
__device__ __forceinline__ uint32_t q5_1_code_words(const std::byte* b, uint32_t (&q)[8]) {
    uint32_t w[6];
    load_bytes<S>(b, 24, w);
    const uint32_t qh = w[1];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        q[i] = (w[2 + i] & 0x0F0F0F0Fu) | nibble_to_byte_bit4(qh >> (4 * i));
        q[4 + i] = ((w[2 + i] >> 4) & 0x0F0F0F0Fu) | nibble_to_byte_bit4(qh >> (16 + 4 * i));
    }
    return w[0];
}
// Q8_0: the signed codes as they are; returns the block's first word (d below).
template <bool S = false>
__device__ __forceinline__ uint32_t q8_0_code_words(const std::byte* b, uint32_t (&q)[8]) {
    uint32_t w[9];
    load_bytes<S>(b, 34, w);
#pragma unroll
    for (int i = 0; i < 8; ++i) q[i] = (w[i] >> 16) | (w[i + 1] << 16);
    return w[0];
}
// The fast form's codes of eight words (each byte below 128), biased.
__device__ __forceinline__ void biased_codes_of_words(const uint32_t (&w)[8], float (&q)[32]) {
#pragma unroll
    for (int i = 0; i < 8; ++i) biased_codes_of_word(w[i], i, q);
}

// Q4_K: value = dl * code - ml.
template <bool S = false>
__device__ __forceinline__ void codes_q4_k(const std::byte* b, int k, GgmlCodes& c) {
    uint32_t q[8];
    const uint4 head = q4_k_code_words<S>(b, k, q);
    float dl, ml;
    k4_scale_min(head, k, dl, ml);
    biased_codes_of_words(q, c.q);
    biased_runs(c, dl, -ml, 0.0f);
}

// Q5_K: value = dl * code - ml.
template <bool S = false>
__device__ __forceinline__ void codes_q5_k(const std::byte* b, int k, GgmlCodes& c) {
    uint32_t q[8];
    const uint4 head = q5_k_code_words<S>(b, k, q);
    float dl, ml;
    k4_scale_min(head, k, dl, ml);
    biased_codes_of_words(q, c.q);
    biased_runs(c, dl, -ml, 0.0f);
}

// Q6_K: value = (d * scale) * (code - 32), a scale a run.
template <bool S = false>
__device__ __forceinline__ void codes_q6_k(const std::byte* qb, const std::byte* tail, int k, GgmlCodes& c) {
    uint32_t q[8];
    q6_k_code_words<S>(qb, k, q);
    const uint32_t sc = load2<S>(tail + 8 * (k / 4) + 2 * (k % 4));
    const float d = half_to_f32(load2<S>(tail + 16));
    biased_codes_of_words(q, c.q);
#pragma unroll
    for (int h = 0; h < 2; ++h) biased_run(c, h, d * float(int8_t(uint8_t(sc >> (8 * h)))), 0.0f, 32.0f);
}

// Q4_0: value = d * (code - 8).
template <bool S = false>
__device__ __forceinline__ void codes_q4_0(const std::byte* b, GgmlCodes& c) {
    uint32_t q[8];
    q4_0_code_words<S>(b, q);
    biased_codes_of_words(q, c.q);
    biased_runs(c, half_to_f32(load2<S>(b)), 0.0f, 8.0f);
}

// Q4_1: value = d * code + m.
template <bool S = false>
__device__ __forceinline__ void codes_q4_1(const std::byte* b, GgmlCodes& c) {
    uint32_t q[8];
    const uint32_t dm = q4_1_code_words<S>(b, q);
    biased_codes_of_words(q, c.q);
    biased_runs(c, half_to_f32(dm & 0xFFFFu), half_to_f32(dm >> 16), 0.0f);
}

// Q5_0: value = d * (code - 16).
template <bool S = false>
__device__ __forceinline__ void codes_q5_0(const std::byte* b, GgmlCodes& c) {
    uint32_t q[8];
    const uint32_t w0 = q5_0_code_words<S>(b, q);
    biased_codes_of_words(q, c.q);
    biased_runs(c, half_to_f32(w0 & 0xFFFFu), 0.0f, 16.0f);
}

// Q5_1: value = d * code + m.
template <bool S = false>
__device__ __forceinline__ void codes_q5_1(const std::byte* b, GgmlCodes& c) {
    uint32_t q[8];
    const uint32_t dm = q5_1_code_words<S>(b, q);
    biased_codes_of_words(q, c.q);
    biased_runs(c, half_to_f32(dm & 0xFFFFu), half_to_f32(dm >> 16), 0.0f);
}

// Q8_0: value = d * code, the int8 codes offset by 128 (a byte's top bit flipped) and
// taken less 128 exactly (codes of 8 bits leave no room for the bias).
template <bool S = false>
__device__ __forceinline__ void codes_q8_0(const std::byte* b, GgmlCodes& c) {
    uint32_t q[8];
    const uint32_t w0 = q8_0_code_words<S>(b, q);
#pragma unroll
    for (int i = 0; i < 8; ++i) codes_of_word(q[i] ^ 0x80808080u, i, 128.0f, c.q);
    c.s[0] = c.s[1] = half_to_f32(w0 & 0xFFFFu);
    c.o[0] = c.o[1] = 0.0f;
}

// A chunk as codes (ggml_chunk_from's blocks). Q2_K, Q3_K and the IQ4 types have no
// form here: their values, as codes of scale 1.
template <bool S = false>
__device__ __forceinline__ void ggml_codes_from(uint32_t type, const GgmlBlockAt& at, GgmlCodes& out) {
    const std::byte* block = at.block;
    const int k = at.k;
    switch (type) {
    case ggml_blocks::k_type_q4_k: codes_q4_k<S>(block, k, out); return;
    case ggml_blocks::k_type_q5_k: codes_q5_k<S>(block, k, out); return;
    case ggml_blocks::k_type_q6_k: codes_q6_k<S>(block, at.tail, k, out); return;
    case ggml_blocks::k_type_q5_0: codes_q5_0<S>(block, out); return;
    case ggml_blocks::k_type_q8_0: codes_q8_0<S>(block, out); return;
    case ggml_blocks::k_type_q4_0: codes_q4_0<S>(block, out); return;
    case ggml_blocks::k_type_q4_1: codes_q4_1<S>(block, out); return;
    case ggml_blocks::k_type_q5_1: codes_q5_1<S>(block, out); return;
    case ggml_blocks::k_type_q2_k: chunk_q2_k_wide<S>(block, k, out.q); break;
    case ggml_blocks::k_type_q3_k: chunk_q3_k_wide<S>(block, k, out.q); break;
    case ggml_blocks::k_type_iq4_nl: chunk_iq4_nl_wide<S>(block, out.q); break;
    case ggml_blocks::k_type_iq4_xs: chunk_iq4_xs_wide<S>(block, k, out.q); break;
    default:
#pragma unroll
        for (int l = 0; l < 32; ++l) out.q[l] = __int_as_float(0x7FC00000);
    }
    out.s[0] = out.s[1] = 1.0f;
    out.o[0] = out.o[1] = 0.0f;
}
// The same for chunk c of the row at wrow (global memory).
__device__ __forceinline__ void ggml_codes(const DeviceMatrix& w, const std::byte* wrow, int64_t c, GgmlCodes& out) {
    ggml_codes_from(w.ggml_type, ggml_block_at(w, wrow, c), out);
}

// One token's sum over a chunk in the fast form: x the chunk's activations, xsum
// their two runs' sums.
__device__ __forceinline__ float codes_dot(const GgmlCodes& c, const float (&x)[32], const float (&xsum)[2]) {
    float a0 = 0.0f, a1 = 0.0f;
#pragma unroll
    for (int l = 0; l < 16; ++l) {
        a0 = fmaf(c.q[l], x[l], a0);
        a1 = fmaf(c.q[16 + l], x[16 + l], a1);
    }
    float t = c.s[0] * a0;
    t = fmaf(c.s[1], a1, t);
    t = fmaf(c.o[0], xsum[0], t);
    return fmaf(c.o[1], xsum[1], t);
}

// The int8 form of a chunk (DeviceMatrix::ggml_int8, the model's int8 activations:
// cpu/ggml_int8.h): the chunk's 32 codes as bytes in eight words (value l at byte l % 4
// of word l / 4; codes below 128 or Q8_0's signed ones, so every byte reads as a signed
// int8), and per run of 16 an integer scale and minimum, so that value l is
// dw * sc[h] * (code[l] - bias) + dm * mn[h] (h = l / 16), the same integers and floats
// as the CPU's unpacked blocks (ggml_int8_kernels.inc: dw * sc * code + dm * mn; Q6_K's
// and the signed 32-value types' offsets are taken here as a bias on the codes, which
// the run's sum of activation codes takes out exactly). A token's part of the row is
// then sc[0] * (codes . q)[0, 16) + sc[1] * (codes . q)[16, 32), less the bias times
// the runs' sums of q, in integers (dp4a), times dw dx, plus mn . (the runs' sums of q)
// times dm dx: two multiply-adds in fp32 a chunk instead of 32.
struct GgmlInt8 {
    uint32_t q[8];
    int sc[2], mn[2];
    int bias;
    float dw, dm;
};
// The block types that have an int8 form here: those of the CPU's int8 products but
// Q2_K, Q3_K and the IQ4 types (their products keep the fast or exact sums).
__host__ __device__ constexpr bool ggml_int8_type(uint32_t type) {
    return type == ggml_blocks::k_type_q4_0 || type == ggml_blocks::k_type_q4_1 ||
           type == ggml_blocks::k_type_q5_0 || type == ggml_blocks::k_type_q5_1 ||
           type == ggml_blocks::k_type_q8_0 || type == ggml_blocks::k_type_q4_k ||
           type == ggml_blocks::k_type_q5_k || type == ggml_blocks::k_type_q6_k;
}
// Whether a launch of w (and w2, the other matrix of a fused pair) takes the int8 form:
// both marked, their blocks of one size (the activations' blocks are the weights').
inline bool ggml_int8_launch(const DeviceMatrix& w, const DeviceMatrix* w2 = nullptr) {
    return w.dtype == DeviceDtype::Ggml && w.ggml_int8 &&
           (!w2 || (w2->dtype == DeviceDtype::Ggml && w2->ggml_int8 && w2->ggml_values == w.ggml_values));
}
__device__ __forceinline__ void int8_runs(GgmlInt8& c, int sc, int mn, int bias, float dw, float dm) {
    c.sc[0] = c.sc[1] = sc;
    c.mn[0] = c.mn[1] = mn;
    c.bias = bias;
    c.dw = dw;
    c.dm = dm;
}
// Q4_K and Q5_K's chunk k's 6-bit scale and minimum as integers (k4_scale_min's words).
__device__ __forceinline__ void k4_scale_min_ints(const uint4& head, int k, int& sc, int& m) {
    const bool upper = k >= 4;
    const int top = upper ? 2 : 0;
    const uint32_t s = ((upper ? head.w : head.y) & 0x0F0F0F0Fu) | ((head.y >> top) & 0x30303030u);
    const uint32_t n = ((upper ? head.w >> 4 : head.z) & 0x0F0F0F0Fu) | ((head.z >> top) & 0x30303030u);
    sc = int((s >> (8 * (k % 4))) & 0xFFu);
    m = int((n >> (8 * (k % 4))) & 0xFFu);
}
// Q4_K: dw = d, dm = -dmin, a scale and minimum for the chunk.
template <bool S = false>
__device__ __forceinline__ void int8_q4_k(const std::byte* b, int k, GgmlInt8& c) {
    const uint4 head = q4_k_code_words<S>(b, k, c.q);
    int sc, m;
    k4_scale_min_ints(head, k, sc, m);
    int8_runs(c, sc, m, 0, half_to_f32(head.x & 0xFFFFu), -half_to_f32(head.x >> 16));
}
// Q5_K: as Q4_K.
template <bool S = false>
__device__ __forceinline__ void int8_q5_k(const std::byte* b, int k, GgmlInt8& c) {
    const uint4 head = q5_k_code_words<S>(b, k, c.q);
    int sc, m;
    k4_scale_min_ints(head, k, sc, m);
    int8_runs(c, sc, m, 0, half_to_f32(head.x & 0xFFFFu), -half_to_f32(head.x >> 16));
}
// Q6_K: codes 0..63 with a bias of 32, an int8 scale a run.
template <bool S = false>
__device__ __forceinline__ void int8_q6_k(const std::byte* qb, const std::byte* tail, int k, GgmlInt8& c) {
    q6_k_code_words<S>(qb, k, c.q);
    const uint32_t sc = load2<S>(tail + 8 * (k / 4) + 2 * (k % 4));
    int8_runs(c, 0, 0, 32, half_to_f32(load2<S>(tail + 16)), 0.0f);
    c.sc[0] = int(int8_t(uint8_t(sc)));
    c.sc[1] = int(int8_t(uint8_t(sc >> 8)));
}
// Q4_0: codes less 8.
template <bool S = false>
__device__ __forceinline__ void int8_q4_0(const std::byte* b, GgmlInt8& c) {
    q4_0_code_words<S>(b, c.q);
    int8_runs(c, 1, 0, 8, half_to_f32(load2<S>(b)), 0.0f);
}
// Q4_1: d * code + m.
template <bool S = false>
__device__ __forceinline__ void int8_q4_1(const std::byte* b, GgmlInt8& c) {
    const uint32_t dm = q4_1_code_words<S>(b, c.q);
    int8_runs(c, 1, 1, 0, half_to_f32(dm & 0xFFFFu), half_to_f32(dm >> 16));
}
// Q5_0: codes less 16.
template <bool S = false>
__device__ __forceinline__ void int8_q5_0(const std::byte* b, GgmlInt8& c) {
    const uint32_t w0 = q5_0_code_words<S>(b, c.q);
    int8_runs(c, 1, 0, 16, half_to_f32(w0 & 0xFFFFu), 0.0f);
}
// Q5_1: d * code + m.
template <bool S = false>
__device__ __forceinline__ void int8_q5_1(const std::byte* b, GgmlInt8& c) {
    const uint32_t dm = q5_1_code_words<S>(b, c.q);
    int8_runs(c, 1, 1, 0, half_to_f32(dm & 0xFFFFu), half_to_f32(dm >> 16));
}
// Q8_0: the signed codes as they are.
template <bool S = false>
__device__ __forceinline__ void int8_q8_0(const std::byte* b, GgmlInt8& c) {
    const uint32_t w0 = q8_0_code_words<S>(b, c.q);
    int8_runs(c, 1, 0, 0, half_to_f32(w0 & 0xFFFFu), 0.0f);
}
// A chunk in the int8 form (a type ggml_int8_type takes; others: codes 0 and dw NaN).
template <bool S = false>
__device__ __forceinline__ void ggml_int8_from(uint32_t type, const GgmlBlockAt& at, GgmlInt8& out) {
    const std::byte* block = at.block;
    const int k = at.k;
    switch (type) {
    case ggml_blocks::k_type_q4_k: int8_q4_k<S>(block, k, out); return;
    case ggml_blocks::k_type_q5_k: int8_q5_k<S>(block, k, out); return;
    case ggml_blocks::k_type_q6_k: int8_q6_k<S>(at.block, at.tail, k, out); return;
    case ggml_blocks::k_type_q5_0: int8_q5_0<S>(block, out); return;
    case ggml_blocks::k_type_q8_0: int8_q8_0<S>(block, out); return;
    case ggml_blocks::k_type_q4_0: int8_q4_0<S>(block, out); return;
    case ggml_blocks::k_type_q4_1: int8_q4_1<S>(block, out); return;
    case ggml_blocks::k_type_q5_1: int8_q5_1<S>(block, out); return;
    default:
#pragma unroll
        for (int i = 0; i < 8; ++i) out.q[i] = 0u;
        int8_runs(out, 0, 0, 0, __int_as_float(0x7FC00000), 0.0f);
    }
}
// A token's activations for one chunk in the int8 form, as the copies stage them: the
// 32 codes q (round(x / d), nearest even, |q| <= 127), the scale d of the activations'
// block (32 or 256 values, the weights' block: cpu::quantise_int8's, the same bits) and
// the sums of q over the chunk's two runs of 16.
struct Int8X {
    uint32_t q[8];
    float d;
    int sum[2];
};
// One token's part of a row over a chunk in the int8 form (see GgmlInt8): the integer
// sums exact (at most 63 * 2 * 16 * 128 * 127 in magnitude), then two multiply-adds.
__device__ __forceinline__ float int8_dot(const GgmlInt8& c, const Int8X& x, float acc) {
    int s0 = 0, s1 = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        s0 = __dp4a(int(c.q[i]), int(x.q[i]), s0);
        s1 = __dp4a(int(c.q[4 + i]), int(x.q[4 + i]), s1);
    }
    const int dot = c.sc[0] * (s0 - c.bias * x.sum[0]) + c.sc[1] * (s1 - c.bias * x.sum[1]);
    const int mins = c.mn[0] * x.sum[0] + c.mn[1] * x.sum[1];
    acc = fmaf(float(dot), __fmul_rn(c.dw, x.d), acc);
    return fmaf(float(mins), __fmul_rn(c.dm, x.d), acc);
}
// Values v .. v + 7 of a token's activations (8 at a lane) quantised into the staged
// chunk at `chunk` (k_ggml_x_stride floats: bytes 0..31 the codes, 32 the block's d, 36
// and 40 the runs' sums): the block's amax over its qblock / 8 lanes (xor shuffles:
// every lane of the warp calls this, the same qblock), the codes as cpu::quantise_int8
// takes them (127 / amax and amax / 127 IEEE-rounded, the products rounded to nearest
// even), a block holding a NaN or an infinity d = NaN and codes 0. `in`: the lane's
// values lie in the tile (whole runs of lanes: the callers' tiles hold whole blocks).
__device__ __forceinline__ void quantise_int8_lane(const float (&f)[8], bool in, int qblock, std::byte* chunk,
                                                   int offset) {
    float amax = 0.0f;
    int finite = 1;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
        finite &= int((__float_as_uint(f[e]) & 0x7F800000u) != 0x7F800000u);  // not NaN or infinite
        amax = fmaxf(amax, fabsf(f[e]));
    }
    for (int o = 1; o < qblock / 8; o <<= 1) {
        amax = fmaxf(amax, __shfl_xor_sync(k_full_mask, amax, o));
        finite &= __shfl_xor_sync(k_full_mask, finite, o);
    }
    const float inv = amax > 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
    uint32_t words[2] = {0u, 0u};
    int sum = 0;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
        const int q = finite ? max(-127, min(127, __float2int_rn(__fmul_rn(f[e], inv)))) : 0;
        sum += q;
        words[e / 4] |= (uint32_t(q) & 0xFFu) << (8 * (e % 4));
    }
    sum += __shfl_xor_sync(k_full_mask, sum, 1);  // a run of 16: two lanes
    if (!in) return;
#ifdef CETUS_CUDA_EMU
    if (reinterpret_cast<uintptr_t>(chunk) % 16 != 0 || offset % 8 != 0) __trap();
#endif
    *reinterpret_cast<uint2*>(chunk + offset) = make_uint2(words[0], words[1]);
    if (offset % 16 == 0) reinterpret_cast<int*>(chunk + 36)[offset / 16] = sum;
    if (offset == 0)
        *reinterpret_cast<float*>(chunk + 32) = finite ? __fdiv_rn(amax, 127.0f) : __int_as_float(0x7FC00000);
}
// The staged activations of a chunk (quantise_int8_lane's layout).
__device__ __forceinline__ void load_int8_x(const std::byte* chunk, Int8X& x) {
    const uint4 a = *reinterpret_cast<const uint4*>(chunk), b = *reinterpret_cast<const uint4*>(chunk + 16);
    const uint4 m = *reinterpret_cast<const uint4*>(chunk + 32);
    x.q[0] = a.x, x.q[1] = a.y, x.q[2] = a.z, x.q[3] = a.w;
    x.q[4] = b.x, x.q[5] = b.y, x.q[6] = b.z, x.q[7] = b.w;
    x.d = __uint_as_float(m.x);
    x.sum[0] = int(m.y);
    x.sum[1] = int(m.z);
}

__device__ __forceinline__ const std::byte* ggml_row(const DeviceMatrix& w, int64_t row) {
    return static_cast<const std::byte*>(w.data) + row * w.ld;
}

// GGUF rows against activations staged in shared memory. A lane decodes whole
// 32-value chunks of a row (chunks lane, lane + 32, ...; with kSplit > 1 warps on a
// row, part * 32 + lane, stepping 32 * kSplit), so loading its activations straight
// from global memory would put the 32 lanes of every load on 32 different cache lines:
// 128 bytes of fp32 activations per lane and chunk against 18 bytes of a 4.5-bit
// chunk, more first-level cache work per row than the row's bytes take from memory.
// Instead the block copies each tile (32 * kSplit chunks) of several tokens'
// activations into shared memory with coalesced loads, four values a thread (16-byte
// loads where the token's row is 16-byte aligned), to chunk q at q * k_ggml_x_stride
// floats: the pad of 4 keeps both the copy's 16-byte stores and each lane's 16-byte
// loads of its chunk free of bank conflicts, and holds the fast mode's sums of the
// chunk's activations. Each lane loads its chunk's values for k_ggml_group tokens at a
// time into registers, and uses them for the R rows its warp computes (R > 1 divides
// the shared-memory reads per row by R; with one row and more than k_ggml_group
// tokens, its chunk is decoded once for all of them). In exact mode every row's sums
// are taken as a plain warp-per-row product takes them (chunk after chunk in the
// lane's order, value after value, token by token); in the fast mode (GgmlCodes) a
// chunk's sums in codes_dot's order, chunk after chunk; either way a row's bits depend
// neither on R nor on how the tokens are staged and grouped.
inline constexpr int k_ggml_x_stride = 36;
// ggml_rows_dot's forms of the sums (kForm): the CPU's exact ones, the fast mode's
// (GgmlCodes) and the int8 form's (GgmlInt8).
inline constexpr int k_ggml_exact = 0, k_ggml_fast = 1, k_ggml_int8 = 2;
inline constexpr int k_ggml_group = 2;  // tokens in registers at a time
// Dynamic shared memory for the copies: at most k_ggml_stage_budget bytes (within the
// 48 KiB a launch gets without opting in, beside the kernels' own few static bytes).
inline constexpr int64_t k_ggml_stage_budget = 40 * 1024;
// Rows per warp (kAcc: matrices read per row, 2 for an MLP's gate and up): 2 for one
// token (decode), and for two (a one-draft MTP verify) of one matrix, with whole warps
// on a row; otherwise 1. Registers bound it: the experts' gate and up of 2 tokens over 2
// rows took 202 a thread on sm_90 (one block of 256 threads a multiprocessor).
template <int NT, int kSplit, int kAcc>
inline constexpr int k_ggml_rows_per_warp = kSplit == 1 && (NT == 1 || (NT == 2 && kAcc == 1)) ? 2 : 1;

// Chunks a copy holds per token: a tile, or the whole row where it is shorter.
__host__ __device__ constexpr int64_t ggml_stage_chunks(int k_split, int64_t n_chunks) {
    return n_chunks < 1 ? 1 : n_chunks < 32 * k_split ? n_chunks : 32 * k_split;
}
// Tokens per copy: all nt where they fit the budget, else a multiple of k_ggml_group.
__host__ __device__ constexpr int ggml_stage_tokens(int nt, int k_split, int64_t n_chunks) {
    const int64_t fit = k_ggml_stage_budget / (ggml_stage_chunks(k_split, n_chunks) * k_ggml_x_stride * 4);
    const int group = nt < k_ggml_group ? nt : k_ggml_group;
    return fit >= nt ? nt : fit < group ? group : int(fit / group * group);
}
// The dynamic shared memory a launch of rows of cols values needs for nt tokens.
__host__ __device__ constexpr size_t ggml_stage_bytes(int nt, int k_split, int64_t cols) {
    const int64_t n_chunks = cols / 32;
    return size_t(ggml_stage_tokens(nt, k_split, n_chunks) * ggml_stage_chunks(k_split, n_chunks) *
                  k_ggml_x_stride * 4);
}

// The decode products' copies of their weight rows (ggml_rows_dot with kStageW, an
// experiment switched on with CETUS_CUDA_GGUF_STAGE=1: DeviceMatrix::ggml_stage). A
// lane decoding its chunk straight from global memory has one chunk's loads in flight
// when it waits (ptxas places them next to their use, as in the BF16 products before
// their copies were staged), so a warp's row is a chain of memory round trips; the GGUF
// decode products read at 5-17 % of the DRAM's peak on an H200 (2026-12-04). Staged, a
// warp copies the bytes of its 32 chunks of each of its rows at once into its own slot
// of shared memory (cp.async, coalesced 16-byte pieces: the copies cannot be sunk to
// their use), they travel while the block copies the activations, and the lanes then
// decode from the copy with the same decoders (the same values, the same sums).
//
// Chunks [cw, cw + 32) of a row take two ranges of its bytes: part a (the blocks; for
// Q6_K their codes) and part t (Q6_K's scales and d), each copied in whole 16-byte
// pieces of the row from the one holding its first byte (rows start 16-byte aligned
// and are padded to 16 bytes, so no piece leaves the row), part t's pieces after part
// a's in the slot; every address keeps its offset modulo 16, so the decoders' aligned
// loads stay aligned. Chunks past the row's end are left out.
struct GgmlStageRange {
    int64_t b0 = 0;          // the first block
    int64_t a0 = 0, t0 = 0;  // each part's first piece: its offset in the row
    int na = 0, nt = 0;      // pieces of each part
    int lead_a = 0, lead_t = 0;  // the part's first byte in its first piece
};
__host__ __device__ inline GgmlStageRange ggml_stage_range(uint32_t type, int32_t values, int32_t bytes, int64_t cols,
                                                            int64_t cw) {
    GgmlStageRange r;
    const int64_t n_chunks = cols / 32;
    if (cw >= n_chunks || (values != 32 && values != 256)) return r;
    const int shift = values == 256 ? 3 : 0;  // chunks a block: 8 or 1 (as ggml_chunk_at; no division)
    const int64_t end = cw + 32 < n_chunks ? cw + 32 : n_chunks;
    const bool q6 = type == ggml_blocks::k_type_q6_k;
    const int64_t stride = q6 ? 192 : bytes;  // part a's bytes a block
    r.b0 = cw >> shift;
    const int64_t b1 = (end + (int64_t(1) << shift) - 1) >> shift;
    const auto part = [](int64_t begin, int64_t stop, int64_t& first, int& lead, int& pieces) {
        first = begin & ~int64_t(15);
        lead = int(begin - first);
        pieces = int((((stop + 15) & ~int64_t(15)) - first) >> 4);
    };
    part(stride * r.b0, stride * b1, r.a0, r.lead_a, r.na);
    if (q6) {
        const int64_t tails = 192 * (cols / 256);
        part(tails + 18 * r.b0, tails + 18 * b1, r.t0, r.lead_t, r.nt);
    }
    return r;
}
// A warp's slot for one row of a block type: the pieces its 32 chunks take with their
// ends (part a's bytes over 16, rounded up, plus one, and the same for part t), in
// bytes; 0 for a shape with no slot. Q4_K 592, Q6_K 880, Q5_0 720, Q8_0 1,104 (32 blocks
// of 34 bytes: the most of any type, k_ggml_slot_bytes).
__host__ __device__ inline int ggml_slot_bytes(uint32_t type, int32_t values, int32_t bytes) {
    if ((values != 32 && values != 256) || bytes <= 0) return 0;
    const bool q6 = type == ggml_blocks::k_type_q6_k;
    const int64_t blocks = 32 / (values / 32);  // 32 chunks: 32 blocks of 32 values or 4 of 256
    const int64_t a = (q6 ? 192 : bytes) * blocks, t = q6 ? 18 * blocks : 0;
    return int(((a + 15) / 16 + 1 + (q6 ? (t + 15) / 16 + 1 : 0)) * 16);
}
inline constexpr int k_ggml_slot_bytes = 69 * 16;
// Whether a matrix's copies fit a slot (every block type of ggml_blocks.h does; the
// launchers ask before they stage).
__host__ __device__ inline bool ggml_stage_fits(uint32_t type, int32_t values, int32_t bytes) {
    const int slot = ggml_slot_bytes(type, values, bytes);
    return slot > 0 && slot <= k_ggml_slot_bytes;
}
// The most tokens a staged launch takes: decode, and a verify batch of one draft (MTP's,
// or a looked-up one); larger batches read the rows as before.
inline constexpr int k_ggml_stage_max_tokens = 2;
// The dynamic shared memory a launch that stages its weights may take: what a launch
// gets without opting in (48 KiB), less 1 KiB for the kernels' own static arrays.
inline constexpr size_t k_ggml_launch_smem = 47 * 1024;
// A staged launch's weight slots (the same in every block): `bytes` a slot (the largest
// ggml_slot_bytes of the launch's matrices) and `buffers` tiles of copies in flight: 1
// (CETUS_CUDA_GGUF_STAGE=1: a warp copies a tile's bytes, waits, decodes, then copies the
// next) or 2 (CETUS_CUDA_GGUF_STAGE=2: the next tile's copies are issued before the
// current tile is waited for, into the other half, so a warp always has a tile on its
// way while it decodes; for V2-Lite's rows of 2,048 and 1,408 values, two tiles, the
// whole row at once).
struct GgmlSlots {
    int32_t bytes = k_ggml_slot_bytes;  // (with one buffer always k_ggml_slot_bytes)
    int32_t buffers = 1;
};
// The weight slots' shared memory, after ggml_stage_bytes': a slot for each of a
// warp's rows (kAcc matrices times R rows) and buffer in each of k_row_dot_warps warps.
__host__ __device__ constexpr size_t ggml_weight_stage_bytes(int k_acc, int r, GgmlSlots s = {}) {
    return size_t(8) * k_acc * r * size_t(s.buffers) * size_t(s.bytes);
}
// The launchers' choice of a staged launch's slots: the buffers asked for (1 or 2,
// DeviceMatrix::ggml_stage; two only where a row is more than one tile), slots of
// slot_bytes (the launch's largest ggml_slot_bytes) with two and of k_ggml_slot_bytes with
// one (ggml_rows_dot's constant), as many as fit k_ggml_launch_smem beside x_bytes of
// activations; buffers 0 where none fit (the launch reads the rows).
inline GgmlSlots ggml_fit_slots(int ask, bool tiles, int slot_bytes, size_t x_bytes, int k_acc, int r) {
    GgmlSlots s{slot_bytes, tiles && ask >= 2 ? 2 : 1};
    for (; s.buffers > 0; --s.buffers) {
        if (s.buffers == 1) s.bytes = k_ggml_slot_bytes;
        if (x_bytes + ggml_weight_stage_bytes(k_acc, r, s) <= k_ggml_launch_smem) break;
    }
    return s;
}

// Issues the copies of range rg of row `row` of w into slot (the whole warp, the same
// range); the caller commits them.
__device__ __forceinline__ void ggml_stage_copy(const DeviceMatrix& w, int64_t row, const GgmlStageRange& rg,
                                                std::byte* slot, int slot_bytes) {
#ifdef CETUS_CUDA_EMU
    if ((rg.na + rg.nt) * 16 > slot_bytes) __trap();
#endif
    const std::byte* wrow = ggml_row(w, row);
    for (int p = threadIdx.x & 31; p < rg.na + rg.nt; p += 32)
        __pipeline_memcpy_async(slot + 16 * p, p < rg.na ? wrow + rg.a0 + 16 * p : wrow + rg.t0 + 16 * (p - rg.na), 16);
}

// Where chunk c (in range rg) lies in a slot that ggml_stage_copy filled.
__device__ __forceinline__ GgmlBlockAt ggml_staged_at(const DeviceMatrix& w, const GgmlStageRange& rg,
                                                      const std::byte* slot, int64_t c) {
    const GgmlChunkAt at = ggml_chunk_at(w, c);
    const int64_t b = at.block - rg.b0;
    if (w.ggml_type == ggml_blocks::k_type_q6_k)
        return {slot + rg.lead_a + 192 * b, slot + 16 * rg.na + rg.lead_t + 18 * b, at.k};
    return {slot + rg.lead_a + b * w.ggml_bytes, nullptr, at.k};
}

// acc[m][i][j] += row (m, i) . xs[j] over this lane's chunks of the row, for the first
// n (<= NT) tokens, then summed over the warp (every lane gets the sums). Called by
// every thread of the block with the same cols, xs and n (the copies need the whole
// block; a warp with no rows still takes part). visit(m, i, f) calls f(matrix, row)
// for row (m, i) of this warp, or nothing where it has none; every row has cols values.
// stage: ggml_stage_bytes(NT, kSplit, cols) of shared memory, 16-byte aligned.
// kForm: k_ggml_exact, or k_ggml_fast: the fast mode's sums (GgmlCodes), the copies
// also staging each chunk's two runs' sums of activations in its pad (floats 32 and 33),
// each taken as ((x0 + x1) + x2) + x3 by a thread of four values and added over its
// run's four threads by shuffles; or k_ggml_int8: the int8 form's (GgmlInt8), the copies
// quantising each token's activations per block of qblock values (the weights' block,
// the same in every matrix of the launch; quantise_int8_lane) into each chunk's slot,
// and each lane adding its chunks' two multiply-adds (int8_dot) in its order. A token's
// sums are the same whatever NT, R, kAcc and the grouping.
// kStageW: the warp's rows staged (ggml_stage_copy; stage then also holds
// ggml_weight_stage_bytes(kAcc, R, st) after ggml_stage_bytes(NT, kSplit, cols), and the
// block has at most k_row_dot_warps warps; st: the launch's slots, GgmlSlots, whose
// buffers kStageW is: 1 or 2, compiled apart so that a tile at a time keeps its own
// registers; one buffer's slots keep the constant size k_ggml_slot_bytes), the same sums.
template <int NT, int R, int kAcc, int kSplit, int kForm, int kStageW, class Visit>
__device__ __forceinline__ void ggml_rows_dot(Visit visit, int64_t cols, const float* const (&xs)[NT], int n,
                                              float (&acc)[kAcc][R][NT], int part, float* stage,
                                              GgmlSlots st = {}, int qblock = 256) {
    constexpr bool kFast = kForm == k_ggml_fast, kInt8 = kForm == k_ggml_int8;
    constexpr int kTile = 32 * kSplit;
    constexpr int G = NT < k_ggml_group ? NT : k_ggml_group;
    // What a lane holds of its chunk of a row: values, codes and scales, or the int8 form.
    using Chunk = std::conditional_t<kInt8, GgmlInt8, std::conditional_t<kFast, GgmlCodes, float[32]>>;
    const int lane = threadIdx.x & 31;
    const int64_t n_chunks = cols / 32;
    const int64_t stride = ggml_stage_chunks(kSplit, n_chunks) * k_ggml_x_stride;  // floats per staged token
    // The warp's weight slots (kStageW): row (m, i)'s in buffer b at slot (b * kAcc + m) * R + i.
    const int slot_bytes = kStageW == 2 ? st.bytes : k_ggml_slot_bytes;
    std::byte* const slots = kStageW ? reinterpret_cast<std::byte*>(stage) + ggml_stage_bytes(NT, kSplit, cols) +
                                           size_t(threadIdx.x >> 5) * kAcc * R * kStageW * slot_bytes
                                     : nullptr;
    const auto slot_of = [&](int b, int m, int i) { return slots + ((b * kAcc + m) * R + i) * slot_bytes; };
    int64_t cw = 0;  // the tile's first chunk of this warp's (kStageW)
    int buf = 0;     // the tile's buffer (kStageW)
    bool ahead = false;  // the next tile's copies issued (kStageW, two buffers)
    // Chunk c of row (m, i): from the row, or from its slot.
    const auto decode = [&](int m, int i, const DeviceMatrix& w, int64_t row, int64_t c, Chunk& out) {
        if constexpr (kStageW) {
            const GgmlBlockAt at = ggml_staged_at(w, ggml_stage_range(w.ggml_type, w.ggml_values, w.ggml_bytes, w.cols, cw),
                                                  slot_of(buf, m, i), c);
            if constexpr (kInt8) ggml_int8_from<true>(w.ggml_type, at, out);
            else if constexpr (kFast) ggml_codes_from<true>(w.ggml_type, at, out);
            else ggml_chunk_from<true>(w.ggml_type, at, out);
        } else if constexpr (kInt8) {
            ggml_int8_from(w.ggml_type, ggml_block_at(w, ggml_row(w, row), c), out);
        } else if constexpr (kFast) {
            ggml_codes(w, ggml_row(w, row), c, out);
        } else {
            ggml_chunk(w, ggml_row(w, row), c, out);
        }
    };
    // Waits for the tile's copies (every lane's: each lane reads pieces others copied);
    // the next tile's, issued after them, may stay in flight.
    const auto landed = [&] {
        if constexpr (kStageW) {
            if (ahead) __pipeline_wait_prior(1);
            else __pipeline_wait_prior(0);
            __syncwarp();
        }
    };
    // Issues the copies of the warp's rows' bytes of the tile at chunk c0 into buffer b
    // and commits them as one group.
    const auto issue = [&](int64_t c0, int b) {
        if constexpr (kStageW) {
            const int64_t first = c0 + part * 32;
            __syncwarp();  // every lane is done with the buffer's previous copies
#pragma unroll
            for (int m = 0; m < kAcc; ++m)
#pragma unroll
                for (int i = 0; i < R; ++i)
                    visit(m, i, [&](const DeviceMatrix& w, int64_t row) {
                        ggml_stage_copy(w, row, ggml_stage_range(w.ggml_type, w.ggml_values, w.ggml_bytes, w.cols, first),
                                        slot_of(b, m, i), slot_bytes);
                    });
            __pipeline_commit();
        }
    };
    if (part == 0) {  // the warp's rows asked for whole (DeviceMatrix::l2_prefetch)
#pragma unroll
        for (int m = 0; m < kAcc; ++m)
#pragma unroll
            for (int i = 0; i < R; ++i)
                visit(m, i, [&](const DeviceMatrix& w, int64_t row) {
                    if (w.l2_prefetch) prefetch_l2(ggml_row(w, row), w.ld);
                });
    }
    const int per_copy = ggml_stage_tokens(NT, kSplit, n_chunks);                   // a multiple of G, or NT
    if constexpr (kStageW == 2) issue(0, 0);  // (the first tile's bytes, before the loop)
    for (int64_t c0 = 0, tile = 0; c0 < n_chunks; c0 += kTile, ++tile) {
        const int tile_values = 32 * int(min(int64_t(kTile), n_chunks - c0));
        const int64_t c = c0 + part * 32 + lane;  // this lane's chunk
        if constexpr (kStageW) {  // the warp's rows' bytes of the tile on their way (and the next tile's)
            cw = c0 + part * 32;
            if constexpr (kStageW == 2) {
                buf = int(tile & 1);
                ahead = c0 + kTile < n_chunks;
                if (ahead) issue(c0 + kTile, buf ^ 1);  // (the other buffer: the last tile's, decoded)
            } else {
                issue(c0, 0);
            }
        }
        // One row and more tokens than a group: its chunk decoded once for all of them.
        constexpr bool kOnce = R == 1 && NT > G;
        Chunk wone[kOnce ? kAcc : 1];
        bool have[kAcc] = {};
        if constexpr (kOnce) {
            landed();
            if (c < n_chunks) {
#pragma unroll
                for (int m = 0; m < kAcc; ++m) {
                    visit(m, 0, [&](const DeviceMatrix& w, int64_t row) {
                        decode(m, 0, w, row, c, wone[m]);
                        have[m] = true;
                    });
                }
            }
        }
#pragma unroll
        for (int j0 = 0; j0 < NT; j0 += G) {
            if (j0 >= n) break;  // (the same in the whole block, as per_copy)
            const int slot = j0 % per_copy;
            if (slot == 0) {  // copy tokens [j0, j0 + per_copy) of the tile
                __syncthreads();  // every lane is done with the previous copy
                const int copy = min(per_copy, n - j0);
#pragma unroll
                for (int t = 0; j0 + t < NT; ++t) {  // (xs indexed by constants: no local memory)
                    if (t >= copy) break;
                    const float* x = xs[j0 + t] + c0 * 32;
                    float* dst = stage + t * stride;
                    const bool vec = reinterpret_cast<uintptr_t>(x) % 16 == 0;
                    if constexpr (kInt8) {
                        // Eight values a thread, a warp's 256 at a time (whole blocks of
                        // the activations: tiles start at multiples of 1,024 values and
                        // hold whole blocks of the weights'), quantised into the chunk.
                        for (int v0 = 8 * (threadIdx.x & ~31); v0 < tile_values; v0 += 8 * blockDim.x) {
                            const int v = v0 + 8 * lane;
                            const bool in = v < tile_values;
                            float f[8] = {};
                            if (in) {
                                if (vec) {
                                    const float4 a = *reinterpret_cast<const float4*>(x + v);
                                    const float4 b = *reinterpret_cast<const float4*>(x + v + 4);
                                    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w;
                                    f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
                                } else {
#pragma unroll
                                    for (int e = 0; e < 8; ++e) f[e] = x[v + e];
                                }
                            }
                            quantise_int8_lane(f, in, qblock,
                                               reinterpret_cast<std::byte*>(dst + (v / 32) * k_ggml_x_stride), v % 32);
                        }
                    } else {
                        // Four values a thread, a warp's 128 at a time (the loop the same in
                        // the whole warp, for the shuffles).
                        for (int v0 = 4 * (threadIdx.x & ~31); v0 < tile_values; v0 += 4 * blockDim.x) {
                            const int v = v0 + 4 * lane;
                            float4 f = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                            float* to = dst + (v / 32) * k_ggml_x_stride + v % 32;
                            if (v < tile_values) {
#ifdef CETUS_CUDA_EMU
                                if ((vec && reinterpret_cast<uintptr_t>(x + v) % 16 != 0) ||
                                    reinterpret_cast<uintptr_t>(to) % 16 != 0)
                                    __trap();  // (a GPU's 16-byte accesses must be aligned)
#endif
                                f = vec ? *reinterpret_cast<const float4*>(x + v)
                                        : make_float4(x[v], x[v + 1], x[v + 2], x[v + 3]);
                                *reinterpret_cast<float4*>(to) = f;
                            }
                            if constexpr (kFast) {
                                float sum = ((f.x + f.y) + f.z) + f.w;
                                sum += __shfl_xor_sync(k_full_mask, sum, 1);
                                sum += __shfl_xor_sync(k_full_mask, sum, 2);
                                if (v < tile_values && lane % 4 == 0)
                                    dst[(v / 32) * k_ggml_x_stride + 32 + v % 32 / 16] = sum;
                            }
                        }
                    }
                }
                __syncthreads();
            }
            if constexpr (!kOnce) {
                if (j0 == 0) landed();  // (after the activations' copy: the weights traveled meanwhile)
            }
            if (c >= n_chunks) continue;
            float xv[G][32];
            float xsum[G][2];
            Int8X xq[kInt8 ? G : 1];
#pragma unroll
            for (int g = 0; g < G; ++g) {
                if (j0 + g < n) {
                    const float* at = stage + (slot + g) * stride + (part * 32 + lane) * k_ggml_x_stride;
                    if constexpr (kInt8) {
                        load_int8_x(reinterpret_cast<const std::byte*>(at), xq[g]);
                    } else {
                        const float4* src = reinterpret_cast<const float4*>(at);
#pragma unroll
                        for (int q = 0; q < 8; ++q) {
                            const float4 v = src[q];
                            xv[g][4 * q] = v.x;
                            xv[g][4 * q + 1] = v.y;
                            xv[g][4 * q + 2] = v.z;
                            xv[g][4 * q + 3] = v.w;
                        }
                    }
                    if constexpr (kFast) {
                        const float2 s2 = *reinterpret_cast<const float2*>(at + 32);
                        xsum[g][0] = s2.x;
                        xsum[g][1] = s2.y;
                    }
                }
            }
            const auto take = [&](int m, int i, const Chunk& wf) {
#pragma unroll
                for (int g = 0; g < G; ++g) {
                    if (j0 + g < n) {
                        if constexpr (kInt8) {
                            acc[m][i][j0 + g] = int8_dot(wf, xq[g], acc[m][i][j0 + g]);
                        } else if constexpr (kFast) {
                            acc[m][i][j0 + g] += codes_dot(wf, xv[g], xsum[g]);
                        } else {
#pragma unroll
                            for (int l = 0; l < 32; ++l) acc[m][i][j0 + g] = fmaf(wf[l], xv[g][l], acc[m][i][j0 + g]);
                        }
                    }
                }
            };
#pragma unroll
            for (int m = 0; m < kAcc; ++m) {
                if constexpr (kOnce) {
                    if (have[m]) take(m, 0, wone[m]);
                } else {
#pragma unroll
                    for (int i = 0; i < R; ++i) {
                        visit(m, i, [&](const DeviceMatrix& w, int64_t row) {
                            Chunk wf;
                            decode(m, i, w, row, c, wf);
                            take(m, i, wf);
                        });
                    }
                }
            }
        }
    }
    warp_sum_each(reinterpret_cast<float (&)[kAcc * R * NT]>(acc));
}

// batches rounds of asynchronous copies, two in flight: issue(b) issues and commits
// batch b's copies (into buffer b & 1), the next one before the current one is waited
// for; take(b) reads batch b once it has landed. A thread waits only for its own
// copies: each reads back only the slots it copied into.
template <class Issue, class Take>
__device__ __forceinline__ void double_buffered(int64_t batches, Issue&& issue, Take&& take) {
    if (batches > 0) issue(0);
    for (int64_t b = 0; b < batches; ++b) {
        if (b + 1 < batches) {
            issue(b + 1);
            __pipeline_wait_prior(1);  // batch b has landed; b + 1 stays in flight
        } else {
            __pipeline_wait_prior(0);
        }
        take(b);
    }
}

// Warps per block that warp_rows_dot's staging serves (its callers' blocks: 256 threads).
constexpr int k_row_dot_warps = 8;
static_assert(ggml_weight_stage_bytes(1, 1) == size_t(k_row_dot_warps) * k_ggml_slot_bytes,
              "a weight slot for each warp of the decode products' blocks");

// acc[r][j] = sum_c W_r[c] * xs[j][c] for R weight rows of cols values each (wrows[r]:
// the row's first 16-byte piece; srows[r]: an FP8 row's block scales) and the first n
// (1 <= n <= NT) tokens, called by a whole warp of a block of at most k_row_dot_warps
// warps; every lane gets the sums. Each lane reads 16-byte pieces of every row (lane,
// lane + 32, ...), so the warp streams 512 contiguous bytes of a row per step and each
// weight byte is read once for all NT tokens; one load of a token's activations serves
// all R rows. kXVec: every xs[j] is 16-byte aligned. Each row's multiply-adds keep the
// order of one row alone (ascending pieces), so the sums depend neither on R nor on
// how the pieces are loaded. With kSplit > 1 the rows are shared by kSplit warps
// (part = 0 .. kSplit - 1): this warp takes pieces part * 32 + lane, stepping
// 32 * kSplit, and returns its partial sums.
//
// How the weights are loaded decides the speed of every decode product: a load that
// the warp waits for holds up the loads after it (in-order issue), so the bytes in
// flight are what a warp has issued before its first wait. Loaded into registers, the
// compiler (ptxas, CUDA 13) places each piece's multiply-adds right after its load
// whatever the source order: one or two loads in flight a lane, a memory round trip
// per piece (the H200 profile of 2026-12-04: the routed experts' products at 28-56 %
// of the DRAM's peak). kAsync: a lane copies kUnroll pieces of each row at a time
// into its own slots of shared memory (cp.async), two batches in flight (the next one
// issued before the current one is waited for), then reads them back; the copies
// cannot be moved past their wait. Otherwise the batches are loaded into registers.
// The staging is held to 16 KB a block (kUnroll * R = 2): sm_86/89 have 100 KB of
// shared memory an SM, and 16 KB still lets 2 KB a warp be in flight, four times
// what the profile's 56 % took.
template <DeviceDtype DT, int NT, bool kXVec, int R, int kUnroll, int kSplit = 1, bool kAsync = false>
__device__ __forceinline__ void warp_rows_dot(const uint4* const (&wrows)[R], const float* const (&srows)[R],
                                              int64_t cols, const float* const (&xs)[NT], int n,
                                              float (&acc)[R][NT], int part = 0) {
    static_assert(DT != DeviceDtype::Ggml, "GGUF rows take ggml_rows_dot");
    constexpr int kVec = k_vec_elems<DT>;
    const int lane = threadIdx.x & 31, first = part * 32 + lane;
    const int64_t n_full = cols / kVec, step = 32 * kSplit;
    // One piece of every row: decoded (FP8 times its block scale), times each token's
    // activations, added in ascending piece order.
    const auto take = [&](const uint4 (&raw)[R], int64_t v) {
        float wf[R][kVec];
#pragma unroll
        for (int r = 0; r < R; ++r) decode_piece<DT>(raw[r], srows[r], v, wf[r]);
#pragma unroll
        for (int j = 0; j < NT; ++j) {
            if (j == 0 || j < n) {  // (n >= 1: the weights are used unconditionally)
                float xv[kVec];
                load_x<kVec, kXVec>(xs[j] + v * kVec, xv);
#pragma unroll
                for (int r = 0; r < R; ++r)
#pragma unroll
                    for (int i = 0; i < kVec; ++i) acc[r][j] = fmaf(wf[r][i], xv[i], acc[r][j]);
            }
        }
    };
    int64_t v = first;
    if constexpr (kAsync) {
        __shared__ __align__(16) uint4 stage[k_row_dot_warps][2][kUnroll * R][32];
        static_assert(sizeof(stage) <= 16 * 1024, "the staging must leave room for other blocks on sm_86/89");
        uint4 (&mine)[2][kUnroll * R][32] = stage[threadIdx.x >> 5];
        const int64_t count = first < n_full ? (n_full - 1 - first) / step + 1 : 0;  // the lane's pieces
        const int64_t batches = (count + kUnroll - 1) / kUnroll;                     // the last one may be short
        const auto issue = [&](int64_t b) {
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) {
                if (b * kUnroll + u < count) {
#pragma unroll
                    for (int r = 0; r < R; ++r)
                        __pipeline_memcpy_async(&mine[b & 1][u * R + r][lane], wrows[r] + first + (b * kUnroll + u) * step,
                                                16);
                }
            }
            __pipeline_commit();
        };
        double_buffered(batches, issue, [&](int64_t b) {
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) {
                if (b * kUnroll + u < count) {
                    uint4 raw[R];
#pragma unroll
                    for (int r = 0; r < R; ++r) raw[r] = mine[b & 1][u * R + r][lane];
                    take(raw, first + (b * kUnroll + u) * step);
                }
            }
        });
        v = n_full;
    } else {
        for (; v + (kUnroll - 1) * step < n_full; v += kUnroll * step) {
            uint4 raw[kUnroll][R];
#pragma unroll
            for (int u = 0; u < kUnroll; ++u)
#pragma unroll
                for (int r = 0; r < R; ++r) raw[u][r] = __ldg(wrows[r] + v + u * step);
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) take(raw[u], v + u * step);
        }
    }
    for (; v < n_full; v += step) {  // the pieces left: fewer than a batch
        uint4 raw[R];
#pragma unroll
        for (int r = 0; r < R; ++r) raw[r] = __ldg(wrows[r] + v);
        take(raw, v);
    }
    // The rows' last partial piece: the padding up to ld is loaded but never used.
    const int64_t rem = cols - n_full * kVec;
    if (rem > 0 && first == int(n_full % (32 * kSplit))) {
        const int64_t c0 = n_full * kVec;
#pragma unroll
        for (int r = 0; r < R; ++r) {
            float wf[kVec];
            load_piece<DT>(wrows[r], srows[r], n_full, wf);
#pragma unroll
            for (int j = 0; j < NT; ++j) {
                if (j < n) {
#pragma unroll
                    for (int i = 0; i < kVec; ++i)
                        if (i < rem) acc[r][j] = fmaf(wf[i], xs[j][c0 + i], acc[r][j]);
                }
            }
        }
    }
    warp_sum_each(reinterpret_cast<float (&)[R * NT]>(acc));
}

// Row `row` of w: its first 16-byte piece and (FP8) its block scales, for warp_rows_dot.
template <DeviceDtype DT>
__device__ __forceinline__ const uint4* row_pieces(const DeviceMatrix& w, int64_t row) {
    return reinterpret_cast<const uint4*>(static_cast<const char*>(w.data) + row * w.ld * int64_t(k_elem_bytes<DT>));
}
template <DeviceDtype DT>
__device__ __forceinline__ const float* row_scales(const DeviceMatrix& w, int64_t row) {
    return DT == DeviceDtype::F8_E4M3 ? w.scale_inv + (row / 128) * w.scale_cols : nullptr;
}

// acc[j] = sum_c W[row, c] * xs[j][c]: warp_rows_dot for one row, 2 pieces a staged
// batch or 4 a batch in registers.
template <DeviceDtype DT, int NT, bool kXVec, int kSplit = 1, bool kAsync = false>
__device__ __forceinline__ void warp_row_dot(const DeviceMatrix& w, int64_t row, const float* const (&xs)[NT], int n,
                                             float (&acc)[NT], int part = 0) {
    const uint4* const wrows[1] = {row_pieces<DT>(w, row)};
    const float* const srows[1] = {row_scales<DT>(w, row)};
    warp_rows_dot<DT, NT, kXVec, 1, kAsync ? 2 : 4, kSplit, kAsync>(wrows, srows, w.cols, xs, n,
                                                                    reinterpret_cast<float (&)[1][NT]>(acc), part);
}

// acc[0][j] = sum_c W1[row1, c] * xs[j][c] and acc[1][j] the same for W2's row2 (an
// MLP's gate and up rows, of the same width and dtype): one staged pass, a piece of
// each row a batch, each token's activations loaded once for both.
template <DeviceDtype DT, int NT, bool kXVec, int kSplit = 1>
__device__ __forceinline__ void warp_row_pair_dot(const DeviceMatrix& w1, int64_t row1, const DeviceMatrix& w2,
                                                  int64_t row2, const float* const (&xs)[NT], int n,
                                                  float (&acc)[2][NT], int part = 0) {
    const uint4* const wrows[2] = {row_pieces<DT>(w1, row1), row_pieces<DT>(w2, row2)};
    const float* const srows[2] = {row_scales<DT>(w1, row1), row_scales<DT>(w2, row2)};
    warp_rows_dot<DT, NT, kXVec, 2, 1, kSplit, true>(wrows, srows, w1.cols, xs, n, acc, part);
}

}  // namespace cetus::cuda
