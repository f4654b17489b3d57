// The engine worker: every engine call of the app happens here, on the worker thread.
// Engine errors are caught in these slots and leave as failure signals (style guide 4).
#include "engine_worker.h"

#include "log.h"

#include <cetus/engine.h>

#include <algorithm>
#include <chrono>
#include <thread>

namespace cetus::ui {

namespace {

using Clock = std::chrono::steady_clock;

qint64 msSince(Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

ModelDescription describe(const cetus::ModelInfo& i, const QString& dir) {
    ModelDescription d;
    d.model_dir = dir;
    d.name = QString::fromStdString(i.name);
    d.model_type = QString::fromStdString(i.model_type);
    d.routing = QString::fromStdString(i.routing);
    d.weight_dtype = QString::fromStdString(i.weight_dtype);
    // "cpu (2 threads)", "cuda (NVIDIA H200, sm_90, ...)".
    d.backend = QString::fromStdString(i.device.empty() ? i.backend : i.backend + " (" + i.device + ")");
    d.chat_template = QString::fromStdString(i.chat_template);
    d.n_layers = i.n_layers;
    d.n_moe_layers = i.n_moe_layers;
    d.first_k_dense_replace = i.first_k_dense_replace;
    d.n_mtp_layers = i.n_mtp_layers;
    d.n_routed_experts = i.n_routed_experts;
    d.n_shared_experts = i.n_shared_experts;
    d.n_active_experts = i.n_active_experts;
    d.context_length = i.context_length;
    d.max_context_length = i.max_position_embeddings;
    d.n_params_total = i.n_params_total;
    d.n_params_active = i.n_params_active;
    d.weight_bytes = i.weight_bytes;
    d.kv_bytes_per_token_mla = i.kv_bytes_per_token_mla;
    d.kv_bytes_per_token_mha = i.kv_bytes_per_token_mha;
    d.kv_bytes_per_token_gqa8 = i.kv_bytes_per_token_gqa8;
    d.kv_bytes_per_token_held = i.kv_bytes_per_token_held;
    d.kv_cache_type = QString::fromStdString(i.kv_cache_type);
    return d;
}

StepStats copyStats(const cetus::GenerationStats& s) {
    StepStats o;
    o.prompt_tokens = s.prompt_tokens;
    o.reused_prefix_tokens = s.reused_prefix_tokens;
    o.generated_tokens = s.generated_tokens;
    o.verify_steps = s.verify_steps;
    o.drafts_proposed = s.drafts_proposed;
    o.drafts_accepted = s.drafts_accepted;
    o.tokens_cached = s.tokens_cached;
    o.kv_bytes_used = s.kv_bytes_used;
    o.kv_bytes_capacity = s.kv_bytes_capacity;
    o.prefix_restored = s.prefix_restored;
    o.stored_prefixes = s.stored_prefixes;
    o.stored_prefix_bytes = s.stored_prefix_bytes;
    o.prefix_from_disk = s.prefix_from_disk;
    o.disk_prefixes = s.disk_prefixes;
    o.disk_prefix_bytes = s.disk_prefix_bytes;
    o.prefill_tokens_per_s = s.prefill_tokens_per_s;
    o.decode_tokens_per_s = s.decode_tokens_per_s;
    return o;
}

FinishKind finishKind(cetus::FinishReason r) {
    switch (r) {
    case cetus::FinishReason::Eos: return FinishKind::Eos;
    case cetus::FinishReason::Stop: return FinishKind::Stop;
    case cetus::FinishReason::Length: return FinishKind::Length;
    case cetus::FinishReason::ContextFull: return FinishKind::ContextFull;
    case cetus::FinishReason::Cancelled: return FinishKind::Cancelled;
    }
    return FinishKind::Eos;
}

cetus::GenerateRequest toRequest(const GenerationParams& p, const std::atomic<bool>* cancel) {
    cetus::GenerateRequest r;
    for (const ChatTurn& t : p.turns) r.messages.push_back({t.role.toStdString(), t.content.toStdString()});
    r.sampling.temperature = float(p.sampling.temperature);
    r.sampling.top_p = float(p.sampling.top_p);
    r.sampling.top_k = p.sampling.top_k;
    r.sampling.min_p = float(p.sampling.min_p);
    r.sampling.repetition_penalty = float(p.sampling.repetition_penalty);
    r.sampling.frequency_penalty = float(p.sampling.frequency_penalty);
    r.sampling.presence_penalty = float(p.sampling.presence_penalty);
    r.sampling.seed = p.sampling.seed;
    r.max_new_tokens = p.sampling.max_new_tokens;
    r.mtp = p.sampling.mtp;
    r.lookup = p.sampling.lookup;
    // Looked-up drafts: up to 4 a step (fewer after a miss: the generator halves them).
    r.n_draft = p.sampling.lookup ? std::max(p.sampling.n_draft, int(cetus::k_lookup_default_drafts)) : p.sampling.n_draft;
    r.continue_final_message = p.continue_final;
    if (p.sampling.json_object) r.response_format = cetus::ResponseFormat::JsonObject;
    r.logprobs = std::clamp(p.token_alternatives, -1, int(cetus::k_max_top_logprobs));
    r.cache_tag = p.cache_tag.toStdString();
    r.cancel = cancel;
    return r;
}

}  // namespace

EngineWorker::EngineWorker() = default;
EngineWorker::~EngineWorker() = default;

void EngineWorker::load(const LoadRequest& request, std::shared_ptr<std::atomic<bool>> cancel) {
    cetus::EngineOptions options;
    options.model_dir = request.model_dir.toStdString();
    options.device = request.device == DeviceChoice::Cpu   ? cetus::Device::Cpu
                     : request.device == DeviceChoice::Gpu ? cetus::Device::Cuda
                                                           : cetus::Device::Auto;
    options.n_threads = request.n_threads;
    options.max_context = request.max_context;
    options.fp8_on_load = request.fp8_on_load;
    options.kv_cache = request.kv_cache_bf16 ? cetus::KvCacheType::BF16 : cetus::KvCacheType::F32;
    options.int8_activations = request.int8_activations;
    options.tune_steps = request.tune_steps;
    options.prefix_cache_dir = request.prefix_cache_dir.toStdString();
    auto last = Clock::now() - std::chrono::seconds(1);
    cetus::LoadProgress progress;
    progress.cancel = cancel.get();
    progress.report = [&](float fraction, const std::string& stage) {
        if (msSince(last) < k_emit_interval_ms && fraction < 1.0f) return;
        last = Clock::now();
        emit loadProgress(double(fraction), QString::fromStdString(stage));
    };
    // The current model's conversation goes to its disk cache first, so that the model
    // loaded next (the same one, reloaded with other options) finds it.
    if (m_engine) {
        try {
            m_engine->persist_prefixes();
        } catch (const std::exception& e) {
            logger()->warn("writing the conversation cache before loading: {}", e.what());
        }
    }
    try {
        auto engine = cetus::Engine::load(options, progress);
        if (!engine->tokenizer()) {
            emit loadFailed(request.model_dir.endsWith(QStringLiteral(".gguf"), Qt::CaseInsensitive)
                                ? tr("%1 holds no vocabulary, so it cannot chat; put the model's tokenizer.json "
                                     "(and tokenizer_config.json) beside it.")
                                      .arg(request.model_dir)
                                : tr("%1 has weights but no tokenizer.json, so it cannot chat.").arg(request.model_dir),
                            false);
            return;
        }
        m_engine = std::move(engine);  // the previous model goes only now that the new one is in
        logger()->info("model loaded: {} ({}, {})", m_engine->info().name, m_engine->info().model_type, m_engine->info().backend);
        emit modelLoaded(describe(m_engine->info(), request.model_dir));
    } catch (const cetus::Error& e) {
        const bool cancelled = e.code() == cetus::ErrorCode::Cancelled;
        logger()->warn("loading {} failed: {}", request.model_dir.toStdString(), e.what());
        emit loadFailed(QString::fromUtf8(e.what()), cancelled);
    } catch (const std::exception& e) {
        logger()->error("loading {} failed: {}", request.model_dir.toStdString(), e.what());
        emit loadFailed(QString::fromUtf8(e.what()), false);
    }
}

void EngineWorker::forgetConversation(const QString& folder, const QString& cache_tag) {
    try {
        if (m_engine) m_engine->forget_prefixes(cache_tag.toStdString());  // its memory and its own folder
        // The app's folder also when no model is loaded, or the option is off.
        if (!folder.isEmpty()) cetus::Engine::forget_prefix_files(folder.toStdString(), cache_tag.toStdString());
    } catch (const std::exception& e) {
        logger()->warn("removing a deleted conversation's cache rows: {}", e.what());
    }
}

void EngineWorker::clearConversationCaches(const QString& folder) {
    try {
        if (m_engine) m_engine->clear_prefix_cache(/*every_model=*/true);
        if (!folder.isEmpty()) cetus::Engine::remove_prefix_files(folder.toStdString());  // also without a model
        logger()->info("conversation caches in {} cleared", folder.toStdString());
    } catch (const std::exception& e) {
        logger()->warn("clearing the conversation caches in {}: {}", folder.toStdString(), e.what());
    }
}

void EngineWorker::countTokens(quint64 id, const QString& text) {
    if (!m_engine || !m_engine->tokenizer()) return;
    try {
        // As the chat template encodes a message's text: markers in it stay plain text.
        const QByteArray utf8 = text.toUtf8();
        const auto ids = m_engine->tokenizer()->encode(std::string_view(utf8.constData(), size_t(utf8.size())), false);
        emit tokensCounted(id, qint64(ids.size()));
    } catch (const std::exception& e) {
        logger()->warn("counting a message's tokens: {}", e.what());
    }
}

void EngineWorker::generate(quint64 request_id, const GenerationParams& params,
                            std::shared_ptr<std::atomic<bool>> cancel) {
    const auto started = Clock::now();
    GenerationOutcome outcome;
    outcome.request_id = request_id;
    if (!m_engine) {
        outcome.finish = FinishKind::Error;
        outcome.error = tr("No model is loaded. Open a model folder or GGUF file first (File → Open model…).");
        emit generationFinished(outcome);
        return;
    }
    GenerationChunk chunk;
    std::string pending;  // complete UTF-8 of the tokens not yet sent
    auto last_emit = Clock::now();
    auto flush = [&] {
        if (pending.empty() && chunk.drafted.empty()) return;
        chunk.request_id = request_id;
        chunk.text = QString::fromUtf8(pending.data(), qsizetype(pending.size()));
        emit generationChunk(chunk);
        chunk = GenerationChunk{};
        pending.clear();
        last_emit = Clock::now();
    };
    // The ends are byte offsets until the flush converts them (UTF-16 for the GUI).
    std::vector<size_t> byte_ends;
    auto sink = [&](const cetus::TokenEvent& ev) {
        pending.append(ev.text);
        if (ev.id >= 0) {
            byte_ends.push_back(pending.size());
            chunk.drafted.push_back(ev.drafted);
            if (ev.n_moe_layers > 0 && !ev.expert_ids.empty()) {
                chunk.routing.n_layers = ev.n_moe_layers;
                chunk.routing.top_k = ev.top_k;
                chunk.routing.first_layer = int(m_engine->info().first_k_dense_replace);
                chunk.routing.expert_ids.insert(chunk.routing.expert_ids.end(), ev.expert_ids.begin(), ev.expert_ids.end());
                chunk.routing.weights.insert(chunk.routing.weights.end(), ev.expert_weights.begin(), ev.expert_weights.end());
            }
            if (ev.has_logprob) {
                TokenProbabilityData& p = chunk.probabilities;
                p.top_n = int(ev.top_logprobs.size());
                p.logprobs.push_back(ev.logprob);
                for (const cetus::TokenLogprob& t : ev.top_logprobs) {
                    const int32_t one[1] = {t.id};
                    const cetus::Tokenizer& tok = *m_engine->tokenizer();  // loaded models have one (load())
                    p.alt_texts.push_back(tok.has_token(t.id) ? QString::fromStdString(tok.decode(one)) : QString());
                    p.alt_logprobs.push_back(t.logprob);
                }
            }
        } else if (!byte_ends.empty()) {
            byte_ends.back() = pending.size();
        }
        if (ev.stats) chunk.stats = copyStats(*ev.stats);
        if (params.debug_token_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(params.debug_token_delay_ms));
        if (msSince(last_emit) >= k_emit_interval_ms) {
            for (size_t e : byte_ends) chunk.token_text_ends.push_back(int(QString::fromUtf8(pending.data(), qsizetype(e)).size()));
            byte_ends.clear();
            flush();
        }
    };
    try {
        cetus::GenerateRequest request = toRequest(params, cancel.get());
        outcome.turns_left_out = m_engine->fit_to_context(request);  // the engine would refuse an overflow
        if (outcome.turns_left_out > 0)
            logger()->info("{} earlier message(s) left out to fit the {}-token context", outcome.turns_left_out,
                           m_engine->info().context_length);
        cetus::GenerateResult result = m_engine->generate(request, sink);
        for (size_t e : byte_ends) chunk.token_text_ends.push_back(int(QString::fromUtf8(pending.data(), qsizetype(e)).size()));
        byte_ends.clear();
        flush();
        outcome.finish = finishKind(result.finish);
        outcome.stats = copyStats(result.stats);
        outcome.mtp_used = result.mtp_used;
        outcome.lookup_used = result.lookup_used;
        outcome.mtp_note = QString::fromStdString(result.mtp_note);
        outcome.n_moe_layers = result.n_moe_layers;
        outcome.n_routed_experts = result.n_routed_experts;
        outcome.expert_counts.assign(result.expert_counts.begin(), result.expert_counts.end());
    } catch (const std::exception& e) {
        for (size_t b : byte_ends) chunk.token_text_ends.push_back(int(QString::fromUtf8(pending.data(), qsizetype(b)).size()));
        byte_ends.clear();
        flush();
        logger()->warn("generation failed: {}", e.what());
        outcome.finish = FinishKind::Error;
        outcome.error = QString::fromUtf8(e.what());
    }
    outcome.elapsed_ms = msSince(started);
    emit generationFinished(outcome);
}

}  // namespace cetus::ui
