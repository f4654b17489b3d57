// Plain value types that cross the ui library's two interfaces (GenerationService,
// HistoryStore) and the worker thread. No engine or storage types appear here, so
// widgets, the controller and test fakes never include those libraries.
#pragma once

#include <QList>
#include <QMetaType>
#include <QString>

#include <cstdint>
#include <memory>
#include <atomic>
#include <optional>
#include <vector>

namespace cetus::ui {

enum class DeviceChoice { Auto, Cpu, Gpu };

struct LoadRequest {
    QString model_dir;
    DeviceChoice device = DeviceChoice::Auto;
    int n_threads = 0;
    qint64 max_context = 4096;
    bool fp8_on_load = false;  // quantise BF16/F16/F32 linear layers to FP8 (EngineOptions)
    bool kv_cache_bf16 = false;  // latent cache in bf16 (EngineOptions::kv_cache): half the cache memory
    bool int8_activations = false;  // the CPU's GGUF block products with int8 activations (EngineOptions)
    bool tune_steps = false;  // the GPU's decode steps timed and the fastest kept (EngineOptions::tune_steps)
    // Conversations' cache rows kept on disk between runs (EngineOptions::prefix_cache_dir); empty: none.
    QString prefix_cache_dir;
};

// What the panels and the About box show about the loaded model.
struct ModelDescription {
    QString model_dir;
    QString name, model_type, routing, weight_dtype, backend, chat_template;
    qint64 n_layers = 0, n_moe_layers = 0, first_k_dense_replace = 0, n_mtp_layers = 0;
    qint64 n_routed_experts = 0, n_shared_experts = 0, n_active_experts = 0;
    qint64 context_length = 0;      // the cache's capacity in tokens (Model > Context length, capped by the model)
    qint64 max_context_length = 0;  // the model's own limit (max_position_embeddings); 0 when unknown
    quint64 n_params_total = 0, n_params_active = 0, weight_bytes = 0;
    quint64 kv_bytes_per_token_mla = 0, kv_bytes_per_token_mha = 0, kv_bytes_per_token_gqa8 = 0;
    quint64 kv_bytes_per_token_held = 0;
    QString kv_cache_type;  // "f32" | "bf16" (local engine); empty when unknown
    // A remote endpoint (remote_service.h): model_dir holds its base URL, backend says
    // "remote"; only a Cetus server reports routing and statistics (its `cetus` extension).
    bool remote = false;
    bool remote_reports_routing = false;
    // It continues a final answer (continue_final_message): a Cetus server, or an endpoint
    // whose entry says so (vLLM and SGLang do; OpenAI refuses the field).
    bool remote_continues = false;
};

struct ChatTurn {
    QString role;  // "system", "user", "assistant"
    QString content;
    QString reasoning;  // an answer's reasoning (R1-style remote models), sent back only if asked
};

struct SamplingSettings {
    double temperature = 0.7;
    double top_p = 1.0;
    int top_k = 0;
    double min_p = 0.0;
    double repetition_penalty = 1.0;
    double frequency_penalty = 0.0;  // OpenAI's, on the answer's tokens (-2 .. 2)
    double presence_penalty = 0.0;
    int max_new_tokens = 512;
    bool mtp = true;
    int n_draft = 1;
    // Drafts looked up in the conversation's own text instead of the MTP module's (any
    // model; GenerateRequest::lookup), up to 4 a step.
    bool lookup = false;
    quint64 seed = 0;
    bool json_object = false;  // JSON mode: the answer is one JSON object (response_format)
};

struct GenerationParams {
    std::vector<ChatTurn> turns;
    SamplingSettings sampling;
    bool continue_final = false;  // the last turn is an answer to continue, not to answer
    // Record each token's probability and its step's most likely tokens (this many,
    // 0..20); -1: none (Model > Record token probabilities off).
    int token_alternatives = -1;
    // The conversation the request belongs to (cetus::GenerateRequest::cache_tag): its
    // cache rows kept on disk carry it, so that deleting the conversation removes them.
    QString cache_tag;
    int debug_token_delay_ms = 0;  // tests only: slows the worker down so Stop can be exercised
};

// Running statistics of one answer (a copy of the engine's, per batch).
struct StepStats {
    qint64 prompt_tokens = 0, reused_prefix_tokens = 0, generated_tokens = 0, verify_steps = 0;
    qint64 drafts_proposed = 0, drafts_accepted = 0, tokens_cached = 0;
    quint64 kv_bytes_used = 0, kv_bytes_capacity = 0;
    bool prefix_restored = false;  // the prompt's prefix came back from the prefix store
    qint64 stored_prefixes = 0;    // other conversations' prefixes the engine keeps
    quint64 stored_prefix_bytes = 0;
    bool prefix_from_disk = false;  // ... read back from the conversation cache on disk
    qint64 disk_prefixes = 0;       // conversations this model keeps on disk
    quint64 disk_prefix_bytes = 0;
    double prefill_tokens_per_s = 0, decode_tokens_per_s = 0;

