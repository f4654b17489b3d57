// Loading every layer's weights with shape checks, and the main forward pass:
// embed -> [RMSNorm -> MLA -> residual -> RMSNorm -> MLP/MoE -> residual] x L
// -> final norm -> lm_head (architecture doc section 3).
#include "model.h"

#include "cetus/error.h"
#include "cpu/ops.h"
#include "log.h"
#include "mla.h"
#include "moe.h"

#include <algorithm>

namespace cetus {

namespace {
std::string layer_prefix(int64_t l) { return "model.layers." + std::to_string(l) + "."; }
}  // namespace

MlpWeights Model::load_mlp(const std::string& p, int64_t inner) {
    const int64_t H = m_config.hidden_size;
    return {m_store->matrix(p + "gate_proj.weight", inner, H, true),
            m_store->matrix(p + "up_proj.weight", inner, H, true),
            m_store->matrix(p + "down_proj.weight", H, inner, true)};
}

LayerWeights Model::load_layer(int64_t l) {
    const ModelConfig& c = m_config;
    const int64_t H = c.hidden_size, n_h = c.num_attention_heads;
    const std::string p = layer_prefix(l);
    LayerWeights lw;
    lw.input_layernorm = m_store->vector(p + "input_layernorm.weight", H);
    lw.post_attention_layernorm = m_store->vector(p + "post_attention_layernorm.weight", H);
    AttentionWeights& a = lw.attn;
    const std::string ap = p + "self_attn.";
    if (c.q_lora_rank > 0) {
        a.q_a_proj = m_store->matrix(ap + "q_a_proj.weight", c.q_lora_rank, H, true);
        a.q_a_layernorm = m_store->vector(ap + "q_a_layernorm.weight", c.q_lora_rank);
        a.q_b_proj = m_store->matrix(ap + "q_b_proj.weight", n_h * c.qk_head_dim(), c.q_lora_rank, true);
    } else {
        a.q_proj = m_store->matrix(ap + "q_proj.weight", n_h * c.qk_head_dim(), H, true);
    }
    a.kv_a_proj_with_mqa =
        m_store->matrix(ap + "kv_a_proj_with_mqa.weight", c.kv_lora_rank + c.qk_rope_head_dim, H, true);
    a.kv_a_layernorm = m_store->vector(ap + "kv_a_layernorm.weight", c.kv_lora_rank);
    a.kv_b_proj =
        m_store->matrix(ap + "kv_b_proj.weight", n_h * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank, true);
    a.o_proj = m_store->matrix(ap + "o_proj.weight", H, n_h * c.v_head_dim, true);

    // MTP blocks follow the same rule as main layers (V3: layer 61 >= 3 is MoE).
    lw.is_moe = c.is_moe_layer(l);
    if (!lw.is_moe) {
        lw.mlp = load_mlp(p + "mlp.", c.intermediate_size);
        return lw;
    }
    MoeWeights& m = lw.moe;
    const int64_t E = c.n_routed_experts, I = c.moe_intermediate_size;
    m.gate = m_store->matrix(p + "mlp.gate.weight", E, H);
    const std::string bias = p + "mlp.gate.e_score_correction_bias";
    if (c.topk_method == TopkMethod::NoauxTc) m.e_score_correction_bias = m_store->vector(bias, E);
    else if (m_store->has(bias))
        engine_log().warn("{}: ignoring {} (topk_method is not noaux_tc)", m_store->source(), bias);
    const std::string fused = p + "mlp.experts.gate_up_proj";
    if (m_store->has(fused)) {
        // Fused layout re-saved by newer transformers: [E, 2I, H] and [E, H, I].
        const TensorInfo& gu = m_store->tensor(fused);
        const TensorInfo& dn = m_store->tensor(p + "mlp.experts.down_proj");
        if (gu.shape != std::vector<int64_t>{E, 2 * I, H} || dn.shape != std::vector<int64_t>{E, H, I} ||
            gu.dtype != dn.dtype || (gu.dtype != Dtype::F32 && gu.dtype != Dtype::BF16 && gu.dtype != Dtype::F16))
            throw Error(ErrorCode::BadTensor,
                        gu.file + ": fused experts of layer " + std::to_string(l) + ": \"" + fused + "\" and \"" +
                            p + "mlp.experts.down_proj\": expected [" + std::to_string(E) + ", " +
                            std::to_string(2 * I) + ", " + std::to_string(H) + "] and [" + std::to_string(E) + ", " +
                            std::to_string(H) + ", " + std::to_string(I) + "] of one dtype in F32/BF16/F16, file has " +
                            gu.shape_string() + " " + dtype_name(gu.dtype) + " and " + dn.shape_string() + " " +
                            dtype_name(dn.dtype));
        const size_t es = dtype_size(gu.dtype);
        for (int64_t e = 0; e < E; ++e) {
            const std::byte* g0 = gu.data + size_t(e * 2 * I * H) * es;
            MlpWeights ew;
            ew.gate = Matrix{gu.dtype, I, H, g0, nullptr, 0};
            ew.up = Matrix{gu.dtype, I, H, g0 + size_t(I * H) * es, nullptr, 0};
            ew.down = Matrix{dn.dtype, H, I, dn.data + size_t(e * H * I) * es, nullptr, 0};
            if (reinterpret_cast<uintptr_t>(g0) % es || reinterpret_cast<uintptr_t>(ew.down.data) % es)
                throw Error(ErrorCode::Unsupported, gu.file + ": misaligned fused expert tensors");
            if (m_store->fp8_on_load()) {  // per expert, named as in the unfused layout
                const std::string ep = p + "mlp.experts." + std::to_string(e) + ".";
                ew.gate = m_store->add_fp8(ep + "gate_proj.weight", ew.gate);
                ew.up = m_store->add_fp8(ep + "up_proj.weight", ew.up);
                ew.down = m_store->add_fp8(ep + "down_proj.weight", ew.down);
            }
            m.experts.push_back(ew);
        }
        if (m_store->fp8_on_load()) {  // replaced by the experts' own FP8 tensors
            m_store->drop(fused);
            m_store->drop(p + "mlp.experts.down_proj");
        }
    } else {
        m.experts.reserve(static_cast<size_t>(E));
        for (int64_t e = 0; e < E; ++e)
            m.experts.push_back(load_mlp(p + "mlp.experts." + std::to_string(e) + ".", I));
    }
    if (c.n_shared_experts > 0) {
        m.shared = load_mlp(p + "mlp.shared_experts.", I * c.n_shared_experts);
        m.has_shared = true;
    }
    return lw;
}

Model::Model(ModelConfig config, std::unique_ptr<WeightStore> store)
    : m_config(std::move(config)), m_store(std::move(store)), m_rope(m_config) {
    const ModelConfig& c = m_config;
    const int64_t H = c.hidden_size, V = c.vocab_size;
    m_embed = m_store->matrix("model.embed_tokens.weight", V, H);
    m_norm = m_store->vector("model.norm.weight", H);
    if (c.tie_word_embeddings && !m_store->has("lm_head.weight")) m_lm_head = m_embed;
    else m_lm_head = m_store->matrix("lm_head.weight", V, H);
    m_layers.reserve(static_cast<size_t>(c.num_hidden_layers));
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) m_layers.push_back(load_layer(l));

