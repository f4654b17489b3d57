// cetus-cli bench: prefill and decode tokens/s and peak memory, on a model
// folder or a random model of a published shape, as JSON or text.
// Other benchmark modes (--tokenizer, ...) dispatch from here to their files.
#include "cli_util.h"
#include "commands.h"

#include "cetus/bench.h"

#include <nlohmann/json.hpp>

#include <omp.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

namespace cetus::cli {

void add_bench_command(CLI::App& app) {
    auto* cmd = app.add_subcommand("bench", "Benchmark prefill and decode (JSON with --json)");
    struct Opts {
        LoadFlags load;
        std::string model, random, device = "cpu", dtype = "bf16";
        int64_t prompt = 128, gen = 32, followup = 0, layers = 0;
        int repeat = 3, threads = 0, draft = 0, conversations = 0, logprobs = -1;
        std::string mtp, text_file, prompts_file, format = "text";
        bool tokenizer = false, restart = false, json_mask = false, lookup = false;
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    auto* m = cmd->add_option("--model", o->model, "Model folder or .gguf file");
    cmd->add_option("--random-model", o->random, "Random model preset: tiny, medium-cpu, v2-lite, v3-layers")
        ->excludes(m);
    cmd->add_option("--dtype", o->dtype, "Random model weights: bf16, fp8 or q4_k_m (GGUF blocks)");
    cmd->add_option("--layers", o->layers, "Random model: override the number of layers");
    cmd->add_option("--device", o->device, "auto, cpu or cuda");
    add_load_flags(cmd, o->load);
    cmd->add_option("--prompt", o->prompt, "Prompt tokens");
    cmd->add_option("--gen", o->gen, "Generated tokens");
    cmd->add_option("--followup", o->followup,
                    "Then a chunk of N tokens after the prompt and generated tokens, as a conversation's next "
                    "message through the kept cache (followup_tokens_per_s)");
    cmd->add_option("--repeat", o->repeat, "Measured repeats after one warm-up (median reported)");
    cmd->add_option("--threads", o->threads, "CPU threads (default: all)");
    cmd->add_option("--mtp", o->mtp, "Greedy generation with MTP drafts: on, off, or both (side by side)")
        ->check(CLI::IsMember({"on", "off", "both"}));
    cmd->add_option("--draft", o->draft, "Draft tokens per step with --mtp (default 1, with --lookup 4)")->check(CLI::Range(1, 8));
    cmd->add_flag("--lookup", o->lookup,
                  "With --mtp: the drafts looked up in the prompt and answer so far instead of the MTP module's "
                  "(any model; mtp_on then means with those drafts)");
    cmd->add_option("--logprobs", o->logprobs,
                    "With --mtp: each mode again asking for log-probabilities and the N most likely tokens per "
                    "step, side by side (with_logprobs, decode_ratio; run without, with, with, without, each pair "
                    "averaged)")
        ->check(CLI::Range(0, int(k_max_top_logprobs)));
    cmd->add_option("--prompts-file", o->prompts_file,
                    "With --mtp: user messages, one per line (default: built-in questions when the model has a "
                    "tokenizer, else --prompt random ids)");
    cmd->add_option("--conversations", o->conversations,
                    "N conversations taking turns: --prompt ids each, then --repeat rounds of a --followup-id "
                    "message and one answer token; time to that token with the prefix store and without");
    cmd->add_flag("--restart", o->restart,
                  "A conversation opened again after a restart: time to the first token of a --followup-id message "
                  "after --prompt ids, with their rows read back from the prefix cache's file and with a full "
                  "prefill (--prefix-cache DIR, else a temporary folder)");
    cmd->add_option("--format", o->format,
                    "With --mtp: json also times JSON mode beside plain generation (decode_ratio)")
        ->check(CLI::IsMember({"text", "json"}));
    cmd->add_flag("--json-mask", o->json_mask,
                  "Time JSON mode's mask over the vocabulary of --model's tokenizer (ms per token choice; --threads)");
    cmd->add_flag("--tokenizer", o->tokenizer, "Benchmark the tokenizer of --model on --text-file (MB/s)");
    cmd->add_option("--text-file", o->text_file, "Text for --tokenizer");
    cmd->add_flag("--json", o->json, "JSON output");
    cmd->callback([o] {
        if (o->json_mask) {
            if (o->model.empty()) throw Error(ErrorCode::BadRequest, "bench --json-mask needs --model DIR (its tokenizer)");
            const Tokenizer tokenizer = Tokenizer::load(o->model);
            if (o->threads > 0) omp_set_num_threads(o->threads);
            const JsonMaskBenchResult r = run_json_mask_bench(tokenizer, o->repeat);
            nlohmann::json j = {{"benchmark", "json_mask"}, {"vocab", r.vocab}, {"masks", r.masks},
                                {"repeats", o->repeat}, {"mean_allowed", r.mean_allowed},
                                {"ms_per_mask", r.ms_per_mask}, {"max_ms_per_mask", r.max_ms_per_mask},
                                {"build_ms", r.build_ms},
                                {"threads", omp_get_max_threads()}};
            if (o->json) std::printf("%s\n", j.dump(2).c_str());
            else
                std::printf("JSON mode mask over %lld ids: %.3f ms per token choice (slowest %.3f ms), %.0f ids "
                            "allowed on average, over %lld choices; tables set up in %.1f ms\n",
                            (long long)r.vocab, r.ms_per_mask, r.max_ms_per_mask, r.mean_allowed, (long long)r.masks,
                            r.build_ms);
            return;
        }
        if (o->lookup && o->mtp.empty())
            throw Error(ErrorCode::BadRequest, "bench --lookup compares generation with and without looked-up "
                                               "drafts: give --mtp on, off or both");
        if (o->format == "json" && o->mtp.empty())
            throw Error(ErrorCode::BadRequest, "bench --format json compares generation with and without JSON mode: "
                                               "give --mtp on, off or both");
        if (o->tokenizer) {
            if (o->model.empty() || o->text_file.empty())
                throw Error(ErrorCode::BadRequest, "bench --tokenizer needs --model DIR and --text-file F");
            if (int rc = run_tokenizer_bench(o->model, o->text_file, o->json); rc != 0) throw CLI::RuntimeError(rc);
            return;
        }
        const int64_t ctx = o->conversations > 0 ? o->prompt + int64_t(o->repeat) * (o->followup + 1) + 2
                                                 : o->prompt + o->gen + o->followup;
        // --restart without --prefix-cache: a folder of its own, removed afterwards.
        std::filesystem::path temp_dir;
        if (o->restart && o->load.prefix_cache.empty()) {
            temp_dir = std::filesystem::temp_directory_path() / ("cetus-bench-prefixes-" + std::to_string(::getpid()));
            o->load.prefix_cache = temp_dir.string();
        }
        struct RemoveDir {
            std::filesystem::path dir;
            ~RemoveDir() {
                std::error_code ec;
                if (!dir.empty()) std::filesystem::remove_all(dir, ec);
            }
        } remove_temp{temp_dir};
        std::unique_ptr<Engine> e;
        const auto load_start = std::chrono::steady_clock::now();
        if (!o->random.empty()) {
            EngineOptions eo;
            o->load.apply(eo);  // --fp8 is refused: a random model takes --dtype fp8
            eo.device = parse_device(o->device);
            eo.n_threads = o->threads;
            eo.max_context = ctx;
            RandomModelOptions ro;
            ro.preset = o->random;
            ro.dtype = o->dtype;
            ro.n_layers = o->layers;
            e = Engine::create_random(ro, eo);
        } else {
            if (o->model.empty()) throw Error(ErrorCode::BadRequest, "bench needs --model DIR or --random-model PRESET");
            e = load_engine(o->model, o->device, o->threads, ctx, o->load);
        }
        // Opening the files, expanding what needs it (GGUF blocks, --fp8), uploading to a GPU.
        const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
        BenchOptions bo;
        bo.n_prompt = o->prompt;
        bo.n_gen = o->gen;
        bo.n_followup = o->followup;
        bo.repeats = o->repeat;
        bo.lookup = o->lookup;
        if (o->draft <= 0) o->draft = o->lookup ? k_lookup_default_drafts : 1;
        const ModelInfo& i = e->info();
        if (o->restart) {
            const RestartBenchResult r = run_restart_bench(*e, bo);
            const double speedup = r.first_token_ms_prefill / std::max(1e-9, r.first_token_ms_disk);
            nlohmann::json j = {{"model", i.name}, {"backend", i.backend}, {"device", i.device},
                                {"threads", omp_get_max_threads()}, {"kv_cache_type", i.kv_cache_type},
                                {"prompt_tokens", o->prompt}, {"followup_tokens", o->followup},
                                {"repeats", r.repeats}, {"first_token_ms_disk", r.first_token_ms_disk},
                                {"first_token_ms_prefill", r.first_token_ms_prefill}, {"speedup", speedup},
                                {"write_ms", r.write_ms}, {"file_bytes", r.file_bytes},
                                {"reused_share", r.reused_share}, {"peak_rss_bytes", peak_rss_bytes()}};
            if (o->json) std::printf("%s\n", j.dump(2).c_str());
            else
                std::printf("time to first token after a restart: %.1f ms with the prefix's file (%.1f MiB, written "
                            "in %.1f ms), %.1f ms with a full prefill (%.1fx); %.0f%% of prompt tokens reused\n",
                            r.first_token_ms_disk, double(r.file_bytes) / double(1 << 20), r.write_ms,
                            r.first_token_ms_prefill, speedup, 100 * r.reused_share);
            return;
        }
        if (o->conversations > 0) {
            // Without the store, its disk tier would still keep the conversations: not a comparison.
            if (!o->load.prefix_cache.empty())
                throw Error(ErrorCode::BadRequest, "bench --conversations compares the prefix store with none; "
                                                   "leave out --prefix-cache");
            const SwitchBenchResult sw = run_switch_bench(*e, bo, o->conversations, EngineOptions{}.prefix_store_bytes);
            nlohmann::json j = {{"model", i.name}, {"backend", i.backend}, {"device", i.device},
                                {"threads", omp_get_max_threads()}, {"kv_cache_type", i.kv_cache_type},
                                {"conversations", o->conversations}, {"prompt_tokens", o->prompt},
                                {"followup_tokens", o->followup}, {"rounds", o->repeat}, {"turns", sw.turns},
                                {"first_token_ms_store", sw.first_token_ms_store},
                                {"first_token_ms_no_store", sw.first_token_ms_no_store},
                                {"speedup", sw.first_token_ms_no_store / std::max(1e-9, sw.first_token_ms_store)},
                                {"reused_share_store", sw.reused_share_store},
                                {"reused_share_no_store", sw.reused_share_no_store},
                                {"peak_rss_bytes", peak_rss_bytes()}};
            if (o->json) std::printf("%s\n", j.dump(2).c_str());
            else
                std::printf("time to first token after a switch: %.1f ms with the prefix store, %.1f ms without "
                            "(%.1fx); %.0f%% / %.0f%% of prompt tokens reused\n",
                            sw.first_token_ms_store, sw.first_token_ms_no_store,
                            sw.first_token_ms_no_store / std::max(1e-9, sw.first_token_ms_store),
                            100 * sw.reused_share_store, 100 * sw.reused_share_no_store);
            return;
        }
        if (!o->mtp.empty()) {
            if (!o->prompts_file.empty()) {
                std::ifstream in(o->prompts_file);
                if (!in) throw Error(ErrorCode::Io, o->prompts_file + ": cannot open");
                for (std::string line; std::getline(in, line);)
                    if (!line.empty()) bo.chat_prompts.push_back(line);
            } else if (e->tokenizer()) {
                bo.chat_prompts = default_bench_prompts();
            }
            auto one = [&](bool on) {
                GenerationBenchResult g = run_generation_bench(*e, bo, on, o->draft);
                nlohmann::json j{{"mtp", on},
                                 {"drafts", on ? (o->lookup ? "lookup" : "mtp") : "none"},
                                 {"n_draft", g.n_draft},
                                 {"prefill_tokens_per_s", g.prefill_tokens_per_s},
                                 {"decode_tokens_per_s", g.decode_tokens_per_s},
                                 {"acceptance_rate", g.acceptance_rate},
                                 {"mean_accepted_length", g.mean_accepted_length},
                                 {"generated_tokens", g.generated_tokens}};
                // The same generation with an option on (log-probabilities, JSON mode): what it
                // costs. In the order without, with, with, without, each pair averaged, so that
                // a machine speeding up or slowing down during the run favours neither.
                auto beside = [&](const BenchOptions& with, nlohmann::json extra) {
                    const GenerationBenchResult l1 = run_generation_bench(*e, with, on, o->draft);
                    const GenerationBenchResult l2 = run_generation_bench(*e, with, on, o->draft);
                    const GenerationBenchResult g2 = run_generation_bench(*e, bo, on, o->draft);
                    const double plain = (g.decode_tokens_per_s + g2.decode_tokens_per_s) / 2;
                    const double asked = (l1.decode_tokens_per_s + l2.decode_tokens_per_s) / 2;
                    extra["decode_tokens_per_s"] = asked;
                    extra["generated_tokens"] = l1.generated_tokens;
                    extra["acceptance_rate"] = l1.acceptance_rate;
                    extra["decode_ratio"] = asked / std::max(1e-9, plain);
                    return std::pair{plain, extra};
                };
                if (o->logprobs >= 0) {
                    BenchOptions with = bo;
                    with.logprobs = o->logprobs;
                    auto [plain, extra] = beside(with, {{"top_logprobs", o->logprobs}});
                    j["decode_tokens_per_s"] = plain;
                    j["with_logprobs"] = extra;
                }
                if (o->format == "json") {
                    BenchOptions with = bo;
                    with.response_format = ResponseFormat::JsonObject;
                    auto [plain, extra] = beside(with, nlohmann::json::object());
                    j["with_json_mode"] = extra;
                    if (o->logprobs < 0) j["decode_tokens_per_s"] = plain;
                }
                return j;
            };
            nlohmann::json j = {{"model", i.name}, {"backend", i.backend}, {"device", i.device},
                                {"threads", omp_get_max_threads()},
                                {"chat_prompts", bo.chat_prompts.size()},
                                {"mtp_layers", i.n_mtp_layers}, {"kv_cache_type", i.kv_cache_type},
                                {"prompt_tokens", o->prompt},
                                {"gen_tokens", o->gen}, {"repeats", o->repeat}};
            if (o->mtp == "off" || o->mtp == "both") j["mtp_off"] = one(false);
            if (o->mtp == "on" || o->mtp == "both") j["mtp_on"] = one(true);
            if (o->mtp == "both")
                j["speedup"] = j["mtp_on"]["decode_tokens_per_s"].get<double>() /
                               std::max(1e-9, j["mtp_off"]["decode_tokens_per_s"].get<double>());
            j["peak_rss_bytes"] = peak_rss_bytes();
            if (const StepTuning& t = e->step_tuning(); t.ran || !t.note.empty()) j["step_tuning"] = step_tuning_json(t);
            if (o->json) {
                std::printf("%s\n", j.dump(2).c_str());
            } else {
                for (const char* k : {"mtp_off", "mtp_on"})
                    if (j.contains(k))
                        std::printf("%s: decode %.2f tok/s, acceptance %.1f%%, %.2f tokens per step\n", k,
                                    j[k]["decode_tokens_per_s"].get<double>(),
                                    100 * j[k]["acceptance_rate"].get<double>(),
                                    j[k]["mean_accepted_length"].get<double>());
                if (j.contains("speedup")) std::printf("speedup %.2fx\n", j["speedup"].get<double>());
            }
            return;
        }
        BenchResult r = run_bench(*e, bo);
        nlohmann::json j = {{"model", i.name},
                            {"backend", i.backend},
                            {"device", i.device},
                            {"threads", omp_get_max_threads()},
                            {"weights", i.weight_dtype},
                            {"load_s", load_s},
                            {"shape", {{"layers", i.n_layers}, {"hidden", i.hidden_size}, {"heads", i.n_heads},
                                       {"routed_experts", i.n_routed_experts}, {"active_experts", i.n_active_experts},
                                       {"params_total", i.n_params_total}, {"params_active", i.n_params_active}}},
                            {"prompt_tokens", o->prompt},
                            {"gen_tokens", o->gen},
                            {"repeats", r.repeats},
                            {"prefill_tokens_per_s", r.prefill_tokens_per_s},
                            {"decode_tokens_per_s", r.decode_tokens_per_s},
                            {"prefill_ms", r.prefill_ms},
                            {"decode_ms_per_token", r.decode_ms_per_token},
                            {"followup_tokens", o->followup},
                            {"followup_tokens_per_s", r.followup_tokens_per_s},
                            {"followup_ms", r.followup_ms},
                            {"kv_cache_type", i.kv_cache_type},
                            {"kv_cache_bytes", r.kv_cache_bytes},
                            {"decode_bytes_per_token", r.decode_bytes_per_token},
                            {"decode_bandwidth_gbs", r.decode_bandwidth_gbs},
                            {"device_copy_bandwidth_gbs", r.device_copy_bandwidth_gbs},
                            {"bandwidth_fraction", r.bandwidth_fraction},
                            {"prefill_flops_per_token", r.prefill_flops_per_token},
                            {"prefill_tflops", r.prefill_tflops},
                            {"device_peak_bf16_tflops", r.device_peak_tflops},
                            {"compute_fraction", r.compute_fraction},
                            {"peak_rss_bytes", peak_rss_bytes()}};
        if (const StepTuning& t = e->step_tuning(); t.ran || !t.note.empty()) j["step_tuning"] = step_tuning_json(t);
        if (o->json) {
            std::printf("%s\n", j.dump(2).c_str());
        } else {
            std::printf("%s on %s: loaded in %.2f s, prefill %.1f tok/s (%lld tokens), decode %.2f tok/s, peak RSS %.0f MiB\n",
                        i.name.c_str(), i.backend.c_str(), load_s, r.prefill_tokens_per_s, (long long)o->prompt,
                        r.decode_tokens_per_s, double(peak_rss_bytes()) / 1048576.0);
            if (o->followup > 0)
                std::printf("follow-up: %lld tokens after %lld in %.1f ms (%.1f tok/s)\n", (long long)o->followup,
                            (long long)(o->prompt + o->gen), r.followup_ms, r.followup_tokens_per_s);
            std::printf("decode reads %.1f MiB per token: %.1f GB/s", r.decode_bytes_per_token / 1048576.0,
                        r.decode_bandwidth_gbs);
            if (r.bandwidth_fraction > 0)
                std::printf(" = %.1f%% of the measured %.0f GB/s", 100 * r.bandwidth_fraction, r.device_copy_bandwidth_gbs);
            std::printf("; prefill %.2f TFLOP/s", r.prefill_tflops);
            if (r.compute_fraction > 0)
                std::printf(" = %.1f%% of the measured bf16 peak %.0f TFLOP/s", 100 * r.compute_fraction, r.device_peak_tflops);
            std::printf("\n");
            if (const StepTuning& t = e->step_tuning(); t.ran || !t.note.empty()) {
                for (const StepTrial& x : t.trials)
                    std::printf("step tuning: %-40s %8.3f ms a step, logits %.2g from as built%s\n", x.setting.c_str(),
                                x.step_ms, x.logit_error, x.valid ? "" : " (beyond the bound: not timed)");
                if (t.ran)
                    std::printf("step tuning: %s (%.3f ms a step against %.3f as built)\n", t.note.c_str(),
                                t.chosen_ms, t.built_ms);
                else
                    std::printf("step tuning: %s\n", t.note.c_str());
            }
        }
    });
}

}  // namespace cetus::cli
