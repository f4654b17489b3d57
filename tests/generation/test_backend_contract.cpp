// The generator against the Backend contract the CUDA backend enforces: every
// forward starts at or before the cached length, positions stay inside the
// cache, truncation only shortens, MTP rows are written contiguously. A
// checking wrapper around the CPU backend records every violation while real
// requests run (chats with MTP, follow-up turns reusing the prefix, regenerate,
// sampling with several drafts, a full context, a cancelled answer), so a
// generator change that would make the GPU throw fails here, without a GPU.
#include "backend.h"
#include "generator.h"

#include "cetus/engine.h"
#include "cetus/error.h"
#include "cetus/tokenizer.h"

#include <QtTest>

#include <algorithm>
#include <atomic>
#include <map>

namespace {

class CheckingBackend final : public cetus::Backend {
public:
    CheckingBackend(const cetus::Model& model, int64_t capacity) : m_inner(model, capacity) {}

    QStringList violations;
    int n_forward = 0, n_mtp = 0, n_truncate = 0;

    std::string name() const override { return m_inner.name(); }
    std::string description() const override { return m_inner.description(); }
    int64_t capacity() const override { return m_inner.capacity(); }
    // A pass length other than the CPU's 256, as the CUDA backend's (1024, or less by memory).
    int64_t prefill_chunk_override = 0;
    int64_t prefill_chunk() const override {
        return prefill_chunk_override > 0 ? prefill_chunk_override : m_inner.prefill_chunk();
    }
    int64_t n_tokens() const override { return m_inner.n_tokens(); }
    uint64_t kv_bytes_per_token() const override { return m_inner.kv_bytes_per_token(); }
    cetus::KvCacheType kv_cache_type() const override { return m_inner.kv_cache_type(); }
    std::vector<float> cache_row(int64_t layer, int64_t pos) override { return m_inner.cache_row(layer, pos); }
    // Saved rows carry the MTP rows written up to then; rows loaded that were never
    // saved, or more positions than held, are violations.
    int n_save = 0, n_load = 0;
    void save_rows(int64_t n, uint8_t* out) override {
        ++n_save;
        if (n > m_inner.n_tokens()) violations << QStringLiteral("save_rows(%1) with %2 cached").arg(n).arg(m_inner.n_tokens());
        m_inner.save_rows(n, out);
        m_saved_mtp[out] = std::min(m_mtp_rows, n);
    }
    bool fail_next_load = false;  // as a device error part-way through a restore
    void load_rows(int64_t n, const uint8_t* in) override {
        if (fail_next_load) {
            fail_next_load = false;
            m_inner.clear();
            throw cetus::Error(cetus::ErrorCode::Device, "load_rows failed (test)");
        }
        ++n_load;
        const auto it = m_saved_mtp.find(in);
        if (it == m_saved_mtp.end()) violations << QStringLiteral("load_rows from rows never saved");
        m_inner.load_rows(n, in);
        m_mtp_rows = it == m_saved_mtp.end() ? 0 : it->second;
    }

    void truncate(int64_t n) override {
        ++n_truncate;
        if (n < 0 || n > m_inner.n_tokens())
            violations << QStringLiteral("truncate(%1) with %2 cached").arg(n).arg(m_inner.n_tokens());
        m_inner.truncate(n);
        m_mtp_rows = std::min(m_mtp_rows, n);
    }
    void forward(const int32_t* ids, int64_t T, int64_t start, const cetus::ForwardOptions& opt,
                 cetus::ForwardOutput& out) override {
        ++n_forward;
        span("forward", T, start);
        if (start > m_inner.n_tokens())
            violations << QStringLiteral("forward at %1 with only %2 cached").arg(start).arg(m_inner.n_tokens());
        m_inner.forward(ids, T, start, opt, out);
        if (m_inner.n_tokens() != start + T) violations << QStringLiteral("n_tokens not start + T after forward");
    }
    void mtp_forward(int64_t k, const float* hidden, const int32_t* next_ids, int64_t T, int64_t start,
                     const cetus::MtpOptions& opt, cetus::MtpOutput& out) override {
        ++n_mtp;
        span("mtp_forward", T, start);
        // The module attends to its own rows 0 .. start-1: they must all have been written.
        if (start > m_mtp_rows)
            violations << QStringLiteral("mtp_forward at %1 with only %2 MTP rows written").arg(start).arg(m_mtp_rows);
        m_inner.mtp_forward(k, hidden, next_ids, T, start, opt, out);
        m_mtp_rows = start + T;
    }

