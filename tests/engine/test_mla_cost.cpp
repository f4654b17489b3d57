// MLA's form costs (mla_cost.h) against multiply-adds counted one by one, loop by
// loop, the way each form visits queries, positions and cached rows (architecture
// doc section 5), and the CPU backend's choice of form for the prompts the README
// names: decode steps and short follow-ups absorbed, a long first pass naive.
#include "mla.h"
#include "mla_cost.h"

#include <QtTest>

#include <algorithm>
#include <cstdint>

namespace {

using cetus::MlaDims;
using cetus::MlaFormCosts;

// Pairs (query, position) computed when each block of `block` queries runs up to
// its last query's position.
double count_pairs(int64_t n, int64_t start, int64_t block) {
    double pairs = 0.0;
    for (int64_t t = 0; t < n; ++t) {
        const int64_t block_end = std::min(n, (t / block + 1) * block);  // one past the block's last query
        for (int64_t s = 0; s < start + block_end; ++s) pairs += 1.0;
    }
    return pairs;
}

double count_absorbed(const MlaDims& d, int64_t n, int64_t start, const MlaFormCosts& w) {
    double macs = 0.0;
    for (int64_t t = 0; t < n; ++t) {
        macs += d.d_n * d.d_c + d.d_c * d.d_v;  // q_abs = W_UK^T q_nope, out = W_UV ctx
        const int64_t visible = w.absorbed_causal ? start + t + 1 : start + n;
        for (int64_t s = 0; s < visible; ++s)
            macs += w.absorbed_scores * (d.d_c + d.d_r) + w.absorbed_sums * d.d_c;
    }
    return macs;
}

double count_expanded(const MlaDims& d, int64_t n, int64_t start, const MlaFormCosts& w) {
    double macs = 0.0;
    for (int64_t s = 0; s < start + n; ++s) macs += w.expanded * d.d_c * (d.d_n + d.d_v);  // k_nope, v
    for (int64_t t = 0; t < n; ++t) {
        const int64_t block_end = std::min(n, (t / w.query_block + 1) * w.query_block);
        for (int64_t s = 0; s < start + block_end; ++s) macs += w.expanded * (d.d_n + d.d_r + d.d_v);
    }
    return macs;
}

cetus::ModelConfig v2_lite_attention() {
    cetus::ModelConfig c;
    c.kv_lora_rank = 512;
    c.qk_nope_head_dim = 128;
    c.qk_rope_head_dim = 64;
    c.v_head_dim = 128;
    return c;
}

}  // namespace

class TestMlaCost : public QObject {
    Q_OBJECT
private slots:
    void pairsMatchCounting_data() {
        QTest::addColumn<qint64>("n");
        QTest::addColumn<qint64>("start");
        QTest::addColumn<qint64>("block");
        for (qint64 block : {1, 7, 256})
            for (qint64 n : {1, 6, 7, 8, 255, 256, 257, 600})
                for (qint64 start : {0, 1, 300})
                    QTest::addRow("n%lld-start%lld-block%lld", n, start, block) << n << start << block;
    }
    void pairsMatchCounting() {
        QFETCH(qint64, n);
        QFETCH(qint64, start);
        QFETCH(qint64, block);
        QCOMPARE(cetus::mla_block_pairs(n, start, block), count_pairs(n, start, block));
    }

    void formsMatchCounting_data() {
        QTest::addColumn<bool>("causal");
        QTest::addColumn<double>("scores");
        QTest::addColumn<double>("sums");
        QTest::addColumn<double>("expanded");
        QTest::addColumn<qint64>("block");
        QTest::addRow("cpu") << true << 1.0 << 1.0 << 1.0 << qint64(256);
        QTest::addRow("gpu-fp32-cache") << false << 2.0 << 2.0 << 2.0 << qint64(256);
        QTest::addRow("gpu-bf16-cache") << false << 2.0 << 1.0 << 1.0 << qint64(256);
        QTest::addRow("exact-triangle") << true << 1.0 << 1.0 << 1.0 << qint64(1);
        QTest::addRow("odd-block") << true << 1.0 << 1.0 << 3.0 << qint64(5);
    }
    void formsMatchCounting() {
        QFETCH(bool, causal);
        QFETCH(double, scores);
        QFETCH(double, sums);
        QFETCH(double, expanded);
        QFETCH(qint64, block);
        MlaFormCosts w;
        w.absorbed_causal = causal;
        w.absorbed_scores = scores;
        w.absorbed_sums = sums;
        w.expanded = expanded;
        w.query_block = block;
        const MlaDims shapes[] = {{512, 64, 128, 128}, {32, 8, 16, 24}};
        for (const MlaDims& d : shapes)
            for (int64_t n : {1, 17, 300})
                for (int64_t start : {0, 40}) {
                    QCOMPARE(cetus::mla_absorbed_macs(d, n, start, w), count_absorbed(d, n, start, w));
                    QCOMPARE(cetus::mla_expanded_macs(d, n, start, w), count_expanded(d, n, start, w));
                }
    }

    // The CPU's choice for V2-Lite's attention widths.
    void cpuChoosesTheCheaperForm() {
        const cetus::ModelConfig c = v2_lite_attention();
        const cetus::MlaFormPolicy by_cost;
        QVERIFY(cetus::mla_absorbed(c, by_cost, 1, 4000));     // a decode step
        QVERIFY(cetus::mla_absorbed(c, by_cost, 16, 0));       // a verify batch, whatever it costs
        QVERIFY(!cetus::mla_absorbed(c, by_cost, 1024, 0));    // a prompt's first pass
        QVERIFY(cetus::mla_absorbed(c, by_cost, 32, 2048));    // a short follow-up after a long prefix
        QVERIFY(!cetus::mla_absorbed(c, by_cost, 1024, 1024)); // a long follow-up
        // Forced either way.
        QVERIFY(!cetus::mla_absorbed(c, cetus::MlaFormPolicy{0, false}, 1, 4000));
        QVERIFY(cetus::mla_absorbed(c, cetus::MlaFormPolicy{int64_t(1) << 40, false}, 1024, 0));
        // Without the cost model, long chunks are naive.
        QVERIFY(!cetus::mla_absorbed(c, cetus::MlaFormPolicy{16, false}, 32, 2048));
        // At each chunk the choice is the smaller count.
        MlaFormCosts cpu;
        const MlaDims d{512, 64, 128, 128};
        for (int64_t n : {17, 40, 100, 257, 1024})
            for (int64_t start : {0, 100, 2048})
                QCOMPARE(cetus::mla_absorbed(c, by_cost, n, start),
                         count_absorbed(d, n, start, cpu) < count_expanded(d, n, start, cpu));
    }
};

QTEST_GUILESS_MAIN(TestMlaCost)
#include "test_mla_cost.moc"
