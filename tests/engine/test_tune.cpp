// The step tuner (tune.cpp) on a backend whose switches have known costs: the CPU
// backend of a tiny random model behind a wrapper that offers three switches, advances
// a clock of its own by what each setting costs a step, and with one switch on returns
// wrong logits. Checks what the tuner times, what it chooses and what it leaves.
#include "backend.h"
#include "cetus/engine.h"
#include "tune.h"

#include <QtTest>

#include <map>
#include <memory>

namespace {

// Switch "a" {0, 1}, "b" {0, 1, 2} and "broken" {0, 1}; a step costs cost(a, b, broken)
// milliseconds of the wrapper's clock. Where wrong(a, b, broken) (by default broken = 1),
// every logit is off by `offset`.
class SwitchedBackend final : public cetus::Backend {
public:
    using Cost = std::function<double(int a, int b, int broken)>;
    using Wrong = std::function<bool(int a, int b, int broken)>;
    SwitchedBackend(cetus::Backend& inner, Cost cost, float offset = 1.0f,
                    Wrong wrong = [](int, int, int broken) { return broken != 0; })
        : m_in(inner), m_cost(std::move(cost)), m_offset(offset), m_wrong(std::move(wrong)) {}

    double clock() const { return m_now; }
    int value(const std::string& n) const { return m_values.at(n); }
    int64_t steps = 0;                      // one-token calls
    std::map<std::string, int> set_calls;   // switch -> times set
    int forgotten = 0;                      // forget_prepared_steps calls

    std::string name() const override { return "switched"; }
    std::string description() const override { return "a CPU backend with switches"; }
    int64_t capacity() const override { return m_in.capacity(); }
    int64_t n_tokens() const override { return m_in.n_tokens(); }
    void truncate(int64_t n) override { m_in.truncate(n); }
    uint64_t kv_bytes_per_token() const override { return m_in.kv_bytes_per_token(); }
    cetus::KvCacheType kv_cache_type() const override { return m_in.kv_cache_type(); }
    std::vector<float> cache_row(int64_t layer, int64_t pos) override { return m_in.cache_row(layer, pos); }
    void save_rows(int64_t n, uint8_t* out) override { m_in.save_rows(n, out); }
    void load_rows(int64_t n, const uint8_t* in) override { m_in.load_rows(n, in); }
    void forward(const int32_t* ids, int64_t T, int64_t start, const cetus::ForwardOptions& opt,
                 cetus::ForwardOutput& out) override {
        m_in.forward(ids, T, start, opt, out);
        if (T == 1) {
            ++steps;
            m_now += 1e-3 * m_cost(m_values["a"], m_values["b"], m_values["broken"]);
        }
        if (m_wrong(m_values["a"], m_values["b"], m_values["broken"]))
            for (float& v : out.logits) v += m_offset;
    }
    void mtp_forward(int64_t k, const float* h, const int32_t* next, int64_t T, int64_t start,
                     const cetus::MtpOptions& opt, cetus::MtpOutput& out) override {
        m_in.mtp_forward(k, h, next, T, start, opt, out);
    }
    std::vector<StepSwitch> step_switches() const override {
        return {{"a", "", {0, 1}, m_values.at("a")},
                {"b", "", {0, 1, 2}, m_values.at("b")},
                {"broken", "", {0, 1}, m_values.at("broken")}};
    }
    void set_step_switch(const std::string& n, int v) override {
        if (!m_values.contains(n) || v < 0 || v > (n == "b" ? 2 : 1)) throw cetus::Error(cetus::ErrorCode::BadRequest, n);
        m_values[n] = v;
        ++set_calls[n];
    }
    void forget_prepared_steps() override { ++forgotten; }

private:
    cetus::Backend& m_in;
    Cost m_cost;
    float m_offset;
    Wrong m_wrong;
    std::map<std::string, int> m_values{{"a", 0}, {"b", 0}, {"broken", 0}};
    double m_now = 0.0;
};

std::unique_ptr<cetus::Engine> tiny(int64_t context = 64, bool tune_steps = false) {
    cetus::RandomModelOptions r;
    r.preset = "tiny";
    cetus::EngineOptions o;
    o.device = cetus::Device::Cpu;
    o.max_context = context;
    o.prefix_store_bytes = 0;
    o.tune_steps = tune_steps;
    return cetus::Engine::create_random(r, o);
}

cetus::TuneOptions options(const SwitchedBackend& b) {
    cetus::TuneOptions o;
    o.context = 12;
    o.rounds = 3;
    o.steps = 2;
    o.clock = [&b] { return b.clock(); };
    return o;
}

const cetus::StepTrial* trial(const cetus::StepTuning& t, const std::string& setting) {
    for (const cetus::StepTrial& x : t.trials)
        if (x.setting == setting) return &x;
    return nullptr;
}

}  // namespace

