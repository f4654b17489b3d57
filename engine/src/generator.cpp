// Generation loop. Greedy output with MTP on is token-for-token identical to
// MTP off: every token's logits are computed by the same per-row arithmetic in
// a batch of one or in a verify batch (see cpu/ops.h), and the accept rule for
// greedy is exact match. With sampling, drafts are drawn from the MTP's
// processed distribution q and accepted with min(1, p/q), else replaced from
// normalise(max(0, p - q)) (Leviathan et al.), which leaves the output
// distribution that of plain sampling. Drafts looked up in the context
// (GenerateRequest::lookup, lookup_drafts.h) take the same verification, their q
// all on the drafted id.
#include "generator.h"

#include "cetus/error.h"
#include "log.h"
#include "lookup_drafts.h"
#include "sampler.h"

#include <algorithm>
#include <chrono>
#include <cstring>

namespace cetus {

const char* finish_reason_name(FinishReason r) noexcept {
    switch (r) {
    case FinishReason::Eos: return "eos";
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::ContextFull: return "context_full";
    case FinishReason::Cancelled: return "cancelled";
    }
    return "?";
}

namespace {
using clock_type = std::chrono::steady_clock;
// Tokens per MTP call whose logits are used: a backend keeps only its last chunk of rows.
constexpr int64_t k_logit_chunk = Backend::k_logit_chunk_rows;
double seconds_since(clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); }
}  // namespace

Generator::Generator(const Model& model, Backend& backend, const Tokenizer* tokenizer)
    : m_model(model), m_backend(backend), m_tokenizer(tokenizer),
      // Hidden states are kept only for the MTP module's inputs.
      m_hidden(model.n_mtp() > 0 ? static_cast<size_t>(backend.capacity() * model.config().hidden_size) : 0,
               "the MTP module's inputs (hidden states) for " + std::to_string(backend.capacity()) + " tokens",
               "; lower the context") {}

void Generator::reset() {
    forget_live();
    m_saved.clear();
}

void Generator::forget_live() {
    m_cached_ids.clear();
    m_live_tag.clear();
    m_mtp_valid = 0;
    m_on_disk = 0;
    m_backend.clear();
}

namespace {
int64_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
    const auto [ia, ib] = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
    return int64_t(ia - a.begin());
}
// A prefix is worth keeping, or taking back, from this many tokens on: below that a
// prefill costs about what copying the rows does.
constexpr int64_t k_min_stored_tokens = 32;
// The live prefix is written again after an answer once it has grown by a quarter
// (and at least k_min_stored_tokens) since its last file: a conversation writes at
// most about five times its final size in all, and a killed process loses at most a
// fifth of it.
constexpr int64_t k_checkpoint_growth_divisor = 4;
}  // namespace

uint64_t Generator::stored_bytes() const {
    uint64_t total = 0;
    for (const auto& e : m_saved) total += e.prefix->bytes();
    return total;
}

void Generator::evict_until(uint64_t limit) {
    while (!m_saved.empty() && stored_bytes() > limit) {
        m_saved.erase(std::min_element(m_saved.begin(), m_saved.end(),
                                       [](const auto& a, const auto& b) { return a.last_used < b.last_used; }));
    }
}

void Generator::set_prefix_store_bytes(uint64_t bytes) {
    m_saved_budget = bytes;
    evict_until(m_saved_budget);
}

void Generator::set_prefix_disk(std::unique_ptr<PrefixDisk> disk) { m_disk = std::move(disk); }

std::shared_ptr<SavedPrefix> Generator::copy_live() const {
    const int64_t n = int64_t(m_cached_ids.size());
    const int64_t H = m_model.config().hidden_size;
    auto e = std::make_shared<SavedPrefix>();
    e->tag = m_live_tag;
    e->ids = m_cached_ids;
    e->mtp_valid = std::min(m_mtp_valid, n);
    e->rows.resize(size_t(n) * m_backend.kv_bytes_per_token());
    m_backend.save_rows(n, e->rows.data());
    if (!m_hidden.empty()) e->hidden.assign(m_hidden.data(), m_hidden.data() + n * H);
    return e;
}

uint64_t Generator::live_bytes() const {
    const uint64_t n = m_cached_ids.size();
    const uint64_t H = uint64_t(m_model.config().hidden_size);
    return n * m_backend.kv_bytes_per_token() + (m_hidden.empty() ? 0 : n * H * sizeof(float));
}

