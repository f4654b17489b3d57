// MLA query absorption: q_abs[t, h, :] = W_UK_h^T q[t, h, :d_n], the per-head
// cpu::axpy loop of mla_forward's absorbed branch (mla.cpp) in the same j
// order. Grid (d_c / 128, n_h, n / 8), rounded up, of 128 threads: one column
// of W_UK_h per thread for 8 tokens, their q_nope staged in shared memory; with
// launch_absorb_q_latent (the fp32 path: decode and verify batches, every batch in
// exact mode) one more row of blocks writes the latent cache (its first block) and
// rotates the queries' rope parts (the others).
// The block's 128 columns of W_UK_h are staged in shared memory with asynchronous
// 16-byte copies all in flight at once (a column walk in global memory waits for
// one load per row), then read in the same j order: bf16 and FP8 weights all d_n
// rows in one go, fp32 ones 64 rows at a time. The first rows' copies are issued
// before q_nope is loaded, so that both travel together: one memory round trip
// before the first multiply-add instead of one for q_nope and one per 64 rows.
// GGUF blocks (a GGUF file's attn_kv_b) are staged decoded: each thread decodes
// 32-value chunks of the rows (device_math.cuh's ggml_chunk, the engine's values
// exactly) into an fp32 tile, which is then read as an fp32 weight's.
#include "cuda_util.h"
#include "device_math.cuh"
#include "pdl.cuh"
#include "latent_cache.cuh"
#include "launch_util.cuh"

#include <cuda_pipeline.h>