class TestTune : public QObject {
    Q_OBJECT
private slots:
    // a = 1 and b = 2 each gain alone; together they gain most and are chosen. The broken
    // switch would be fastest but its logits differ: reported, never timed, never chosen.
    void choosesTheFastestValidSetting() {
        auto e = tiny();
        SwitchedBackend b(e->backend(), [](int a, int bb, int broken) {
            return 10.0 - (a ? 1.0 : 0.0) - (bb == 2 ? 0.6 : bb == 1 ? 0.3 : 0.0) - (broken ? 5.0 : 0.0);
        });
        const cetus::StepTuning t = cetus::tune_steps(b, e->info().vocab_size, options(b));
        QVERIFY(t.ran);
        QCOMPARE(t.context, int64_t(12));
        QCOMPARE(t.trials.front().setting, std::string("as built"));
        // as built, a=1, b=1, b=2, broken=1, then a=1, b=2 together
        QCOMPARE(int(t.trials.size()), 6);
        const cetus::StepTrial* broken = trial(t, "broken=1");
        QVERIFY(broken);
        QVERIFY(!broken->valid);
        QCOMPARE(broken->step_ms, 0.0);
        QVERIFY2(broken->logit_error > 1e-2, std::to_string(broken->logit_error).c_str());
        for (const char* s : {"as built", "a=1", "b=1", "b=2", "a=1, b=2"}) {
            const cetus::StepTrial* x = trial(t, s);
            QVERIFY2(x && x->valid && x->logit_error == 0.0, s);
        }
        QCOMPARE(trial(t, "as built")->step_ms, 10.0);
        QCOMPARE(trial(t, "b=1")->step_ms, 9.7);
        QCOMPARE(trial(t, "a=1, b=2")->step_ms, 8.4);
        QCOMPARE(t.chosen, std::string("a=1, b=2"));
        QCOMPARE(t.built_ms, 10.0);
        QCOMPARE(t.chosen_ms, 8.4);
        QCOMPARE(b.value("a"), 1);
        QCOMPARE(b.value("b"), 2);
        QCOMPARE(b.value("broken"), 0);
        QCOMPARE(b.forgotten, 1);
        QCOMPARE(b.n_tokens(), int64_t(0));
        // Timed: 4 valid settings x (2 warm-up + 3 rounds x 2) steps, then 3 x (2 + 3 x 2);
        // checked: 6 settings' two steps each.
        QCOMPARE(b.steps, int64_t(4 * 8 + 3 * 8 + 6 * 2));
    }

    // Nothing gains half the margin alone (1 %): the built setting stays, with no second timing.
    void keepsTheBuiltSettingBelowTheMargin() {
        auto e = tiny();
        SwitchedBackend b(e->backend(), [](int a, int bb, int) { return 10.0 - (a ? 0.05 : 0.0) - (bb ? 0.05 : 0.0); });
        const cetus::StepTuning t = cetus::tune_steps(b, e->info().vocab_size, options(b));
        QVERIFY(t.ran);
        QCOMPARE(int(t.trials.size()), 5);
        QCOMPARE(t.chosen, std::string("as built"));
        QCOMPARE(t.chosen_ms, t.built_ms);
        QVERIFY2(t.note.starts_with("kept as built"), t.note.c_str());
        QCOMPARE(b.value("a"), 0);
        QCOMPARE(b.value("b"), 0);
        QCOMPARE(b.n_tokens(), int64_t(0));
    }

    // One switch gains: chosen without a second timing (nothing to put together).
    void oneGainingSwitchIsChosenAlone() {
        auto e = tiny();
        SwitchedBackend b(e->backend(), [](int, int bb, int) { return bb == 1 ? 9.0 : 10.0; });
        const cetus::StepTuning t = cetus::tune_steps(b, e->info().vocab_size, options(b));
        QCOMPARE(int(t.trials.size()), 5);
        QCOMPARE(t.chosen, std::string("b=1"));
        QCOMPARE(b.value("b"), 1);
        QCOMPARE(t.chosen_ms, 9.0);
    }

