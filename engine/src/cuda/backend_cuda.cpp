// The CUDA backend (libcetus-cuda.so): the model's forward passes on one GPU,
// mirroring model.cpp, mla.cpp (absorbed form), moe.cpp and mtp.cpp step by
// step, with the latent cache [layer][capacity][d_c + d_r] on the device in fp32
// or, when asked for (KvCacheType::BF16), bf16 as the CPU's bf16 cache rounds it.
// All work of a call runs on the backend's stream: inputs are copied in, the
// results out, with one synchronisation per chunk of up to 1024 tokens (256 when
// every row's logits come back or memory is short; one per call for the
// generator's prefill chunks and decode steps).
//
// Precision: fp32 activations and fp32 accumulation in every own kernel, so
// results differ from the CPU only by summation order (~1e-6 relative) and by
// expf against std::exp. Products over more than 16 tokens go through cuBLAS
// with activations rounded to bf16 (FP8 weights expanded to bf16), which is
// within bf16 tolerance; the routed experts of such chunks take the grouped
// tensor-core kernel at the same precision (moe_experts_mma.cu; BF16, FP8 and
// GGUF experts; CETUS_CUDA_EXPERT_MMA=0 keeps them on the fp32 kernel), and their
// attention runs as TF32 GEMMs with a causal softmax between them (Gemm::mla_prefill;
// CETUS_CUDA_ATTENTION_GEMM=0 keeps the flash-decoding kernel).
// CETUS_CUDA_EXACT=1 (read at creation) sends every product through the fp32
// kernels, except that a bf16 cache's attention takes the tensor cores in both
// modes (mla_attention_mma.cu: the cached values are bf16 already, the queries
// and probabilities go in as bf16 parts, two (~2^-18) or in exact mode three
// (below fp32's rounding); CETUS_CUDA_ATTENTION_MMA=0 keeps the CUDA-core
// kernel). Router logits always take the fp32 kernel.
// CETUS_CUDA_SYNC=1 waits after every launch so a kernel fault names its kernel.
//
// Calls of up to 16 tokens (decode, MTP drafts and verify) replay as CUDA graphs, captured at
// the second call of a shape; CETUS_CUDA_GRAPHS=0, CETUS_CUDA_SYNC=1 or a failed capture launch
// kernel by kernel instead, with identical results.
//
// Token choices (greedy and sampled, with the drafts' verification) run on the
// device over the logits the last call left there (choice_*.cu); only the chosen
// ids come back. CETUS_CUDA_SAMPLING=host (read at creation) copies the logits
// back and leaves the choices to the host instead.
//
// Not in this version: FP8 tensor-core GEMMs (FP8 weights are expanded to bf16
// for long chunks), an FP8 cache.
#include "cuda_plugin.h"
#include "cuda_util.h"
#include "device_weights.h"
#include "gemm.h"
#include "kernels.h"
#include "mla.h"

#include "cetus/error.h"

#include <cublas_v2.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <vector>

namespace cetus::cuda {
namespace {

// Tokens per pass through the model: long passes read each routed expert's
// weights once for more tokens (at 256 tokens V2-Lite's 64 experts each get ~24
// pairs, and a prefill chunk is bound by reading the weights; at 1024, ~96), so
// prompts go through in passes of up to 1024 tokens when the work buffers fit,
// else 256. Passes that return the logits of every row stay at 256 rows.
constexpr int64_t k_chunk_tokens = 1024, k_small_chunk_tokens = 256;
constexpr int64_t k_logit_chunk_tokens = Backend::k_logit_chunk_rows;
// launch_group_pairs holds a chunk's pairs and two ints per expert in 48 KiB of shared memory.
constexpr int64_t k_group_pairs_ints = 48 * 1024 / 4;
constexpr size_t k_cublas_workspace_bytes = size_t(32) << 20;
constexpr size_t k_reserved_bytes = size_t(256) << 20;  // cuBLAS and runtime allocations of their own
// Calls up to this many tokens replay as CUDA graphs: they take only the own
// fp32 kernels (cuBLAS, which allocates and may synchronise, is never captured).
constexpr int64_t k_graph_max_tokens = Gemm::k_max_small_tokens;
constexpr size_t k_max_graphs = 64;  // keys remembered (seen or captured); later ones run directly

double gib(size_t bytes) { return double(bytes) / double(size_t(1) << 30); }

std::string fixed1(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", v);
    return buf;
}

std::string cuda_version(int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); }

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

struct DeviceInfo {
    std::string name;
    int major = 0, minor = 0, n_sm = 0, runtime_version = 0;
    size_t total_bytes = 0, max_shared_optin = 0, l2_bytes = 0;
};

DeviceInfo query_device(int device) {
    cudaDeviceProp p;
    CETUS_CUDA(cudaGetDeviceProperties(&p, device));
    DeviceInfo d;
    d.name = p.name;
    d.major = p.major;
    d.minor = p.minor;
    d.n_sm = p.multiProcessorCount;
    d.total_bytes = p.totalGlobalMem;
    d.max_shared_optin = p.sharedMemPerBlockOptin;
    d.l2_bytes = size_t(std::max(p.l2CacheSize, 0));
    CETUS_CUDA(cudaRuntimeGetVersion(&d.runtime_version));
    return d;
}

// Widest input and largest FP8 matrix among the products that may take cuBLAS
// (everything but the experts, the router and the embeddings' gathers), and the
// bf16 scratch GGUF matrices take: whole (kv_b_proj, or a small matrix), or
// k_ggml_slice_elems at a time.
struct GemmExtent {
    static constexpr size_t k_ggml_slice_elems = size_t(16) << 20;  // 32 MiB of bf16
    int64_t max_cols = 0;
    size_t expand_elems = 0;
    // whole: a matrix Gemm expands whole (kv_b_proj, whose heads are strided batches).
    void add(const Matrix& m, bool whole = false) {
        max_cols = std::max(max_cols, m.cols);
        if (m.dtype == Dtype::F8_E4M3) expand_elems = std::max(expand_elems, size_t(m.rows * round_up(m.cols, 16)));
        if (m.dtype == Dtype::Ggml) {
            const size_t row = size_t(round_up(m.cols, 8)), all = size_t(m.rows) * row;
            expand_elems = std::max(expand_elems, whole ? all : std::min(all, std::max(k_ggml_slice_elems, row)));
        }
    }
    void add(const MlpWeights& w) {
        add(w.gate);
        add(w.up);
        add(w.down);
    }
    void add(const LayerWeights& lw, bool q_lora) {
        const AttentionWeights& a = lw.attn;
        if (q_lora) {
            add(a.q_a_proj);
            add(a.q_b_proj);
        } else {
            add(a.q_proj);
        }
        add(a.kv_a_proj_with_mqa);
        add(a.kv_b_proj, true);
        add(a.o_proj);
        if (!lw.is_moe) add(lw.mlp);
        else if (lw.moe.has_shared) add(lw.moe.shared);
    }
};

// Everything that changes the work a forward or MTP call enqueues, besides the
// inputs in the staging buffers: the key of a captured graph.
struct GraphKey {
    int64_t module = -1;  // -1 the main model, k MTP module k
    int64_t n_tokens = 0;
    bool all_logits = false, want_hidden = false, want_routing = false;
    bool logits_to_host = true;
    int64_t argmax_n_valid = 0;
    int variant = 0;  // the step switches' values (CudaBackend::step_variant)
    bool operator==(const GraphKey&) const = default;
};

class CudaBackend final : public Backend {
public:
    explicit CudaBackend(const CudaBackendArgs& args);
    ~CudaBackend() override;
    CudaBackend(const CudaBackend&) = delete;
    CudaBackend& operator=(const CudaBackend&) = delete;

    std::string name() const override { return "cuda"; }
    std::string description() const override;
    std::string rows_identity() const override {
        // (rows decoded with int8 activations kept apart from the others)
        return "cuda, " + m_info.name + ", sm_" + std::to_string(m_info.major) + std::to_string(m_info.minor) + ", CUDA " +
               cuda_version(m_info.runtime_version) + (m_int8 ? ", int8 activations" : "");
    }
    int64_t capacity() const override { return m_capacity; }
    int64_t prefill_chunk() const override { return m_chunk; }
    int64_t n_tokens() const override { return m_n_tokens; }
    void truncate(int64_t n) override { m_n_tokens = n; }
    uint64_t kv_bytes_per_token() const override {
        return uint64_t(m_n_cache_layers * (m_config.kv_lora_rank + m_config.qk_rope_head_dim)) * cache_value_bytes();
    }
    KvCacheType kv_cache_type() const override { return m_cache_bf16 ? KvCacheType::BF16 : KvCacheType::F32; }
    std::vector<float> cache_row(int64_t layer, int64_t pos) override;
    void save_rows(int64_t n, uint8_t* out) override;
    void load_rows(int64_t n, const uint8_t* in) override;
    void forward(const int32_t* ids, int64_t T, int64_t start_pos, const ForwardOptions& opt,
                 ForwardOutput& out) override;
    void mtp_forward(int64_t k, const float* hidden, const int32_t* next_ids, int64_t T, int64_t start_pos,
                     const MtpOptions& opt, MtpOutput& out) override;
    bool samples_on_device() const override { return m_device_sampling; }
    void choose(int64_t row0, int64_t n, const ChoiceSpec& spec, const double* u, int64_t q_slot,
                int32_t* ids) override;
    VerifyResult verify(const ChoiceSpec& spec, const int32_t* drafts, int64_t D, const double* u) override;
    void certain_draft(int64_t slot, int32_t id) override;
    double copy_bandwidth_gbs() override;
    double peak_bf16_tflops() override;
    uint64_t held_weight_bytes(const Matrix& w) const override {
        const auto it = m_weights.read_bytes.find(w.key());
        return it != m_weights.read_bytes.end() ? it->second : 0;
    }
    std::vector<StepSwitch> step_switches() const override;
    void set_step_switch(const std::string& name, int value) override;
    void forget_prepared_steps() override;

private:
    // Device work buffers for one chunk of m_chunk tokens.
    struct Scratch {
        int64_t* start_pos;  // position of the chunk's first token (read by rope, cache write, attention)
        int32_t* ids;
        float* hidden_in;  // [chunk, H] MTP input
        float *x, *a, *r, *hn;  // [chunk, H] residual, normed input, branch output, final norm
        float* cat;        // [chunk, 2H] MTP: [enorm(embedding) ; hnorm(hidden)]
        float* cq;         // [chunk, q_lora_rank]
        float* q;          // [chunk, n_h, d_n + d_r]
        float* kv;         // [chunk, d_c + d_r]
        float *q_abs, *ctx;  // [chunk, n_h, d_c]
        float* o;          // [chunk, n_h, d_v]
        AttentionPartials parts;
        float *g, *u;      // [chunk, widest dense or shared MLP]
        float* z;          // [chunk, E] router logits
        // The fused launches' last-block counters (zero between launches; last_block.cuh):
        // [0] for a launch, the rest for the fused combine's columns (moe_combine_counters).
        uint32_t* grid_done;
        int64_t grid_counters;
        int32_t* route_ids;  // [chunk, max(n_moe, 1), K]
        float* route_w;
        ExpertPairs pairs;
        float* h;           // [chunk * K, moe_intermediate_size]; the tensor-core path's bf16 rows
        uint16_t* x_bf16;   // [chunk, round_up(H, 8)]: the tensor-core experts' input
        float* y;           // [chunk * K, H]
        float* shared_out;  // [chunk, H]
        float* logits;      // [chunk, V]
        Gemm::Scratch gemm;
        // Token choice over up to k_max_choice_rows rows.
        ChoiceBuffers choice;
        float* choice_probs;  // [rows, V] processed distributions (verify: the targets)
        float* choice_q;      // [rows, V] the drafts' distributions, by slot
        int32_t* choice_history;  // [capacity] ids penalised in every row
        int32_t* choice_tail;     // [2 * rows]
        double* choice_u;         // [rows + 1]
        int32_t* choice_drafts;   // [rows]
        int32_t* choice_out;      // [rows]
        int32_t* argmax_ids;      // [rows] the forward's fused argmax
    };
    // Pinned host buffers for the copies in and out. A replayed graph's copies
    // read and write these same addresses, so the inputs go here before a launch.
    struct Staging {
        int64_t* start_pos;
        int32_t* ids;       // [chunk]
        float* hidden_in;   // [chunk, H]
        float* logits;      // [chunk, V]
        float* hidden_out;  // [chunk, H]
        int32_t* route_ids;  // [chunk, n_moe * K]
        float* route_w;
        int32_t* choice_history;  // [capacity]
        int32_t* choice_tail;     // [2 * rows]
        double* choice_u;         // [rows + 1]
        int32_t* choice_drafts;   // [rows]
        int32_t* choice_out;      // [rows]
        int32_t* argmax_ids;      // [rows]
    };

