// The routed experts of a prefill chunk on the tensor cores: the same products
// as moe_experts.cu (silu(gate x) * up x, then down, for every pair of every
// active expert) as grouped bf16 GEMMs with fp32 accumulation, the precision of
// the cuBLAS products of the dense layers (gemm.cpp): activations rounded to
// bf16, FP8 weights times their block scale rounded to bf16.
//
// One block computes a tile of 64 pairs of one expert by 64 weight rows. The
// tiles come from launch_group_pairs (ExpertPairs::tiles), so nothing goes back
// to the host; blocks past the tile count return at once. Each step stages 32
// columns of the gathered activation rows and of the weight rows in shared
// memory as bf16 (two buffers: the next step's global loads are in flight while
// the warps multiply), four warps each multiply 32 pairs by 32 rows with WMMA
// 16x16x16 fragments, and the tile goes out through shared memory to the pairs'
// own rows. An expert's weights are read once per 64 of its pairs.
#include "cuda_util.h"
#include "device_math.cuh"
#include "moe_experts.cuh"

#include <mma.h>

#include <algorithm>

namespace cetus::cuda {
namespace {

using namespace nvcuda;

constexpr int kBM = int(k_expert_tile_pairs);  // pairs per tile
constexpr int kBN = 64;                        // weight rows per tile
constexpr int kBK = 32;                        // columns per step
constexpr int kLds = kBK + 8;  // bf16 row stride of the staged operands: 80 bytes, fragments 32-byte aligned
constexpr int kLdc = kBN + 4;  // fp32 row stride of the output tile
constexpr int kThreads = 128;  // 4 warps as 2 x 2, each 32 pairs x 32 rows
constexpr int kAPieces = kBM * kBK / 4 / kThreads;  // float4 activation pieces per thread per step

template <int kMats>
struct Stage {
    __nv_bfloat16 a[kBM][kLds];
    __nv_bfloat16 b[kMats][kBN][kLds];
};

template <int kMats>
union TileSmem {
    Stage<kMats> stage[2];
    float c[kBM][kLdc];
};

// 16-byte weight pieces per thread per step of one matrix.
template <DeviceDtype DT>
inline constexpr int k_b_pieces = kBN * (kBK / k_vec_elems<DT>) / kThreads;

// This thread's activation pieces of the step at column k0, zero past cols and for empty rows.
template <bool kXVec>
__device__ __forceinline__ void load_a(const ExpertLaunch& a, const int (&src)[kBM], int64_t k0,
                                       float4 (&ra)[kAPieces]) {
#pragma unroll
    for (int i = 0; i < kAPieces; ++i) {
        const int idx = int(threadIdx.x) + i * kThreads, r = idx / (kBK / 4), c = (idx % (kBK / 4)) * 4;
        const int64_t col = k0 + c;
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (src[r] >= 0 && col < a.cols) {
            const float* p = a.x + int64_t(src[r]) * a.cols + col;
            if constexpr (kXVec) {
                v = *reinterpret_cast<const float4*>(p);  // cols % 4 == 0: the whole piece is inside
            } else {
                v.x = p[0];
                if (col + 1 < a.cols) v.y = p[1];
                if (col + 2 < a.cols) v.z = p[2];
                if (col + 3 < a.cols) v.w = p[3];
            }
        }
        ra[i] = v;
    }
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    return uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(lo))) |
           (uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16);
}

template <int kMats>
__device__ __forceinline__ void store_a(Stage<kMats>& st, const float4 (&ra)[kAPieces]) {
#pragma unroll
    for (int i = 0; i < kAPieces; ++i) {
        const int idx = int(threadIdx.x) + i * kThreads, r = idx / (kBK / 4), c = (idx % (kBK / 4)) * 4;
        *reinterpret_cast<uint2*>(&st.a[r][c]) = make_uint2(pack_bf16(ra[i].x, ra[i].y), pack_bf16(ra[i].z, ra[i].w));
    }
}

// This thread's raw weight pieces (and FP8 block scales) of the step at column k0.
template <DeviceDtype DT>
__device__ __forceinline__ void load_b(const DeviceMatrix& w, int64_t row0, int64_t k0, uint4 (&rb)[k_b_pieces<DT>],
                                       float (&rs)[k_b_pieces<DT>]) {
    constexpr int kVec = k_vec_elems<DT>, kPerRow = kBK / kVec;
#pragma unroll
    for (int i = 0; i < k_b_pieces<DT>; ++i) {
        const int idx = int(threadIdx.x) + i * kThreads, r = idx / kPerRow, piece = idx % kPerRow;
        const int64_t row = row0 + r, col = k0 + int64_t(piece) * kVec;
        rb[i] = make_uint4(0, 0, 0, 0);
        rs[i] = 0.0f;
        if (row < w.rows && col < w.cols) {
            // Rows are ld elements apart and 16-byte aligned; a piece past cols stays inside ld.
            rb[i] = __ldg(reinterpret_cast<const uint4*>(static_cast<const char*>(w.data) +
                                                         (row * w.ld + col) * int64_t(k_elem_bytes<DT>)));
            if constexpr (DT == DeviceDtype::F8_E4M3) rs[i] = w.scale_inv[(row / 128) * w.scale_cols + col / 128];
        }
    }
}