    // Sampling on the "device": the CPU backend's host emulation, its row and
    // slot checks turned into recorded violations.
    void set_device_sampling(bool on) { m_inner.set_device_sampling(on); }
    bool samples_on_device() const override { return m_inner.samples_on_device(); }
    void choose(int64_t row0, int64_t n, const cetus::ChoiceSpec& spec, const double* u, int64_t q_slot,
                int32_t* ids) override {
        ++n_choose;
        try {
            m_inner.choose(row0, n, spec, u, q_slot, ids);
        } catch (const cetus::Error& e) {
            violations << QString::fromStdString(e.what());
            std::fill(ids, ids + n, 0);
        }
    }
    cetus::VerifyResult verify(const cetus::ChoiceSpec& spec, const int32_t* drafts, int64_t D,
                               const double* u) override {
        ++n_verify;
        try {
            return m_inner.verify(spec, drafts, D, u);
        } catch (const cetus::Error& e) {
            violations << QString::fromStdString(e.what());
            return {0, 0};
        }
    }
    int n_choose = 0, n_verify = 0;

private:
    void span(const char* what, int64_t T, int64_t start) {
        if (T < 1 || start < 0 || start + T > m_inner.capacity())
            violations << QStringLiteral("%1(T=%2, start=%3) outside the cache of %4").arg(what).arg(T).arg(start).arg(m_inner.capacity());
    }
    cetus::CpuBackend m_inner;
    int64_t m_mtp_rows = 0;
    std::map<const uint8_t*, int64_t> m_saved_mtp;
};

cetus::GenerateRequest chat(std::vector<cetus::ChatMessage> messages, bool mtp, float temperature = 0.0f,
                            int max_new = 24, int draft = 1) {
    cetus::GenerateRequest r;
    r.messages = std::move(messages);
    r.sampling.temperature = temperature;
    r.sampling.seed = 7;
    r.max_new_tokens = max_new;
    r.mtp = mtp;
    r.n_draft = draft;
    return r;
}

// The bundled demo model (a tokenizer and an MTP layer) on the CPU.
std::unique_ptr<cetus::Engine> load_demo(int64_t context) {
    cetus::EngineOptions o;
    o.model_dir = std::string(CETUS_SOURCE_DIR) + "/resources/models/cetus-demo";
    o.device = cetus::Device::Cpu;
    o.max_context = context;
    return cetus::Engine::load(o);
}

}  // namespace

class TestBackendContract : public QObject {
    Q_OBJECT
private slots:
    void generatorKeepsTheContract_data() {
        QTest::addColumn<bool>("device");
        QTest::addColumn<int>("prefill_chunk");
        QTest::newRow("host sampling") << false << 0;
        QTest::newRow("device sampling") << true << 0;
        QTest::newRow("device sampling, prefill passes of 37 tokens") << true << 37;
    }

