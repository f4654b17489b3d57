// Random models of published shapes, built in memory for benchmarks: the
// config of a preset plus weights drawn from a fast seeded generator (BF16,
// FP8 e4m3 with 128x128 block scales, or GGUF blocks as llama.cpp's Q4_K_M mixes
// them). Numbers mean nothing; shapes and memory traffic match the real models.
// Built for a GPU, the matrices are recipes only (random_draws.h) and the CUDA
// backend draws the same bytes on the device: no host memory, no upload.
#include "cetus/engine.h"

#include "config.h"
#include "gguf.h"
#include "host_memory.h"
#include "log.h"
#include "model.h"
#include "random_draws.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <exception>
#include <functional>
#include <optional>

namespace cetus {
namespace {

struct Preset {
    const char* name;
    const char* config;
    const char* note;
};

// Shapes from the architecture doc: 9.1 tiny-v3-mtp, 9.4 medium-cpu, 1.2 V2-Lite and V3.
const Preset k_presets[] = {
    {"tiny", R"({"model_type":"deepseek_v3","vocab_size":2048,"hidden_size":128,"intermediate_size":256,
      "moe_intermediate_size":64,"num_hidden_layers":4,"num_attention_heads":4,"q_lora_rank":64,"kv_lora_rank":64,
      "qk_nope_head_dim":32,"qk_rope_head_dim":16,"v_head_dim":32,"n_routed_experts":16,"n_shared_experts":1,
      "num_experts_per_tok":4,"n_group":4,"topk_group":2,"topk_method":"noaux_tc","scoring_func":"sigmoid",
      "norm_topk_prob":true,"routed_scaling_factor":2.5,"first_k_dense_replace":1,"num_nextn_predict_layers":1,
      "rope_theta":10000.0,"max_position_embeddings":512,"rope_scaling":{"type":"yarn","factor":4.0,
      "original_max_position_embeddings":128,"beta_fast":32,"beta_slow":1,"mscale":1.0,"mscale_all_dim":0.707},
      "rms_norm_eps":1e-6,"bos_token_id":0,"eos_token_id":1})",
     "tiny-v3-mtp, every V3 feature, 3 M parameters"},
    {"medium-cpu", R"({"model_type":"deepseek_v3","vocab_size":32000,"hidden_size":768,"intermediate_size":2048,
      "moe_intermediate_size":384,"num_hidden_layers":8,"num_attention_heads":12,"q_lora_rank":256,"kv_lora_rank":192,
      "qk_nope_head_dim":64,"qk_rope_head_dim":32,"v_head_dim":64,"n_routed_experts":32,"n_shared_experts":1,
      "num_experts_per_tok":4,"n_group":4,"topk_group":2,"topk_method":"noaux_tc","scoring_func":"sigmoid",
      "norm_topk_prob":true,"routed_scaling_factor":2.5,"first_k_dense_replace":1,"num_nextn_predict_layers":1,
      "rope_theta":10000.0,"max_position_embeddings":16384,"rope_scaling":{"type":"yarn","factor":4.0,
      "original_max_position_embeddings":4096,"beta_fast":32,"beta_slow":1,"mscale":1.0,"mscale_all_dim":1.0},
      "rms_norm_eps":1e-6,"bos_token_id":0,"eos_token_id":1})",
     "271 M parameters, 97 M active"},
    {"v2-lite", R"({"model_type":"deepseek_v2","vocab_size":102400,"hidden_size":2048,"intermediate_size":10944,
      "moe_intermediate_size":1408,"num_hidden_layers":27,"num_attention_heads":16,"q_lora_rank":null,
      "kv_lora_rank":512,"qk_nope_head_dim":128,"qk_rope_head_dim":64,"v_head_dim":128,"n_routed_experts":64,
      "n_shared_experts":2,"num_experts_per_tok":6,"n_group":1,"topk_group":1,"topk_method":"greedy",
      "scoring_func":"softmax","norm_topk_prob":false,"routed_scaling_factor":1.0,"first_k_dense_replace":1,
      "rope_theta":10000,"max_position_embeddings":163840,"rope_scaling":{"type":"yarn","factor":40,
      "original_max_position_embeddings":4096,"beta_fast":32,"beta_slow":1,"mscale":0.707,"mscale_all_dim":0.707},
      "rms_norm_eps":1e-6,"bos_token_id":100000,"eos_token_id":100001})",
     "DeepSeek-V2-Lite shapes, 15.7 B parameters"},
    {"v3-layers", R"({"model_type":"deepseek_v3","vocab_size":129280,"hidden_size":7168,"intermediate_size":18432,
      "moe_intermediate_size":2048,"num_hidden_layers":4,"num_attention_heads":128,"q_lora_rank":1536,
      "kv_lora_rank":512,"qk_nope_head_dim":128,"qk_rope_head_dim":64,"v_head_dim":128,"n_routed_experts":256,
      "n_shared_experts":1,"num_experts_per_tok":8,"n_group":8,"topk_group":4,"topk_method":"noaux_tc",
      "scoring_func":"sigmoid","norm_topk_prob":true,"routed_scaling_factor":2.5,"first_k_dense_replace":3,
      "rope_theta":10000,"max_position_embeddings":163840,"rope_scaling":{"type":"yarn","factor":40,
      "original_max_position_embeddings":4096,"beta_fast":32,"beta_slow":1,"mscale":1.0,"mscale_all_dim":1.0},
      "rms_norm_eps":1e-6,"bos_token_id":0,"eos_token_id":1})",
     "the first 4 layers of DeepSeek-V3 (3 dense + 1 MoE)"},
};

