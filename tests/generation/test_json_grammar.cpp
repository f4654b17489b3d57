// JSON mode against an independent judge: nlohmann-json's parser says whether a text is
// one whole JSON object, can still become one (it fails only at the end of the input),
// or cannot. The grammar must agree on every prefix of hand-written and mutated
// documents; the vocabulary masks must equal the judge's verdict on every token of the
// bundled model's tokenizer; and generation in JSON mode must choose, at every step,
// the model's best token among those the judge allows (greedy, with and without MTP
// drafts), and end only with a whole object.
#include "cetus/engine.h"
#include "json_grammar.h"

#include <nlohmann/json.hpp>

#include <QtTest>

#include <cctype>
#include <filesystem>
#include <random>
#include <tuple>

using cetus::JsonConstraint;
using cetus::JsonGrammar;

namespace {

enum class Verdict { Invalid, Prefix, Complete };

const char* name(Verdict v) { return v == Verdict::Invalid ? "invalid" : v == Verdict::Prefix ? "prefix" : "complete"; }

// Where the token the text ends inside begins (a string not closed, or a number or
// literal running to the very end, split as a JSON lexer splits them: a number is
// '-' or a digit, then digits (none after a leading 0), one '.', one 'e' or 'E' and
// a sign right after it; a literal is letters while they begin true, false or null);
// npos when the text ends between tokens.
size_t last_open_token(const std::string& s) {
    enum { None, String, Number, Word } in = None;
    size_t start = std::string::npos;
    for (size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        if (in == String) {
            if (c == '\\') ++i;
            else if (c == '"') in = None;
            continue;
        }
        const bool digit = std::isdigit(uint8_t(c)) != 0, letter = std::isalpha(uint8_t(c)) != 0;
        if (in == Number) {
            const std::string_view tok(s.data() + start, i - start);
            const bool has_exp = tok.find_first_of("eE") != std::string_view::npos;
            const bool leading_zero = tok == "0" || tok == "-0";  // no digit may follow it
            if ((digit && !leading_zero) || (c == '.' && tok.find('.') == std::string_view::npos && !has_exp) ||
                ((c == 'e' || c == 'E') && !has_exp) || ((c == '+' || c == '-') && (tok.back() == 'e' || tok.back() == 'E')))
                continue;
        }
        if (in == Word) {  // a literal goes on only while it is a prefix of one
            const std::string word = s.substr(start, i - start) + c;
            if (std::string_view("true").starts_with(word) || std::string_view("false").starts_with(word) ||
                std::string_view("null").starts_with(word))
                continue;
        }
        start = i;
        in = c == '"' ? String : (digit || c == '-') ? Number : letter ? Word : None;
    }
    return in == None ? std::string::npos : start;
}

// Endings that may close a string cut short: a quote; the rest of a \u escape (its
// digits padded with 0 or F, or some fixed values, a high surrogate followed by a low
// one); a backslash's escape; the continuation bytes of a cut UTF-8 character. The judge
// asks nlohmann about each, so a wrong guess can only make it stricter, never laxer.
std::vector<std::string> string_endings(const std::string& tail) {
    std::vector<std::string> out = {"\"", "n\"", "\\uDC00\"", "uDC00\""};
    // Trailing hex digits of an escape: "\u", then up to three digits.
    size_t k = 0;
    while (k < 3 && k < tail.size() && std::isxdigit(uint8_t(tail[tail.size() - 1 - k]))) ++k;
    for (size_t digits = 0; digits <= k; ++digits) {
        const size_t at = tail.size() - digits;
        if (at < 2 || tail[at - 1] != 'u' || tail[at - 2] != '\\') continue;
        const std::string h = tail.substr(at);
        std::vector<std::string> values = {h + std::string(4 - h.size(), '0'), h + std::string(4 - h.size(), 'F')};
        for (const char* v : {"0041", "D800", "DBFF", "DC00", "DFFF", "E000", "FFFF"}) values.push_back(v);
        for (const std::string& v : values) {
            if (QString::fromStdString(v).startsWith(QString::fromStdString(h), Qt::CaseInsensitive)) {
                const unsigned code = unsigned(std::stoul(v, nullptr, 16));
                out.push_back(v.substr(h.size()) + (code >= 0xD800 && code <= 0xDBFF ? "\\uDC00" : "") + "\"");
            }
        }
    }
    // A cut UTF-8 character: every continuation of the bytes it still needs, from a few values.
    size_t cont = 0;
    while (cont < 3 && cont < tail.size() && (uint8_t(tail[tail.size() - 1 - cont]) & 0xC0) == 0x80) ++cont;
    if (cont < tail.size()) {
        const uint8_t lead = uint8_t(tail[tail.size() - 1 - cont]);
        const size_t need = (lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : lead >= 0xC0 ? 1 : 0);
        if (need > cont) {
            std::vector<std::string> seqs = {""};
            for (size_t i = 0; i < need - cont; ++i) {
                std::vector<std::string> next;
                for (const std::string& q : seqs)
                    for (uint8_t c : {0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF}) next.push_back(q + char(c));
                seqs = std::move(next);
            }
            for (const std::string& q : seqs) out.push_back(q + "\"");
        }
    }
    return out;
}

// nlohmann-json's verdict on a text that starts with '{': a whole object (trailing
// whitespace allowed), the start of one (the parse fails only past the last byte), or neither. Its lexer reports a token
// cut by the end of the text before the parser asks whether such a token may stand
// there, so a text ending inside a token is judged with a whole token of its kind in
// its place (0 for a number, the literal itself), after a space; a string cut short is
// judged with each of its possible endings (string_endings).
Verdict judge(const std::string& s, bool stand_in_allowed = true) {
    if (s.empty()) return Verdict::Prefix;
    if (s[0] != '{') return Verdict::Invalid;  // JSON mode's answers open with the object
    try {
        return nlohmann::json::parse(s).is_object() ? Verdict::Complete : Verdict::Invalid;
    } catch (const nlohmann::json::parse_error& e) {
        if (e.byte <= s.size()) return Verdict::Invalid;
    }
    const size_t t = last_open_token(s);
    if (t == std::string::npos) return Verdict::Prefix;
    // Judging a stand-in or an ending: a string still open is no witness; a number or
    // literal running to the end is whole.
    if (!stand_in_allowed) return s[t] == '"' ? Verdict::Invalid : Verdict::Prefix;
    const char k = s[t];
    if (k == '"') {  // a cut string: the start of one if some ending makes it whole and in place
        for (const std::string& ending : string_endings(s.substr(t)))
            if (judge(s + ending, false) != Verdict::Invalid) return Verdict::Prefix;
        return Verdict::Invalid;
    }
    const char* stand_in = k == '"'                          ? "\"\""
                           : k == '-' || std::isdigit(uint8_t(k)) ? "0"
                           : k == 't'                        ? "true"
                           : k == 'f'                        ? "false"
                           : k == 'n'                        ? "null"
                                                             : nullptr;
    if (!stand_in) return Verdict::Invalid;
    // (After a space: the stand-in must not run on from a number or literal before it.)
    return judge(s.substr(0, t) + " " + stand_in, false) == Verdict::Invalid ? Verdict::Invalid : Verdict::Prefix;
}

Verdict grammar_verdict(const std::string& s) {
    JsonGrammar::State st;
    for (char c : s)
        if (!JsonGrammar::feed(st, uint8_t(c))) return Verdict::Invalid;
    return JsonGrammar::complete(st) ? Verdict::Complete : Verdict::Prefix;
}

// A prefix the grammar takes must go on: some byte follows it (no dead ends, where the
// generator would have nothing to choose).
bool has_next_byte(const std::string& s) {
    JsonGrammar::State st;
    if (!JsonGrammar::feed(st, s)) return false;
    if (JsonGrammar::complete(st)) return true;
    for (int b = 0; b < 256; ++b) {
        JsonGrammar::State t = st;
        if (JsonGrammar::feed(t, uint8_t(b))) return true;
    }
    return false;
}

bool within_limits(const std::string& s) {  // the grammar's caps, which the judge lacks
    int depth = 0, max_depth = 0, ws = 0, max_ws = 0;
    bool in_string = false;
    for (size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        if (in_string) {  // brackets and spaces inside strings count for nothing
            if (c == '\\') ++i;
            else if (c == '"') in_string = false;
            continue;
        }
        if (c == '"') in_string = true;
        if (c == '{' || c == '[') max_depth = std::max(max_depth, ++depth);
        if (c == '}' || c == ']') --depth;
        ws = (c == ' ' || c == '\n' || c == '\t' || c == '\r') ? ws + 1 : 0;
        max_ws = std::max(max_ws, ws);
    }
    return max_depth <= JsonGrammar::k_max_depth && max_ws <= JsonGrammar::k_max_whitespace;
}

const std::vector<std::string> k_documents = {
    "{}",
    "{ } ",
    "{\"a\":1}",
    "{\"a\": -0.5e+10, \"b\": [true, false, null, 0, 12, -3.25E-2], \"c\": {\"d\": \"e\"}}",
    "{\"text\": \"line\\nnext \\\"quoted\\\" \\\\ \\/ \\b\\f\\r\\t \\u00e9 \\uD83D\\uDE00\"}",
    "{\"utf8\": \"caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x90\x8B \xED\x9F\xBF \xEF\xBF\xBD\"}",
    "{\"nested\": [[[]], [{}], {\"x\": [1, {\"y\": []}]}]}",
    "{\n  \"pretty\": [\n    1,\n    2\n  ]\n}\n",
    "{\"big\": 123456789012345678901234567890, \"e\": 1E5, \"z\": 0e0}",
};

const std::vector<std::string> k_invalid = {
    "[]", "\"x\"", "1", " {}", "{\"a\"}", "{\"a\":}", "{a:1}", "{\"a\":01}", "{\"a\":1.}", "{\"a\":.5}", "{\"a\":+1}",
    "{\"a\":tru}", "{\"a\":1,}", "{\"a\":[1,]}", "{,}", "{\"a\":1}}", "{\"a\":1}x", "{\"a\":\"\x01\"}",
    "{\"a\":\"\\x\"}", "{\"a\":\"\\u12g4\"}", "{\"a\":\"\xC0\xAF\"}", "{\"a\":\"\xED\xA0\x80\"}",
    "{\"a\":\"\xF4\x90\x80\x80\"}", "{\"a\":\"\\uDC00\"}", "{\"a\":\"\\uD800x\"}", "{\"a\":\"\\uD800\\u0041\"}",
    "{\"a\":\"\\uDC", "{\"a\":\"\\uDF0", "{\"a\":\"\\uD83D\\u0", "{\"a\":\"\\uD83D\\uE", "{\"a\":\"\\uD83Dx",
    "{\"a\":[}", "{\"a\":{]}", "{\"a\" 1}", "{\"a\":1 \"b\":2}", "{\"a\":NaN}", "{\"a\":-}",
};

std::unique_ptr<cetus::Engine> load_demo() {
    const std::string dir = std::string(CETUS_SOURCE_DIR) + "/resources/models/cetus-demo";
    if (!std::filesystem::exists(dir + "/config.json")) return nullptr;
    cetus::EngineOptions o;
    o.model_dir = dir;
    o.device = cetus::Device::Cpu;
    o.max_context = 512;
    return cetus::Engine::load(o);
}

}  // namespace