    Scratch carve_scratch(Carver& c) const;
    Staging carve_staging(Carver& c) const;
    void check_span(int64_t T, int64_t start_pos) const;
    size_t cache_value_bytes() const { return m_cache_bf16 ? sizeof(uint16_t) : sizeof(float); }
    void* cache_rows(int64_t layer) const {
        return static_cast<char*>(m_cache.get()) +
               size_t(layer * m_capacity * (m_config.kv_lora_rank + m_config.qk_rope_head_dim)) * cache_value_bytes();
    }
    void to_host(void* dst, const void* src, size_t bytes) {
        CETUS_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, m_stream.get()));
    }
    void to_device(void* dst, const void* src, size_t bytes) {
        CETUS_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, m_stream.get()));
    }

    // One chunk's work from the staging buffers in to the staging buffers out,
    // enqueued on the stream (directly or into a capture).
    void enqueue_forward(int64_t n, int64_t logit_rows, const ForwardOptions& opt);
    void enqueue_mtp(int64_t k, int64_t n, bool want_hidden, MtpLogits logits_to, int64_t argmax_n_valid);
    // The argmax of `rows` rows of m_s.logits over [0, n_valid) into m_h.argmax_ids.
    void enqueue_argmax(int64_t rows, int64_t n_valid);
    // Token choice: checks and uploads a request's inputs, runs `enqueue`, waits.
    ChoiceParams choice_params(const ChoiceSpec& spec, int64_t row0, int64_t n) const;
    void note_history_uploaded(const ChoiceSpec& spec);
    void run_choice(const ChoiceSpec& spec, const ChoiceParams& p, int64_t row0, int64_t n, const double* u,
                    int64_t n_u, const int32_t* drafts, int64_t n_drafts, int64_t n_out,
                    const std::function<void(const float*)>& enqueue);
    void upload_choice_inputs(const ChoiceSpec& spec, const double* u, int64_t n_u, const int32_t* drafts,
                              int64_t n_drafts);
    // Enqueues `enqueue` as a replayed graph when the key allows it, directly otherwise.
    void run(const GraphKey& key, const std::function<void()>& enqueue);
    void run_and_wait(const GraphKey& key, const std::function<void()>& enqueue);
    // Captures and instantiates `enqueue`; empty (and graphs off) on any failure.
    GraphExec capture(const std::function<void()>& enqueue);
    void disable_graphs(const std::string& why);
    // The step switches' values in one number (GraphKey::variant), and what they say.
    int step_variant() const;
    std::string step_text() const;
    // Every GGUF matrix's (and experts' launch's) rows staged as asked (0, 1, 2) where
    // their blocks can be (the host's descriptors: the launchers decide from them).
    void set_ggml_stage(uint8_t stage);
    // Every weight's DeviceMatrix::l2_prefetch, the experts' descriptors in device memory too.
    void set_l2_prefetch(bool on);
    // The host's descriptors of every product's weights, which the launchers read: on_layer
    // for each layer (main, then the MTP modules' blocks), on_matrix for each of its
    // matrices (not the experts', whose descriptors are in device memory), the MTP
    // modules' own products and the output head.
    template <class OnLayer, class OnMatrix>
    void each_weight(OnLayer&& on_layer, OnMatrix&& on_matrix);

    // One decoder block on x, with a = input_norm(x) on entry; its last residual
    // add is fused with the norm that follows it: out = next_norm(x) (the next
    // block's input norm into a, or the final norm into hn).
    void block(const DeviceLayer& l, int64_t cache_layer, int64_t n, int32_t* route_ids, float* route_w,
               int64_t route_stride, const float* next_norm, float* out);
    void attention(const DeviceLayer& l, int64_t cache_layer, int64_t n);
    bool prefetch_ahead(const DeviceLayer& l, int64_t n);
    void moe(const DeviceLayer& l, int64_t n, int32_t* route_ids, float* route_w, int64_t route_stride,
             const float* next_norm, float* out);
    void mlp(const DeviceMlp& w, const float* in, int64_t n, float* out, const float* next_norm = nullptr,
             float* norm_out = nullptr);

    const ModelConfig& m_config;
    int m_device;
    DeviceInfo m_info;
    int64_t m_capacity, m_chunk, m_logit_chunk = 0, m_n_moe, m_n_cache_layers, m_mlp_width;
    int64_t m_n_tokens = 0;
    int64_t m_logit_rows = 0;  // rows of the last call's logits in m_s.logits
    int64_t m_attn_batch_elems = int64_t(Gemm::k_attn_batch_elems);
    int64_t m_expanded_bytes = int64_t(Gemm::k_expanded_bytes);
    Gemm::PrefillForm m_prefill_form = Gemm::PrefillForm::Auto;  // CETUS_CUDA_PREFILL_FORM
    int m_expert_tile_rows = 64;  // the tensor-core experts' tile width (CETUS_CUDA_EXPERT_TILE_ROWS=128)
    bool m_interleave, m_exact, m_expert_mma = true, m_attention_gemm = true, m_device_sampling = true;
    bool m_l2_prefetch = false;  // CETUS_CUDA_PREFETCH=1 (DeviceMatrix::l2_prefetch)
    uint8_t m_ggml_stage = 0;    // CETUS_CUDA_GGUF_STAGE=1 or 2 (DeviceMatrix::ggml_stage)
    bool m_int8 = false;         // the model's int8 activations (DeviceMatrix::ggml_int8)
    bool m_fuse = true;  // the decode fusions (CETUS_CUDA_FUSE=0: off), handed to m_gemm as its counter
    bool m_overlap = false;  // CETUS_CUDA_OVERLAP=1: decode's shared experts on m_side (moe)
    bool m_prefetch_ahead = false;  // CETUS_CUDA_PREFETCH_AHEAD=1: attention's L2 prefetch on m_side
    bool m_pdl = false;             // CETUS_CUDA_PDL=1: programmatic dependent launch (run_and_wait)
    bool m_has_shared = false;      // some MoE layer has shared experts (the overlap's switch applies)
    bool m_has_ggml_stage = false;  // some GGUF matrix can be staged (the staging's switch applies)
    bool m_cache_bf16;   // the latent cache's values in bf16 (else fp32)
    std::vector<int32_t> m_history_on_device;  // what m_s.choice_history holds
    float m_scale;
    MlaShape m_shape;
    RouteParams m_route;
    AttentionPlan m_attention;
    GemmExtent m_extent;

    Stream m_stream;
    // The second stream of decode and verify batches (CETUS_CUDA_OVERLAP=1,
    // CETUS_CUDA_PREFETCH_AHEAD=1), forked from m_stream at m_fork and joined back at m_join
    // within each MoE layer, and at m_ahead_fork and m_ahead_join within each attention.
    Stream m_side;
    Event m_fork, m_join, m_ahead_fork, m_ahead_join;
    DeviceWeights m_weights;
    DeviceBuffer m_cache;
    DeviceBuffer m_scratch_memory;
    Scratch m_s{};
    PinnedBuffer m_staging_memory;
    Staging m_h{};
    std::unique_ptr<Gemm> m_gemm;
    double m_copy_gbs = -1.0, m_peak_tflops = -1.0;  // measured on first request
    std::function<void(int, const std::string&)> m_log;  // may be empty

    // Graph replay (declared last: the executables go before the stream and buffers).
    struct CachedGraph {
        GraphKey key;
        GraphExec exec;  // empty: seen once, captured at the next call
    };
    bool m_graphs = false;
    std::string m_graphs_off;  // why replay is off
    std::vector<CachedGraph> m_graph_cache;
};

// Times `run` (enqueued on s) after one warm-up call, over `reps` calls; seconds per call.
template <class F>
double time_on_stream(cudaStream_t s, int reps, F&& run) {
    cudaEvent_t raw_a = nullptr, raw_b = nullptr;
    CETUS_CUDA(cudaEventCreate(&raw_a));  // timing events
    const Event a(raw_a);
    CETUS_CUDA(cudaEventCreate(&raw_b));
    const Event b(raw_b);
    run();
    CETUS_CUDA(cudaEventRecord(a.get(), s));
    for (int i = 0; i < reps; ++i) run();
    CETUS_CUDA(cudaEventRecord(b.get(), s));
    CETUS_CUDA(cudaEventSynchronize(b.get()));
    float ms = 0.0f;
    CETUS_CUDA(cudaEventElapsedTime(&ms, a.get(), b.get()));
    return double(ms) / 1e3 / reps;
}

