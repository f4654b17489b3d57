// Prefill: one forward over n_prompt random ids (only the last logits, as a
// generator does). Decode: n_gen single-token forwards through the cache,
// each fed the argmax of the previous step.
#include "cetus/bench.h"

#include "kv_cache.h"
#include "model.h"

#include <algorithm>
#include <chrono>
#include <random>

namespace cetus {

BenchResult run_bench(Engine& engine, const BenchOptions& o) {
    Model& model = engine.model();
    KvCache& cache = engine.cache();
    const ModelConfig& c = model.config();
    if (o.n_prompt < 1 || o.n_gen < 0 || o.repeats < 1)
        throw Error(ErrorCode::BadRequest, "bench needs --prompt >= 1, --gen >= 0, --repeat >= 1");
    if (o.n_prompt + o.n_gen > cache.capacity())
        throw Error(ErrorCode::ContextOverflow, "prompt + gen = " + std::to_string(o.n_prompt + o.n_gen) +
                                                    " exceeds the context of " + std::to_string(cache.capacity()));
    std::mt19937_64 rng(o.seed);
    std::uniform_int_distribution<int32_t> dist(0, int32_t(c.vocab_size - 1));
    std::vector<int32_t> prompt(static_cast<size_t>(o.n_prompt));
    for (auto& t : prompt) t = dist(rng);

    using clock = std::chrono::steady_clock;
    std::vector<double> prefill_s, decode_s;
    ForwardOptions last;
    last.all_logits = false;
    ForwardOutput out;
    for (int r = 0; r <= o.repeats; ++r) {  // r == 0 is the warm-up
        cache.clear();
        auto t0 = clock::now();
        model.forward(prompt.data(), o.n_prompt, 0, cache, last, out);
        auto t1 = clock::now();
        for (int64_t g = 0; g < o.n_gen; ++g) {
            int32_t next = int32_t(std::max_element(out.logits.begin(), out.logits.end()) - out.logits.begin());
            model.forward(&next, 1, o.n_prompt + g, cache, last, out);
        }
        auto t2 = clock::now();
        if (r == 0) continue;
        prefill_s.push_back(std::chrono::duration<double>(t1 - t0).count());
        decode_s.push_back(std::chrono::duration<double>(t2 - t1).count());
    }
    auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    };
    BenchResult res;
    res.repeats = o.repeats;
    res.prefill_ms = median(prefill_s) * 1e3;
    res.prefill_tokens_per_s = double(o.n_prompt) / median(prefill_s);
    if (o.n_gen > 0) {
        res.decode_ms_per_token = median(decode_s) * 1e3 / double(o.n_gen);
        res.decode_tokens_per_s = double(o.n_gen) / median(decode_s);
    }
    res.kv_cache_bytes = cache.used_bytes();
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
        r.mtp = mtp;
        r.n_draft = n_draft;
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
            GenerateResult g = engine.generate(req);
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

}  // namespace cetus