namespace rd = random_draws;

// The vectors' draws: a splitmix64 generator from the state s.
uint64_t splitmix(uint64_t& s) { return rd::mix(s += rd::k_golden); }

enum class RandomDtype { BF16, FP8, Q4KM };

// A positive finite float as the nearest IEEE half or near it (a block scale; any
// close value will do), subnormals included, at most the largest half.
uint16_t half_of(float v) {
    if (!(v > 0.0f)) return 0;
    if (v >= 65504.0f) return 0x7BFF;
    int e = 0;
    const float m = std::frexp(v, &e);  // v = m 2^e, m in [0.5, 1)
    const int exp = e - 1 + 15;
    if (exp < 1) return uint16_t(std::lround(std::ldexp(v, 24)));  // subnormal: units of 2^-24
    long mant = std::lround((2.0f * m - 1.0f) * 1024.0f);
    if (mant == 1024) return uint16_t((exp + 1) << 10);
    return uint16_t((exp << 10) | mant);
}

// ggml type ids of the Q4_K_M-like mix.
constexpr uint32_t k_q5_0 = ggml_blocks::k_type_q5_0, k_q8_0 = ggml_blocks::k_type_q8_0,
                   k_q4_k = ggml_blocks::k_type_q4_k, k_q6_k = ggml_blocks::k_type_q6_k;

// A tensor made by the builder, added to the store by flush(): its bytes, or only
// its recipe (drawn).
struct Made {
    std::string name;
    Dtype dtype;
    std::vector<int64_t> shape;
    std::vector<std::byte> bytes;
    uint32_t ggml_type = 0;
    std::optional<rd::Recipe> recipe = {};  // drawn: no bytes
};

// Tensors of at least this many values are made alone, their rows in parallel
// (the embedding and the output head); smaller ones a tensor per thread.
constexpr int64_t k_big_values = int64_t(1) << 26;

