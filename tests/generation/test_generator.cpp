// Generation on the golden fixture models (ids only; they have no tokenizer):
// MTP greedy equals plain greedy token for token, sampled MTP keeps the output
// distribution (chi-square), the same for drafts looked up in the context, prefix
// reuse, cancellation, context limits.
#include "cetus/engine.h"
#include "lookup_drafts.h"
#include "safetensors.h"

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <random>

namespace {

std::string fixture(const char* name) { return std::string(CETUS_TEST_DATA) + "/golden/" + name; }

std::unique_ptr<cetus::Engine> load(const std::string& dir, int64_t ctx = 256,
                                    cetus::KvCacheType kv = cetus::KvCacheType::F32) {
    cetus::EngineOptions o;
    o.model_dir = dir;
    o.device = cetus::Device::Cpu;
    o.max_context = ctx;
    o.kv_cache = kv;
    return cetus::Engine::load(o);
}

std::vector<int32_t> golden_ids(const std::string& dir, int k, const char* what = "ids") {
    cetus::SafetensorsFile f(dir + "/golden.safetensors");
    for (const auto& t : f.tensors())
        if (t.name == "prompt." + std::to_string(k) + "." + what) {
            std::vector<int32_t> v(size_t(t.n_elements()));
            std::memcpy(v.data(), t.data, t.n_bytes);
            return v;
        }
    return {};
}

cetus::GenerateRequest greedy(const std::vector<int32_t>& ids, int n, bool mtp, int draft = 1) {
    cetus::GenerateRequest r;
    r.prompt_ids = ids;
    r.sampling.temperature = 0.0f;
    r.max_new_tokens = n;
    r.mtp = mtp;
    r.n_draft = draft;
    return r;
}

// Greedy chat answers decoded plainly and with MTP drafts (each draft count), with a
// repetition penalty: one pair of results per (prompt, draft count).
struct MtpRun {
    cetus::GenerateResult plain, spec;
};
std::vector<MtpRun> mtp_against_plain(cetus::Engine& e, std::initializer_list<const char*> prompts, float penalty,
                                      std::initializer_list<int> drafts) {
    std::vector<MtpRun> runs;
    for (const char* q : prompts) {
        cetus::GenerateRequest r;
        r.messages = {{"user", q}};
        r.sampling.temperature = 0.0f;
        r.sampling.repetition_penalty = penalty;
        r.max_new_tokens = 64;
        r.mtp = false;
        e.reset_cache();
        const cetus::GenerateResult plain = e.generate(r);
        for (int draft : drafts) {
            r.mtp = true;
            r.n_draft = draft;
            e.reset_cache();
            runs.push_back({plain, e.generate(r)});
        }
    }
    return runs;
}

// Two-sample chi-square homogeneity statistic over categories with enough counts,
// turned into a z-score by the Wilson-Hilferty approximation. Reject at z > 3.09
// (one-sided alpha = 0.001).
double chi_square_z(const std::map<int32_t, int>& a, const std::map<int32_t, int>& b, int n) {
    std::map<int32_t, std::pair<int, int>> cells;
    for (auto [k, v] : a) cells[k].first += v;
    for (auto [k, v] : b) cells[k].second += v;
    std::pair<int, int> pooled{0, 0};
    std::vector<std::pair<int, int>> rows;
    for (auto [k, c] : cells) {
        if (c.first + c.second < 10) {  // expected count per sample >= 5
            pooled.first += c.first;
            pooled.second += c.second;
        } else {
            rows.push_back(c);
        }
    }
    if (pooled.first + pooled.second > 0) rows.push_back(pooled);
    double x2 = 0;
    for (auto [x, y] : rows) {
        double e = (x + y) / 2.0;  // equal sample sizes
        x2 += (x - e) * (x - e) / e + (y - e) * (y - e) / e;
    }
    const double k = double(rows.size() - 1);
    if (k < 1) return 0;
    (void)n;
    return (std::cbrt(x2 / k) - (1 - 2 / (9 * k))) / std::sqrt(2 / (9 * k));
}

}  // namespace

class TestGenerator : public QObject {
    Q_OBJECT
private slots:
    void greedyMtpEqualsPlain_data() {
        QTest::addColumn<QString>("name");
        for (const char* c : {"v2-greedy", "v2-group", "v3-noaux", "v3-bf16", "v3-fp8", "v3-nointerleave"})
            QTest::newRow(c) << QString(c);
    }
    void greedyMtpEqualsPlain() {
        QFETCH(QString, name);
        const std::string dir = fixture(name.toUtf8().constData());
        auto e = load(dir);
        for (int k = 0; k < 3; ++k) {
            auto ids = golden_ids(dir, k);
            auto want = golden_ids(dir, k, "greedy");
            e->reset_cache();
            auto plain = e->generate(greedy(ids, 40, false));
            QVERIFY(plain.ids.size() >= want.size());  // may end early at the end-of-sequence id
            // The first 16 tokens are transformers' own greedy continuation.
            QVERIFY(std::equal(want.begin(), want.end(), plain.ids.begin()));
            for (int draft : {1, 2, 3}) {
                e->reset_cache();
                auto spec = e->generate(greedy(ids, 40, true, draft));
                QVERIFY(spec.mtp_used);
                QCOMPARE(spec.ids, plain.ids);
                QVERIFY(spec.stats.drafts_proposed > 0);
                QVERIFY(spec.stats.verify_steps <= plain.stats.verify_steps);
            }
        }
    }