void Generator::stash_live() {
    const int64_t n = int64_t(m_cached_ids.size());
    if (n < k_min_stored_tokens) return;
    const uint64_t bytes = live_bytes();
    const bool in_memory = m_saved_budget > 0 && bytes <= m_saved_budget;
    // The disk tier needs a copy unless a file (marked used here) or a write holds these ids.
    const bool to_disk = m_disk && !m_disk->holds(m_cached_ids);
    if (!in_memory && !to_disk) return;
    std::shared_ptr<const SavedPrefix> e = copy_live();
    if (in_memory) {
        // A stored prefix that the live one extends is superseded by it.
        std::erase_if(m_saved, [&](const Stored& s) {
            return common_prefix(s.prefix->ids, m_cached_ids) == int64_t(s.prefix->ids.size());
        });
        evict_until(m_saved_budget - bytes);  // room for it, least recently used first
        m_saved.push_back({e, ++m_clock});
    }
    if (to_disk) m_disk->store(std::move(e));  // written on the disk tier's own thread
}

bool Generator::checkpoint() {
    if (!m_disk) return false;
    const int64_t n = int64_t(m_cached_ids.size());
    // The file last written may have gone since (the budget, a refused or failed write).
    if (m_on_disk > 0 && !m_disk->holds({m_cached_ids.data(), size_t(m_on_disk)})) m_on_disk = 0;
    if (n < k_min_stored_tokens || n - m_on_disk < std::max(k_min_stored_tokens, m_on_disk / k_checkpoint_growth_divisor))
        return false;
    // Not while the disk is behind, nor past the budget: the next answer tries again.
    if (!m_disk->would_queue(m_cached_ids, m_live_tag.size(), live_bytes())) return false;
    try {
        if (!m_disk->store(copy_live())) return false;  // the file it extends goes once it is written
        m_on_disk = n;
        return true;
    } catch (const std::exception& e) {
        engine_log().warn("prefix cache {}: the conversation's prefix of {} tokens was not written: {}",
                          m_disk->dir().string(), n, e.what());
        return false;
    }
}

void Generator::persist() {
    if (!m_disk) return;
    if (int64_t(m_cached_ids.size()) >= k_min_stored_tokens && !m_disk->holds(m_cached_ids) &&
        m_disk->store(copy_live()))
        m_on_disk = int64_t(m_cached_ids.size());
    m_disk->flush();
}

void Generator::forget_tagged(const std::string& tag) {
    if (tag.empty()) return;
    if (m_live_tag == tag) forget_live();
    std::erase_if(m_saved, [&](const Stored& s) { return s.prefix->tag == tag; });
    if (m_disk) m_disk->forget(tag);
}

int64_t Generator::reuse_prefix(const std::vector<int32_t>& ids, bool* restored, bool* from_disk) {
    int64_t p = common_prefix(m_cached_ids, ids);
    // The stored prefix that serves the request best, if clearly better than the live one.
    auto best = m_saved.end();
    int64_t best_len = p + k_min_stored_tokens - 1;
    for (auto it = m_saved.begin(); it != m_saved.end(); ++it) {
        if (const int64_t q = common_prefix(it->prefix->ids, ids); q > best_len) {
            best = it;
            best_len = q;
        }
    }
    std::shared_ptr<const SavedPrefix> take;
    if (best != m_saved.end()) {
        take = std::move(best->prefix);
        m_saved.erase(best);  // live again: stored anew when another conversation comes
    }
    // The disk tier, when one of its files serves the request better still (read here,
    // instead of a prefill; a damaged file is removed and the next best tried).
    bool read_from_disk = false;
    if (m_disk) {
        if (auto read = m_disk->take(ids, best_len, m_backend.capacity())) {
            if (take) m_saved.push_back({std::move(take), ++m_clock});  // stays stored
            take = std::make_shared<const SavedPrefix>(std::move(*read));
            read_from_disk = true;
            if (from_disk) *from_disk = true;
        }
    }
    // Leaving the live prefix (the request keeps less than half of it, or a stored one
    // replaces it): keep it for when its conversation goes on.
    const int64_t live = int64_t(m_cached_ids.size());
    try {
        if (take || (live - p >= k_min_stored_tokens && 2 * p < live)) stash_live();
        if (take) {
            // Nothing is trusted while the rows are replaced (a device error part-way).
            m_cached_ids.clear();
            m_mtp_valid = 0;
            m_backend.load_rows(int64_t(take->ids.size()), take->rows.data());
        }
    } catch (...) {
        // The prefix taken out of the store stays there (one read from disk is still on disk).
        if (take && !read_from_disk) m_saved.push_back({std::move(take), ++m_clock});
        throw;
    }
    if (take) {
        m_cached_ids = take->ids;
        m_mtp_valid = take->mtp_valid;
        // Read from a file; from memory, on disk if its write went through.
        m_on_disk = read_from_disk || (m_disk && m_disk->holds(take->ids)) ? int64_t(take->ids.size()) : 0;
        if (!take->hidden.empty() && !m_hidden.empty()) std::copy(take->hidden.begin(), take->hidden.end(), m_hidden.data());
        p = common_prefix(m_cached_ids, ids);
        if (restored) *restored = true;
    }
    return p;
}

