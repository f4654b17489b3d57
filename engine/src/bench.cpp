// Prefill: one forward over n_prompt random ids (only the last logits, as a
// generator does). Decode: n_gen single-token forwards through the cache,
// each fed the argmax of the previous step, taken where the generator takes it
// (on the device when the backend chooses there, so the logits stay put).
// Follow-up: one forward over n_followup more ids after those, through the cache
// (a conversation's next message).
#include "cetus/bench.h"

#include "backend.h"
#include "json_grammar.h"
#include "model.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <random>

namespace cetus {

namespace {

TokenWeightCost token_weights(const Model& m, const Backend& backend) {
    const ModelConfig& c = m.config();
    TokenWeightCost t;
    auto add = [&](const Matrix& w, double share = 1.0) {
        t.bytes += share * double(backend.weight_read_bytes(w));
        t.elements += share * double(w.n_elements());
    };
    auto add_mlp = [&](const MlpWeights& w, double share = 1.0) {
        for (const Matrix* p : {&w.gate, &w.up, &w.down}) add(*p, share);
    };
    add(m.lm_head());
    t.bytes += double(backend.weight_read_bytes(m.embed())) / double(std::max<int64_t>(1, m.embed().rows));  // one row
    for (const LayerWeights& l : m.layers()) {
        const AttentionWeights& a = l.attn;
        for (const Matrix* w : {&a.q_proj, &a.q_a_proj, &a.q_b_proj, &a.kv_a_proj_with_mqa, &a.kv_b_proj, &a.o_proj})
            if (w->key()) add(*w);  // (absent: q_proj or q_a/q_b, by q_lora_rank)
        if (!l.is_moe) {
            add_mlp(l.mlp);
            continue;
        }
        add(l.moe.gate);
        if (l.moe.has_shared) add_mlp(l.moe.shared);
        const double share = double(c.num_experts_per_tok) / double(std::max<size_t>(1, l.moe.experts.size()));
        for (const MlpWeights& e : l.moe.experts) add_mlp(e, share);
    }
    return t;
}

}  // namespace

TokenWeightCost token_weight_cost(Engine& engine) { return token_weights(engine.model(), engine.backend()); }

BenchResult run_bench(Engine& engine, const BenchOptions& o) {
    Model& model = engine.model();
    Backend& backend = engine.backend();
    const ModelConfig& c = model.config();
    if (o.n_prompt < 1 || o.n_gen < 0 || o.n_followup < 0 || o.repeats < 1)
        throw Error(ErrorCode::BadRequest, "bench needs --prompt >= 1, --gen >= 0, --followup >= 0, --repeat >= 1");
    const int64_t n_ctx = o.n_prompt + o.n_gen + o.n_followup;
    if (n_ctx > backend.capacity())
        throw Error(ErrorCode::ContextOverflow, "prompt + gen + followup = " + std::to_string(n_ctx) +
                                                    " exceeds the context of " + std::to_string(backend.capacity()));
    std::mt19937_64 rng(o.seed);
    std::uniform_int_distribution<int32_t> dist(0, int32_t(c.vocab_size - 1));
    std::vector<int32_t> prompt(static_cast<size_t>(o.n_prompt)), followup(static_cast<size_t>(o.n_followup));
    for (auto& t : prompt) t = dist(rng);
    for (auto& t : followup) t = dist(rng);

    using clock = std::chrono::steady_clock;
    std::vector<double> prefill_s, decode_s, followup_s;
    ForwardOptions last;
    last.all_logits = false;
    last.logits_to_host = !backend.samples_on_device();
    last.argmax_n_valid = c.vocab_size;  // taken where the logits are, as the generator does
    ForwardOutput out;
    for (int r = 0; r <= o.repeats; ++r) {  // r == 0 is the warm-up
        backend.clear();
        auto t0 = clock::now();
        backend.forward(prompt.data(), o.n_prompt, 0, last, out);
        auto t1 = clock::now();
        for (int64_t g = 0; g < o.n_gen; ++g) {
            int32_t next = out.argmax.at(0);
            backend.forward(&next, 1, o.n_prompt + g, last, out);
        }
        auto t2 = clock::now();
        if (o.n_followup > 0) backend.forward(followup.data(), o.n_followup, o.n_prompt + o.n_gen, last, out);
        auto t3 = clock::now();
        if (r == 0) continue;
        prefill_s.push_back(std::chrono::duration<double>(t1 - t0).count());
        decode_s.push_back(std::chrono::duration<double>(t2 - t1).count());
        followup_s.push_back(std::chrono::duration<double>(t3 - t2).count());
    }
    auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    };
    BenchResult res;
    res.repeats = o.repeats;
    res.prefill_ms = median(prefill_s) * 1e3;
    res.prefill_tokens_per_s = double(o.n_prompt) / median(prefill_s);
    if (o.n_followup > 0) {
        res.followup_ms = median(followup_s) * 1e3;
        res.followup_tokens_per_s = double(o.n_followup) / median(followup_s);
    }
    if (o.n_gen > 0) {
        res.decode_ms_per_token = median(decode_s) * 1e3 / double(o.n_gen);
        res.decode_tokens_per_s = double(o.n_gen) / median(decode_s);
    }
    res.kv_cache_bytes = backend.kv_used_bytes();

