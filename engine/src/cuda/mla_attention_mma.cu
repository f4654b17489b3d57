// Absorbed multi-head latent attention over a bf16 latent cache on the tensor
// cores: the same flash-decoding as mla_attention.cu (the same splits, the same
// partial buffers and merge), with one block taking sixteen heads of one token
// so that a staged tile of cache rows serves all sixteen in two products:
//   scores [16 heads x 32 rows] = Q [16 x (d_c + d_r)] . tile^T  (queries: q_abs | q_pe)
//   context [16 x d_c] += P [16 x 32] . tile [32 x d_c]
// with fp32 accumulation (mma_bf16.cuh). The cached values are bf16 already, so
// only the queries and the probabilities are rounded: each goes in as kParts
// bf16 parts (one product each): two by default, within about 2^-18 of the fp32
// value, three in exact mode (CETUS_CUDA_EXACT=1), below fp32's own rounding; the
// softmax is fp32 as in the CUDA-core kernel. Per tile, each of the four
// warps takes a quarter of the score product's k-steps (the block sums the four
// in shared memory), eight threads per head update that head's running max and
// sum, and each warp takes a quarter of the context's columns, kept in registers
// and rescaled per head. The tile is read once per block instead of once per
// eight heads, and the products' multiply-adds leave the CUDA cores.
#include "cuda_util.h"
#include "device_math.cuh"
#include "launch_util.cuh"
#include "mla_attention.cuh"
#include "mma_bf16.cuh"
#include "pdl.cuh"

#include <cuda_pipeline.h>

namespace cetus::cuda {
namespace {

constexpr int k_heads = 16; // heads per block: the products' M
constexpr int k_warps = 4;
constexpr int k_threads = 32 * k_warps;
// bf16 values of padding after each staged row: with the width a multiple of 16,
// rows are an odd multiple of 4 banks apart, so the 8 rows x 4 words a score
// fragment load reads fall in 32 different banks.
constexpr int k_pad = 8;
constexpr int k_max_ksteps = int((k_attention_max_latent + k_attention_max_rope) / 16);
constexpr int k_ksteps_per_warp = (k_max_ksteps + k_warps - 1) / k_warps;
constexpr int k_ntiles_per_warp = int(k_attention_max_latent / 8) / k_warps;
constexpr int k_p_ld =
    k_tile_rows + 8; // bf16 row stride of the probabilities (conflict-free fragment reads)

constexpr int k_max_parts = 3;

struct MmaShared {
    float scores[k_warps][k_heads]
                [k_tile_rows + 1]; // each warp's share of the k-steps (+1: fewer bank conflicts)
    uint16_t p[k_max_parts][k_heads][k_p_ld]; // probabilities as bf16 parts
    float corr[k_heads];                      // this tile's rescaling of each head's context
    float max[k_heads], sum[k_heads];         // each head's running max and sum at the end
};

__device__ __forceinline__ uint32_t word(const uint16_t* p) {
    return *reinterpret_cast<const uint32_t*>(p);
}

template <int kParts>
__global__ void __launch_bounds__(k_threads, 2) mla_attention_mma_kernel(AttentionLaunch a) {
    pdl_wait(); // first: see pdl.cuh
    extern __shared__ float4 attention_mma_smem[];                     // float4: 16-byte copies
    uint16_t* tiles = reinterpret_cast<uint16_t*>(attention_mma_smem); // [stages][k_tile_rows][ld]
    __shared__ __align__(16) MmaShared sh;
    const MlaShape& m = a.m;
    const int warp = int(threadIdx.x) >> 5, lane = int(threadIdx.x) & 31, grp = lane >> 2,
              tig = lane & 3;
    const int64_t h0 = int64_t(blockIdx.x) * k_heads, t = blockIdx.z;
    const int64_t width = m.d_c + m.d_r, ld = width + k_pad, d_qk = m.d_n + m.d_r;
    const int n_ksteps = int(width / 16), n_ntiles = int(m.d_c / 8);
    // Causal: token t sees rows 0 .. start_pos + t; this block takes [s0, s1) of them.
    const int64_t n_rows = *a.start_pos + t + 1;
    const SplitPlan plan = split_plan(n_rows, a.split, a.split_cap);
    const int64_t sp = blockIdx.y;
    if (sp >= plan.count) return; // the whole block: this token needs fewer splits
    const int64_t s0 = sp * plan.rows;
    const int64_t s1 = min(s0 + plan.rows, n_rows);

    // This warp's query fragments (k-steps warp, warp + 4, ...) as bf16 parts;
    // rows past the heads are zero.
    uint32_t qa[k_ksteps_per_warp][kParts][4];
#pragma unroll
    for (int i = 0; i < k_ksteps_per_warp; ++i) {
        const int kk = warp + k_warps * i;
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int64_t head = h0 + grp + ((r & 1) ? 8 : 0);
            const int64_t ch = 16 * kk + 2 * tig + ((r & 2) ? 8 : 0);
            uint16_t part[2][kParts] = {};
            if (kk < n_ksteps && head < m.n_h) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int64_t c = ch + e; // d_c is a multiple of 16: a pair never straddles it
                    const float v = c < m.d_c
                                        ? a.q_abs[(t * m.n_h + head) * m.d_c + c]
                                        : a.q[(t * m.n_h + head) * d_qk + m.d_n + (c - m.d_c)];
                    split_bf16(v, part[e]);
                }
            }
#pragma unroll
            for (int q = 0; q < kParts; ++q) qa[i][q][r] = bf16_pair(part[0][q], part[1][q]);
        }
    }
    float acc[k_ntiles_per_warp][4]; // context columns 8 nt + 2 tig (+1) of heads grp, grp + 8
