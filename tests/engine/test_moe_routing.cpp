// Router choices and gate weights against values worked out by hand from the
// formulas of the architecture doc, section 6.2.
#include "cetus/error.h"
#include "config.h"
#include "model.h"
#include "moe.h"

#include <QtTest>

#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

namespace {

cetus::ModelConfig config(const std::string& routing) {
    return cetus::parse_config(R"({"model_type":"deepseek_v3","vocab_size":16,"hidden_size":8,"intermediate_size":8,
      "moe_intermediate_size":4,"num_hidden_layers":2,"num_attention_heads":1,"kv_lora_rank":4,"qk_nope_head_dim":4,
      "qk_rope_head_dim":4,"v_head_dim":4,"first_k_dense_replace":1,)" + routing + "}",
                               "routing test");
}

float logit(float p) { return std::log(p / (1.0f - p)); }

// A random fp32 matrix [rows, cols] whose values the caller keeps.
cetus::Matrix random_matrix(std::vector<std::vector<float>>& keep, int64_t rows, int64_t cols, std::mt19937& gen) {
    std::normal_distribution<float> nd(0.0f, 0.1f);
    keep.emplace_back(size_t(rows * cols));
    for (float& v : keep.back()) v = nd(gen);
    cetus::Matrix m;
    m.rows = rows;
    m.cols = cols;
    m.data = keep.back().data();
    return m;
}

// down(silu(gate x) * up x) for one token, in double.
std::vector<double> mlp_double(const cetus::MlpWeights& w, const float* x) {
    const int64_t n_inter = w.gate.rows, n_out = w.down.rows, n_in = w.gate.cols;
    auto at = [](const cetus::Matrix& m, int64_t r, int64_t c) { return double(static_cast<const float*>(m.data)[r * m.cols + c]); };
    std::vector<double> h(static_cast<size_t>(n_inter)), out(static_cast<size_t>(n_out));
    for (int64_t i = 0; i < n_inter; ++i) {
        double g = 0, u = 0;
        for (int64_t c = 0; c < n_in; ++c) {
            g += at(w.gate, i, c) * x[c];
            u += at(w.up, i, c) * x[c];
        }
        h[size_t(i)] = g / (1.0 + std::exp(-g)) * u;
    }
    for (int64_t r = 0; r < n_out; ++r)
        for (int64_t i = 0; i < n_inter; ++i) out[size_t(r)] += at(w.down, r, i) * h[size_t(i)];
    return out;
}

}  // namespace

class TestMoeRouting : public QObject {
    Q_OBJECT
private slots:
    void noauxBiasSelectsButDoesNotWeight() {
        // s = sigmoid(z) = [.9 .1 .8 .7 .2 .3 .6 .5], bias lifts experts 4 and 5.
        // Biased c = [.9 .1 .8 .7 .7 .75 .6 .5]; group (pair) scores 1.0 1.5 1.45 1.1:
        // groups 1 and 2 kept, so expert 0 (best score) is excluded; top-2 of
        // {2:.8, 3:.7, 4:.7, 5:.75} = {2, 5}; weights from unbiased s: .8, .3.
        auto c = config(R"("n_routed_experts":8,"num_experts_per_tok":2,"n_group":4,"topk_group":2,
            "topk_method":"noaux_tc","scoring_func":"sigmoid","norm_topk_prob":true,"routed_scaling_factor":2.5)");
        const float s[8] = {.9f, .1f, .8f, .7f, .2f, .3f, .6f, .5f};
        const float bias[8] = {0, 0, 0, 0, .5f, .45f, 0, 0};
        float z[8];
        for (int i = 0; i < 8; ++i) z[i] = logit(s[i]);
        int32_t ids[2];
        float w[2];
        cetus::route_token(c, z, bias, ids, w);
        QCOMPARE(ids[0], 2);
        QCOMPARE(ids[1], 5);
        QVERIFY(std::fabs(w[0] - 2.5f * .8f / 1.1f) < 1e-5f);
        QVERIFY(std::fabs(w[1] - 2.5f * .3f / 1.1f) < 1e-5f);
    }