// The pieces as bf16 into matrix m's tile: BF16 as they are, FP8 times its scale
// rounded to bf16 (launch_dequant_fp8's values); columns past cols are zero.
template <DeviceDtype DT, int kMats>
__device__ __forceinline__ void store_b(Stage<kMats>& st, int m, int64_t k0, int64_t cols,
                                        const uint4 (&rb)[k_b_pieces<DT>], const float (&rs)[k_b_pieces<DT>]) {
    constexpr int kVec = k_vec_elems<DT>, kPerRow = kBK / kVec;
#pragma unroll
    for (int i = 0; i < k_b_pieces<DT>; ++i) {
        const int idx = int(threadIdx.x) + i * kThreads, r = idx / kPerRow, piece = idx % kPerRow;
        const int64_t col = k0 + int64_t(piece) * kVec;
        __nv_bfloat16* dst = &st.b[m][r][piece * kVec];
        if constexpr (DT == DeviceDtype::BF16) {
            if (col + kVec <= cols) {
                *reinterpret_cast<uint4*>(dst) = rb[i];
                continue;
            }
        }
        float f[kVec];
        decode16<DT>(rb[i], f);
        uint32_t packed[kVec / 2];
#pragma unroll
        for (int j = 0; j < kVec; j += 2) {
            float lo = f[j], hi = f[j + 1];
            if constexpr (DT == DeviceDtype::F8_E4M3) {
                lo *= rs[i];
                hi *= rs[i];
            }
            packed[j / 2] = pack_bf16(col + j < cols ? lo : 0.0f, col + j + 1 < cols ? hi : 0.0f);
        }
#pragma unroll
        for (int j = 0; j < kVec / 8; ++j)
            reinterpret_cast<uint4*>(dst)[j] = make_uint4(packed[4 * j], packed[4 * j + 1], packed[4 * j + 2],
                                                          packed[4 * j + 3]);
    }
}

template <DeviceDtype DT, bool kGateUp, bool kXVec>
__global__ void __launch_bounds__(kThreads) experts_mma_kernel(ExpertLaunch a) {
#if __CUDA_ARCH__ >= 800  // bf16 WMMA; the backend takes the fp32 kernel on older GPUs
    constexpr int kMats = kGateUp ? 2 : 1;
    if (int(blockIdx.y) >= *a.pairs.n_tiles) return;
    __shared__ __align__(128) unsigned char raw[sizeof(TileSmem<kMats>)];
    __shared__ int src[kBM];
    __shared__ int dst[kBM];
    TileSmem<kMats>& sm = *reinterpret_cast<TileSmem<kMats>*>(raw);

    const int e = a.pairs.tiles[2 * blockIdx.y], m0 = a.pairs.tiles[2 * blockIdx.y + 1];
    const int np = min(kBM, a.pairs.counts[e] - m0);
    const int64_t row0 = int64_t(blockIdx.x) * kBN;
    if (threadIdx.x < kBM) {
        const int r = int(threadIdx.x);
        const int p = r < np ? a.pairs.list[a.pairs.offsets[e] + m0 + r] : -1;
        dst[r] = p;
        src[r] = p < 0 ? -1 : kGateUp ? p / a.top_k : p;
    }
    __syncthreads();

    DeviceMatrix w[kMats];
    w[0] = a.first[e];
    if constexpr (kGateUp) w[1] = a.second[e];

    using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
    using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major>;
    using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;
    FragC acc[kMats][2][2];
#pragma unroll
    for (int m = 0; m < kMats; ++m)
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[m][i][j], 0.0f);

    const int warp = int(threadIdx.x) >> 5, wm = warp >> 1, wn = warp & 1;
    const int n_steps = int((a.cols + kBK - 1) / kBK);
    float4 ra[kAPieces];
    uint4 rb[kMats][k_b_pieces<DT>];
    float rs[kMats][k_b_pieces<DT>];

    load_a<kXVec>(a, src, 0, ra);
#pragma unroll
    for (int m = 0; m < kMats; ++m) load_b<DT>(w[m], row0, 0, rb[m], rs[m]);
    store_a(sm.stage[0], ra);