// matrix() and vector() queue their tensors; flush() makes the queued ones
// several at a time (one thread each, its rows in order) and adds them to the
// store in the order queued. A tensor's values depend on its name and the seed
// only. (Made one after another, each matrix's zero-filled allocation and first
// touch of its pages ran on one thread: V2-Lite's 15.7 B values took 37 s with 16
// threads on the GPU machine, most of each of its benches.)
class Builder {
public:
    // drawn: the matrices as recipes only (the FP8 block scales and the vectors as bytes).
    Builder(WeightStore& store, RandomDtype dtype, uint64_t seed, bool drawn)
        : m_store(store), m_dtype(dtype), m_seed(seed), m_drawn(drawn) {}

    void flush() {
        std::vector<std::vector<Made>> made(m_queue.size());
        // Large tensors one after another, their rows over the threads; the rest
        // several at a time.
        for (size_t i = 0; i < m_queue.size(); ++i)
            if (m_queue[i].values >= k_big_values) made[i] = m_queue[i].make();
        std::exception_ptr failure;
#pragma omp parallel for schedule(dynamic, 1)
        for (size_t i = 0; i < m_queue.size(); ++i) {
            if (m_queue[i].values >= k_big_values) continue;
            try {
                made[i] = m_queue[i].make();
            } catch (...) {
#pragma omp critical(cetus_random_model_failure)
                if (!failure) failure = std::current_exception();
            }
        }
        m_queue.clear();
        if (failure) std::rethrow_exception(failure);
        for (auto& list : made)
            for (Made& t : list) {
                if (t.recipe) m_store.add_drawn(t.name, t.dtype, t.shape[0], t.shape[1], *t.recipe, t.ggml_type);
                else m_store.add_owned(t.name, t.dtype, std::move(t.shape), std::move(t.bytes), t.ggml_type);
            }
    }