    for (int64_t k = 0; k < c.num_nextn_predict_layers; ++k) {
        const int64_t l = c.num_hidden_layers + k;
        const std::string p = layer_prefix(l);
        MtpWeights m;
        m.embed_tokens = m_store->has(p + "embed_tokens.weight") ? m_store->matrix(p + "embed_tokens.weight", V, H) : m_embed;
        m.enorm = m_store->vector(p + "enorm.weight", H);
        m.hnorm = m_store->vector(p + "hnorm.weight", H);
        m.eh_proj = m_store->matrix(p + "eh_proj.weight", H, 2 * H);
        m.shared_head_norm = m_store->vector(p + "shared_head.norm.weight", H);
        m.shared_head_head = m_store->has(p + "shared_head.head.weight")
                                 ? m_store->matrix(p + "shared_head.head.weight", V, H)
                                 : m_lm_head;
        m.block = load_layer(l);
        m_mtp.push_back(std::move(m));
    }
    m_store->set_fp8_progress({});  // loading's progress reporting ends here
    for (const auto& name : m_store->unused_names()) {
        if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;
        engine_log().warn("{}: tensor \"{}\" is not used by this configuration", m_store->source(), name);
    }
    count_params();
}

void Model::count_params() {
    const ModelConfig& c = m_config;
    uint64_t mtp = 0, total = 0;
    for (const auto& [name, t] : m_store->tensors()) {
        if (name.ends_with("_scale_inv") || name.find("rotary_emb") != std::string::npos) continue;
        bool is_mtp = false;
        for (int64_t k = 0; k < c.num_nextn_predict_layers; ++k)
            is_mtp |= name.starts_with(layer_prefix(c.num_hidden_layers + k));
        (is_mtp ? mtp : total) += uint64_t(t.n_elements());
    }
    m_params_main = total;
    m_params_mtp = mtp;
    // Active: everything a token touches; of the routed experts only top_k per MoE layer.
    uint64_t idle = 0;
    if (c.n_routed_experts > 0)
        idle = uint64_t(c.n_moe_layers()) * uint64_t(c.n_routed_experts - c.num_experts_per_tok) * 3u *
               uint64_t(c.hidden_size * c.moe_intermediate_size);
    m_params_active = total - std::min(idle, total);
    m_weight_bytes = m_store->total_bytes();
}