    void noauxOneGroupIsPlainTopK() {
        auto c = config(R"("n_routed_experts":8,"num_experts_per_tok":2,"n_group":1,"topk_group":1,
            "topk_method":"noaux_tc","scoring_func":"sigmoid","norm_topk_prob":false,"routed_scaling_factor":1.0)");
        const float s[8] = {.9f, .1f, .8f, .7f, .2f, .3f, .6f, .5f};
        const float bias[8] = {0, 0, 0, 0, .5f, .45f, 0, 0};
        float z[8];
        for (int i = 0; i < 8; ++i) z[i] = logit(s[i]);
        int32_t ids[2];
        float w[2];
        cetus::route_token(c, z, bias, ids, w);
        QCOMPARE(ids[0], 0);  // c = .9
        QCOMPARE(ids[1], 2);  // c = .8 beats 5 (.75)
        QVERIFY(std::fabs(w[0] - .9f) < 1e-5f);  // not normalised
        QVERIFY(std::fabs(w[1] - .8f) < 1e-5f);
    }

    void softmaxGreedy() {
        auto c = config(R"("n_routed_experts":4,"num_experts_per_tok":2,"topk_method":"greedy",
            "scoring_func":"softmax","norm_topk_prob":false,"routed_scaling_factor":1.0)");
        const float z[4] = {1, 2, 3, .5f};
        const double den = std::exp(1.0) + std::exp(2.0) + std::exp(3.0) + std::exp(.5);
        int32_t ids[2];
        float w[2];
        cetus::route_token(c, z, nullptr, ids, w);
        QCOMPARE(ids[0], 1);
        QCOMPARE(ids[1], 2);
        QVERIFY(std::fabs(w[0] - std::exp(2.0) / den) < 1e-6);  // weights sum to < 1
        QVERIFY(std::fabs(w[1] - std::exp(3.0) / den) < 1e-6);
    }

    void softmaxGroupLimitedUsesGroupMax() {
        // Group maxima: g0 3, g1 1.2, g2 2.5, g3 .2 -> keep g0, g2 -> experts 0,1,4,5;
        // top-3 by score: 1 (3), 4 (2.5), 0 (0); weights = softmax over all 8, times 16.
        auto c = config(R"("n_routed_experts":8,"num_experts_per_tok":3,"n_group":4,"topk_group":2,
            "topk_method":"group_limited_greedy","scoring_func":"softmax","norm_topk_prob":false,
            "routed_scaling_factor":16.0)");
        const float z[8] = {0, 3, 1, 1.2f, 2.5f, -1, .2f, .1f};
        double den = 0;
        for (float v : z) den += std::exp(double(v));
        int32_t ids[3];
        float w[3];
        cetus::route_token(c, z, nullptr, ids, w);
        QCOMPARE(ids[0], 0);
        QCOMPARE(ids[1], 1);
        QCOMPARE(ids[2], 4);
        QVERIFY(std::fabs(w[0] - 16 * std::exp(0.0) / den) < 1e-5);
        QVERIFY(std::fabs(w[1] - 16 * std::exp(3.0) / den) < 1e-5);
        QVERIFY(std::fabs(w[2] - 16 * std::exp(2.5) / den) < 1e-5);
    }

    void normTopkSkippedForSingleExpert() {
        auto c = config(R"("n_routed_experts":4,"num_experts_per_tok":1,"topk_method":"noaux_tc",
            "scoring_func":"sigmoid","norm_topk_prob":true,"routed_scaling_factor":2.0)");
        const float z[4] = {0, 1, -1, .5f};
        int32_t id;
        float w;
        cetus::route_token(c, z, nullptr, &id, &w);
        QCOMPARE(id, 1);
        QVERIFY(std::fabs(w - 2.0f / (1.0f + std::exp(-1.0f))) < 1e-6f);
    }