    // Uniform with standard deviation std (BF16), random e4m3 codes with block scales,
    // or random GGUF blocks: Q4_K, Q6_K where Q4_K_M gives more bits (more_bits: the
    // output head, and the down projections of some layers, more_bits_layer), and where
    // rows are not whole 256-blocks Q5_0 and Q8_0 instead (as llama.cpp falls back); the
    // router and the embedding in blocks too (quantisable keeps the router BF16 in
    // the other forms only).
    void matrix(const std::string& name, int64_t rows, int64_t cols, bool quantisable = true, bool more_bits = false) {
        m_queue.push_back({rows * cols, [=, this] { return make_matrix(name, rows, cols, quantisable, more_bits); }});
    }
    void vector(const std::string& name, int64_t n, float base, float jitter) {
        m_queue.push_back({n, [=, this] { return std::vector<Made>{make_vector(name, n, base, jitter)}; }});
    }

private:
    std::vector<Made> make_matrix(const std::string& name, int64_t rows, int64_t cols, bool quantisable,
                                  bool more_bits) const {
        const float std_dev = 1.0f / std::sqrt(float(cols));
        const uint64_t seed = m_seed ^ std::hash<std::string>{}(name);
        if (m_dtype == RandomDtype::Q4KM) {
            const uint32_t type = more_bits ? (cols % 256 ? k_q8_0 : k_q6_k) : (cols % 256 ? k_q5_0 : k_q4_k);
            return {blocks(name, rows, cols, type, std_dev, seed)};
        }
        if (m_dtype == RandomDtype::FP8 && quantisable) {
            std::vector<Made> out;
            if (m_drawn) {
                out.push_back({name, Dtype::F8_E4M3, {rows, cols}, {}, 0, rd::Recipe{rd::Recipe::Kind::Fp8, seed}});
            } else {
                std::vector<std::byte> q(static_cast<size_t>(rows * cols));
#pragma omp parallel for schedule(static) if (rows * cols >= k_big_values)
                for (int64_t r = 0; r < rows; ++r)
                    for (int64_t c = 0; c < cols; c += 8) {
                        const uint64_t bits = rd::draw(seed, r, c / 8);
                        for (int64_t k = 0; k < 8 && c + k < cols; ++k)
                            q[size_t(r * cols + c + k)] = std::byte(rd::fp8_code(bits, int(k)));
                    }
                out.push_back({name, Dtype::F8_E4M3, {rows, cols}, std::move(q)});
            }
            const int64_t sr = (rows + 127) / 128, sc = (cols + 127) / 128;
            std::vector<std::byte> s(static_cast<size_t>(sr * sc * 4));
            const float scale = std_dev / 4.0f;  // typical |code| is a few units
            for (int64_t i = 0; i < sr * sc; ++i) std::memcpy(s.data() + 4 * i, &scale, 4);
            out.push_back({name + "_scale_inv", Dtype::F32, {sr, sc}, std::move(s)});
            return out;
        }
        const float a = std_dev * std::sqrt(3.0f);
        std::vector<Made> out;
        if (m_drawn) {
            out.push_back({name, Dtype::BF16, {rows, cols}, {}, 0, rd::Recipe{rd::Recipe::Kind::Bf16, seed, a}});
            return out;
        }
        std::vector<std::byte> w(static_cast<size_t>(rows * cols * 2));
#pragma omp parallel for schedule(static) if (rows * cols >= k_big_values)
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < cols; ++c) {
                const uint16_t h = rd::bf16_value(rd::draw(seed, r, c), a);
                std::memcpy(w.data() + 2 * (r * cols + c), &h, 2);
            }
        out.push_back({name, Dtype::BF16, {rows, cols}, std::move(w)});
        return out;
    }
    Made make_vector(const std::string& name, int64_t n, float base, float jitter) const {
        std::vector<std::byte> v(static_cast<size_t>(n * 4));
        uint64_t s = m_seed ^ std::hash<std::string>{}(name);
        for (int64_t i = 0; i < n; ++i) {
            float u = float(splitmix(s) >> 40) * (1.0f / 16777216.0f);
            float x = base + jitter * (2.0f * u - 1.0f);
            std::memcpy(v.data() + 4 * i, &x, 4);
        }
        return {name, Dtype::F32, {n}, std::move(v)};
    }

    // Random bytes, then each block's f16 scales set so that values are a few
    // standard deviations at most: Q4_K's d (|v| <= 63 * 15 d), Q6_K's d
    // (|v| <= 128 * 32 d), Q5_0's d (|v| <= 16 d), Q8_0's d (|v| <= 127 d). Q4_K's
    // minimums are made equal to its scales and dmin = 7.5 d, so that a sub-block's
    // values d scale (q - 7.5) centre on zero as a checkpoint's do (random minimums
    // would give every row a large common offset).
    Made blocks(const std::string& name, int64_t rows, int64_t cols, uint32_t type, float std_dev, uint64_t seed) const {
        const GgmlTypeInfo* t = ggml_type_info(type);
        const int64_t per_row = cols / t->block, bytes = t->bytes;
        const float d = type == k_q4_k   ? std_dev / 256.0f
                        : type == k_q6_k ? std_dev / 1024.0f
                        : type == k_q5_0 ? std_dev / 8.0f
                                         : std_dev / 64.0f;
        const rd::Recipe recipe{rd::Recipe::Kind::Ggml, seed, 0.0f, type, half_of(d), half_of(7.5f * d)};
        if (m_drawn) return {name, Dtype::Ggml, {rows, cols}, {}, type, recipe};
        std::vector<std::byte> w(static_cast<size_t>(rows * per_row * bytes));
#pragma omp parallel for schedule(static) if (rows * cols >= k_big_values)
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t b = 0; b < per_row; ++b)
                rd::ggml_block(recipe, r, b, reinterpret_cast<uint8_t*>(w.data() + (r * per_row + b) * bytes));
        return {name, Dtype::Ggml, {rows, cols}, std::move(w), type};
    }

    WeightStore& m_store;
    RandomDtype m_dtype;
    uint64_t m_seed;
    bool m_drawn;
    struct Job {
        int64_t values;
        std::function<std::vector<Made>()> make;
    };
    std::vector<Job> m_queue;
};

