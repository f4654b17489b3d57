// Experts run grouped: the tokens routed to one expert form one batch. Each
// token then sums its experts' outputs in ascending expert order, so its
// result does not depend on which other tokens shared the batch.
#include "moe.h"

#include "cetus/error.h"
#include "cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

namespace cetus {

namespace {

// The experts' scores: sigmoid or softmax of the router logits z[E].
std::vector<float> scores(const ModelConfig& c, const float* z) {
    const int64_t E = c.n_routed_experts;
    std::vector<float> s(static_cast<size_t>(E));
    if (c.scoring_func == ScoringFunc::Sigmoid) {
        for (int64_t e = 0; e < E; ++e) s[size_t(e)] = 1.0f / (1.0f + std::exp(-z[e]));
    } else {
        std::copy(z, z + E, s.begin());
        cpu::softmax(s.data(), E);
    }
    return s;
}

// Gate weights of the chosen ids[K]: their unbiased scores, normalised iff
// norm_topk_prob && K > 1, times routed_scaling_factor.
void weigh_scores(const ModelConfig& c, const float* s, const int32_t* ids, float* weights) {
    const int64_t K = c.num_experts_per_tok;
    float sum = 0.0f;
    for (int64_t k = 0; k < K; ++k) {
        weights[k] = s[ids[k]];
        sum += weights[k];
    }
    const bool normalise = c.norm_topk_prob && K > 1;
    for (int64_t k = 0; k < K; ++k) {
        if (normalise) weights[k] /= (sum + 1e-20f);
        weights[k] *= float(c.routed_scaling_factor);
    }
}

}  // namespace

void route_token(const ModelConfig& c, const float* z, const float* bias, int32_t* ids, float* weights) {
    const int64_t E = c.n_routed_experts, K = c.num_experts_per_tok;
    const std::vector<float> s = scores(c, z);
    std::vector<float> choice(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) choice[size_t(e)] = s[size_t(e)] + (bias ? bias[e] : 0.0f);

    const float neg_inf = -std::numeric_limits<float>::infinity();
    if (c.topk_method != TopkMethod::Greedy && c.n_group > 1) {
        const int64_t G = c.n_group, per = E / G;
        std::vector<float> group_score(static_cast<size_t>(G));
        for (int64_t g = 0; g < G; ++g) {
            const float* cg = choice.data() + g * per;
            if (c.topk_method == TopkMethod::NoauxTc) {  // sum of the two best
                float a = neg_inf, b = neg_inf;
                for (int64_t i = 0; i < per; ++i) {
                    if (cg[i] > a) { b = a; a = cg[i]; }
                    else if (cg[i] > b) b = cg[i];
                }
                group_score[size_t(g)] = a + b;
            } else {  // group_limited_greedy: the best
                group_score[size_t(g)] = *std::max_element(cg, cg + per);
            }
        }
        std::vector<int64_t> order(static_cast<size_t>(G));
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + c.topk_group, order.end(),
                          [&](int64_t x, int64_t y) { return group_score[size_t(x)] > group_score[size_t(y)]; });
        std::vector<char> keep(static_cast<size_t>(G), 0);
        for (int64_t i = 0; i < c.topk_group; ++i) keep[size_t(order[size_t(i)])] = 1;
        for (int64_t e = 0; e < E; ++e)
            if (!keep[size_t(e / per)]) choice[size_t(e)] = neg_inf;
    }
    std::vector<int32_t> order(static_cast<size_t>(E));
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + K, order.end(), [&](int32_t x, int32_t y) {
        return choice[size_t(x)] > choice[size_t(y)] || (choice[size_t(x)] == choice[size_t(y)] && x < y);
    });
    std::sort(order.begin(), order.begin() + K);
    for (int64_t k = 0; k < K; ++k) ids[k] = order[size_t(k)];
    weigh_scores(c, s.data(), ids, weights);
}

void mlp_forward(const MlpWeights& w, const float* x, int64_t T, float* out) {
    const int64_t I = w.gate.rows;
    std::vector<float> g(static_cast<size_t>(T * I)), u(static_cast<size_t>(T * I));  // [T, I]
    cpu::matmul(x, T, w.gate, g.data());
    cpu::matmul(x, T, w.up, u.data());
    for (int64_t i = 0; i < T * I; ++i) g[size_t(i)] = cpu::silu(g[size_t(i)]) * u[size_t(i)];
    cpu::matmul(g.data(), T, w.down, out);  // [T, H]
}

