// The model: weights of every layer checked against the config at load, and the
// forward pass of the main model (embedding, decoder blocks, final norm, head)
// and of the MTP modules. Backends' numerics follow the CPU code here.
#pragma once

#include "config.h"
#include "kv_cache.h"
#include "mla_cost.h"
#include "rope.h"
#include "weights.h"

#include <memory>
#include <vector>

namespace cetus {

struct MlpWeights {  // SwiGLU: down(silu(gate x) * up x)
    Matrix gate, up, down;
};

struct AttentionWeights {
    Matrix q_proj;  // when q_lora_rank is null
    Matrix q_a_proj, q_b_proj;
    std::vector<float> q_a_layernorm;
    Matrix kv_a_proj_with_mqa, kv_b_proj, o_proj;
    std::vector<float> kv_a_layernorm;
};

struct MoeWeights {
    Matrix gate;                                // router [E, H]
    std::vector<float> e_score_correction_bias;  // [E] or empty
    std::vector<MlpWeights> experts;
    MlpWeights shared;
    bool has_shared = false;
};

struct LayerWeights {
    std::vector<float> input_layernorm, post_attention_layernorm;
    AttentionWeights attn;
    bool is_moe = false;
    MlpWeights mlp;
    MoeWeights moe;
};

struct MtpWeights {
    Matrix embed_tokens;  // own copy or the main embedding
    std::vector<float> enorm, hnorm, shared_head_norm;
    Matrix eh_proj;           // [H, 2H]: columns 0..H-1 take the normed embedding
    Matrix shared_head_head;  // own copy or lm_head
    LayerWeights block;
};

// Per token, per MoE layer: the chosen experts (ascending id) and gate weights.
struct RoutingRecord {
    int64_t n_moe_layers = 0, top_k = 0;
    std::vector<int32_t> ids;    // [n_tokens, n_moe_layers, top_k]
    std::vector<float> weights;  // same layout

    // Shapes the record for n_tokens tokens with every entry unset (id -1,
    // weight 0); n_tokens = 0 empties it, keeping the vectors' storage.
    void reset(int64_t n_tokens, int64_t layers, int64_t k) {
        n_moe_layers = layers;
        top_k = k;
        ids.assign(static_cast<size_t>(n_tokens * layers * k), -1);
        weights.assign(ids.size(), 0.0f);
    }
};

struct ForwardOptions {
    bool all_logits = true;       // false: only the last token's logits
    bool logits_to_host = true;   // false: out.logits stays empty; the rows stay with the backend (Backend::choose)
    // > 0: out.argmax[r] = the first id of the largest of logits row r over [0, argmax_n_valid)
    // (greedy without a penalty, taken where the logits are, in the same pass).
    int64_t argmax_n_valid = 0;
    bool want_hidden = false;     // post-norm hidden states (MTP input)
    bool want_routing = false;
    MlaFormPolicy mla_form;  // MLA's form per chunk (mla_absorbed)
    // CPU backend only, for tests: [T, n_moe_layers, top_k] expert ids (RoutingRecord's
    // layout) that every MoE layer follows instead of its own choices (which
    // out.routing still reports); see moe_forward.
    const int32_t* follow_routing = nullptr;
    // CPU backend only, for tests: with a bf16 cache, the main layers store these
    // rows instead of their own and count how far they are from their own (CacheFollow).
    CacheFollow* follow_cache = nullptr;
};

// Where the MTP module's logits go: nowhere (not computed), kept by the backend
// for Backend::choose, or also copied to the host.
enum class MtpLogits { None, Keep, Host };

struct MtpOptions {
    MtpLogits logits = MtpLogits::Host;
    bool want_hidden = false;     // the module's output after shared_head.norm (chained drafts)
    int64_t argmax_n_valid = 0;   // > 0: out.argmax as for ForwardOptions (rows of the logits)
    // The module's expert choices in out.routing (tests: the conformance suite
    // compares them; empty when the module's block is dense).
    bool want_routing = false;
    // CPU backend only, for tests: [T, top_k] expert ids the module's MoE follows
    // instead of its own choices (which out.routing still reports), as
    // ForwardOptions::follow_routing.
    const int32_t* follow_routing = nullptr;
    // CPU backend only, for tests: with a bf16 cache, the module's layer stores these
    // rows instead of its own, as ForwardOptions::follow_cache (its layer's index:
    // num_hidden_layers + k).
    CacheFollow* follow_cache = nullptr;
};

struct MtpOutput {
    std::vector<float> logits;    // [T, vocab] with MtpLogits::Host
    std::vector<float> hidden;    // [T, hidden] with want_hidden
    std::vector<int32_t> argmax;  // [T] with argmax_n_valid
    RoutingRecord routing;        // with want_routing: [T, 1, top_k] (MoE blocks; else empty)
};

// Model::mtp_forward beyond its inputs and outputs: MLA's form (as in forward()),
// and for tests the module's expert choices (routing: out, as MtpOutput::routing)
// and the choices and rows to follow (as MtpOptions::follow_routing, follow_cache).
struct MtpPassOptions {
    MlaFormPolicy mla_form;
    RoutingRecord* routing = nullptr;
    const int32_t* follow_routing = nullptr;
    CacheFollow* follow_cache = nullptr;
};

struct ForwardOutput {
    std::vector<float> logits;  // [n_rows, vocab]
    std::vector<float> hidden;  // [n_tokens, hidden] after model.norm
    RoutingRecord routing;
    std::vector<int32_t> argmax;  // [n_rows] with ForwardOptions::argmax_n_valid
};

class Model {
public:
    // Validates every tensor against the config. Throws Error.
    Model(ModelConfig config, std::unique_ptr<WeightStore> store);

