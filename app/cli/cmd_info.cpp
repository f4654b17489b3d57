// cetus-cli info: what a model folder holds, its parameter counts and the
// latent cache per token against standard attention and GQA-8.
#include "cli_util.h"
#include "commands.h"

#include <nlohmann/json.hpp>

#include <cstdio>

namespace cetus::cli {

static nlohmann::json info_json(const ModelInfo& i) {
    return {{"name", i.name},
            {"model_type", i.model_type},
            {"backend", i.backend},
            {"device", i.device},
            {"weights", i.weight_dtype},
            {"layers", i.n_layers},
            {"moe_layers", i.n_moe_layers},
            {"dense_layers", i.n_layers - i.n_moe_layers},
            {"mtp_layers", i.n_mtp_layers},
            {"hidden_size", i.hidden_size},
            {"heads", i.n_heads},
            {"vocab_size", i.vocab_size},
            {"q_lora_rank", i.q_lora_rank},
            {"kv_lora_rank", i.kv_lora_rank},
            {"routed_experts", i.n_routed_experts},
            {"shared_experts", i.n_shared_experts},
            {"active_experts", i.n_active_experts},
            {"routing", i.routing},
            {"params_total", i.n_params_total},
            {"params_active", i.n_params_active},
            {"params_mtp", i.n_params_mtp},
            {"max_position_embeddings", i.max_position_embeddings},
            {"context", i.context_length},
            {"kv_bytes_per_token", {{"mla", i.kv_bytes_per_token_mla}, {"mha", i.kv_bytes_per_token_mha},
                                    {"gqa8", i.kv_bytes_per_token_gqa8}, {"held", i.kv_bytes_per_token_held}}},
            {"kv_cache_type", i.kv_cache_type}};
}

static std::string human(double bytes) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024.0 && u < 4) {
        bytes /= 1024.0;
        ++u;
    }
    char buf[64];
    std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
    return buf;
}

// A parameter count as people write it: 15.71 B, 3.23 M, 540 K.
static std::string count_text(uint64_t n) {
    char buf[32];
    if (n >= 1000000000) std::snprintf(buf, sizeof buf, "%.2f B", double(n) / 1e9);
    else if (n >= 1000000) std::snprintf(buf, sizeof buf, "%.2f M", double(n) / 1e6);
    else std::snprintf(buf, sizeof buf, "%.1f K", double(n) / 1e3);
    return buf;
}

void add_info_command(CLI::App& app) {
    auto* cmd = app.add_subcommand("info", "Describe a model: architecture, experts, parameters, KV cache per token");
    struct Opts {
        LoadFlags load;
        std::string model, random, device = "cpu";
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    auto* m = cmd->add_option("--model", o->model, "Model folder (config.json + safetensors) or .gguf file (default: the bundled model)");
    cmd->add_option("--random-model", o->random, "A random model preset instead of a folder")->excludes(m);
    cmd->add_option("--device", o->device, "auto, cpu or cuda");
    add_load_flags(cmd, o->load);
    cmd->add_flag("--json", o->json, "JSON output");
    cmd->callback([o] {
        std::unique_ptr<Engine> e;
        if (!o->random.empty()) {
            EngineOptions eo;
            o->load.apply(eo);  // --fp8 is refused: a random model takes --dtype fp8
            eo.device = parse_device(o->device);
            e = Engine::create_random({o->random}, eo);
        } else {
            e = load_engine(model_or_bundled(o->model), o->device, 0, 4096, o->load);
        }
        const ModelInfo& i = e->info();
        if (o->json) {
            std::printf("%s\n", info_json(i).dump(2).c_str());
            return;
        }
        std::printf("model         %s (%s)\n", i.name.c_str(), i.model_type.c_str());
        std::printf("layers        %lld (%lld dense, %lld MoE) + %lld MTP\n", (long long)i.n_layers,
                    (long long)(i.n_layers - i.n_moe_layers), (long long)i.n_moe_layers, (long long)i.n_mtp_layers);
        std::printf("attention     MLA, %lld heads, q_lora_rank %s, kv_lora_rank %lld, rope dim %lld\n",
                    (long long)i.n_heads, i.q_lora_rank ? std::to_string(i.q_lora_rank).c_str() : "none",
                    (long long)i.kv_lora_rank, (long long)i.qk_rope_head_dim);
        std::printf("experts       %lld routed, %lld shared, %lld active per token (%s)\n",
                    (long long)i.n_routed_experts, (long long)i.n_shared_experts, (long long)i.n_active_experts,
                    i.routing.c_str());
        std::printf("parameters    %s total, %s active per token, MTP %s\n", count_text(i.n_params_total).c_str(),
                    count_text(i.n_params_active).c_str(), count_text(i.n_params_mtp).c_str());
        std::printf("weights       %s, %s\n", i.weight_dtype.c_str(), human(double(i.weight_bytes)).c_str());
        std::printf("context       %lld (model maximum %lld)\n", (long long)i.context_length,
                    (long long)i.max_position_embeddings);
        std::printf("KV per token  MLA %s | standard MHA %s | GQA-8 %s (BF16; MLA is %.1f%% of MHA, %.1f%% of GQA-8)\n",
                    human(double(i.kv_bytes_per_token_mla)).c_str(), human(double(i.kv_bytes_per_token_mha)).c_str(),
                    human(double(i.kv_bytes_per_token_gqa8)).c_str(),
                    100.0 * double(i.kv_bytes_per_token_mla) / double(i.kv_bytes_per_token_mha),
                    100.0 * double(i.kv_bytes_per_token_mla) / double(i.kv_bytes_per_token_gqa8));
        std::printf("cache held    %s per token (%s, MTP layers included), %s for the context\n",
                    human(double(i.kv_bytes_per_token_held)).c_str(), i.kv_cache_type.c_str(),
                    human(double(i.kv_bytes_per_token_held) * double(i.context_length)).c_str());
    });
}

}  // namespace cetus::cli