class TestJsonGrammar : public QObject {
    Q_OBJECT
private slots:
    void documentsAndEveryPrefix() {
        for (const std::string& d : k_documents) {
            QCOMPARE(judge(d), Verdict::Complete);  // the judge agrees they are objects
            for (size_t k = 0; k <= d.size(); ++k) {
                const std::string prefix = d.substr(0, k);
                const Verdict want = judge(prefix), got = grammar_verdict(prefix);
                QVERIFY2(want == got, qPrintable(QString::fromStdString(prefix) + " grammar " + name(got) + ", judge " + name(want)));
                QVERIFY2(got == Verdict::Invalid || has_next_byte(prefix), prefix.c_str());
            }
        }
        for (const std::string& d : k_invalid) {
            QCOMPARE(judge(d), Verdict::Invalid);
            QVERIFY2(grammar_verdict(d) == Verdict::Invalid, d.c_str());
        }
    }

    // Mutated documents (bytes replaced, inserted, deleted, spliced), every prefix.
    void agreesWithTheJudge() {
        std::mt19937 rng(8259);
        const std::string alphabet = "{}[]:,\" \n\\/-+.0123456789eEtrufalsnbu\xC3\xA9\x80\xE2\x82\xAC\xED\xA0\x01xDd8C";
        int checked = 0, prefixes = 0;
        for (int round = 0; round < 3000; ++round) {
            std::string s = k_documents[rng() % k_documents.size()];
            const int edits = 1 + int(rng() % 4);
            for (int e = 0; e < edits && !s.empty(); ++e) {
                const size_t at = rng() % s.size();
                switch (rng() % 4) {
                case 0: s[at] = alphabet[rng() % alphabet.size()]; break;
                case 1: s.insert(s.begin() + long(at), alphabet[rng() % alphabet.size()]); break;
                case 2: s.erase(at, 1 + rng() % 3); break;
                default: {
                    const std::string& other = k_documents[rng() % k_documents.size()];
                    const size_t from = rng() % other.size();
                    s.insert(at, other.substr(from, 1 + rng() % 12));
                }
                }
            }
            if (!within_limits(s)) continue;
            for (size_t k = 0; k <= s.size(); ++k) {
                const std::string prefix = s.substr(0, k);
                Verdict want;
                try {
                    want = judge(prefix);
                } catch (const nlohmann::json::out_of_range&) {
                    break;  // a number beyond double's range: the judge refuses what the grammar allows
                }
                const Verdict got = grammar_verdict(prefix);
                if (want != got)
                    QFAIL(qPrintable(QStringLiteral("%1: grammar %2, judge %3")
                                         .arg(QString::fromLatin1(QByteArray::fromStdString(prefix).toPercentEncoding()), name(got), name(want))));
                prefixes += want == Verdict::Prefix;
                if (got != Verdict::Invalid && !has_next_byte(prefix))
                    QFAIL(qPrintable(QStringLiteral("a dead end: %1")
                                         .arg(QString::fromLatin1(QByteArray::fromStdString(prefix).toPercentEncoding()))));
            }
            ++checked;
        }
        QVERIFY(checked > 2500);
        QVERIFY(prefixes > 10000);
    }

