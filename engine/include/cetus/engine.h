// The engine's public API: load a DeepSeek-family model folder (or build a
// random model of a published shape for benchmarks), describe it, and run it.
// Thread-safety: an Engine is used by one thread at a time (the app's worker).
// Errors: every function here throws cetus::Error (see error.h).
#pragma once

#include "cetus/error.h"
#include "cetus/generate.h"
#include "cetus/tokenizer.h"

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace cetus {

enum class Device { Auto, Cpu, Cuda };

// The latent cache's element type. F32 keeps every cached value as computed (the
// reference: the fixtures and the CUDA-against-CPU comparisons run with it). BF16
// rounds each value to bf16 when it is written (nearest even, relative error up
// to 2^-9), as DeepSeek's own inference keeps the cache: half the memory, so twice
// the context in the same space, and half the bytes attention reads per token.
enum class KvCacheType { F32, BF16 };
const char* kv_cache_type_name(KvCacheType t) noexcept;  // "f32" | "bf16"
// "f32" | "bf16" (also "fp32", "bfloat16"); throws Error(BadRequest) naming the choices.
KvCacheType kv_cache_type_from_name(const std::string& name);

struct EngineOptions {
    std::filesystem::path model_dir;
    // Auto: the GPU when the CUDA plug-in finds one and the backend takes the model
    // (memory, supported shapes), else the CPU with a log line saying why. Cuda: the
    // GPU or an Error (Device, OutOfMemory with needed and free bytes, Unsupported).
    Device device = Device::Auto;
    int n_threads = 0;            // 0: OpenMP's default
    int64_t max_context = 4096;   // latent-cache capacity in tokens (capped by the model)
    // Quantise an F32/BF16/F16 checkpoint's linear layers (attention projections, every
    // MLP and expert matrix) to FP8 e4m3 with 128x128 block scales while loading, as
    // DeepSeek-V3's FP8 release stores them: about half the memory of BF16 and half the
    // bytes a decode step reads. Embeddings, the output head and the router stay as
    // they are; an FP8 checkpoint is used as it is. A GGUF file's linear layers are
    // quantised from their blocks' values: on the GPU, which holds blocks as BF16, that
    // halves them; on the CPU 4-bit blocks are smaller than FP8.
    bool fp8_on_load = false;
    // A GGUF file's block-quantised matrices (Q4_K, Q8_0, ...) are used in their blocks:
    // the file's size in memory, decoded as they are read. Expanded instead (to BF16, once
    // while loading) they take about 3.5 times the memory of 4-bit blocks, but a product
    // no longer decodes them, which is faster where the cores and not the memory limit
    // the CPU's decode. (The CUDA backend decodes blocks as its products read them; expanded,
    // it holds BF16.)
    bool expand_gguf = false;
    // The CPU backend's products of GGUF blocks quantise their activations to int8 (per
    // run of 32 values) and use integer dot products, as llama.cpp does, instead of
    // decoding every weight to fp32: faster where decoding limits a step, at a small
    // cost in precision (a product moves by at most half an activation step times the
    // sum of its |weights|). Other weight types, and the CUDA backend, are unaffected.
    bool int8_activations = false;
    // The same for the CUDA backend's decode and verify products of GGUF blocks (the same
    // quantisation and integer sums, with dp4a; its prefill products are unaffected), apart
    // from the CPU's: not yet measured on a GPU (cetus-cli --int8-activations sets both).
    bool gpu_int8_activations = false;
    KvCacheType kv_cache = KvCacheType::F32;
    // Host memory for the prefixes of recent conversations (their latent-cache rows,
    // small with MLA): a request that goes on with one of them after others ran gets
    // its rows back instead of a new prefill. 0 keeps none.
    uint64_t prefix_store_bytes = uint64_t(512) << 20;
    // The prefix store's disk tier: a folder where those prefixes are written too (in the
    // background), and the cached prefix when the engine goes and after an answer that
    // grew it by a quarter since its last file (so a killed process loses little), so
    // that a conversation opened again after a restart goes on without a new prefill. Only files written by
    // an engine with the same model files, weight types, backend, device, cache precision
    // and version are used; a damaged file is removed with a log line. Empty: none.
    std::filesystem::path prefix_cache_dir;
    // The folder's budget, shared by every model's files there (least recently used go first).
    uint64_t prefix_cache_bytes = uint64_t(2) << 30;
    // Time the backend's alternative ways of enqueueing a decode step (the CUDA backend's:
    // the shared experts on a second stream, L2 prefetches ahead, programmatic dependent
    // launch, the decode fusions, GGUF rows staged) on this machine after loading, and keep the fastest that
    // gives the logits of the backend as built (Engine::step_tuning says what was timed).
    // A second or so on a GPU; nothing on the CPU backend, which has no such switches.
    bool tune_steps = false;
};

// What EngineOptions::tune_steps timed and chose: decode steps of one token after
// `context` cached ones, `rounds` rounds over the settings in turn, each of `steps` steps.
struct StepTrial {
    std::string setting;       // e.g. "overlap=1, pdl=1"; "as built" for the backend's own
    double step_ms = 0.0;      // median over the rounds of a step's mean time (0: not timed)
    double logit_error = 0.0;  // largest |logit - as built's| over the largest |logit| as built
    bool valid = true;         // logit_error within the bound (else never chosen, nor timed)
};
struct StepTuning {
    bool ran = false;
    std::string note;  // what was chosen, or why nothing was timed
    int64_t context = 0;
    int rounds = 0, steps = 0;
    std::vector<StepTrial> trials;  // the first: as built
    std::string chosen;             // a trial's setting
    double built_ms = 0.0, chosen_ms = 0.0;
    double seconds = 0.0;  // the tuning's own time
};

struct LoadProgress {
    std::function<void(float fraction, const std::string& stage)> report;  // may be empty
    const std::atomic<bool>* cancel = nullptr;  // set to stop loading: load throws Error(Cancelled)
};

struct ModelInfo {
    std::string name;          // folder name or preset
    std::string model_type;    // deepseek_v2 | deepseek_v3
    std::string routing;       // e.g. "sigmoid, noaux_tc, 8 groups (top 4)"
    std::string weight_dtype;  // e.g. "BF16", "FP8 e4m3 128x128 + BF16"
    std::string backend;       // "cpu" | "cuda"
    std::string device;        // e.g. "16 threads" or "NVIDIA H200, sm_90, 139.8 GiB, CUDA 13.0"
    int64_t n_layers = 0, n_moe_layers = 0, first_k_dense_replace = 0, n_mtp_layers = 0;
    int64_t hidden_size = 0, n_heads = 0, vocab_size = 0;
    int64_t q_lora_rank = 0, kv_lora_rank = 0, qk_nope_head_dim = 0, qk_rope_head_dim = 0, v_head_dim = 0;
    int64_t n_routed_experts = 0, n_shared_experts = 0, n_active_experts = 0;
    int64_t max_position_embeddings = 0, context_length = 0;
    uint64_t n_params_total = 0, n_params_active = 0, n_params_mtp = 0, weight_bytes = 0;
    // Cache bytes per token at 2 bytes per element (BF16), all main layers:
    // MLA (d_c + d_r), standard multi-head attention (2 n_h d_h) and GQA with
    // 8 KV heads (2 * min(8, n_h) * d_h), d_h = v_head_dim.
    uint64_t kv_bytes_per_token_mla = 0, kv_bytes_per_token_mha = 0, kv_bytes_per_token_gqa8 = 0;
    uint64_t kv_bytes_per_token_held = 0;  // what this backend actually stores per token
    std::string kv_cache_type;             // "f32" | "bf16": the held cache's element type
    int64_t bos_token_id = -1, eos_token_id = -1;
    std::string chat_template;  // detected family, e.g. "deepseek-v3"; empty without a tokenizer
};

// Options of a random model of a named shape, built in memory (benchmarks).
struct RandomModelOptions {
    std::string preset;          // tiny | medium-cpu | v2-lite | v3-layers
    std::string dtype = "bf16";  // bf16 | fp8 | q4_k_m
    int64_t n_layers = 0;        // 0: the preset's own count
    uint64_t seed = 1;
    int64_t intermediate_size = 0;  // the dense layers' MLP width; 0: the preset's own
};
std::vector<std::string> random_model_presets();

// A file of a prefix cache folder (EngineOptions::prefix_cache_dir), as listed by
// Engine::list_prefix_files.
struct PrefixFileInfo {
    std::filesystem::path path;
    std::string model;       // the model it belongs to: "model folder DIR" or "random model ..."
    std::string backend;     // e.g. "cpu", "cuda, NVIDIA H200, sm_90, CUDA 13.0"
    std::string cache_type;  // e.g. "f32, 4608 bytes per token"
    std::string tag;         // its conversation (GenerateRequest::cache_tag); may be empty
    int64_t tokens = 0;
    uint64_t bytes = 0;
    int64_t last_used_s = 0;  // seconds since 1970 (the file's modification time)
    std::string problem;      // why it cannot be read; empty when its head reads
};

class Model;
class Backend;

class Engine {
public:
    static std::unique_ptr<Engine> load(const EngineOptions& options, const LoadProgress& progress = {});
    static std::unique_ptr<Engine> create_random(const RandomModelOptions& random, const EngineOptions& options);
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    const ModelInfo& info() const { return m_info; }

    // Logits of every position of ids, from an empty cache: [ids.size() x vocab], row-major.
    // Throws BadRequest for ids out of the vocabulary, ContextOverflow past the context.
    std::vector<float> logits(std::span<const int32_t> ids);

    // Renders, tokenizes, reuses the cached prefix of the previous request, then
    // decodes (with MTP drafts when requested and available), calling sink for
    // every accepted token. Blocking; returns on finish, stop or cancel.
    // Throws BadRequest / ContextOverflow (with the overflow size) before any work.
    GenerateResult generate(const GenerateRequest& request, const TokenSink& sink = {});
    // Prompt length of a request after template and tokenizer.
    int64_t count_tokens(const GenerateRequest& request) const;
    // For chats that outgrow the context: leaves out the oldest turns (a user message
    // and the answers and tool outputs after it; never a system message, never the turn
    // of the last user message) until the prompt leaves room for an answer of
    // min(max_new_tokens, max(16, context / 4)) tokens. Returns how many messages were
    // left out. A last turn too long on its own stays, and generate() refuses it.
    int fit_to_context(GenerateRequest& request) const;
    // Forget the cached prefix (and the stored ones in memory; the disk tier keeps its files).
    void reset_cache();
    // Writes the cached prefix to the disk tier (EngineOptions::prefix_cache_dir) and waits
    // for its queued writes; the destructor does this too. Nothing without a disk tier.
    void persist_prefixes();
    // Forgets every prefix, and removes this engine's files from the disk tier, or with
    // every_model every prefix file in its folder (other models' and precisions' too).
    void clear_prefix_cache(bool every_model = false);
    // Forgets what is kept of a conversation (GenerateRequest::cache_tag, not empty): the
    // cached prefix, the store's, and its files on disk in every model's. For a deleted
    // conversation, whose token ids are its text. Throws Error(Io) when the disk tier's
    // folder cannot be listed.
    void forget_prefixes(const std::string& cache_tag);
    // The same for a folder alone (no engine, or the one of a setting switched off):
    // removes every prefix file with that tag; returns how many. Throws Error(Io).
    static size_t forget_prefix_files(const std::filesystem::path& dir, const std::string& cache_tag);
    // Removes every prefix file (any model's) from a prefix cache folder; nothing when
    // it does not exist. For a folder no loaded engine uses. Throws Error(Io).
    static void remove_prefix_files(const std::filesystem::path& dir);
    // Every prefix file of a folder, least recently used first (heads only; the rows'
    // checksum is checked when a file is used). Throws Error(Io) when it cannot be listed.
    static std::vector<PrefixFileInfo> list_prefix_files(const std::filesystem::path& dir);
    // EngineOptions::prefix_store_bytes, changed on a loaded engine (benchmarks).
    void set_prefix_store_bytes(uint64_t bytes);
    // EngineOptions::tune_steps's findings (ran = false when it was not asked for).
    const StepTuning& step_tuning() const { return m_tuning; }

    // The model folder's tokenizer; null when it has no tokenizer.json (random models).
    const Tokenizer* tokenizer() const { return m_tokenizer ? &*m_tokenizer : nullptr; }

    // Low-level access for tests and benchmarks (engine-internal types).
    Model& model() { return *m_model; }
    Backend& backend() { return *m_backend; }

private:
    Engine() = default;
    void finish_init(const std::string& name, const EngineOptions& options, const std::string& model_identity);
    // host_model: where the GPU cannot take a model whose weights are drawn on it (a
    // random model), the same model built in host memory for the CPU backend.
    void make_backend(const EngineOptions& options, bool use_cuda, const LoadProgress& progress,
                      const std::function<std::unique_ptr<Model>()>& host_model = {});

    std::unique_ptr<Model> m_model;
    std::unique_ptr<Backend> m_backend;
    std::optional<Tokenizer> m_tokenizer;
    std::unique_ptr<class Generator> m_generator;
    ModelInfo m_info;
    StepTuning m_tuning;
};

}  // namespace cetus