std::vector<int32_t> Generator::prompt_ids(const GenerateRequest& r) const {
    if (r.messages.empty()) return r.prompt_ids;
    if (!m_tokenizer)
        throw Error(ErrorCode::BadRequest,
                    "this model has no tokenizer (a folder without tokenizer.json, or a GGUF file without a "
                    "vocabulary and none beside it), so chat messages cannot be tokenized; pass token ids instead");
    return m_tokenizer->encode_chat(r.messages, !r.continue_final_message, r.continue_final_message);
}

// The state of one request.
struct Generator::Run {
    Generator& g;
    const GenerateRequest& req;
    const TokenSink& sink;
    const ModelConfig& c;
    Sampler sampler;
    GenerateResult res;
    std::vector<int32_t> history;  // prompt + emitted tokens (repetition penalty)
    std::optional<StreamDetokenizer> detok;
    std::string text;       // all text so far (before stop-string truncation)
    size_t emitted = 0;     // bytes of text handed to the sink
    size_t max_stop = 0;
    bool done = false;
    int64_t max_new = 0;
    int64_t n_moe = 0, top_k = 0;
    int32_t eos = -1;
    std::vector<TokenLogprob> top_logprobs;  // the current token's (GenerateRequest::logprobs)
    // JSON mode: the grammar's state after the emitted tokens, and a mask per row of
    // the choice being made.
    std::optional<JsonConstraint> json;
    std::vector<std::vector<uint8_t>> masks;

    Run(Generator& gen, const GenerateRequest& r, const TokenSink& s)
        : g(gen), req(r), sink(s), c(gen.m_model.config()),
          sampler(r.sampling, c.vocab_size,
                  gen.m_tokenizer ? std::min<int64_t>(gen.m_tokenizer->vocab_size(), c.vocab_size) : c.vocab_size) {
        n_moe = c.n_moe_layers();
        top_k = c.num_experts_per_tok;
        res.n_moe_layers = int32_t(n_moe);
        res.n_routed_experts = int32_t(c.n_routed_experts);
        res.expert_counts.assign(static_cast<size_t>(n_moe * c.n_routed_experts), 0);
        for (const auto& s : req.stop) max_stop = std::max(max_stop, s.size());
        if (g.m_tokenizer) {
            detok.emplace(*g.m_tokenizer, true);
            eos = g.m_tokenizer->eos_id();
        }
        if (eos < 0) eos = int32_t(c.eos_token_id);
    }

    void update_cache_stats() {
        res.stats.tokens_cached = g.m_backend.n_tokens();
        res.stats.kv_bytes_used = g.m_backend.kv_used_bytes();
        res.stats.kv_bytes_capacity = g.m_backend.kv_capacity_bytes();
    }

