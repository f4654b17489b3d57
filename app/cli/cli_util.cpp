// Helpers for cetus-cli subcommands.
#include "cli_util.h"

#include "model_paths.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace cetus::cli {

Device parse_device(const std::string& name) {
    if (name == "auto") return Device::Auto;
    if (name == "cpu") return Device::Cpu;
    if (name == "cuda" || name == "gpu") return Device::Cuda;
    throw Error(ErrorCode::BadRequest, "unknown device \"" + name + "\" (auto, cpu or cuda)");
}

std::vector<int32_t> parse_ids(const std::string& text) {
    std::vector<int32_t> ids;
    std::string item;
    std::istringstream in(text);
    while (std::getline(in, item, ',')) {
        size_t b = item.find_first_not_of(" \t\n"), e = item.find_last_not_of(" \t\n");
        if (b == std::string::npos) throw Error(ErrorCode::BadRequest, "empty id in \"" + text + "\"");
        item = item.substr(b, e - b + 1);
        try {
            size_t used = 0;
            long long v = std::stoll(item, &used);
            if (used != item.size() || v < INT32_MIN || v > INT32_MAX) throw std::invalid_argument(item);
            ids.push_back(int32_t(v));
        } catch (const std::exception&) {
            throw Error(ErrorCode::BadRequest, "\"" + item + "\" is not a token id");
        }
    }
    if (ids.empty()) throw Error(ErrorCode::BadRequest, "no token ids given");
    return ids;
}

void LoadFlags::apply(EngineOptions& o) const {
    o.fp8_on_load = fp8;
    o.expand_gguf = expand_gguf;
    o.int8_activations = o.gpu_int8_activations = int8_activations;
    o.kv_cache = kv_cache_type_from_name(kv_cache);
    o.prefix_cache_dir = prefix_cache;
    o.prefix_cache_bytes = prefix_cache_mib << 20;
    o.tune_steps = tune_steps;
}

std::unique_ptr<Engine> load_engine(const std::string& model_dir, const std::string& device, int threads,
                                    int64_t max_context, const LoadFlags& flags) {
    EngineOptions o;
    o.model_dir = model_dir;
    o.device = parse_device(device);
    o.n_threads = threads;
    o.max_context = max_context;
    flags.apply(o);
    LoadProgress p;
    p.report = [](float f, const std::string& stage) {
        if (auto l = spdlog::get("cli")) l->debug("loading {:3.0f}%: {}", f * 100.0f, stage);
    };
    return Engine::load(o, p);
}

void add_load_flags(CLI::App* cmd, LoadFlags& flags) {
    cmd->add_flag("--fp8", flags.fp8,
                  "Quantise a checkpoint's linear layers to FP8 while loading (half the memory of BF16; a GGUF file's "
                  "blocks too, which the GPU would otherwise hold as BF16)");
    cmd->add_flag("--expand-gguf", flags.expand_gguf,
                  "Expand a GGUF file's block-quantised matrices to BF16 while loading (more memory; the CPU's "
                  "products then skip decoding them)");
    cmd->add_flag("--int8-activations", flags.int8_activations,
                  "Multiply GGUF blocks with integer dot products, each token's activations quantised to int8 "
                  "per block of the weights (faster; a product moves by at most half an activation step times the "
                  "sum of its weights' magnitudes); on the GPU its decode and verify products");
    cmd->add_option("--kv-cache", flags.kv_cache,
                    "Latent cache values: f32 (as computed) or bf16 (half the cache memory, each value rounded)")
        ->check(CLI::IsMember({"f32", "bf16"}))
        ->capture_default_str();
    cmd->add_option("--prefix-cache", flags.prefix_cache,
                    "Folder where conversations' latent-cache rows are kept between runs: a prompt that goes on "
                    "with one of them reads its rows back instead of a prefill");
    cmd->add_option("--prefix-cache-mib", flags.prefix_cache_mib, "Budget of the --prefix-cache folder in MiB")
        ->check(CLI::Range(uint64_t(1), uint64_t(1) << 24))
        ->capture_default_str();
    cmd->add_flag("--tune-steps", flags.tune_steps,
                  "After loading, time the GPU's alternative ways of running a decode step (a second stream, L2 "
                  "prefetches, programmatic dependent launch, the decode fusions, staged GGUF rows) and keep the "
                  "fastest that gives the same logits (a second or so; the CPU has none)");
}