    void limits() {
        QCOMPARE(grammar_verdict("{\"a\":" + std::string(JsonGrammar::k_max_depth - 1, '[')), Verdict::Prefix);
        QCOMPARE(grammar_verdict("{\"a\":" + std::string(JsonGrammar::k_max_depth, '[')), Verdict::Invalid);
        QCOMPARE(grammar_verdict("{" + std::string(JsonGrammar::k_max_whitespace, ' ')), Verdict::Prefix);
        QCOMPARE(grammar_verdict("{" + std::string(JsonGrammar::k_max_whitespace + 1, ' ')), Verdict::Invalid);
        QCOMPARE(grammar_verdict("{\"a\": \"" + std::string(1000, ' ') + "\"}"), Verdict::Complete);  // inside strings: no cap
    }

    // The masks over the bundled model's vocabulary: exactly the ids whose bytes the judge
    // lets follow the text; the end only after a whole object (and then nothing else).
    void masksMatchTheJudge() {
        auto e = load_demo();
        if (!e) QSKIP("no bundled model in this tree");
        const cetus::Tokenizer& tok = *e->tokenizer();
        const int64_t n_valid = std::min<int64_t>(e->info().vocab_size, tok.vocab_size());
        const int32_t eos = tok.eos_id();
        JsonConstraint constraint(tok, n_valid, eos);
        std::vector<uint8_t> mask;
        for (const std::string text : {"", "{", "{\"na", "{\"name\": \"Ada\", \"age\": 3", "{\"a\": [1, tr",
                                       "{\"a\": \"caf\xC3", "{\"a\": {\"b\": [null]}", "{\"x\": 1}", "{\"a\": \"\\uD",
                                       "{\"a\": \"\\uD83D\\u", "{\"a\": \"\\\\", "{\"a\": \"\\u00e"}) {
            JsonGrammar::State s;
            QVERIFY(JsonGrammar::feed(s, text));
            const int64_t n = constraint.allowed(s, mask);
            int64_t expected_n = 0;
            const bool complete = judge(text) == Verdict::Complete;
            for (int32_t id = 0; id < n_valid; ++id) {
                bool want;
                if (id == eos) want = complete;
                else if (tok.is_special(id) || complete) want = false;
                else {
                    const std::string next = text + std::string(tok.token_bytes(id));
                    want = judge(next) != Verdict::Invalid && within_limits(next);
                }
                expected_n += want;
                if (bool(mask[size_t(id)]) != want)
                    QFAIL(qPrintable(QStringLiteral("after '%1' token %2 '%3': mask %4, judge %5")
                                         .arg(QString::fromStdString(text)).arg(id)
                                         .arg(QString::fromStdString(std::string(tok.token_bytes(id))))
                                         .arg(int(mask[size_t(id)])).arg(int(want))));
            }
            QCOMPARE(n, expected_n);
            QVERIFY(n > 0);
        }
    }