CudaBackend::CudaBackend(const CudaBackendArgs& args)
    : m_config(args.model->config()), m_device(args.device), m_capacity(args.capacity),
      m_chunk(std::min(k_chunk_tokens, args.capacity)), m_n_moe(args.n_moe_layers),
      m_n_cache_layers(m_config.num_hidden_layers + m_config.num_nextn_predict_layers),
      m_interleave(args.rope_interleave), m_cache_bf16(args.cache_bf16), m_scale(args.softmax_scale),
      m_log(args.log) {
    const ModelConfig& c = m_config;
    const Model& model = *args.model;
    CETUS_CUDA(cudaSetDevice(m_device));
    m_info = query_device(m_device);
    m_exact = env_is("CETUS_CUDA_EXACT", "1");
    // Synchronising after each launch is illegal while capturing.
    m_graphs_off = env_is("CETUS_CUDA_GRAPHS", "0") ? "CETUS_CUDA_GRAPHS=0"
                   : sync_each_launch()              ? "CETUS_CUDA_SYNC=1"
                                                     : "";
    m_graphs = m_graphs_off.empty();
    // Both need bf16 tensor cores (sm_80 and later).
    m_expert_mma = !m_exact && m_info.major >= 8 && !env_is("CETUS_CUDA_EXPERT_MMA", "0");
    m_attention_gemm = !m_exact && m_info.major >= 8 && !env_is("CETUS_CUDA_ATTENTION_GEMM", "0");
    if (env_is("CETUS_CUDA_EXPERT_TILE_ROWS", "128")) m_expert_tile_rows = 128;
    // The selftest shrinks the score batch to run mla_prefill's head and query blocks
    // (never below one full row of the cache).
    if (const char* batch = std::getenv("CETUS_CUDA_ATTENTION_BATCH")) {
        const long long v = std::atoll(batch);
        if (v > 0) {
            m_attn_batch_elems = std::max<int64_t>(v, round_up(m_capacity, 8));
            m_expanded_bytes = 0;  // and the expansion to one head at a time
        }
    }
    if (const char* form = std::getenv("CETUS_CUDA_PREFILL_FORM")) {
        const std::string f = form;
        if (f == "absorbed") m_prefill_form = Gemm::PrefillForm::Absorbed;
        else if (f == "expanded") m_prefill_form = Gemm::PrefillForm::Expanded;
        else if (f != "auto")
            throw Error(ErrorCode::BadRequest,
                        "CETUS_CUDA_PREFILL_FORM must be auto, absorbed or expanded, not '" + f + "'");
    }
    // Programmatic dependent launch: an experiment, off unless asked for (Hopper and later).
    m_pdl = m_info.major >= 9 && env_is("CETUS_CUDA_PDL", "1") && programmatic_launch_compiled();
    set_programmatic_launch(m_pdl);
    m_device_sampling = !env_is("CETUS_CUDA_SAMPLING", "host");
    m_fuse = !env_is("CETUS_CUDA_FUSE", "0");
    // Decode's shared experts on a second stream, beside the routing and the routed experts'
    // gate/up: an experiment, off unless asked for (fast mode only).
    m_overlap = !m_exact && env_is("CETUS_CUDA_OVERLAP", "1");
    // The output projection's and the router's rows asked of the L2 during the attention's
    // launches, on the same second stream: an experiment, off unless asked for.
    m_prefetch_ahead = !m_exact && env_is("CETUS_CUDA_PREFETCH_AHEAD", "1");
    // The GGUF decode products' L2 prefetch of their rows: an experiment, off unless asked for.
    m_l2_prefetch = env_is("CETUS_CUDA_PREFETCH", "1");
    // The GGUF decode products' weight rows staged in shared memory: an experiment, off unless asked
    // for, a tile at a time (1) or with the next tile's copies in flight (2).
    m_ggml_stage = env_is("CETUS_CUDA_GGUF_STAGE", "1") ? 1 : env_is("CETUS_CUDA_GGUF_STAGE", "2") ? 2 : 0;
    // GGUF blocks marked for int8 activations (cetus-cli --int8-activations) take the decode
    // products' int8 form (the upload reads Matrix::int8_activations).
    m_int8 = model.int8_activations();

    // What the kernels hold in registers and shared memory.
    const int64_t width = c.kv_lora_rank + c.qk_rope_head_dim;
    if (c.kv_lora_rank > k_attention_max_latent || c.qk_rope_head_dim > k_attention_max_rope)
        throw Error(ErrorCode::Unsupported, "CUDA backend: kv_lora_rank " + std::to_string(c.kv_lora_rank) +
                                                " / qk_rope_head_dim " + std::to_string(c.qk_rope_head_dim) +
                                                " exceed the attention kernel's " +
                                                std::to_string(k_attention_max_latent) + " / " +
                                                std::to_string(k_attention_max_rope));
    if (c.qk_nope_head_dim > k_absorb_max_nope)
        throw Error(ErrorCode::Unsupported, "CUDA backend: qk_nope_head_dim " + std::to_string(c.qk_nope_head_dim) +
                                                " is wider than the query absorption kernel's " +
                                                std::to_string(k_absorb_max_nope));
    const int64_t E = c.n_routed_experts, K = c.num_experts_per_tok;
    if (E > 0 && (E > k_max_experts || K > k_max_top_k || 4 * (2 * E + 3 * c.n_group + K) * 4 > 48 * 1024))
        throw Error(ErrorCode::Unsupported, "CUDA backend: " + std::to_string(E) + " routed experts, top " +
                                                std::to_string(K) + ", " + std::to_string(c.n_group) +
                                                " groups exceed the routing kernel (at most " +
                                                std::to_string(k_max_experts) + " experts, top " +
                                                std::to_string(k_max_top_k) + ")");
    // CETUS_CUDA_ATTENTION_SPLITS=N and CETUS_CUDA_ATTENTION_STAGES=1 override the plan (side-by-side benches).
    const char* splits = std::getenv("CETUS_CUDA_ATTENTION_SPLITS");
    const MlaShape shape{c.num_attention_heads, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim, c.kv_lora_rank};
    m_attention = plan_attention(shape, m_info.n_sm, m_cache_bf16, m_info.max_shared_optin,
                                 m_info.major >= 8 && !env_is("CETUS_CUDA_ATTENTION_MMA", "0"), m_exact,
                                 splits ? std::max(0, std::atoi(splits)) : 0,
                                 env_is("CETUS_CUDA_ATTENTION_STAGES", "1") ? 1 : 2);
    if (m_attention.stages == 0)
        throw Error(ErrorCode::Unsupported, "CUDA backend: a cache row of " + std::to_string(width) +
                                                " values needs more shared memory than " + m_info.name + " has");

    if (K > 0) m_chunk = std::min(m_chunk, std::max<int64_t>(1, (k_group_pairs_ints - 2 * E) / K));
    m_logit_chunk = std::min(m_chunk, k_logit_chunk_tokens);

    m_shape = shape;
    m_route.n_experts = int32_t(E);
    m_route.top_k = int32_t(K);
    m_route.n_group = int32_t(c.n_group);
    m_route.topk_group = int32_t(c.topk_group);
    m_route.method = c.topk_method == TopkMethod::Greedy ? 0 : c.topk_method == TopkMethod::GroupLimitedGreedy ? 1 : 2;
    m_route.sigmoid = c.scoring_func == ScoringFunc::Sigmoid;
    m_route.normalise = c.norm_topk_prob && K > 1;
    m_route.scaling = float(c.routed_scaling_factor);
    m_mlp_width = std::max(c.intermediate_size, c.moe_intermediate_size * c.n_shared_experts);
    for (const LayerWeights& lw : model.layers()) m_extent.add(lw, c.q_lora_rank > 0);
    m_extent.add(model.lm_head());
    for (const MtpWeights& m : model.mtp_weights()) {
        m_extent.add(m.block, c.q_lora_rank > 0);
        m_extent.add(m.eh_proj);
        m_extent.add(m.shared_head_head);
    }

    // Everything is measured before anything is allocated.
    const size_t weight_bytes = device_weight_bytes(model, m_capacity);
    const size_t cache_bytes = size_t(m_n_cache_layers) * size_t(m_capacity) * size_t(width) * cache_value_bytes();
    Carver measure;
    carve_scratch(measure);
    size_t scratch_bytes = measure.bytes();
    size_t free_bytes = 0, total_bytes = 0;
    CETUS_CUDA(cudaMemGetInfo(&free_bytes, &total_bytes));
    size_t need = weight_bytes + cache_bytes + scratch_bytes + k_reserved_bytes;
    // Short of memory: shorter passes, then prefill attention on the flash-decoding
    // kernel (no score buffer), before giving up.
    const auto remeasure = [&] {
        Carver again;
        carve_scratch(again);
        scratch_bytes = again.bytes();
        need = weight_bytes + cache_bytes + scratch_bytes + k_reserved_bytes;
    };
    if (need > free_bytes && m_chunk > k_small_chunk_tokens) {
        m_chunk = k_small_chunk_tokens;
        remeasure();
    }
    if (need > free_bytes && m_attention_gemm) {
        m_attention_gemm = false;
        remeasure();
    }
    if (need > free_bytes)
        throw Error(ErrorCode::OutOfMemory,
                    "needs " + fixed1(gib(need)) + " GiB of GPU memory for weights + cache (weights " +
                        fixed1(gib(weight_bytes)) + ", " + (m_cache_bf16 ? "bf16" : "fp32") + " cache of " +
                        std::to_string(m_capacity) + " tokens " +
                        fixed1(gib(cache_bytes)) + ", work buffers " + fixed1(gib(scratch_bytes)) + "), " +
                        m_info.name + " has " + fixed1(gib(free_bytes)) + " GiB free");

    m_stream = make_stream();
    if (!m_exact) {  // (the step switches may turn either on later)
        m_side = make_stream();
        m_fork = make_event();
        m_join = make_event();
        m_ahead_fork = make_event();
        m_ahead_join = make_event();
    }
    UploadOptions up;
    up.stream = m_stream.get();
    up.progress = args.progress;
    up.cancel = args.cancel;
    up.stage = "uploading weights to " + m_info.name;
    up.ggml_fast = !m_exact;
    up.l2_prefetch = m_l2_prefetch;
    up.ggml_stage = m_ggml_stage;
    m_weights = upload_weights(model, args.rope_table, m_capacity, up);
    each_weight(
        [&](const DeviceLayer& l) {
            m_has_shared = m_has_shared || (l.is_moe && l.has_shared);
            m_has_ggml_stage = m_has_ggml_stage || (l.is_moe && l.experts_stage_fits &&
                                                    (l.experts.gate_up_dtype == DeviceDtype::Ggml ||
                                                     l.experts.down_dtype == DeviceDtype::Ggml));
        },
        [&](const DeviceMatrix& w) {
            m_has_ggml_stage = m_has_ggml_stage || (w.dtype == DeviceDtype::Ggml && ggml_stage_fits_type(w.ggml_type));
        });

    m_cache = DeviceBuffer(cache_bytes);
    m_scratch_memory = DeviceBuffer(scratch_bytes);
    Carver scratch(m_scratch_memory.get());
    m_s = carve_scratch(scratch);
    Carver staging_measure;
    carve_staging(staging_measure);
    m_staging_memory = PinnedBuffer(staging_measure.bytes());
    Carver staging(m_staging_memory.get());
    m_h = carve_staging(staging);
    m_gemm = std::make_unique<Gemm>(m_stream.get(), m_exact, m_s.gemm, m_fuse ? m_s.grid_done : nullptr);
    m_gemm->set_prefill_form(m_prefill_form);
    launch_choice_init(m_s.choice, c.vocab_size, m_stream.get());
    CETUS_CUDA(cudaMemsetAsync(m_s.grid_done, 0, size_t(m_s.grid_counters) * sizeof(uint32_t), m_stream.get()));
    // Zeroed like the CPU's cache; rows past n_tokens are never read.
    CETUS_CUDA(cudaMemsetAsync(m_cache.get(), 0, cache_bytes, m_stream.get()));
    CETUS_CUDA(cudaStreamSynchronize(m_stream.get()));

    if (args.log)
        args.log(0, m_info.name + " (sm_" + std::to_string(m_info.major) + std::to_string(m_info.minor) +
                        "): weights " + fixed1(gib(weight_bytes)) + " GiB on the device, " +
                        (m_cache_bf16 ? "bf16" : "fp32") + " latent cache " +
                        fixed1(gib(cache_bytes)) + " GiB for " + std::to_string(m_capacity) + " tokens, work buffers " +
                        fixed1(gib(scratch_bytes)) + " GiB" + (m_exact ? ", exact fp32 products" : "") +
                        (m_attention.mma ? ", cache attention on tensor cores" : "") +
                        (m_graphs ? ", decode steps as CUDA graphs" : ", CUDA graphs off (" + m_graphs_off + ")") +
                        (m_int8 ? ", int8 activations (dp4a) in the GGUF decode products" : "") + step_text());
}

int CudaBackend::step_variant() const {
    return int(m_overlap) | int(m_prefetch_ahead) << 1 | int(m_pdl) << 2 | int(m_ggml_stage) << 3 |
           int(!m_fuse) << 5 | int(m_l2_prefetch) << 6;
}

std::string CudaBackend::step_text() const {
    return std::string(!m_fuse ? ", decode fusions off" : "") + (m_l2_prefetch ? ", L2 prefetch of weight rows" : "") +
           (m_pdl ? ", programmatic dependent launch" : "") +
           (m_ggml_stage == 1   ? ", GGUF decode rows staged"
            : m_ggml_stage == 2 ? ", GGUF decode rows staged, two tiles in flight"
                                : "") +
           (m_overlap ? ", shared experts on a second stream in decode" : "") +
           (m_prefetch_ahead ? ", L2 prefetch of the output projection during attention" : "");
}

std::vector<Backend::StepSwitch> CudaBackend::step_switches() const {
    std::vector<StepSwitch> out;
    if (!m_exact && m_has_shared)
        out.push_back({"overlap", "the shared experts on a second stream, beside the routing (CETUS_CUDA_OVERLAP)",
                       {0, 1}, int(m_overlap), /*same_bits=*/false});  // (the dense kernels' sums)
    if (!m_exact)
        out.push_back({"prefetch_ahead",
                       "the output projection's and router's rows asked of the L2 during the attention "
                       "(CETUS_CUDA_PREFETCH_AHEAD)",
                       {0, 1}, int(m_prefetch_ahead)});
    if (m_info.major >= 9 && programmatic_launch_compiled())
        out.push_back({"pdl", "programmatic dependent launch (CETUS_CUDA_PDL)", {0, 1}, int(m_pdl)});
    if (!m_exact)
        out.push_back({"fuse",
                       "the decode fusions: the residual adds, norms and the MoE combine in the products' last "
                       "blocks, the attention's merge in the value absorption (CETUS_CUDA_FUSE)",
                       {0, 1}, int(m_fuse), /*same_bits=*/false});  // (the merge's value rows over one warp)
    out.push_back({"l2_prefetch",
                   "the L2 asked for a GGUF decode product's rows, and the value rows of the attention's merge, "
                   "before they are read (CETUS_CUDA_PREFETCH)",
                   {0, 1}, int(m_l2_prefetch)});
    if (m_has_ggml_stage)
        out.push_back({"gguf_stage",
                       "the GGUF decode products' rows staged in shared memory, a tile at a time (1) or with the "
                       "next in flight (2) (CETUS_CUDA_GGUF_STAGE)",
                       {0, 1, 2}, int(m_ggml_stage)});
    return out;
}

