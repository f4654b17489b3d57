// A generation request and what it reports: text pieces (complete UTF-8 only),
// each token's routing, and running statistics for the app's panels.
#pragma once

#include "cetus/sampling.h"
#include "cetus/tokenizer.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace cetus {

// What the answer must be. JsonObject: one JSON object (OpenAI's response_format
// {"type": "json_object"}): every token keeps the text a prefix of one, and the answer
// ends only once the object is closed (or at the length limit, cut short). Tokens are
// then chosen on the host. Needs the model's tokenizer.
enum class ResponseFormat { Text, JsonObject };

struct GenerateRequest {
    std::vector<ChatMessage> messages;  // rendered with the model's chat template...
    std::vector<int32_t> prompt_ids;    // ...or, when messages is empty, these ids as they are
    // The last message is an unfinished answer (assistant) to continue: the prompt ends
    // where its text ends (Tokenizer::encode_chat), and the new tokens extend it.
    bool continue_final_message = false;
    SamplingParams sampling;
    int32_t max_new_tokens = 512;
    std::vector<std::string> stop;      // stop strings; the text ends before the first match
    bool mtp = true;                    // speculative decoding with the model's MTP module(s)
    int32_t n_draft = 1;                // draft tokens per step (1..8); > 1 chains the module
    // Speculative decoding with drafts looked up in the context instead (prompt lookup:
    // the ids that followed the latest earlier occurrence of its last 4, 3, 2 or 1 ids;
    // one a step at first, doubling while all are accepted up to n_draft, fewer and then
    // none for a while after misses), for any model, MTP module or not; takes precedence
    // over mtp. Pays where the answer repeats the prompt or itself (code, quotes, lists).
    // The same tokens as without it when greedy, the same distribution when sampling.
    bool lookup = false;
    // Log-probabilities of the chosen tokens under the model itself: log-softmax of the
    // raw logits over the tokenizer's vocabulary, before temperature, penalties and
    // truncation (what vLLM reports by default), so they do not depend on the sampling
    // settings. -1: none; 0: the chosen token's; N (1..k_max_top_logprobs): also the N
    // most likely tokens of each step. Token choices are the same with or without them.
    int32_t logprobs = -1;
    ResponseFormat response_format = ResponseFormat::Text;
    // Names the conversation the request belongs to (any text up to 4 KiB; the app uses
    // its database and conversation id). Kept with the conversation's cache rows in the
    // prefix store and its files on disk, so that Engine::forget_prefixes(tag) finds
    // them when the conversation is deleted. Empty: none.
    std::string cache_tag;
    const std::atomic<bool>* cancel = nullptr;  // checked once per step
};

constexpr int32_t k_max_top_logprobs = 20;
// n_draft for looked-up drafts where the caller names none (the CLI, the server, the app).
constexpr int32_t k_lookup_default_drafts = 4;

enum class FinishReason { Eos, Stop, Length, ContextFull, Cancelled };
const char* finish_reason_name(FinishReason r) noexcept;

struct GenerationStats {
    int64_t prompt_tokens = 0;
    int64_t reused_prefix_tokens = 0;  // prompt tokens whose cache entries were reused
    int64_t generated_tokens = 0;
    int64_t verify_steps = 0;          // main-model decode forwards (one per step, with or without drafts)
    int64_t drafts_proposed = 0, drafts_accepted = 0;
    uint64_t kv_bytes_used = 0, kv_bytes_capacity = 0;
    int64_t tokens_cached = 0;
    // The prefix store (EngineOptions::prefix_store_bytes): whether this request's
    // prefix came back from it, and what it holds now (other conversations' prefixes).
    bool prefix_restored = false;
    int64_t stored_prefixes = 0;
    uint64_t stored_prefix_bytes = 0;
    // Its disk tier (EngineOptions::prefix_cache_dir): whether the prefix came back from
    // a file (prefix_restored is then set too), and this model's files there (the
    // counts lag the writes, which run in the background).
    bool prefix_from_disk = false;
    // Whether this answer's conversation (the cached prefix) was queued to be written
    // to the disk tier after it: it had grown by a quarter since its last file.
    bool prefix_saved = false;
    int64_t disk_prefixes = 0;
    uint64_t disk_prefix_bytes = 0;
    double prefill_tokens_per_s = 0.0, decode_tokens_per_s = 0.0;
    double prefill_ms = 0.0, decode_ms = 0.0;

    double acceptance_rate() const { return drafts_proposed ? double(drafts_accepted) / double(drafts_proposed) : 0.0; }
    // Tokens committed per main-model step (1 without speculation).
    double mean_accepted_length() const { return verify_steps ? double(generated_tokens - 1) / double(verify_steps) : 0.0; }
};

struct TokenLogprob {
    int32_t id = 0;
    float logprob = 0.0f;  // natural log; -inf where the model gives the token no mass
};

// One accepted token. Spans point into the generator's buffers and are valid
// only during the callback. The routing is that of the forward pass whose
// logits produced this token: for every MoE layer, the chosen experts
// (ascending) and their gate weights, [n_moe_layers x top_k].
struct TokenEvent {
    int32_t id = 0;
    std::string_view text;  // complete UTF-8 (empty while a character or a possible stop string is pending)
    bool drafted = false;   // an accepted draft (MTP's, or looked up)
    bool end_of_sequence = false;  // the model's end-of-sequence token (not part of the answer)
    int32_t n_moe_layers = 0, top_k = 0;
    std::span<const int32_t> expert_ids;
    std::span<const float> expert_weights;
    // With GenerateRequest::logprobs >= 0: this token's log-probability and the most
    // likely tokens of its step (most likely first, ties by id; may include id itself).
    bool has_logprob = false;
    float logprob = 0.0f;
    std::span<const TokenLogprob> top_logprobs;
    const GenerationStats* stats = nullptr;
};

struct GenerateResult {
    std::string text;
    std::vector<int32_t> ids;  // generated ids, without the end-of-sequence token
    FinishReason finish = FinishReason::Length;
    GenerationStats stats;
    bool mtp_used = false;
    bool lookup_used = false;  // drafts looked up in the context (GenerateRequest::lookup)
    std::string mtp_note;  // why MTP was not used: speculation off, or looked-up drafts instead
    // Per MoE layer and routed expert, how often it was chosen for this answer's tokens.
    int32_t n_moe_layers = 0, n_routed_experts = 0;
    std::vector<int64_t> expert_counts;  // [n_moe_layers x n_routed_experts]
};

using TokenSink = std::function<void(const TokenEvent&)>;

}  // namespace cetus
