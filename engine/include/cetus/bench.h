// Speed and memory benchmarks of the forward pass (prefill and decode), run by
// `cetus-cli bench`. Medians over repeats after a discarded warm-up.
#pragma once

#include "cetus/engine.h"

#include <cstdint>
#include <string>
#include <vector>

namespace cetus {

struct BenchOptions {
    int64_t n_prompt = 128;
    int64_t n_gen = 32;
    int repeats = 3;  // after one warm-up
    uint64_t seed = 7;
    // Generation bench: user messages rendered with the model's chat template (needs a
    // tokenizer); empty: n_prompt random ids. Figures are summed over all prompts.
    std::vector<std::string> chat_prompts;
};

// A few everyday questions for the generation bench on chat models.
std::vector<std::string> default_bench_prompts();

struct BenchResult {
    double prefill_tokens_per_s = 0.0;  // median
    double decode_tokens_per_s = 0.0;   // median
    double prefill_ms = 0.0, decode_ms_per_token = 0.0;
    uint64_t kv_cache_bytes = 0;  // held after prompt + generation
    int repeats = 0;
};

BenchResult run_bench(Engine& engine, const BenchOptions& options);

// Greedy generation through Engine::generate (prefill + decode, with or without
// MTP drafts) on a random prompt; medians over repeats after a warm-up.
struct GenerationBenchResult {
    bool mtp = false;
    int32_t n_draft = 1;
    double prefill_tokens_per_s = 0.0, decode_tokens_per_s = 0.0;
    double acceptance_rate = 0.0, mean_accepted_length = 0.0;
    int64_t generated_tokens = 0;
};
GenerationBenchResult run_generation_bench(Engine& engine, const BenchOptions& options, bool mtp, int32_t n_draft);

}  // namespace cetus
