// cetus-cli bench: prefill and decode tokens/s and peak memory, on a model
// folder or a random model of a published shape, as JSON or text.
// Other benchmark modes (--tokenizer, ...) dispatch from here to their files.
#include "cli_util.h"
#include "commands.h"

#include "cetus/bench.h"

#include <nlohmann/json.hpp>

#include <omp.h>

#include <cstdio>

namespace cetus::cli {

void add_bench_command(CLI::App& app) {
    auto* cmd = app.add_subcommand("bench", "Benchmark prefill and decode (JSON with --json)");
    struct Opts {
        std::string model, random, device = "cpu", dtype = "bf16";
        int64_t prompt = 128, gen = 32, layers = 0;
        int repeat = 3, threads = 0;
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    auto* m = cmd->add_option("--model", o->model, "Model folder");
    cmd->add_option("--random-model", o->random, "Random model preset: tiny, medium-cpu, v2-lite, v3-layers")
        ->excludes(m);
    cmd->add_option("--dtype", o->dtype, "Random model weights: bf16 or fp8");
    cmd->add_option("--layers", o->layers, "Random model: override the number of layers");
    cmd->add_option("--device", o->device, "auto, cpu or cuda");
    cmd->add_option("--prompt", o->prompt, "Prompt tokens");
    cmd->add_option("--gen", o->gen, "Generated tokens");
    cmd->add_option("--repeat", o->repeat, "Measured repeats after one warm-up (median reported)");
    cmd->add_option("--threads", o->threads, "CPU threads (default: all)");
    cmd->add_flag("--json", o->json, "JSON output");
    cmd->callback([o] {
        const int64_t ctx = o->prompt + o->gen;
        std::unique_ptr<Engine> e;
        if (!o->random.empty()) {
            EngineOptions eo;
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
            e = load_engine(o->model, o->device, o->threads, ctx);
        }
        BenchOptions bo;
        bo.n_prompt = o->prompt;
        bo.n_gen = o->gen;
        bo.repeats = o->repeat;
        BenchResult r = run_bench(*e, bo);
        const ModelInfo& i = e->info();
        nlohmann::json j = {{"model", i.name},
                            {"backend", i.backend},
                            {"threads", omp_get_max_threads()},
                            {"weights", i.weight_dtype},
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
                            {"kv_cache_bytes", r.kv_cache_bytes},
                            {"peak_rss_bytes", peak_rss_bytes()}};
        if (o->json) {
            std::printf("%s\n", j.dump(2).c_str());
        } else {
            std::printf("%s on %s: prefill %.1f tok/s (%lld tokens), decode %.2f tok/s, peak RSS %.0f MiB\n",
                        i.name.c_str(), i.backend.c_str(), r.prefill_tokens_per_s, (long long)o->prompt,
                        r.decode_tokens_per_s, double(peak_rss_bytes()) / 1048576.0);
        }
    });
}

}  // namespace cetus::cli