void moe_forward(const ModelConfig& c, const MoeWeights& w, const float* x, int64_t T, float* out,
                 int32_t* route_ids, float* route_w, int64_t route_stride, const int32_t* follow) {
    const int64_t H = c.hidden_size, E = c.n_routed_experts, K = c.num_experts_per_tok;
    std::vector<float> z(static_cast<size_t>(T * E));  // [T, E] router logits, fp32
    cpu::matmul(x, T, w.gate, z.data());
    std::vector<int32_t> ids(static_cast<size_t>(T * K));
    std::vector<float> gw(static_cast<size_t>(T * K));
    const float* bias = w.e_score_correction_bias.empty() ? nullptr : w.e_score_correction_bias.data();
    for (int64_t t = 0; t < T; ++t) route_token(c, z.data() + t * E, bias, ids.data() + t * K, gw.data() + t * K);
    if (route_ids) {  // this layer's own choices, also when it follows others below
        for (int64_t t = 0; t < T; ++t) {
            std::copy_n(ids.data() + t * K, K, route_ids + t * route_stride);
            std::copy_n(gw.data() + t * K, K, route_w + t * route_stride);
        }
    }
    if (follow) {
        for (int64_t t = 0; t < T; ++t) {
            for (int64_t k = 0; k < K; ++k) {
                const int32_t e = follow[t * route_stride + k];
                if (e < 0 || e >= E) throw Error(ErrorCode::BadRequest, "routing to follow names expert " + std::to_string(e));
                ids[size_t(t * K + k)] = e;
            }
            weigh_scores(c, scores(c, z.data() + t * E).data(), ids.data() + t * K, gw.data() + t * K);
        }
    }

    // Group (token, slot) pairs by expert.
    std::vector<std::vector<int64_t>> slots(static_cast<size_t>(E));
    for (int64_t i = 0; i < T * K; ++i) slots[size_t(ids[size_t(i)])].push_back(i);
    std::vector<int64_t> active;
    int64_t largest = 0;  // pairs of the busiest expert
    for (int64_t e = 0; e < E; ++e)
        if (!slots[size_t(e)].empty()) {
            active.push_back(e);
            largest = std::max<int64_t>(largest, int64_t(slots[size_t(e)].size()));
        }
    std::vector<float> y(static_cast<size_t>(T * K * H));  // [T, K, H] expert outputs
    auto run_expert = [&](int64_t e, std::vector<float>& xe, std::vector<float>& ye) {
        const auto& sl = slots[size_t(e)];
        const int64_t n = int64_t(sl.size());
        xe.resize(static_cast<size_t>(n * H));
        ye.resize(static_cast<size_t>(n * H));
        for (int64_t i = 0; i < n; ++i) std::copy_n(x + (sl[size_t(i)] / K) * H, H, xe.data() + i * H);
        mlp_forward(w.experts[size_t(e)], xe.data(), n, ye.data());
        for (int64_t i = 0; i < n; ++i) std::copy_n(ye.data() + i * H, H, y.data() + sl[size_t(i)] * H);
    };
    std::vector<float> sh(w.has_shared ? static_cast<size_t>(T * H) : 0);
    // Decode-sized batches: each expert's products are too small to share out
    // (cpu::k_parallel_min_macs), so the experts themselves (and the shared
    // expert) go to the threads, one parallel region per layer, when together
    // they are worth waking the threads for. Each expert is computed the same
    // way either way, and the sums below keep their order.
    const int64_t inter = w.experts.empty() ? 0 : w.experts[0].gate.rows;
    const int64_t n_tasks = int64_t(active.size()) + (w.has_shared ? 1 : 0);
    const int64_t total_macs = 3 * H * (T * K * inter + (w.has_shared ? T * w.shared.gate.rows : 0));
    if (largest * inter * H < cpu::k_parallel_min_macs && total_macs >= cpu::k_parallel_min_macs && n_tasks > 1) {
#pragma omp parallel
        {
            std::vector<float> xe, ye;
#pragma omp for schedule(dynamic, 1)
            for (int64_t i = 0; i < n_tasks; ++i) {
                if (i < int64_t(active.size())) run_expert(active[size_t(i)], xe, ye);
                else mlp_forward(w.shared, x, T, sh.data());
            }
        }
    } else {
        std::vector<float> xe, ye;
        for (int64_t e : active) run_expert(e, xe, ye);
        if (w.has_shared) mlp_forward(w.shared, x, T, sh.data());
    }
    for (int64_t t = 0; t < T; ++t) {
        float* ot = out + t * H;
        std::fill(ot, ot + H, 0.0f);
        for (int64_t k = 0; k < K; ++k) cpu::axpy(gw[size_t(t * K + k)], y.data() + (t * K + k) * H, ot, H);
    }
    if (w.has_shared)
        for (int64_t i = 0; i < T * H; ++i) out[i] += sh[size_t(i)];
}

}  // namespace cetus