#pragma unroll
    for (int m = 0; m < kMats; ++m) store_b<DT>(sm.stage[0], m, 0, a.cols, rb[m], rs[m]);
    __syncthreads();

    for (int step = 0; step < n_steps; ++step) {
        const int cur = step & 1;
        const bool more = step + 1 < n_steps;
        const int64_t k_next = int64_t(step + 1) * kBK;
        if (more) {  // the next step's loads, in flight during this step's products
            load_a<kXVec>(a, src, k_next, ra);
#pragma unroll
            for (int m = 0; m < kMats; ++m) load_b<DT>(w[m], row0, k_next, rb[m], rs[m]);
        }
        const Stage<kMats>& st = sm.stage[cur];
#pragma unroll
        for (int kk = 0; kk < kBK; kk += 16) {
            FragA fa[2];
#pragma unroll
            for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], &st.a[wm * 32 + i * 16][kk], kLds);
#pragma unroll
            for (int m = 0; m < kMats; ++m) {
#pragma unroll
                for (int j = 0; j < 2; ++j) {
                    FragB fb;  // B(k, n) = W[row0 + n, k]: the weight rows read column-major
                    wmma::load_matrix_sync(fb, &st.b[m][wn * 32 + j * 16][kk], kLds);
#pragma unroll
                    for (int i = 0; i < 2; ++i) wmma::mma_sync(acc[m][i][j], fa[i], fb, acc[m][i][j]);
                }
            }
        }
        if (more) {  // the other buffer: every warp finished reading it before the last barrier
            store_a(sm.stage[cur ^ 1], ra);
#pragma unroll
            for (int m = 0; m < kMats; ++m) store_b<DT>(sm.stage[cur ^ 1], m, k_next, a.cols, rb[m], rs[m]);
        }
        __syncthreads();
    }

    // silu(gate) * up elementwise: accumulators of one type hold the same elements.
    if constexpr (kGateUp) {
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j)
#pragma unroll
                for (int t = 0; t < acc[0][i][j].num_elements; ++t) {
                    const float g = acc[0][i][j].x[t];
                    acc[0][i][j].x[t] = g / (1.0f + expf(-g)) * acc[1][i][j].x[t];
                }
    }
    // The loop's last barrier: no warp reads the operand buffers any more, so the output tile may overlay them.
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j)
            wmma::store_matrix_sync(&sm.c[wm * 32 + i * 16][wn * 32 + j * 16], acc[0][i][j], kLdc, wmma::mem_row_major);
    __syncthreads();
    for (int idx = int(threadIdx.x); idx < kBM * kBN; idx += kThreads) {
        const int r = idx / kBN, c = idx % kBN;
        if (r < np && row0 + c < a.rows) a.out[int64_t(dst[r]) * a.rows + row0 + c] = sm.c[r][c];
    }
#else
    __trap();
#endif
}

template <DeviceDtype DT, bool kGateUp>
void launch_mma_dtype(const ExpertLaunch& a, const dim3& grid, bool x_vec, cudaStream_t s) {
    if (x_vec) experts_mma_kernel<DT, kGateUp, true><<<grid, kThreads, 0, s>>>(a);
    else experts_mma_kernel<DT, kGateUp, false><<<grid, kThreads, 0, s>>>(a);
}

template <bool kGateUp>
void launch_mma(const ExpertLaunch& a, DeviceDtype dtype, int64_t n, int32_t n_experts, cudaStream_t s) {
    const dim3 grid(unsigned((a.rows + kBN - 1) / kBN), unsigned(expert_tiles_bound(n, a.top_k, n_experts)));
    const bool x_vec = a.cols % 4 == 0 && reinterpret_cast<uintptr_t>(a.x) % 16 == 0;
    switch (dtype) {
    case DeviceDtype::BF16: launch_mma_dtype<DeviceDtype::BF16, kGateUp>(a, grid, x_vec, s); break;
    case DeviceDtype::F8_E4M3: launch_mma_dtype<DeviceDtype::F8_E4M3, kGateUp>(a, grid, x_vec, s); break;
    case DeviceDtype::F32:
        throw Error(ErrorCode::Device, "CUDA backend: the tensor-core expert kernel got F32 weights (internal error)");
    }
    CETUS_CUDA_LAUNCHED("experts_mma_kernel");
}

}  // namespace

void launch_experts_mma(const ExpertLaunch& a, bool gate_up, DeviceDtype dtype, int64_t n, int32_t n_experts,
                        cudaStream_t s) {
    if (n <= 0) return;
    if (gate_up) launch_mma<true>(a, dtype, n, n_experts, s);
    else launch_mma<false>(a, dtype, n, n_experts, s);
}

}  // namespace cetus::cuda