    // The switches that gained alone give wrong logits together: that setting is reported,
    // not timed, and the choice is made among the first timing's settings.
    void wrongTogetherIsNotChosen() {
        auto e = tiny();
        SwitchedBackend b(
            e->backend(), [](int a, int bb, int) { return 10.0 - (a ? 1.0 : 0.0) - (bb == 2 ? 0.6 : 0.0); }, 1.0f,
            [](int a, int bb, int) { return a == 1 && bb == 2; });
        const cetus::StepTuning t = cetus::tune_steps(b, e->info().vocab_size, options(b));
        const cetus::StepTrial* together = trial(t, "a=1, b=2");
        QVERIFY(together && !together->valid && together->step_ms == 0.0);
        QCOMPARE(t.chosen, std::string("a=1"));
        QCOMPARE(t.chosen_ms, 9.0);
        QCOMPARE(b.value("a"), 1);
        QCOMPARE(b.value("b"), 0);
        // checked 6 settings (the last, together, refused), timed the other 5 once
        QCOMPARE(b.steps, int64_t(5 * 8 + 6 * 2));
    }

    // The context is capped by the capacity (a step after it must fit), and a capacity of
    // one token leaves no room for a step: nothing is run.
    void contextFitsTheCapacity() {
        auto e = tiny();  // a 64-token cache
        SwitchedBackend b(e->backend(), [](int, int, int) { return 10.0; });
        cetus::TuneOptions o = options(b);
        o.context = 1000;
        QCOMPARE(cetus::tune_steps(b, e->info().vocab_size, o).context, int64_t(63));
        auto one = tiny(1);
        QCOMPARE(one->backend().capacity(), int64_t(1));
        SwitchedBackend b1(one->backend(), [](int, int, int) { return 10.0; });
        const cetus::StepTuning t = cetus::tune_steps(b1, one->info().vocab_size, options(b1));
        QVERIFY(!t.ran);
        QVERIFY2(t.note.find("no room") != std::string::npos, t.note.c_str());
        QCOMPARE(b1.steps, int64_t(0));
    }

    // A slower setting is never chosen, and a switch that loses leaves its value as built.
    void slowerSettingsAreNotChosen() {
        auto e = tiny();
        SwitchedBackend b(e->backend(), [](int a, int bb, int) { return 10.0 + a + bb; });
        const cetus::StepTuning t = cetus::tune_steps(b, e->info().vocab_size, options(b));
        QCOMPARE(t.chosen, std::string("as built"));
        QCOMPARE(trial(t, "b=2")->step_ms, 12.0);
        QCOMPARE(b.value("a"), 0);
        QCOMPARE(b.value("b"), 0);
    }

    // Logits off by a little (within the bound) still count as the same.
    void smallLogitDifferencesPass() {
        auto e = tiny();
        SwitchedBackend b(e->backend(), [](int, int, int broken) { return broken ? 5.0 : 10.0; }, 1e-6f);
        const cetus::StepTuning t = cetus::tune_steps(b, e->info().vocab_size, options(b));
        const cetus::StepTrial* x = trial(t, "broken=1");
        QVERIFY(x && x->valid && x->logit_error > 0.0 && x->logit_error < 1e-3);
        QCOMPARE(t.chosen, std::string("broken=1"));
    }

    // A backend without switches: nothing run, a note says why; the CPU backend has none.
    void nothingToTuneOnTheCpu() {
        auto e = tiny();
        const cetus::StepTuning t = cetus::tune_steps(e->backend(), e->info().vocab_size);
        QVERIFY(!t.ran);
        QVERIFY2(t.note.find("no alternative decode steps") != std::string::npos, t.note.c_str());
        QVERIFY(t.trials.empty());
        auto tuned = tiny(64, /*tune_steps=*/true);
        QVERIFY(!tuned->step_tuning().ran);
        QVERIFY(!tuned->step_tuning().note.empty());
    }

    // A switch that throws: the error comes out, the switches are back as built and the
    // cache is empty.
    void anErrorLeavesTheBuiltSetting() {
        auto e = tiny();
        SwitchedBackend b(e->backend(), [](int a, int, int) {
            if (a) throw cetus::Error(cetus::ErrorCode::Device, "a step failed");
            return 10.0;
        });
        try {
            cetus::tune_steps(b, e->info().vocab_size, options(b));
            QFAIL("the step's error was swallowed");
        } catch (const cetus::Error& err) {
            QCOMPARE(err.code(), cetus::ErrorCode::Device);
        }
        QCOMPARE(b.value("a"), 0);
        QCOMPARE(b.value("b"), 0);
        QCOMPARE(b.value("broken"), 0);
        QCOMPARE(b.n_tokens(), int64_t(0));
    }
};

QTEST_GUILESS_MAIN(TestTune)
#include "test_tune.moc"
