// YaRN against the worked numbers of the architecture doc (section 4.2, 4.4,
// 9.1) and rotation against complex multiplication.
#include "config.h"
#include "rope.h"

#include <QtTest>

#include <cmath>
#include <complex>

using cetus::parse_config;

namespace {

std::string v3_like(const std::string& extra_rope) {
    return R"({"model_type":"deepseek_v3","vocab_size":16,"hidden_size":8,"intermediate_size":8,
      "num_hidden_layers":1,"num_attention_heads":1,"kv_lora_rank":4,"qk_nope_head_dim":128,
      "qk_rope_head_dim":64,"v_head_dim":128,"max_position_embeddings":163840,"rope_theta":10000,
      "rope_scaling":{"type":"yarn","factor":40,"original_max_position_embeddings":4096,"beta_fast":32,
      "beta_slow":1)" + extra_rope + "}}";
}

}  // namespace

class TestRope : public QObject {
    Q_OBJECT
private slots:
    void v3InverseFrequencies() {
        auto c = parse_config(v3_like(R"(,"mscale":1.0,"mscale_all_dim":1.0)"), "v3");
        cetus::Rope rope(c);
        const auto& f = rope.inv_freq();
        QCOMPARE(f.size(), size_t(32));
        // pairs 0..10 keep theta^(-2i/64)
        for (int i = 0; i <= 10; ++i) QVERIFY(std::fabs(f[i] - std::pow(10000.0, -2.0 * i / 64)) < 1e-6 * f[i] + 1e-9);
        QVERIFY(std::fabs(f[1] - 0.749894f) < 1e-6);
        QVERIFY(std::fabs(f[10] - 0.0562341f) < 1e-7);
        QVERIFY(std::fabs(f[11] - 0.0390069f) / 0.0390069f < 1e-5);
        QVERIFY(std::fabs(f[12] - 0.0268794f) / 0.0268794f < 1e-5);
        QVERIFY(std::fabs(f[22] - 0.000177828f) / 0.000177828f < 1e-5);
        QVERIFY(std::fabs(f[23] - 3.3338e-05f) / 3.3338e-05f < 1e-4);
        QVERIFY(std::fabs(f[31] - 3.3338e-06f) / 3.3338e-06f < 1e-4);
        QCOMPARE(rope.attention_factor(), 1.0f);
        QVERIFY(std::fabs(c.softmax_scale() - 0.1352338) < 1e-6);
    }

    void v2LiteSoftmaxScale() {
        auto c = parse_config(v3_like(R"(,"mscale":0.707,"mscale_all_dim":0.707)"), "v2lite");
        cetus::Rope rope(c);
        QCOMPARE(rope.attention_factor(), 1.0f);
        QVERIFY(std::fabs(c.softmax_scale() - 0.1147214) < 1e-6);
    }

    void tinyBothScalings() {
        // Doc 9.1: factor 4, mscale 1.0 / mscale_all_dim 0.707, d_qk 48.
        auto c = parse_config(R"({"model_type":"deepseek_v3","vocab_size":16,"hidden_size":8,"intermediate_size":8,
          "num_hidden_layers":1,"num_attention_heads":1,"kv_lora_rank":4,"qk_nope_head_dim":32,"qk_rope_head_dim":16,
          "v_head_dim":32,"rope_scaling":{"type":"yarn","factor":4.0,"original_max_position_embeddings":128,
          "beta_fast":32,"beta_slow":1,"mscale":1.0,"mscale_all_dim":0.707}})",
                              "tiny");
        cetus::Rope rope(c);
        QVERIFY(std::fabs(rope.attention_factor() - 1.036993f) < 1e-5);
        QVERIFY(std::fabs(c.softmax_scale() - 0.1740174) < 1e-6);
        // low 0, high 3: pair 0 kept, 3..7 divided by 4.
        const auto& f = rope.inv_freq();
        QVERIFY(std::fabs(f[0] - 1.0f) < 1e-7);
        for (int i = 3; i < 8; ++i) QVERIFY(std::fabs(f[i] - std::pow(10000.0, -2.0 * i / 16) / 4) < 1e-6 * f[i]);
        QVERIFY(f[1] < std::pow(10000.0, -2.0 / 16) && f[1] > std::pow(10000.0, -2.0 / 16) / 4);
    }

    void noScalingIsPlainRope() {
        auto c = parse_config(R"({"model_type":"deepseek_v3","vocab_size":16,"hidden_size":8,"intermediate_size":8,
          "num_hidden_layers":1,"num_attention_heads":1,"kv_lora_rank":4,"qk_nope_head_dim":32,"qk_rope_head_dim":16,
          "v_head_dim":32,"rope_theta":50000})",
                              "moonlight-like");
        cetus::Rope rope(c);
        for (int i = 0; i < 8; ++i) QVERIFY(std::fabs(rope.inv_freq()[i] - std::pow(50000.0, -2.0 * i / 16)) < 1e-6);
        QVERIFY(std::fabs(c.softmax_scale() - 1.0 / std::sqrt(48.0)) < 1e-9);
    }

    void interleavedRotationIsComplexMultiply() {
        auto c = parse_config(v3_like(R"(,"mscale":1.0,"mscale_all_dim":1.0)"), "v3");
        cetus::Rope rope(c);
        std::vector<float> x(64);
        for (int i = 0; i < 64; ++i) x[i] = std::sin(0.37f * float(i) + 1.0f);
        auto y = x;
        const int pos = 5000;  // past original_max_position_embeddings
        rope.apply(y.data(), pos);
        for (int j = 0; j < 32; ++j) {
            std::complex<double> z(x[2 * j], x[2 * j + 1]);
            z *= std::polar(1.0, double(float(pos) * rope.inv_freq()[j]));
            QVERIFY(std::fabs(z.real() - y[2 * j]) < 1e-4);
            QVERIFY(std::fabs(z.imag() - y[2 * j + 1]) < 1e-4);
        }
    }

    void rotateHalfWhenNotInterleaved() {
        auto c = parse_config(R"({"model_type":"deepseek_v3","vocab_size":16,"hidden_size":8,"intermediate_size":8,
          "num_hidden_layers":1,"num_attention_heads":1,"kv_lora_rank":4,"qk_nope_head_dim":8,"qk_rope_head_dim":8,
          "v_head_dim":8,"rope_interleave":false})",
                              "half");
        cetus::Rope rope(c);
        std::vector<float> x{1, 2, 3, 4, 5, 6, 7, 8}, y = x;
        rope.apply(y.data(), 3);
        for (int j = 0; j < 4; ++j) {
            std::complex<double> z(x[j], x[j + 4]);
            z *= std::polar(1.0, double(3.0f * rope.inv_freq()[j]));
            QVERIFY(std::fabs(z.real() - y[j]) < 1e-5);
            QVERIFY(std::fabs(z.imag() - y[j + 4]) < 1e-5);
        }
    }
};

QTEST_GUILESS_MAIN(TestRope)
#include "test_rope.moc"