    const TokenWeightCost tw = token_weights(model, backend);
    const double L = double(c.num_hidden_layers);
    const double row_bytes = double(backend.kv_bytes_per_token()) /
                             double(c.num_hidden_layers + c.num_nextn_predict_layers);  // one layer's row
    const double mean_decode_ctx = double(o.n_prompt) + double(std::max<int64_t>(o.n_gen - 1, 0)) / 2.0 + 1.0;
    res.decode_bytes_per_token = tw.bytes + L * mean_decode_ctx * row_bytes;
    if (res.decode_ms_per_token > 0) res.decode_bandwidth_gbs = res.decode_bytes_per_token / res.decode_ms_per_token / 1e6;
    res.device_copy_bandwidth_gbs = backend.copy_bandwidth_gbs();
    if (res.device_copy_bandwidth_gbs > 0) res.bandwidth_fraction = res.decode_bandwidth_gbs / res.device_copy_bandwidth_gbs;
    // Attention per token and head, in the cheaper of the two forms over the whole
    // prompt (both backends take the expanded one for long prompt chunks), each
    // counted over the exact causal triangle (mla_cost.h).
    const MlaDims dims{double(c.kv_lora_rank), double(c.qk_rope_head_dim), double(c.qk_nope_head_dim),
                       double(c.v_head_dim)};
    MlaFormCosts exact;
    exact.query_block = 1;
    const double per_head = std::min(mla_absorbed_macs(dims, o.n_prompt, 0, exact),
                                     mla_expanded_macs(dims, o.n_prompt, 0, exact));
    const double attn = 2.0 * L * double(c.num_attention_heads) * per_head / double(std::max<int64_t>(o.n_prompt, 1));
    res.prefill_flops_per_token = 2.0 * tw.elements + attn;
    res.prefill_tflops = res.prefill_flops_per_token * res.prefill_tokens_per_s / 1e12;
    res.device_peak_tflops = backend.peak_bf16_tflops();
    if (res.device_peak_tflops > 0) res.compute_fraction = res.prefill_tflops / res.device_peak_tflops;
    engine.reset_cache();  // the generator's prefix bookkeeping no longer matches the cache
    return res;
}

std::vector<std::string> default_bench_prompts() {
    return {"Hello! Who are you?", "What does the word generous mean?", "Give me an example sentence with the word river.",
            "What is the opposite of ancient?", "Tell me something about the sea.", "How are you today?",
            "What is a synonym for quick?", "Can you help me with a question about words?"};
}