#pragma unroll
    for (int i = 0; i < k_ntiles_per_warp; ++i)
        acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;
    // The softmax's threads: eight per head, four rows each.
    const int hs = int(threadIdx.x) >> 3, sub = int(threadIdx.x) & 7;
    float run_max = -INFINITY, run_sum = 0.0f;

    // Tile k of the split into dst (rows ld apart), as one commit group; rows past
    // the split's end are zeros, so their zero probabilities never meet stale bits.
    const int64_t n_tiles = ceil_div(s1 - s0, int64_t(k_tile_rows));
    const int pieces = int(width / 8); // 16-byte pieces per row
    auto stage_tile = [&](int64_t k, uint16_t* dst) {
        const int64_t base = s0 + k * k_tile_rows;
        const int rows = int(min(int64_t(k_tile_rows), s1 - base));
        const uint16_t* src = static_cast<const uint16_t*>(a.cache) + base * width;
        for (int i = int(threadIdx.x); i < rows * pieces; i += int(blockDim.x)) {
            const int r = i / pieces, c = 8 * (i % pieces);
            __pipeline_memcpy_async(dst + r * ld + c, src + r * width + c, 16);
        }
        for (int i = int(threadIdx.x); i < (k_tile_rows - rows) * pieces; i += int(blockDim.x)) {
            const int r = rows + i / pieces, c = 8 * (i % pieces);
            *reinterpret_cast<float4*>(dst + r * ld + c) = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
        __pipeline_commit();
    };
    const bool two = a.stages == 2;
    if (two) stage_tile(0, tiles);
    for (int64_t k = 0; k < n_tiles; ++k) {
        const int rows = int(min(int64_t(k_tile_rows), s1 - (s0 + k * k_tile_rows)));
        const uint16_t* tile = tiles + (two ? (k & 1) : 0) * k_tile_rows * ld;
        // (Its first barrier also keeps sh from the warps still using the previous tile's.)
        attention_tile_step(k, n_tiles, two, [&](int64_t j, int buffer) {
            stage_tile(j, tiles + buffer * k_tile_rows * ld);
        });

        // Scores over this warp's k-steps for the tile's 32 rows (4 column blocks of 8).
        float sc[4][4];
#pragma unroll
        for (int j = 0; j < 4; ++j) sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.0f;
#pragma unroll
        for (int i = 0; i < k_ksteps_per_warp; ++i) {
            const int kk = warp + k_warps * i;
            if (kk < n_ksteps) { // the same for the whole warp, as mma.sync needs
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const uint16_t* row = tile + (8 * j + grp) * ld + 16 * kk + 2 * tig;
                    const uint32_t b[2] = {word(row), word(row + 8)};
#pragma unroll
                    for (int q = 0; q < kParts; ++q) mma_bf16_16816(sc[j], qa[i][q], b);
                }
            }
        }
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                sh.scores[warp][grp][8 * j + 2 * tig + e] = sc[j][e];
                sh.scores[warp][grp + 8][8 * j + 2 * tig + e] = sc[j][2 + e];
            }
        __syncthreads();

        // Online softmax, eight threads per head (consecutive lanes of one warp; the
        // butterfly gives all eight the same bits).
        {
            float s[4], tile_max = -INFINITY;
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int r = 4 * sub + e;
                s[e] = r < rows ? (sh.scores[0][hs][r] + sh.scores[1][hs][r] + sh.scores[2][hs][r] +
                                   sh.scores[3][hs][r]) *
                                      a.scale
                                : -INFINITY;
                tile_max = fmaxf(tile_max, s[e]);
            }
#pragma unroll
            for (int o = 1; o < 8; o <<= 1)
                tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, o));
            const float new_max = fmaxf(run_max, tile_max); // finite: every tile has a row
            const float corr = expf(run_max - new_max);     // 0 for the first tile (run_max = -inf)
            float p_sum = 0.0f;
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float p = expf(s[e] - new_max); // 0 past the rows
                p_sum += p;
                uint16_t part[kParts];
                split_bf16(p, part);
#pragma unroll
                for (int q = 0; q < kParts; ++q) sh.p[q][hs][4 * sub + e] = part[q];
            }