    // lookup_drafts against its definition: the latest earlier occurrence of the longest
    // suffix of 4 down to 1 ids, the ids after it, past the end the copy's own.
    void lookupDraftsFollowTheLatestLongestMatch() {
        std::vector<int32_t> d;
        auto drafts = [&](std::vector<int32_t> ctx, int64_t max) {
            cetus::lookup_drafts(ctx, max, d);
            return d;
        };
        using V = std::vector<int32_t>;
        QCOMPARE(drafts({1, 2, 3, 9, 1, 2, 3, 7, 5, 2, 3}, 3), V({7, 5, 2}));  // 2,3 latest at 5 (not 1,2,3's 9)
        QCOMPARE(drafts({1, 2, 3, 9, 8, 1, 2, 3}, 3), V({9, 8, 1}));          // the 3-gram, not a later 1-gram
        QCOMPARE(drafts({1, 2, 3, 9, 8, 1, 2, 3}, 8), V({9, 8, 1, 2, 3, 9, 8, 1}));  // on past the end: a period of 5
        QCOMPARE(drafts({4, 4, 4, 4, 4, 4}, 3), V({4, 4, 4}));  // the 4-gram at 1 overlaps the suffix
        QCOMPARE(drafts({7, 1, 2, 1, 2}, 5), V({1, 2, 1, 2, 1}));  // 1,2 at 1; the copy goes on with its own ids
        QCOMPARE(drafts({5, 6, 7, 8}, 4), V());                               // nothing repeats
        QCOMPARE(drafts({5, 6, 5}, 4), V({6, 5, 6, 5}));                      // a 1-gram, then its own
        QCOMPARE(drafts({5, 6, 5}, 0), V());
        QCOMPARE(drafts({5}, 4), V());
        QCOMPARE(drafts({}, 4), V());
        QCOMPARE(drafts({1, 2, 3, 4, 5, 9, 2, 3, 4, 5, 8, 1, 2, 3, 4, 5}, 2), V({8, 1}));  // 4-gram 2,3,4,5 latest at 6
        // Against the definition read literally (a pass per length, longest first, each from
        // the end), on random contexts over small alphabets, so that matches of every
        // length occur, near the end and far from it.
        auto definition = [](const V& ctx, int64_t max) {
            V out;
            const int64_t n = int64_t(ctx.size());
            for (int64_t m = std::min<int64_t>(cetus::k_lookup_max_ngram, n - 1); m >= cetus::k_lookup_min_ngram; --m)
                for (int64_t i = n - m - 1; i >= 0; --i) {
                    if (!std::equal(ctx.begin() + i, ctx.begin() + i + m, ctx.end() - m)) continue;
                    for (int64_t k = i + m; k < i + m + max; ++k) out.push_back(k < n ? ctx[size_t(k)] : out[size_t(k - n)]);
                    return out;
                }
            return out;
        };
        std::mt19937 rng(5);
        int with_drafts = 0;
        for (int trial = 0; trial < 3000; ++trial) {
            V ctx(size_t(rng() % 200));
            const uint32_t alphabet = 2 + rng() % 12;
            for (auto& t : ctx) t = int32_t(rng() % alphabet);
            const int64_t max = int64_t(rng() % 9);
            const V want = definition(ctx, max);
            with_drafts += !want.empty();
            QCOMPARE(drafts(ctx, max), want);
        }
        QVERIFY(with_drafts > 2000);
    }

    // Drafts looked up in the context (GenerateRequest::lookup): the greedy tokens of
    // plain decoding, with fewer steps where the answer repeats; on a model with an MTP
    // module too, which the lookup then replaces; and sampled with top-k 1, greedy's
    // tokens and acceptances. The prompts repeat a pattern, as the fixtures' own answers
    // soon do.
    void greedyLookupEqualsPlain() {
        int64_t accepted = 0;
        for (const char* name : {"v2-greedy", "v3-noaux", "v3-fp8"}) {
            const std::string dir = fixture(name);
            auto e = load(dir);
            for (int k = 0; k < 3; ++k) {
                std::vector<int32_t> ids = golden_ids(dir, k);
                const std::vector<int32_t> once = ids;
                ids.insert(ids.end(), once.begin(), once.end());
                ids.resize(ids.size() - once.size() / 2);  // the second copy cut half-way
                e->reset_cache();
                const auto plain = e->generate(greedy(ids, 48, false));
                for (int draft : {1, 2, 4, 8}) {
                    auto req = greedy(ids, 48, draft % 2 == 0, draft);  // MTP asked for too, half the time
                    req.lookup = true;
                    e->reset_cache();
                    const auto spec = e->generate(req);
                    QVERIFY(spec.lookup_used && !spec.mtp_used);
                    QCOMPARE(spec.ids, plain.ids);
                    QVERIFY(spec.stats.drafts_proposed > 0);
                    QCOMPARE(spec.stats.verify_steps, plain.stats.verify_steps - spec.stats.drafts_accepted);
                    accepted += spec.stats.drafts_accepted;
                    // Sampled with top-k 1 (through the sampled verification, each draft's q all
                    // on its id): the target is all on the argmax, so a draft is accepted exactly
                    // when greedy takes it, and the answer and the steps are greedy's.
                    req.sampling.temperature = 1.0f;
                    req.sampling.top_k = 1;
                    req.sampling.seed = uint64_t(draft);
                    e->reset_cache();
                    const auto sampled = e->generate(req);
                    QCOMPARE(sampled.ids, plain.ids);
                    QCOMPARE(sampled.stats.drafts_proposed, spec.stats.drafts_proposed);
                    QCOMPARE(sampled.stats.drafts_accepted, spec.stats.drafts_accepted);
                }
            }
        }
        QVERIFY2(accepted > 50, qPrintable(QStringLiteral("%1 drafts accepted").arg(accepted)));
    }