void CudaBackend::set_step_switch(const std::string& name, int value) {
    for (const StepSwitch& w : step_switches()) {
        if (w.name != name) continue;
        if (std::find(w.values.begin(), w.values.end(), value) == w.values.end()) break;
        if (name == "overlap") m_overlap = value != 0;
        else if (name == "prefetch_ahead") m_prefetch_ahead = value != 0;
        else if (name == "pdl") set_programmatic_launch(m_pdl = value != 0);
        else if (name == "gguf_stage") set_ggml_stage(uint8_t(value));
        else if (name == "l2_prefetch") set_l2_prefetch(value != 0);
        else if (name == "fuse") {
            m_fuse = value != 0;
            m_gemm->set_fused_tail(m_fuse ? m_s.grid_done : nullptr);
        }
        return;  // (graphs are kept by variant: GraphKey::variant)
    }
    throw Error(ErrorCode::BadRequest, "CUDA backend: no step switch " + name + " taking the value " +
                                           std::to_string(value) + " on this model and device");
}

void CudaBackend::forget_prepared_steps() {
    // (the generator's keys differ from the tuner's anyway: its argmax over the tokenizer's ids)
    m_graph_cache.clear();
}

template <class OnLayer, class OnMatrix>
void CudaBackend::each_weight(OnLayer&& on_layer, OnMatrix&& on_matrix) {
    const auto layer = [&](DeviceLayer& l) {
        on_layer(l);
        for (DeviceMatrix* w : {&l.q_proj, &l.q_a, &l.q_b, &l.kv_a, &l.kv_b, &l.o, &l.mlp.gate, &l.mlp.up,
                                &l.mlp.down, &l.router, &l.shared.gate, &l.shared.up, &l.shared.down})
            on_matrix(*w);
    };
    for (DeviceLayer& l : m_weights.layers) layer(l);
    for (DeviceMtp& m : m_weights.mtp) {
        layer(m.block);
        on_matrix(m.eh_proj);
        on_matrix(m.head);
    }
    on_matrix(m_weights.lm_head);
}

void CudaBackend::set_l2_prefetch(bool on) {
    if (on == m_l2_prefetch) return;
    cudaStream_t s = m_stream.get();
    CETUS_CUDA(cudaStreamSynchronize(s));  // (no launch reads the descriptors while they change)
    std::vector<DeviceMatrix> table;
    const auto layer = [&](DeviceLayer& l) {
        if (!l.is_moe || !l.experts.gate) return;
        // The upload's table of the experts' gate [E], up [E] and down [E], one after another.
        table.resize(size_t(3 * m_config.n_routed_experts));
        const size_t bytes = table.size() * sizeof(DeviceMatrix);
        DeviceMatrix* d = const_cast<DeviceMatrix*>(l.experts.gate);
        CETUS_CUDA(cudaMemcpyAsync(table.data(), d, bytes, cudaMemcpyDeviceToHost, s));
        CETUS_CUDA(cudaStreamSynchronize(s));
        for (DeviceMatrix& x : table) x.l2_prefetch = on;
        CETUS_CUDA(cudaMemcpyAsync(d, table.data(), bytes, cudaMemcpyHostToDevice, s));
        CETUS_CUDA(cudaStreamSynchronize(s));  // (table is reused by the next layer)
    };
    each_weight(layer, [&](DeviceMatrix& w) { w.l2_prefetch = on; });
    for (DeviceMtp& m : m_weights.mtp) m.embed.l2_prefetch = on;  // (the embeddings, as the upload marks them)
    m_weights.embed.l2_prefetch = on;
    m_l2_prefetch = on;
}

void CudaBackend::set_ggml_stage(uint8_t stage) {
    each_weight(
        [&](DeviceLayer& l) {  // (the experts' own descriptors, in device memory, are read for their data only)
            if (l.is_moe) l.experts.ggml_stage = l.experts_stage_fits ? stage : uint8_t(0);
        },
        [&](DeviceMatrix& w) {  // (the router is fp32 on the device: unmarked)
            if (w.dtype == DeviceDtype::Ggml) w.ggml_stage = ggml_stage_fits_type(w.ggml_type) ? stage : uint8_t(0);
        });
    m_ggml_stage = stage;
}

CudaBackend::~CudaBackend() {
    // Kernels still in flight may use the buffers freed by the members' destructors.
    if (cudaSetDevice(m_device) == cudaSuccess) {
        if (m_stream.get()) cudaStreamSynchronize(m_stream.get());
        if (m_side.get()) cudaStreamSynchronize(m_side.get());
    }
}

CudaBackend::Scratch CudaBackend::carve_scratch(Carver& cv) const {
    const ModelConfig& c = m_config;
    const int64_t n = m_chunk, H = c.hidden_size, K = c.num_experts_per_tok, E = c.n_routed_experts;
    const int64_t n_h = c.num_attention_heads, d_qk = c.qk_head_dim();
    const int64_t slots = std::max<int64_t>(m_n_moe, 1) * K;
    const auto f = [&](int64_t count) { return cv.take<float>(size_t(count)); };
    const auto i = [&](int64_t count) { return cv.take<int32_t>(size_t(count)); };
    Scratch s;
    s.start_pos = cv.take<int64_t>(1);
    s.ids = i(n);
    s.hidden_in = f(n * H);
    s.x = f(n * H);
    s.a = f(n * H);
    s.r = f(n * H);
    s.hn = f(n * H);
    s.cat = f(c.num_nextn_predict_layers > 0 ? n * 2 * H : 0);
    s.cq = f(n * c.q_lora_rank);
    s.q = f(n * n_h * d_qk);
    s.kv = f(n * (c.kv_lora_rank + c.qk_rope_head_dim));
    s.q_abs = f(n * n_h * c.kv_lora_rank);
    s.ctx = f(n * n_h * c.kv_lora_rank);
    s.o = f(n * n_h * c.v_head_dim);
    s.parts.acc = f(m_attention.max_parts * n_h * c.kv_lora_rank);
    s.parts.ml = f(m_attention.max_parts * n_h * 2);
    s.parts.plan = m_attention;
    s.g = f(n * m_mlp_width);
    s.u = f(n * m_mlp_width);
    s.z = f(n * E);
    s.grid_counters = moe_combine_counters(H);
    s.grid_done = cv.take<uint32_t>(size_t(s.grid_counters));
    s.route_ids = i(n * slots);
    s.route_w = f(n * slots);
    s.pairs.counts = i(E);
    s.pairs.offsets = i(E);
    s.pairs.active = i(E);
    s.pairs.n_active = i(1);
    s.pairs.list = i(n * K);
    s.pairs.tiles = i(2 * expert_tiles_bound(n, K, E));
    s.pairs.n_tiles = i(1);
    // (The tensor-core path keeps its bf16 rows, round_up(I, 8) wide, in the same memory.)
    const int64_t I = c.moe_intermediate_size;
    s.h = f(n * K * std::max(I, round_up(I, 8) / 2));
    s.x_bf16 = cv.take<uint16_t>(size_t(m_expert_mma && E > 0 ? n * round_up(H, 8) : 0));
    s.y = f(n * K * H);
    s.shared_out = f(n * H);
    s.logits = f(m_logit_chunk * c.vocab_size);
    const int64_t R = k_max_choice_rows, V = c.vocab_size;
    s.choice.rows = R;
    s.choice.work = f(R * V);
    s.choice.marks = cv.take<uint32_t>(size_t(R * V));
    s.choice.sort_keys = f(R * V);
    s.choice.sort_ids = i(R * V);
    s.choice.iota = i(R * V);
    s.choice.seg_begin = i(R);
    s.choice.seg_end = i(R);
    s.choice.sort_temp_bytes = choice_sort_temp_bytes(R, V);
    s.choice.sort_temp = cv.take<char>(s.choice.sort_temp_bytes);
    s.choice.argmax_partial = cv.take<char>(choice_argmax_partial_bytes(R));
    s.choice_probs = f(R * V);
    s.choice_q = f(R * V);
    s.choice_history = i(m_capacity);
    s.choice_tail = i(2 * R);
    s.choice_u = cv.take<double>(size_t(R + 1));
    s.choice_drafts = i(R);
    s.choice_out = i(R);
    s.argmax_ids = i(R);
    if (!m_exact) {
        // (A bf16 cache's prefill attention splits [q_abs ; q_pe] rows of the cache's width in two.)
        const int64_t query_cols =
            m_cache_bf16 && m_attention_gemm ? 2 * n_h * (c.kv_lora_rank + c.qk_rope_head_dim) : 0;
        s.gemm.act_elems =
            size_t(n * std::max({round_up(m_extent.max_cols, 8), n_h * d_qk, n_h * c.kv_lora_rank, query_cols}));
        s.gemm.act_bf16 = cv.take<uint16_t>(s.gemm.act_elems);
        s.gemm.weight_elems = m_extent.expand_elems;
        s.gemm.weight_bf16 = cv.take<uint16_t>(s.gemm.weight_elems);
        s.gemm.workspace_bytes = k_cublas_workspace_bytes;
        s.gemm.workspace = cv.take<char>(k_cublas_workspace_bytes);
        if (m_attention_gemm) {
            // All heads of a whole chunk at full context when that is less than the batch.
            s.gemm.attn_batch_elems = size_t(
                std::min<int64_t>(m_attn_batch_elems, n_h * n * round_up(m_capacity, 8)));
            s.gemm.attn_scores = f(int64_t(s.gemm.attn_batch_elems));
            if (m_prefill_form != Gemm::PrefillForm::Absorbed) {
                // The expanded form: at least one head's keys and values for the whole context.
                const int64_t head_bytes = (c.qk_nope_head_dim + c.v_head_dim) * m_capacity * (m_cache_bf16 ? 2 : 4);
                s.gemm.expanded_bytes = size_t(std::min(n_h * head_bytes, std::max(m_expanded_bytes, head_bytes)));
                s.gemm.expanded = cv.take<char>(s.gemm.expanded_bytes);
                s.gemm.latent_elems = size_t(m_cache_bf16 ? 0 : 2 * c.kv_lora_rank * m_capacity);
                s.gemm.latent_bf16 = cv.take<uint16_t>(s.gemm.latent_elems);
            }
        }
    }
    return s;
}

CudaBackend::Staging CudaBackend::carve_staging(Carver& cv) const {
    const int64_t n = m_chunk, H = m_config.hidden_size, slots = m_n_moe * m_config.num_experts_per_tok;
    Staging h;
    h.start_pos = cv.take<int64_t>(1);
    h.ids = cv.take<int32_t>(size_t(n));
    h.hidden_in = cv.take<float>(size_t(n * H));
    h.logits = cv.take<float>(size_t(m_logit_chunk * m_config.vocab_size));
    h.hidden_out = cv.take<float>(size_t(n * H));
    h.route_ids = cv.take<int32_t>(size_t(n * slots));
    h.route_w = cv.take<float>(size_t(n * slots));
    const int64_t R = k_max_choice_rows;
    h.choice_history = cv.take<int32_t>(size_t(m_capacity));
    h.choice_tail = cv.take<int32_t>(size_t(2 * R));
    h.choice_u = cv.take<double>(size_t(R + 1));
    h.choice_drafts = cv.take<int32_t>(size_t(R));
    h.choice_out = cv.take<int32_t>(size_t(R));
    h.argmax_ids = cv.take<int32_t>(size_t(R));
    return h;
}

