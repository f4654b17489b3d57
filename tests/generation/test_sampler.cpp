// The sampler on tiny distributions whose answers can be worked out by hand,
// and the speculative accept/replace rule against its closed form.
#include "sampler.h"

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <vector>

namespace {
std::vector<float> logits_of(const std::vector<double>& p) {
    std::vector<float> l;
    for (double x : p) l.push_back(float(std::log(x)));
    return l;
}
}  // namespace

class TestSampler : public QObject {
    Q_OBJECT
private slots:
    void tokenLogprobs() {
        // Log-softmax over the valid ids in closed form: logits 0, log 2, log 3, -inf, NaN
        // and an id past n_valid give probabilities 1/6, 2/6, 3/6, 0, 0; ties go by id.
        const float inf = std::numeric_limits<float>::infinity();
        std::vector<float> x = {0.0f, std::log(2.0f), std::log(3.0f), -inf, std::nanf(""), 50.0f};
        std::vector<cetus::TokenLogprob> top;
        QVERIFY(std::abs(cetus::token_logprobs(x.data(), 5, 1, 3, top) - std::log(2.0f / 6.0f)) < 1e-6f);
        QCOMPARE(top.size(), size_t(3));
        QCOMPARE(top[0].id, 2);
        QCOMPARE(top[1].id, 1);
        QCOMPARE(top[2].id, 0);
        QVERIFY(std::abs(top[0].logprob - std::log(0.5f)) < 1e-6f);
        QCOMPARE(cetus::token_logprobs(x.data(), 5, 3, 0, top), -inf);  // no mass
        QCOMPARE(cetus::token_logprobs(x.data(), 5, 4, 0, top), -inf);  // NaN: no mass either
        QVERIFY(top.empty());
        // More alternatives than ids with mass: -inf ones follow, NaN never appears.
        cetus::token_logprobs(x.data(), 5, 0, 20, top);
        QCOMPARE(top.size(), size_t(4));
        QCOMPARE(top[3].id, 3);
        QCOMPARE(top[3].logprob, -inf);
        // Overflowed logits (+inf) share all the mass.
        std::vector<float> over = {1.0f, inf, 3.0f, inf};
        QVERIFY(std::abs(cetus::token_logprobs(over.data(), 4, 1, 2, top) - std::log(0.5f)) < 1e-6f);
        QCOMPARE(cetus::token_logprobs(over.data(), 4, 2, 0, top), -inf);
        std::vector<float> ties(300, 1.0f);
        cetus::token_logprobs(ties.data(), 300, 0, 4, top);
        QCOMPARE(top.size(), size_t(4));
        for (int k = 0; k < 4; ++k) QCOMPARE(top[size_t(k)].id, k);
        QVERIFY(std::abs(top[0].logprob + std::log(300.0f)) < 1e-5f);
        // A vocabulary-sized row (the threaded path) against a plain double computation.
        std::mt19937 g(5);
        std::normal_distribution<float> n(0.0f, 4.0f);
        std::vector<float> row(100000);
        for (float& v : row) v = n(g);
        double m = -INFINITY, z = 0.0;
        for (float v : row) m = std::max(m, double(v));
        for (float v : row) z += std::exp(double(v) - m);
        for (int32_t id : {0, 777, 99999}) {
            const float lp = cetus::token_logprobs(row.data(), 100000, id, 5, top);
            QVERIFY(std::abs(double(lp) - (double(row[size_t(id)]) - m - std::log(z))) < 1e-5);
        }
        std::vector<int32_t> order(row.size());
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + 5, order.end(), [&](int32_t a, int32_t b) { return row[size_t(a)] > row[size_t(b)]; });
        for (int k = 0; k < 5; ++k) QCOMPARE(top[size_t(k)].id, order[size_t(k)]);
    }

    void temperatureOneIsSoftmax() {
        cetus::SamplingParams sp;
        sp.temperature = 1.0f;
        cetus::Sampler s(sp, 4, 4);
        auto l = logits_of({0.1, 0.2, 0.3, 0.4});
        std::vector<float> p;
        s.distribution(l.data(), {}, p);
        QVERIFY(std::fabs(p[0] - 0.1f) < 1e-6f && std::fabs(p[3] - 0.4f) < 1e-6f);
    }

    void temperatureSharpens() {
        cetus::SamplingParams sp;
        sp.temperature = 0.5f;  // p_i^2 / sum p^2
        cetus::Sampler s(sp, 2, 2);
        auto l = logits_of({0.25, 0.75});
        std::vector<float> p;
        s.distribution(l.data(), {}, p);
        QVERIFY(std::fabs(p[1] - 0.9f) < 1e-6f);
    }

    // At temperatures whose inverse overflows a float (subnormal ones) the softmax
    // of the scaled logits is undefined (0 * inf at the largest logit): its limit,
    // the argmax, is what must come out. The smallest normal temperatures still
    // go through the softmax and give the same one-hot distribution.
    void subnormalTemperatureIsTheArgmax() {
        const auto l = logits_of({0.1, 0.2, 0.4, 0.3});
        for (float t : {std::numeric_limits<float>::denorm_min(), 1e-40f, 2e-39f, 1e-30f,
                        std::numeric_limits<float>::min()}) {
            cetus::SamplingParams sp;
            sp.temperature = t;
            sp.top_p = 0.9f;
            cetus::Sampler s(sp, 4, 4);
            QCOMPARE(s.greedy(), std::isinf(1.0f / t));
            std::vector<float> p;
            s.distribution(l.data(), {}, p);
            QCOMPARE(p, (std::vector<float>{0.0f, 0.0f, 1.0f, 0.0f}));
            QCOMPARE(s.draw(p, 0.999), 2);
        }
        cetus::SamplingParams sp;
        sp.temperature = 1e-40f;
        QVERIFY(cetus::is_greedy(sp));
        sp.temperature = 1e-37f;
        QVERIFY(!cetus::is_greedy(sp));
    }

    // A penalty whose quotient or product overflows holds the logit at the
    // largest float: the distribution stays one (found by fuzz_sampler: a
    // subnormal penalty made a logit +inf and every probability NaN).
    void extremePenaltiesStayFinite() {
        const auto l = logits_of({0.1, 0.2, 0.4, 0.3});
        std::vector<float> big = l;
        for (float& x : big) x *= 1e37f;  // -2.3e37 .. -0.9e37, and one positive below
        big[1] = 1e37f;
        const std::vector<int32_t> seen{1, 3};
        for (float penalty : {std::numeric_limits<float>::denorm_min(), 1e-30f, 1e30f}) {
            cetus::SamplingParams sp;
            sp.temperature = 0.8f;
            sp.repetition_penalty = penalty;
            cetus::Sampler s(sp, 4, 4);
            std::vector<float> p;
            s.distribution(big.data(), seen, p);
            double sum = 0;
            for (float x : p) {
                QVERIFY(std::isfinite(x) && x >= 0);
                sum += x;
            }
            QVERIFY(std::fabs(sum - 1.0) < 1e-6);
            // Id 1 (positive) is divided: it wins for a small penalty and, against
            // the others' multiplied or unchanged logits, for a large one too.
            QCOMPARE(s.draw(p, 0.5), 1);
        }
    }

    void invalidParametersAreNamed() {
        const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
        cetus::SamplingParams ok;
        QVERIFY(cetus::sampling_params_valid(ok));
        auto with = [&](auto change) {
            cetus::SamplingParams p = ok;
            change(p);
            return cetus::sampling_params_valid(p);
        };
        QVERIFY(!with([&](auto& p) { p.temperature = nan; }));
        QVERIFY(!with([&](auto& p) { p.temperature = inf; }));
        QVERIFY(!with([&](auto& p) { p.temperature = -0.1f; }));
        QVERIFY(!with([&](auto& p) { p.top_p = nan; }));
        QVERIFY(!with([&](auto& p) { p.top_p = 0.0f; }));
        QVERIFY(!with([&](auto& p) { p.min_p = nan; }));
        QVERIFY(!with([&](auto& p) { p.min_p = 1.5f; }));
        QVERIFY(!with([&](auto& p) { p.top_k = -1; }));
        QVERIFY(!with([&](auto& p) { p.repetition_penalty = nan; }));
        QVERIFY(!with([&](auto& p) { p.repetition_penalty = inf; }));
        QVERIFY(!with([&](auto& p) { p.repetition_penalty = 0.0f; }));
        QVERIFY(with([&](auto& p) { p.temperature = 0.0f; }));
        QVERIFY(with([&](auto& p) { p.temperature = std::numeric_limits<float>::denorm_min(); }));
    }

    void topKTopPMinP() {
        auto l = logits_of({0.05, 0.15, 0.3, 0.5});
        std::vector<float> p;
        cetus::SamplingParams sp;
        sp.temperature = 1.0f;
        sp.top_k = 2;
        cetus::Sampler k(sp, 4, 4);
        k.distribution(l.data(), {}, p);
        QVERIFY(p[0] == 0 && p[1] == 0 && std::fabs(p[2] - 0.375f) < 1e-6f && std::fabs(p[3] - 0.625f) < 1e-6f);

        sp.top_k = 0;
        sp.top_p = 0.75f;  // 0.5 < 0.75 <= 0.8: keeps {3, 2}
        cetus::Sampler tp(sp, 4, 4);
        tp.distribution(l.data(), {}, p);
        QVERIFY(p[1] == 0 && std::fabs(p[2] - 0.375f) < 1e-6f);

        sp.top_p = 1.0f;
        sp.min_p = 0.25f;  // floor 0.125: drops 0.05 only
        cetus::Sampler mp(sp, 4, 4);
        mp.distribution(l.data(), {}, p);
        QVERIFY(p[0] == 0 && std::fabs(p[1] - 0.15f / 0.95f) < 1e-6f);
    }

    void repetitionPenaltyAndVocabMask() {
        cetus::SamplingParams sp;
        sp.temperature = 0.0f;
        sp.repetition_penalty = 2.0f;
        cetus::Sampler s(sp, 4, 3);  // id 3 lies past the tokenizer: never chosen
        std::vector<float> l{1.0f, 1.5f, -1.0f, 9.0f};
        const int32_t seen[] = {1};
        QCOMPARE(s.argmax(l.data(), {}), 1);
        QCOMPARE(s.argmax(l.data(), seen), 0);  // 1.5 / 2 = 0.75 < 1.0
        std::vector<float> neg{-1.0f, -0.6f, -3.0f, 0.0f};
        QCOMPARE(s.argmax(neg.data(), seen), 0);  // -0.6 * 2 = -1.2 < -1.0
    }

    // OpenAI's frequency and presence penalties: on the answer's tokens only (seen from
    // output_from on, and `more`), -= frequency * count + presence, after the repetition
    // penalty; the distribution is the softmax of the logits so changed.
    void countPenalties() {
        const std::vector<float> l{2.0f, 1.0f, 0.5f, 1.5f, -0.5f, 0.25f};
        const int32_t seen[] = {0, 1, 2, 2, 3};  // the prompt is 0, 1; the answer 2, 2, 3
        const int32_t more[] = {3, 4};
        auto softmax = [](std::vector<double> x) {
            double m = -INFINITY, z = 0.0;
            for (double v : x) m = std::max(m, v);
            for (double& v : x) z += (v = std::exp(v - m));
            for (double& v : x) v /= z;
            return x;
        };
        struct Case {
            float frequency, presence, repetition;
        };
        for (const Case cs : {Case{0.5f, 0.25f, 1.0f}, Case{-1.0f, 0.0f, 1.0f}, Case{0.0f, 2.0f, 1.0f}, Case{0.75f, -0.5f, 2.0f}}) {
            cetus::SamplingParams sp;
            sp.temperature = 1.0f;
            sp.frequency_penalty = cs.frequency;
            sp.presence_penalty = cs.presence;
            sp.repetition_penalty = cs.repetition;
            cetus::Sampler s(sp, 6, 6);
            s.set_output_from(2);
            std::vector<double> want(l.begin(), l.end());
            for (int id : {0, 1, 2, 3, 4})  // every id of seen and more: the repetition penalty first
                want[size_t(id)] = want[size_t(id)] > 0 ? want[size_t(id)] / cs.repetition : want[size_t(id)] * cs.repetition;
            const int counts[6] = {0, 0, 2, 2, 1, 0};
            for (int id = 0; id < 6; ++id)
                if (counts[id] > 0) want[size_t(id)] -= cs.frequency * counts[id] + cs.presence;
            const std::vector<double> p_want = softmax(want);
            std::vector<float> p;
            s.distribution(l.data(), seen, p, more);
            for (int id = 0; id < 6; ++id)
                QVERIFY2(std::abs(p[size_t(id)] - p_want[size_t(id)]) < 1e-6,
                         qPrintable(QStringLiteral("f %1 p %2 r %3, id %4: %5 against %6")
                                        .arg(cs.frequency).arg(cs.presence).arg(cs.repetition).arg(id)
                                        .arg(p[size_t(id)]).arg(p_want[size_t(id)])));
            // Greedy: the argmax of the same logits; again, the same (the counts are reset).
            sp.temperature = 0.0f;
            cetus::Sampler g(sp, 6, 6);
            g.set_output_from(2);
            const int32_t best = int32_t(std::max_element(want.begin(), want.end()) - want.begin());
            QCOMPARE(g.argmax(l.data(), seen, more), best);
            QCOMPARE(g.argmax(l.data(), seen, more), best);
        }
        // Without output_from nothing of `seen` is the answer's: only `more` counts.
        cetus::SamplingParams sp;
        sp.temperature = 0.0f;
        sp.presence_penalty = 2.0f;
        cetus::Sampler s(sp, 6, 6);
        QCOMPARE(s.argmax(l.data(), seen), 0);
        const int32_t zero[] = {0};
        QCOMPARE(s.argmax(l.data(), seen, zero), 3);  // 2 - 2 = 0 < 1.5
        // Out of range or not finite: refused.
        for (float bad : {2.5f, -2.01f, NAN, INFINITY}) {
            cetus::SamplingParams q;
            q.frequency_penalty = bad;
            QVERIFY(!cetus::sampling_params_valid(q));
            q = {};
            q.presence_penalty = bad;
            QVERIFY(!cetus::sampling_params_valid(q));
        }
    }

    void seedsRepeat() {
        cetus::SamplingParams sp;
        sp.temperature = 1.0f;
        sp.seed = 42;
        auto l = logits_of({0.25, 0.25, 0.25, 0.25});
        std::vector<float> p;
        cetus::Sampler a(sp, 4, 4), b(sp, 4, 4);
        a.distribution(l.data(), {}, p);
        for (int i = 0; i < 100; ++i) QCOMPARE(a.sample(p), b.sample(p));
    }

    void samplingFrequencies() {
        // 200k draws from (0.1, 0.2, 0.3, 0.4): each frequency within 5 standard deviations.
        cetus::SamplingParams sp;
        sp.temperature = 1.0f;
        sp.seed = 3;
        cetus::Sampler s(sp, 4, 4);
        auto l = logits_of({0.1, 0.2, 0.3, 0.4});
        std::vector<float> p;
        s.distribution(l.data(), {}, p);
        const int n = 200000;
        int count[4] = {};
        for (int i = 0; i < n; ++i) count[s.sample(p)]++;
        for (int i = 0; i < 4; ++i) {
            double expect = n * 0.1 * (i + 1), sd = std::sqrt(n * 0.1 * (i + 1) * (1 - 0.1 * (i + 1)));
            QVERIFY2(std::fabs(count[i] - expect) < 5 * sd, qPrintable(QString::number(count[i])));
        }
    }

    void speculativeRuleKeepsTargetDistribution() {
        // Draft q, target p: P(output = x) = q(x) min(1, p/q) + P(reject) * residual(x) = p(x).
        cetus::SamplingParams sp;
        sp.temperature = 1.0f;
        sp.seed = 11;
        cetus::Sampler s(sp, 3, 3);
        std::vector<float> p{0.5f, 0.3f, 0.2f}, q{0.2f, 0.2f, 0.6f};
        const int n = 300000;
        int count[3] = {};
        for (int i = 0; i < n; ++i) {
            int32_t d = s.sample(q);
            const double ua = s.uniform(), ud = s.uniform();
            int32_t r = s.accept_or_replace(p, q, d, ua, ud);
            count[r < 0 ? d : r]++;
        }
        for (int i = 0; i < 3; ++i) {
            double expect = n * p[i], sd = std::sqrt(n * p[i] * (1 - p[i]));
            QVERIFY2(std::fabs(count[i] - expect) < 5 * sd, qPrintable(QString::number(count[i])));
        }
    }

    void peekedUniformsAreTheNextOnes() {
        cetus::SamplingParams sp;
        sp.seed = 5;
        cetus::Sampler a(sp, 4, 4), b(sp, 4, 4);
        double peeked[5];
        a.peek_uniforms(5, peeked);
        for (double u : peeked) QCOMPARE(a.uniform(), u);  // peeking consumed nothing
        b.skip_uniforms(5);
        QCOMPARE(b.uniform(), a.uniform());
    }

    // verify_rows against the rule applied draft by draft with uniforms taken as
    // they are needed (the way a host loop would): same outcome, same count used.
    void verifyRowsMatchesTheSequentialRule() {
        const int64_t V = 6, D = 3;
        cetus::SamplingParams sp;
        sp.temperature = 0.9f;
        sp.top_p = 0.9f;
        sp.repetition_penalty = 1.3f;
        std::mt19937 gen(7);
        std::normal_distribution<float> nd(0.0f, 1.5f);
        int rejections = 0;
        for (int trial = 0; trial < 400; ++trial) {
            sp.seed = uint64_t(trial);
            std::vector<float> target(size_t((D + 1) * V)), draft_logits(size_t(D * V));
            for (float& x : draft_logits) x = nd(gen);
            for (float& x : target) x = nd(gen);
            for (int64_t i = 0; i < D * V; ++i)  // targets near the drafts: acceptances and rejections both common
                target[size_t(i)] = draft_logits[size_t(i)] + 0.3f * target[size_t(i)];
            const std::vector<int32_t> history{1, 4};
            cetus::Sampler s(sp, V, V), ref(sp, V, V);
            // Drafts from q, each penalising the pending token (2) and the drafts before it.
            std::vector<int32_t> tail{2};
            std::vector<std::vector<float>> q(D);
            std::vector<int32_t> drafts;
            for (int64_t j = 0; j < D; ++j) {
                ref.distribution(draft_logits.data() + j * V, history, q[size_t(j)], tail);
                drafts.push_back(ref.sample(q[size_t(j)]));
                tail.push_back(drafts.back());
            }
            s.skip_uniforms(D);
            // Sequential reference.
            int64_t a = 0;
            int32_t next = -1;
            std::vector<float> p;
            for (; a < D; ++a) {
                ref.distribution(target.data() + a * V, history, p, std::span(tail).first(size_t(a + 1)));
                const double ua = ref.uniform();
                const int32_t d = drafts[size_t(a)];
                const double pd = p[size_t(d)], qd = q[size_t(a)][size_t(d)];
                if (qd > 0 && ua < std::min(1.0, pd / qd)) continue;  // accepted: one number used
                next = ref.accept_or_replace(p, q[size_t(a)], d, ua, ref.uniform());
                QVERIFY(next >= 0);
                break;
            }
            if (next < 0) {
                ref.distribution(target.data() + D * V, history, p, tail);
                next = ref.sample(p);
            }
            cetus::ChoiceSpec spec{sp, V, history, tail, 1};
            double u[D + 1];
            s.peek_uniforms(D + 1, u);
            const cetus::VerifyResult got = cetus::verify_rows(s, target.data(), V, spec, q.data(), drafts.data(), D, u);
            s.skip_uniforms(cetus::verify_uniforms_used(got, D));
            QCOMPARE(got.accepted, a);
            QCOMPARE(got.next, next);
            QCOMPARE(s.uniform(), ref.uniform());  // the same count of numbers used
            rejections += a < D ? 1 : 0;
        }
        QVERIFY2(rejections > 50 && rejections < 350, qPrintable(QString::number(rejections)));  // both branches were taken often
    }
};

QTEST_GUILESS_MAIN(TestSampler)
#include "test_sampler.moc"