    // Hands one accepted token to the sink; routing rows of `fo` row `row`, and
    // logits the host row its logits (null unless log-probabilities were asked for).
    void emit(int32_t id, bool drafted, const ForwardOutput& fo, int64_t row, const float* logits) {
        if (done) return;
        res.stats.generated_tokens++;
        const int32_t* ri = nullptr;
        const float* rw = nullptr;
        if (!fo.routing.ids.empty()) {
            ri = fo.routing.ids.data() + row * n_moe * top_k;
            rw = fo.routing.weights.data() + row * n_moe * top_k;
            for (int64_t l = 0; l < n_moe; ++l)
                for (int64_t k = 0; k < top_k; ++k) {
                    int32_t e = ri[l * top_k + k];
                    if (e >= 0) res.expert_counts[size_t(l * c.n_routed_experts + e)]++;
                }
        }
        const size_t start = emitted;
        FinishReason finish = FinishReason::Length;
        if (id == eos) {
            done = true;
            finish = FinishReason::Eos;
        } else {
            if (json && !json->advance(id)) engine_log().warn("JSON mode: token {} was chosen outside the grammar", id);
            history.push_back(id);
            res.ids.push_back(id);
            if (detok) text += detok->push(id);
            release(false, finish);
            if (!done && int64_t(res.ids.size()) >= max_new) {
                done = true;
                // The context, not max_new_tokens, ended the answer.
                finish = max_new < req.max_new_tokens ? FinishReason::ContextFull : FinishReason::Length;
            }
        }
        if (done) {
            res.finish = finish;
            if (finish != FinishReason::Stop) release(true, finish);
        }
        // Everything released by this token (text may have grown, so view it only now).
        const std::string_view piece(text.data() + start, emitted - start);
        update_cache_stats();
        if (sink) {
            TokenEvent ev;
            ev.id = id;
            ev.text = piece;
            ev.drafted = drafted;
            ev.end_of_sequence = id == eos;
            ev.n_moe_layers = int32_t(n_moe);
            ev.top_k = int32_t(top_k);
            if (ri) {
                ev.expert_ids = {ri, size_t(n_moe * top_k)};
                ev.expert_weights = {rw, size_t(n_moe * top_k)};
            }
            if (logits && req.logprobs >= 0) {
                ev.has_logprob = true;
                ev.logprob = token_logprobs(logits, sampler.n_valid(), id, req.logprobs, top_logprobs);
                ev.top_logprobs = top_logprobs;
            }
            ev.stats = &res.stats;
            sink(ev);
        }
    }

    // Text that can be shown now: nothing that could still become a stop string.
    std::string_view release(bool final, FinishReason& finish) {
        if (final && detok) text += detok->flush();
        size_t from = emitted > max_stop ? emitted - max_stop : 0;
        for (const auto& s : req.stop) {
            if (s.empty()) continue;
            size_t pos = text.find(s, from);
            if (pos != std::string::npos) {
                text.resize(pos);
                done = true;
                finish = FinishReason::Stop;
                res.finish = finish;
            }
        }
        size_t safe = text.size();
        if (!done && !final) {
            for (const auto& s : req.stop)
                for (size_t k = std::min(s.size() - 1, text.size()); k > 0; --k)
                    if (text.compare(text.size() - k, k, s, 0, k) == 0) {
                        safe = std::min(safe, text.size() - k);
                        break;
                    }
        }
        safe = std::max(safe, emitted);
        std::string_view out(text.data() + emitted, safe - emitted);
        emitted = safe;
        return out;
    }
};

// Token choices: on the backend's device when it samples there (the logits
// never leave it), otherwise on the host from the rows the last call copied
// back. Both take the same random numbers in the same order: one per sampled
// row, and for a verify batch as many as verify_uniforms_used says (peeked
// first, since only the device knows where the first rejection falls).
struct Choices {
    Backend& backend;
    Sampler& sampler;
    const bool device;
    const int64_t V;
    const float* host_rows = nullptr;  // the last call's logits on the host
    std::vector<std::vector<float>> q = std::vector<std::vector<float>>(size_t(Backend::k_max_choice_rows));
    std::vector<double> u = {};

    // Rows row0 .. row0 + n - 1 of the last call; with q_slot >= 0 the processed
    // distributions are kept as drafts' q (sampling).
    void choose(int64_t row0, int64_t n, const ChoiceSpec& spec, int64_t q_slot, int32_t* ids) {
        u.assign(size_t(n), 0.0);
        if (!sampler.greedy())
            for (double& x : u) x = sampler.uniform();
        if (device) backend.choose(row0, n, spec, u.data(), q_slot, ids);
        else choose_rows(sampler, host_rows + row0 * V, V, n, spec, u.data(), q_slot >= 0 ? &q[size_t(q_slot)] : nullptr, ids);
    }
    // Drafts 0 .. D - 1 (distributions in q slots 0 .. D - 1) against rows 0 .. D.
    VerifyResult verify(const ChoiceSpec& spec, const int32_t* drafts, int64_t D) {
        u.resize(size_t(D + 1));
        sampler.peek_uniforms(D + 1, u.data());
        const VerifyResult r = device ? backend.verify(spec, drafts, D, u.data())
                                      : verify_rows(sampler, host_rows, V, spec, q.data(), drafts, D, u.data());
        sampler.skip_uniforms(verify_uniforms_used(r, D));
        return r;
    }
};