GenerationBenchResult run_generation_bench(Engine& engine, const BenchOptions& o, bool mtp, int32_t n_draft) {
    const ModelConfig& c = engine.model().config();
    std::vector<GenerateRequest> requests;
    auto base = [&] {
        GenerateRequest r;
        r.sampling.temperature = 0.0f;
        r.max_new_tokens = int32_t(std::max<int64_t>(o.n_gen, 1));
        r.mtp = mtp && !o.lookup;
        r.lookup = mtp && o.lookup;
        r.n_draft = n_draft;
        r.logprobs = o.logprobs;
        r.response_format = o.response_format;
        return r;
    };
    if (!o.chat_prompts.empty() && engine.tokenizer()) {
        for (const auto& p : o.chat_prompts) {
            GenerateRequest r = base();
            r.messages = {{"user", p}};
            requests.push_back(std::move(r));
        }
    } else {
        std::mt19937_64 rng(o.seed);
        const int64_t n_valid = engine.tokenizer() ? std::min<int64_t>(engine.tokenizer()->vocab_size(), c.vocab_size)
                                                   : c.vocab_size;
        std::uniform_int_distribution<int32_t> dist(2, int32_t(n_valid - 1));
        GenerateRequest r = base();
        r.prompt_ids.resize(static_cast<size_t>(o.n_prompt));
        for (auto& t : r.prompt_ids) t = dist(rng);
        requests.push_back(std::move(r));
    }
    std::vector<double> prefill, decode;
    GenerationBenchResult res;
    res.mtp = mtp;
    res.n_draft = n_draft;
    for (int rep = 0; rep <= o.repeats; ++rep) {
        double prefill_tokens = 0, prefill_s = 0, decode_tokens = 0, decode_s = 0;
        int64_t proposed = 0, accepted = 0, steps = 0, generated = 0;
        for (const auto& req : requests) {
            engine.reset_cache();
            // Log-probabilities are computed for a sink only: one that reads them.
            double logprob_sum = 0.0;
            TokenSink sink;
            if (o.logprobs >= 0)
                sink = [&](const TokenEvent& ev) {
                    logprob_sum += ev.logprob;
                    for (const TokenLogprob& t : ev.top_logprobs) logprob_sum += t.logprob;
                };
            GenerateResult g = engine.generate(req, sink);
            res.logprob_sum += logprob_sum;
            prefill_tokens += double(g.stats.prompt_tokens);
            prefill_s += g.stats.prefill_ms / 1e3;
            decode_tokens += double(g.stats.generated_tokens - 1);
            decode_s += g.stats.decode_ms / 1e3;
            proposed += g.stats.drafts_proposed;
            accepted += g.stats.drafts_accepted;
            steps += g.stats.verify_steps;
            generated += g.stats.generated_tokens;
        }
        if (rep == 0) continue;  // warm-up
        prefill.push_back(prefill_tokens / std::max(prefill_s, 1e-9));
        decode.push_back(decode_tokens / std::max(decode_s, 1e-9));
        res.acceptance_rate = proposed ? double(accepted) / double(proposed) : 0.0;
        res.mean_accepted_length = steps ? decode_tokens / double(steps) : 0.0;
        res.generated_tokens = generated;
    }
    engine.reset_cache();
    std::sort(prefill.begin(), prefill.end());
    std::sort(decode.begin(), decode.end());
    res.prefill_tokens_per_s = prefill[prefill.size() / 2];
    res.decode_tokens_per_s = decode[decode.size() / 2];
    return res;
}

