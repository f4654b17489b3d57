// Engine: loading (config, weights, model, cache), the model summary the UI and
// CLI show, and request validation before anything reaches the forward pass.
#include "cetus/engine.h"

#include "backend.h"
#include "config.h"
#include "cuda_loader.h"
#include "generator.h"
#include "gguf.h"
#include "host_memory.h"
#include "kv_cache.h"
#include "log.h"
#include "model.h"
#include "tune.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>

#include <unistd.h>  // environ

namespace cetus {

Engine::~Engine() {
    // The cached prefix goes to the disk tier, if there is one, so that its conversation
    // goes on without a prefill when this model is loaded again.
    if (!m_generator) return;
    try {
        m_generator->persist();
    } catch (const std::exception& e) {
        engine_log().warn("prefix cache: the current conversation's rows were not written: {}", e.what());
    }
}

void Engine::persist_prefixes() { m_generator->persist(); }

void Engine::clear_prefix_cache(bool every_model) {
    m_generator->reset();
    if (PrefixDisk* disk = m_generator->prefix_disk()) disk->clear(every_model);
}

void Engine::remove_prefix_files(const std::filesystem::path& dir) { PrefixDisk::remove_all(dir); }

std::vector<PrefixFileInfo> Engine::list_prefix_files(const std::filesystem::path& dir) {
    std::vector<PrefixFileInfo> out;
    for (PrefixDisk::FileInfo& f : PrefixDisk::describe(dir)) {
        PrefixFileInfo i;
        i.path = std::move(f.path);
        i.tag = std::move(f.tag);
        i.tokens = f.tokens;
        i.bytes = f.bytes;
        i.last_used_s = f.last_used_s;
        i.problem = std::move(f.problem);
        // The identity's lines (finish_init): the model's, the backend's, the cache's.
        size_t at = 0;
        while (at < f.identity.size()) {
            const size_t end = std::min(f.identity.find('\n', at), f.identity.size());
            const std::string line = f.identity.substr(at, end - at);
            if (line.starts_with("model folder ") || line.starts_with("random model ")) i.model = line;
            else if (line.starts_with("backend ")) i.backend = line.substr(8);
            else if (line.starts_with("cache ")) i.cache_type = line.substr(6);
            at = end + 1;
        }
        out.push_back(std::move(i));
    }
    return out;
}

void Engine::forget_prefixes(const std::string& cache_tag) { m_generator->forget_tagged(cache_tag); }

size_t Engine::forget_prefix_files(const std::filesystem::path& dir, const std::string& cache_tag) {
    return PrefixDisk::remove_tagged(dir, cache_tag);
}

GenerateResult Engine::generate(const GenerateRequest& request, const TokenSink& sink) {
    return m_generator->run(request, sink);
}

int64_t Engine::count_tokens(const GenerateRequest& request) const {
    return int64_t(m_generator->prompt_ids(request).size());
}

int Engine::fit_to_context(GenerateRequest& r) const {
    const int64_t context = info().context_length;
    if (context <= 0) return 0;
    const int64_t room = std::min<int64_t>(r.max_new_tokens, std::max<int64_t>(16, context / 4));
    auto fits = [&](const GenerateRequest& q) { return count_tokens(q) + room <= context; };
    if (fits(r)) return 0;
    // The turns in the order they would go, found without tokenizing: the oldest turn runs
    // from the first message that is not a system message up to the next user message, so
    // that what is left still starts with a user's turn; the turn being answered stays.
    // step[i]: after how many turns message i is gone (0: never).
    const size_t n = r.messages.size();
    std::vector<int> step(n, 0);
    std::vector<size_t> left(n);
    for (size_t i = 0; i < n; ++i) left[i] = i;
    int n_turns = 0;
    for (;;) {
        auto first = std::find_if(left.begin(), left.end(), [&](size_t i) { return r.messages[i].role != "system"; });
        if (first == left.end()) break;
        auto next = std::find_if(first + 1, left.end(), [&](size_t i) { return r.messages[i].role == "user"; });
        if (next == left.end()) break;
        ++n_turns;
        for (auto it = first; it != next; ++it) step[*it] = n_turns;
        left.erase(first, next);
    }
    auto without = [&](int k) {
        GenerateRequest q = r;
        q.messages.clear();
        for (size_t i = 0; i < n; ++i)
            if (step[i] == 0 || step[i] > k) q.messages.push_back(r.messages[i]);
        return q;
    };
    // The fewest turns left out for the prompt to fit: a binary search over the count
    // (the prompt only shrinks as turns go), so a long chat is tokenized about log2(turns)
    // times, not once per turn. When even all of them are not enough, all go and
    // generate() refuses what is left.
    int lo = 1, hi = n_turns;
    while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        if (fits(without(mid))) hi = mid;
        else lo = mid + 1;
    }
    if (n_turns == 0) return 0;
    GenerateRequest fitted = without(lo);
    const int dropped = int(n - fitted.messages.size());
    r.messages = std::move(fitted.messages);
    return dropped;
}

