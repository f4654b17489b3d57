// Router choices and gate weights against values worked out by hand from the
// formulas of the architecture doc, section 6.2.
#include "config.h"
#include "moe.h"

#include <QtTest>

#include <cmath>

namespace {

cetus::ModelConfig config(const std::string& routing) {
    return cetus::parse_config(R"({"model_type":"deepseek_v3","vocab_size":16,"hidden_size":8,"intermediate_size":8,
      "moe_intermediate_size":4,"num_hidden_layers":2,"num_attention_heads":1,"kv_lora_rank":4,"qk_nope_head_dim":4,
      "qk_rope_head_dim":4,"v_head_dim":4,"first_k_dense_replace":1,)" + routing + "}",
                               "routing test");
}

float logit(float p) { return std::log(p / (1.0f - p)); }

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
};

QTEST_GUILESS_MAIN(TestMoeRouting)
#include "test_moe_routing.moc"