std::vector<float> CudaBackend::cache_row(int64_t layer, int64_t pos) {
    const int64_t width = m_config.kv_lora_rank + m_config.qk_rope_head_dim;
    if (layer < 0 || layer >= m_n_cache_layers || pos < 0 || pos >= m_capacity)
        throw Error(ErrorCode::BadRequest, "cache row (" + std::to_string(layer) + ", " + std::to_string(pos) +
                                               ") outside the cache");
    CETUS_CUDA(cudaSetDevice(m_device));
    const size_t bytes = size_t(width) * cache_value_bytes();
    std::vector<float> raw(static_cast<size_t>(width));  // the row as stored (width values of either type)
    to_host(raw.data(), static_cast<const char*>(cache_rows(layer)) + size_t(pos * width) * cache_value_bytes(), bytes);
    CETUS_CUDA(cudaStreamSynchronize(m_stream.get()));
    std::vector<float> row(static_cast<size_t>(width));
    CacheRows{raw.data(), kv_cache_type(), width}.load(0, 1, row.data());
    return row;
}

void CudaBackend::save_rows(int64_t n, uint8_t* out) {
    if (n < 0 || n > m_capacity) throw Error(ErrorCode::BadRequest, "save_rows: n outside the cache");
    CETUS_CUDA(cudaSetDevice(m_device));
    const size_t row_bytes = size_t(m_config.kv_lora_rank + m_config.qk_rope_head_dim) * cache_value_bytes();
    for (int64_t l = 0; l < m_n_cache_layers; ++l) to_host(out + size_t(l * n) * row_bytes, cache_rows(l), size_t(n) * row_bytes);
    CETUS_CUDA(cudaStreamSynchronize(m_stream.get()));
}

void CudaBackend::load_rows(int64_t n, const uint8_t* in) {
    if (n < 0 || n > m_capacity) throw Error(ErrorCode::BadRequest, "load_rows: n outside the cache");
    CETUS_CUDA(cudaSetDevice(m_device));
    const size_t row_bytes = size_t(m_config.kv_lora_rank + m_config.qk_rope_head_dim) * cache_value_bytes();
    for (int64_t l = 0; l < m_n_cache_layers; ++l) to_device(cache_rows(l), in + size_t(l * n) * row_bytes, size_t(n) * row_bytes);
    CETUS_CUDA(cudaStreamSynchronize(m_stream.get()));  // `in` may go once this returns
    m_n_tokens = n;
}

std::string CudaBackend::description() const {
    size_t free_bytes = 0, total_bytes = m_info.total_bytes;
    std::string memory = fixed1(gib(total_bytes)) + " GiB";
    if (cudaSetDevice(m_device) == cudaSuccess && cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess)
        memory = fixed1(gib(free_bytes)) + "/" + fixed1(gib(total_bytes)) + " GiB free";
    return m_info.name + ", sm_" + std::to_string(m_info.major) + std::to_string(m_info.minor) + ", " + memory +
           ", CUDA " + cuda_version(m_info.runtime_version) +
           (m_graphs ? ", decode graphs" : ", decode graphs off (" + m_graphs_off + ")") +
           (m_exact ? ", exact fp32 products" : "") +
           (m_attention.mma ? ", cache attention on tensor cores" : "") +
           (!m_exact && !m_expert_mma ? ", prefill experts on fp32 kernels" : "") +
           (m_expert_mma && m_expert_tile_rows != 64
                ? ", expert tiles of " + std::to_string(m_expert_tile_rows) + " rows"
                : "") +
           (!m_exact && !m_attention_gemm ? ", prefill attention on the flash-decoding kernel" : "") +
           (m_int8 ? ", int8 activations (dp4a) in the GGUF decode products" : "") + step_text();
}

void CudaBackend::check_span(int64_t T, int64_t start_pos) const {
    if (T < 1 || start_pos < 0 || start_pos + T > m_capacity)
        throw Error(ErrorCode::BadRequest, "CUDA backend: positions " + std::to_string(start_pos) + " .. " +
                                               std::to_string(start_pos + T - 1) + " outside the cache of " +
                                               std::to_string(m_capacity) + " tokens");
}

void CudaBackend::forward(const int32_t* ids, int64_t T, int64_t start_pos, const ForwardOptions& opt,
                          ForwardOutput& out) {
    check_span(T, start_pos);
    if (opt.follow_routing)
        throw Error(ErrorCode::Unsupported, "CUDA backend: following a given routing is the CPU reference's option");
    if (opt.follow_cache)
        throw Error(ErrorCode::Unsupported, "CUDA backend: following given cache rows is the CPU reference's option");
    if (start_pos > m_n_tokens)
        throw Error(ErrorCode::BadRequest, "CUDA backend: start position " + std::to_string(start_pos) +
                                               " beyond the " + std::to_string(m_n_tokens) + " cached tokens");
    CETUS_CUDA(cudaSetDevice(m_device));
    const ModelConfig& c = m_config;
    const int64_t H = c.hidden_size, V = c.vocab_size, K = c.num_experts_per_tok;
    const int64_t slots = m_n_moe * K;  // routing entries per token

    RoutingRecord& rr = out.routing;
    rr.reset(opt.want_routing ? T : 0, m_n_moe, K);
    if (opt.logits_to_host) out.logits.resize(static_cast<size_t>((opt.all_logits ? T : 1) * V));
    else out.logits.clear();
    out.argmax.clear();
    if (opt.argmax_n_valid > 0 && (opt.all_logits ? T : 1) > k_max_choice_rows)
        throw Error(ErrorCode::BadRequest, "CUDA backend: a fused argmax over " + std::to_string(opt.all_logits ? T : 1) +
                                               " rows (at most " + std::to_string(k_max_choice_rows) + ")");
    std::vector<float> hidden(static_cast<size_t>(opt.want_hidden ? T * H : 0));  // [T, H] after model.norm

    const int64_t chunk = opt.all_logits ? m_logit_chunk : m_chunk;  // the logit buffers hold m_logit_chunk rows
    for (int64_t t0 = 0; t0 < T; t0 += chunk) {
        const int64_t n = std::min(chunk, T - t0);
        // Logits of every row, or of the request's last row only.
        const int64_t rows = opt.all_logits ? n : (t0 + n == T ? 1 : 0);
        // The previous chunk has finished: the staging buffers are free.
        *m_h.start_pos = start_pos + t0;
        std::memcpy(m_h.ids, ids + t0, size_t(n) * sizeof(int32_t));
        // Only calls of up to k_graph_max_tokens replay; they are one chunk (n == T).
        const GraphKey key{-1, T, opt.all_logits, opt.want_hidden, opt.want_routing, opt.logits_to_host,
                           opt.argmax_n_valid, step_variant()};
        m_logit_rows = 0;  // the buffer is rewritten from here on
        run_and_wait(key, [&] { enqueue_forward(n, rows, opt); });
        m_logit_rows = rows;
        if (rows > 0 && opt.argmax_n_valid > 0) out.argmax.assign(m_h.argmax_ids, m_h.argmax_ids + rows);
        if (rows > 0 && opt.logits_to_host)
            std::memcpy(out.logits.data() + (opt.all_logits ? t0 * V : 0), m_h.logits,
                        size_t(rows * V) * sizeof(float));
        if (opt.want_hidden) std::memcpy(hidden.data() + t0 * H, m_h.hidden_out, size_t(n * H) * sizeof(float));
        if (opt.want_routing && slots > 0) {
            std::memcpy(rr.ids.data() + t0 * slots, m_h.route_ids, size_t(n * slots) * sizeof(int32_t));
            std::memcpy(rr.weights.data() + t0 * slots, m_h.route_w, size_t(n * slots) * sizeof(float));
        }
    }
    m_n_tokens = start_pos + T;
    if (opt.want_hidden) out.hidden = std::move(hidden);
}

// ids and position from staging -> embedding -> layers -> final norm -> logits
// of logit_rows rows (all n, or the last one), hidden states and routing to staging.
void CudaBackend::enqueue_forward(int64_t n, int64_t logit_rows, const ForwardOptions& opt) {
    const ModelConfig& c = m_config;
    const int64_t H = c.hidden_size, V = c.vocab_size, K = c.num_experts_per_tok;
    const int64_t slots = m_n_moe * K;
    const float eps = float(c.rms_norm_eps);
    cudaStream_t s = m_stream.get();
    to_device(m_s.start_pos, m_h.start_pos, sizeof(int64_t));
    to_device(m_s.ids, m_h.ids, size_t(n) * sizeof(int32_t));
    launch_embed(m_weights.embed, m_s.ids, n, m_s.x, s);  // [n, H]
    const int64_t L = c.num_hidden_layers;  // >= 1 (config.cpp)
    launch_rmsnorm(m_s.x, H, m_weights.layers[0].input_norm, eps, n, H, m_s.a, H, s);  // [n, H]
    int64_t moe_index = 0;
    for (int64_t l = 0; l < L; ++l) {
        const DeviceLayer& layer = m_weights.layers[size_t(l)];
        // Routing lands in the trace buffer [n, n_moe, K] at this layer's slot.
        int32_t* ri = layer.is_moe ? m_s.route_ids + moe_index * K : nullptr;
        float* rw = layer.is_moe ? m_s.route_w + moe_index * K : nullptr;
        // Each block ends with the next one's input norm; the last with the final norm into hn.
        const bool last = l + 1 == L;
        block(layer, l, n, ri, rw, slots, last ? m_weights.final_norm : m_weights.layers[size_t(l + 1)].input_norm,
              last ? m_s.hn : m_s.a);
        moe_index += layer.is_moe ? 1 : 0;
    }
    if (logit_rows > 0) {
        const int64_t first = n - logit_rows;
        m_gemm->matmul(m_weights.lm_head, m_s.hn + first * H, H, logit_rows, m_s.logits, V);  // [rows, V]
        if (opt.logits_to_host) to_host(m_h.logits, m_s.logits, size_t(logit_rows * V) * sizeof(float));
        if (opt.argmax_n_valid > 0) enqueue_argmax(logit_rows, opt.argmax_n_valid);  // inside the step (and its graph)
    }
    if (opt.want_hidden) to_host(m_h.hidden_out, m_s.hn, size_t(n * H) * sizeof(float));
    if (opt.want_routing && slots > 0) {
        to_host(m_h.route_ids, m_s.route_ids, size_t(n * slots) * sizeof(int32_t));
        to_host(m_h.route_w, m_s.route_w, size_t(n * slots) * sizeof(float));
    }
}