    void bf16CacheGeneration() {
        // A bf16 latent cache: half the bytes per token, and the generator's
        // invariants hold as with fp32 (a rounded row is a function of the token's own
        // fp32 row, the same in a batch of one or in a verify batch): MTP greedy equals
        // plain greedy, and a reused prefix gives what a fresh cache gives.
        const std::string dir = fixture("v3-noaux");
        auto f32 = load(dir);
        auto e = load(dir, 256, cetus::KvCacheType::BF16);
        QCOMPARE(e->info().kv_cache_type, std::string("bf16"));
        QCOMPARE(f32->info().kv_cache_type, std::string("f32"));
        QCOMPARE(e->info().kv_bytes_per_token_held * 2, f32->info().kv_bytes_per_token_held);
        for (int k = 0; k < 3; ++k) {
            auto ids = golden_ids(dir, k);
            e->reset_cache();
            auto plain = e->generate(greedy(ids, 40, false));
            QVERIFY(plain.stats.kv_bytes_used == uint64_t(plain.stats.tokens_cached) * e->info().kv_bytes_per_token_held);
            for (int draft : {1, 3}) {
                e->reset_cache();
                auto spec = e->generate(greedy(ids, 40, true, draft));
                QVERIFY(spec.stats.drafts_proposed > 0);
                QCOMPARE(spec.ids, plain.ids);
            }
            // The same request again reuses the cached prefix.
            auto again = e->generate(greedy(ids, 40, false));
            QVERIFY(again.stats.reused_prefix_tokens > 0);
            QCOMPARE(again.ids, plain.ids);
        }
    }

    void greedyMtpEqualsPlainOnDemoModel() {
        // The trained model shipped in resources/models: real chats, real MTP drafts.
        const std::string dir = std::string(CETUS_SOURCE_DIR) + "/resources/models/cetus-demo";
        if (!std::filesystem::exists(dir + "/config.json")) QSKIP("no bundled model in this tree");
        auto e = load(dir, 512);
        int64_t accepted = 0, proposed = 0;
        for (const MtpRun& run : mtp_against_plain(*e,
                                                   {"Hello! Who are you?", "What does the word generous mean?",
                                                    "What is the weather today?", "What is the opposite of ancient?"},
                                                   1.0f, {1, 2})) {
            QCOMPARE(run.spec.ids, run.plain.ids);
            QCOMPARE(run.spec.text, run.plain.text);
            accepted += run.spec.stats.drafts_accepted;
            proposed += run.spec.stats.drafts_proposed;
        }
        // The trained module's drafts are mostly right (81% in the bench); drafts
        // taken from the wrong position or row would be mostly wrong.
        QVERIFY2(accepted * 2 > proposed, qPrintable(QStringLiteral("%1 of %2 accepted").arg(accepted).arg(proposed)));
    }

    void continueFinalMessageExtendsTheAnswer() {
        // An answer cut after k tokens and continued (continue_final_message) goes on
        // exactly as the uncut greedy answer did, with MTP on and off: the prompt ends
        // in the cut answer's tokens, with no end of turn and no new generation prompt.
        const std::string dir = std::string(CETUS_SOURCE_DIR) + "/resources/models/cetus-demo";
        if (!std::filesystem::exists(dir + "/config.json")) QSKIP("no bundled model in this tree");
        auto e = load(dir, 512);
        const cetus::Tokenizer& tok = *e->tokenizer();
        int checked = 0;
        for (const char* q : {"Hello! Who are you?", "What is the capital of France?", "What does the word generous mean?"}) {
            cetus::GenerateRequest full;
            full.messages = {{"user", q}};
            full.sampling.temperature = 0.0f;
            full.max_new_tokens = 20;
            full.mtp = false;
            e->reset_cache();
            const auto whole = e->generate(full);
            QVERIFY2(whole.ids.size() >= 6, whole.text.c_str());
            for (size_t k : {size_t(2), size_t(5)}) {
                const std::vector<int32_t> head(whole.ids.begin(), whole.ids.begin() + std::ptrdiff_t(k));
                const std::string cut = tok.decode(head);
                if (tok.encode(cut, false) != head) continue;  // not how the tokenizer writes that text
                for (bool mtp : {false, true}) {
                    cetus::GenerateRequest more;
                    more.messages = {{"user", q}, {"assistant", cut}};
                    more.continue_final_message = true;
                    more.sampling.temperature = 0.0f;
                    more.max_new_tokens = int32_t(whole.ids.size() - k);
                    more.mtp = mtp;
                    // The prompt is the question's prompt and the cut answer's tokens.
                    cetus::GenerateRequest question = full;
                    QCOMPARE(e->count_tokens(more), e->count_tokens(question) + int64_t(k));
                    const auto rest = e->generate(more);
                    QCOMPARE(std::vector<int32_t>(whole.ids.begin() + std::ptrdiff_t(k), whole.ids.end()), rest.ids);
                    QCOMPARE(cut + rest.text, whole.text);
                    ++checked;
                }
            }
        }
        QVERIFY2(checked >= 4, qPrintable(QString::number(checked)));
        // Only an answer can be continued.
        cetus::GenerateRequest bad;
        bad.messages = {{"user", "Hi"}};
        bad.continue_final_message = true;
        try {
            e->generate(bad);
            QFAIL("continued a user message");
        } catch (const cetus::Error& err) {
            QCOMPARE(err.code(), cetus::ErrorCode::BadRequest);
        }
    }