    double acceptanceRate() const { return drafts_proposed ? double(drafts_accepted) / double(drafts_proposed) : 0.0; }
    double tokensPerStep() const { return verify_steps ? double(generated_tokens - 1) / double(verify_steps) : 0.0; }
};

// Routing of a run of tokens, token-major: entry (t, layer, k) at (t * n_layers + layer) * top_k + k.
struct RoutingData {
    int n_layers = 0, top_k = 0, first_layer = 0;
    std::vector<int32_t> expert_ids;
    std::vector<float> weights;

    size_t nTokens() const {
        const size_t per = size_t(n_layers) * size_t(top_k);
        return per ? expert_ids.size() / per : 0;
    }
    void append(const RoutingData& more) {
        if (n_layers == 0) { n_layers = more.n_layers; top_k = more.top_k; first_layer = more.first_layer; }
        expert_ids.insert(expert_ids.end(), more.expert_ids.begin(), more.expert_ids.end());
        weights.insert(weights.end(), more.weights.begin(), more.weights.end());
    }
};

// Each generated token's probability under the model (log-softmax of the raw logits,
// before the sampling settings) and its step's most likely tokens, token-major like
// RoutingData: token t's alternatives sit at [t * top_n, (t + 1) * top_n).
struct TokenProbabilityData {
    int top_n = 0;
    std::vector<float> logprobs;      // per token (natural log; -infinity: no mass)
    std::vector<QString> alt_texts;   // [tokens x top_n], most likely first
    std::vector<float> alt_logprobs;  // [tokens x top_n]