KvCache Model::make_cache(int64_t capacity, KvCacheType type) const {
    return KvCache(m_config.num_hidden_layers + m_config.num_nextn_predict_layers, capacity, m_config.kv_lora_rank,
                   m_config.qk_rope_head_dim, type);
}

void Model::block_forward(const LayerWeights& lw, int64_t cache_layer, float* x, int64_t T, int64_t start_pos,
                          KvCache& cache, int32_t* route_ids, float* route_w, int64_t route_stride,
                          bool absorbed, const int32_t* follow) const {
    const ModelConfig& c = m_config;
    const int64_t H = c.hidden_size;
    const float eps = float(c.rms_norm_eps);
    std::vector<float> a(static_cast<size_t>(T * H)), r(static_cast<size_t>(T * H));  // [T, H]
    cpu::rmsnorm_rows(x, lw.input_layernorm.data(), eps, T, H, a.data());
    mla_forward(c, m_rope, lw.attn, a.data(), T, start_pos, cache.layer(cache_layer), r.data(),
                absorbed);
    for (int64_t i = 0; i < T * H; ++i) x[i] += r[size_t(i)];
    cpu::rmsnorm_rows(x, lw.post_attention_layernorm.data(), eps, T, H, a.data());
    if (lw.is_moe) moe_forward(c, lw.moe, a.data(), T, r.data(), route_ids, route_w, route_stride, follow);
    else mlp_forward(lw.mlp, a.data(), T, r.data());
    for (int64_t i = 0; i < T * H; ++i) x[i] += r[size_t(i)];
}