SwitchBenchResult run_switch_bench(Engine& engine, const BenchOptions& o, int n_conversations,
                                   uint64_t prefix_store_bytes) {
    if (n_conversations < 2 || o.n_prompt < 1 || o.n_followup < 1 || o.repeats < 1)
        throw Error(ErrorCode::BadRequest, "bench --conversations needs at least 2 conversations, --prompt >= 1, "
                                           "--followup >= 1 and --repeat >= 1");
    const int64_t V = engine.model().config().vocab_size;
    SwitchBenchResult res;
    for (const bool store : {true, false}) {
        engine.reset_cache();
        engine.set_prefix_store_bytes(store ? prefix_store_bytes : 0);
        std::mt19937 rng(uint32_t(o.seed));
        std::uniform_int_distribution<int32_t> dist(0, int32_t(V - 1));
        auto history = std::vector<std::vector<int32_t>>(size_t(n_conversations));
        for (auto& h : history) {
            h.resize(size_t(o.n_prompt));
            for (auto& t : h) t = dist(rng);
        }
        std::vector<double> ms;
        int64_t reused = 0, prompt = 0;
        for (int round = 0; round <= o.repeats; ++round) {
            for (auto& h : history) {
                if (round > 0)
                    for (int64_t i = 0; i < o.n_followup; ++i) h.push_back(dist(rng));
                GenerateRequest r;
                r.prompt_ids = h;
                r.sampling.temperature = 0.0f;
                r.max_new_tokens = 1;
                r.mtp = false;
                const auto t0 = std::chrono::steady_clock::now();
                const GenerateResult g = engine.generate(r);
                const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
                h.insert(h.end(), g.ids.begin(), g.ids.end());
                if (round == 0) continue;  // every conversation's first prefill
                ms.push_back(t);
                reused += g.stats.reused_prefix_tokens;
                prompt += g.stats.prompt_tokens;
            }
        }
        std::sort(ms.begin(), ms.end());
        (store ? res.first_token_ms_store : res.first_token_ms_no_store) = ms[ms.size() / 2];
        (store ? res.reused_share_store : res.reused_share_no_store) = double(reused) / double(std::max<int64_t>(1, prompt));
        res.turns = int64_t(ms.size());
    }
    engine.reset_cache();
    engine.set_prefix_store_bytes(prefix_store_bytes);
    return res;
}

RestartBenchResult run_restart_bench(Engine& engine, const BenchOptions& o) {
    if (o.n_prompt < 32 || o.n_followup < 1 || o.repeats < 1)
        throw Error(ErrorCode::BadRequest, "bench --restart needs --prompt >= 32 (shorter prefixes are not kept), "
                                           "--followup >= 1 and --repeat >= 1");
    const int64_t V = engine.model().config().vocab_size;
    std::mt19937 rng(uint32_t(o.seed));
    std::uniform_int_distribution<int32_t> dist(0, int32_t(V - 1));
    auto request = [](std::vector<int32_t> ids) {
        GenerateRequest r;
        r.prompt_ids = std::move(ids);
        r.sampling.temperature = 0.0f;
        r.max_new_tokens = 1;
        r.mtp = false;
        return r;
    };
    using clock = std::chrono::steady_clock;
    auto ms_since = [](clock::time_point t0) { return std::chrono::duration<double, std::milli>(clock::now() - t0).count(); };
    RestartBenchResult res;
    std::vector<double> disk, prefill, write;
    int64_t reused = 0, prompt = 0;
    for (int rep = 0; rep <= o.repeats; ++rep) {
        std::vector<int32_t> ids(size_t(o.n_prompt));
        for (auto& t : ids) t = dist(rng);
        std::vector<int32_t> next = ids;
        for (int64_t i = 0; i < o.n_followup; ++i) next.push_back(dist(rng));
        double t_disk = 0.0, t_prefill = 0.0;
        for (int arm = 0; arm < 2; ++arm) {
            const bool with_file = (arm == 0) == (rep % 2 == 0);  // the arms take turns to go first
            engine.clear_prefix_cache();
            if (with_file) {
                // The file is queued after the answer (its rows copied out of the cache) and
                // written on the disk tier's thread: timed from the answer's token to the
                // end of the write.
                clock::time_point answered = clock::now();
                engine.generate(request(ids), [&](const TokenEvent&) { answered = clock::now(); });
                engine.persist_prefixes();
                if (rep > 0) write.push_back(ms_since(answered));
                engine.reset_cache();  // what a restart forgets; the file stays
            }
            // To the first token (each arm's answer is then queued to be written, after it).
            const auto t0 = clock::now();
            std::optional<clock::time_point> first;
            const GenerateResult g = engine.generate(request(next), [&](const TokenEvent&) {
                if (!first) first = clock::now();
            });
            (with_file ? t_disk : t_prefill) = std::chrono::duration<double, std::milli>(first.value_or(clock::now()) - t0).count();
            if (with_file && !g.stats.prefix_from_disk)
                throw Error(ErrorCode::BadRequest, "bench --restart: the prefix did not come back from the disk tier");
            if (with_file && rep > 0) {
                reused += g.stats.reused_prefix_tokens;
                prompt += g.stats.prompt_tokens;
                res.file_bytes = g.stats.disk_prefix_bytes;
            }
        }
        if (rep == 0) continue;  // warm-up
        disk.push_back(t_disk);
        prefill.push_back(t_prefill);
    }
    engine.clear_prefix_cache();
    auto median = [](std::vector<double>& v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    };
    res.repeats = o.repeats;
    res.first_token_ms_disk = median(disk);
    res.first_token_ms_prefill = median(prefill);
    res.write_ms = median(write);
    res.reused_share = double(reused) / double(std::max<int64_t>(1, prompt));
    return res;
}