GenerateResult Generator::run(const GenerateRequest& req, const TokenSink& sink) {
    const ModelConfig& c = m_model.config();
    const int64_t H = c.hidden_size, cap = m_backend.capacity();
    std::vector<int32_t> ids = prompt_ids(req);
    const int64_t n = int64_t(ids.size());
    if (n == 0) throw Error(ErrorCode::BadRequest, "empty prompt");
    for (int32_t id : ids)
        if (id < 0 || id >= c.vocab_size)
            throw Error(ErrorCode::BadRequest, "prompt token id " + std::to_string(id) + " is outside the vocabulary");
    if (n >= cap)
        throw Error(ErrorCode::ContextOverflow, "the prompt has " + std::to_string(n) + " tokens and exceeds the context of " +
                                                    std::to_string(cap) + " by " + std::to_string(n - cap + 1) +
                                                    " (one position is needed for the answer)");
    if (req.max_new_tokens < 1) throw Error(ErrorCode::BadRequest, "max_new_tokens must be at least 1");
    if (req.n_draft < 1 || req.n_draft > 8) throw Error(ErrorCode::BadRequest, "n_draft must be between 1 and 8");
    if (req.logprobs < -1 || req.logprobs > k_max_top_logprobs)
        throw Error(ErrorCode::BadRequest, "logprobs must be between -1 (none) and " + std::to_string(k_max_top_logprobs));
    if (!sampling_params_valid(req.sampling))
        throw Error(ErrorCode::BadRequest, "sampling parameters out of range (finite values with temperature >= 0, "
                                           "0 < top_p <= 1, 0 <= min_p <= 1, top_k >= 0, repetition_penalty > 0, "
                                           "frequency and presence penalties in -2 .. 2)");

    Run r(*this, req, sink);
    if (req.response_format == ResponseFormat::JsonObject) {
        if (!m_tokenizer)
            throw Error(ErrorCode::BadRequest, "JSON mode needs the model's tokenizer (tokenizer.json), which this "
                                               "model folder does not have");
        if (r.eos < 0 || r.eos >= r.sampler.n_valid())
            throw Error(ErrorCode::BadRequest, "JSON mode needs an end-of-sequence token in the vocabulary, which this "
                                               "model's tokenizer does not name");
        if (!m_json_vocabulary) m_json_vocabulary = JsonConstraint::vocabulary(*m_tokenizer, r.sampler.n_valid(), r.eos);
        r.json.emplace(m_json_vocabulary);
        // A continued answer goes on from its own text, which must start the object.
        if (req.continue_final_message && !req.messages.empty() &&
            !r.json->advance_bytes(req.messages.back().content))
            throw Error(ErrorCode::BadRequest, "JSON mode: the answer to continue is not the start of a JSON object");
    }
    r.history = ids;
    r.max_new = std::min<int64_t>(req.max_new_tokens, cap - n + 1);
    r.res.stats.prompt_tokens = n;
    // Drafts from the context (prompt lookup) or from the MTP module; lookup when asked.
    const bool use_lookup = req.lookup;
    const bool use_mtp = !use_lookup && req.mtp && m_model.n_mtp() > 0;
    r.res.mtp_used = use_mtp;
    r.res.lookup_used = use_lookup;
    if (use_lookup) r.res.mtp_note = "drafts looked up in the context instead of MTP";
    else if (req.mtp && m_model.n_mtp() == 0) r.res.mtp_note = "this model has no MTP layers; decoding plainly";
    else if (!req.mtp) r.res.mtp_note = "MTP switched off";

    // Prefix reuse: keep cache rows of the longest common prefix (at least one
    // token is recomputed to get fresh logits).
    int64_t p = reuse_prefix(ids, &r.res.stats.prefix_restored, &r.res.stats.prefix_from_disk);
    m_live_tag = req.cache_tag;  // what the cache holds from here on is this conversation's
    r.res.stats.stored_prefixes = int64_t(m_saved.size());
    r.res.stats.stored_prefix_bytes = stored_bytes();
    if (m_disk) {
        r.res.stats.disk_prefixes = int64_t(m_disk->files());
        r.res.stats.disk_prefix_bytes = m_disk->bytes();
    }
    if (p == n) --p;
    m_cached_ids.resize(size_t(p));
    m_on_disk = std::min(m_on_disk, p);
    m_mtp_valid = std::min<int64_t>(m_mtp_valid, std::max<int64_t>(p - 1, 0));
    r.res.stats.reused_prefix_tokens = p;

    auto cancelled = [&] { return req.cancel && req.cancel->load(std::memory_order_relaxed); };
    // The device's token choice knows no frequency or presence penalty: such requests
    // choose on the host (the rows come over, as for a CPU).
    // Nor does it know a grammar (JSON mode).
    const bool on_device = m_backend.samples_on_device() && !has_count_penalties(req.sampling) && !r.json;
    // Log-probabilities come from the logits on the host: a device that samples copies
    // the rows of the main model's steps too (its choices stay where they were made).
    const bool logits_on_host = !on_device || (req.logprobs >= 0 && sink);
    Choices choices{m_backend, r.sampler, on_device, c.vocab_size};
    // The ids a row penalises: the history (prompt and emitted tokens, the pending one
    // included), and tail[0, tail_first + row), the drafts after it. Each id appears once,
    // as the frequency penalty counts every occurrence.
    // In JSON mode row j of a choice may take only the ids of masks[j] (allowed_rows).
    auto spec = [&](std::span<const int32_t> tail, int64_t tail_first, std::span<const std::vector<uint8_t>> allowed = {}) {
        return ChoiceSpec{req.sampling, r.sampler.n_valid(), r.history, tail, tail_first, n, allowed};
    };
    // masks[slot]: the ids that may follow grammar state `s`; the end when nothing can.
    auto set_mask = [&](const JsonGrammar::State& s, size_t slot) {
        if (r.masks.size() <= slot) r.masks.resize(slot + 1);
        if (r.json->allowed(s, r.masks[slot]) == 0 && r.eos >= 0 && r.eos < r.sampler.n_valid())
            r.masks[slot][size_t(r.eos)] = 1;
    };
    auto allowed_rows = [&](size_t first, size_t count) {
        return r.json ? std::span<const std::vector<uint8_t>>(r.masks.data() + first, count)
                      : std::span<const std::vector<uint8_t>>();
    };
    auto t0 = clock_type::now();
    // Greedy without a penalty: the argmax comes with the forward pass itself
    // (on a GPU inside the step's graph, no second round trip).
    const bool fused_argmax =
        r.sampler.greedy() && req.sampling.repetition_penalty == 1.0f && !has_count_penalties(req.sampling) && !r.json;
    ForwardOptions fo;
    fo.all_logits = false;
    fo.want_hidden = !m_hidden.empty();  // kept for the MTP module only
    fo.want_routing = true;
    fo.logits_to_host = logits_on_host;
    fo.argmax_n_valid = fused_argmax ? r.sampler.n_valid() : 0;
    ForwardOutput out;
    // The backend's own pass length (the CUDA backend reads each expert's weights once per pass).
    const int64_t prefill_chunk = std::max<int64_t>(1, m_backend.prefill_chunk());
    for (int64_t s = p; s < n; s += prefill_chunk) {
        if (cancelled()) {
            m_backend.truncate(int64_t(m_cached_ids.size()));
            r.res.finish = FinishReason::Cancelled;
            return std::move(r.res);
        }
        const int64_t T = std::min(prefill_chunk, n - s);
        m_backend.forward(ids.data() + s, T, s, fo, out);
        if (!m_hidden.empty()) std::copy(out.hidden.begin(), out.hidden.end(), m_hidden.begin() + s * H);
        m_cached_ids.insert(m_cached_ids.end(), ids.begin() + s, ids.begin() + s + T);
    }
    // First token from the last prompt position (before the MTP module's call
    // below replaces the rows a device keeps).
    choices.host_rows = out.logits.data();
    int32_t pending = -1;
    if (r.json) set_mask(r.json->state(), 0);
    if (fused_argmax && out.argmax.size() == 1) pending = out.argmax[0];
    else choices.choose(0, 1, spec({}, 0, allowed_rows(0, 1)), -1, &pending);
    // The MTP module over the prompt too (entries (h_j, id_{j+1}) for j < n - 1), so that
    // prefill time holds all the prompt's work and decode time only the answer's. The
    // entry of the last prompt position needs the first answer token: first decode step.
    // No logits: the pass only fills the module's cache.
    MtpOutput mo;
    if (use_mtp && m_mtp_valid < n - 1) {
        const int64_t from = m_mtp_valid, T = n - 1 - from;
        MtpOptions fill;
        fill.logits = MtpLogits::None;
        for (int64_t s = 0; s < T; s += prefill_chunk) {
            const int64_t Tc = std::min(prefill_chunk, T - s);
            m_backend.mtp_forward(0, m_hidden.data() + (from + s) * H, m_cached_ids.data() + from + s + 1, Tc,
                                  from + s, fill, mo);
        }
        m_mtp_valid = n - 1;
    }
    r.res.stats.prefill_ms = seconds_since(t0) * 1e3;
    r.res.stats.prefill_tokens_per_s = double(n - p) / std::max(seconds_since(t0), 1e-9);

    ForwardOutput first_routing = std::move(out);
    r.emit(pending, false, first_routing, int64_t(first_routing.routing.ids.size()) / std::max<int64_t>(1, r.n_moe * r.top_k) - 1,
           first_routing.logits.empty() ? nullptr : first_routing.logits.data());

    auto t_decode = clock_type::now();
    ForwardOptions vo;
    vo.all_logits = true;
    vo.want_hidden = !m_hidden.empty();
    vo.want_routing = true;
    vo.logits_to_host = logits_on_host;
    vo.argmax_n_valid = fo.argmax_n_valid;
    // Drafts: the module's logits stay where they are computed; greedy drafts come
    // with the call's own argmax.
    MtpOptions mopt;
    mopt.logits = on_device ? MtpLogits::Keep : MtpLogits::Host;
    mopt.want_hidden = true;
    mopt.argmax_n_valid = fo.argmax_n_valid;
    std::vector<float> entry_hidden;
    std::vector<int32_t> batch, drafts, next_ids, greedy_ids;  // reused every step
    // Looked-up drafts per step: one at first, doubled after a step that accepted all (up
    // to n_draft), halved after one that accepted none; a miss at one draft skips the
    // lookup for 1, 2, 4 .. 16 steps (until a draft is accepted again), so that text that
    // does not repeat costs little: a row of the verify batch now and then.
    int64_t lookup_budget = 1, lookup_misses = 0, lookup_skip = 0;
    while (!r.done) {
        if (cancelled()) {
            r.res.finish = FinishReason::Cancelled;
            r.done = true;
            break;
        }
        const int64_t cur = int64_t(m_cached_ids.size());  // position of `pending`
        if (cur >= cap) {
            r.res.finish = FinishReason::ContextFull;
            r.done = true;
            break;
        }
        int64_t D = use_mtp || use_lookup ? std::min<int64_t>(req.n_draft, cap - 1 - cur) : 0;
        D = std::min<int64_t>(D, r.max_new - int64_t(r.res.ids.size()) - 1);  // no drafts past the budget
        drafts.clear();
        // JSON mode: the grammar's state after the pending token, then after each draft.
        JsonGrammar::State grammar = r.json ? r.json->state() : JsonGrammar::State{};
        if (D > 0 && use_lookup) {
            // The history ends with the pending token. Each draft is a certainty (q = 1 on
            // its id): accepted with the target's probability of it, else replaced from the
            // rest of the target distribution (verify_rows with one-hot q).
            if (lookup_skip > 0) --lookup_skip;
            else lookup_drafts(r.history, std::min(D, lookup_budget), drafts);
            for (size_t j = 0; j < drafts.size(); ++j) {
                const int32_t d = drafts[j];
                bool keep = d >= 0 && d < r.sampler.n_valid();  // ids past the tokenizer are never chosen
                if (keep && r.json) {  // a draft the grammar refuses ends the drafts
                    set_mask(grammar, j);
                    keep = r.masks[j][size_t(d)] != 0;
                    if (keep) r.json->step(grammar, d);
                }
                if (!keep) {
                    drafts.resize(j);
                    break;
                }
                if (!r.sampler.greedy()) {  // q where verify() reads it: the backend's slots, or the host's
                    if (on_device) {
                        m_backend.certain_draft(int64_t(j), d);
                    } else {
                        std::vector<float>& q = choices.q[j];
                        q.assign(size_t(c.vocab_size), 0.0f);
                        q[size_t(d)] = 1.0f;
                    }
                }
            }
            D = int64_t(drafts.size());
            r.res.stats.drafts_proposed += D;
        } else if (D > 0) {
            // Bring the MTP cache up to date: entries (h_j, id_{j+1}) for j < cur, the
            // last pairing h_{cur-1} with `pending`; its output drafts position cur+1.
            const int64_t from = m_mtp_valid, T = cur - from;
            next_ids.assign(m_cached_ids.begin() + from + 1, m_cached_ids.end());
            next_ids.push_back(pending);
            int64_t row = 0;  // the last row of the last call
            for (int64_t s = 0; s < T; s += k_logit_chunk) {
                const int64_t Tc = std::min(k_logit_chunk, T - s);
                MtpOptions o = mopt;
                if (Tc > Backend::k_max_choice_rows) o.argmax_n_valid = 0;  // a long catch-up: choose() below
                m_backend.mtp_forward(0, m_hidden.data() + (from + s) * H, next_ids.data() + s, Tc, from + s, o, mo);
                row = Tc - 1;
            }
            m_mtp_valid = cur;
            choices.host_rows = mo.logits.data();
            entry_hidden.assign(mo.hidden.end() - H, mo.hidden.end());
            for (int64_t j = 0; j < D; ++j) {
                // Draft j penalises the history (the pending token in it) and the drafts before it.
                int32_t d = -1;
                if (r.json) set_mask(grammar, size_t(j));
                if (fused_argmax && int64_t(mo.argmax.size()) > row) d = mo.argmax[size_t(row)];
                else
                    choices.choose(row, 1, spec(drafts, int64_t(drafts.size()), allowed_rows(size_t(j), 1)),
                                   r.sampler.greedy() ? -1 : j, &d);
                if (r.json) r.json->step(grammar, d);  // allowed, so it follows
                drafts.push_back(d);
                if (j + 1 < D) {  // chain: the module's own normed output stands in for h
                    const int64_t k = std::min<int64_t>(j + 1, m_model.n_mtp() - 1);
                    m_backend.mtp_forward(k, entry_hidden.data(), &d, 1, cur + j, mopt, mo);
                    choices.host_rows = mo.logits.data();
                    row = 0;
                    entry_hidden = mo.hidden;
                }
            }
            r.res.stats.drafts_proposed += D;
        }
        if (r.json) set_mask(grammar, size_t(D));  // the row after the last draft
        batch.assign(1, pending);
        batch.insert(batch.end(), drafts.begin(), drafts.end());
        m_backend.forward(batch.data(), int64_t(batch.size()), cur, vo, out);
        choices.host_rows = out.logits.data();
        r.res.stats.verify_steps++;
        // Accept drafts in order; row a penalises the history (the pending token in it) and
        // drafts 0 .. a - 1. With none left to check, row a gives the bonus token.
        int64_t a = 0;
        int32_t next = -1;
        if (r.sampler.greedy()) {
            greedy_ids.resize(size_t(D + 1));
            if (fused_argmax && out.argmax.size() == size_t(D + 1)) greedy_ids.assign(out.argmax.begin(), out.argmax.end());
            else choices.choose(0, D + 1, spec(drafts, 0, allowed_rows(0, size_t(D + 1))), -1, greedy_ids.data());
            while (a < D && greedy_ids[size_t(a)] == drafts[size_t(a)]) ++a;
            next = greedy_ids[size_t(a)];
        } else {
            const VerifyResult v = choices.verify(spec(drafts, 0, allowed_rows(0, size_t(D + 1))), drafts.data(), D);
            a = v.accepted;
            next = v.next;
        }
        r.res.stats.drafts_accepted += a;
        if (use_lookup && D > 0) {
            if (a > 0) lookup_misses = 0;
            if (a == 0 && lookup_budget == 1) lookup_skip = int64_t(1) << std::min<int64_t>(lookup_misses++, 4);
            if (a == 0) lookup_budget = std::max<int64_t>(1, lookup_budget / 2);
            else if (a == D) lookup_budget = std::min<int64_t>(req.n_draft, 2 * lookup_budget);
        }
        // Commit: pending and the accepted drafts stay in the cache, the rest is truncated.
        m_backend.truncate(cur + a + 1);
        m_cached_ids.push_back(pending);
        m_cached_ids.insert(m_cached_ids.end(), drafts.begin(), drafts.begin() + a);
        if (!m_hidden.empty()) std::copy(out.hidden.begin(), out.hidden.begin() + (a + 1) * H, m_hidden.begin() + cur * H);
        if (m_mtp_valid > cur) m_mtp_valid = cur;
        auto logits_row = [&](int64_t j) { return out.logits.empty() ? nullptr : out.logits.data() + j * c.vocab_size; };
        for (int64_t j = 0; j < a && !r.done; ++j) r.emit(drafts[size_t(j)], true, out, j, logits_row(j));
        if (!r.done) r.emit(next, false, out, a, logits_row(a));
        pending = next;
        const double dt = seconds_since(t_decode);
        r.res.stats.decode_ms = dt * 1e3;
        r.res.stats.decode_tokens_per_s = double(r.res.stats.generated_tokens - 1) / std::max(dt, 1e-9);
    }
    if (r.res.finish == FinishReason::Cancelled || r.res.finish == FinishReason::ContextFull) {
        FinishReason f = r.res.finish;
        std::string_view rest = r.release(true, f);
        if (sink && !rest.empty()) {
            TokenEvent ev;
            ev.id = -1;
            ev.text = rest;
            ev.stats = &r.res.stats;
            sink(ev);
        }
    }
    r.res.stats.prefix_saved = checkpoint();
    r.update_cache_stats();
    r.res.text = r.text;
    return std::move(r.res);
}

}  // namespace cetus
