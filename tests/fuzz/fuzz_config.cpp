// libFuzzer target for config.json parsing and validation (parse_config). An
// accepted config is also fed to what load derives from it first (RoPE tables,
// softmax scale, MoE layer count), which must then be finite and in range.
// cetus::Error is the expected answer to bad input; anything else escaping or a
// sanitizer report is a finding.
#include "cetus/error.h"
#include "config.h"
#include "rope.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const std::string text(reinterpret_cast<const char*>(data), size);
        const cetus::ModelConfig c = cetus::parse_config(text, "fuzz/config.json");
        const int64_t n_moe = c.n_moe_layers();
        if (n_moe < 0 || n_moe > c.num_hidden_layers) __builtin_trap();
        if (c.num_experts_per_tok > c.n_routed_experts || c.topk_group > c.n_group)
            __builtin_trap();
        if (c.n_routed_experts > 0 && c.n_routed_experts % c.n_group != 0) __builtin_trap();
        if (c.qk_rope_head_dim % 2 != 0 || !std::isfinite(c.softmax_scale())) __builtin_trap();
        cetus::Rope rope(c);
        for (float f : rope.inv_freq())
            if (!std::isfinite(f)) __builtin_trap();
        if (!std::isfinite(rope.attention_factor())) __builtin_trap();
    } catch (const cetus::Error&) {
    } catch (const nlohmann::json::exception&) {
    }
    return 0;
}