void CudaBackend::mtp_forward(int64_t k, const float* hidden, const int32_t* next_ids, int64_t T, int64_t start_pos,
                              const MtpOptions& opt, MtpOutput& out) {
    if (k < 0 || k >= int64_t(m_weights.mtp.size()))
        throw Error(ErrorCode::BadRequest, "CUDA backend: no MTP module " + std::to_string(k));
    if (opt.follow_cache)
        throw Error(ErrorCode::Unsupported, "CUDA backend: following given cache rows is the CPU reference's option");
    if (opt.follow_routing)
        throw Error(ErrorCode::Unsupported, "CUDA backend: following a given routing is the CPU reference's option");
    check_span(T, start_pos);
    CETUS_CUDA(cudaSetDevice(m_device));
    const int64_t H = m_config.hidden_size, V = m_config.vocab_size, K = m_config.num_experts_per_tok;
    // The module's expert choices (tests): its block writes them to slot 0 of the
    // trace buffer with stride K, read back after each chunk's pass.
    const bool moe_block = m_weights.mtp[size_t(k)].block.is_moe;
    out.routing.reset(opt.want_routing ? T : 0, moe_block ? 1 : 0, K);
    const bool to_host = opt.logits == MtpLogits::Host;
    const int64_t argmax_n_valid = opt.logits == MtpLogits::None ? 0 : opt.argmax_n_valid;
    const int64_t chunk = opt.logits == MtpLogits::None ? m_chunk : m_logit_chunk;
    if (argmax_n_valid > 0 && std::min(chunk, T) > k_max_choice_rows)
        throw Error(ErrorCode::BadRequest, "CUDA backend: a fused argmax over " + std::to_string(std::min(chunk, T)) +
                                               " rows (at most " + std::to_string(k_max_choice_rows) + ")");
    if (to_host) out.logits.resize(static_cast<size_t>(T * V));
    else out.logits.clear();
    out.hidden.resize(static_cast<size_t>(opt.want_hidden ? T * H : 0));  // [T, H] after shared_head.norm
    out.argmax.clear();
    for (int64_t t0 = 0; t0 < T; t0 += chunk) {
        const int64_t n = std::min(chunk, T - t0);
        *m_h.start_pos = start_pos + t0;
        std::memcpy(m_h.ids, next_ids + t0, size_t(n) * sizeof(int32_t));
        std::memcpy(m_h.hidden_in, hidden + t0 * H, size_t(n * H) * sizeof(float));
        const GraphKey key{k,       T, opt.logits != MtpLogits::None, opt.want_hidden, false, to_host, argmax_n_valid,
                           step_variant()};
        m_logit_rows = 0;
        run_and_wait(key, [&] { enqueue_mtp(k, n, opt.want_hidden, opt.logits, argmax_n_valid); });
        m_logit_rows = opt.logits == MtpLogits::None ? 0 : n;
        if (to_host) std::memcpy(out.logits.data() + t0 * V, m_h.logits, size_t(n * V) * sizeof(float));
        if (opt.want_hidden) std::memcpy(out.hidden.data() + t0 * H, m_h.hidden_out, size_t(n * H) * sizeof(float));
        if (argmax_n_valid > 0) out.argmax.assign(m_h.argmax_ids, m_h.argmax_ids + n);  // the last chunk's rows
        if (opt.want_routing && moe_block) {
            this->to_host(out.routing.ids.data() + t0 * K, m_s.route_ids, size_t(n * K) * sizeof(int32_t));
            this->to_host(out.routing.weights.data() + t0 * K, m_s.route_w, size_t(n * K) * sizeof(float));
            CETUS_CUDA(cudaStreamSynchronize(m_stream.get()));
        }
    }
}

// ids, hidden and position from staging -> MTP module k -> logits (and its
// post-norm hidden states) to staging.
void CudaBackend::enqueue_mtp(int64_t k, int64_t n, bool want_hidden, MtpLogits logits_to, int64_t argmax_n_valid) {
    const ModelConfig& c = m_config;
    const DeviceMtp& m = m_weights.mtp[size_t(k)];
    const int64_t H = c.hidden_size, V = c.vocab_size, K = c.num_experts_per_tok;
    const float eps = float(c.rms_norm_eps);
    cudaStream_t s = m_stream.get();
    to_device(m_s.start_pos, m_h.start_pos, sizeof(int64_t));
    to_device(m_s.ids, m_h.ids, size_t(n) * sizeof(int32_t));
    to_device(m_s.hidden_in, m_h.hidden_in, size_t(n * H) * sizeof(float));
    // cat = [enorm(embed(next_id)) ; hnorm(hidden)]: the embedding first.
    launch_embed(m.embed, m_s.ids, n, m_s.a, s);                                   // [n, H]
    launch_rmsnorm(m_s.a, H, m.enorm, eps, n, H, m_s.cat, 2 * H, s);               // [n, 2H] left half
    launch_rmsnorm(m_s.hidden_in, H, m.hnorm, eps, n, H, m_s.cat + H, 2 * H, s);  // [n, 2H] right half
    m_gemm->matmul(m.eh_proj, m_s.cat, 2 * H, n, m_s.x, H);                        // [n, H]
    // The MTP block's routing: slot 0 of the trace buffer, stride K (read back by
    // mtp_forward when asked for).
    launch_rmsnorm(m_s.x, H, m.block.input_norm, eps, n, H, m_s.a, H, s);  // [n, H]
    block(m.block, c.num_hidden_layers + k, n, m_s.route_ids, m_s.route_w, K, m.head_norm, m_s.hn);  // hn: [n, H]
    if (logits_to != MtpLogits::None) m_gemm->matmul(m.head, m_s.hn, H, n, m_s.logits, V);  // [n, V]
    if (logits_to == MtpLogits::Host) to_host(m_h.logits, m_s.logits, size_t(n * V) * sizeof(float));
    if (argmax_n_valid > 0) enqueue_argmax(n, argmax_n_valid);
    if (want_hidden) to_host(m_h.hidden_out, m_s.hn, size_t(n * H) * sizeof(float));
}

void CudaBackend::enqueue_argmax(int64_t rows, int64_t n_valid) {
    ChoiceParams p;
    p.vocab = m_config.vocab_size;
    p.n_valid = std::clamp<int64_t>(n_valid, 1, p.vocab);
    launch_choice_argmax(m_s.logits, rows, p, m_s.choice, m_s.argmax_ids, m_stream.get());
    to_host(m_h.argmax_ids, m_s.argmax_ids, size_t(rows) * sizeof(int32_t));
}

// Calls of one key repeat the same launches with the same arguments (the
// position and the inputs are read from the staging buffers), so the first
// call runs directly, the second is captured and every later one replays it.
// Running the first directly also loads every kernel before any capture and
// keeps one-off shapes (short prompts) from paying for a capture.
void CudaBackend::run(const GraphKey& key, const std::function<void()>& enqueue) {
    if (!m_graphs || key.n_tokens > k_graph_max_tokens) {
        enqueue();
        return;
    }
    auto it = std::find_if(m_graph_cache.begin(), m_graph_cache.end(),
                           [&](const CachedGraph& g) { return g.key == key; });
    if (it == m_graph_cache.end()) {
        if (m_graph_cache.size() < k_max_graphs) m_graph_cache.push_back(CachedGraph{key, GraphExec{}});
        enqueue();
        return;
    }
    if (!it->exec.get()) {
        GraphExec exec = capture(enqueue);
        if (!exec.get()) {  // graphs are off from now on; nothing of this call has run yet
            enqueue();
            return;
        }
        it->exec = std::move(exec);
    }
    if (const cudaError_t e = cudaGraphLaunch(it->exec.get(), m_stream.get()); e != cudaSuccess) {
        // A failed launch enqueued nothing: drop graphs and run the call directly
        // (a sticky device fault surfaces there as the real error).
        it->exec = GraphExec{};
        disable_graphs(std::string("cudaGraphLaunch: ") + cudaGetErrorString(e));
        enqueue();
    }
}

// run() and the wait for its results. On an error, work already queued is
// waited for too, so the next call can reuse the staging buffers.
void CudaBackend::run_and_wait(const GraphKey& key, const std::function<void()>& enqueue) {
    // Programmatic dependent launch is the launchers' process-wide switch: this backend's
    // (another backend in the process may have set it otherwise). A launch the driver
    // refused switched it off for good (pdl.cuh), and so it stays off here.
    if (programmatic_launch() != m_pdl) set_programmatic_launch(m_pdl);
    struct PdlRefused {
        bool& on;
        ~PdlRefused() {
            if (on && !programmatic_launch()) on = false;
        }
    } refused{m_pdl};
    try {
        run(key, enqueue);
    } catch (...) {
        (void)cudaStreamSynchronize(m_stream.get());
        if (m_side.get()) (void)cudaStreamSynchronize(m_side.get());  // (a step that failed between fork and join)
        throw;
    }
    CETUS_CUDA(cudaStreamSynchronize(m_stream.get()));
}

GraphExec CudaBackend::capture(const std::function<void()>& enqueue) {
    cudaStream_t s = m_stream.get();
    std::string failure;
    cudaError_t e = cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        failure = std::string("cudaStreamBeginCapture: ") + cudaGetErrorString(e);
    } else {
        try {
            enqueue();
        } catch (const std::exception& ex) {  // a check inside the capture; the direct run repeats a real one
            failure = ex.what();
        } catch (...) {
            failure = "unknown exception while capturing";
        }
        // Always ended, so the stream leaves capture mode whatever happened above.
        cudaGraph_t raw = nullptr;
        e = cudaStreamEndCapture(s, &raw);
        const Graph graph(raw);
        if (failure.empty() && e != cudaSuccess)
            failure = std::string("cudaStreamEndCapture: ") + cudaGetErrorString(e);
        if (failure.empty() && !graph.get()) failure = "cudaStreamEndCapture gave no graph";
        if (failure.empty()) {
            cudaGraphExec_t exec = nullptr;
            e = cudaGraphInstantiate(&exec, graph.get(), 0);
            if (e == cudaSuccess) return GraphExec(exec);
            failure = std::string("cudaGraphInstantiate: ") + cudaGetErrorString(e);
        }
    }
    disable_graphs(failure);
    return GraphExec{};
}

// Once, after a failed capture. A sticky device error (a faulted kernel) is not
// cleared by cudaGetLastError and surfaces here or in the direct run.
void CudaBackend::disable_graphs(const std::string& why) {
    m_graphs = false;
    m_graphs_off = "a capture failed";
    if (m_log) {
        try {
            m_log(1, "CUDA graphs off for this model: " + why + "; decode steps launch kernel by kernel");
        } catch (...) {  // a failing log sink must not fail the step that falls back
        }
    }
    (void)cudaGetLastError();  // the failed capture's error must not surface at the next launch check
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    CETUS_CUDA(cudaStreamIsCapturing(m_stream.get(), &status));
    if (status != cudaStreamCaptureStatusNone)
        throw Error(ErrorCode::Device, "CUDA backend: the stream is still capturing after a failed capture (" +
                                           why + ")");
}

// ---- token choice on the device ----

// Rows row0 .. row0 + n - 1 of the last call's logits, n <= k_max_choice_rows.
ChoiceParams CudaBackend::choice_params(const ChoiceSpec& spec, int64_t row0, int64_t n) const {
    const int64_t V = m_config.vocab_size;
    if (row0 < 0 || n < 1 || n > k_max_choice_rows || row0 + n > m_logit_rows)
        throw Error(ErrorCode::BadRequest, "CUDA backend: token choice over rows " + std::to_string(row0) + " .. " +
                                               std::to_string(row0 + n - 1) + ", the last call left " +
                                               std::to_string(m_logit_rows) + " rows of logits (at most " +
                                               std::to_string(k_max_choice_rows) + " at a time)");
    if (int64_t(spec.history.size()) > m_capacity || int64_t(spec.tail.size()) > 2 * k_max_choice_rows)
        throw Error(ErrorCode::BadRequest, "CUDA backend: token choice with " + std::to_string(spec.history.size()) +
                                               " history and " + std::to_string(spec.tail.size()) +
                                               " tail ids (at most " + std::to_string(m_capacity) + " and " +
                                               std::to_string(2 * k_max_choice_rows) + ")");
    // The generator chooses on the host when these are set; the kernels know none.
    if (has_count_penalties(spec.params))
        throw Error(ErrorCode::Unsupported, "CUDA backend: token choice on the device has no frequency or presence "
                                            "penalty (choose on the host)");
    if (!spec.allowed.empty())
        throw Error(ErrorCode::Unsupported, "CUDA backend: token choice on the device knows no grammar (JSON mode: "
                                            "choose on the host)");
    ChoiceParams p;
    p.temperature = spec.params.temperature;
    p.top_p = spec.params.top_p;
    p.min_p = spec.params.min_p;
    p.penalty = spec.params.repetition_penalty;
    p.top_k = spec.params.top_k;
    p.vocab = V;
    p.n_valid = std::clamp<int64_t>(spec.n_valid, 1, V);
    return p;
}