    // A MoE layer whose experts' rows go to the threads in chunks (several chunks an
    // expert, and down rows past one chunk): the same bits on one thread and on two,
    // a token the same bits alone and in the batch, each token within 1e-5 of the
    // formula in double (its routed experts weighted as reported, plus the shared
    // one); a shared expert whose down projection is the wrong width is an Error on
    // either path, not a crash.
    void layerOnThreads() {
        const int64_t hidden = 160, inter = 300, inter_s = 200, E = 8, K = 3, T = 5;
        auto c = cetus::parse_config(R"({"model_type":"deepseek_v3","vocab_size":16,"hidden_size":160,
          "intermediate_size":8,"moe_intermediate_size":300,"num_hidden_layers":2,"num_attention_heads":1,
          "kv_lora_rank":4,"qk_nope_head_dim":4,"qk_rope_head_dim":4,"v_head_dim":4,"first_k_dense_replace":1,
          "n_routed_experts":8,"num_experts_per_tok":3,"n_shared_experts":1,"n_group":1,"topk_group":1,
          "topk_method":"noaux_tc","scoring_func":"sigmoid","norm_topk_prob":true,"routed_scaling_factor":2.5})",
                                     "threads test");
        std::mt19937 gen(7);
        std::vector<std::vector<float>> keep;
        cetus::MoeWeights w;
        w.gate = random_matrix(keep, E, hidden, gen);
        for (int64_t e = 0; e < E; ++e)
            w.experts.push_back({random_matrix(keep, inter, hidden, gen), random_matrix(keep, inter, hidden, gen), random_matrix(keep, hidden, inter, gen)});
        w.shared = {random_matrix(keep, inter_s, hidden, gen), random_matrix(keep, inter_s, hidden, gen), random_matrix(keep, hidden, inter_s, gen)};
        w.has_shared = true;
        std::normal_distribution<float> nd(0.0f, 1.0f);
        std::vector<float> x(size_t(T * hidden));
        for (float& v : x) v = nd(gen);
        const int saved = omp_get_max_threads();
        auto run = [&](int threads, int64_t n, const float* in, std::vector<int32_t>* ids, std::vector<float>* gw) {
            struct Threads {  // set for the call, restored however it ends
                explicit Threads(int n, int back) : back(back) { omp_set_num_threads(n); }
                ~Threads() { omp_set_num_threads(back); }
                int back;
            } scope(threads, saved);
            std::vector<float> out(size_t(n * hidden));
            std::vector<int32_t> i(size_t(n * K));
            std::vector<float> g(size_t(n * K));
            cetus::moe_forward(c, w, in, n, out.data(), i.data(), g.data(), K);
            if (ids) *ids = i;
            if (gw) *gw = g;
            return out;
        };
        std::vector<int32_t> ids;
        std::vector<float> gw;
        const auto one = run(1, T, x.data(), nullptr, nullptr), two = run(2, T, x.data(), &ids, &gw);
        QVERIFY(std::memcmp(one.data(), two.data(), one.size() * 4) == 0);
        const auto alone = run(2, 1, x.data() + 3 * hidden, nullptr, nullptr);
        QVERIFY(std::memcmp(alone.data(), two.data() + 3 * hidden, size_t(hidden) * 4) == 0);
        for (int64_t t = 0; t < T; ++t) {
            std::vector<double> want = mlp_double(w.shared, x.data() + t * hidden);
            for (int64_t k = 0; k < K; ++k) {
                const auto y = mlp_double(w.experts[size_t(ids[size_t(t * K + k)])], x.data() + t * hidden);
                for (int64_t r = 0; r < hidden; ++r) want[size_t(r)] += double(gw[size_t(t * K + k)]) * y[size_t(r)];
            }
            for (int64_t r = 0; r < hidden; ++r)
                QVERIFY2(std::fabs(two[size_t(t * hidden + r)] - want[size_t(r)]) <= 1e-5 * (1 + std::fabs(want[size_t(r)])),
                         qPrintable(QStringLiteral("token %1 row %2: %3 vs %4").arg(t).arg(r).arg(two[size_t(t * hidden + r)]).arg(want[size_t(r)])));
        }
        w.shared.down = random_matrix(keep, hidden, inter_s + 8, gen);  // wider than the shared expert's rows
        for (int threads : {1, 2}) QVERIFY_THROWS_EXCEPTION(cetus::Error, run(threads, T, x.data(), nullptr, nullptr));
        QCOMPARE(omp_get_max_threads(), saved);
    }
};

QTEST_GUILESS_MAIN(TestMoeRouting)
#include "test_moe_routing.moc"