namespace cetus::cuda {
namespace {

constexpr int k_absorb_threads = 128;
constexpr int k_absorb_tokens = 8;
// Rows of W_UK_h staged at a time: 32 KB of bf16 or 16 KB of FP8 weights cover every
// row (d_n <= k_absorb_max_nope); fp32 ones and decoded GGUF blocks take 64 (32 KB).
template <int kBytes>
inline constexpr int k_absorb_rows = kBytes <= 2 ? int(k_absorb_max_nope) : 64;

// Column c of W_UK_h for 8 tokens per thread: the same j order as the CPU's axpy loop.
// kLatent: blocks (0, n_h, z) also write the latent cache rows of their tokens
// (latent_cache_token), blocks (x > 0, n_h, z) rotate the queries' rope parts; the
// other blocks read only the nope parts of q.
template <DeviceDtype DT, bool kLatent>
__global__ void __launch_bounds__(k_absorb_threads)
    absorb_q_kernel(DeviceMatrix kv_b, const float* __restrict__ q, int64_t n, MlaShape m,
                    float* __restrict__ q_abs, LatentCacheArgs latent) {
    pdl_wait();  // first: see pdl.cuh
    const int64_t h = blockIdx.y, t0 = int64_t(blockIdx.z) * k_absorb_tokens;
    const int nt = int(min(int64_t(k_absorb_tokens), n - t0));
    if constexpr (kLatent) {
        if (h == m.n_h) {  // the whole block
            // Block 0 writes the cache rows; the others of the row (d_c / 128 - 1 of them)
            // rotate the queries' rope parts at the same time, heads taken in turn.
            const int64_t others = int64_t(gridDim.x) - 1;
            if (blockIdx.x == 0) {
                __shared__ float scratch[32];
                for (int t = 0; t < nt; ++t) latent_cache_token(latent, t0 + t, scratch, others == 0);
            } else {
                const int64_t pos0 = *latent.start_pos + t0;
                for (int t = 0; t < nt; ++t) {
                    const float* cs = latent.rope_table + (pos0 + t) * latent.d_r;
                    rotate_queries(latent, t0 + t, cs, blockIdx.x - 1, others);
                }
            }
            return;
        }
    }
    constexpr bool kGgml = DT == DeviceDtype::Ggml;
    constexpr int kBytes = kGgml ? 4 : k_elem_bytes<DT>;  // (GGUF blocks staged as fp32)
    constexpr int kRows = k_absorb_rows<kBytes>;
    constexpr int kRowBytes = k_absorb_threads * kBytes;  // one staged row: the block's columns
    __shared__ uint4 tile[kRows * kRowBytes / 16];
    __shared__ float q_nope[k_absorb_tokens * k_absorb_max_nope];  // [k_absorb_tokens, d_n]
    const int64_t d_qk = m.d_n + m.d_r;
    const int64_t c0 = int64_t(blockIdx.x) * k_absorb_threads, c = c0 + threadIdx.x;
    const int64_t row0 = h * (m.d_n + m.d_v);
    const char* base = static_cast<const char*>(kv_b.data);
    // Rows j0 .. j0 + rows - 1 into the tile: asynchronous 16-byte copies straight into
    // shared memory (cp.async), all in flight together; a piece starting at or past
    // cols is zero-filled instead (one starting below cols lies inside the row's
    // padded length ld). Waited for with __pipeline_wait_prior(0).
    const auto issue_rows = [&](int64_t j0, int rows) {
        constexpr int kPerRow = kRowBytes / 16;
        for (int i = threadIdx.x; i < rows * kPerRow; i += k_absorb_threads) {
            const int r = i / kPerRow;
            const int64_t col = c0 + int64_t(i % kPerRow) * (16 / kBytes);
            const bool inside = col < kv_b.cols;
            const char* src = inside ? base + ((row0 + j0 + r) * kv_b.ld + col) * kBytes : base;
            __pipeline_memcpy_async(&tile[i], src, 16, inside ? 0 : 16);
        }
        __pipeline_commit();
    };
    if constexpr (!kGgml) issue_rows(0, int(min(int64_t(kRows), m.d_n)));
    for (int64_t i = threadIdx.x; i < nt * m.d_n; i += blockDim.x)
        q_nope[i] = q[((t0 + i / m.d_n) * m.n_h + h) * d_qk + i % m.d_n];
    const unsigned char* tile_bytes = reinterpret_cast<const unsigned char*>(tile);
    float acc[k_absorb_tokens] = {};
    for (int64_t j0 = 0; j0 < m.d_n; j0 += kRows) {
        const int rows = int(min(int64_t(kRows), m.d_n - j0));
        if constexpr (kGgml) {
            __syncthreads();  // the previous rows are consumed
            // rows x 4 chunks of 32 values; a chunk at or past cols is zeros (cols is
            // whole blocks, so whole chunks). A warp's lanes write 8 rows' chunks at
            // once, each 128 bytes, so the same 16-byte piece of every chunk would fall
            // in the same four banks: piece v of a row-r chunk is stored at piece
            // v ^ (r & 7) (read back so below), four lanes a bank group instead of 32.
            constexpr int kChunks = k_absorb_threads / 32;
            float* tile_f = reinterpret_cast<float*>(tile);
            for (int i = threadIdx.x; i < rows * kChunks; i += k_absorb_threads) {
                const int r = i / kChunks, k = i % kChunks;
                const int64_t col = c0 + 32 * k;
                float y[32];
                if (col < kv_b.cols) {
                    ggml_chunk(kv_b, ggml_row(kv_b, row0 + j0 + r), col / 32, y);
                } else {
#pragma unroll
                    for (int v = 0; v < 32; ++v) y[v] = 0.0f;
                }
                float4* o = reinterpret_cast<float4*>(tile_f + r * k_absorb_threads + 32 * k);
#pragma unroll
                for (int v = 0; v < 8; ++v)
                    o[v ^ (r & 7)] = make_float4(y[4 * v], y[4 * v + 1], y[4 * v + 2], y[4 * v + 3]);
            }
        } else {
            if (j0 > 0) {
                __syncthreads();  // the previous rows are consumed
                issue_rows(j0, rows);
            }
            __pipeline_wait_prior(0);
        }
        __syncthreads();
        if (c >= m.d_c) continue;
        // Unrolled so that the next rows' shared-memory loads are in flight while the
        // multiply-adds wait (one row at a time each load was waited for: the kernel's
        // 64 blocks took about 10 k cycles each on an H200); the same order of sums.
#pragma unroll 8
        for (int r = 0; r < rows; ++r) {
            int at = threadIdx.x;  // this thread's column in the staged row
            if constexpr (kGgml) at ^= (r & 7) << 2;  // (the pieces' swizzle)
            const unsigned char* e = tile_bytes + r * kRowBytes + at * kBytes;
            float w;
            if constexpr (DT == DeviceDtype::F32 || kGgml) {
                w = *reinterpret_cast<const float*>(e);
            } else if constexpr (DT == DeviceDtype::BF16) {
                w = bf16_bits_to_f32(*reinterpret_cast<const uint16_t*>(e));
            } else {
                w = fp8_e4m3_to_f32(*e) * kv_b.scale_inv[((row0 + j0 + r) / 128) * kv_b.scale_cols + c / 128];
            }
            const int64_t j = j0 + r;
#pragma unroll
            for (int t = 0; t < k_absorb_tokens; ++t)
                if (t < nt) acc[t] = fmaf(q_nope[t * m.d_n + j], w, acc[t]);
        }
    }
    if (c >= m.d_c) return;
#pragma unroll
    for (int t = 0; t < k_absorb_tokens; ++t)
        if (t < nt) q_abs[((t0 + t) * m.n_h + h) * m.d_c + c] = acc[t];
}

}  // namespace

namespace {
template <bool kLatent>
void launch_absorb(const DeviceMatrix& kv_b, const float* q, int64_t n, const MlaShape& m, float* q_abs,
                   const LatentCacheArgs& latent, cudaStream_t s) {
    if (n <= 0) return;
    const dim3 grid(unsigned(ceil_div(m.d_c, k_absorb_threads)), unsigned(m.n_h + (kLatent ? 1 : 0)),
                    unsigned(ceil_div(n, k_absorb_tokens)));
    if (m.d_n > k_absorb_max_nope)
        throw Error(ErrorCode::Unsupported, "query absorption: qk_nope_head_dim " + std::to_string(m.d_n) +
                                                " above the kernel's " + std::to_string(k_absorb_max_nope));
    switch (kv_b.dtype) {
    case DeviceDtype::F32:
        launch_pdl(absorb_q_kernel<DeviceDtype::F32, kLatent>, grid, k_absorb_threads, 0, s, kv_b, q, n, m, q_abs,
                   latent);
        break;
    case DeviceDtype::BF16:
        launch_pdl(absorb_q_kernel<DeviceDtype::BF16, kLatent>, grid, k_absorb_threads, 0, s, kv_b, q, n, m, q_abs,
                   latent);
        break;
    case DeviceDtype::F8_E4M3:
        launch_pdl(absorb_q_kernel<DeviceDtype::F8_E4M3, kLatent>, grid, k_absorb_threads, 0, s, kv_b, q, n, m,
                   q_abs, latent);
        break;
    case DeviceDtype::Ggml:
        launch_pdl(absorb_q_kernel<DeviceDtype::Ggml, kLatent>, grid, k_absorb_threads, 0, s, kv_b, q, n, m, q_abs,
                   latent);
        break;
    }
    CETUS_CUDA_LAUNCHED("absorb_q_kernel");
}
}  // namespace

void launch_absorb_q(const DeviceMatrix& kv_b, const float* q, int64_t n, const MlaShape& m, float* q_abs,
                     cudaStream_t s) {
    launch_absorb<false>(kv_b, q, n, m, q_abs, LatentCacheArgs{}, s);
}

void launch_absorb_q_latent(const DeviceMatrix& kv_b, const float* q, int64_t n, const MlaShape& m, float* q_abs,
                            const LatentCacheArgs& latent, cudaStream_t s) {
    launch_absorb<true>(kv_b, q, n, m, q_abs, latent, s);
}

}  // namespace cetus::cuda
