// MLA on the CPU. The absorbed form computes, per head, q_abs = W_UK^T q_nope
// (d_c wide), scores against the cached latent, ctx = sum p * c_kv, and
// O = W_UV ctx; the naive form expands K and V from the latent with kv_b_proj.
// Both give the same numbers up to rounding; the scale is 1/sqrt(d_n + d_r)
// times the YaRN mscale^2 in both.
#include "mla.h"

#include "cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace cetus {

namespace {
// Queries per block of the naive form (mla_forward).
constexpr int64_t k_query_block = 256;
// W_UK rows decoded at a time by the absorbed form (16 KB of fp32 at V2/V3's d_c = 512).
constexpr int64_t k_uk_rows = 8;
// Queries that go over the latent cache together in the absorbed form (their rows, 8 x
// 576 fp32 at V2/V3's widths, stay in the first-level cache beside 4 cache rows).
constexpr int64_t k_attention_group = 8;
// Tokens the absorbed form takes at a time (its buffers grow with heads x tokens).
constexpr int64_t k_absorbed_tokens = 64;
}  // namespace

void mla_forward(const ModelConfig& c, const Rope& rope, const AttentionWeights& w, const float* a,
                 int64_t T, int64_t start_pos, const CacheRows& cache, float* out, bool absorbed) {
    const int64_t H = c.hidden_size, n_h = c.num_attention_heads;
    const int64_t d_n = c.qk_nope_head_dim, d_r = c.qk_rope_head_dim, d_v = c.v_head_dim;
    const int64_t d_qk = d_n + d_r, d_c = c.kv_lora_rank;
    const float scale = float(c.softmax_scale());

    // Queries (or their compressed form) and the latent with the shared rotary key,
    // both from a: one product over the two matrices' rows.
    std::vector<float> q(static_cast<size_t>(T * n_h * d_qk));  // [T, n_h, d_qk]
    std::vector<float> kv(static_cast<size_t>(T * (d_c + d_r)));  // [T, d_c + d_r]
    const Matrix& wq = c.q_lora_rank > 0 ? w.q_a_proj : w.q_proj;
    std::vector<float> cq(c.q_lora_rank > 0 ? static_cast<size_t>(T * c.q_lora_rank) : 0);  // [T, d_q]
    {
        cpu::ProductInput in;
        cpu::prepare_input(a, H, T, H, {&wq, &w.kv_a_proj_with_mqa}, in);
        cpu::matmul_many(in, {{&wq, c.q_lora_rank > 0 ? cq.data() : q.data(), wq.rows},
                              {&w.kv_a_proj_with_mqa, kv.data(), d_c + d_r}});
    }
    if (c.q_lora_rank > 0) {
        const int64_t d_q = c.q_lora_rank;
        cpu::rmsnorm_rows(cq.data(), w.q_a_layernorm.data(), k_latent_norm_eps, T, d_q, cq.data());
        cpu::matmul(cq.data(), T, w.q_b_proj, q.data());
    }

    // The latent and rotary key into the cache.
    std::vector<float> cs(static_cast<size_t>(T * d_r));  // [T, d_r] cos/sin pairs
    std::vector<float> row(static_cast<size_t>(d_c + d_r));
    for (int64_t t = 0; t < T; ++t) {
        rope.angles(start_pos + t, cs.data() + t * d_r);
        cpu::rmsnorm(kv.data() + t * (d_c + d_r), w.kv_a_layernorm.data(), k_latent_norm_eps, d_c, row.data());
        std::copy_n(kv.data() + t * (d_c + d_r) + d_c, d_r, row.data() + d_c);
        rope.apply(row.data() + d_c, cs.data() + t * d_r);
        cache.store(start_pos + t, row.data());  // rounded in a bf16 cache; attention reads what is stored
        for (int64_t h = 0; h < n_h; ++h) rope.apply(q.data() + (t * n_h + h) * d_qk + d_n, cs.data() + t * d_r);
    }

    std::vector<float> o(static_cast<size_t>(T * n_h * d_v));  // [T, n_h, d_v]
    const int64_t n_ctx = start_pos + T;
    const int64_t cw = cache.width;
    // The absorbed form, the threads taking contiguous ranges of heads, k_absorbed_tokens
    // tokens at a time. For each of its heads a thread makes every token's query
    // q_abs = W_UK^T q_nope (d_c wide), W_UK's rows decoded k_uk_rows at a time into a
    // buffer that stays in the first-level cache. Its queries (head, token), each
    // [q_abs ; q_pe] as wide as a cache row, then go over the cache rows
    // k_attention_group at a time (cpu::rows_dot, cpu::weighted_rows), so a thread reads
    // the cache twice per group instead of twice per query: scores, the softmax over the
    // query's own causal rows (later rows weigh 0), and the context. Last O = W_UV ctx
    // per head, a product with kv_b_proj's value rows (the int8 products where the
    // matrix takes them).
    auto absorbed_attention = [&](const auto* rows) {
        const int64_t macs = T * n_h * (d_c * (d_n + d_v) + n_ctx * (2 * d_c + d_r));
        const int64_t k = d_c + d_r;  // a query's and a cache row's width
        cpu::for_ranges(n_h, macs >= cpu::k_parallel_min_macs, [&](int64_t h0, int64_t h1) {
            const int64_t tb_max = std::min(T, k_absorbed_tokens);
            std::vector<float> wk(static_cast<size_t>(k_uk_rows * d_c));
            std::vector<float> qc(static_cast<size_t>((h1 - h0) * tb_max * k));
            std::vector<float> ctx(static_cast<size_t>((h1 - h0) * tb_max * d_c));
            std::vector<float> p(static_cast<size_t>(std::min((h1 - h0) * tb_max, k_attention_group) * n_ctx));
            cpu::ProductInput in;
            for (int64_t t0 = 0; t0 < T; t0 += k_absorbed_tokens) {
                const int64_t tb = std::min(k_absorbed_tokens, T - t0);
                const int64_t n_q = (h1 - h0) * tb;  // query i: head h0 + i / tb, token t0 + i % tb
                std::fill_n(qc.begin(), n_q * k, 0.0f);
                std::fill_n(ctx.begin(), n_q * d_c, 0.0f);
                for (int64_t h = h0; h < h1; ++h) {
                    float* qh_c = qc.data() + (h - h0) * tb * k;
                    const int64_t r_k = h * (d_n + d_v);  // this head's W_UK rows
                    for (int64_t j0 = 0; j0 < d_n; j0 += k_uk_rows) {
                        const int64_t nj = std::min(k_uk_rows, d_n - j0);
                        cpu::rows_to_f32(w.kv_b_proj, r_k + j0, r_k + j0 + nj, wk.data());
                        for (int64_t t = 0; t < tb; ++t) {
                            const float* qh = q.data() + ((t0 + t) * n_h + h) * d_qk + j0;
                            for (int64_t j = 0; j < nj; ++j)
                                cpu::axpy(qh[j], wk.data() + j * d_c, qh_c + t * k, d_c);
                        }
                    }
                    for (int64_t t = 0; t < tb; ++t)
                        std::copy_n(q.data() + ((t0 + t) * n_h + h) * d_qk + d_n, d_r, qh_c + t * k + d_c);
                }
                for (int64_t i0 = 0; i0 < n_q; i0 += k_attention_group) {
                    const int64_t g = std::min(k_attention_group, n_q - i0);
                    int64_t n_s = 0;  // rows the group's queries see
                    for (int64_t i = i0; i < i0 + g; ++i) n_s = std::max(n_s, start_pos + t0 + i % tb + 1);
                    cpu::rows_dot(qc.data() + i0 * k, k, g, rows, cw, n_s, k, p.data(), n_s);
                    for (int64_t i = i0; i < i0 + g; ++i) {
                        float* pi = p.data() + (i - i0) * n_s;
                        const int64_t n_i = start_pos + t0 + i % tb + 1;  // causal
                        for (int64_t s = 0; s < n_i; ++s) pi[s] *= scale;
                        cpu::softmax(pi, n_i);
                        std::fill(pi + n_i, pi + n_s, 0.0f);
                    }
                    cpu::weighted_rows(p.data(), n_s, g, rows, cw, n_s, d_c, ctx.data() + i0 * d_c, d_c);
                }
                for (int64_t h = h0; h < h1; ++h) {
                    const int64_t r_v = h * (d_n + d_v) + d_n;  // this head's W_UV rows
                    cpu::prepare_input(ctx.data() + (h - h0) * tb * d_c, d_c, tb, d_c, {&w.kv_b_proj}, in);
                    cpu::matmul_rows_at(in, w.kv_b_proj, r_v, r_v + d_v, o.data() + (t0 * n_h + h) * d_v, n_h * d_v);
                }
            }
        });
    };
    if (absorbed) {
        if (cache.type == KvCacheType::F32) absorbed_attention(cache.f32(0));
        else absorbed_attention(cache.bf16(0));
    } else {
        // The rows as fp32: the cache itself, or a bf16 cache's rows widened (exactly).
        std::vector<float> widened;
        const float* rows = cache.f32(0);
        if (cache.type != KvCacheType::F32) {
            widened.resize(static_cast<size_t>(n_ctx * cw));
            cache.load(0, n_ctx, widened.data());
            rows = widened.data();
        }
        // Expand keys and values for every cached position: [n_ctx, n_h, d_n + d_v].
        std::vector<float> u(static_cast<size_t>(n_ctx * n_h * (d_n + d_v)));
        cpu::matmul_strided(rows, cw, n_ctx, w.kv_b_proj, u.data(), n_h * (d_n + d_v));
        // Per head and block of up to k_query_block queries t0 .. t0 + nb - 1, as two
        // products over the w = start_pos + t0 + nb positions the block's last query
        // sees: scores = [q_nope ; q_pe] [k_nope ; k_pe]^T ([nb, w]), causal mask,
        // softmax, then o = P V. (One block over the whole chunk would compute all of
        // its scores above the causal diagonal: half of them for a prompt's first
        // chunk.) The head's keys [n_ctx, d_qk] are gathered first and each block's
        // transposed values [d_v, w], so both products read contiguous rows
        // (cpu::matmul's weight layout).
        std::vector<float> k(static_cast<size_t>(n_ctx * d_qk)), vt(static_cast<size_t>(d_v * n_ctx));
        std::vector<float> p(static_cast<size_t>(std::min(T, k_query_block) * n_ctx));
        for (int64_t h = 0; h < n_h; ++h) {
            for (int64_t s = 0; s < n_ctx; ++s) {
                const float* us = u.data() + (s * n_h + h) * (d_n + d_v);
                std::copy_n(us, d_n, k.data() + s * d_qk);
                std::copy_n(rows + s * cw + d_c, d_r, k.data() + s * d_qk + d_n);
            }
            for (int64_t t0 = 0; t0 < T; t0 += k_query_block) {
                const int64_t nb = std::min(k_query_block, T - t0), w = start_pos + t0 + nb;
                for (int64_t j = 0; j < d_v; ++j)
                    for (int64_t s = 0; s < w; ++s)
                        vt[size_t(j * w + s)] = u[size_t((s * n_h + h) * (d_n + d_v) + d_n + j)];
                const cpu::F32View keys{k.data(), w, d_qk}, values{vt.data(), d_v, w};
                cpu::matmul_strided(q.data() + (t0 * n_h + h) * d_qk, n_h * d_qk, nb, keys.matrix(), p.data(), w);
#pragma omp parallel for if (nb * w >= cpu::k_parallel_min_macs / 16) schedule(static)
                for (int64_t i = 0; i < nb; ++i) {
                    float* pt = p.data() + i * w;
                    const int64_t n_s = start_pos + t0 + i + 1;  // causal
                    for (int64_t s = 0; s < n_s; ++s) pt[s] *= scale;
                    cpu::softmax(pt, n_s);
                    std::fill(pt + n_s, pt + w, 0.0f);
                }
                cpu::matmul_strided(p.data(), w, nb, values.matrix(), o.data() + (t0 * n_h + h) * d_v, n_h * d_v);
            }
        }
    }
    cpu::matmul(o.data(), T, w.o_proj, out);  // [T, H]
    (void)H;
}

bool mla_absorbed(const ModelConfig& c, const MlaFormPolicy& policy, int64_t n_tokens, int64_t start_pos) {
    if (n_tokens <= policy.absorb_max_tokens) return true;
    if (!policy.by_cost) return false;
    const MlaDims d{double(c.kv_lora_rank), double(c.qk_rope_head_dim), double(c.qk_nope_head_dim),
                    double(c.v_head_dim)};
    MlaFormCosts cpu;  // every product a plain fp32 one; the absorbed scores per query
    cpu.query_block = k_query_block;
    return mla_absorbed_macs(d, n_tokens, start_pos, cpu) < mla_expanded_macs(d, n_tokens, start_pos, cpu);
}

}  // namespace cetus
