// The routed experts of a prefill chunk on the tensor cores: the same products
// as moe_experts.cu (silu(gate x) * up x, then down, for every pair of every
// active expert) as grouped bf16 GEMMs with fp32 accumulation, the precision of
// the cuBLAS products of the dense layers (gemm.cpp): activations rounded to
// bf16, FP8 weights times their block scale rounded to bf16, GGUF blocks decoded
// (ggml_blocks.h, the CPU's values) and rounded to bf16 as the dense layers'
// expansion for cuBLAS rounds them (ggml_decode.cu).
//
// One block computes a tile of 64 pairs of one expert by kBN weight rows (64 or
// 128: ExpertMma::tile_rows). The tiles come from launch_group_pairs
// (ExpertPairs::tiles), so nothing goes back to the host; blocks past the tile
// count return at once. The activations come in as bf16 rows (each layer's gate/up
// launcher rounds its input once; the gate/up kernel writes its SwiGLU outputs
// rounded, the down launch's input), so a step stages them with plain 16-byte
// copies; the rounding is the one the staging did before, so the products are
// unchanged. Each
// step stages 32 columns of the gathered activation rows and of the weight rows in
// shared memory as bf16 (two buffers: the next step's global loads are in flight
// while the warps multiply), 2 x kBN/32 warps each multiply 32 pairs by 32 rows
// with WMMA 16x16x16 fragments, and the tile goes out through shared memory to the
// pairs' own rows. An expert's weights are read once per 64 of its pairs, and each
// activation piece once per kBN weight rows. Every output element is the same
// sequence of fragment products whatever kBN, so both tile widths give the same bits.
// GGUF blocks are decoded a 32-value chunk per thread and step (blocks hold 32 or
// 256 values, so a step is one chunk of every weight row).
#include "cuda_util.h"
#include "device_math.cuh"
#include "moe_experts.cuh"

#include <mma.h>

#include <algorithm>

namespace cetus::cuda {
namespace {

using namespace nvcuda;

constexpr int kBM = int(k_expert_tile_pairs);  // pairs per tile
constexpr int kBK = 32;                        // columns per step
constexpr int kLds = kBK + 8;  // bf16 row stride of the staged operands: 80 bytes, fragments 32-byte aligned
constexpr int kAVec = 8;       // bf16 activations per 16-byte piece

// kBN weight rows per tile; warps as 2 (pairs) x kBN / 32 (rows), each 32 pairs x 32 rows.
template <int kBN>
struct TileShape {
    static_assert(kBN == 64 || kBN == 128, "tiles of 64 or 128 weight rows");
    static constexpr int threads = 2 * kBN;
    static constexpr int warps_n = kBN / 32;
    static constexpr int a_pieces = kBM * (kBK / kAVec) / threads;  // 16-byte activation pieces per thread per step
    static constexpr int ldc = kBN + 4;                             // fp32 row stride of the output tile
    // Blocks per SM the registers must allow. 128 rows: two, so at most 128 registers a
    // thread (ptxas of nvcc 13.0, sm_80 to 90: gate/up then spills 44-52 bytes with BF16,
    // up to 22 with FP8, 52-88 with GGUF blocks) for 16 warps
    // an SM where shared memory holds two blocks (not sm_86/89), against one block of 8
    // warps at the 164 gate/up takes uncapped. 64 rows: three, met uncapped (124-168).
    static constexpr int min_blocks = kBN == 128 ? 2 : 3;
};

template <int kMats, int kBN>
struct Stage {
    __nv_bfloat16 a[kBM][kLds];
    __nv_bfloat16 b[kMats][kBN][kLds];
};

template <int kMats, int kBN>
union TileSmem {
    Stage<kMats, kBN> stage[2];
    float c[kBM][TileShape<kBN>::ldc];
};

// 16-byte weight pieces per thread per step of one matrix (the same for both tile widths).
template <DeviceDtype DT, int kBN>
inline constexpr int k_b_pieces = kBN * (kBK / k_vec_elems<DT>) / TileShape<kBN>::threads;

// This thread's activation pieces of the step at column k0: bf16 rows a.ldxb
// elements apart (a multiple of 8, 16-byte aligned), zero past cols and for empty rows.
template <int kBN>
__device__ __forceinline__ void load_a(const ExpertLaunch& a, const int (&src)[kBM], int64_t k0,
                                       uint4 (&ra)[TileShape<kBN>::a_pieces]) {
    constexpr int kThreads = TileShape<kBN>::threads;
#pragma unroll
    for (int i = 0; i < TileShape<kBN>::a_pieces; ++i) {
        const int idx = int(threadIdx.x) + i * kThreads, r = idx / (kBK / kAVec), c = (idx % (kBK / kAVec)) * kAVec;
        const int64_t col = k0 + c;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (src[r] >= 0 && col < a.cols) {
            const uint16_t* p = a.xb + int64_t(src[r]) * a.ldxb + col;
            if (col + kAVec <= a.cols) {
                v = *reinterpret_cast<const uint4*>(p);
            } else {  // the row's last partial piece
                uint16_t e[kAVec] = {};
                for (int j = 0; j < kAVec; ++j)
                    if (col + j < a.cols) e[j] = p[j];
                v = make_uint4(e[0] | (uint32_t(e[1]) << 16), e[2] | (uint32_t(e[3]) << 16),
                               e[4] | (uint32_t(e[5]) << 16), e[6] | (uint32_t(e[7]) << 16));
            }
        }
        ra[i] = v;
    }
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    return uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(lo))) |
           (uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16);
}