    size_t nTokens() const { return logprobs.size(); }
    // Every token has top_n alternatives (what append keeps, and what token() needs).
    bool consistent() const {
        return top_n >= 0 && alt_texts.size() == logprobs.size() * size_t(top_n) && alt_logprobs.size() == alt_texts.size();
    }
    // Appends more tokens of the same width; a width that differs (a remote that sent
    // another number of alternatives) makes the whole value inconsistent, never misread.
    void append(const TokenProbabilityData& more) {
        if (more.logprobs.empty()) return;  // no tokens: nothing to add, nothing to compare
        if (logprobs.empty()) top_n = more.top_n;
        if (more.top_n != top_n) top_n = -1;
        logprobs.insert(logprobs.end(), more.logprobs.begin(), more.logprobs.end());
        alt_texts.insert(alt_texts.end(), more.alt_texts.begin(), more.alt_texts.end());
        alt_logprobs.insert(alt_logprobs.end(), more.alt_logprobs.begin(), more.alt_logprobs.end());
    }
    // Token t alone (an empty value when t is out of range or the value is inconsistent).
    TokenProbabilityData token(size_t t) const {
        TokenProbabilityData one;
        if (t >= logprobs.size() || !consistent()) return one;
        one.top_n = top_n;
        one.logprobs = {logprobs[t]};
        const auto from = std::ptrdiff_t(t * size_t(top_n)), to = std::ptrdiff_t((t + 1) * size_t(top_n));
        one.alt_texts.assign(alt_texts.begin() + from, alt_texts.begin() + to);
        one.alt_logprobs.assign(alt_logprobs.begin() + from, alt_logprobs.begin() + to);
        return one;
    }
};

// One batch of accepted tokens: at most ~30 of these reach the GUI thread per second.
struct GenerationChunk {
    quint64 request_id = 0;
    QString text;                      // complete UTF-8 of these tokens, concatenated
    std::vector<int> token_text_ends;  // per token: length (UTF-16) of `text` up to its end
    std::vector<bool> drafted;
    RoutingData routing;               // rows for these tokens (empty for dense models)
    TokenProbabilityData probabilities;  // for these tokens, when asked for (GenerationParams)
    StepStats stats;                   // as of the last token of the batch
    QString reasoning;                 // reasoning text of R1-style remote models (before the answer)
};

enum class FinishKind { Eos, Stop, Length, ContextFull, Cancelled, Error };

struct GenerationOutcome {
    quint64 request_id = 0;
    FinishKind finish = FinishKind::Eos;
    QString error;  // for Error: what went wrong, in words
    StepStats stats;
    bool mtp_used = false;
    bool lookup_used = false;  // the drafts were looked up in the conversation's text
    QString mtp_note;
    int n_moe_layers = 0, n_routed_experts = 0;
    std::vector<qint64> expert_counts;  // [n_moe_layers x n_routed_experts]
    qint64 elapsed_ms = 0;
    // Earlier messages left out of the prompt so that it and the answer fit the context.
    int turns_left_out = 0;
};

// ---- history ----

enum class ChatRole { System, User, Assistant };
enum class MessageStatus { Streaming, Complete, Interrupted, Error };

struct MessageRecord {
    qint64 id = 0;
    std::optional<qint64> parent_id;
    ChatRole role = ChatRole::User;
    QString content;
    MessageStatus status = MessageStatus::Complete;
    QString stats_json;
    qint64 created_ms = 0;
    bool has_routing_trace = false;
};

struct ConversationSummaryRecord {
    qint64 id = 0;
    QString title;
    bool pinned = false;
    qint64 updated_ms = 0;
    qint64 n_messages = 0;
    bool archived = false;
};

struct ConversationRecord {
    qint64 id = 0;
    QString title, model, system_prompt, sampling_json;
    bool pinned = false;
    bool archived = false;
    std::vector<MessageRecord> messages;  // every branch, parents first
    std::vector<qint64> active_path;      // root to the leaf shown
};

// A text file attached to a user message (the store keeps it inside the message's
// content; composeMessage / splitMessage in history_store.h).
struct Attachment {
    QString name;  // the file's name, no folders
    QString text;
    bool operator==(const Attachment&) const = default;
};

struct MessageParts {
    QList<Attachment> files;
    QString text;  // what the user typed
};

struct SearchResult {
    qint64 conversation_id = 0, message_id = 0;
    QString conversation_title;
    QString snippet_html;  // escaped text with <b> around the matches
};

QString finishKindName(FinishKind kind);

}  // namespace cetus::ui

Q_DECLARE_METATYPE(cetus::ui::LoadRequest)
Q_DECLARE_METATYPE(cetus::ui::ModelDescription)
Q_DECLARE_METATYPE(cetus::ui::GenerationParams)
Q_DECLARE_METATYPE(cetus::ui::GenerationChunk)
Q_DECLARE_METATYPE(cetus::ui::GenerationOutcome)
Q_DECLARE_METATYPE(cetus::ui::StepStats)
Q_DECLARE_METATYPE(cetus::ui::RoutingData)
Q_DECLARE_METATYPE(cetus::ui::TokenProbabilityData)
Q_DECLARE_METATYPE(std::shared_ptr<std::atomic<bool>>)
