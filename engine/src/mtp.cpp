// The multi-token-prediction module (architecture doc section 7.1):
// x = eh_proj [enorm(embed(t_{i+1})) ; hnorm(h_i)], one decoder block over its
// own latent cache at position i, then shared_head.norm and shared_head.head.
// The main model's hidden h_i is the post-model.norm state.
#include "cpu/ops.h"
#include "mla.h"
#include "model.h"

namespace cetus {

void Model::mtp_forward(int64_t k, const float* hidden, const int32_t* next_ids, int64_t T, int64_t start_pos,
                        KvCache& cache, std::vector<float>* logits, std::vector<float>* out_hidden,
                        const MtpPassOptions& po) const {
    check_host_weights();
    const ModelConfig& c = m_config;
    const MtpWeights& m = m_mtp[size_t(k)];
    const int64_t H = c.hidden_size, V = c.vocab_size;
    const float eps = float(c.rms_norm_eps);
    std::vector<float> cat(static_cast<size_t>(T * 2 * H)), tmp(static_cast<size_t>(H));  // [T, 2H]: embedding first, then hidden
    for (int64_t t = 0; t < T; ++t) {
        m.embed_tokens.row_to_f32(next_ids[t], tmp.data());
        cpu::rmsnorm(tmp.data(), m.enorm.data(), eps, H, cat.data() + t * 2 * H);
        cpu::rmsnorm(hidden + t * H, m.hnorm.data(), eps, H, cat.data() + t * 2 * H + H);
    }
    std::vector<float> x(static_cast<size_t>(T * H));  // [T, H]
    cpu::matmul(cat.data(), T, m.eh_proj, x.data());
    const int64_t K = c.num_experts_per_tok;
    int32_t* route_ids = nullptr;
    float* route_w = nullptr;
    if (po.routing) {
        RoutingRecord& rr = *po.routing;
        rr.reset(T, m.block.is_moe ? 1 : 0, K);
        if (m.block.is_moe) {
            route_ids = rr.ids.data();
            route_w = rr.weights.data();
        }
    }
    const CacheFollowScope follow_scope(cache, po.follow_cache);
    block_forward(m.block, c.num_hidden_layers + k, x.data(), T, start_pos, cache, route_ids, route_w, K,
                  mla_absorbed(c, po.mla_form, T, start_pos), m.block.is_moe ? po.follow_routing : nullptr);
    std::vector<float> y(static_cast<size_t>(T * H));  // [T, H] after shared_head.norm
    cpu::rmsnorm_rows(x.data(), m.shared_head_norm.data(), eps, T, H, y.data());
    if (logits) {
        logits->resize(static_cast<size_t>(T * V));
        cpu::matmul(y.data(), T, m.shared_head_head, logits->data());  // [T, V]
    }
    if (out_hidden) *out_hidden = std::move(y);
}

}  // namespace cetus