// The penalised ids (the history only where it changed since the last call:
// within a request it only grows), the random numbers and the drafts, through
// the pinned staging buffers. The stream is idle (every call ends waiting), so
// the staging buffers are free.
void CudaBackend::upload_choice_inputs(const ChoiceSpec& spec, const double* u, int64_t n_u, const int32_t* drafts,
                                       int64_t n_drafts) {
    if (spec.params.repetition_penalty != 1.0f) {
        const size_t n = spec.history.size();
        const size_t common = std::min(n, m_history_on_device.size());
        const size_t same = size_t(std::mismatch(spec.history.begin(), spec.history.begin() + ptrdiff_t(common),
                                                 m_history_on_device.begin())
                                       .first -
                                   spec.history.begin());
        m_history_on_device.resize(same);  // what stays valid whatever happens to the copy below
        if (same < n) {
            std::memcpy(m_h.choice_history + same, spec.history.data() + same, (n - same) * sizeof(int32_t));
            to_device(m_s.choice_history + same, m_h.choice_history + same, (n - same) * sizeof(int32_t));
        }
        if (!spec.tail.empty()) {
            std::memcpy(m_h.choice_tail, spec.tail.data(), spec.tail.size() * sizeof(int32_t));
            to_device(m_s.choice_tail, m_h.choice_tail, spec.tail.size() * sizeof(int32_t));
        }
    }
    if (n_u > 0) {
        std::memcpy(m_h.choice_u, u, size_t(n_u) * sizeof(double));
        to_device(m_s.choice_u, m_h.choice_u, size_t(n_u) * sizeof(double));
    }
    if (n_drafts > 0) {
        std::memcpy(m_h.choice_drafts, drafts, size_t(n_drafts) * sizeof(int32_t));
        to_device(m_s.choice_drafts, m_h.choice_drafts, size_t(n_drafts) * sizeof(int32_t));
    }
}

// After a successful upload: the device holds the whole history (the mirror
// holds its unchanged prefix; append the rest).
void CudaBackend::note_history_uploaded(const ChoiceSpec& spec) {
    const size_t have = m_history_on_device.size();
    m_history_on_device.insert(m_history_on_device.end(), spec.history.begin() + ptrdiff_t(have), spec.history.end());
}

// One token-choice step: the inputs up, the rows row0 .. row0 + n - 1 penalised
// into the work rows when the spec has a penalty (read in place otherwise),
// `enqueue` on them, n_out ids of m_s.choice_out back to m_h.choice_out, wait.
void CudaBackend::run_choice(const ChoiceSpec& spec, const ChoiceParams& p, int64_t row0, int64_t n, const double* u,
                             int64_t n_u, const int32_t* drafts, int64_t n_drafts, int64_t n_out,
                             const std::function<void(const float*)>& enqueue) {
    CETUS_CUDA(cudaSetDevice(m_device));
    cudaStream_t s = m_stream.get();
    const bool penalise = p.penalty != 1.0f;
    try {
        upload_choice_inputs(spec, u, n_u, drafts, n_drafts);
        const float* rows = m_s.logits + row0 * p.vocab;
        if (penalise) {
            launch_choice_penalise(rows, n, p, m_s.choice_history, int64_t(spec.history.size()), m_s.choice_tail,
                                   int64_t(spec.tail.size()), spec.tail_first, m_s.choice, s);
            rows = m_s.choice.work;
        }
        enqueue(rows);
        to_host(m_h.choice_out, m_s.choice_out, size_t(n_out) * sizeof(int32_t));
    } catch (...) {
        (void)cudaStreamSynchronize(s);
        throw;
    }
    CETUS_CUDA(cudaStreamSynchronize(s));
    if (penalise) note_history_uploaded(spec);
}

void CudaBackend::choose(int64_t row0, int64_t n, const ChoiceSpec& spec, const double* u, int64_t q_slot,
                         int32_t* ids) {
    const ChoiceParams p = choice_params(spec, row0, n);
    const bool greedy = is_greedy(spec.params);
    if (q_slot >= 0 && q_slot + n > k_max_choice_rows)
        throw Error(ErrorCode::BadRequest, "CUDA backend: draft slots " + std::to_string(q_slot) + " .. " +
                                               std::to_string(q_slot + n - 1) + " past " +
                                               std::to_string(k_max_choice_rows));
    cudaStream_t s = m_stream.get();
    run_choice(spec, p, row0, n, u, greedy ? 0 : n, nullptr, 0, n, [&](const float* rows) {
        if (greedy) {
            launch_choice_argmax(rows, n, p, m_s.choice, m_s.choice_out, s);
            return;
        }
        float* probs = q_slot >= 0 ? m_s.choice_q + q_slot * p.vocab : m_s.choice_probs;
        launch_choice_distribution(rows, n, p, m_s.choice, probs, s);
        launch_choice_draw(probs, n, p.vocab, m_s.choice_u, m_s.choice_out, s);
    });
    std::memcpy(ids, m_h.choice_out, size_t(n) * sizeof(int32_t));
}

void CudaBackend::certain_draft(int64_t slot, int32_t id) {
    const int64_t V = m_config.vocab_size;
    if (slot < 0 || slot >= k_max_choice_rows || id < 0 || id >= V)
        throw Error(ErrorCode::BadRequest, "CUDA backend: draft slot " + std::to_string(slot) + " with id " +
                                               std::to_string(id) + " out of range");
    // The slot's row zeroed and its one 1 copied in, in stream order before verify()'s kernels.
    static const float one = 1.0f;
    float* q = m_s.choice_q + slot * V;
    CETUS_CUDA(cudaMemsetAsync(q, 0, size_t(V) * sizeof(float), m_stream.get()));
    CETUS_CUDA(cudaMemcpyAsync(q + id, &one, sizeof(float), cudaMemcpyHostToDevice, m_stream.get()));
}

VerifyResult CudaBackend::verify(const ChoiceSpec& spec, const int32_t* drafts, int64_t D, const double* u) {
    if (D < 0) throw Error(ErrorCode::BadRequest, "CUDA backend: verify of " + std::to_string(D) + " drafts");
    const ChoiceParams p = choice_params(spec, 0, D + 1);
    if (is_greedy(spec.params))
        throw Error(ErrorCode::BadRequest, "CUDA backend: verify is for sampling; greedy drafts are checked by choose");
    for (int64_t a = 0; a < D; ++a)
        if (drafts[a] < 0 || drafts[a] >= p.vocab)
            throw Error(ErrorCode::BadRequest, "CUDA backend: draft id " + std::to_string(drafts[a]) +
                                                   " outside the vocabulary");
    cudaStream_t s = m_stream.get();
    run_choice(spec, p, 0, D + 1, u, D + 1, drafts, D, 2, [&](const float* rows) {
        launch_choice_distribution(rows, D + 1, p, m_s.choice, m_s.choice_probs, s);
        launch_choice_verify(m_s.choice_probs, m_s.choice_q, m_s.choice_drafts, D, p.vocab, m_s.choice_u,
                             m_s.choice_out, s);
    });
    return {m_h.choice_out[0], m_h.choice_out[1]};
}

// Device-to-device copies of 1 GiB (bytes read + written per second), the way
// the memory-bandwidth figure of a card is usually measured. 0 when the memory
// for the test is not free.
double CudaBackend::copy_bandwidth_gbs() {
    if (m_copy_gbs >= 0) return m_copy_gbs;
    m_copy_gbs = 0;
    CETUS_CUDA(cudaSetDevice(m_device));
    const size_t bytes = size_t(1) << 30;
    size_t free_bytes = 0, total = 0;
    CETUS_CUDA(cudaMemGetInfo(&free_bytes, &total));
    if (free_bytes < 2 * bytes + k_reserved_bytes) return m_copy_gbs;
    DeviceBuffer src(bytes), dst(bytes);
    cudaStream_t s = m_stream.get();
    CETUS_CUDA(cudaMemsetAsync(src.get(), 1, bytes, s));
    const double sec = time_on_stream(s, 10, [&] {
        CETUS_CUDA(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, s));
    });
    m_copy_gbs = 2.0 * double(bytes) / sec / 1e9;
    return m_copy_gbs;
}

// A square bf16 GEMM (8192^3, fp32 accumulation, bf16 out) through cuBLAS: the
// dense tensor-core throughput prefill is compared with. 0 when memory is short.
double CudaBackend::peak_bf16_tflops() {
    if (m_peak_tflops >= 0) return m_peak_tflops;
    m_peak_tflops = 0;
    CETUS_CUDA(cudaSetDevice(m_device));
    const int n = 8192;
    const size_t bytes = size_t(n) * n * 2;
    size_t free_bytes = 0, total = 0;
    CETUS_CUDA(cudaMemGetInfo(&free_bytes, &total));
    if (free_bytes < 3 * bytes + k_cublas_workspace_bytes + k_reserved_bytes) return m_peak_tflops;
    DeviceBuffer a(bytes), b(bytes), c(bytes), ws(k_cublas_workspace_bytes);
    cudaStream_t s = m_stream.get();
    // Non-zero operands (0x3c3c = bf16 0.0115): tensor cores draw less power on zeros.
    CETUS_CUDA(cudaMemsetAsync(a.get(), 0x3c, bytes, s));
    CETUS_CUDA(cudaMemsetAsync(b.get(), 0x3c, bytes, s));
    cublasHandle_t h = nullptr;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) return m_peak_tflops;
    const float one = 1.0f, zero = 0.0f;
    bool ok = cublasSetStream(h, s) == CUBLAS_STATUS_SUCCESS &&
              cublasSetWorkspace(h, ws.get(), k_cublas_workspace_bytes) == CUBLAS_STATUS_SUCCESS;
    double sec = 0;
    if (ok) {
        try {
            sec = time_on_stream(s, 10, [&] {
                ok = ok && cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a.get(), CUDA_R_16BF, n, b.get(),
                                        CUDA_R_16BF, n, &zero, c.get(), CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS;
            });
        } catch (...) {
            cublasDestroy(h);
            throw;
        }
    }
    cublasDestroy(h);
    if (ok && sec > 0) m_peak_tflops = 2.0 * double(n) * n * n / sec / 1e12;
    return m_peak_tflops;
}

// block_forward: x += mla(rmsnorm(x)); x += mlp_or_moe(rmsnorm(x)); with a =
// input_norm(x) already computed and the next norm fused into the last add.
void CudaBackend::block(const DeviceLayer& l, int64_t cache_layer, int64_t n, int32_t* route_ids, float* route_w,
                        int64_t route_stride, const float* next_norm, float* out) {
    const float eps = float(m_config.rms_norm_eps);
    attention(l, cache_layer, n);  // a -> o: [n, n_h * d_v]
    // The output projection (o -> r), x += r and a = post_norm(x) (one launch in decode).
    m_gemm->matmul_add_rmsnorm(l.o, m_s.o, m_shape.n_h * m_shape.d_v, n, m_s.r, m_s.x, l.post_norm, eps, m_s.a);
    if (l.is_moe) moe(l, n, route_ids, route_w, route_stride, next_norm, out);  // adds into x, then out = next_norm(x)
    else mlp(l.mlp, m_s.a, n, m_s.r, next_norm, out);                          // the same for a dense MLP
}

// CETUS_CUDA_PREFETCH_AHEAD=1, decode and verify batches: m_side, forked after the query and
// latent projections, asks the L2 for the output projection's rows and the router's while
// this stream's attention launches (latency-bound, reading a few MB) leave the memory idle;
// attention() joins it back at its end, before the output projection. Within a quarter of the L2 (V3's
// 235 MB output projection is left out, its router not). Whether it forked.
bool CudaBackend::prefetch_ahead(const DeviceLayer& l, int64_t n) {
    if (!m_prefetch_ahead || !m_gemm->small(n)) return false;
    L2Ranges r;
    int64_t total = 0;
    const int64_t budget = int64_t(m_info.l2_bytes / 4);
    for (const DeviceMatrix* w : {&l.o, l.is_moe ? &l.router : nullptr}) {
        if (!w || !w->data) continue;
        const int64_t bytes = device_matrix_bytes(*w);
        if (bytes <= 0 || total + bytes > budget) continue;
        r.p[r.n] = w->data;
        r.bytes[r.n] = bytes;
        ++r.n;
        total += bytes;
    }
    if (r.n == 0) return false;
    cudaStream_t s = m_stream.get();
    CETUS_CUDA(cudaEventRecord(m_ahead_fork.get(), s));
    CETUS_CUDA(cudaStreamWaitEvent(m_side.get(), m_ahead_fork.get(), 0));
    launch_l2_prefetch(r, m_info.n_sm, m_side.get());
    CETUS_CUDA(cudaEventRecord(m_ahead_join.get(), m_side.get()));
    return true;
}

