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
    // > 0: then a chunk of n_followup random ids at position n_prompt + n_gen through
    // the kept cache, as a conversation's next message (time to its first token).
    int64_t n_followup = 0;
    int repeats = 3;  // after one warm-up
    uint64_t seed = 7;
    // Generation bench: user messages rendered with the model's chat template (needs a
    // tokenizer); empty: n_prompt random ids. Figures are summed over all prompts.
    std::vector<std::string> chat_prompts;
    // Generation bench: GenerateRequest::logprobs (-1: none), read by a token sink.
    int32_t logprobs = -1;
    ResponseFormat response_format = ResponseFormat::Text;  // generation bench: JSON mode's cost
    // Generation bench: speculation's drafts looked up in the context (GenerateRequest::lookup)
    // instead of the MTP module's.
    bool lookup = false;
};

// A few everyday questions for the generation bench on chat models.
std::vector<std::string> default_bench_prompts();

struct BenchResult {
    double prefill_tokens_per_s = 0.0;  // median
    double decode_tokens_per_s = 0.0;   // median
    double prefill_ms = 0.0, decode_ms_per_token = 0.0;
    double followup_tokens_per_s = 0.0, followup_ms = 0.0;  // median (n_followup > 0)
    uint64_t kv_cache_bytes = 0;  // held after prompt + generation
    int repeats = 0;
    // Decode against the memory-bandwidth limit: bytes one decode step must read
    // (weights of the main model a token touches, top-k experts counted at their
    // mean size, plus the latent cache up to the mean decode position), those
    // bytes over the median time per token, and that over the device's measured
    // copy bandwidth (0 when the backend does not measure it).
    double decode_bytes_per_token = 0.0, decode_bandwidth_gbs = 0.0;
    double device_copy_bandwidth_gbs = 0.0, bandwidth_fraction = 0.0;
    // Prefill against compute: matrix-multiply and attention FLOPs per prompt
    // token, achieved TFLOP/s, and the fraction of the measured bf16 peak.
    double prefill_flops_per_token = 0.0, prefill_tflops = 0.0;
    double device_peak_tflops = 0.0, compute_fraction = 0.0;
};

BenchResult run_bench(Engine& engine, const BenchOptions& options);

// What one token reads of the main model's weights, as the engine's backend holds
// them: bytes (top-k experts at their mean size) and multiply-add elements. The
// weights' part of BenchResult::decode_bytes_per_token and prefill_flops_per_token.
struct TokenWeightCost {
    double bytes = 0.0, elements = 0.0;
};
TokenWeightCost token_weight_cost(Engine& engine);

// Greedy generation through Engine::generate (prefill + decode, with or without
// drafts: the MTP module's, or with BenchOptions::lookup looked up) on a random prompt;
// medians over repeats after a warm-up. mtp: drafts on.
struct GenerationBenchResult {
    bool mtp = false;
    int32_t n_draft = 1;
    double prefill_tokens_per_s = 0.0, decode_tokens_per_s = 0.0;
    double acceptance_rate = 0.0, mean_accepted_length = 0.0;
    int64_t generated_tokens = 0;
    double logprob_sum = 0.0;  // of the figures the sink read (BenchOptions::logprobs)
};
GenerationBenchResult run_generation_bench(Engine& engine, const BenchOptions& options, bool mtp, int32_t n_draft);

// Conversations taking turns (a chat app switching between chats, or server clients):
// n_conversations random prompts of options.n_prompt ids, then options.repeats rounds
// in which each conversation gets options.n_followup more ids and answers one token.
// Time to that first token (the whole Engine::generate call: restoring a stored
// prefix included) of every turn after the first round, median, with the prefix store
// at prefix_store_bytes and with none, side by side on the same engine.
struct SwitchBenchResult {
    int64_t turns = 0;  // measured turns per mode
    double first_token_ms_store = 0.0, first_token_ms_no_store = 0.0;
    double reused_share_store = 0.0, reused_share_no_store = 0.0;  // of the prompt tokens
};
SwitchBenchResult run_switch_bench(Engine& engine, const BenchOptions& options, int n_conversations,
                                   uint64_t prefix_store_bytes);

// A conversation opened again after a restart, on an engine with the prefix store's
// disk tier (EngineOptions::prefix_cache_dir): --prompt random ids answered with one
// token and written to disk, the cache and the store in memory forgotten, then the
// prompt and a --followup-id message answered with one token. Timed both with the
// rows read back from the file and with none (a full prefill), the two arms taking
// turns to go first, --repeat times after one warm-up; medians reported. The file
// was just written, so it is read from the page cache (as after a restart that was
// not a reboot).
struct RestartBenchResult {
    int64_t repeats = 0;
    double first_token_ms_disk = 0.0, first_token_ms_prefill = 0.0;
    double write_ms = 0.0;        // writing the prefix's file (median)
    uint64_t file_bytes = 0;      // its size
    double reused_share = 0.0;    // of the prompt tokens, with the file
};
RestartBenchResult run_restart_bench(Engine& engine, const BenchOptions& options);

// JSON mode's own work per choice: the mask of the ids that may follow, over the whole
// vocabulary, at every token of a JSON answer encoded by `tokenizer` (its text built
// in), one warm-up pass then `repeats` measured.
struct JsonMaskBenchResult {
    int64_t vocab = 0;             // ids checked per mask
    int64_t masks = 0;             // per pass: the answer's tokens, and one after the last
    double mean_allowed = 0.0;     // ids allowed per mask, on average
    double ms_per_mask = 0.0;      // median over the passes of (pass time / masks)
    double max_ms_per_mask = 0.0;  // the slowest single mask seen
    double build_ms = 0.0;         // setting the vocabulary's tables up (once per request)
};
JsonMaskBenchResult run_json_mask_bench(const Tokenizer& tokenizer, int repeats);

}  // namespace cetus