    // Both paths keep the contract; the device path (logits kept by the backend,
    // choices asked of it) gives exactly the host path's tokens, also when the
    // backend asks for prompt passes of another length than the CPU's 256.
    void generatorKeepsTheContract() {
        QFETCH(bool, device);
        QFETCH(int, prefill_chunk);
        static QStringList host_outputs;
        cetus::EngineOptions o;
        o.model_dir = std::string(CETUS_SOURCE_DIR) + "/resources/models/cetus-demo";
        o.device = cetus::Device::Cpu;
        o.max_context = 160;
        auto engine = cetus::Engine::load(o);
        QVERIFY(engine->tokenizer());
        QVERIFY(engine->model().n_mtp() > 0);
        CheckingBackend backend(engine->model(), 160);
        backend.set_device_sampling(device);
        backend.prefill_chunk_override = prefill_chunk;
        cetus::Generator g(engine->model(), backend, engine->tokenizer());
        QStringList outputs;
        auto record = [&](const cetus::GenerateResult& r) {
            QStringList ids;
            for (int32_t id : r.ids) ids << QString::number(id);
            outputs << ids.join(QLatin1Char(' ')) + QStringLiteral(" / %1 of %2 drafts")
                                                        .arg(r.stats.drafts_accepted)
                                                        .arg(r.stats.drafts_proposed);
            return r;
        };

        // A chat with MTP, its follow-up turn (prefix reuse), and a regenerate.
        std::vector<cetus::ChatMessage> turn = {{"user", "Hello"}};
        auto r1 = record(g.run(chat(turn, true), {}));
        QVERIFY(r1.mtp_used);
        turn.push_back({"assistant", r1.text});
        turn.push_back({"user", "What is the capital of France?"});
        auto r2 = record(g.run(chat(turn, true), {}));
        QVERIFY(r2.stats.reused_prefix_tokens > 0);
        record(g.run(chat(turn, true), {}));  // regenerate: all but one prompt token reused
        // Sampling with three drafts, then plain decoding on the same cache.
        record(g.run(chat(turn, true, 0.9f, 40, 3), {}));
        record(g.run(chat(turn, false), {}));
        // Sampling with every truncation and a repetition penalty, drafts and none;
        // greedy with a penalty.
        for (bool mtp : {true, false}) {
            auto req = chat(turn, mtp, 1.2f, 40, 4);
            req.sampling.top_k = 40;
            req.sampling.top_p = 0.9f;
            req.sampling.min_p = 0.02f;
            req.sampling.repetition_penalty = 1.3f;
            req.sampling.seed = 99;
            record(g.run(req, {}));
        }
        auto penalised = chat(turn, true, 0.0f, 40, 3);
        penalised.sampling.repetition_penalty = 1.5f;
        record(g.run(penalised, {}));
        // Cancelled after a few tokens, then a new request.
        std::atomic<bool> cancel{false};
        auto req = chat({{"user", "Tell me something about the sea."}}, true, 0.8f, 60, 2);
        req.cancel = &cancel;
        int seen = 0;
        auto r3 = record(g.run(req, [&](const cetus::TokenEvent&) {
            if (++seen == 3) cancel = true;
        }));
        QCOMPARE(r3.finish, cetus::FinishReason::Cancelled);
        record(g.run(chat({{"user", "Hi"}}, true), {}));
        // Running into the end of the context, with drafts.
        std::vector<cetus::ChatMessage> longer;
        for (int i = 0; i < 4; ++i) {
            longer.push_back({"user", "Use the word river in a sentence."});
            longer.push_back({"assistant", "Here is an example: \"The river was navigable for 50 miles.\""});
        }
        longer.push_back({"user", "Spell the word cat."});
        const int64_t n_prompt = engine->count_tokens(chat(longer, true));
        QVERIFY2(n_prompt > 100 && n_prompt < 150, qPrintable(QString::number(n_prompt)));
        auto r4 = record(g.run(chat(longer, true, 0.9f, 200, 3), {}));
        QVERIFY(r4.finish == cetus::FinishReason::ContextFull || r4.finish == cetus::FinishReason::Eos ||
                r4.finish == cetus::FinishReason::Stop);

        QVERIFY(backend.n_forward > 10 && backend.n_mtp > 5 && backend.n_truncate > 3);
        if (device) QVERIFY(backend.n_choose > 20 && backend.n_verify > 10);
        else QCOMPARE(backend.n_choose + backend.n_verify, 0);
        if (!backend.violations.isEmpty()) qWarning("%s", qPrintable(backend.violations.join(QLatin1Char('\n'))));
        QCOMPARE(backend.violations.size(), 0);
        if (!device) {
            host_outputs = outputs;
        } else {
            QCOMPARE(outputs.size(), host_outputs.size());
            for (qsizetype i = 0; i < outputs.size(); ++i) QCOMPARE(outputs[i], host_outputs[i]);
        }
    }

    // Log-probabilities with sampling on the device: the main model's logits come to the
    // host as well, the choices stay the device's (the same ids as without them), and the
    // figures are the host path's.
    void logprobsKeepDeviceChoices() {
        auto engine = load_demo(256);
        CheckingBackend device(engine->model(), 256), host(engine->model(), 256);
        device.set_device_sampling(true);
        cetus::Generator on_device(engine->model(), device, engine->tokenizer());
        cetus::Generator on_host(engine->model(), host, engine->tokenizer());
        auto penalised = chat({{"user", "Hello"}}, true, 0.0f, 24, 2);
        penalised.sampling.repetition_penalty = 1.4f;
        for (auto req : {chat({{"user", "Hello"}}, true, 0.0f, 24, 2), chat({{"user", "Hello"}}, true, 0.9f, 24, 3),
                         chat({{"user", "What is the capital of France?"}}, false, 0.9f, 24), penalised}) {
            on_device.reset();
            const auto without = on_device.run(req, {});
            req.logprobs = 3;
            std::vector<float> got, want;
            auto collect = [](std::vector<float>& into) {
                return [&into](const cetus::TokenEvent& ev) {
                    if (ev.id < 0) return;
                    QVERIFY(ev.has_logprob);
                    QCOMPARE(ev.top_logprobs.size(), size_t(3));
                    into.push_back(ev.logprob);
                    for (const auto& t : ev.top_logprobs) into.push_back(t.logprob);
                };
            };
            on_device.reset();
            on_host.reset();
            const auto with = on_device.run(req, collect(got));
            const auto reference = on_host.run(req, collect(want));
            QCOMPARE(with.ids, without.ids);
            QCOMPARE(with.ids, reference.ids);
            QVERIFY(!got.empty());
            QCOMPARE(got, want);
        }
        QVERIFY(device.n_choose + device.n_verify > 10);
        QCOMPARE(device.violations.size(), 0);
    }

