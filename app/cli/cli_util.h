// Small helpers shared by cetus-cli subcommands: device names, id lists,
// engine loading with progress on stderr, and peak-memory readings.
#pragma once

#include "cetus/engine.h"

#include <CLI/CLI.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace cetus::cli {

Device parse_device(const std::string& name);  // auto | cpu | cuda
std::vector<int32_t> parse_ids(const std::string& text);  // "1,2,3" (spaces allowed)
// What the commands that load a model share: --fp8 (EngineOptions::fp8_on_load),
// --expand-gguf (EngineOptions::expand_gguf), --int8-activations (EngineOptions::int8_activations), --kv-cache (EngineOptions::kv_cache) and
// --prefix-cache / --prefix-cache-mib (EngineOptions::prefix_cache_dir and prefix_cache_bytes), --tune-steps.
struct LoadFlags {
    bool fp8 = false;
    bool expand_gguf = false;
    bool int8_activations = false;
    std::string kv_cache = "f32";
    std::string prefix_cache;
    uint64_t prefix_cache_mib = 2048;
    bool tune_steps = false;  // --tune-steps (EngineOptions::tune_steps)
    void apply(EngineOptions& o) const;
};
void add_load_flags(CLI::App* cmd, LoadFlags& flags);
std::unique_ptr<Engine> load_engine(const std::string& model_dir, const std::string& device, int threads,
                                    int64_t max_context, const LoadFlags& flags = {});
uint64_t peak_rss_bytes();  // VmHWM of this process
std::string default_fixtures_dir();
// `given` when not empty, else the bundled demo model (app/common/model_paths.h); throws when there is none.
std::string model_or_bundled(const std::string& given);

// A generation's statistics as JSON (serve's "stats" object, generate's and chat's
// summaries): tokens, speeds, MTP drafts and acceptance, cache bytes.
nlohmann::json stats_json(const GenerationStats& s);
// Engine::step_tuning as JSON (bench's "step_tuning").
nlohmann::json step_tuning_json(const StepTuning& t);

// A log-probability for JSON, which has no -infinity: OpenAI's -9999 for a token the
// model gives no mass.
double logprob_value(float logprob);
// A token as OpenAI's logprobs list it: {"token": its text (invalid UTF-8 replaced, as
// one token may hold part of a character), "logprob", "bytes": its bytes as numbers}.
// Without a tokenizer the token is its id in decimal and bytes is null.
nlohmann::json token_logprob_json(const Tokenizer* tokenizer, int32_t id, float logprob);

}  // namespace cetus::cli
