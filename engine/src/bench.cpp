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

GenerationBenchResult run_generation_bench(Engine& engine, const BenchOptions& o, bool mtp, int32_t n_draft) {
    const ModelConfig& c = engine.model().config();
    std::mt19937_64 rng(o.seed);
    const int64_t n_valid = engine.tokenizer() ? std::min<int64_t>(engine.tokenizer()->vocab_size(), c.vocab_size)
                                               : c.vocab_size;
    std::uniform_int_distribution<int32_t> dist(2, int32_t(n_valid - 1));
    GenerateRequest req;
    req.prompt_ids.resize(static_cast<size_t>(o.n_prompt));
    for (auto& t : req.prompt_ids) t = dist(rng);
    req.sampling.temperature = 0.0f;
    req.max_new_tokens = int32_t(std::max<int64_t>(o.n_gen, 1));
    req.mtp = mtp;
    req.n_draft = n_draft;
    std::vector<double> prefill, decode;
    GenerationBenchResult res;
    res.mtp = mtp;
    res.n_draft = n_draft;
    for (int r = 0; r <= o.repeats; ++r) {
        engine.reset_cache();
        GenerateResult g = engine.generate(req);
        if (r == 0) continue;
        prefill.push_back(g.stats.prefill_tokens_per_s);
        decode.push_back(g.stats.decode_tokens_per_s);
        res.acceptance_rate = g.stats.acceptance_rate();
        res.mean_accepted_length = g.stats.mean_accepted_length();
        res.generated_tokens = g.stats.generated_tokens;
    }
    engine.reset_cache();
    std::sort(prefill.begin(), prefill.end());
    std::sort(decode.begin(), decode.end());
    res.prefill_tokens_per_s = prefill[prefill.size() / 2];
    res.decode_tokens_per_s = decode[decode.size() / 2];
    return res;
}

}  // namespace cetus
