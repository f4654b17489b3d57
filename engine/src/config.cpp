// config.json -> ModelConfig. Every field is type- and range-checked, then the
// fields are checked against each other, so later code can trust them.
#include "config.h"

#include "gguf.h"

#include "cetus/error.h"
#include "json_util.h"

#include <cmath>
#include <fstream>
#include <sstream>

namespace cetus {
namespace {

using nlohmann::json;

// Upper bounds far above every released model; they keep products of
// dimensions inside int64 and reject hostile files early.
constexpr int64_t k_max_layers = 512;
constexpr int64_t k_max_dim = 1 << 17;
constexpr int64_t k_max_vocab = 1 << 22;
constexpr int64_t k_max_experts = 4096;
constexpr int64_t k_max_heads = 1024;
constexpr int64_t k_max_positions = int64_t(1) << 24;

class Reader {
public:
    Reader(const json& j, const std::string& source) : m_j(j), m_source(source) {}

    [[noreturn]] void fail(const std::string& key, const std::string& what) const {
        throw Error(ErrorCode::BadConfig, m_source + ": \"" + key + "\" " + what);
    }
    bool has(const std::string& key) const { return m_j.contains(key) && !m_j.at(key).is_null(); }

    int64_t integer(const std::string& key, int64_t lo, int64_t hi) const {
        if (!m_j.contains(key)) fail(key, "is missing");
        return integer_value(key, m_j.at(key), lo, hi);
    }
    int64_t integer_or(const std::string& key, int64_t fallback, int64_t lo, int64_t hi) const {
        return has(key) ? integer_value(key, m_j.at(key), lo, hi) : fallback;
    }
    double number_or(const std::string& key, double fallback, double lo, double hi) const {
        if (!has(key)) return fallback;
        return number_value(key, m_j.at(key), lo, hi);
    }
    bool boolean_or(const std::string& key, bool fallback) const {
        if (!has(key)) return fallback;
        const json& v = m_j.at(key);
        if (!v.is_boolean()) fail(key, "must be true or false");
        return v.get<bool>();
    }
    std::string string_or(const std::string& key, const std::string& fallback) const {
        if (!has(key)) return fallback;
        const json& v = m_j.at(key);
        if (!v.is_string()) fail(key, "must be a string");
        return v.get<std::string>();
    }

    int64_t integer_value(const std::string& key, const json& v, int64_t lo, int64_t hi) const {
        int64_t x = 0;
        if (v.is_number_integer()) {
            if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX))
                fail(key, "is out of range");
            x = v.get<int64_t>();
        } else if (v.is_number_float() && std::isfinite(v.get<double>()) &&
                   std::floor(v.get<double>()) == v.get<double>() &&
                   std::fabs(v.get<double>()) < 9.0e15) {
            x = int64_t(v.get<double>());
        } else {
            fail(key, "must be an integer");
        }
        if (x < lo || x > hi)
            fail(key, "= " + std::to_string(x) + " is outside [" + std::to_string(lo) + ", " +
                          std::to_string(hi) + "]");
        return x;
    }
    double number_value(const std::string& key, const json& v, double lo, double hi) const {
        if (!v.is_number()) fail(key, "must be a number");
        double x = v.get<double>();
        if (!std::isfinite(x) || x < lo || x > hi) {
            std::ostringstream os;
            os << "= " << x << " is outside [" << lo << ", " << hi << "]";
            fail(key, os.str());
        }
        return x;
    }

private:
    const json& m_j;
    std::string m_source;
};

RopeScaling parse_rope_scaling(const json& r, const std::string& source) {
    RopeScaling s;
    if (!r.is_object()) throw Error(ErrorCode::BadConfig, source + ": \"rope_scaling\" must be an object");
    Reader rd(r, source + " (rope_scaling)");
    std::string type = rd.string_or("rope_type", rd.string_or("type", "default"));
    if (type == "default" || type == "none") return s;
    if (type != "yarn")
        throw Error(ErrorCode::Unsupported, source + ": rope scaling type \"" + type +
                                                "\" is not supported (only yarn)");
    s.yarn = true;
    s.factor = rd.number_or("factor", 1.0, 1.0, 1e6);
    s.original_max_position_embeddings =
        rd.integer("original_max_position_embeddings", 1, k_max_positions);
    s.beta_fast = rd.number_or("beta_fast", 32.0, 1e-6, 1e6);
    s.beta_slow = rd.number_or("beta_slow", 1.0, 1e-6, 1e6);
    s.mscale = rd.number_or("mscale", 0.0, 0.0, 1e3);
    s.mscale_all_dim = rd.number_or("mscale_all_dim", 0.0, 0.0, 1e3);
    if (rd.has("attention_factor")) s.attention_factor = rd.number_or("attention_factor", 1.0, 0.0, 1e3);
    return s;
}

}  // namespace

int64_t ModelConfig::n_moe_layers() const {
    int64_t n = 0;
    for (int64_t l = 0; l < num_hidden_layers; ++l) n += is_moe_layer(l) ? 1 : 0;
    return n;
}