void Engine::reset_cache() { m_generator->reset(); }

void Engine::set_prefix_store_bytes(uint64_t bytes) { m_generator->set_prefix_store_bytes(bytes); }

namespace {

void check_cancel(const LoadProgress& p) {
    if (p.cancel && p.cancel->load()) throw Error(ErrorCode::Cancelled, "loading cancelled");
}
void report(const LoadProgress& p, float f, const std::string& stage) {
    if (p.report) p.report(f, stage);
}

std::string describe_dtypes(const WeightStore& store) {
    uint64_t bytes[16] = {};
    for (const auto& [name, t] : store.tensors()) bytes[int(t.dtype) & 15] += t.n_bytes;
    auto joined = [](const std::set<std::string>& types) {
        std::string j;
        for (const std::string& t : types) j += (j.empty() ? "" : "/") + t;
        return j;
    };
    std::set<std::string> native;  // GGUF block types used in place
    for (const auto& [name, t] : store.tensors())
        if (t.dtype == Dtype::Ggml) native.insert(ggml_type_name(t.ggml_type));
    std::string s;
    if (!native.empty()) s = "GGUF " + joined(native);
    for (Dtype d : {Dtype::F8_E4M3, Dtype::BF16, Dtype::F16, Dtype::F32}) {
        if (!bytes[int(d)]) continue;
        if (!s.empty()) s += " + ";
        s += d == Dtype::F8_E4M3 ? "FP8 e4m3 (128x128 blocks)" : dtype_name(d);
    }
    // Types seen only in expanded tensors (a quantised vector, kv_b_proj's halves).
    std::set<std::string> expanded_only;
    for (const std::string& t : store.gguf_expanded_types())
        if (!native.count(t)) expanded_only.insert(t);
    if (!expanded_only.empty()) s += ", expanded from GGUF " + joined(expanded_only);
    if (store.quantised_on_load()) s += ", FP8 quantised on load";
    return s;
}

}  // namespace