    void logprobsAreTheModelsOwn() {
        // Each token's log-probability is the log-softmax of the model's raw logits at its
        // position: computed here from Engine::logits over the prompt and the answer (one
        // prefill on another engine), whatever the sampling settings, with MTP drafts or
        // without, and the choices are those of a run that did not ask for them.
        const std::string dir = std::string(CETUS_SOURCE_DIR) + "/resources/models/cetus-demo";
        if (!std::filesystem::exists(dir + "/config.json")) QSKIP("no bundled model in this tree");
        auto e = load(dir, 512), ref = load(dir, 512);
        const int64_t V = e->info().vocab_size;
        const int64_t n_valid = std::min<int64_t>(V, e->tokenizer()->vocab_size());
        struct Token {
            int32_t id;
            float logprob;
            std::vector<cetus::TokenLogprob> top;
        };
        struct Case {
            bool mtp;
            int draft;
            float temperature;
        };
        std::vector<float> greedy_plain;  // the greedy answer's logprobs without drafts
        int checked = 0;
        for (const Case& cs : {Case{false, 1, 0.0f}, Case{true, 1, 0.0f}, Case{true, 3, 0.0f}, Case{false, 1, 1.3f},
                               Case{true, 2, 1.3f}}) {
            cetus::GenerateRequest r;
            r.messages = {{"user", "What is the opposite of ancient?"}};
            r.sampling.temperature = cs.temperature;
            r.sampling.top_k = 8;
            r.sampling.seed = 11;
            r.max_new_tokens = 40;
            r.mtp = cs.mtp;
            r.n_draft = cs.draft;
            e->reset_cache();
            const auto without = e->generate(r);
            r.logprobs = 5;
            std::vector<Token> tokens;
            bool saw_end = false;
            e->reset_cache();
            const auto with = e->generate(r, [&](const cetus::TokenEvent& ev) {
                if (ev.id < 0) return;
                QVERIFY(ev.has_logprob);
                if (ev.end_of_sequence) {
                    saw_end = true;
                    return;
                }
                tokens.push_back({ev.id, ev.logprob, {ev.top_logprobs.begin(), ev.top_logprobs.end()}});
            });
            QCOMPARE(with.ids, without.ids);
            QCOMPARE(with.text, without.text);
            QCOMPARE(saw_end, with.finish == cetus::FinishReason::Eos);
            QCOMPARE(tokens.size(), with.ids.size());
            if (cs.mtp) QVERIFY(with.stats.drafts_accepted > 0);

            std::vector<int32_t> all = e->tokenizer()->encode_chat(r.messages, true);
            const size_t n_prompt = all.size();
            all.insert(all.end(), with.ids.begin(), with.ids.end());
            const std::vector<float> logits = ref->logits(all);
            for (size_t i = 0; i < tokens.size(); ++i) {
                const float* row = logits.data() + (n_prompt - 1 + i) * size_t(V);
                double m = -INFINITY, z = 0.0;
                for (int64_t v = 0; v < n_valid; ++v) m = std::max(m, double(row[v]));
                for (int64_t v = 0; v < n_valid; ++v) z += std::exp(double(row[v]) - m);
                auto expected = [&](int32_t id) { return double(row[id]) - m - std::log(z); };
                const Token& t = tokens[i];
                QVERIFY2(std::abs(t.logprob - expected(t.id)) < 1e-4,
                         qPrintable(QStringLiteral("token %1: %2 against %3").arg(i).arg(t.logprob).arg(expected(t.id))));
                // The five most likely, most likely first, each with its own figure; none
                // left out is more likely than the last one listed.
                QCOMPARE(t.top.size(), size_t(5));
                std::vector<char> listed(size_t(n_valid), 0);
                for (size_t k = 0; k < t.top.size(); ++k) {
                    QVERIFY(std::abs(t.top[k].logprob - expected(t.top[k].id)) < 1e-4);
                    if (k > 0) QVERIFY(t.top[k].logprob <= t.top[k - 1].logprob);
                    listed[size_t(t.top[k].id)] = 1;
                }
                for (int64_t v = 0; v < n_valid; ++v)
                    if (!listed[size_t(v)]) QVERIFY(expected(int32_t(v)) <= t.top.back().logprob + 1e-4);
                // Greedy picks the most likely token.
                if (cs.temperature == 0.0f) QCOMPARE(t.top[0].id, t.id);
                ++checked;
            }
            if (cs.temperature == 0.0f) {
                std::vector<float> lp;
                for (const Token& t : tokens) lp.push_back(t.logprob);
                // Drafts verified in one batch give each row the arithmetic of a single step.
                if (!cs.mtp) greedy_plain = lp;
                else QCOMPARE(lp, greedy_plain);
            }
        }
        QVERIFY2(checked >= 100, qPrintable(QString::number(checked)));
        // Out of range: refused before any work.
        cetus::GenerateRequest bad = greedy({1, 2, 3}, 4, false);
        bad.logprobs = cetus::k_max_top_logprobs + 1;
        try {
            e->generate(bad);
            QFAIL("accepted logprobs beyond the limit");
        } catch (const cetus::Error& err) {
            QCOMPARE(err.code(), cetus::ErrorCode::BadRequest);
        }
    }

    void greedyMtpEqualsPlainWithRepetitionPenalty() {
        // The bonus token after accepted drafts must see them in its penalty set, as plain
        // decoding does; the trained model accepts most drafts, so that path runs often.
        const std::string dir = std::string(CETUS_SOURCE_DIR) + "/resources/models/cetus-demo";
        if (!std::filesystem::exists(dir + "/config.json")) QSKIP("no bundled model in this tree");
        auto e = load(dir, 512);
        for (const MtpRun& run :
             mtp_against_plain(*e, {"Who are you?", "What can you do?", "What is the weather today?"}, 1.3f, {1, 3})) {
            QVERIFY(run.spec.stats.drafts_accepted > 0);
            QCOMPARE(run.spec.ids, run.plain.ids);
        }
    }