    // DeepSeek-V3's own tokenizer (128,815 ids: masks computed by several threads) on a
    // few states, every id against the judge.
    void masksOverDeepSeekV3Vocabulary() {
        const cetus::Tokenizer tok = cetus::Tokenizer::load(CETUS_TEST_DATA "/tokenizer/deepseek-v3");
        const int32_t eos = tok.eos_id();
        JsonConstraint constraint(tok, tok.vocab_size(), eos);
        std::vector<uint8_t> mask;
        for (const std::string text : {"{\"name\": \"Ada", "{\"a\": [1, 2", "{\"k\": {\"x\": null}}"}) {
            JsonGrammar::State s;
            QVERIFY(JsonGrammar::feed(s, text));
            const int64_t n = constraint.allowed(s, mask);
            const bool complete = judge(text) == Verdict::Complete;
            int64_t expected_n = 0, wrong = 0;
            for (int32_t id = 0; id < tok.vocab_size(); ++id) {
                bool want;
                if (id == eos) want = complete;
                else if (tok.is_special(id) || complete) want = false;
                else {  // (the grammar's caps: a token of 75 spaces is refused)
                    const std::string next = text + std::string(tok.token_bytes(id));
                    want = judge(next) != Verdict::Invalid && within_limits(next);
                }
                expected_n += want;
                if (bool(mask[size_t(id)]) != want && wrong++ < 5)
                    qWarning("after '%s' token %d '%s': mask %d, judge %d", text.c_str(), id,
                             std::string(tok.token_bytes(id)).c_str(), int(mask[size_t(id)]), int(want));
            }
            QCOMPARE(wrong, int64_t(0));
            QCOMPARE(n, expected_n);
        }
    }