// What makes two engines' cache rows interchangeable: the model's files as they are on
// disk (names, sizes, modification times), its weight types, the backend and device,
// the cache's precision and this build's version. The prefix store's disk tier uses a
// file only when its identity is this one, byte for byte.
static std::string model_files_identity(const std::filesystem::path& model_path) {
    namespace fs = std::filesystem;
    const auto gguf = gguf_model_file(model_path);
    // absolute(): a bare file name has an empty parent, whose listing would fail silently.
    const fs::path dir = gguf ? fs::absolute(*gguf).parent_path() : model_path;
    std::error_code ec;
    std::string s = "model folder " + fs::weakly_canonical(dir, ec).string() + "\n";
    std::vector<std::string> lines;
    std::vector<std::string> gguf_names;  // the file, or every part of a split model
    if (gguf)
        for (const fs::path& p : gguf_part_paths(*gguf)) gguf_names.push_back(p.filename().string());
    for (fs::directory_iterator it(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
        const std::string name = it->path().filename().string();
        // The weights and the config decide the rows; the tokenizer does not.
        if (gguf ? std::find(gguf_names.begin(), gguf_names.end(), name) == gguf_names.end()
                 : !(name.ends_with(".safetensors") || name == "config.json" || name.ends_with(".index.json")))
            continue;
        std::error_code size_ec, time_ec;
        const uint64_t size = fs::file_size(it->path(), size_ec);
        const auto time = fs::last_write_time(it->path(), time_ec);
        if (size_ec || time_ec) continue;
        // Three 4 KiB samples of the contents (start, middle, end): another checkpoint of the
        // same sizes copied with its times kept still differs there.
        uint64_t h = cpx::k_fnv_offset;
        if (std::ifstream in(it->path(), std::ios::binary); in) {
            char buf[4096];
            for (const uint64_t at : {uint64_t(0), size / 2, size > sizeof buf ? size - sizeof buf : 0}) {
                in.clear();
                in.seekg(std::streamoff(at));
                in.read(buf, sizeof buf);
                h = cpx::fnv1a(buf, size_t(in.gcount()), h);
            }
        }
        lines.push_back(name + " " + std::to_string(size) + " " + std::to_string(time.time_since_epoch().count()) + " " +
                        std::to_string(h) + "\n");
    }
    std::sort(lines.begin(), lines.end());
    for (const auto& l : lines) s += l;
    return s;
}

// The settings that change how rows are computed: CETUS_CPU_* / CETUS_CUDA_* switches
// (forms, splits), not the plug-in's path.
static std::string numerics_switches() {
    std::vector<std::string> set;
    for (char** e = environ; e && *e; ++e) {
        const std::string kv = *e;
        if ((kv.starts_with("CETUS_CPU_") || kv.starts_with("CETUS_CUDA_")) && !kv.starts_with("CETUS_CUDA_PLUGIN="))
            set.push_back(kv);
    }
    std::sort(set.begin(), set.end());
    std::string s;
    for (const auto& kv : set) s += "switch " + kv + "\n";
    return s;
}

void Engine::finish_init(const std::string& name, const EngineOptions& o, const std::string& model_identity) {
    const uint64_t prefix_store_bytes = o.prefix_store_bytes;
    const ModelConfig& c = m_model->config();
    ModelInfo& i = m_info;
    i.name = name;
    i.model_type = c.model_type;
    i.backend = m_backend->name();
    i.device = m_backend->description();
    i.n_layers = c.num_hidden_layers;
    i.n_moe_layers = c.n_moe_layers();
    i.first_k_dense_replace = c.first_k_dense_replace;
    i.n_mtp_layers = m_model->n_mtp();
    i.hidden_size = c.hidden_size;
    i.n_heads = c.num_attention_heads;
    i.vocab_size = c.vocab_size;
    i.q_lora_rank = c.q_lora_rank;
    i.kv_lora_rank = c.kv_lora_rank;
    i.qk_nope_head_dim = c.qk_nope_head_dim;
    i.qk_rope_head_dim = c.qk_rope_head_dim;
    i.v_head_dim = c.v_head_dim;
    i.n_routed_experts = c.n_routed_experts;
    i.n_shared_experts = c.n_shared_experts;
    i.n_active_experts = c.num_experts_per_tok;
    i.max_position_embeddings = c.max_position_embeddings;
    i.context_length = m_backend->capacity();
    i.n_params_total = m_model->n_params_main();
    i.n_params_active = m_model->n_params_active();
    i.n_params_mtp = m_model->n_params_mtp();
    i.weight_bytes = m_model->weight_bytes();
    i.weight_dtype = describe_dtypes(m_model->store());
    const uint64_t L = uint64_t(c.num_hidden_layers), d_h = uint64_t(c.v_head_dim);
    i.kv_bytes_per_token_mla = L * uint64_t(c.kv_lora_rank + c.qk_rope_head_dim) * 2;
    i.kv_bytes_per_token_mha = L * 2 * uint64_t(c.num_attention_heads) * d_h * 2;
    // GQA-8 has 8 KV heads, or one per head in a model with fewer heads (then it is MHA).
    i.kv_bytes_per_token_gqa8 = L * 2 * std::min<uint64_t>(8, uint64_t(c.num_attention_heads)) * d_h * 2;
    i.kv_bytes_per_token_held = m_backend->kv_bytes_per_token();
    i.kv_cache_type = kv_cache_type_name(m_backend->kv_cache_type());
    i.bos_token_id = c.bos_token_id;
    i.eos_token_id = c.eos_token_id;
    if (m_tokenizer) {
        i.chat_template = chat_family_name(m_tokenizer->chat_template().family);
        if (m_tokenizer->bos_id() >= 0) i.bos_token_id = m_tokenizer->bos_id();
        if (m_tokenizer->eos_id() >= 0) i.eos_token_id = m_tokenizer->eos_id();
    }
    m_generator = std::make_unique<Generator>(*m_model, *m_backend, tokenizer());
    m_generator->set_prefix_store_bytes(prefix_store_bytes);
    std::string steps_identity;  // the tuned switches whose values change bits (prefix cache's identity)
    if (o.tune_steps) {  // (before anything is cached: the tuner leaves the cache empty)
        const std::vector<Backend::StepSwitch> built = m_backend->step_switches();
        try {
            m_tuning = tune_steps(*m_backend, c.vocab_size);
            if (m_tuning.ran) {
                for (const StepTrial& t : m_tuning.trials)
                    engine_log().info("step tuning: {}: {} (logits {:.2g} from as built{})", t.setting,
                                      t.step_ms > 0 ? fmt::format("{:.3f} ms a step", t.step_ms) : "not timed",
                                      t.logit_error, t.valid ? "" : ", beyond the bound");
                engine_log().info("step tuning: {} ({:.3f} ms against {:.3f} as built; {:.1f} s)", m_tuning.note,
                                  m_tuning.chosen_ms, m_tuning.built_ms, m_tuning.seconds);
            } else {
                engine_log().info("step tuning: {}", m_tuning.note);
            }
        } catch (const std::exception& e) {  // the switches are back as built; the model still runs
            m_tuning = StepTuning{};
            m_tuning.note = std::string("failed (the switches set back as built): ") + e.what();
            engine_log().warn("step tuning {}", m_tuning.note);
        }
        for (const Backend::StepSwitch& w : m_backend->step_switches())
            for (const Backend::StepSwitch& b : built)
                if (b.name == w.name && !w.same_bits && b.value != w.value)
                    steps_identity += (steps_identity.empty() ? "steps " : ", ") + w.name + "=" + std::to_string(w.value);
        if (!steps_identity.empty()) steps_identity += "\n";
        i.device = m_backend->description();
    }
    if (!o.prefix_cache_dir.empty() && o.prefix_cache_bytes > 0) {
        // Bump the rows format when a change alters what the kernels compute without a
        // new version number, so that no engine takes rows computed the old way.
        const std::string identity = "Cetus " CETUS_VERSION " prefix rows, format 1\n" + model_identity + "weights " +
                                     i.weight_dtype + "\nbackend " + m_backend->rows_identity() + "\n" +
                                     numerics_switches() + steps_identity + "cache " + i.kv_cache_type + ", " +
                                     std::to_string(i.kv_bytes_per_token_held) + " bytes per token\n";
        try {
            m_generator->set_prefix_disk(std::make_unique<PrefixDisk>(o.prefix_cache_dir, identity, o.prefix_cache_bytes,
                                                                      m_backend->kv_bytes_per_token(),
                                                                      m_model->n_mtp() > 0 ? c.hidden_size : 0));
        } catch (const std::exception& e) {  // the model still runs, with the store in memory only
            engine_log().warn("prefix cache: none on disk: {}", e.what());
        }
    }
    if (c.n_routed_experts > 0) {
        const char* m = c.topk_method == TopkMethod::NoauxTc ? "noaux_tc"
                        : c.topk_method == TopkMethod::GroupLimitedGreedy ? "group_limited_greedy" : "greedy";
        i.routing = std::string(c.scoring_func == ScoringFunc::Sigmoid ? "sigmoid" : "softmax") + ", " + m;
        if (c.n_group > 1) i.routing += ", " + std::to_string(c.n_group) + " groups (top " + std::to_string(c.topk_group) + ")";
    } else {
        i.routing = "dense";
    }
    const auto count = [](uint64_t n) {  // 15.71 B, 3.23 M
        return n >= 1000000000 ? fmt::format("{:.2f} B", double(n) / 1e9) : fmt::format("{:.2f} M", double(n) / 1e6);
    };
    engine_log().info("loaded {}: {} layers ({} MoE, {} MTP), {} params ({} active), {}, backend {} "
                      "({}), context {} ({} latent cache, {:.1f} MiB)",
                      name, i.n_layers, i.n_moe_layers, i.n_mtp_layers, count(i.n_params_total),
                      count(i.n_params_active), i.weight_dtype, i.backend, i.device, i.context_length,
                      i.kv_cache_type, double(m_backend->kv_capacity_bytes()) / double(1 << 20));
}

// Decides before anything is read whether the CUDA backend will be tried.
static bool select_device(const EngineOptions& o) {
    if (o.n_threads > 0) omp_set_num_threads(o.n_threads);
    if (o.device == Device::Cpu) return false;
    const CudaProbe probe = probe_cuda();
    if (o.device == Device::Cuda) {
        if (!probe.usable) throw Error(ErrorCode::Device, "no usable GPU for the CUDA backend: " + probe.text);
        return true;
    }
    if (!probe.usable) engine_log().info("device auto: using the CPU backend ({})", probe.text);
    return probe.usable;
}

void Engine::make_backend(const EngineOptions& o, bool use_cuda, const LoadProgress& progress,
                          const std::function<std::unique_ptr<Model>()>& host_model) {
    const int64_t ctx = std::min<int64_t>(o.max_context, m_model->config().max_position_embeddings);
    if (use_cuda) {
        m_model->use_int8_activations(o.gpu_int8_activations);  // (the upload reads the marks)
        try {
            m_backend = create_cuda_backend(*m_model, ctx, o.kv_cache, progress);
            // The GPU holds its own copy: bytes the host owns (FP8 on load, random
            // weights) are freed; a memory-mapped checkpoint costs only page cache.
            m_model->release_host_weights();
            return;
        } catch (const Error& e) {
            // Auto falls back whenever the GPU cannot take the model (too little memory,
            // a shape the kernels do not support, a device failure); an explicit request
            // reports it, and a cancelled load stays cancelled.
            if (e.code() == ErrorCode::Cancelled) throw;
            std::string why = e.what();
            const bool host_memory = why.find("host memory") != std::string::npos;  // FP8 would not help there
            // (GGUF blocks too: the GPU holds them as bf16, or with FP8 on load as FP8.)
            if (e.code() == ErrorCode::OutOfMemory && !host_memory && !o.fp8_on_load &&
                m_model->store().quantisable_bytes() > 0)
                // (The app matches "FP8 weights need about half the memory" to offer a retry. A
                // random model, host_model given, takes its type from --dtype.)
                why += host_model ? "; FP8 weights need about half the memory (cetus-cli bench --dtype fp8)"
                                  : "; FP8 weights need about half the memory (cetus-cli --fp8, or Model > FP8 "
                                    "weights in the app)";
            if (e.code() == ErrorCode::OutOfMemory && !host_memory && o.kv_cache == KvCacheType::F32)
                why += "; a bf16 latent cache needs half the cache memory (cetus-cli --kv-cache bf16, or Model > "
                       "BF16 latent cache in the app)";
            if (o.device == Device::Cuda) throw Error(e.code(), why);
            engine_log().warn("device auto: the GPU cannot run this model ({}); using the CPU backend", why);
        }
    }
    if (m_model->store().has_drawn()) {
        if (!host_model) throw Error(ErrorCode::Device, "the CPU backend cannot run weights drawn on the GPU");
        engine_log().info("building the random model's weights in host memory for the CPU backend");
        m_model = host_model();
    }
    m_model->use_int8_activations(o.int8_activations);
    m_backend = std::make_unique<CpuBackend>(*m_model, ctx, o.kv_cache);
}

std::unique_ptr<Engine> Engine::load(const EngineOptions& o, const LoadProgress& progress) {
    if (o.max_context < 1) throw Error(ErrorCode::BadRequest, "max_context must be at least 1");
    const bool use_cuda = select_device(o);
    report(progress, 0.0f, "reading config");
    ModelConfig config = load_config(o.model_dir);
    check_cancel(progress);
    report(progress, 0.1f, "mapping weights");
    auto store = std::make_unique<WeightStore>(o.model_dir, o.expand_gguf);
    store->set_fp8_on_load(o.fp8_on_load);
    if (const uint64_t avail = host_available_bytes(); !use_cuda && avail > 0 && store->total_bytes() > avail)
        // Mapped weights load anyway, but each step then reads from the disk what the page
        // cache could not keep: say so before a slow first answer.
        engine_log().warn("{}: its weights ({:.1f} GiB) exceed the memory available ({:.1f} GiB); they are read "
                          "from the disk as needed, which makes every step slow",
                          store->source(), double(store->total_bytes()) / double(1ull << 30),
                          double(avail) / double(1ull << 30));
    if (const uint64_t need = store->expandable_bytes(); need > 0) {
        // Before anything is expanded (GGUF matrices stay in their blocks unless
        // expand_gguf; quantised vectors and a kv_b_proj merged from quantised halves are
        // expanded): the host must hold the expansion (with FP8 on load each expanded
        // matrix is quantised and its BF16 copy freed at once, so this is an upper bound).
        const uint64_t avail = host_available_bytes();
        auto gib = [](uint64_t b) {
            char t[32];
            std::snprintf(t, sizeof t, "%.1f GiB", double(b) / double(1ull << 30));
            return std::string(t);
        };
        if (avail > 0 && need > avail)
            throw Error(ErrorCode::OutOfMemory,
                        store->source() + ": the GGUF tensors Cetus expands (" +
                            (o.expand_gguf ? "--expand-gguf: every block-quantised matrix"
                                           : "block-quantised vectors, kv_b_proj's halves") +
                            ") need " + gib(need) + " in memory, " + gib(avail) + " are available" +
                            (o.expand_gguf ? "; without --expand-gguf the matrices stay in their blocks" : ""));
    }
    if (store->expandable_bytes() > 0)  // GGUF tensors expanded one by one (and then FP8)
        store->set_fp8_progress([&progress, fp8 = o.fp8_on_load](double f) {
            report(progress, 0.4f + 0.45f * float(f), fp8 ? "expanding GGUF tensors (then FP8)" : "expanding GGUF tensors");
            check_cancel(progress);
        });
    else if (o.fp8_on_load)  // reads every projection: progress, and cancellable between matrices
        store->set_fp8_progress([&progress](double f) {
            report(progress, 0.4f + 0.45f * float(f), "quantising weights to FP8");
            check_cancel(progress);
        });
    check_cancel(progress);
    const auto gguf = gguf_model_file(o.model_dir);
    const bool has_tokenizer = gguf ? std::filesystem::exists(gguf->parent_path() / "tokenizer.json") ||
                                          store->gguf()->find("tokenizer.ggml.model") != nullptr
                                    : std::filesystem::exists(o.model_dir / "tokenizer.json");
    report(progress, 0.4f, "checking tensors");
    std::unique_ptr<Engine> e(new Engine());
    e->m_model = std::make_unique<Model>(std::move(config), std::move(store));
    check_cancel(progress);
    if (has_tokenizer) {
        report(progress, 0.85f, "reading tokenizer");
        e->m_tokenizer = Tokenizer::load(o.model_dir);
    }
    report(progress, 0.9f, use_cuda ? "uploading weights" : "allocating cache");
    LoadProgress upload = progress;  // the upload's own fractions map to 0.9 .. 1.0
    if (progress.report)
        upload.report = [&progress](float f, const std::string& stage) { progress.report(0.9f + 0.1f * f, stage); };
    e->make_backend(o, use_cuda, upload);
    e->finish_init(gguf                          ? gguf_model_name(*gguf)
                   : o.model_dir.filename().empty() ? o.model_dir.parent_path().filename().string()
                                                    : o.model_dir.filename().string(),
                   o, o.prefix_cache_dir.empty() ? std::string() : model_files_identity(o.model_dir));
    report(progress, 1.0f, "ready");
    return e;
}

std::unique_ptr<Model> build_random_model(const RandomModelOptions& r, bool drawn);  // random_model.cpp

std::unique_ptr<Engine> Engine::create_random(const RandomModelOptions& r, const EngineOptions& o) {
    if (o.fp8_on_load)
        throw Error(ErrorCode::BadRequest, "FP8 on load quantises a checkpoint; a random model takes dtype fp8");
    const bool use_cuda = select_device(o);
    std::unique_ptr<Engine> e(new Engine());
    // For the GPU the matrices are recipes, drawn on the device (the bytes the host
    // would build); should it fall back to the CPU, the host builds them.
    e->m_model = build_random_model(r, use_cuda);
    e->make_backend(o, use_cuda, {}, [&r] { return build_random_model(r, false); });
    e->finish_init("random " + r.preset, o,
                   "random model " + r.preset + ", " + r.dtype + ", " + std::to_string(r.n_layers) + " layers, seed " +
                       std::to_string(r.seed) +
                       (r.intermediate_size ? ", MLP width " + std::to_string(r.intermediate_size) : "") + "\n");
    return e;
}

std::vector<float> Engine::logits(std::span<const int32_t> ids) {
    const ModelConfig& c = m_model->config();
    if (ids.empty()) throw Error(ErrorCode::BadRequest, "no token ids given");
    const int64_t cap = m_backend->capacity();
    if (int64_t(ids.size()) > cap)
        throw Error(ErrorCode::ContextOverflow, std::to_string(ids.size()) + " tokens exceed the context of " +
                                                    std::to_string(cap) + " by " + std::to_string(int64_t(ids.size()) - cap));
    for (size_t i = 0; i < ids.size(); ++i)
        if (ids[i] < 0 || ids[i] >= c.vocab_size)
            throw Error(ErrorCode::BadRequest, "token id " + std::to_string(ids[i]) + " at position " +
                                                   std::to_string(i) + " is outside the vocabulary (" +
                                                   std::to_string(c.vocab_size) + ")");
    m_generator->forget_live();  // the stored prefixes stay valid
    ForwardOptions opt;
    ForwardOutput out;
    m_backend->forward(ids.data(), int64_t(ids.size()), 0, opt, out);
    return std::move(out.logits);
}

}  // namespace cetus