    void countPenaltiesFollowTheFormula() {
        // Greedy answers with frequency and presence penalties, plainly and with MTP drafts:
        // each token is the argmax of the model's raw logits at its position (one prefill
        // on another engine) less OpenAI's penalties over the answer's tokens before it,
        // the prompt's not counted.
        const std::string dir = std::string(CETUS_SOURCE_DIR) + "/resources/models/cetus-demo";
        if (!std::filesystem::exists(dir + "/config.json")) QSKIP("no bundled model in this tree");
        auto e = load(dir, 512), ref = load(dir, 512);
        const int64_t V = e->info().vocab_size;
        const int64_t n_valid = std::min<int64_t>(V, e->tokenizer()->vocab_size());
        int changed = 0, checked = 0;
        cetus::GenerateRequest r;
        // (The third repeats a word of its question: penalising the prompt's tokens too
        // would change its answer.)
        // (The last one, with a negative frequency penalty, repeats a token many times:
        // a token counted twice would show.)
        for (const char* question : {"List ten animals.", "What can you do?", "Use the word ocean in a sentence.",
                                     "Say ha ha ha ha ha ha ha ha."}) {
            r = {};
            r.messages = {{"user", question}};
            r.sampling.temperature = 0.0f;
            r.max_new_tokens = 48;
            e->reset_cache();
            const auto unpenalised = e->generate(r);
            for (const auto& [frequency, presence] : {std::pair{0.8f, 1.5f}, std::pair{0.0f, 1.5f}, std::pair{-0.6f, 0.0f}, std::pair{2.0f, 2.0f},
                                                      std::pair{-2.0f, 0.0f}, std::pair{-1.0f, 0.5f}}) {
                std::vector<int32_t> plain_ids;
                for (const auto& [mtp, draft] : {std::pair{false, 1}, std::pair{true, 1}, std::pair{true, 3}}) {
                    r.sampling.frequency_penalty = frequency;
                    r.sampling.presence_penalty = presence;
                    r.mtp = mtp;
                    r.n_draft = draft;
                    e->reset_cache();
                    const auto got = e->generate(r);
                    if (!mtp) plain_ids = got.ids;
                    else QCOMPARE(got.ids, plain_ids);  // drafts verified under the same penalties
                    changed += got.ids != unpenalised.ids;
                    std::vector<int32_t> all = e->tokenizer()->encode_chat(r.messages, true);
                    const size_t n_prompt = all.size();
                    all.insert(all.end(), got.ids.begin(), got.ids.end());
                    const std::vector<float> logits = ref->logits(all);
                    std::vector<int> count(size_t(V), 0);
                    for (size_t i = 0; i < got.ids.size(); ++i) {
                        const float* row = logits.data() + (n_prompt - 1 + i) * size_t(V);
                        auto value = [&](int64_t v) {
                            const int c = count[size_t(v)];
                            return double(row[v]) - (c > 0 ? frequency * c + presence : 0.0);
                        };
                        double best = -INFINITY;
                        for (int64_t v = 0; v < n_valid; ++v) best = std::max(best, value(v));
                        QVERIFY2(value(got.ids[i]) >= best - 1e-4,
                                 qPrintable(QStringLiteral("f %1 p %2 mtp %3/%4, token %5: %6 against the best %7")
                                                .arg(frequency).arg(presence).arg(mtp).arg(draft).arg(i)
                                                .arg(value(got.ids[i])).arg(best)));
                        ++count[size_t(got.ids[i])];
                        ++checked;
                    }
                }
            }
        }
        QVERIFY(changed > 0);  // the penalties did change answers
        QVERIFY2(checked >= 200, qPrintable(QString::number(checked)));
        cetus::GenerateRequest bad = r;
        bad.sampling.presence_penalty = 3.0f;
        try {
            e->generate(bad);
            QFAIL("accepted a presence penalty of 3");
        } catch (const cetus::Error& err) {
            QCOMPARE(err.code(), cetus::ErrorCode::BadRequest);
        }
    }

    void sampledMtpKeepsDistribution() {
        const std::string dir = fixture("v3-noaux");
        auto e = load(dir);
        auto ids = golden_ids(dir, 1);
        const int n = 1500;
        int64_t proposed = 0;
        using Counts = std::pair<std::map<int32_t, int>, std::map<int32_t, int>>;
        auto draw = [&](bool mtp, float temperature) -> Counts {
            std::map<int32_t, int> second, third;
            for (int s = 0; s < n; ++s) {
                cetus::GenerateRequest r;
                r.prompt_ids = ids;
                r.sampling.temperature = temperature;
                r.sampling.top_k = 12;
                r.sampling.seed = uint64_t(s) * 7919 + (mtp ? 1 : 2);
                r.max_new_tokens = 3;
                r.mtp = mtp;
                auto res = e->generate(r);
                // -1 stands for "ended before" (end-of-sequence drawn earlier).
                second[res.ids.size() > 1 ? res.ids[1] : -1]++;
                third[res.ids.size() > 2 ? res.ids[2] : -1]++;
                proposed += res.stats.drafts_proposed;
            }
            return {second, third};
        };
        auto plain = draw(false, 1.0f);
        QCOMPARE(proposed, int64_t(0));
        auto spec = draw(true, 1.0f);
        QVERIFY(proposed > 0);
        const double z2 = chi_square_z(plain.first, spec.first, n), z3 = chi_square_z(plain.second, spec.second, n);
        qInfo("MTP vs plain sampling: chi-square z = %.2f (2nd token), %.2f (3rd token); reject above 3.09", z2, z3);
        QVERIFY2(z2 < 3.09 && z3 < 3.09, "sampled MTP output differs in distribution from plain sampling");
        // The test has power: a visibly different sampler (temperature 0.6) is rejected.
        auto cooler = draw(false, 0.6f);
        const double zc = chi_square_z(plain.second, cooler.second, n);
        qInfo("temperature 1.0 vs 0.6: z = %.2f", zc);
        QVERIFY(zc > 3.09);
    }