void Model::use_int8_activations(bool on) {
    m_int8_activations = false;
    auto mark = [this, on](Matrix& m) {
        m.int8_activations = on && m.dtype == Dtype::Ggml;
        m_int8_activations = m_int8_activations || m.int8_activations;
    };
    auto mark_mlp = [&](MlpWeights& w) {
        mark(w.gate);
        mark(w.up);
        mark(w.down);
    };
    auto mark_layer = [&](LayerWeights& l) {
        // (Not the router, l.moe.gate: its scores choose the experts, where a quantisation
        // step flips near ties; llama.cpp leaves it unquantised in GGUF files, and the CUDA
        // backend decodes it to fp32 for its routing kernels.)
        for (Matrix* m : {&l.attn.q_proj, &l.attn.q_a_proj, &l.attn.q_b_proj, &l.attn.kv_a_proj_with_mqa,
                          &l.attn.kv_b_proj, &l.attn.o_proj})
            mark(*m);
        mark_mlp(l.mlp);
        mark_mlp(l.moe.shared);
        for (MlpWeights& e : l.moe.experts) mark_mlp(e);
    };
    mark(m_embed);
    mark(m_lm_head);
    for (LayerWeights& l : m_layers) mark_layer(l);
    for (MtpWeights& m : m_mtp) {
        mark(m.embed_tokens);
        mark(m.eh_proj);
        mark(m.shared_head_head);
        mark_layer(m.block);
    }
}

void Model::release_host_weights() {
    m_store->release_owned();
    m_host_released = true;
}

void Model::check_host_weights() const {
    if (!m_store->has_drawn() && !m_host_released) return;
    const std::string source = m_store->source().empty() ? "random model" : m_store->source();
    if (m_store->has_drawn())
        throw Error(ErrorCode::Device, source + ": the weights are drawn on the GPU and were never in host memory; "
                                                "the CPU path cannot run this model");
    throw Error(ErrorCode::Device, source + ": the host copy of the weights was freed after the upload to the GPU; "
                                            "the CPU path cannot run this model");
}

void Model::forward(const int32_t* ids, int64_t T, int64_t start_pos, KvCache& cache, const ForwardOptions& opt,
                    ForwardOutput& out) const {
    check_host_weights();
    const ModelConfig& c = m_config;
    const int64_t H = c.hidden_size, V = c.vocab_size;
    // Preconditions checked by the callers (Engine validates requests).
    std::vector<float> x(static_cast<size_t>(T * H));  // [T, H] residual stream
    for (int64_t t = 0; t < T; ++t) m_embed.row_to_f32(ids[t], x.data() + t * H);

    const int64_t n_moe = c.n_moe_layers(), K = c.num_experts_per_tok;
    RoutingRecord& rr = out.routing;
    rr.reset(opt.want_routing ? T : 0, n_moe, K);
    const bool absorbed = mla_absorbed(c, opt.mla_form, T, start_pos);
    const CacheFollowScope follow_scope(cache, opt.follow_cache);
    int64_t moe_index = 0;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
        const LayerWeights& lw = m_layers[size_t(l)];
        int32_t* ri = nullptr;
        float* rw = nullptr;
        if (opt.want_routing && lw.is_moe) {
            ri = rr.ids.data() + moe_index * K;
            rw = rr.weights.data() + moe_index * K;
        }
        const int32_t* follow = opt.follow_routing && lw.is_moe ? opt.follow_routing + moe_index * K : nullptr;
        block_forward(lw, l, x.data(), T, start_pos, cache, ri, rw, n_moe * K, absorbed, follow);
        moe_index += lw.is_moe ? 1 : 0;
    }
    cache.n_tokens = start_pos + T;

    const int64_t first_row = opt.all_logits ? 0 : T - 1;
    const int64_t n_rows = T - first_row;
    std::vector<float> hn(static_cast<size_t>(T * H));  // [T, H] after model.norm
    cpu::rmsnorm_rows(x.data(), m_norm.data(), float(c.rms_norm_eps), T, H, hn.data());
    out.logits.resize(static_cast<size_t>(n_rows * V));
    cpu::matmul(hn.data() + first_row * H, n_rows, m_lm_head, out.logits.data());  // [n_rows, V]
    if (opt.want_hidden) out.hidden = std::move(hn);
}

}  // namespace cetus