uint64_t estimate_bytes(const ModelConfig& c, RandomDtype dtype) {
    const uint64_t H = uint64_t(c.hidden_size), n_h = uint64_t(c.num_attention_heads);
    const double q = dtype == RandomDtype::FP8 ? 1.0 : dtype == RandomDtype::Q4KM ? 0.6 : 2.0;  // Q4_K: 4.5 bits
    double attn = (c.q_lora_rank ? double(c.q_lora_rank) * H + double(c.q_lora_rank) * n_h * c.qk_head_dim()
                                 : double(n_h) * c.qk_head_dim() * H) +
                  double(c.kv_lora_rank + c.qk_rope_head_dim) * H +
                  double(n_h) * (c.qk_nope_head_dim + c.v_head_dim) * c.kv_lora_rank + double(H) * n_h * c.v_head_dim;
    double total = 2.0 * 2.0 * double(c.vocab_size) * H;
    for (int64_t l = 0; l < c.num_hidden_layers + c.num_nextn_predict_layers; ++l) {
        double mlp = c.is_moe_layer(l) ? 3.0 * H * c.moe_intermediate_size * (c.n_routed_experts + c.n_shared_experts)
                                       : 3.0 * H * c.intermediate_size;
        total += (attn + mlp) * q;
    }
    return uint64_t(total);
}

// Whether Q4_K_M gives layer l of n the more bits of Q6_K in its down projections
// (llama.cpp's use_more_bits: the first and last eighth, and every third between),
// with at least the first layer however few there are (so the tiny preset has one).
bool more_bits_layer(int64_t l, int64_t n) {
    const int64_t eighth = std::max<int64_t>(1, n / 8);
    return l < eighth || l >= 7 * n / 8 || (l - n / 8) % 3 == 2;
}

}  // namespace

std::vector<std::string> random_model_presets() {
    std::vector<std::string> out;
    for (const auto& p : k_presets) out.push_back(p.name);
    return out;
}