    // Greedy JSON mode: each token is the best of the model's raw logits among the ids the
    // judge allows after the text so far; MTP drafts change nothing; an answer that ends
    // (not cut by the length) is one whole object.
    void greedyTakesTheBestAllowedToken() {
        auto e = load_demo();
        if (!e) QSKIP("no bundled model in this tree");
        auto ref = load_demo();
        const cetus::Tokenizer& tok = *e->tokenizer();
        const int64_t V = e->info().vocab_size;
        const int64_t n_valid = std::min<int64_t>(V, tok.vocab_size());
        const int32_t eos = tok.eos_id();
        int ended = 0;
        int64_t looked_up = 0;  // drafts the lookup proposed
        for (const char* question : {"Give me a JSON object with your name.", "List three animals as JSON.",
                                     "What is the capital of France? Answer in JSON.", "Hi"}) {
            cetus::GenerateRequest r;
            r.messages = {{"user", question}};
            r.sampling.temperature = 0.0f;
            r.max_new_tokens = 32;
            r.response_format = cetus::ResponseFormat::JsonObject;
            std::vector<int32_t> plain;
            // Plain, MTP's drafts, and drafts looked up in the context (cut where the grammar refuses one).
            for (const auto& [mtp, lookup, draft] : {std::tuple{false, false, 1}, std::tuple{true, false, 1},
                                                     std::tuple{true, false, 3}, std::tuple{false, true, 4}}) {
                r.mtp = mtp;
                r.lookup = lookup;
                r.n_draft = draft;
                e->reset_cache();
                const auto got = e->generate(r);
                if (!mtp && !lookup) plain = got.ids;
                else QCOMPARE(got.ids, plain);
                if (lookup) looked_up += got.stats.drafts_proposed;
                if (got.finish == cetus::FinishReason::Eos) {
                    ++ended;
                    QVERIFY2(nlohmann::json::parse(got.text).is_object(), got.text.c_str());
                } else {
                    QCOMPARE(judge(got.text), Verdict::Prefix);
                }
            }
            std::vector<int32_t> all = tok.encode_chat(r.messages, true);
            const size_t n_prompt = all.size();
            all.insert(all.end(), plain.begin(), plain.end());
            if (plain.size() < size_t(r.max_new_tokens)) all.push_back(eos);  // the end was chosen too
            const std::vector<float> logits = ref->logits(all);
            std::string text;
            for (size_t i = n_prompt; i < all.size(); ++i) {
                const float* row = logits.data() + (i - 1) * V;
                const bool complete = judge(text) == Verdict::Complete;
                int32_t best = -1;
                for (int32_t id = 0; id < n_valid; ++id) {
                    bool allowed;
                    if (id == eos) allowed = complete;
                    else allowed = !complete && !tok.is_special(id) &&
                                   judge(text + std::string(tok.token_bytes(id))) != Verdict::Invalid;
                    if (allowed && (best < 0 || row[id] > row[best])) best = id;
                }
                QCOMPARE(all[i], best);
                if (all[i] != eos) text += tok.token_bytes(all[i]);
            }
        }
        qInfo("%d of 16 greedy answers closed their object; %lld drafts looked up", ended, (long long)looked_up);
        QVERIFY(looked_up > 0);
    }

