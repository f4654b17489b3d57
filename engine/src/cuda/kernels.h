// The device side of the CUDA backend: weight descriptors and the launchers of
// every kernel (defined in the .cu files of this folder). Launchers enqueue on
// the given stream, check the launch and never synchronise. Shapes follow the
// CPU reference: activations are fp32 row-major [n_tokens, width].
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace cetus::random_draws {
struct Recipe;
}

namespace cetus::cuda {

// Weight element types kept on the device; F16 checkpoints are widened to F32 at
// upload. Ggml: a GGUF file's block-quantised rows as the file holds them
// (ggml_blocks.h's formats), read by the warp-per-row kernels and the embedding.
enum class DeviceDtype : int32_t { F32, BF16, F8_E4M3, Ggml };

// A 2-D weight [rows, cols] in device memory. Rows are ld elements apart, ld
// being cols rounded up to 16 bytes, so every row starts 16-byte aligned.
// FP8: element (r, c) is multiplied by scale_inv[(r / 128) * scale_cols + c / 128].
// Ggml: rows of ggml_type's blocks (cols a whole number of blocks, of
// ggml_values values in ggml_bytes bytes each), ld *bytes* apart (rounded up to 16),
// each in the device's layout (ggml_device_row).
struct DeviceMatrix {
    DeviceDtype dtype = DeviceDtype::F32;
    int64_t rows = 0, cols = 0, ld = 0;
    const void* data = nullptr;
    const float* scale_inv = nullptr;
    int64_t scale_cols = 0;
    uint32_t ggml_type = 0;
    int32_t ggml_values = 0, ggml_bytes = 0;
    // GGUF blocks: the decode products (matvec.cu, moe_experts.cu) take the fast mode's
    // sums (device_math.cuh: GgmlCodes), not the CPU's bits.
    bool ggml_fast = false;
    // The GGUF decode products (and the fused merge's value rows) ask the L2 for each row
    // they are about to read whole when a warp starts on it (device_math.cuh: prefetch_l2),
    // an experiment switched on with CETUS_CUDA_PREFETCH=1. The sums are the same either way.
    bool l2_prefetch = false;
    // The GGUF decode products of one or two tokens copy each warp's rows into shared memory
    // before decoding them (device_math.cuh: ggml_stage_copy), an experiment switched on
    // with CETUS_CUDA_GGUF_STAGE=1 (1: a tile of each row at a time) or 2 (the next tile's
    // copies in flight while a tile is decoded). 0 reads the rows. The sums are the same
    // either way.
    uint8_t ggml_stage = 0;
    // The GGUF products of matvec.cu and moe_experts.cu (decode and verify batches: what
    // gemm.h calls small) quantise their activations to int8 per block of the weights' type and take
    // integer dot products (device_math.cuh: GgmlInt8), for a model whose matrices are marked
    // for int8 activations (Matrix::int8_activations, cetus-cli --int8-activations) and a
    // block type that has the form (ggml_int8_type). Not the CPU's bits: the same integers,
    // the fp32 steps in another order.
    bool ggml_int8 = false;
};

// Bytes of w's rows on the device (FP8: without its scales).
int64_t device_matrix_bytes(const DeviceMatrix& w);
// Ranges of device memory for launch_l2_prefetch (16-byte aligned, whole padded rows).
struct L2Ranges {
    static constexpr int k_max = 4;
    const void* p[k_max] = {};
    int64_t bytes[k_max] = {};
    int n = 0;
};
// Asks the L2 to fetch the ranges now (l2_prefetch.cu): a hint, nothing is written.
// A grid of single warps, at most two a multiprocessor.
void launch_l2_prefetch(const L2Ranges& r, int n_sm, cudaStream_t s);

// A matrix-vector product over groups of rows, for the per-head products of
// absorbed attention: group g uses weight rows w_row0 + g * w_row_step + [0, rows),
// input x + g * x_step and output y + g * y_step. A plain product is one group.
struct RowGroups {
    int64_t n_groups = 1;
    int64_t rows = 0;
    int64_t w_row0 = 0, w_row_step = 0;
    int64_t x_step = 0, y_step = 0;
};

// Programmatic dependent launch of the decode step's kernels (pdl.cuh; sm_90,
// CETUS_CUDA_PDL=1): process-wide, set by the backend at creation.
void set_programmatic_launch(bool on);
bool programmatic_launch();
// Whether the kernels run sm_90 machine code on this device (not older code or PTX
// compiled for an earlier architecture, where the waits are left out).
bool programmatic_launch_compiled();

// ---- gathers, norms, rotary, elementwise: embed.cu, rmsnorm.cu, add_rmsnorm.cu,
//      silu_mul.cu, latent_cache.cu, to_bf16.cu ----

// out[t, :] = embedding row ids[t] as fp32.  out: [n, m.cols]
void launch_embed(const DeviceMatrix& m, const int32_t* ids, int64_t n, float* out, cudaStream_t s);
// out[t, :] = rmsnorm(x[t, :]) exactly as cpu::rmsnorm; out may alias x.
void launch_rmsnorm(const float* x, int64_t ldx, const float* w, float eps, int64_t n_rows, int64_t n,
                    float* out, int64_t ldo, cudaStream_t s);
// x += r, then out = rmsnorm(x): the residual add of block_forward fused with the next norm.
void launch_add_rmsnorm(float* x, const float* r, const float* w, float eps, int64_t n_rows, int64_t n,
                        float* out, cudaStream_t s);
// g[i] = silu(g[i]) * u[i]
void launch_silu_mul(float* g, const float* u, int64_t count, cudaStream_t s);
// The kernels that depend on the position read it from device memory
// (start_pos: one int64 the caller copies in before the launches), so the
// launches themselves do not change from step to step and a captured graph
// replays at any position.
//
// Cache rows *start_pos + t of one layer: [rmsnorm(kv[t, :d_c]) ; rope(kv[t, d_c:])], and
// the rope part q[t, h, d_n:] of every head rotated in place at the same position.
struct LatentCacheArgs {
    const float* kv = nullptr;  // [n, d_c + d_r]
    const float* norm_w = nullptr;
    float eps = 0.0f;
    const float* rope_table = nullptr;  // [capacity, d_r]
    bool interleave = false;
    const int64_t* start_pos = nullptr;
    int64_t d_c = 0, d_r = 0;
    void* cache = nullptr;   // the layer's rows [capacity, d_c + d_r]: float, or bf16 bits
    bool cache_bf16 = false;  // values rounded to bf16 (nearest even) when stored
    float* q = nullptr;      // [n, n_h, d_n + d_r]
    int64_t n_h = 0, d_n = 0;
};
void launch_latent_cache(const LatentCacheArgs& a, int64_t n, cudaStream_t s);
// out[r, c] = bf16(x[r, c]) rounded to nearest even.
void launch_to_bf16(const float* x, int64_t ldx, int64_t n_rows, int64_t cols, uint16_t* out, int64_t ldo,
                    cudaStream_t s);
// hi[r, c] = bf16(x[r, c]) and lo[r, c] = bf16(x[r, c] - hi[r, c]): two bf16 products
// over hi and lo, summed in fp32, carry x to about 2^-17 relative.
void launch_to_bf16_split(const float* x, int64_t ldx, int64_t n_rows, int64_t cols, uint16_t* hi, uint16_t* lo,
                          int64_t ldo, cudaStream_t s);

// ---- matrix products: matvec.cu, dequant_fp8.cu ----

// Products of fewer rows than k_matvec_narrow_rows give each row k_matvec_narrow_split
// warps (partial sums added in warp order), so small matrices still spread over the GPU.
// (8192 since an H200 profile of V2-Lite's decode, 2026-12-04: its 2048-row output
// projection, one warp a row in 256 blocks, read its 8.4 MB at 12 % of the DRAM's peak.)
inline constexpr int64_t k_matvec_narrow_rows = 8192;
inline constexpr int k_matvec_narrow_split = 4;
// y[t, g * y_step + r] = sum_c W[w_row0 + g * w_row_step + r, c] * x[t, g * x_step + c], fp32
// accumulation, one warp per output row and up to 8 tokens per pass over the weights.
void launch_matvec(const DeviceMatrix& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy,
                   const RowGroups& g, cudaStream_t s);
// Whether two matrices can share a fused launch (same type and width).
bool matvec_fusable(const DeviceMatrix& a, const DeviceMatrix& b);
// y[t, r] = silu(gate[r] . x[t]) * (up[r] . x[t]): launch_matvec twice and
// launch_silu_mul in one launch with the same sums (gate and up fusable, same rows).
void launch_matvec_gate_up(const DeviceMatrix& gate, const DeviceMatrix& up, const float* x, int64_t ldx, int64_t n,
                           float* y, int64_t ldy, cudaStream_t s);
// Batches up to this size run a row-wise tail (the residual add and norm after a
// product, the MoE combine) in the last block of the launch before it; one block
// then handles every token's rows, so larger batches keep the separate launch with a
// block per token. MTP's default verify batch is 2 tokens.
inline constexpr int64_t k_fused_tail_max_tokens = 2;
// y = W x (y: [n, w.rows]), then launch_add_rmsnorm(resid, y, norm_w, eps, n, w.rows, out)
// in the same launch (each row added where it is written, the norm by the launch's last
// block), bit for bit: for up to k_fused_tail_max_tokens tokens.
// done: a counter as in last_block.cuh.
void launch_matvec_add_rmsnorm(const DeviceMatrix& w, const float* x, int64_t ldx, int64_t n, float* y,
                               float* resid, const float* norm_w, float eps, float* out, uint32_t* done,
                               cudaStream_t s);
// y1 = W1 x and y2 = W2 x in one launch (W1, W2 fusable; y1, y2 distinct). Four
// warps per row when either matrix is narrow, so a row's sums may differ in order
// from a launch of its matrix alone (a function of the two matrices only).
void launch_matvec_pair(const DeviceMatrix& w1, float* y1, int64_t ldy1, const DeviceMatrix& w2, float* y2,
                        int64_t ldy2, const float* x, int64_t ldx, int64_t n, cudaStream_t s);
// out[r, c] = bf16(fp8(r, c) * scale) with out's rows w.ld apart.
void launch_dequant_fp8(const DeviceMatrix& w, uint16_t* out, cudaStream_t s);

// ---- GGUF blocks decoded: ggml_decode.cu ----
// Bytes of one row of `cols` values of a ggml block type (ggml_blocks.h's shapes), or 0
// for a type without a decoder or a row that is not whole blocks.
int64_t ggml_row_bytes(uint32_t type, int64_t cols);
// Whether the device holds type's rows in another layout than the file's: Q6_K, whose
// 210-byte blocks would leave its codes only 2-byte aligned (every word load shifted into
// place), keeps the 192 bytes of codes (ql, qh) of every block of a row first, 16-byte
// aligned, then every block's 18 bytes of scales and d (device_math.cuh: q6_k_at). The
// bytes are the same in number.
bool ggml_row_rearranged(uint32_t type);
// Whether the GGUF decode products can stage rows of this block type (device_math.cuh:
// ggml_stage_fits; every type the device decodes can).
bool ggml_stage_fits_type(uint32_t type);
// The shared memory a warp's copy of a tile of a row of this block type takes
// (device_math.cuh: ggml_slot_bytes), 0 for a type with none.
int32_t ggml_stage_slot_bytes(uint32_t type);
// Whether the GGUF decode products have an int8 form of this block type (device_math.cuh:
// ggml_int8_type: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K).
bool ggml_int8_fits_type(uint32_t type);
// Launches that took the int8 form so far (the kernel checks ask whether a launch did).
uint64_t ggml_int8_launches();
void count_ggml_int8_launch();
// Launches that staged their rows so far with `buffers` tiles in flight (0: either), the
// kernel checks asking whether a launch did, and the count's increment, by the launchers.
uint64_t ggml_staged_launches(int buffers = 0);
void count_ggml_staged_launch(int buffers);
// One row of cols values of type's blocks (host memory, the file's layout) written to dst
// (host memory, ggml_row_bytes(type, cols) bytes) in the device's layout.
void ggml_device_row(uint32_t type, const void* src, void* dst, int64_t cols);
// Rows row0 .. row0 + rows - 1 of a random model's matrix [*, cols] drawn by its recipe
// (random_draws.h: the host builder's bytes) into dst (device memory), rows pitch bytes
// apart: bf16 values, e4m3 codes, or GGUF blocks in the device's layout (ggml_device_row).
void launch_draw_matrix(const random_draws::Recipe& r, int64_t row0, int64_t rows, int64_t cols, void* dst,
                        int64_t pitch, cudaStream_t s);
// rows x cols values of a ggml block type, its rows (the device's layout) src_ld bytes
// apart at src (device memory; src and src_ld 16-byte aligned), written as bf16 (the engine's decoders, rounded to nearest even) or as
// fp32 (exact) to out, rows ld_out elements apart.
void launch_ggml_to_bf16(uint32_t type, const void* src, int64_t src_ld, int64_t rows, int64_t cols, uint16_t* out,
                         int64_t ld_out, cudaStream_t s);
void launch_ggml_to_f32(uint32_t type, const void* src, int64_t src_ld, int64_t rows, int64_t cols, float* out,
                        int64_t ld_out, cudaStream_t s);
// A Ggml matrix over rows of type's blocks at data (device memory, the device's layout),
// ld bytes apart (data and ld 16-byte aligned);
// its block shape left 0 (so nothing decodes it) for a type without a decoder or
// cols not whole blocks.
DeviceMatrix ggml_device_matrix(uint32_t type, int64_t rows, int64_t cols, const void* data, int64_t ld);
// The row stride, in elements, of a Ggml matrix expanded to bf16: cols rounded up to
// 8, so every row starts 16-byte aligned (the tensor cores' operands).
inline int64_t ggml_bf16_ld(const DeviceMatrix& w) { return (w.cols + 7) / 8 * 8; }
// A Ggml matrix as bf16, rows ggml_bf16_ld(w) elements apart (Gemm's cuBLAS path).
void launch_ggml_matrix_to_bf16(const DeviceMatrix& w, uint16_t* out, cudaStream_t s);

// ---- absorbed multi-head latent attention: absorb_q.cu, mla_attention.cu ----

struct MlaShape {
    int64_t n_h = 0, d_n = 0, d_r = 0, d_v = 0, d_c = 0;
};

inline constexpr int64_t k_absorb_max_nope = 128;  // widest qk_nope_head_dim of launch_absorb_q
// q_abs[t, h, :] = W_UK_h^T q[t, h, :d_n], W_UK_h = rows h * (d_n + d_v) + [0, d_n) of kv_b.
// q: [n, n_h, d_n + d_r]; q_abs: [n, n_h, d_c]
void launch_absorb_q(const DeviceMatrix& kv_b, const float* q, int64_t n, const MlaShape& m, float* q_abs,
                     cudaStream_t s);
// launch_latent_cache(latent, n) and launch_absorb_q in one launch (the fp32 path:
// decode and verify batches, every batch in exact mode):
// extra blocks write the cache rows and rotate q's rope parts while the others
// read q's nope parts. The latent's norm sums in a block of 128 threads, so its
// bits may differ from launch_latent_cache's (a function of the token alone).
void launch_absorb_q_latent(const DeviceMatrix& kv_b, const float* q, int64_t n, const MlaShape& m, float* q_abs,
                            const LatentCacheArgs& latent, cudaStream_t s);

// How the attention kernel runs on a device: which kernel (mma: the tensor-core
// kernel of mla_attention_mma.cu, sixteen heads a block, for a bf16 cache on
// sm_80 and later; else the CUDA-core kernel of mla_attention.cu, eight heads a
// block), splits per token of a decode or verify batch (about one block per
// multiprocessor for all of a token's head groups, 32 to 128), cache tiles in
// shared memory per block (2: the next tile's copies in flight during the
// current one's work, when two such blocks fit a multiprocessor; 1; 0 when not
// even one tile fits) and the partial buffers' size in (token, split) pairs.
struct AttentionPlan {
    int split_cap = 32, stages = 0;
    int64_t max_parts = 0;
    bool mma = false;
    int mma_parts = 2;  // bf16 parts of each query and probability: 2, or 3 in exact mode
};
// The plan with the split buffers it sizes.
struct AttentionPartials {
    float* acc = nullptr;  // [plan.max_parts, n_h, d_c] unnormalised context of one split
    float* ml = nullptr;   // [plan.max_parts, n_h, 2] running max and sum of one split
    AttentionPlan plan;
};

// Largest latent width and rope width the attention kernel holds in registers.
inline constexpr int64_t k_attention_max_latent = 512, k_attention_max_rope = 64;
// s[r, c] = softmax of s[r, 0 .. len_r) in place for c < len_r, 0 for len_r <= c < width,
// with len_r = min(width, first_len + r % rows_per_head); rows ld apart (mla_prefill_softmax.cu).
// bf16_out: the probabilities rounded to bf16 in place of the row's own fp32
// scores instead (row r's width values at the start of its bytes: bf16 rows 2 ld apart).
void launch_prefill_softmax(float* s, int64_t n_rows, int64_t rows_per_head, int64_t ld, int64_t width,
                            int64_t first_len, bool bf16_out, cudaStream_t stream);
// The plan for this device and cache, with the kernel allowed its shared memory
// (stages 0: the device cannot give one tile). allow_mma: the device has bf16
// tensor cores and the tensor-core kernel is not switched off (it is taken for a
// bf16 cache whose widths are multiples of 16 within the kernels' 512 + 64, when
// the plug-in's code for the device is sm_80 or later); exact: its operands in three
// bf16 parts instead of two. split_cap > 0 asks for that many splits (1 to 128)
// and max_stages 1 for single tiles: side-by-side benches.
AttentionPlan plan_attention(const MlaShape& m, int n_sm, bool cache_bf16, size_t max_shared_per_block,
                             bool allow_mma, bool exact, int split_cap = 0, int max_stages = 2);
// The value absorption that can follow the attention in its own launches (below):
// o [n, n_h, d_v] = W_UV_h ctx[t, h, :] per head, W_UV_h being kv_b's rows
// h (d_n + d_v) + d_n .. + d_v.
struct AbsorbV {
    const DeviceMatrix* kv_b = nullptr;
    float* o = nullptr;
};
// Whether kv_b's value rows can be read by the fused form (not GGUF blocks).
bool merge_absorb_v_fits(const DeviceMatrix& kv_b, const MlaShape& m);
// ctx[t, h, :] = sum_s softmax_s((q_abs . c_s + q_pe . kpe_s) * scale) c_s over cache rows
// s <= *start_pos + t.  q: [n, n_h, d_n + d_r] (rotated); cache: the layer's rows, fp32
// or (cache_bf16) bf16. The launch (grid, arguments) depends on n only, never on the position.
// With absorb_v.kv_b, batches that split each token's rows (up to k_split_max_tokens
// tokens: decode, verify) merge the splits and absorb the values in one launch
// (merge_absorb_v_fits), writing absorb_v.o instead of ctx; returns whether it did
// (else the caller absorbs ctx itself).
bool launch_mla_attention(const float* q_abs, const float* q, const void* cache, bool cache_bf16, int64_t n,
                          const int64_t* start_pos, const MlaShape& m, float scale, int n_sm,
                          const AttentionPartials& parts, float* ctx, cudaStream_t s, const AbsorbV& absorb_v = {});

// ---- routing and grouped experts: moe_route.cu, moe_group_pairs.cu, moe_experts.cu,
//      moe_combine.cu ----

struct RouteParams {
    int32_t n_experts = 0, top_k = 0, n_group = 1, topk_group = 1;
    int32_t method = 0;  // 0 greedy, 1 group_limited_greedy, 2 noaux_tc
    bool sigmoid = false;
    bool normalise = false;  // norm_topk_prob && top_k > 1
    float scaling = 1.0f;
    const float* bias = nullptr;  // e_score_correction_bias [E] or null
};
// Largest expert count and top_k the routing kernels handle.
inline constexpr int64_t k_max_experts = 1024, k_max_top_k = 32;

// route_token for every token: z [n, E] router logits; ids/weights [n, stride], top_k at offset 0.
void launch_route(const float* z, int64_t n, const RouteParams& p, int32_t* ids, float* weights, int64_t stride,
                  cudaStream_t s);

// (token, slot) pairs p = t * top_k + k grouped by expert, built on the device.
struct ExpertPairs {
    int32_t* counts = nullptr;   // [E] pairs per expert
    int32_t* offsets = nullptr;  // [E] first entry of each expert in list
    int32_t* active = nullptr;   // [E] experts with pairs, ascending; n_active[0] of them
    int32_t* n_active = nullptr;
    int32_t* list = nullptr;     // [n * top_k] pair indices, by expert then ascending
    // Tiles of up to k_expert_tile_pairs pairs of one expert for the tensor-core
    // kernels: [expert, first pair within the expert's list] each, by expert.
    int32_t* tiles = nullptr;    // [expert_tiles_bound(n, top_k, E), 2]
    int32_t* n_tiles = nullptr;
};
inline constexpr int64_t k_expert_tile_pairs = 64;
// Tiles an n-token chunk can need: sum over experts of ceil(count / 64) <= pairs / 64 + active experts.
inline int64_t expert_tiles_bound(int64_t n, int64_t top_k, int64_t n_experts) {
    const int64_t pairs = n * top_k;
    return pairs / k_expert_tile_pairs + (n_experts < pairs ? n_experts : pairs) + 1;
}
void launch_group_pairs(const int32_t* ids, int64_t stride, int64_t n, int32_t top_k, int32_t n_experts,
                        const ExpertPairs& pairs, cudaStream_t s);
// launch_route then launch_group_pairs in one launch (one block), for batches of up
// to k_route_group_max_tokens tokens whose scratch fits route_group_fits; the same results.
inline constexpr int64_t k_route_group_max_tokens = 16;
bool route_group_fits(int64_t n, const RouteParams& p);
void launch_route_group(const float* z, int64_t n, const RouteParams& p, int32_t* ids, float* weights,
                        int64_t stride, const ExpertPairs& pairs, cudaStream_t s);
// z = x router^T (launch_matvec's sums) and launch_route_group in one launch: the
// last block to finish its rows of z routes and groups. done: a counter in device
// memory, zero before the first launch; the kernel leaves it at zero.
bool router_route_group_fits(int64_t n, const RouteParams& p, const DeviceMatrix& router);
void launch_router_route_group(const DeviceMatrix& router, const float* x, int64_t ldx, int64_t n, float* z,
                               const RouteParams& p, int32_t* ids, float* weights, int64_t stride,
                               const ExpertPairs& pairs, uint32_t* done, cudaStream_t s);

// Per-expert descriptors of one MoE layer in device memory: gate[E], up[E], down[E].
struct DeviceExperts {
    const DeviceMatrix* gate = nullptr;
    const DeviceMatrix* up = nullptr;
    const DeviceMatrix* down = nullptr;
    DeviceDtype gate_up_dtype = DeviceDtype::F32, down_dtype = DeviceDtype::F32;
    int64_t inter = 0;  // moe_intermediate_size
    bool ggml_fast = false;  // GGUF experts: DeviceMatrix::ggml_fast (all of them alike)
    uint8_t ggml_stage = 0;  // GGUF experts: the least of every one's DeviceMatrix::ggml_stage
    // GGUF experts: where every expert's gate and up (and, apart, down) is
    // DeviceMatrix::ggml_int8 with blocks of one size, that size in values (32 or 256),
    // else 0.
    int32_t ggml_int8_gate_up = 0, ggml_int8_down = 0;
    // GGUF experts: the largest slot (ggml_stage_slot_bytes) of their gate and up, and of
    // their down; 0: the largest of any block type.
    int32_t ggml_slot_gate_up = 0, ggml_slot_down = 0;
};
// The end of a MoE layer (launch_moe_combine): x += the routed experts' weighted
// outputs + shared, then out = rmsnorm(x) with norm_w.
struct MoeCombine {
    float* x = nullptr;              // [n, hidden] the residual stream
    const float* weights = nullptr;  // [n, stride] gate weights, top_k at offset 0
    int64_t stride = 0;
    const float* shared = nullptr;  // [n, hidden] or null
    const float* norm_w = nullptr;
    float eps = 0.0f;
    float* out = nullptr;     // [n, hidden]
    // The fused form's counters (last_block.cuh): done[0] for the launch, done[1 + c]
    // for each column c of its blocks; `counters` of them, moe_combine_counters(hidden).
    uint32_t* done = nullptr;
    int64_t counters = 0;
};
// Counters the fused combine of a hidden-wide row needs: the down launch's blocks
// take at least 8 rows each.
inline int64_t moe_combine_counters(int64_t hidden) { return 1 + (hidden + 7) / 8; }
// A MoE layer's shared experts (one MLP) computed in the routed experts' launches
// (the fp32 kernel: decode and verify batches): h[t, :] = silu(gate x[t]) * up x[t]
// in the gate/up launch, out[t, :] = down h[t, :] in the down launch, one warp per
// row (launch_matvec's sums for matrices of at least k_matvec_narrow_rows rows; it
// splits narrower ones over four warps).
struct SharedExpertLaunch {
    DeviceMatrix gate, up, down;
    float* h = nullptr;    // [n, gate.rows]
    float* out = nullptr;  // [n, down.rows]
};
// Whether the shared MLP can join e's fp32 launches: the same weight types as the
// routed experts, gate and up alike, of width hidden, down back to hidden.
bool experts_shared_fusable(const DeviceExperts& e, const DeviceMatrix& gate, const DeviceMatrix& up,
                            const DeviceMatrix& down, int64_t hidden);
// The tensor-core path of the routed experts (prefill chunks, sm_80+, BF16, FP8 and
// GGUF experts: moe_experts_mma.cu, bf16 operands, activations rounded, FP8 times its
// scale and GGUF blocks' values rounded, fp32 accumulation, over ExpertPairs::tiles). Its operands are
// bf16 rows, ld_x and ld_h elements apart (multiples of 8, 16-byte aligned):
// x_bf16 [n, ld_x] gets the gate/up input rounded, h_bf16 [n * top_k, ld_h] the
// SwiGLU outputs rounded (as the staging rounds them: the same products). Tiles
// of 64 pairs by tile_rows (64 or 128) weight rows; both widths give the same bits.
struct ExpertMma {
    uint16_t* x_bf16 = nullptr;
    int64_t ld_x = 0;
    uint16_t* h_bf16 = nullptr;
    int64_t ld_h = 0;
    int tile_rows = 64;
};
// h[p, :] = silu(gate_e x[t]) * up_e x[t] for every pair p = (t, k) routed to expert e.
// x: [n, hidden]; h: [n * top_k, inter]. With mma (not F32 experts) the
// tensor-core path writes mma->h_bf16 instead of h; without, the fp32 kernel
// (moe_experts.cu). shared (or null; not with mma): the shared experts' gate/up of
// x in the same launch.
void launch_experts_gate_up(const DeviceExperts& e, const ExpertPairs& pairs, const float* x, int64_t n,
                            int32_t top_k, int64_t hidden, int32_t n_experts, float* h, const ExpertMma* mma,
                            const SharedExpertLaunch* shared, cudaStream_t s);
// y[p, :] = down_e h[p, :].  y: [n * top_k, hidden]; with mma from mma->h_bf16 (the
// gate/up launch's with the same mma). shared: its down of shared->h.
// combine (or null; not with mma, at most k_fused_tail_max_tokens tokens):
// launch_moe_combine of y in the same launch (each column of blocks adds up its rows,
// the launch's last block takes the norm), bit for bit.
void launch_experts_down(const DeviceExperts& e, const ExpertPairs& pairs, const float* h, int64_t n,
                         int32_t top_k, int64_t hidden, int32_t n_experts, float* y, const ExpertMma* mma,
                         const SharedExpertLaunch* shared, const MoeCombine* combine, cudaStream_t s);
// x[t, :] += (sum_k weights[t, k] * y[t * top_k + k, :]) + shared[t, :] (shared may be null),
// then out[t, :] = rmsnorm(x[t, :]) with norm_w (the next block's input norm or the
// final norm; as launch_rmsnorm, bit for bit).
void launch_moe_combine(const MoeCombine& c, const float* y, int64_t n, int32_t top_k, int64_t hidden,
                        cudaStream_t s);

// ---- token choice (sampler.cpp's choose_rows / verify_rows on the device):
//      choice_penalise.cu, choice_argmax.cu, choice_distribution.cu, choice_draw.cu,
//      choice_verify.cu. One block per row of the vocabulary. ----

struct ChoiceParams {
    float temperature = 0.0f, top_p = 1.0f, min_p = 0.0f, penalty = 1.0f;
    int32_t top_k = 0;
    int64_t vocab = 0, n_valid = 0;  // ids >= n_valid are never chosen
};
// Work space for up to `rows` rows of `vocab` entries.
struct ChoiceBuffers {
    float* work = nullptr;        // [rows, V] penalised logits, then exp((x - max) / T)
    uint32_t* marks = nullptr;    // [rows, V] all zero between calls
    float* sort_keys = nullptr;   // [rows, V]
    int32_t* sort_ids = nullptr;  // [rows, V]
    int32_t* iota = nullptr;      // [rows, V] i % V (launch_choice_init)
    int32_t* seg_begin = nullptr;  // [rows]
    int32_t* seg_end = nullptr;    // [rows]
    void* sort_temp = nullptr;
    size_t sort_temp_bytes = 0;
    void* argmax_partial = nullptr;  // choice_argmax_partial_bytes(rows)
    int64_t rows = 0;
};
size_t choice_argmax_partial_bytes(int64_t rows);
// Bytes of CUB's sort work space for `rows` rows of `vocab` entries.
size_t choice_sort_temp_bytes(int64_t rows, int64_t vocab);
// Fills iota and clears marks (once, after allocation).
void launch_choice_init(const ChoiceBuffers& b, int64_t vocab, cudaStream_t s);
// work[r] = logits[r] with the repetition penalty on the ids of history and of
// tail[0, tail_first + r), each id once (x > 0 ? x / penalty : x * penalty).
// Without a penalty the steps below read the logits themselves instead.
void launch_choice_penalise(const float* logits, int64_t n, const ChoiceParams& p, const int32_t* history,
                            int64_t n_history, const int32_t* tail, int64_t n_tail, int64_t tail_first,
                            const ChoiceBuffers& b, cudaStream_t s);
// ids[r] = the first id of the largest src[r, 0 .. n_valid) (src: [n, V], the
// penalised work rows or the logits); 32 blocks per row, then one warp merges.
void launch_choice_argmax(const float* src, int64_t n, const ChoiceParams& p, const ChoiceBuffers& b, int32_t* ids,
                          cudaStream_t s);
// probs[r] = Sampler::distribution of src[r] (temperature, then top-k, top-p and
// min-p over candidates sorted by probability, ties by id); work is overwritten
// (src may be work).
void launch_choice_distribution(const float* src, int64_t n, const ChoiceParams& p, const ChoiceBuffers& b,
                                float* probs, cudaStream_t s);
// ids[r] = Sampler::draw(probs[r], u[r]).
void launch_choice_draw(const float* probs, int64_t n, int64_t vocab, const double* u, int32_t* ids,
                        cudaStream_t s);
// verify_rows: targets p [D + 1, V], draft distributions q [D, V], drafts [D],
// u [D + 1] -> out = {accepted, next}. One block.
void launch_choice_verify(const float* p, const float* q, const int32_t* drafts, int64_t D, int64_t vocab,
                          const double* u, int32_t* out, cudaStream_t s);

}  // namespace cetus::cuda