// drawn: the matrices as recipes, for a backend that draws them (Engine::create_random
// on a GPU); their bytes are never made on the host.
std::unique_ptr<Model> build_random_model(const RandomModelOptions& r, bool drawn) {
    const Preset* preset = nullptr;
    for (const auto& p : k_presets)
        if (r.preset == p.name) preset = &p;
    if (!preset) {
        std::string names;
        for (const auto& p : k_presets) names += std::string(names.empty() ? "" : ", ") + p.name;
        throw Error(ErrorCode::BadRequest, "unknown random-model preset \"" + r.preset + "\" (known: " + names + ")");
    }
    if (r.dtype != "bf16" && r.dtype != "fp8" && r.dtype != "q4_k_m")
        throw Error(ErrorCode::BadRequest, "random-model dtype must be bf16, fp8 or q4_k_m, not \"" + r.dtype + "\"");
    const RandomDtype dtype = r.dtype == "fp8" ? RandomDtype::FP8 : r.dtype == "q4_k_m" ? RandomDtype::Q4KM : RandomDtype::BF16;
    auto j = nlohmann::json::parse(preset->config);
    if (r.n_layers > 0) j["num_hidden_layers"] = r.n_layers;
    if (r.intermediate_size > 0) j["intermediate_size"] = r.intermediate_size;
    ModelConfig c = parse_config(j.dump(), std::string("preset ") + preset->name);
    const uint64_t need = estimate_bytes(c, dtype), avail = host_available_bytes();
    if (!drawn && avail && need > avail * 9 / 10)
        throw Error(ErrorCode::OutOfMemory,
                    "random " + r.preset + " (" + r.dtype + ") needs about " + std::to_string(need >> 20) +
                        " MiB but only " + std::to_string(avail >> 20) +
                        " MiB are available; try --dtype fp8 or fewer --layers");
    engine_log().info("building random {} ({}, {}): about {} MiB{}", r.preset, preset->note, r.dtype, need >> 20,
                      drawn ? ", the matrices to be drawn on the device" : "");

    auto store = std::make_unique<WeightStore>();
    Builder b(*store, dtype, r.seed, drawn);
    const int64_t H = c.hidden_size, V = c.vocab_size, n_h = c.num_attention_heads;
    b.matrix("model.embed_tokens.weight", V, H, false);
    b.vector("model.norm.weight", H, 1.0f, 0.2f);
    b.matrix("lm_head.weight", V, H, false, true);
    for (int64_t l = 0; l < c.num_hidden_layers + c.num_nextn_predict_layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        const bool more_bits = more_bits_layer(l, c.num_hidden_layers + c.num_nextn_predict_layers);
        b.vector(p + "input_layernorm.weight", H, 1.0f, 0.2f);
        b.vector(p + "post_attention_layernorm.weight", H, 1.0f, 0.2f);
        if (c.q_lora_rank) {
            b.matrix(p + "self_attn.q_a_proj.weight", c.q_lora_rank, H);
            b.vector(p + "self_attn.q_a_layernorm.weight", c.q_lora_rank, 1.0f, 0.2f);
            b.matrix(p + "self_attn.q_b_proj.weight", n_h * c.qk_head_dim(), c.q_lora_rank);
        } else {
            b.matrix(p + "self_attn.q_proj.weight", n_h * c.qk_head_dim(), H);
        }
        b.matrix(p + "self_attn.kv_a_proj_with_mqa.weight", c.kv_lora_rank + c.qk_rope_head_dim, H);
        b.vector(p + "self_attn.kv_a_layernorm.weight", c.kv_lora_rank, 1.0f, 0.2f);
        b.matrix(p + "self_attn.kv_b_proj.weight", n_h * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
        b.matrix(p + "self_attn.o_proj.weight", H, n_h * c.v_head_dim);
        if (!c.is_moe_layer(l)) {
            b.matrix(p + "mlp.gate_proj.weight", c.intermediate_size, H);
            b.matrix(p + "mlp.up_proj.weight", c.intermediate_size, H);
            b.matrix(p + "mlp.down_proj.weight", H, c.intermediate_size, true, more_bits);
        } else {
            const int64_t I = c.moe_intermediate_size;
            b.matrix(p + "mlp.gate.weight", c.n_routed_experts, H, false);
            if (c.topk_method == TopkMethod::NoauxTc)
                b.vector(p + "mlp.gate.e_score_correction_bias", c.n_routed_experts, 0.0f, 0.1f);
            for (int64_t e = 0; e < c.n_routed_experts; ++e) {
                const std::string ep = p + "mlp.experts." + std::to_string(e) + ".";
                b.matrix(ep + "gate_proj.weight", I, H);
                b.matrix(ep + "up_proj.weight", I, H);
                b.matrix(ep + "down_proj.weight", H, I, true, more_bits);
            }
            if (c.n_shared_experts) {
                const int64_t Is = I * c.n_shared_experts;
                b.matrix(p + "mlp.shared_experts.gate_proj.weight", Is, H);
                b.matrix(p + "mlp.shared_experts.up_proj.weight", Is, H);
                b.matrix(p + "mlp.shared_experts.down_proj.weight", H, Is, true, more_bits);
            }
        }
        if (l >= c.num_hidden_layers) {  // MTP extras; embedding and head shared with the main model
            b.vector(p + "enorm.weight", H, 1.0f, 0.2f);
            b.vector(p + "hnorm.weight", H, 1.0f, 0.2f);
            b.matrix(p + "eh_proj.weight", H, 2 * H, false);
            b.vector(p + "shared_head.norm.weight", H, 1.0f, 0.2f);
        }
        b.flush();  // a layer at a time
    }
    b.flush();
    return std::make_unique<Model>(std::move(c), std::move(store));
}

std::unique_ptr<Model> build_random_model(const RandomModelOptions& r) { return build_random_model(r, false); }

}  // namespace cetus