    const ModelConfig& config() const { return m_config; }
    const WeightStore& store() const { return *m_store; }
    int64_t n_mtp() const { return int64_t(m_mtp.size()); }

    KvCache make_cache(int64_t capacity, KvCacheType type = KvCacheType::F32) const;

    // Main model over ids at positions start_pos .. start_pos+T-1; writes those
    // cache rows and sets cache.n_tokens = start_pos + T.
    void forward(const int32_t* ids, int64_t n_tokens, int64_t start_pos, KvCache& cache,
                 const ForwardOptions& opt, ForwardOutput& out) const;

    // MTP module k over entries (hidden[i], next_ids[i]) at positions start_pos + i.
    // hidden is the main model's post-norm state; logits [T, vocab] (nullptr: not
    // computed, the pass only fills the module's cache); out_hidden
    // (optional) is the module's output after shared_head.norm, for chained drafts.
    // po: the attention form, and for tests the expert choices and rows (MtpPassOptions).
    void mtp_forward(int64_t k, const float* hidden, const int32_t* next_ids, int64_t n_tokens,
                     int64_t start_pos, KvCache& cache, std::vector<float>* logits,
                     std::vector<float>* out_hidden, const MtpPassOptions& po = {}) const;

    // Frees the weight bytes the store owns (FP8 on load, random models) once a GPU
    // backend has its own copy; forward() and mtp_forward() then throw. Metadata
    // (config, parameter and byte counts, dtypes) stays.
    void release_host_weights();
    // Marks every block-quantised matrix but the MoE routers (Matrix::int8_activations)
    // for the CPU's integer products and the CUDA backend's int8 form, or back to the
    // exact ones.
    void use_int8_activations(bool on);
    bool int8_activations() const { return m_int8_activations; }  // some matrix is marked
    bool host_weights_released() const { return m_host_released; }

    // The weights as loaded (read by other backends to upload them).
    const Matrix& embed() const { return m_embed; }
    const Matrix& lm_head() const { return m_lm_head; }
    const std::vector<float>& final_norm() const { return m_norm; }
    const std::vector<LayerWeights>& layers() const { return m_layers; }
    const std::vector<MtpWeights>& mtp_weights() const { return m_mtp; }
    const Rope& rope() const { return m_rope; }

    // Parameter counts from the tensor shapes (MTP counted separately).
    uint64_t n_params_main() const { return m_params_main; }
    uint64_t n_params_active() const { return m_params_active; }
    uint64_t n_params_mtp() const { return m_params_mtp; }
    uint64_t weight_bytes() const { return m_weight_bytes; }

    // Exposed for tests: one decoder block, in place on x [T, H].
    void block_forward(const LayerWeights& lw, int64_t cache_layer, float* x, int64_t n_tokens,
                       int64_t start_pos, KvCache& cache, int32_t* route_ids, float* route_w,
                       int64_t route_stride, bool absorbed, const int32_t* follow = nullptr) const;

private:
    LayerWeights load_layer(int64_t l);
    MlpWeights load_mlp(const std::string& prefix, int64_t inner);
    void count_params();

    void check_host_weights() const;

    ModelConfig m_config;
    std::unique_ptr<WeightStore> m_store;
    bool m_host_released = false;
    Rope m_rope;
    Matrix m_embed, m_lm_head;
    std::vector<float> m_norm;
    std::vector<LayerWeights> m_layers;
    std::vector<MtpWeights> m_mtp;
    bool m_int8_activations = false;
    uint64_t m_params_main = 0, m_params_active = 0, m_params_mtp = 0, m_weight_bytes = 0;
};

}  // namespace cetus