JsonMaskBenchResult run_json_mask_bench(const Tokenizer& tokenizer, int repeats) {
    // An answer as a chat model writes one: keys, prose, numbers, a list, nesting, escapes.
    static const std::string k_answer =
        "{\n  \"name\": \"Blue whale\",\n  \"scientific_name\": \"Balaenoptera musculus\",\n"
        "  \"length_m\": 29.9,\n  \"mass_tonnes\": 199,\n  \"endangered\": true,\n"
        "  \"diet\": [\"krill\", \"copepods\"],\n  \"range\": {\"oceans\": [\"Atlantic\", \"Pacific\", "
        "\"Indian\", \"Southern\"], \"migrates\": true},\n  \"summary\": \"The largest animal known to have "
        "lived; it feeds almost only on krill, taking in up to 16 tonnes of water a gulp. Its calls, at 188 dB, "
        "travel \\\"hundreds\\\" of kilometres.\",\n  \"population_estimate\": [10000, 25000],\n"
        "  \"notes\": null\n}";
    const std::vector<int32_t> ids = tokenizer.encode(k_answer, false);
    const int64_t vocab = tokenizer.vocab_size();
    const auto b0 = std::chrono::steady_clock::now();
    JsonConstraint constraint(tokenizer, vocab, tokenizer.eos_id());
    JsonMaskBenchResult res;
    res.build_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - b0).count();
    res.vocab = vocab;
    res.masks = int64_t(ids.size()) + 1;
    std::vector<uint8_t> mask;
    std::vector<double> per_mask;
    for (int rep = 0; rep <= std::max(repeats, 1); ++rep) {
        JsonGrammar::State s;
        int64_t allowed = 0;
        const auto t0 = std::chrono::steady_clock::now();
        for (size_t i = 0; i <= ids.size(); ++i) {
            const auto m0 = std::chrono::steady_clock::now();
            allowed += constraint.allowed(s, mask);
            const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - m0).count();
            if (rep > 0) res.max_ms_per_mask = std::max(res.max_ms_per_mask, ms);
            if (i < ids.size() && !constraint.step(s, ids[i]))
                throw Error(ErrorCode::BadRequest, "the JSON mask bench's answer does not tokenize into JSON tokens");
        }
        const double pass_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (rep == 0) continue;  // warm-up
        per_mask.push_back(pass_ms / double(res.masks));
        res.mean_allowed = double(allowed) / double(res.masks);
    }
    std::sort(per_mask.begin(), per_mask.end());
    res.ms_per_mask = per_mask[per_mask.size() / 2];
    return res;
}

}  // namespace cetus
