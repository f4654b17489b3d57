// Test-side writer of model folders: safetensors files, shards with their
// index, config.json, and a tiny DeepSeek-V3 model (one dense layer, one MoE
// layer, one MTP layer, F32 weights). Written from the format description
// alone and independent of the engine, so the loader is checked against it.
#pragma once

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace model_writer {

using nlohmann::json;
namespace fs = std::filesystem;

struct Tensor {
    std::string dtype;
    std::vector<int64_t> shape;
    std::string bytes;
};
using Tensors = std::map<std::string, Tensor>;

inline int64_t n_elements(const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

inline size_t element_bytes(const std::string& dtype) {
    if (dtype == "F64" || dtype == "I64") return 8;
    if (dtype == "F32" || dtype == "I32") return 4;
    if (dtype == "BF16" || dtype == "F16") return 2;
    return 1;
}

class Rng {
  public:
    explicit Rng(uint64_t seed) : m_state(seed) {}
    uint32_t bits() {
        m_state = m_state * 6364136223846793005ull + 1442695040888963407ull;
        return uint32_t(m_state >> 33);
    }
    float uniform() { return float(bits() & 0xffffff) / float(1 << 23) - 1.0f; } // [-1, 1)

  private:
    uint64_t m_state;
};

inline Tensor f32_tensor(std::vector<int64_t> shape, Rng& rng, float scale, float offset = 0.0f) {
    Tensor t{"F32", std::move(shape), {}};
    const int64_t n = n_elements(t.shape);
    t.bytes.resize(size_t(n) * 4);
    for (int64_t i = 0; i < n; ++i) {
        float v = offset + scale * rng.uniform();
        std::memcpy(&t.bytes[size_t(i) * 4], &v, 4);
    }
    return t;
}

// Same shape, another dtype, arbitrary bytes of the right size.
inline void retype(Tensor& t, const std::string& dtype) {
    t.dtype = dtype;
    t.bytes.assign(size_t(n_elements(t.shape)) * element_bytes(dtype), '\x01');
}

// Same dtype, another shape, fresh bytes of the right size.
inline void reshape(Tensor& t, std::vector<int64_t> shape) {
    t.shape = std::move(shape);
    t.bytes.assign(size_t(n_elements(t.shape)) * element_bytes(t.dtype), '\0');
}

// Turns a matrix into FP8 e4m3 codes (any code but the NaNs 0x7f/0xff) and
// returns its 128x128 block scale tensor.
inline Tensor to_fp8(Tensor& t, Rng& rng) {
    t.dtype = "F8_E4M3";
    t.bytes.resize(size_t(n_elements(t.shape)));
    for (auto& b : t.bytes) {
        uint8_t code = uint8_t(rng.bits() & 0x77); // exponent field <= 14: finite, |value| <= 240
        b = char(code | (rng.bits() & 0x80));
    }
    const int64_t sr = (t.shape[0] + 127) / 128, sc = (t.shape[1] + 127) / 128;
    return f32_tensor({sr, sc}, rng, 0.0f, 0.01f);
}

inline std::string header_json(const Tensors& ts) {
    json h = json::object();
    h["__metadata__"] = {{"format", "pt"}};
    uint64_t offset = 0;
    for (const auto& [name, t] : ts) {
        h[name] = {{"dtype", t.dtype},
                   {"shape", t.shape},
                   {"data_offsets", {offset, offset + t.bytes.size()}}};
        offset += t.bytes.size();
    }
    return h.dump();
}

// The safetensors image: the header padded with spaces so the data starts at a
// multiple of 8 (as the reference writer does), or deliberately misaligned.
inline std::string safetensors_image(const Tensors& ts, bool aligned = true) {
    std::string h = header_json(ts);
    if (aligned) {
        while (h.size() % 8) h += ' ';
    } else if (h.size() % 4 == 0) {
        h += ' ';
    }
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[size_t(i)] = char((uint64_t(h.size()) >> (8 * i)) & 0xff);
    out += h;
    for (const auto& [name, t] : ts) out += t.bytes;
    return out;
}

inline void write_file(const fs::path& p, const std::string& bytes) {
    std::ofstream(p, std::ios::binary | std::ios::trunc)
        .write(bytes.data(), std::streamsize(bytes.size()));
}

inline void write_model(const fs::path& dir, const json& config, const Tensors& ts) {
    fs::create_directories(dir);
    write_file(dir / "config.json", config.dump(2));
    write_file(dir / "model.safetensors", safetensors_image(ts));
}

// Shards tensors round-robin over n files plus model.safetensors.index.json.
inline void write_sharded(const fs::path& dir, const json& config, const Tensors& ts, int n) {
    fs::create_directories(dir);
    write_file(dir / "config.json", config.dump(2));
    std::vector<Tensors> shards(static_cast<size_t>(n));
    json map = json::object();
    int i = 0;
    for (const auto& [name, t] : ts) {
        const int s = i++ % n;
        shards[size_t(s)][name] = t;
        char file[64];
        std::snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", s + 1, n);
        map[name] = file;
    }
    for (int s = 0; s < n; ++s) {
        char file[64];
        std::snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", s + 1, n);
        write_file(dir / file, safetensors_image(shards[size_t(s)]));
    }
    write_file(dir / "model.safetensors.index.json",
               json{{"metadata", {{"total_size", 0}}}, {"weight_map", map}}.dump(2));
}

// The tiny model.

// DeepSeek-V3 routing (sigmoid, noaux_tc, 2 groups) with q-LoRA, YaRN, layer 0
// dense, layer 1 MoE, layer 2 the MTP module.
inline json tiny_config() {
    return json::parse(R"({
      "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
      "vocab_size": 32, "hidden_size": 16, "intermediate_size": 32, "moe_intermediate_size": 8,
      "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
      "q_lora_rank": 8, "kv_lora_rank": 8, "qk_nope_head_dim": 4, "qk_rope_head_dim": 4,
      "v_head_dim": 4, "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2,
      "n_group": 2, "topk_group": 1,
      "topk_method": "noaux_tc", "scoring_func": "sigmoid", "norm_topk_prob": true,
      "routed_scaling_factor": 2.5, "first_k_dense_replace": 1, "moe_layer_freq": 1,
      "num_nextn_predict_layers": 1, "rope_theta": 10000.0,
      "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                       "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
      "rms_norm_eps": 1e-6, "max_position_embeddings": 64, "tie_word_embeddings": false,
      "bos_token_id": 0, "eos_token_id": 1, "hidden_act": "silu", "torch_dtype": "float32"})");
}

inline std::string layer(int l) {
    return "model.layers." + std::to_string(l) + ".";
}

// Every tensor the config asks for, with the shapes of architecture doc section 2.
inline Tensors tiny_tensors(const json& c, uint64_t seed = 7) {
    Rng rng(seed);
    const int64_t V = c["vocab_size"], H = c["hidden_size"], I = c["intermediate_size"],
                  Im = c["moe_intermediate_size"], n_h = c["num_attention_heads"],
                  d_q = c["q_lora_rank"], d_c = c["kv_lora_rank"], d_n = c["qk_nope_head_dim"],
                  d_r = c["qk_rope_head_dim"], d_v = c["v_head_dim"], E = c["n_routed_experts"],
                  n_s = c["n_shared_experts"], L = c["num_hidden_layers"],
                  n_mtp = c["num_nextn_predict_layers"], k_dense = c["first_k_dense_replace"];
    auto mat = [&](int64_t out, int64_t in) {
        return f32_tensor({out, in}, rng, 1.0f / std::sqrt(float(in)));
    };
    auto norm = [&](int64_t n) { return f32_tensor({n}, rng, 0.1f, 1.0f); };
    Tensors ts;
    auto mlp = [&](const std::string& p, int64_t inner) {
        ts[p + "gate_proj.weight"] = mat(inner, H);
        ts[p + "up_proj.weight"] = mat(inner, H);
        ts[p + "down_proj.weight"] = mat(H, inner);
    };
    auto block = [&](int l) {
        const std::string p = layer(l);
        ts[p + "input_layernorm.weight"] = norm(H);
        ts[p + "post_attention_layernorm.weight"] = norm(H);
        ts[p + "self_attn.q_a_proj.weight"] = mat(d_q, H);
        ts[p + "self_attn.q_a_layernorm.weight"] = norm(d_q);
        ts[p + "self_attn.q_b_proj.weight"] = mat(n_h * (d_n + d_r), d_q);
        ts[p + "self_attn.kv_a_proj_with_mqa.weight"] = mat(d_c + d_r, H);
        ts[p + "self_attn.kv_a_layernorm.weight"] = norm(d_c);
        ts[p + "self_attn.kv_b_proj.weight"] = mat(n_h * (d_n + d_v), d_c);
        ts[p + "self_attn.o_proj.weight"] = mat(H, n_h * d_v);
        if (l < k_dense) {
            mlp(p + "mlp.", I);
            return;
        }
        ts[p + "mlp.gate.weight"] = mat(E, H);
        ts[p + "mlp.gate.e_score_correction_bias"] = f32_tensor({E}, rng, 0.1f);
        for (int64_t e = 0; e < E; ++e) mlp(p + "mlp.experts." + std::to_string(e) + ".", Im);
        mlp(p + "mlp.shared_experts.", Im * n_s);
    };
    ts["model.embed_tokens.weight"] = f32_tensor({V, H}, rng, 1.0f);
    ts["model.norm.weight"] = norm(H);
    ts["lm_head.weight"] = mat(V, H);
    for (int l = 0; l < L; ++l) block(l);
    for (int k = 0; k < n_mtp; ++k) {
        const int l = int(L) + k;
        const std::string p = layer(l);
        ts[p + "embed_tokens.weight"] = ts["model.embed_tokens.weight"];
        ts[p + "enorm.weight"] = norm(H);
        ts[p + "hnorm.weight"] = norm(H);
        ts[p + "eh_proj.weight"] = mat(H, 2 * H);
        ts[p + "shared_head.norm.weight"] = norm(H);
        ts[p + "shared_head.head.weight"] = ts["lm_head.weight"];
        block(l);
    }
    return ts;
}

// The per-expert tensors of one layer fused as newer transformers re-save them:
// gate_up_proj [E, 2I, H] (gate rows first) and down_proj [E, H, I].
inline void fuse_experts(Tensors& ts, int l, int64_t E, int64_t I, int64_t H) {
    const std::string p = layer(l) + "mlp.experts.";
    Tensor gu{"F32", {E, 2 * I, H}, {}}, dn{"F32", {E, H, I}, {}};
    for (int64_t e = 0; e < E; ++e) {
        const std::string q = p + std::to_string(e) + ".";
        gu.bytes += ts[q + "gate_proj.weight"].bytes + ts[q + "up_proj.weight"].bytes;
        dn.bytes += ts[q + "down_proj.weight"].bytes;
        for (const char* w : {"gate_proj.weight", "up_proj.weight", "down_proj.weight"})
            ts.erase(q + w);
    }
    ts[p + "gate_up_proj"] = gu;
    ts[p + "down_proj"] = dn;
}

} // namespace model_writer