uint64_t peak_rss_bytes() {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
    return 0;
}

std::string default_fixtures_dir() {
    // Next to the binary's source tree in a build, or the repository root on the GPU machine.
    for (const std::string& c : {std::string(CETUS_SOURCE_DIR) + "/tests/data/golden", std::string("tests/data/golden")})
        if (std::filesystem::is_directory(c)) return c;
    return "tests/data/golden";
}

std::string model_or_bundled(const std::string& given) {
    if (!given.empty()) return given;
    std::string dir = app::find_bundled_model();
    if (dir.empty())
        throw Error(ErrorCode::BadRequest, "no --model given and no bundled model found (looked in " +
                                               app::bundled_model_roots_text() + ")");
    if (auto l = spdlog::get("cli")) l->info("using the bundled model {}", dir);
    return dir;
}

nlohmann::json step_tuning_json(const StepTuning& t) {
    nlohmann::json trials = nlohmann::json::array();
    for (const StepTrial& x : t.trials)
        trials.push_back({{"setting", x.setting}, {"step_ms", x.step_ms}, {"logit_error", x.logit_error},
                          {"valid", x.valid}});
    return {{"ran", t.ran},           {"note", t.note},         {"context", t.context},
            {"rounds", t.rounds},     {"steps", t.steps},       {"trials", trials},
            {"chosen", t.chosen},     {"built_ms", t.built_ms}, {"chosen_ms", t.chosen_ms},
            {"seconds", t.seconds}};
}

nlohmann::json stats_json(const GenerationStats& s) {
    return {{"prompt_tokens", s.prompt_tokens},
            {"reused_prefix_tokens", s.reused_prefix_tokens},
            {"generated_tokens", s.generated_tokens},
            {"verify_steps", s.verify_steps},
            {"drafts_proposed", s.drafts_proposed},
            {"drafts_accepted", s.drafts_accepted},
            {"acceptance_rate", s.acceptance_rate()},
            {"mean_accepted_length", s.mean_accepted_length()},
            {"kv_cache_bytes", s.kv_bytes_used},
            {"kv_cache_capacity_bytes", s.kv_bytes_capacity},
            {"tokens_cached", s.tokens_cached},
            {"prefix_restored", s.prefix_restored},
            {"prefix_from_disk", s.prefix_from_disk},
            {"prefix_saved", s.prefix_saved},
            {"stored_prefixes", s.stored_prefixes},
            {"stored_prefix_bytes", s.stored_prefix_bytes},
            {"disk_prefixes", s.disk_prefixes},
            {"disk_prefix_bytes", s.disk_prefix_bytes},
            {"prefill_tokens_per_s", s.prefill_tokens_per_s},
            {"decode_tokens_per_s", s.decode_tokens_per_s},
            {"prefill_ms", s.prefill_ms},
            {"decode_ms", s.decode_ms}};
}

double logprob_value(float logprob) { return std::isnan(logprob) ? -9999.0 : std::max(double(logprob), -9999.0); }

nlohmann::json token_logprob_json(const Tokenizer* tokenizer, int32_t id, float logprob) {
    nlohmann::json j;
    if (tokenizer && tokenizer->has_token(id)) {
        const int32_t one[1] = {id};
        j["token"] = tokenizer->decode(one);
        const std::string_view raw = tokenizer->token_bytes(id);
        nlohmann::json bytes = nlohmann::json::array();
        for (unsigned char b : raw) bytes.push_back(int(b));
        j["logprob"] = logprob_value(logprob);
        j["bytes"] = std::move(bytes);
    } else {
        j["token"] = std::to_string(id);
        j["logprob"] = logprob_value(logprob);
        j["bytes"] = nullptr;
    }
    return j;
}

}  // namespace cetus::cli