template <int kMats, int kBN>
__device__ __forceinline__ void store_a(Stage<kMats, kBN>& st, const uint4 (&ra)[TileShape<kBN>::a_pieces]) {
    constexpr int kThreads = TileShape<kBN>::threads;
#pragma unroll
    for (int i = 0; i < TileShape<kBN>::a_pieces; ++i) {
        const int idx = int(threadIdx.x) + i * kThreads, r = idx / (kBK / kAVec), c = (idx % (kBK / kAVec)) * kAVec;
        *reinterpret_cast<uint4*>(&st.a[r][c]) = ra[i];
    }
}

// This thread's raw weight pieces (and FP8 block scales) of the step at column k0.
template <DeviceDtype DT, int kBN>
__device__ __forceinline__ void load_b(const DeviceMatrix& w, int64_t row0, int64_t k0,
                                       uint4 (&rb)[k_b_pieces<DT, kBN>], float (&rs)[k_b_pieces<DT, kBN>]) {
    constexpr int kVec = k_vec_elems<DT>, kPerRow = kBK / kVec, kThreads = TileShape<kBN>::threads;
#pragma unroll
    for (int i = 0; i < k_b_pieces<DT, kBN>; ++i) {
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
template <DeviceDtype DT, int kMats, int kBN>
__device__ __forceinline__ void store_b(Stage<kMats, kBN>& st, int m, int64_t k0, int64_t cols,
                                        const uint4 (&rb)[k_b_pieces<DT, kBN>],
                                        const float (&rs)[k_b_pieces<DT, kBN>]) {
    constexpr int kVec = k_vec_elems<DT>, kPerRow = kBK / kVec, kThreads = TileShape<kBN>::threads;
#pragma unroll
    for (int i = 0; i < k_b_pieces<DT, kBN>; ++i) {
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

// A step's weights between their loads (issued before the step's products, so
// they are in flight meanwhile) and their stores to the other stage: raw 16-byte
// pieces (and FP8 block scales) of each matrix.
template <DeviceDtype DT, int kMats, int kBN>
struct WeightRegs {
    uint4 rb[kMats][k_b_pieces<DT, kBN>];
    float rs[kMats][k_b_pieces<DT, kBN>];

    __device__ __forceinline__ void load(const DeviceMatrix (&w)[kMats], int64_t row0, int64_t k0) {
#pragma unroll
        for (int m = 0; m < kMats; ++m) load_b<DT, kBN>(w[m], row0, k0, rb[m], rs[m]);
    }
    __device__ __forceinline__ void store(Stage<kMats, kBN>& st, int64_t k0, int64_t cols) const {
#pragma unroll
        for (int m = 0; m < kMats; ++m) store_b<DT, kMats, kBN>(st, m, k0, cols, rb[m], rs[m]);
    }
};

// GGUF blocks: thread t decodes row t % kBN of matrix t / kBN (the gate's rows in
// the first half of the threads, the up's in the second; with one matrix the second
// half has none) for the step's chunk, and holds it as 16 pairs of bf16. The two
// matrices' block types may differ; each is uniform over a warp. The decoding uses
// its loads at once, so they are not in flight during the step's products as the
// raw pieces above are: the other blocks on the multiprocessor cover the wait (not
// measured on a GPU yet).
template <int kMats, int kBN>
struct WeightRegs<DeviceDtype::Ggml, kMats, kBN> {
    static_assert(kBK == 32, "a step is one 32-value chunk of a row of GGUF blocks");
    uint32_t packed[kBK / 2];

    __device__ __forceinline__ void load(const DeviceMatrix (&w)[kMats], int64_t row0, int64_t k0) {
        const int t = int(threadIdx.x), m = t / kBN;
        DeviceMatrix wm = w[0];
        if (kMats == 2 && m == 1) wm = w[kMats - 1];
        const int64_t row = row0 + t % kBN;
        float f[kBK] = {};
        if (m < kMats && row < wm.rows) ggml_chunk(wm, ggml_row(wm, row), k0 / kBK, f);
#pragma unroll
        for (int j = 0; j < kBK / 2; ++j) packed[j] = pack_bf16(f[2 * j], f[2 * j + 1]);
    }
    __device__ __forceinline__ void store(Stage<kMats, kBN>& st, int64_t, int64_t) const {
        const int t = int(threadIdx.x), m = t / kBN;
        if (m >= kMats) return;
        uint4* dst = reinterpret_cast<uint4*>(&st.b[m][t % kBN][0]);
#pragma unroll
        for (int j = 0; j < kBK / 8; ++j)
            dst[j] = make_uint4(packed[4 * j], packed[4 * j + 1], packed[4 * j + 2], packed[4 * j + 3]);
    }
};

// The launch's dynamic shared memory: the tile and room to align it to 128 bytes
// (WMMA's fragments need 32; the base of dynamic shared memory is only sure to be 16).
template <int kMats, int kBN>
constexpr size_t k_tile_smem_bytes = sizeof(TileSmem<kMats, kBN>) + 128;

// kGateUp: a.outb[p] = bf16(silu(gate_e x) * up_e x) over rows [row0, row0 + kBN);
// down: a.out[p] = down_e h (fp32). The staged operands and the output tile in
// dynamic shared memory (over 48 KiB for 128 rows of gate and up).
template <DeviceDtype DT, bool kGateUp, int kBN>
__global__ void __launch_bounds__(TileShape<kBN>::threads, TileShape<kBN>::min_blocks)
    experts_mma_kernel(ExpertLaunch a) {
#if __CUDA_ARCH__ >= 800  // bf16 WMMA; the backend takes the fp32 kernel on older GPUs
    using Shape = TileShape<kBN>;
    constexpr int kMats = kGateUp ? 2 : 1, kThreads = Shape::threads;
    if (int(blockIdx.y) >= *a.pairs.n_tiles) return;
    extern __shared__ float4 experts_mma_smem[];
    __shared__ int src[kBM];
    __shared__ int dst[kBM];
    const uintptr_t base = reinterpret_cast<uintptr_t>(experts_mma_smem);
    TileSmem<kMats, kBN>& sm = *reinterpret_cast<TileSmem<kMats, kBN>*>(base + (128 - base % 128) % 128);

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

    const int warp = int(threadIdx.x) >> 5, wm = warp / Shape::warps_n, wn = warp % Shape::warps_n;
    const int n_steps = int((a.cols + kBK - 1) / kBK);
    uint4 ra[Shape::a_pieces];
    WeightRegs<DT, kMats, kBN> rw;

    load_a<kBN>(a, src, 0, ra);
    rw.load(w, row0, 0);
    store_a<kMats, kBN>(sm.stage[0], ra);
    rw.store(sm.stage[0], 0, a.cols);
    __syncthreads();

    for (int step = 0; step < n_steps; ++step) {
        const int cur = step & 1;
        const bool more = step + 1 < n_steps;
        const int64_t k_next = int64_t(step + 1) * kBK;
        if (more) {  // the next step's loads, in flight during this step's products
            load_a<kBN>(a, src, k_next, ra);
            rw.load(w, row0, k_next);
        }
        const Stage<kMats, kBN>& st = sm.stage[cur];
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
            store_a<kMats, kBN>(sm.stage[cur ^ 1], ra);
            rw.store(sm.stage[cur ^ 1], k_next, a.cols);
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
            wmma::store_matrix_sync(&sm.c[wm * 32 + i * 16][wn * 32 + j * 16], acc[0][i][j], Shape::ldc,
                                    wmma::mem_row_major);
    __syncthreads();
    for (int idx = int(threadIdx.x); idx < kBM * kBN; idx += kThreads) {
        const int r = idx / kBN, c = idx % kBN;
        if (r >= np || row0 + c >= a.rows) continue;
        if constexpr (kGateUp)  // the down product's input, rounded as its staging rounded it before
            a.outb[int64_t(dst[r]) * a.ldob + row0 + c] = __bfloat16_as_ushort(__float2bfloat16_rn(sm.c[r][c]));
        else
            a.out[int64_t(dst[r]) * a.rows + row0 + c] = sm.c[r][c];
    }
#else
    __trap();
#endif
}

template <DeviceDtype DT, bool kGateUp, int kBN>
void launch_mma_tile(const ExpertLaunch& a, int64_t n, int32_t n_experts, cudaStream_t s) {
    constexpr size_t bytes = k_tile_smem_bytes<kGateUp ? 2 : 1, kBN>;
    CETUS_CUDA(cudaFuncSetAttribute(experts_mma_kernel<DT, kGateUp, kBN>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(bytes)));
    const dim3 grid(unsigned((a.rows + kBN - 1) / kBN), unsigned(expert_tiles_bound(n, a.top_k, n_experts)));
    experts_mma_kernel<DT, kGateUp, kBN><<<grid, TileShape<kBN>::threads, bytes, s>>>(a);
}

template <DeviceDtype DT, bool kGateUp>
void launch_mma_dtype(const ExpertLaunch& a, int tile_rows, int64_t n, int32_t n_experts, cudaStream_t s) {
    if (tile_rows == 128) launch_mma_tile<DT, kGateUp, 128>(a, n, n_experts, s);
    else launch_mma_tile<DT, kGateUp, 64>(a, n, n_experts, s);
}

template <bool kGateUp>
void launch_mma(const ExpertLaunch& a, DeviceDtype dtype, int tile_rows, int64_t n, int32_t n_experts,
                cudaStream_t s) {
    if (tile_rows != 64 && tile_rows != 128)
        throw Error(ErrorCode::Device, "CUDA backend: expert tiles of " + std::to_string(tile_rows) +
                                           " rows (64 or 128; internal error)");
    if (!a.xb || a.ldxb < a.cols || a.ldxb % kAVec != 0 || reinterpret_cast<uintptr_t>(a.xb) % 16 != 0 ||
        (kGateUp && (!a.outb || a.ldob < a.rows)))
        throw Error(ErrorCode::Device,
                    "CUDA backend: unaligned bf16 operands of the tensor-core experts (internal error)");
    switch (dtype) {
    case DeviceDtype::BF16: launch_mma_dtype<DeviceDtype::BF16, kGateUp>(a, tile_rows, n, n_experts, s); break;
    case DeviceDtype::F8_E4M3: launch_mma_dtype<DeviceDtype::F8_E4M3, kGateUp>(a, tile_rows, n, n_experts, s); break;
    case DeviceDtype::Ggml:
        if (a.cols % kBK != 0)
            throw Error(ErrorCode::Device, "CUDA backend: GGUF expert rows of " + std::to_string(a.cols) +
                                               " values, not whole 32-value chunks (internal error)");
        launch_mma_dtype<DeviceDtype::Ggml, kGateUp>(a, tile_rows, n, n_experts, s);
        break;
    case DeviceDtype::F32:
        throw Error(ErrorCode::Device, "CUDA backend: the tensor-core expert kernel got F32 weights (internal error)");
    }
    CETUS_CUDA_LAUNCHED("experts_mma_kernel");
}

}  // namespace

void launch_experts_mma(const ExpertLaunch& a, bool gate_up, DeviceDtype dtype, int tile_rows, int64_t n,
                        int32_t n_experts, cudaStream_t s) {
    if (n <= 0) return;
    if (gate_up) launch_mma<true>(a, dtype, tile_rows, n, n_experts, s);
    else launch_mma<false>(a, dtype, tile_rows, n, n_experts, s);
}

}  // namespace cetus::cuda