// mla_forward, absorbed, up to the heads' outputs: a -> o, at the positions in m_s.start_pos.
void CudaBackend::attention(const DeviceLayer& l, int64_t cache_layer, int64_t n) {
    const ModelConfig& c = m_config;
    const MlaShape& m = m_shape;
    const int64_t H = c.hidden_size, d_q = c.q_lora_rank, d_qk = m.d_n + m.d_r;
    cudaStream_t s = m_stream.get();
    Gemm& gemm = *m_gemm;
    // The two projections of the normed input share one launch in decode.
    if (l.q_lora) {
        gemm.matmul_pair(l.q_a, m_s.cq, d_q, l.kv_a, m_s.kv, m.d_c + m.d_r, m_s.a, H, n);  // [n, d_q], [n, d_c + d_r]
        launch_rmsnorm(m_s.cq, d_q, l.q_a_norm, k_latent_norm_eps, n, d_q, m_s.cq, d_q, s);
        gemm.matmul(l.q_b, m_s.cq, d_q, n, m_s.q, m.n_h * d_qk);  // [n, n_h, d_qk]
    } else {
        gemm.matmul_pair(l.q_proj, m_s.q, m.n_h * d_qk, l.kv_a, m_s.kv, m.d_c + m.d_r, m_s.a, H, n);
    }
    const bool forked = prefetch_ahead(l, n);
    void* cache = cache_rows(cache_layer);
    // The cache rows and the queries' rope, and q_abs [n, n_h, d_c] (one launch in decode).
    const LatentCacheArgs latent{m_s.kv, l.kv_a_norm, k_latent_norm_eps, m_weights.rope_table, m_interleave,
                                 m_s.start_pos, m.d_c, m.d_r, cache, m_cache_bf16, m_s.q, m.n_h, m.d_n};
    if (gemm.prefill_expanded(l.kv_b, n, *m_h.start_pos, m, m_cache_bf16)) {  // keys and values expanded
        launch_latent_cache(latent, n, s);
        gemm.mla_prefill_expanded(l.kv_b, m_s.q, cache, m_cache_bf16, n, *m_h.start_pos, m, m_scale, m_s.o);
    } else {
        gemm.latent_cache_absorb_q(latent, l.kv_b, m_s.q, n, m, m_s.q_abs);
        bool absorbed = false;  // o written with the splits' merge (decode and verify batches, one launch)
        if (gemm.prefill_attention(n))  // prefill chunks on the tensor cores; the host knows their position
            gemm.mla_prefill(m_s.q_abs, m_s.q, cache, m_cache_bf16, n, *m_h.start_pos, m, m_scale, m_s.ctx);
        else
            absorbed = launch_mla_attention(m_s.q_abs, m_s.q, cache, m_cache_bf16, n, m_s.start_pos, m, m_scale,
                                            m_info.n_sm, m_s.parts, m_s.ctx, s,
                                            AbsorbV{gemm.fused_tail() ? &l.kv_b : nullptr, m_s.o});
        if (!absorbed) gemm.absorb_v(l.kv_b, m_s.ctx, n, m, m_s.o);  // [n, n_h, d_v]; block() projects it back to H
    }
    if (forked) CETUS_CUDA(cudaStreamWaitEvent(s, m_ahead_join.get(), 0));  // the prefetch's join
}

// moe_forward: x += sum_k w_k expert_k(a) + shared(a), all on the device.
void CudaBackend::moe(const DeviceLayer& l, int64_t n, int32_t* route_ids, float* route_w, int64_t route_stride,
                      const float* next_norm, float* out) {
    const ModelConfig& c = m_config;
    const int64_t H = c.hidden_size, E = c.n_routed_experts;
    const int32_t K = int32_t(c.num_experts_per_tok);
    cudaStream_t s = m_stream.get();
    // CETUS_CUDA_OVERLAP=1: decode and verify batches run the shared experts (gate/up, then
    // down into m_s.shared_out, the non-fused path's launches) on m_side, forked here, while
    // this stream routes (a launch that reads 0.3 MB and leaves the memory idle) and runs the
    // routed experts' gate/up; the down launch, whose combine adds m_s.shared_out, waits for
    // them. Their buffers (m_s.a read, m_s.g, m_s.u and m_s.shared_out written) are not
    // touched by this stream between the fork and the join.
    const bool overlap = m_overlap && l.has_shared && m_gemm->small(n);
    if (overlap) {
        CETUS_CUDA(cudaEventRecord(m_fork.get(), s));
        CETUS_CUDA(cudaStreamWaitEvent(m_side.get(), m_fork.get(), 0));
        {
            const StreamScope side(*m_gemm, m_side.get());
            mlp(l.shared, m_s.a, n, m_s.shared_out);  // [n, H]
        }
        CETUS_CUDA(cudaEventRecord(m_join.get(), m_side.get()));
    }
    RouteParams p = m_route;
    p.bias = l.bias;
    if (m_gemm->fused_tail() && router_route_group_fits(n, p, l.router)) {  // decode and verify batches: one launch
        launch_router_route_group(l.router, m_s.a, H, n, m_s.z, p, route_ids, route_w, route_stride, m_s.pairs,
                                  m_gemm->fused_tail(), s);
    } else {
        m_gemm->matmul_fp32(l.router, m_s.a, H, n, m_s.z, E);  // [n, E]
        if (route_group_fits(n, p)) {
            launch_route_group(m_s.z, n, p, route_ids, route_w, route_stride, m_s.pairs, s);
        } else {
            launch_route(m_s.z, n, p, route_ids, route_w, route_stride, s);
            launch_group_pairs(route_ids, route_stride, n, K, int32_t(E), m_s.pairs, s);
        }
    }
    // Prefill chunks on the tensor cores (decode steps stay on the fp32 kernel, which reads each weight once).
    // (m_expert_mma is off in exact mode.) Its bf16 rows of h live in m_s.h's memory.
    // The tensor-core kernel reads BF16, FP8 and GGUF blocks; F32 weights stay on the fp32 kernel.
    const auto mma_dtype = [](DeviceDtype d) { return d != DeviceDtype::F32; };
    const bool mma = m_expert_mma && !m_gemm->small(n) && mma_dtype(l.experts.gate_up_dtype) &&
                     mma_dtype(l.experts.down_dtype);
    const int64_t I = l.experts.inter;
    const ExpertMma mma_args{m_s.x_bf16, round_up(H, 8), reinterpret_cast<uint16_t*>(m_s.h), round_up(I, 8),
                             m_expert_tile_rows};
    const ExpertMma* on_mma = mma ? &mma_args : nullptr;
    // Decode and verify batches (every batch in exact mode, so a token's sums never
    // depend on its batch): the shared experts join the routed experts' two launches.
    const bool fuse_shared = l.has_shared && !overlap && m_gemm->fused_tail() && m_gemm->small(n) &&
                             experts_shared_fusable(l.experts, l.shared.gate, l.shared.up, l.shared.down, H);
    const SharedExpertLaunch shared{l.shared.gate, l.shared.up, l.shared.down, m_s.g, m_s.shared_out};
    const SharedExpertLaunch* with = fuse_shared ? &shared : nullptr;
    if (l.has_shared && !fuse_shared && !overlap) mlp(l.shared, m_s.a, n, m_s.shared_out);  // [n, H]
    // The combine: in the down launch for decode batches (the same bits).
    const MoeCombine combine{m_s.x,     route_w, route_stride, l.has_shared ? m_s.shared_out : nullptr,
                             next_norm, float(c.rms_norm_eps), out, m_gemm->fused_tail(), m_s.grid_counters};
    const bool fuse_combine = combine.done && n <= k_fused_tail_max_tokens;  // (such batches are small: no mma)
    launch_experts_gate_up(l.experts, m_s.pairs, m_s.a, n, K, H, int32_t(E), m_s.h, on_mma, with, s);  // [n * K, I]
    if (overlap) CETUS_CUDA(cudaStreamWaitEvent(s, m_join.get(), 0));  // m_s.shared_out written
    launch_experts_down(l.experts, m_s.pairs, m_s.h, n, K, H, int32_t(E), m_s.y, on_mma, with,
                        fuse_combine ? &combine : nullptr, s);  // [n * K, H]
    if (!fuse_combine) launch_moe_combine(combine, m_s.y, n, K, H, s);
}

// mlp_forward: out = down(silu(gate in) * up in). With next_norm, the residual add
// follows: x += out, then norm_out = next_norm(x) (in the down launch in decode).
void CudaBackend::mlp(const DeviceMlp& w, const float* in, int64_t n, float* out, const float* next_norm,
                      float* norm_out) {
    const int64_t H = m_config.hidden_size, I = w.gate.rows;
    m_gemm->matmul_gate_up(w.gate, w.up, in, H, n, m_s.g, m_s.u);  // [n, I] (one launch in decode)
    if (next_norm)
        m_gemm->matmul_add_rmsnorm(w.down, m_s.g, I, n, out, m_s.x, next_norm, float(m_config.rms_norm_eps), norm_out);
    else
        m_gemm->matmul(w.down, m_s.g, I, n, out, H);  // [n, H]
}

}  // namespace
}  // namespace cetus::cuda

extern "C" __attribute__((visibility("default"))) int cetus_cuda_abi() { return cetus::k_cuda_plugin_abi; }

extern "C" __attribute__((visibility("default"))) int cetus_cuda_probe(char* text, size_t text_len) {
    const auto write = [&](const std::string& s) {
        if (text && text_len > 0) std::snprintf(text, text_len, "%s", s.c_str());
    };
    try {
        int count = 0;
        const cudaError_t e = cudaGetDeviceCount(&count);
        if (e == cudaErrorNoDevice || (e == cudaSuccess && count == 0)) {
            write("no CUDA device");
            return 0;
        }
        if (e == cudaErrorInsufficientDriver) {  // also what a machine without libcuda reports
            write("no NVIDIA driver for CUDA " + cetus::cuda::cuda_version(CUDART_VERSION) +
                  " (none installed, or an older one)");
            return 0;
        }
        if (e != cudaSuccess) {
            write(std::string("CUDA unavailable: ") + cudaGetErrorString(e));
            return 0;
        }
        cudaDeviceProp p;
        int driver = 0, runtime = 0;
        if (cudaGetDeviceProperties(&p, 0) != cudaSuccess || cudaDriverGetVersion(&driver) != cudaSuccess ||
            cudaRuntimeGetVersion(&runtime) != cudaSuccess) {
            write(std::string("CUDA device 0 cannot be queried: ") + cudaGetErrorString(cudaGetLastError()));
            return 0;
        }
        write(std::string(p.name) + ", sm_" + std::to_string(p.major) + std::to_string(p.minor) + ", " +
              cetus::cuda::fixed1(cetus::cuda::gib(p.totalGlobalMem)) + " GiB, driver " +
              cetus::cuda::cuda_version(driver) + ", runtime " + cetus::cuda::cuda_version(runtime) +
              (count > 1 ? ", " + std::to_string(count) + " devices" : ""));
        return count;
    } catch (...) {  // std::string allocation; the contract says never throw
        write("CUDA probe failed");
        return 0;
    }
}

extern "C" __attribute__((visibility("default"))) cetus::Backend* cetus_cuda_create(
    const cetus::CudaBackendArgs* args) {
    using cetus::Error;
    using cetus::ErrorCode;
    if (!args || args->abi != cetus::k_cuda_plugin_abi || args->sizeof_model != sizeof(cetus::Model) ||
        args->sizeof_layer != sizeof(cetus::LayerWeights) || args->sizeof_config != sizeof(cetus::ModelConfig) ||
        args->sizeof_forward_options != sizeof(cetus::ForwardOptions) ||
        args->sizeof_mtp_options != sizeof(cetus::MtpOptions))
        throw Error(ErrorCode::Unsupported, "plug-in built from a different tree");
    if (!args->model || !args->rope_table || args->capacity < 1)
        throw Error(ErrorCode::Unsupported,
                    "CUDA backend: model, rope table and a capacity of at least 1 are required");
    try {
        return new cetus::cuda::CudaBackend(*args);
    } catch (const std::bad_alloc&) {
        throw Error(ErrorCode::OutOfMemory, "CUDA backend: out of host memory while loading");
    }
}