static double yarn_get_mscale(double scale, double mscale) {
    return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

double ModelConfig::softmax_scale() const {
    double scale = 1.0 / std::sqrt(double(qk_head_dim()));
    if (rope_scaling.yarn && rope_scaling.mscale_all_dim != 0.0) {
        double m = yarn_get_mscale(rope_scaling.factor, rope_scaling.mscale_all_dim);
        scale *= m * m;
    }
    return scale;
}

ModelConfig parse_config(const std::string& text, const std::string& source) {
    json j = parse_json_strict(text, source);
    if (!j.is_object()) throw Error(ErrorCode::BadConfig, source + ": top level must be an object");
    Reader rd(j, source);
    ModelConfig c;

    c.model_type = rd.string_or("model_type", "");
    if (c.model_type != "deepseek_v2" && c.model_type != "deepseek_v3")
        throw Error(ErrorCode::Unsupported,
                    source + ": model_type \"" + c.model_type +
                        "\" is not a DeepSeek architecture (expected deepseek_v2 or deepseek_v3)");
    const bool v3 = c.model_type == "deepseek_v3";

    c.vocab_size = rd.integer("vocab_size", 1, k_max_vocab);
    c.hidden_size = rd.integer("hidden_size", 1, k_max_dim);
    c.num_hidden_layers = rd.integer("num_hidden_layers", 1, k_max_layers);
    c.num_attention_heads = rd.integer("num_attention_heads", 1, k_max_heads);
    if (rd.has("num_key_value_heads")) rd.integer("num_key_value_heads", 1, k_max_heads);
    c.q_lora_rank = rd.integer_or("q_lora_rank", 0, 0, k_max_dim);
    c.kv_lora_rank = rd.integer("kv_lora_rank", 1, k_max_dim);
    c.qk_nope_head_dim = rd.integer("qk_nope_head_dim", 0, k_max_dim);
    c.qk_rope_head_dim = rd.integer("qk_rope_head_dim", 2, 4096);
    if (c.qk_rope_head_dim % 2 != 0)
        rd.fail("qk_rope_head_dim", "must be even (RoPE rotates channel pairs)");
    c.v_head_dim = rd.integer("v_head_dim", 1, k_max_dim);
    c.intermediate_size = rd.integer_or("intermediate_size", 0, 0, k_max_dim * 4);
    c.first_k_dense_replace = rd.integer_or("first_k_dense_replace", 0, 0, k_max_layers);
    c.moe_layer_freq = rd.integer_or("moe_layer_freq", 1, 1, k_max_layers);
    if (c.moe_layer_freq != 1)
        throw Error(ErrorCode::Unsupported, source + ": moe_layer_freq = " +
                                                std::to_string(c.moe_layer_freq) +
                                                " is not supported (every released model uses 1)");

    c.n_routed_experts = rd.integer_or("n_routed_experts", 0, 0, k_max_experts);
    if (c.n_routed_experts > 0) {
        c.moe_intermediate_size = rd.integer("moe_intermediate_size", 1, k_max_dim * 4);
        c.n_shared_experts = rd.integer_or("n_shared_experts", 0, 0, 64);
        c.num_experts_per_tok = rd.integer("num_experts_per_tok", 1, k_max_experts);
        if (c.num_experts_per_tok > c.n_routed_experts)
            rd.fail("num_experts_per_tok", "= " + std::to_string(c.num_experts_per_tok) +
                                               " exceeds n_routed_experts = " +
                                               std::to_string(c.n_routed_experts));
        c.n_group = rd.integer_or("n_group", 1, 1, k_max_experts);
        c.topk_group = rd.integer_or("topk_group", c.n_group, 1, k_max_experts);
        if (c.n_routed_experts % c.n_group != 0)
            rd.fail("n_group", "= " + std::to_string(c.n_group) + " does not divide n_routed_experts = " +
                                   std::to_string(c.n_routed_experts));
        if (c.topk_group > c.n_group)
            rd.fail("topk_group", "= " + std::to_string(c.topk_group) + " exceeds n_group = " +
                                      std::to_string(c.n_group));
        std::string scoring = rd.string_or("scoring_func", v3 ? "sigmoid" : "softmax");
        std::string method = rd.string_or("topk_method", v3 ? "noaux_tc" : "greedy");
        if (scoring == "softmax" && method == "greedy") {
            c.scoring_func = ScoringFunc::Softmax;
            c.topk_method = TopkMethod::Greedy;
        } else if (scoring == "softmax" && method == "group_limited_greedy") {
            c.scoring_func = ScoringFunc::Softmax;
            c.topk_method = TopkMethod::GroupLimitedGreedy;
        } else if (scoring == "sigmoid" && method == "noaux_tc") {
            c.scoring_func = ScoringFunc::Sigmoid;
            c.topk_method = TopkMethod::NoauxTc;
        } else {
            throw Error(ErrorCode::Unsupported, source + ": routing scoring_func \"" + scoring +
                                                    "\" with topk_method \"" + method +
                                                    "\" is not supported");
        }
        if (c.topk_method != TopkMethod::Greedy) {
            int64_t per_group = c.n_routed_experts / c.n_group;
            if (c.num_experts_per_tok > c.topk_group * per_group)
                rd.fail("num_experts_per_tok", "exceeds the experts of the topk_group kept groups");
            if (c.topk_method == TopkMethod::NoauxTc && c.n_group > 1 && per_group < 2)
                rd.fail("n_group", "leaves fewer than 2 experts per group (noaux_tc sums the top 2)");
        }
        c.norm_topk_prob = rd.boolean_or("norm_topk_prob", false);
        c.routed_scaling_factor = rd.number_or("routed_scaling_factor", 1.0, 0.0, 1e4);
    }
    bool any_dense = c.n_routed_experts == 0 || c.first_k_dense_replace > 0;
    if (any_dense && c.intermediate_size <= 0) rd.fail("intermediate_size", "is missing");

    c.num_nextn_predict_layers = rd.integer_or("num_nextn_predict_layers", 0, 0, 8);
    if (c.num_hidden_layers + c.num_nextn_predict_layers > k_max_layers)
        rd.fail("num_nextn_predict_layers", "makes too many layers");

    // Newer transformers write rope_parameters (with rope_theta inside) instead
    // of rope_scaling + rope_theta; accept both spellings.
    c.rope_theta = rd.number_or("rope_theta", 10000.0, 1e-3, 1e12);
    if (rd.has("rope_scaling")) {
        c.rope_scaling = parse_rope_scaling(j.at("rope_scaling"), source);
    } else if (rd.has("rope_parameters")) {
        const json& rp = j.at("rope_parameters");
        c.rope_scaling = parse_rope_scaling(rp, source);
        Reader rr(rp, source + " (rope_parameters)");
        c.rope_theta = rr.number_or("rope_theta", c.rope_theta, 1e-3, 1e12);
    }
    // YaRN divides by log(rope_theta), and a base <= 1 has no decaying frequencies.
    if (c.rope_theta <= 1.0) rd.fail("rope_theta", "must be greater than 1");
    c.rope_interleave = rd.boolean_or("rope_interleave", true);
    c.rms_norm_eps = rd.number_or("rms_norm_eps", 1e-6, 0.0, 1.0);
    c.max_position_embeddings = rd.integer_or("max_position_embeddings", 4096, 1, k_max_positions);
    c.tie_word_embeddings = rd.boolean_or("tie_word_embeddings", false);
    c.bos_token_id = rd.integer_or("bos_token_id", -1, -1, c.vocab_size - 1);
    if (rd.has("eos_token_id") && j.at("eos_token_id").is_array()) {
        const json& arr = j.at("eos_token_id");
        if (arr.empty()) rd.fail("eos_token_id", "is an empty list");
        c.eos_token_id = rd.integer_value("eos_token_id", arr.at(0), 0, c.vocab_size - 1);
    } else {
        c.eos_token_id = rd.integer_or("eos_token_id", -1, -1, c.vocab_size - 1);
    }
    std::string act = rd.string_or("hidden_act", "silu");
    if (act != "silu") throw Error(ErrorCode::Unsupported, source + ": hidden_act \"" + act + "\" is not supported");

    if (rd.has("quantization_config")) {
        const json& q = j.at("quantization_config");
        if (!q.is_object()) rd.fail("quantization_config", "must be an object");
        Reader rq(q, source + " (quantization_config)");
        std::string method = rq.string_or("quant_method", "");
        if (method != "fp8")
            throw Error(ErrorCode::Unsupported, source + ": quantization method \"" + method + "\" is not supported");
        std::string fmt = rq.string_or("fmt", "e4m3");
        if (fmt != "e4m3") throw Error(ErrorCode::Unsupported, source + ": fp8 format \"" + fmt + "\" is not supported");
        if (q.contains("weight_block_size")) {
            const json& b = q.at("weight_block_size");
            if (!b.is_array() || b.size() != 2 || b[0] != 128 || b[1] != 128)
                throw Error(ErrorCode::Unsupported, source + ": only 128x128 fp8 weight blocks are supported");
        }
        c.fp8_block_quantised = true;
    }
    return c;
}

ModelConfig load_config(const std::filesystem::path& model_dir) {
    if (auto gguf = gguf_model_file(model_dir)) {
        const auto parts = gguf_open_parts(*gguf);
        std::vector<const GgufFile*> others;
        for (size_t i = 1; i < parts.size(); ++i) others.push_back(parts[i].get());
        return parse_config(gguf_config_json(*parts.front(), others), gguf->string() + " (its metadata as config.json)");
    }
    auto path = model_dir / "config.json";
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(ErrorCode::Io, path.string() + ": cannot open (is this a model folder?)");
    std::ostringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    if (text.size() > (16u << 20)) throw Error(ErrorCode::BadFormat, path.string() + ": file too large for a config");
    return parse_config(text, path.string());
}

}  // namespace cetus
