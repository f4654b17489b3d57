// Experts run grouped: the tokens routed to one expert form one batch. Each
// token then sums its experts' outputs in ascending expert order, so its
// result does not depend on which other tokens shared the batch.
#include "moe.h"

#include "cetus/error.h"
#include "cpu/ops.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <exception>
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

namespace {

// One SwiGLU MLP's batch, out[n, H] = down(silu(gate x) * up x), as chunks of rows for
// the threads.
struct MlpJob {
    const MlpWeights* w = nullptr;
    const cpu::ProductInput* in = nullptr;  // x, prepared for gate and up
    cpu::ProductInput gathered;             // a routed expert's tokens (in points here)
    std::vector<float> x_rows;              // their fp32 rows
    std::vector<float> g, u;                // [n, I]; g becomes silu(g) * u
    cpu::ProductInput mid;                  // g, prepared for down
    float* out = nullptr;                   // [n, H]
};

// Rows per chunk: gate/up chunks of 128 rows of both (V2-Lite's experts: 11 a
// matrix), down chunks of 128 output rows.
constexpr int64_t k_chunk_rows = 128;

// Runs every job: all gate/up chunks (each also applying silu(g) * u to its rows; the
// last chunk of a job to finish prepares its g for down), then all down chunks. With
// parallel, one OpenMP region whose threads take chunks as they come free, whatever
// expert they belong to: two barriers a layer instead of a region per product, and no
// thread idle while another finishes a large expert. Each value is computed as
// mlp_forward computes it alone (the same products over the same rows, the same bits).
void run_mlp_jobs(std::vector<MlpJob>& jobs, bool parallel) {
    struct Chunk {
        size_t job;
        int64_t r0, r1;
    };
    std::vector<Chunk> first, second;
    std::vector<std::atomic<int64_t>> left(jobs.size());
    for (size_t j = 0; j < jobs.size(); ++j) {
        MlpJob& J = jobs[j];
        const int64_t I = J.w->gate.rows, H = J.w->down.rows, n = J.in->n_tokens;
        J.g.resize(static_cast<size_t>(n * I));
        J.u.resize(static_cast<size_t>(n * I));
        int64_t count = 0;
        for (int64_t r = 0; r < I; r += k_chunk_rows, ++count) first.push_back({j, r, std::min(I, r + k_chunk_rows)});
        left[j].store(count, std::memory_order_relaxed);
        for (int64_t r = 0; r < H; r += k_chunk_rows) second.push_back({j, r, std::min(H, r + k_chunk_rows)});
    }
    auto gate_up = [&](const Chunk& c) {
        MlpJob& J = jobs[c.job];
        const int64_t I = J.w->gate.rows, n = J.in->n_tokens;
        cpu::matmul_rows(*J.in, J.w->gate, c.r0, c.r1, J.g.data(), I);
        cpu::matmul_rows(*J.in, J.w->up, c.r0, c.r1, J.u.data(), I);
        for (int64_t t = 0; t < n; ++t)
            for (int64_t i = t * I + c.r0; i < t * I + c.r1; ++i) J.g[size_t(i)] = cpu::silu(J.g[size_t(i)]) * J.u[size_t(i)];
        // The last chunk of the job sees every other chunk's rows (acquire-release).
        if (left[c.job].fetch_sub(1, std::memory_order_acq_rel) == 1)
            cpu::prepare_input(J.g.data(), I, n, I, {&J.w->down}, J.mid);
    };
    auto down = [&](const Chunk& c) {
        MlpJob& J = jobs[c.job];
        cpu::matmul_rows(J.mid, J.w->down, c.r0, c.r1, J.out, J.w->down.rows);
    };
    if (!parallel) {
        for (const Chunk& c : first) gate_up(c);
        for (const Chunk& c : second) down(c);
        return;
    }
    // An exception may not leave the region: the first is kept and rethrown after it.
    std::exception_ptr failure;
    std::atomic<bool> failed{false};
    auto guarded = [&](auto&& f, const Chunk& c) {
        if (failed.load(std::memory_order_relaxed)) return;
        try {
            f(c);
        } catch (...) {
#pragma omp critical(cetus_mlp_failure)
            if (!failure) failure = std::current_exception();
            failed.store(true, std::memory_order_relaxed);
        }
    };
    const int64_t n_first = int64_t(first.size()), n_second = int64_t(second.size());
#pragma omp parallel
    {
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < n_first; ++i) guarded(gate_up, first[size_t(i)]);
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < n_second; ++i) guarded(down, second[size_t(i)]);
    }
    if (failure) std::rethrow_exception(failure);
}