    // The prefix store: conversations taking turns get their rows back (saved and
    // loaded through the backend, MTP rows and hidden states included) and answer
    // exactly as a generator that recomputes everything; with no budget nothing is kept.
    void prefixStoreSwitchesConversations() {
        auto engine = load_demo(512);
        CheckingBackend backend(engine->model(), 512), plain_backend(engine->model(), 512);
        cetus::Generator g(engine->model(), backend, engine->tokenizer());
        cetus::Generator plain(engine->model(), plain_backend, engine->tokenizer());
        g.set_prefix_store_bytes(64 << 20);
        plain.set_prefix_store_bytes(0);
        const std::string padding = " Please answer in one short sentence, and mind that I am asking about this subject only.";
        std::vector<std::vector<cetus::ChatMessage>> convs = {{{"user", "What is the capital of France?" + padding}},
                                                              {{"user", "What does the word generous mean?" + padding}},
                                                              {{"user", "What is the opposite of ancient?" + padding}}};
        const char* follow_ups[] = {"And of Italy?", "Use it in a sentence.", "And of modern?"};
        for (int round = 0; round < 3; ++round) {
            for (size_t c = 0; c < convs.size(); ++c) {
                if (round > 0) convs[c].push_back({"user", follow_ups[c]});
                auto req = chat(convs[c], /*mtp=*/c != 1, round == 2 ? 0.8f : 0.0f, 16, 2);
                const auto got = g.run(req, {});
                const auto want = plain.run(req, {});
                QCOMPARE(got.ids, want.ids);
                QCOMPARE(got.stats.drafts_accepted, want.stats.drafts_accepted);  // the MTP rows came back too
                QCOMPARE(got.stats.drafts_proposed, want.stats.drafts_proposed);
                if (round > 0) {
                    // The conversation so far came back, not just the template's start.
                    QVERIFY2(got.stats.reused_prefix_tokens > engine->count_tokens(req) / 2,
                             qPrintable(QStringLiteral("round %1, conversation %2: %3 of %4 reused")
                                            .arg(round).arg(c).arg(got.stats.reused_prefix_tokens).arg(engine->count_tokens(req))));
                    QVERIFY(want.stats.reused_prefix_tokens < 8);  // the store is what made the difference
                    QVERIFY(got.stats.prefix_restored && !want.stats.prefix_restored);
                    QVERIFY(got.stats.stored_prefixes >= 1 && got.stats.stored_prefix_bytes > 0);
                    QCOMPARE(want.stats.stored_prefixes, int64_t(0));
                }
                convs[c].push_back({"assistant", got.text});
            }
        }
        QVERIFY(backend.n_save >= 6 && backend.n_load >= 6);
        QCOMPARE(plain_backend.n_save + plain_backend.n_load, 0);
        if (!backend.violations.isEmpty()) qWarning("%s", qPrintable(backend.violations.join(QLatin1Char('\n'))));
        QCOMPARE(backend.violations.size(), 0);
        QVERIFY(g.stored_prefixes() >= 2);
        g.set_prefix_store_bytes(0);  // a smaller budget drops what no longer fits
        QCOMPARE(g.stored_prefixes(), size_t(0));
    }

    // A restore that fails part-way (a device error while its rows are copied in) fails
    // that request and loses nothing: the prefix stays stored, and the next try gets it.
    void failedRestoreKeepsTheStoredPrefix() {
        auto engine = load_demo(512);
        CheckingBackend backend(engine->model(), 512);
        cetus::Generator g(engine->model(), backend, engine->tokenizer());
        g.set_prefix_store_bytes(64 << 20);
        const std::string padding = " Please answer in one short sentence, and mind that I am asking about this subject only.";
        std::vector<cetus::ChatMessage> a = {{"user", "What is the capital of France?" + padding + padding}};
        const std::vector<cetus::ChatMessage> b = {{"user", "What does the word generous mean?" + padding}};
        a.push_back({"assistant", g.run(chat(a, true), {}).text});
        g.run(chat(b, true), {});  // a is stored
        QCOMPARE(g.stored_prefixes(), size_t(1));
        a.push_back({"user", "And of Italy?"});
        backend.fail_next_load = true;
        bool threw = false;
        try {
            g.run(chat(a, true), {});
        } catch (const cetus::Error& e) {
            threw = e.code() == cetus::ErrorCode::Device;
        }
        QVERIFY(threw);
        QVERIFY(g.stored_prefixes() >= 1);
        const auto again = g.run(chat(a, true), {});
        QVERIFY(again.stats.prefix_restored);
        QVERIFY(again.stats.reused_prefix_tokens > engine->count_tokens(chat(a, true)) / 2);
    }
};

QTEST_GUILESS_MAIN(TestBackendContract)
#include "test_backend_contract.moc"
