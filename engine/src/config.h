// ModelConfig: the fields of a DeepSeek-family config.json the engine uses, read
// with their exact key names, validated once at load (ranges and consistency);
// everything after load trusts these values.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace cetus {

enum class ScoringFunc { Softmax, Sigmoid };
enum class TopkMethod { Greedy, GroupLimitedGreedy, NoauxTc };

struct RopeScaling {
    bool yarn = false;
    double factor = 1.0;
    int64_t original_max_position_embeddings = 0;
    double beta_fast = 32.0;
    double beta_slow = 1.0;
    double mscale = 0.0;          // 0 when absent
    double mscale_all_dim = 0.0;  // 0 when absent
    std::optional<double> attention_factor;
};

struct ModelConfig {
    std::string model_type;  // deepseek_v2 | deepseek_v3
    int64_t vocab_size = 0;
    int64_t hidden_size = 0;
    int64_t intermediate_size = 0;
    int64_t moe_intermediate_size = 0;
    int64_t num_hidden_layers = 0;
    int64_t num_attention_heads = 0;
    int64_t q_lora_rank = 0;  // 0 when null: queries come from q_proj
    int64_t kv_lora_rank = 0;
    int64_t qk_nope_head_dim = 0;
    int64_t qk_rope_head_dim = 0;
    int64_t v_head_dim = 0;
    int64_t n_routed_experts = 0;  // 0: dense model
    int64_t n_shared_experts = 0;
    int64_t num_experts_per_tok = 0;
    int64_t n_group = 1;
    int64_t topk_group = 1;
    TopkMethod topk_method = TopkMethod::Greedy;
    ScoringFunc scoring_func = ScoringFunc::Softmax;
    bool norm_topk_prob = false;
    double routed_scaling_factor = 1.0;
    int64_t first_k_dense_replace = 0;
    int64_t moe_layer_freq = 1;
    int64_t num_nextn_predict_layers = 0;
    double rope_theta = 10000.0;
    RopeScaling rope_scaling;
    bool rope_interleave = true;
    double rms_norm_eps = 1e-6;
    int64_t max_position_embeddings = 0;
    bool tie_word_embeddings = false;
    int64_t bos_token_id = -1;
    int64_t eos_token_id = -1;
    bool fp8_block_quantised = false;  // quantization_config says fp8 e4m3 128x128

    int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
    bool is_moe_layer(int64_t layer) const {
        return n_routed_experts > 0 && layer >= first_k_dense_replace &&
               layer % moe_layer_freq == 0;
    }
    int64_t n_moe_layers() const;
    // Softmax scale of attention logits (architecture doc section 4.4).
    double softmax_scale() const;
};

// Parses and validates; `source` names the file in error messages.
// Throws cetus::Error(BadFormat | BadConfig | Unsupported).
ModelConfig parse_config(const std::string& json_text, const std::string& source);
ModelConfig load_config(const std::filesystem::path& model_dir);

}  // namespace cetus