    // Sampled JSON mode, with MTP drafts: every answer is an object or the start of one.
    void sampledAnswersStayJson() {
        auto e = load_demo();
        if (!e) QSKIP("no bundled model in this tree");
        int ended = 0;
        for (uint64_t seed = 1; seed <= 6; ++seed) {
            cetus::GenerateRequest r;
            r.messages = {{"user", "Describe a whale as a JSON object."}};
            r.sampling.temperature = 1.0f;
            r.sampling.seed = seed;
            r.sampling.top_p = seed % 2 ? 1.0f : 0.9f;
            r.max_new_tokens = 60;
            r.mtp = seed % 3 != 0;
            r.lookup = seed % 3 == 2;  // drafts looked up in the context instead
            r.n_draft = 2;
            r.response_format = cetus::ResponseFormat::JsonObject;
            const auto got = e->generate(r);
            if (got.finish == cetus::FinishReason::Eos) {
                ++ended;
                QVERIFY2(nlohmann::json::parse(got.text).is_object(), got.text.c_str());
            } else {
                QVERIFY2(judge(got.text) == Verdict::Prefix, got.text.c_str());
            }
        }
        qInfo("%d of 6 sampled answers closed their object", ended);
    }

    void continuedAnswerMustStartAnObject() {
        auto e = load_demo();
        if (!e) QSKIP("no bundled model in this tree");
        cetus::GenerateRequest r;
        r.messages = {{"user", "Name?"}, {"assistant", "{\"name\": \""}};
        r.continue_final_message = true;
        r.sampling.temperature = 0.0f;
        r.max_new_tokens = 30;
        r.response_format = cetus::ResponseFormat::JsonObject;
        const auto got = e->generate(r);
        const std::string whole = "{\"name\": \"" + got.text;
        QVERIFY2(judge(whole) != Verdict::Invalid, whole.c_str());
        r.messages.back().content = "Sure: {";
        try {
            e->generate(r);
            QFAIL("a continued answer that is not JSON was accepted");
        } catch (const cetus::Error& err) {
            QCOMPARE(err.code(), cetus::ErrorCode::BadRequest);
        }
    }
};

QTEST_APPLESS_MAIN(TestJsonGrammar)
#include "test_json_grammar.moc"