    // Sampling with looked-up drafts (q all on the drafted id): the same distribution
    // of the answer's 2nd to 5th tokens as plain sampling. The prompt holds the model's
    // likely answer, so that drafts are found and some accepted.
    void sampledLookupKeepsDistribution() {
        const std::string dir = fixture("v3-noaux");
        auto e = load(dir);
        // The prompt, the model's greedy answer to it, the prompt again: what the model is
        // likely to draw next stands in the context, with what followed it.
        const std::vector<int32_t> once = golden_ids(dir, 1);
        std::vector<int32_t> ids = once;
        const auto answer = e->generate(greedy(once, 16, false)).ids;
        ids.insert(ids.end(), answer.begin(), answer.end());
        ids.insert(ids.end(), once.begin(), once.end());
        const int n = 1500;
        int64_t proposed = 0, accepted = 0;
        auto draw = [&](bool lookup) -> std::vector<std::map<int32_t, int>> {
            std::vector<std::map<int32_t, int>> at(4);  // tokens 2 to 5
            for (int s = 0; s < n; ++s) {
                cetus::GenerateRequest r;
                r.prompt_ids = ids;
                r.sampling.temperature = 0.6f;
                r.sampling.top_k = 12;
                r.sampling.seed = uint64_t(s) * 7919 + (lookup ? 5 : 6);
                r.max_new_tokens = 5;
                r.mtp = false;
                r.lookup = lookup;
                r.n_draft = 4;
                auto res = e->generate(r);
                for (size_t k = 0; k < at.size(); ++k) at[k][res.ids.size() > k + 1 ? res.ids[k + 1] : -1]++;
                proposed += res.stats.drafts_proposed;
                accepted += res.stats.drafts_accepted;
            }
            return at;
        };
        auto plain = draw(false);
        QCOMPARE(proposed, int64_t(0));
        auto spec = draw(true);
        qInfo("looked-up drafts: %lld proposed, %lld accepted", (long long)proposed, (long long)accepted);
        // A random model repeats itself little, so few steps take more than one draft: the
        // q of later drafts is checked by greedyLookupEqualsPlain's sampling with top-k 1.
        QVERIFY(proposed > n / 4 && accepted > n / 30);
        for (size_t k = 0; k < plain.size(); ++k) {
            const double z = chi_square_z(plain[k], spec[k], n);
            qInfo("looked-up drafts vs plain sampling, token %d: chi-square z = %.2f; reject above 3.09", int(k + 2), z);
            QVERIFY2(z < 3.09, "sampling with looked-up drafts differs in distribution from plain sampling");
        }
    }

    void prefixIsReused() {
        const std::string dir = fixture("v3-noaux");
        auto e = load(dir);
        auto ids = golden_ids(dir, 1);
        auto first = e->generate(greedy(ids, 8, true));
        QCOMPARE(first.stats.reused_prefix_tokens, int64_t(0));
        // The next turn: prompt + answer + new tokens.
        std::vector<int32_t> next = ids;
        next.insert(next.end(), first.ids.begin(), first.ids.end());
        next.insert(next.end(), {5, 6, 7});
        auto second = e->generate(greedy(next, 8, true));
        QVERIFY2(second.stats.reused_prefix_tokens >= int64_t(ids.size() + first.ids.size() - 1),
                 qPrintable(QString::number(second.stats.reused_prefix_tokens)));
        auto fresh = load(dir)->generate(greedy(next, 8, true));
        QCOMPARE(second.ids, fresh.ids);
        // Regenerate: the same prompt again reuses all but the last token.
        auto again = e->generate(greedy(next, 8, false));
        QCOMPARE(again.stats.reused_prefix_tokens, int64_t(next.size() - 1));
        QCOMPARE(again.ids, fresh.ids);
    }

    void cancelWithinOneStep() {
        const std::string dir = fixture("v3-noaux");
        auto e = load(dir);
        auto ids = golden_ids(dir, 2);
        std::atomic<bool> cancel{false};
        auto req = greedy(ids, 100, true, 2);
        req.cancel = &cancel;
        int64_t seen = 0;
        auto r = e->generate(req, [&](const cetus::TokenEvent& ev) {
            if (ev.id >= 0 && ++seen == 3) cancel = true;
        });
        QCOMPARE(r.finish, cetus::FinishReason::Cancelled);
        QVERIFY2(r.stats.generated_tokens <= 3 + 3, "more than one step after the cancel");  // one step: <= draft + 1
        // Still usable, and consistent with a fresh engine.
        auto after = e->generate(greedy(ids, 12, true));
        auto fresh = load(dir)->generate(greedy(ids, 12, true));
        QCOMPARE(after.ids, fresh.ids);
    }

    void limits() {
        const std::string dir = fixture("v3-noaux");
        auto e = load(dir, 16);
        std::vector<int32_t> ids(20, 7);
        try {
            e->generate(greedy(ids, 4, false));
            QFAIL("no error for a prompt past the context");
        } catch (const cetus::Error& err) {
            QCOMPARE(err.code(), cetus::ErrorCode::ContextOverflow);
            QVERIFY2(QString(err.what()).contains("by 5"), err.what());
        }
        auto r = e->generate(greedy(std::vector<int32_t>(10, 7), 100, true));
        QCOMPARE(r.finish, cetus::FinishReason::ContextFull);
        QCOMPARE(r.stats.tokens_cached, int64_t(16));
        auto m = e->generate(greedy(std::vector<int32_t>(4, 9), 3, true));
        QCOMPARE(m.finish, cetus::FinishReason::Length);
        QCOMPARE(m.ids.size(), size_t(3));
        std::vector<int32_t> bad{1, 2, 100000};
        QVERIFY_THROWS_EXCEPTION(cetus::Error, e->generate(greedy(bad, 3, false)));
        // Non-finite sampling parameters are refused (NaN passed the old range checks).
        for (int field = 0; field < 4; ++field) {
            cetus::GenerateRequest q = greedy(std::vector<int32_t>(4, 9), 3, false);
            const float nan = std::numeric_limits<float>::quiet_NaN();
            if (field == 0) q.sampling.temperature = nan;
            if (field == 1) q.sampling.top_p = nan;
            if (field == 2) q.sampling.min_p = nan;
            if (field == 3) q.sampling.repetition_penalty = std::numeric_limits<float>::infinity();
            try {
                e->generate(q);
                QFAIL(qPrintable(QString("sampling field %1 accepted a non-finite value").arg(field)));
            } catch (const cetus::Error& err) {
                QCOMPARE(err.code(), cetus::ErrorCode::BadRequest);
            }
        }
    }