#pragma unroll
            for (int o = 1; o < 8; o <<= 1) p_sum += __shfl_xor_sync(0xffffffffu, p_sum, o);
            run_sum = run_sum * corr + p_sum;
            run_max = new_max;
            if (sub == 0) sh.corr[hs] = corr;
        }
        __syncthreads();

        // The context: this warp's column blocks, rescaled, plus P . tile.
        uint32_t pa[2][kParts][4]; // [k-step of 16 rows][part][fragment word]
#pragma unroll
        for (int kk = 0; kk < 2; ++kk) {
            const int c0 = 16 * kk + 2 * tig;
#pragma unroll
            for (int q = 0; q < kParts; ++q) {
                pa[kk][q][0] = word(&sh.p[q][grp][c0]);
                pa[kk][q][1] = word(&sh.p[q][grp + 8][c0]);
                pa[kk][q][2] = word(&sh.p[q][grp][c0 + 8]);
                pa[kk][q][3] = word(&sh.p[q][grp + 8][c0 + 8]);
            }
        }
        const float corr_a = sh.corr[grp], corr_b = sh.corr[grp + 8];
#pragma unroll
        for (int i = 0; i < k_ntiles_per_warp; ++i) {
            const int nt = warp + k_warps * i;
            if (nt < n_ntiles) { // the same for the whole warp
                acc[i][0] *= corr_a;
                acc[i][1] *= corr_a;
                acc[i][2] *= corr_b;
                acc[i][3] *= corr_b;
                const uint16_t* col = tile + 8 * nt + grp;
#pragma unroll
                for (int kk = 0; kk < 2; ++kk) {
                    const int r0 = 16 * kk + 2 * tig;
                    const uint32_t b[2] = {bf16_pair(col[r0 * ld], col[(r0 + 1) * ld]),
                                           bf16_pair(col[(r0 + 8) * ld], col[(r0 + 9) * ld])};
#pragma unroll
                    for (int q = 0; q < kParts; ++q) mma_bf16_16816(acc[i], pa[kk][q], b);
                }
            }
        }
    }
    if (sub == 0) {
        sh.max[hs] = run_max;
        sh.sum[hs] = run_sum;
    }
    __syncthreads();

    // Out: the context (one split: normalised here, as cpu::softmax multiplies by
    // the reciprocal) or the split's unnormalised part with its max and sum.
#pragma unroll
    for (int i = 0; i < k_ntiles_per_warp; ++i) {
        const int nt = warp + k_warps * i;
        if (nt >= n_ntiles) continue;
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int hr = grp + 8 * half;
            const int64_t head = h0 + hr, c = 8 * nt + 2 * tig;
            if (head >= m.n_h) continue;
            if (!a.split) {
                const float inv = 1.0f / sh.sum[hr];
                float* out = a.ctx + (t * m.n_h + head) * m.d_c + c;
                out[0] = acc[i][2 * half] * inv;
                out[1] = acc[i][2 * half + 1] * inv;
            } else {
                float* out = a.part_acc + ((sp * a.n + t) * m.n_h + head) * m.d_c + c;
                out[0] = acc[i][2 * half];
                out[1] = acc[i][2 * half + 1];
            }
        }
    }
    if (a.split && threadIdx.x < k_heads && h0 + threadIdx.x < m.n_h) {
        const int64_t part = (sp * a.n + t) * m.n_h + h0 + threadIdx.x;
        a.part_ml[2 * part] = sh.max[threadIdx.x];
        a.part_ml[2 * part + 1] = sh.sum[threadIdx.x];
    }
}

} // namespace

size_t attention_mma_tile_bytes(int64_t cache_width) {
    return size_t(k_tile_rows) * size_t(cache_width + k_pad) * sizeof(uint16_t);
}

size_t attention_mma_static_bytes() {
    return sizeof(MmaShared);
}

bool attention_mma_compiled() {
    // Built for an older GPU (or as older PTX), the product is a trap.
    cudaFuncAttributes fa{};
    if (cudaFuncGetAttributes(&fa, mla_attention_mma_kernel<2>) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
    }
    return fa.binaryVersion >= 80 && fa.ptxVersion >= 80;
}

void allow_attention_mma_smem(int bytes) {
    CETUS_CUDA(cudaFuncSetAttribute(mla_attention_mma_kernel<2>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    CETUS_CUDA(cudaFuncSetAttribute(mla_attention_mma_kernel<3>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

void launch_attention_mma(const AttentionLaunch& a, int64_t n_split, int parts, cudaStream_t s) {
    const dim3 grid{unsigned(ceil_div(a.m.n_h, k_heads)), unsigned(n_split), unsigned(a.n)};
    const size_t smem = size_t(a.stages) * attention_mma_tile_bytes(a.m.d_c + a.m.d_r);
    if (parts == 3)
        launch_pdl(mla_attention_mma_kernel<3>, grid, k_threads, smem, s, a);
    else
        launch_pdl(mla_attention_mma_kernel<2>, grid, k_threads, smem, s, a);
    CETUS_CUDA_LAUNCHED("mla_attention_mma_kernel");
}

} // namespace cetus::cuda