// Whether a batch of MLP work is worth the threads (see cpu::k_parallel_min_macs).
bool threads_worth_it(int64_t macs) {
    return macs >= cpu::k_parallel_min_macs && omp_get_max_threads() > 1 && !omp_in_parallel();
}

}  // namespace

void mlp_forward(const MlpWeights& w, const float* x, int64_t T, float* out) {
    std::vector<MlpJob> jobs(1);
    MlpJob& J = jobs[0];
    J.w = &w;
    cpu::prepare_input(x, w.gate.cols, T, w.gate.cols, {&w.gate, &w.up}, J.gathered);
    J.in = &J.gathered;
    J.out = out;
    run_mlp_jobs(jobs, threads_worth_it(3 * T * w.gate.rows * w.gate.cols));
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
    for (int64_t e = 0; e < E; ++e)
        if (!slots[size_t(e)].empty()) active.push_back(e);
    std::vector<float> y(static_cast<size_t>(T * K * H));  // [T, K, H] expert outputs
    std::vector<float> sh(w.has_shared ? static_cast<size_t>(T * H) : 0);
    // The shared expert first, then the routed ones in ascending order, all as one
    // batch of jobs; the activations are prepared once (quantised, for int8 products)
    // and each routed expert gathers its tokens' rows.
    std::vector<const Matrix*> inputs_for;
    if (w.has_shared) inputs_for.insert(inputs_for.end(), {&w.shared.gate, &w.shared.up});
    for (int64_t e : active) inputs_for.insert(inputs_for.end(), {&w.experts[size_t(e)].gate, &w.experts[size_t(e)].up});
    cpu::ProductInput all;
    cpu::prepare_input(x, H, T, H, inputs_for, all);
    std::vector<MlpJob> jobs(active.size() + (w.has_shared ? 1 : 0));
    std::vector<std::vector<float>> ye(active.size());
    size_t j = 0;
    if (w.has_shared) {
        jobs[j].w = &w.shared;
        jobs[j].in = &all;
        jobs[j].out = sh.data();
        ++j;
    }
    std::vector<int64_t> rows;
    for (size_t a = 0; a < active.size(); ++a, ++j) {
        const auto& sl = slots[size_t(active[a])];
        rows.resize(sl.size());
        for (size_t i = 0; i < sl.size(); ++i) rows[i] = sl[i] / K;
        MlpJob& J = jobs[j];
        J.w = &w.experts[size_t(active[a])];
        cpu::gather_input(all, rows.data(), int64_t(rows.size()), J.x_rows, J.gathered);
        J.in = &J.gathered;
        ye[a].resize(sl.size() * size_t(H));
        J.out = ye[a].data();
    }
    const int64_t inter = w.experts.empty() ? 0 : w.experts[0].gate.rows;
    const int64_t total_macs = 3 * H * (T * K * inter + (w.has_shared ? T * w.shared.gate.rows : 0));
    run_mlp_jobs(jobs, threads_worth_it(total_macs));
    for (size_t a = 0; a < active.size(); ++a) {
        const auto& sl = slots[size_t(active[a])];
        for (size_t i = 0; i < sl.size(); ++i) std::copy_n(ye[a].data() + i * size_t(H), H, y.data() + sl[i] * H);
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