    // A subnormal temperature (the server takes any in [0, 2]) answers as greedy
    // decoding does, with and without MTP; it gave arbitrary tokens when the
    // scaled logits overflowed.
    void subnormalTemperatureAnswersGreedily() {
        auto e = load(fixture("v3-noaux"), 64);
        const std::vector<int32_t> prompt{5, 9, 14, 3, 27};
        const cetus::GenerateResult plain = e->generate(greedy(prompt, 12, false));
        for (bool mtp : {false, true}) {
            cetus::GenerateRequest q = greedy(prompt, 12, mtp);
            q.sampling.temperature = 1e-42f;
            q.sampling.top_p = 0.95f;
            q.sampling.seed = 11;
            e->reset_cache();
            QCOMPARE(e->generate(q).ids, plain.ids);
        }
    }

    void routingAndStatsPerToken() {
        const std::string dir = fixture("v3-noaux");
        auto e = load(dir);
        auto ids = golden_ids(dir, 0);
        int events = 0;
        int64_t total = 0;
        auto r = e->generate(greedy(ids, 10, true), [&](const cetus::TokenEvent& ev) {
            ++events;
            QCOMPARE(ev.n_moe_layers, 2);
            QCOMPARE(ev.top_k, 4);
            QCOMPARE(ev.expert_ids.size(), size_t(8));
            for (int32_t x : ev.expert_ids) QVERIFY(x >= 0 && x < 16);
            QVERIFY(ev.stats && ev.stats->kv_bytes_used > 0);
        });
        QCOMPARE(events, 10);
        for (int64_t c : r.expert_counts) total += c;
        QCOMPARE(total, int64_t(10 * 2 * 4));
        QCOMPARE(r.stats.tokens_cached, int64_t(ids.size() + 9));
        QVERIFY(r.stats.kv_bytes_used == uint64_t(r.stats.tokens_cached) * e->info().kv_bytes_per_token_held);
    }

    void textStreamsAndStopStrings() {
        // The tiny model with a byte-level tokenizer (tests/data/ui): chat template,
        // complete UTF-8 pieces, and stop strings cut the text before the match.
        QTemporaryDir tmp;
        const std::string g = fixture("v3-noaux"), t = std::string(CETUS_TEST_DATA) + "/ui", d = tmp.path().toStdString();
        for (const char* f : {"config.json", "model.safetensors"}) std::filesystem::copy(g + "/" + f, d + "/" + f);
        for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) std::filesystem::copy(t + "/" + f, d + "/" + f);
        auto e = load(d);
        cetus::GenerateRequest r;
        r.messages = {{"system", "Be brief."}, {"user", "Hello"}};
        r.sampling.temperature = 0.0f;
        r.max_new_tokens = 48;
        std::string streamed;
        bool valid_utf8 = true;
        auto collect = [&](const cetus::TokenEvent& ev) {
            const QByteArray bytes(ev.text.data(), qsizetype(ev.text.size()));
            valid_utf8 &= QString::fromUtf8(bytes).toUtf8() == bytes;  // complete, valid UTF-8 only
            streamed += ev.text;
        };
        // A user message whose greedy answer is long enough to cut (random model).
        cetus::GenerateResult plain;
        for (const char* q : {"Hello", "Tell me more", "Why?", "abc", "What is MLA?"}) {
            r.messages.back().content = q;
            streamed.clear();
            plain = e->generate(r, collect);
            if (plain.text.size() >= 6) break;
        }
        QVERIFY(valid_utf8);
        QCOMPARE(streamed, plain.text);
        QVERIFY(e->count_tokens(r) > 10);
        QVERIFY2(plain.text.size() >= 6, plain.text.c_str());
        // Stop at a string taken from the middle of the greedy answer.
        const std::string stop = plain.text.substr(plain.text.size() / 2, 2);
        const size_t cut = plain.text.find(stop);
        r.stop = {stop};
        for (bool mtp : {false, true}) {
            r.mtp = mtp;
            std::string s2;
            auto stopped = e->generate(r, [&](const cetus::TokenEvent& ev) { s2 += ev.text; });
            QCOMPARE(stopped.finish, cetus::FinishReason::Stop);
            QCOMPARE(stopped.text, plain.text.substr(0, cut));
            QCOMPARE(s2, stopped.text);
            QVERIFY(stopped.stats.reused_prefix_tokens > 0);  // same prompt: all but one token reused
        }
    }

    void fitToContextLeavesOutTheOldest() {
        // The tiny model (128 tokens) with the byte-level tokenizer: a chat that has
        // outgrown the context loses its oldest turns (a question and its answer), never
        // the system message or the last turn, and no more than needed; a chat that fits
        // is left alone.
        QTemporaryDir tmp;
        const std::string g = fixture("v3-noaux"), t = std::string(CETUS_TEST_DATA) + "/ui", d = tmp.path().toStdString();
        for (const char* f : {"config.json", "model.safetensors"}) std::filesystem::copy(g + "/" + f, d + "/" + f);
        for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) std::filesystem::copy(t + "/" + f, d + "/" + f);
        auto e = load(d);
        QCOMPARE(e->info().context_length, int64_t(128));
        const std::string q(30, 'q'), a(20, 'a');
        cetus::GenerateRequest r;
        r.max_new_tokens = 8;  // room: min(8, max(16, 128 / 4)) = 8
        r.messages = {{"system", "Be brief."}, {"user", "1" + q}, {"assistant", "1" + a}, {"user", "2" + q},
                      {"assistant", "2" + a}, {"user", "3" + q}, {"assistant", "3" + a}, {"user", "4" + q}};
        const auto all = r.messages;
        QVERIFY(e->count_tokens(r) + 8 > 128);
        const int left_out = e->fit_to_context(r);
        QVERIFY(left_out > 0);
        QCOMPARE(r.messages.size() + size_t(left_out), all.size());
        QCOMPARE(r.messages.front().content, std::string("Be brief."));
        QCOMPARE(r.messages.back().content, all.back().content);
        QCOMPARE(r.messages[1].role, std::string("user"));  // whole turns go: a user's turn comes first
        QCOMPARE(left_out % 2, 0);
        // The oldest went: what is left is the system message and the newest ones.
        QVERIFY(std::equal(r.messages.begin() + 1, r.messages.end(), all.end() - std::ptrdiff_t(r.messages.size() - 1),
                           [](const auto& x, const auto& y) { return x.content == y.content; }));
        QVERIFY(e->count_tokens(r) + 8 <= 128);
        cetus::GenerateRequest one_more = r;  // one turn fewer left out would not fit
        one_more.messages.insert(one_more.messages.begin() + 1, all.begin() + left_out - 1, all.begin() + left_out + 1);
        QVERIFY(e->count_tokens(one_more) + 8 > 128);
        r.sampling.temperature = 0.0f;
        const auto answer = e->generate(r);
        QVERIFY(answer.stats.generated_tokens > 0);
        // A long chat of uneven turns (answers left unanswered, a system message in the
        // middle) against the plain rule, one oldest turn at a time until it fits.
        for (int seed = 1; seed <= 6; ++seed) {
            cetus::GenerateRequest longer;
            longer.max_new_tokens = 8;
            longer.messages = {{"system", "Be brief."}};
            for (int turn = 0; turn < 40; ++turn) {
                longer.messages.push_back({"user", std::string(size_t(1 + (turn * 7 + seed) % 13), char('a' + turn % 26))});
                if ((turn + seed) % 5 != 0) longer.messages.push_back({"assistant", std::string(size_t(1 + (turn * 3) % 11), 'z')});
                if (turn == 17 + seed) longer.messages.push_back({"system", "Mind the middle."});
            }
            cetus::GenerateRequest plain_rule = longer;
            int plain_left_out = 0;
            while (e->count_tokens(plain_rule) + 8 > 128) {
                auto& m = plain_rule.messages;
                auto first = std::find_if(m.begin(), m.end(), [](const auto& x) { return x.role != "system"; });
                auto next = std::find_if(first + 1, m.end(), [](const auto& x) { return x.role == "user"; });
                if (first == m.end() || next == m.end()) break;
                plain_left_out += int(next - first);
                m.erase(first, next);
            }
            QCOMPARE(e->fit_to_context(longer), plain_left_out);
            QCOMPARE(longer.messages.size(), plain_rule.messages.size());
            for (size_t i = 0; i < longer.messages.size(); ++i) {
                QCOMPARE(longer.messages[i].role, plain_rule.messages[i].role);
                QCOMPARE(longer.messages[i].content, plain_rule.messages[i].content);
            }
        }
        // Fits already: untouched.
        cetus::GenerateRequest small;
        small.max_new_tokens = 8;
        small.messages = {{"user", "hi"}, {"assistant", "hello"}, {"user", "bye"}};
        QCOMPARE(e->fit_to_context(small), 0);
        QCOMPARE(small.messages.size(), size_t(3));
        // A last message too long on its own stays, and generate refuses it clearly.
        cetus::GenerateRequest huge;
        huge.max_new_tokens = 8;
        huge.messages = {{"user", "old"}, {"assistant", "reply"}, {"user", std::string(300, 'x')}};
        QCOMPARE(e->fit_to_context(huge), 2);
        QCOMPARE(huge.messages.size(), size_t(1));
        try {
            e->generate(huge);
            QFAIL("an over-long message was accepted");
        } catch (const cetus::Error& err) {
            QCOMPARE(err.code(), cetus::ErrorCode::ContextOverflow);
        }
    }

    void modelWithoutMtpRunsPlainly() {
        QTemporaryDir tmp;
        const std::string src = fixture("v2-greedy"), dst = tmp.path().toStdString();
        std::filesystem::copy(src + "/model.safetensors", dst + "/model.safetensors");
        std::ifstream in(src + "/config.json");
        std::string cfg((std::istreambuf_iterator<char>(in)), {});
        auto pos = cfg.find("\"num_nextn_predict_layers\": 1");
        QVERIFY(pos != std::string::npos);
        cfg.replace(pos, 29, "\"num_nextn_predict_layers\": 0");
        std::ofstream(dst + "/config.json") << cfg;
        auto e = load(dst);
        QCOMPARE(e->info().n_mtp_layers, int64_t(0));
        auto r = e->generate(greedy(golden_ids(src, 0), 6, true));
        QVERIFY(!r.mtp_used);
        QVERIFY(QString::fromStdString(r.mtp_note).contains("no MTP"));
        QCOMPARE(r.stats.drafts_proposed, int64_t(0));
    }
};

QTEST_GUILESS_MAIN(TestGenerator)
#include "test_generator.moc"
